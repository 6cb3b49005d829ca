"""Plug-in contracts: a defense and an attack kind defined only here run through `sgt run` untouched,
and every registry fails with one line on unknown names."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from conftest import run_cli
from sgt.attacks import ATTACKS, Attack
from sgt.attacks import register as register_attack
from sgt.config import to_dict
from sgt.defenses import DEFENSES, Defense, register, without_run_fields
from sgt.launch import run_stage
from sgt.methods.finetune.config import FinetuneConfig
from test_experiment import MICRO, micro_overrides, set_args


@register
class HalfLearningRateSFT(Defense):  # the ten-line example of docs/extending.md
    kind, summary = "sft-half-lr", "sft at half the learning rate"
    settings_class = FinetuneConfig  # its settings: `sgt sft`'s, over the run's model, data, format, seed...

    def fingerprint(self):
        return {"kind": self.kind, **without_run_fields(to_dict(self.settings))}

    def apply(self, folder):
        from sgt.methods.finetune import run_finetune
        config = dataclasses.replace(self.settings, out=str(folder / "model"), refuse_harmful=True,
                                     lr=self.settings.lr / 2)
        run_stage("sft", config, run_finetune, self.context.launcher, folder)
        return config.out


@register_attack
class CopyAttack(Attack):
    """An 'attack' that changes nothing: the attacked model is the defended one."""

    kind, summary = "copy", "no training"

    def run(self, model_dir, cell, out):
        shutil.copytree(model_dir, out)
        return {"rows": 0, "steps": 0}


def test_builtin_registries_are_discovered():
    assert {"none", "sft", "sgt"} <= set(DEFENSES.names())
    assert "harmful" in ATTACKS


@pytest.mark.slow
def test_a_new_defense_and_attack_kind_need_no_change_elsewhere(toy_micro, tmp_path):
    out = tmp_path / "run"
    overrides = micro_overrides(toy_micro, "defenses=[{name: half, defense: sft-half-lr, epochs: 1, max_length: 96}]",
                                "attack.kind=[harmful, copy]", "attack.shots=[4]")
    code, _, err = run_cli("run", MICRO, "--out", str(out), *set_args(overrides))
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())["defenses"]["half"]
    settings = {row["setting"] for row in results["attacked"]}
    assert settings == {"lr=0.001, ep=2, full", "copy, lr=0.001, ep=2, full"}
    copied = next(r for r in results["attacked"] if r["setting"].startswith("copy"))
    assert copied["harmful_rate"] == results["defended"]["harmful_rate"]  # nothing changed the model
    config = json.loads((out / "defenses" / "half" / "model" / "metrics.json").read_text())
    assert config["steps"] > 0 and "| half |" in (out / "report.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("attack.kind=[teleport]", "unknown attack kind 'teleport'"),
    ("attack.kinds={copy: {x: 1}}", "attack.kinds has settings for ['copy']"),
    ("eval.harm.generator=telepathy", "unknown generator 'telepathy'"),
])
def test_unknown_plugins_are_one_line_errors(toy_micro, tmp_path, override, message):
    code, _, err = run_cli("run", MICRO, "--out", str(tmp_path / "x"), *set_args(micro_overrides(toy_micro, override)))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_vllm_generator_is_a_declared_seam():
    from sgt.errors import UserError
    from sgt.generation import GENERATORS, make_generator

    cls = GENERATORS.get("vllm")
    assert cls.supports_trigger is False and GENERATORS.get("hf").supports_trigger is True
    with pytest.raises(UserError, match="cannot insert a trigger"):
        make_generator("vllm", model_path="x", needs_trigger=True)


@pytest.mark.parametrize("registry, what", [
    ("sgt.defenses:DEFENSES", "defense"), ("sgt.attacks:ATTACKS", "attack kind"), ("sgt.judges:JUDGES", "judge"),
    ("sgt.generation:GENERATORS", "generator"), ("sgt.worlds:WORLD_KINDS", "world kind")])
def test_every_plugin_kind_has_the_same_registry_lookup_and_error(registry, what):
    """One mechanism for every kind of plug-in: the same lookup, the same one-line error listing every
    name it knows (the built-ins found without being listed anywhere)."""
    import importlib

    from sgt.errors import UserError
    from sgt.registry import Registry

    module, name = registry.split(":")
    plugins = getattr(importlib.import_module(module), name)
    assert isinstance(plugins, Registry)
    names = plugins.names()
    assert len(names) >= 2 and all(plugins.get(n) is not None for n in names)
    with pytest.raises(UserError) as error:
        plugins.get("nosuch", where="the config")
    assert str(error.value) == f"unknown {what} 'nosuch' in the config; use one of {', '.join(names)}"
