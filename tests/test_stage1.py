"""Stage 1 on the micro toy base: only the trigger learns, its loss falls, it makes the model refuse."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from sgt.methods.trigger import TriggerConfig, learn_trigger
from sgt.models import load_model, load_tokenizer
from sgt.trigger import SafetyTrigger

pytestmark = pytest.mark.slow  # every test here trains or launches processes


def trigger_config(toy, out, **overrides) -> TriggerConfig:
    values = dict(model=str(toy / "base"), data=str(toy / "data" / "defense_train.jsonl"), out=str(out),
                  length=4, tied=False, lr=0.03, epochs=3, batch_size=16, max_length=128,
                  eval_data=str(toy / "data" / "harm_eval.jsonl"), eval_n=32, progress=False)
    values.update(overrides)
    return TriggerConfig(**values)


@pytest.fixture(scope="module")
def learned(toy_micro, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "trigger"
    model = load_model(str(toy_micro / "base"), "float32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = learn_trigger(trigger_config(toy_micro, out), model=model,
                            tokenizer=load_tokenizer(str(toy_micro / "base")))
    return out, metrics, model, before


def test_only_the_trigger_is_trained(learned):
    out, metrics, model, before = learned
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"frozen weight {name} changed"
    trigger = SafetyTrigger.load(out, model=model, fmt="plain")
    assert trigger.vectors.abs().max() > 0.05  # moved far from its N(0, 0.01^2) start


def test_loss_falls_and_trigger_makes_the_model_refuse(learned):
    _, metrics, _, _ = learned
    assert metrics["last_loss"] < 0.5 * metrics["first_loss"]
    assert metrics["refusal_rate_no_trigger"] <= 0.1
    assert metrics["refusal_rate_trigger"] >= 0.8
    history = metrics["component_history"]
    assert history and {"refusal_ce", "consistency_kl"} <= set(history[0])


def test_output_folder_is_complete_and_clean(learned):
    out, _, _, _ = learned
    names = {p.name for p in out.iterdir()}
    assert {"trigger.safetensors", "trigger.json", "config.yaml", "metrics.json", "eval_generations.jsonl"} <= names
    assert "checkpoints" not in names and not out.with_name(out.name + ".partial").exists()
    meta = json.loads((out / "trigger.json").read_text())
    assert meta["format"] == "plain" and meta["anchor"] == "User:" and meta["length"] == 4 and meta["hidden_size"] == 64


def test_benign_term_and_text_init_run(toy_micro, tmp_path):
    metrics = learn_trigger(trigger_config(toy_micro, tmp_path / "t", epochs=1, benign_weight=1.0, init="text",
                                           eval_data=""))
    assert "benign_kl" in metrics["component_history"][0]
    assert metrics["rows"] > metrics["harmful_rows"]  # benign rows were used


def test_cli_errors(toy_micro, tmp_path, monkeypatch):
    benign_only = tmp_path / "benign.jsonl"
    benign_only.write_text('{"prompt": "hi", "response": "hello", "prompt_harm_label": "unharmful"}\n')
    code, _, err = run_cli("trigger", "--model", str(toy_micro / "base"), "--data", str(benign_only),
                           "--out", str(tmp_path / "x"), "--no-progress")
    assert code == 2 and "no harmful prompts" in err and len(err.strip().splitlines()) == 1
    import sgt.methods.trigger.trainer as stage1

    real, calls = stage1.response_ce, []

    def diverging(*args, **kwargs):  # the loss turns NaN at the third step
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(stage1, "response_ce", diverging)
    code, _, err = run_cli("trigger", "--model", str(toy_micro / "base"), "--data",
                           str(toy_micro / "data" / "defense_train.jsonl"), "--out", str(tmp_path / "y"),
                           "--max-length", "64", "--no-progress")
    assert code == 2 and "nan at step 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y").exists() and not (tmp_path / "y.partial").exists()


def test_validation_curve_and_keep_best(toy_micro, tmp_path):
    """eval_steps measures the held-out refusal rate during training; keep: best keeps the trigger of the
    best measurement (the earliest on ties), and the kept trigger really refuses that often."""
    from sgt.data.formats import PromptFormat
    from sgt.refusal import held_out_prompts, refusal_rate

    config = trigger_config(toy_micro, tmp_path / "t", epochs=2, eval_steps=2, keep="best")
    metrics = learn_trigger(config)
    curve = metrics["validation_curve"]
    steps = [point["step"] for point in curve]
    assert steps[0] == 0 and steps[-1] == metrics["steps"] and steps[1:-1] == list(range(2, metrics["steps"], 2))
    best = max(point["refusal_rate"] for point in curve)
    first_best = next(point["step"] for point in curve if point["refusal_rate"] == best)
    assert metrics["kept_step"] == first_best and metrics["refusal_rate_trigger"] == best
    model, tokenizer = load_model(config.model, "float32"), load_tokenizer(config.model)
    kept = SafetyTrigger.load(tmp_path / "t", model=model, fmt="plain")
    rate, _ = refusal_rate(model, tokenizer, held_out_prompts(config, config.seed), PromptFormat(tokenizer, "plain"), kept)
    assert rate == best
    assert json.loads((tmp_path / "t" / "trigger.json").read_text())["kept_step"] == first_best


def test_a_weak_trigger_stops_sgt_before_stage_2_unless_told_to_go_on(toy_micro, tmp_path, capsys):
    from sgt.context import RunContext
    from sgt.data.sources import DataFields
    from sgt.defenses import make_defense
    from sgt.errors import UserError

    context = RunContext(model=str(toy_micro / "base"), defense_data=DataFields(data=str(toy_micro / "data" / "defense_train.jsonl")),
                         format="plain", dtype="float32", seed=0, trust_remote_code=False, progress=False)
    weak = {"length": 4, "tied": False, "lr": 1e-4, "epochs": 1, "batch_size": 16, "max_length": 64,
            "eval_data": str(toy_micro / "data" / "harm_eval.jsonl"), "eval_n": 16, "min_refusal": 1.0}
    align = {"rows": 16, "epochs": 1, "batch_size": 8, "max_length": 64}
    defense = make_defense({"name": "sgt", "trigger": {**weak, "on_weak": "stop"}, "align": align}, context)
    with pytest.raises(UserError, match="refuse only .* below min_refusal 100%.*on_weak: warn"):
        defense.apply(tmp_path / "sgt")
    assert (tmp_path / "sgt" / "trigger" / "trigger.safetensors").is_file()   # the trigger is kept
    assert not (tmp_path / "sgt" / "model").exists()                          # stage 2 never ran
    going_on = make_defense({"name": "sgt", "trigger": {**weak, "on_weak": "warn"}, "align": align}, context)
    assert going_on.fingerprint() == defense.fingerprint()   # on_weak changes no result: the trigger is reused
    going_on.apply(tmp_path / "sgt")
    assert "WARNING: defense sgt: the trigger makes the frozen model refuse only" in capsys.readouterr().err
    assert (tmp_path / "sgt" / "model" / "config.json").is_file()
