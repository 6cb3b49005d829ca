"""`sgt diagnose`: the decision at the last prompt position, teacher (base + trigger) vs aligned models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import run_cli


def test_decision_numbers_by_hand():
    from sgt.evaluation.diagnosis import decision

    teacher = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    model = torch.log(torch.tensor([[0.5, 0.4, 0.1], [0.6, 0.2, 0.2]]))
    result = decision(teacher, model, torch.tensor([0, 2]))
    kl = (0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.4) + 0
          + 0.1 * math.log(0.1 / 0.6) + 0.1 * math.log(0.1 / 0.2) + 0.8 * math.log(0.8 / 0.2)) / 2
    assert result["kl"] == pytest.approx(round(kl, 4))
    assert result["top1"] == 0.5                      # row 1 agrees (token 0), row 2 does not
    assert result["p_refusal"] == pytest.approx((0.5 + 0.2) / 2)
    same = decision(teacher, teacher, torch.tensor([0, 2]))
    assert same["kl"] == 0 and same["top1"] == 1.0 and same["p_refusal"] == pytest.approx((0.7 + 0.8) / 2)


@pytest.mark.slow
def test_diagnose_command_on_the_micro_world(toy_micro, tmp_path):
    """The teacher is its own reference (KL 0, top-1 1); a model identical to the base scores exactly as the
    base without trigger; both files are written."""
    from sgt.methods.trigger import TriggerConfig, learn_trigger

    base, data = toy_micro / "base", toy_micro / "data"
    learn_trigger(TriggerConfig(model=str(base), data=str(data / "defense_train.jsonl"), out=str(tmp_path / "trigger"),
                                length=4, tied=False, lr=0.03, epochs=1, batch_size=16, max_length=128, progress=False))
    code, out, err = run_cli("diagnose", "--base", str(base), "--trigger", str(tmp_path / "trigger"), "--model", str(base),
                             "--sets", f"train={data / 'defense_train.jsonl'},eval={data / 'harm_eval.jsonl'}",
                             "--n", "12", "--max-new-tokens", "8", "--out", str(tmp_path / "d"))
    assert code == 0, err
    results = json.loads((tmp_path / "d" / "diagnosis.json").read_text())
    assert set(results) == {"train", "eval"} and results["eval"]["n"] == 12
    for part in results.values():
        teacher, plain, same = (part["models"][k] for k in ("teacher (base + trigger)", "base (no trigger)", str(base)))
        assert teacher["kl"] == 0 and teacher["top1"] == 1.0
        assert same == plain
        assert teacher["refusal_rate"] > plain["refusal_rate"]   # the trigger makes the base refuse
    table = (tmp_path / "d" / "diagnosis.md").read_text()
    assert "| teacher (base + trigger) | 0.00 / 0.00 | 1.00 / 1.00 |" in table


def test_diagnose_needs_its_inputs(tmp_path):
    code, _, err = run_cli("diagnose", "--base", "b", "--trigger", "t", "--out", str(tmp_path / "d"))
    assert code == 2 and "no --sets given" in err and len(err.strip().splitlines()) == 1
