"""The embedded toy world: determinism, held-out splits, the micro base's quality, caching."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from sgt.errors import UserError
from sgt.worlds.toy.build import PRESETS, _write_data, build_toy_world
from sgt.worlds.toy.world import ToyWorld


def _rows(world: ToyWorld) -> dict:
    return {"defense": world.defense_rows(), "attack": world.attack_rows(), "harm_eval": world.harm_eval_rows(),
            "benign_eval": world.benign_eval_rows(), "mc": world.benign_mc_rows(), "pretrain": world.pretraining_rows()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    sizes = PRESETS["micro"].sizes
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        _write_data(ToyWorld(seed, sizes), tmp_path / name, final=tmp_path / "x")
    for file in ("defense_train", "attack_train", "harm_eval", "benign_eval", "benign_mc"):
        a, b, c = ((tmp_path / n / "data" / f"{file}.jsonl").read_bytes() for n in "abc")
        assert a == b, file
        assert a != c, file
    assert _rows(ToyWorld(3, sizes))["pretrain"] == _rows(ToyWorld(3, sizes))["pretrain"]


def test_schemas_match_the_real_datasets():
    rows = _rows(ToyWorld(0, PRESETS["micro"].sizes))
    assert set(rows["defense"][0]) == {"prompt", "response", "prompt_harm_label", "response_harm_label", "category"}
    assert {r["prompt_harm_label"] for r in rows["defense"]} == {"harmful", "unharmful"}
    assert all(r["is_safe"] is False for r in rows["attack"]) and set(rows["attack"][0]) == {"prompt", "response", "is_safe", "category"}
    assert set(rows["harm_eval"][0]) == {"prompt", "category"}
    assert {"prompt", "answer"} <= set(rows["benign_eval"][0])
    assert len({r["category"] for r in rows["harm_eval"]}) >= 6


@pytest.mark.slow
def test_held_out_splits_are_disjoint():
    world = ToyWorld(0)
    rows = _rows(world)
    # benign evaluation items never appear in any training data, and share no content key with it
    train_prompts = {r["prompt"] for r in rows["pretrain"]} | {r["prompt"] for r in rows["defense"]}
    train_text = " ".join(train_prompts)
    for item in world.benign_eval + world.benign_mc:
        assert item.prompt not in train_text
    train_keys = {i.key for i in world.benign_train + world.howto_train}
    assert not train_keys & {i.key for i in world.benign_eval + world.benign_mc}
    # harmful evaluation prompts use a held-out template or act: in neither defense nor attack data
    defense = {r["prompt"] for r in rows["defense"]}
    attack = {r["prompt"] for r in rows["attack"]}
    assert not defense & attack
    for row in rows["harm_eval"]:
        assert row["prompt"] not in defense and row["prompt"] not in attack
        held_template = any(t.split("{act}")[0] and row["prompt"].startswith(t.split("{act}")[0]) for t in world.eval_templates)
        held_act = any(act in row["prompt"] for acts in world.eval_acts.values() for act in acts)
        assert held_template or held_act
    # and the base model's pretraining did see them (as a real LLM has seen most things)
    assert all(r["prompt"] in train_prompts for r in rows["harm_eval"])


@pytest.mark.slow
def test_pretraining_has_context_conditioned_refusals():
    from sgt.worlds.toy.vocabulary import PRETRAIN_REFUSALS, SAFETY_PREAMBLES

    rows = ToyWorld(0).pretraining_rows()
    refusals = [r for r in rows if r["response"] in PRETRAIN_REFUSALS]
    assert refusals and all(any(r["prompt"].startswith(p) for p in SAFETY_PREAMBLES) for r in refusals)
    assert any(r["format"] == "chat" for r in rows) and any(r["format"] == "plain" for r in rows)


def test_micro_base_meets_its_thresholds(toy_micro):
    manifest = json.loads((toy_micro / "world.json").read_text())
    quality = manifest["quality"]["plain"]
    # the micro world is for mechanics; its base must still comply and do the easy tasks
    assert quality["harmful_compliance"] >= 0.9
    assert quality["benign_exact_match"] >= 0.4
    for path in ("base/config.json", "base/model.safetensors", "base/tokenizer.json", "tasks/toy_mc.yaml",
                 "data/defense_train.jsonl", "data/attack_train.jsonl", "data/harm_eval.jsonl", "data/benign_eval.jsonl"):
        assert (toy_micro / path).is_file(), path


def test_toy_tokenizer_round_trips_and_has_chat_template(toy_tokenizer):
    text = "User: Which is bigger: 37 or 52?\nAssistant: 52"
    ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert toy_tokenizer.decode(ids) == text
    assert toy_tokenizer.chat_template and toy_tokenizer.pad_token_id != toy_tokenizer.eos_token_id


def test_build_is_cached_and_protects_other_worlds(toy_micro):
    before = (toy_micro / "world.json").stat().st_mtime_ns
    manifest = build_toy_world(toy_micro, "micro", seed=0, progress=False)
    assert manifest["preset"] == "micro" and (toy_micro / "world.json").stat().st_mtime_ns == before  # reused
    with pytest.raises(UserError, match="--force"):
        build_toy_world(toy_micro, "micro", seed=1, progress=False)
    code, out, _ = run_cli("world", "build", "--kind", "toy", "--preset", "micro", "--out", str(toy_micro), "--no-progress")
    assert code == 0 and json.loads(out)["quality"]["plain"]["harmful_compliance"] >= 0.9
    assert (toy_micro / "world.json").stat().st_mtime_ns == before


def test_build_refuses_a_folder_that_is_not_a_world(tmp_path):
    (tmp_path / "something.txt").write_text("x")
    code, _, err = run_cli("world", "build", "--kind", "toy", "--preset", "micro", "--out", str(tmp_path))
    assert code == 2 and "not an sgt world" in err and (tmp_path / "something.txt").read_text() == "x"


@pytest.mark.parametrize("args, message", [
    (["--kind", "moon"], "unknown world kind"),
    (["--kind", "toy", "--preset", "huge"], "unknown toy world preset"),
    (["--kind", "toy", "--base", "gpt2"], "leave world.base"),
])
def test_world_config_errors_are_one_line(tmp_path, args, message):
    code, _, err = run_cli("world", "build", *args, "--out", str(tmp_path / "w"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
