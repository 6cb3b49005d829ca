"""Stage 2 on the micro toy base: loss pieces, full fine-tuning and LoRA, resume, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import run_cli
from sgt.errors import UserError
from sgt.methods.align import (
    AlignConfig,
    align_model,
    alignment_loss,
    position_mask,
    repel_term,
    resolve_layers,
)
from sgt.methods.trigger import TriggerConfig, learn_trigger
from sgt.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def trigger_dir(toy_micro, tmp_path_factory):
    out = tmp_path_factory.mktemp("s2") / "trigger"
    learn_trigger(TriggerConfig(model=str(toy_micro / "base"), data=str(toy_micro / "data" / "defense_train.jsonl"),
                                out=str(out), length=4, tied=False, lr=0.03, epochs=2, batch_size=16,
                                max_length=128, progress=False))
    return out


def align_config(toy, trigger, out, **overrides) -> AlignConfig:
    values = dict(model=str(toy / "base"), trigger=str(trigger), data=str(toy / "data" / "defense_train.jsonl"),
                  out=str(out), rows=None, lr=5e-4, epochs=2, batch_size=8, grad_accum=1, max_length=128,
                  progress=False, logging_steps=5)
    values.update(overrides)
    return AlignConfig(**values)


# --------------------------------------------------------------------------------------------
# Loss pieces
# --------------------------------------------------------------------------------------------


def test_position_masks():
    labels = torch.tensor([[-100, -100, -100, 7, 8, 2, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    assert position_mask(labels, mask, "response").int().tolist() == [[0, 0, 0, 1, 1, 1, 0]]
    # the last prompt token predicts the first response token: aligned too
    assert position_mask(labels, mask, "predicting").int().tolist() == [[0, 0, 1, 1, 1, 1, 0]]
    assert position_mask(labels, mask, "prompt+response").int().tolist() == [[1, 1, 1, 1, 1, 1, 0]]


def test_alignment_loss_attracts_harmful_and_repels_benign():
    config = AlignConfig(model="m", trigger="t", out="o")
    teacher = [torch.zeros(2, 3, 4)]
    student = [torch.ones(2, 3, 4)]
    mask = torch.ones(2, 3, dtype=torch.bool)
    harmful = torch.tensor([True, False])
    loss, parts = alignment_loss(student, teacher, mask, harmful, config)
    assert parts["attract"].item() == pytest.approx(1.0)  # MSE of ones vs zeros
    assert parts["repel"].item() == pytest.approx(torch.log1p(torch.tensor(1 / 1.001)).item(), rel=1e-5)
    assert loss.item() == pytest.approx(parts["attract"].item() + parts["repel"].item())
    d = torch.tensor([0.01, 0.1, 1.0])
    for kind in ("log", "hinge", "inverse", "inverse_sqrt"):
        values = repel_term(d, kind, margin=0.3, eps=1e-3)
        assert values[0] >= values[1] >= values[2], kind  # closer benign states cost more


def test_layers_must_exist():
    assert resolve_layers([], 4) == [1, 2, 3, 4]
    assert resolve_layers([2, 2, 4], 4) == [2, 4]
    with pytest.raises(UserError, match="out of range"):
        resolve_layers([0, 5], 4)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_anchor_after_attack_is_logged(toy_micro, trigger_dir, tmp_path):
    """attack_steps > 0: metrics.json shows the attract term at the simulated-attack weights next to the
    plain one, so a user can see whether the anchor survives the inner attack."""
    config = align_config(toy_micro, trigger_dir, tmp_path / "anchored", epochs=1, logging_steps=1,
                          attack_steps=1, attack_lr=3e-4)
    history = align_model(config)["component_history"]
    logged = [row["attract_after_attack"] for row in history if "attract_after_attack" in row]
    assert len(logged) == len(history) and all(math.isfinite(v) and v > 0 for v in logged)


@pytest.mark.slow
def test_full_finetuning_aligns_and_saves_a_plain_checkpoint(toy_micro, trigger_dir, tmp_path):
    config = align_config(toy_micro, trigger_dir, tmp_path / "full",
                          eval_data=str(toy_micro / "data" / "harm_eval.jsonl"), eval_n=32)
    metrics = align_model(config)
    history = metrics["component_history"]
    assert metrics["teacher"] == "frozen copy" and metrics["layers"] == [1, 2]
    assert history[-1]["attract"] < history[0]["attract"]  # harmful states approach the teacher's
    assert {"attract", "repel", "benign_ce"} <= set(history[0])
    assert metrics["refusal_rate_no_trigger"] >= 0.7  # refuses without the trigger
    base = load_model(str(toy_micro / "base"), "float32").state_dict()
    aligned = load_model(str(tmp_path / "full"), "float32").state_dict()
    assert any(not torch.equal(base[k], aligned[k]) for k in base)
    saved = {p.name for p in (tmp_path / "full").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "config.yaml"} <= saved
    assert "checkpoints" not in saved and not any("adapter" in name for name in saved)


@pytest.mark.slow
def test_lora_trains_adapters_only_and_merges_on_save(toy_micro, trigger_dir, tmp_path):
    config = align_config(toy_micro, trigger_dir, tmp_path / "lora", lora=True, lora_r=4, lr=3e-3, epochs=1,
                          layers=[2], positions="response", distance="cosine", repel="hinge", merge_lora=False)
    model = load_model(str(toy_micro / "base"), "float32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = align_model(config, model=model, tokenizer=load_tokenizer(str(toy_micro / "base")))
    assert metrics["teacher"] == "adapters disabled" and metrics["layers"] == [2]
    # the base weights inside the PEFT model did not move (the teacher is the base: adapters disabled)
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in model.state_dict().items() if "lora_" not in k}
    assert set(after) == set(before)
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    # merged (the default): a plain checkpoint that differs from the base
    merged_dir = tmp_path / "merged"
    align_model(align_config(toy_micro, trigger_dir, merged_dir, lora=True, lora_r=4, lr=3e-3, epochs=1))
    merged = load_model(str(merged_dir), "float32").state_dict()
    assert not (merged_dir / "adapter_config.json").exists()
    assert any(not torch.equal(before[k], merged[k]) for k in before)


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(toy_micro, trigger_dir, tmp_path, monkeypatch):
    import sgt.methods.align.trainer as stage2

    out = tmp_path / "resumed"
    config = align_config(toy_micro, trigger_dir, out, epochs=1, save_steps=5, rows=160)
    real = stage2.check_finite
    calls = {"n": 0}

    def interrupt(loss, step):
        calls["n"] += 1
        if step == 15:
            raise KeyboardInterrupt
        return real(loss, step)

    monkeypatch.setattr(stage2, "check_finite", interrupt)
    with pytest.raises(KeyboardInterrupt):
        align_model(config)
    partial = out.with_name(out.name + ".partial")
    assert (partial / "checkpoints" / "checkpoint-10").is_dir() and not out.exists()
    assert not (partial / "checkpoints" / "checkpoint-5").exists()  # only the newest is kept
    calls["n"] = 0

    def count(loss, step):
        calls["n"] += 1
        return real(loss, step)

    monkeypatch.setattr(stage2, "check_finite", count)
    metrics = align_model(align_config(toy_micro, trigger_dir, out, epochs=1, save_steps=5, rows=160, resume=True))
    assert metrics["steps"] == 20 and calls["n"] == 10  # only steps 11-20 ran again
    assert (out / "model.safetensors").is_file() and not partial.exists()


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2(toy_micro, trigger_dir, tmp_path):
    from sgt.trigger import SafetyTrigger

    other = tmp_path / "other"
    SafetyTrigger(32, length=2, metadata={"model": "another-model", "format": "plain"}).save(other)
    data = str(toy_micro / "data" / "defense_train.jsonl")
    base = str(toy_micro / "base")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        (("--trigger", str(other)), "hidden size 32"),
        (("--trigger", str(tmp_path / "missing")), "trigger not found"),
        (("--trigger", str(trigger_dir), "--layers", "0,7"), "out of range"),
        (("--trigger", str(trigger_dir), "--format", "chat"), "learned for the 'plain' prompt format"),
        (("--trigger", str(trigger_dir), "--data", str(empty)), "is empty"),
        (("--trigger", str(trigger_dir), "--resume"), "no checkpoint found"),
    ]
    for extra, message in cases:
        args = ["align", "--model", base, "--data", data, "--out", str(tmp_path / "x"), "--no-progress", *extra]
        code, _, err = run_cli(*args)
        assert code == 2, (extra, err)
        assert message in err and len(err.strip().splitlines()) == 1, (extra, err)
    code, _, err = run_cli("align", "--model", base, "--data", data, "--out", str(tmp_path / "y"))
    assert code == 2 and "no trigger given" in err


@pytest.mark.slow
def test_metrics_file_matches_return(toy_micro, trigger_dir, tmp_path):
    metrics = align_model(align_config(toy_micro, trigger_dir, tmp_path / "m", epochs=1, rows=64))
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["steps"] == metrics["steps"] == 8 and saved["rows"] == 64
