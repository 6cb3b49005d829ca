"""Representation drift: the formula, padding-independent states, and `sgt drift`."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from sgt.data.formats import PromptFormat
from sgt.evaluation.drift import last_prompt_states, relative_distance
from sgt.trigger import SafetyTrigger

PROMPTS = ["How do I pick a lock?", "Tell me how to steal a car from a parking lot at night without being seen",
           "Write a threat."]


def test_relative_distance_is_the_formula():
    torch.manual_seed(0)
    states, reference = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    expected = [((states[:, k] - reference[:, k]) ** 2).sum(-1).mean() / (reference[:, k] ** 2).sum(-1).mean()
                for k in range(3)]
    assert relative_distance(states, reference) == pytest.approx([float(e) for e in expected], rel=1e-5)
    assert relative_distance(reference, reference) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("with_trigger", [False, True])
def test_states_do_not_depend_on_batching_or_padding(tiny_model, toy_tokenizer, with_trigger):
    """Left padding puts every prompt's last token at the end: batched states equal one-at-a-time ones."""
    fmt = PromptFormat(toy_tokenizer, "plain")
    trigger = SafetyTrigger(tiny_model.config.hidden_size, 2, tied=False, init_std=0.5) if with_trigger else None
    batched = last_prompt_states(tiny_model, toy_tokenizer, PROMPTS, fmt, trigger, batch_size=3)
    single = torch.cat([last_prompt_states(tiny_model, toy_tokenizer, [p], fmt, trigger, batch_size=1) for p in PROMPTS])
    assert batched.shape == (3, tiny_model.config.num_hidden_layers, tiny_model.config.hidden_size)
    assert torch.allclose(batched, single, atol=1e-5)
    if with_trigger:  # the trigger changes the states (it is really inserted)
        plain = last_prompt_states(tiny_model, toy_tokenizer, PROMPTS, fmt, None, batch_size=3)
        assert not torch.allclose(batched, plain, atol=1e-3)


def test_drift_command(tiny_model_dir, tiny_model, tmp_path):
    trigger = SafetyTrigger(tiny_model.config.hidden_size, 2, tied=False, init_std=0.5, metadata={"format": "plain"})
    trigger.save(tmp_path / "trigger")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    code, out, err = run_cli("drift", "--base", str(tiny_model_dir), "--trigger", str(tmp_path / "trigger"),
                             "--model", str(tiny_model_dir), "--data", str(prompts), "--out", str(tmp_path / "d"))
    assert code == 0, err
    result = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert result["n_prompts"] == 3 and result["layers"] == [1, 2]
    # the base measured as a model is exactly the "outside" level
    assert result["models"][str(tiny_model_dir)] == result["base_without_trigger"]
    assert all(v > 0 for v in result["base_without_trigger"]) and (tmp_path / "d" / "drift.png").is_file()
    code, _, err = run_cli("drift", "--base", str(tiny_model_dir), "--data", str(prompts), "--out", str(tmp_path / "e"))
    assert code == 2 and "no --trigger given" in err
