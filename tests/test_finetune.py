"""The attack (malicious fine-tuning) and conventional SFT on the micro toy world."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from sgt.data.sources import load_examples
from sgt.errors import UserError
from sgt.methods.finetune import (
    AttackConfig,
    FinetuneConfig,
    attack_examples,
    prepare_sft_examples,
    run_finetune,
)
from sgt.models import load_model


def attack_config(toy, out, **overrides) -> AttackConfig:
    values = dict(model=str(toy / "base"), data=str(toy / "data" / "attack_train.jsonl"), out=str(out), shots=16,
                  lr=1e-3, epochs=3, batch_size=4, max_length=128, progress=False, logging_steps=1)
    values.update(overrides)
    return AttackConfig(**values)


def test_attack_sample_is_reproducible_and_respects_the_budget(toy_micro):
    examples = load_examples(str(toy_micro / "data" / "attack_train.jsonl"))
    a = attack_examples(examples, 16, seed=1, allow_repeat=False)
    assert a == attack_examples(examples, 16, seed=1, allow_repeat=False)
    assert a != attack_examples(examples, 16, seed=2, allow_repeat=False)
    assert len(a) == 16 and all(e.harmful and e.response for e in a)


@pytest.mark.slow
def test_attack_trains_and_writes_a_plain_checkpoint(toy_micro, tmp_path):
    metrics = run_finetune(attack_config(toy_micro, tmp_path / "a"))
    assert metrics["rows"] == 16 and metrics["steps"] == 12
    assert metrics["last_loss"] < metrics["first_loss"]
    base = load_model(str(toy_micro / "base"), "float32").state_dict()
    attacked = load_model(str(tmp_path / "a"), "float32").state_dict()
    assert any(not torch.equal(base[k], attacked[k]) for k in base)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["rows"] == 16
    assert "shots: 16" in (tmp_path / "a" / "config.yaml").read_text()


@pytest.mark.slow
def test_lora_attack_merges_into_a_plain_checkpoint(toy_micro, tmp_path):
    metrics = run_finetune(attack_config(toy_micro, tmp_path / "l", lora=True, lora_r=4, lr=3e-3))
    assert metrics["steps"] == 12
    names = {p.name for p in (tmp_path / "l").iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    merged = load_model(str(tmp_path / "l"), "float32").state_dict()  # loads as an ordinary model
    base = load_model(str(toy_micro / "base"), "float32").state_dict()
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    # the adapters were merged into the attention/MLP projections, and nothing else changed
    assert changed and all("proj" in k for k in changed)


@pytest.mark.slow
def test_same_seed_same_attack(toy_micro, tmp_path):
    one = run_finetune(attack_config(toy_micro, tmp_path / "1", shots=8, epochs=1))
    two = run_finetune(attack_config(toy_micro, tmp_path / "2", shots=8, epochs=1))
    assert one["loss_history"] == two["loss_history"]


def test_sft_defense_answers_harmful_prompts_with_the_refusal(toy_micro):
    examples = load_examples(str(toy_micro / "data" / "defense_train.jsonl"))
    prepared = prepare_sft_examples(examples, refuse_harmful=True, refusal="I can't answer.")
    assert all(e.response == "I can't answer." for e in prepared if e.harmful)
    assert any(e.response != "I can't answer." for e in prepared if not e.harmful)
    config = FinetuneConfig(model="m", out="o", refuse_harmful=True)
    assert config.refusal == "I can't answer."


def test_sft_rows_caps_the_training_rows_at_the_harm_ratio(toy_micro, tmp_path):
    config = FinetuneConfig(model=str(toy_micro / "base"), data=str(toy_micro / "data" / "defense_train.jsonl"),
                            out=str(tmp_path / "sft"), refuse_harmful=True, rows=24, harm_ratio=0.25, epochs=1,
                            batch_size=8, max_length=64, progress=False)
    metrics = run_finetune(config)
    assert metrics["rows"] == 24 and metrics["steps"] == 3
    with pytest.raises(UserError, match="rows does not apply; use shots"):
        attack_config(toy_micro, tmp_path / "a", rows=10)


@pytest.mark.parametrize("extra, message", [
    (("--shots", "0"), "shots must be a positive"),
    (("--shots", "100000"), "allow-repeat"),
    (("--lr", "-1"), "lr must be positive"),
])
def test_attack_bad_input(toy_micro, tmp_path, extra, message):
    code, _, err = run_cli("attack", "--model", str(toy_micro / "base"), "--data",
                           str(toy_micro / "data" / "attack_train.jsonl"), "--out", str(tmp_path / "x"),
                           "--no-progress", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_mixed_attack_samples_the_harmful_fraction():
    from sgt.data.sources import Example

    harmful = [Example(f"bad {i}", f"sure {i}", True) for i in range(50)]
    benign = [Example(f"good {i}", f"answer {i}", False) for i in range(50)] + [Example("no answer", None, False)]
    rows = attack_examples(harmful, 20, 0, False, harmful_fraction=0.25, benign=benign)
    assert len(rows) == 20 and sum(r.harmful for r in rows) == 5 and all(r.response for r in rows)
    assert attack_examples(harmful, 20, 0, False, harmful_fraction=0.25, benign=benign) == rows  # reproducible
    assert not any(r.harmful for r in attack_examples(harmful, 8, 0, False, harmful_fraction=0.0, benign=benign))
    with pytest.raises(UserError, match="needs benign_data"):
        AttackConfig(model="m", out="o", data="d.jsonl", harmful_fraction=0.5)


@pytest.mark.slow
def test_intermediate_checkpoints_and_adapter_only_outputs_load(toy_micro, tmp_path):
    """save_at_examples leaves plain checkpoints along the way; --no-merge-lora outputs load as models."""
    config = attack_config(toy_micro, tmp_path / "a", lora=True, lora_r=4, lr=3e-3, merge_lora=False,
                           save_at_examples=[8, 20])
    run_finetune(config)
    out = tmp_path / "a"
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").is_file()
    assert sorted(p.name for p in out.glob("at-*")) == ["at-20", "at-8"]
    base = load_model(str(toy_micro / "base"), "float32").state_dict()
    early = load_model(str(out / "at-8"), "float32").state_dict()
    final = load_model(str(out), "float32").state_dict()  # base + adapter, merged on load
    assert set(early) == set(base) == set(final)
    assert any(not torch.equal(base[k], early[k]) for k in base)
    assert any(not torch.equal(early[k], final[k]) for k in base)  # training went on after the first save
