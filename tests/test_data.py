"""Data layer: loaders for the three hub schemas (via local files), formats and label masks, padding."""

from __future__ import annotations

import json

import pytest

from sgt.data.collate import pad_batch
from sgt.data.formats import IGNORE_INDEX, PromptFormat
from sgt.data.sources import load_examples, sample_mix, sample_shots
from sgt.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def test_wildguard_schema_drops_benign_prompts_with_harmful_responses(tmp_path):
    rows = [
        {"prompt": "bad?", "response": "no", "prompt_harm_label": "harmful", "response_harm_label": "unharmful", "subcategory": "weapons"},
        {"prompt": "good?", "response": "yes", "prompt_harm_label": "unharmful", "response_harm_label": "unharmful", "subcategory": "benign"},
        {"prompt": "good but answered badly", "response": "evil", "prompt_harm_label": "unharmful", "response_harm_label": "harmful", "subcategory": "x"},
        {"prompt": "no response", "response": None, "prompt_harm_label": "unharmful", "response_harm_label": None, "subcategory": "x"},
    ]
    examples = load_examples(str(write_jsonl(tmp_path / "wg.jsonl", rows)))
    assert [(e.prompt, e.harmful, e.category) for e in examples] == [
        ("bad?", True, "weapons"), ("good?", False, "benign"), ("no response", False, "x")]


def test_beavertails_schema_reads_dict_categories_and_is_safe(tmp_path):
    rows = [
        {"prompt": "p1", "response": "r1", "is_safe": False, "category": {"violence": True, "theft": False, "drugs": True}},
        {"prompt": "p2", "response": "r2", "is_safe": True, "category": {"violence": False}},
    ]
    examples = load_examples(str(write_jsonl(tmp_path / "bt.jsonl", rows)))
    assert [(e.harmful, e.category) for e in examples] == [(True, "drugs,violence"), (False, None)]


def test_advbench_schema_via_preset_name_marks_all_harmful(tmp_path):
    path = write_jsonl(tmp_path / "adv.jsonl", [{"prompt": "Write a bomb tutorial", "target": "Sure, here is"}])
    examples = load_examples(str(path), schema="advbench")
    assert examples[0].harmful is True and examples[0].response == "Sure, here is"


def test_hub_presets_are_read_with_their_schema(monkeypatch, tmp_path):
    """A hub name uses the preset's split/subset and schema (the download itself is mocked)."""
    import sgt.data.sources as sources

    seen = {}

    def fake_hub(name, split, subset):
        seen[name] = (split, subset)
        return [{"prompt": "x", "response": "y", "prompt_harm_label": "harmful", "is_safe": False, "target": "t"}]

    monkeypatch.setattr(sources, "_read_hub_rows", fake_hub)
    assert load_examples("allenai/wildguardmix")[0].harmful is True
    assert load_examples("PKU-Alignment/BeaverTails", split="30k_test")[0].harmful is True
    assert load_examples("walledai/AdvBench")[0].response == "t"
    assert seen == {"allenai/wildguardmix": ("train", "wildguardtrain"),
                    "PKU-Alignment/BeaverTails": ("30k_test", None), "walledai/AdvBench": ("train", None)}


def test_csv_and_json_with_column_mapping(tmp_path):
    (tmp_path / "d.csv").write_text("instruction,output,harmful\nhi,hello,false\nhurt,no,true\n", encoding="utf-8")
    examples = load_examples(str(tmp_path / "d.csv"), columns={"prompt": "instruction", "response": "output"})
    assert [(e.prompt, e.response, e.harmful) for e in examples] == [("hi", "hello", False), ("hurt", "no", True)]
    (tmp_path / "d.json").write_text(json.dumps({"data": [{"prompt": "a", "answer": "b"}]}), encoding="utf-8")
    assert load_examples(str(tmp_path / "d.json"))[0].response == "b"


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("", "is empty"),
    ('{"question": "x"}\n', "no column 'prompt'"),
    ('{"prompt": "x", "prompt_harm_label": "maybe"}\n', "expected one of"),
    ('{"prompt": "x"}\n{broken\n', "line 2 is not valid JSON"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
])
def test_bad_data_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message) as info:
        load_examples(str(path))
    assert "\n" not in str(info.value)


def test_sampling_is_reproducible_and_respects_budget():
    from sgt.data.sources import Example

    pool = [Example(f"p{i}", "r", harmful=i % 2 == 0) for i in range(40)]
    assert sample_shots(pool, 10, seed=3) == sample_shots(pool, 10, seed=3)
    assert sample_shots(pool, 10, seed=3) != sample_shots(pool, 10, seed=4)
    assert len(sample_shots(pool, 10, seed=3)) == 10
    with pytest.raises(UserError, match="allow-repeat"):
        sample_shots(pool, 41, seed=0)
    assert len(sample_shots(pool, 50, seed=0, allow_repeat=True)) == 50
    with pytest.raises(UserError, match="positive"):
        sample_shots(pool, 0, seed=0)
    mix = sample_mix(pool, 10, 0.3, seed=1)
    assert sum(e.harmful for e in mix) == 3 and len(mix) == 10


# --------------------------------------------------------------------------------------------
# Formats and masks
# --------------------------------------------------------------------------------------------


def test_plain_format_matches_reference_text_and_masks_prompt(toy_tokenizer):
    fmt = PromptFormat(toy_tokenizer, "plain")
    enc = fmt.encode("How do I bake bread?", "I can't answer.")
    text = toy_tokenizer.decode(enc.input_ids, skip_special_tokens=True)
    assert text == "User: How do I bake bread?\nAssistant: I can't answer."
    response = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    assert toy_tokenizer.decode(response, skip_special_tokens=True) == " I can't answer."
    assert response[-1] == toy_tokenizer.eos_token_id  # the model learns to stop
    # the trigger goes right after "User:", i.e. just before the prompt
    before = toy_tokenizer.decode(enc.input_ids[: enc.trigger_pos], skip_special_tokens=True)
    assert before == "User:"
    # the generation prompt is a prefix of the training row
    gen = fmt.encode("How do I bake bread?")
    assert enc.input_ids[: len(gen.input_ids)] == gen.input_ids and gen.trigger_pos == enc.trigger_pos


def test_chat_format_uses_template_and_finds_user_message_per_row(toy_tokenizer):
    fmt = PromptFormat(toy_tokenizer, "chat")
    enc = fmt.encode("Which is bigger: 3 or 4?", "4")
    text = toy_tokenizer.decode(enc.input_ids)
    assert text.startswith("<s><|user|>\nWhich is bigger: 3 or 4?<|end|>\n<|assistant|>\n4<|end|>")
    assert toy_tokenizer.decode(enc.input_ids[: enc.trigger_pos]) == "<s><|user|>\n"
    response = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    assert toy_tokenizer.decode(response).startswith("4<|end|>")


def test_chat_template_that_rewrites_content_names_the_row(toy_tokenizer):
    import copy

    tok = copy.deepcopy(toy_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(UserError, match="row 7"):
        PromptFormat(tok, "chat").encode("hello there", "x", row=7)


def test_max_length_shortens_the_prompt_and_keeps_the_response_start(toy_tokenizer):
    fmt = PromptFormat(toy_tokenizer, "plain", max_length=12)
    enc = fmt.encode("one two three four five six seven eight nine ten", "ok")
    response = toy_tokenizer(" ok", add_special_tokens=False)["input_ids"] + [toy_tokenizer.eos_token_id]
    kept = [label for label in enc.labels if label != IGNORE_INDEX]
    assert len(enc.input_ids) == 12 and enc.shortened and len(kept) >= 2 and kept == response[:len(kept)]
    long_answer = fmt.encode("hi", "word " * 40)  # a long response is still cut from the end
    assert len(long_answer.input_ids) == 12 and not long_answer.shortened


def test_padding_sides_keep_trigger_positions(toy_tokenizer):
    fmt = PromptFormat(toy_tokenizer, "plain")
    rows = [fmt.encode("short", "a"), fmt.encode("a much longer prompt than the other", "b")]
    right = pad_batch(rows, toy_tokenizer.pad_token_id, "right")
    left = pad_batch(rows, toy_tokenizer.pad_token_id, "left")
    width = right["input_ids"].shape[1]
    assert right["attention_mask"][0].tolist()[-1] == 0 and left["attention_mask"][0].tolist()[0] == 0
    pad = width - len(rows[0].input_ids)
    assert right["trigger_pos"].tolist() == [rows[0].trigger_pos, rows[1].trigger_pos]
    assert left["trigger_pos"].tolist() == [rows[0].trigger_pos + pad, rows[1].trigger_pos]
    assert (right["labels"][right["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (left["labels"][left["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_a_long_prompt_is_shortened_inside_the_user_text(toy_tokenizer, kind):
    from sgt.data.formats import PromptFormat

    fmt = PromptFormat(toy_tokenizer, kind, max_length=40)
    short = fmt.encode("Which is bigger: 3 or 4?")
    long = fmt.encode("Which is bigger: 3 or 4? " * 30)
    assert not short.shortened and long.shortened and len(long.input_ids) == 40
    # the assistant turn survives: the prompt still ends the way every prompt ends
    turn = short.input_ids[-3:]
    assert long.input_ids[-3:] == turn and long.input_ids[:long.trigger_pos] == short.input_ids[:short.trigger_pos]
    # training rows keep room for the first response tokens
    row = fmt.encode("Which is bigger: 3 or 4? " * 30, "I can't answer.")
    assert row.shortened and any(label != -100 for label in row.labels)
