"""Settings are typed when an experiment is built, each by the class its plug-in declares; the run-wide
fields go under them (what a config writes wins); nothing is lost on the way to a launched stage; one
default per setting; one cell type for the grid and the searched attacker."""

from __future__ import annotations

import dataclasses

import pytest

from sgt.context import RunContext
from sgt.data.sources import DataFields
from sgt.defenses import DEFENSES, DefenseSpec, make_defense

CONTEXT = RunContext(model="base", format="plain", dtype="float32", seed=7, trust_remote_code=False, progress=False,
                     defense_data=DataFields(data="defense.jsonl", split="train"))


def test_every_defense_declares_a_settings_class_and_gets_an_instance_of_it():
    for kind, cls in DEFENSES.all().items():
        assert dataclasses.is_dataclass(cls.settings_class), kind
        settings = {"sgt": {"align": {"lr": "5e-4"}}, "none": {}}.get(kind, {"lr": "5e-4"})
        defense = make_defense({"name": kind, **settings}, CONTEXT)
        assert isinstance(defense.settings, cls.settings_class), kind
    sgt = make_defense({"name": "sgt", "align": {"lr": "5e-4"}}, CONTEXT)
    assert sgt.settings.align.lr == 5e-4 and isinstance(sgt.settings.align.lr, float)  # typed, from the text


def test_run_wide_fields_go_under_what_a_config_writes():
    sft = make_defense({"name": "sft", "lr": 1e-3}, CONTEXT).settings
    assert (sft.model, sft.data, sft.split, sft.seed, sft.dtype, sft.refuse_harmful) == \
        ("base", "defense.jsonl", "train", 7, "float32", True)
    own = make_defense({"name": "sft", "seed": 3, "refuse_harmful": False}, CONTEXT).settings
    assert (own.seed, own.refuse_harmful) == (3, False)  # written in the config: it wins
    sgt = make_defense({"name": "sgt", "trigger": {"length": 2}}, CONTEXT).settings
    assert (sgt.trigger.length, sgt.trigger.model, sgt.align.model, sgt.align.data, sgt.align.seed) == \
        (2, "base", "base", "defense.jsonl", 7)  # each stage's section gets the run's fields


def test_a_defense_name_is_worked_out_in_one_place():
    assert DefenseSpec.of({"name": "a", "defense": "sgt", "attacked": False, "lr": 1}) == \
        DefenseSpec(name="a", kind="sgt", attacked=False, settings={"lr": 1})
    assert DefenseSpec.of({"defense": "sft"}).name == "sft" and DefenseSpec.of({"name": "sft"}).kind == "sft"


def test_a_launched_baseline_trains_with_exactly_its_typed_settings(tmp_path, monkeypatch):
    """Under a launcher a baseline runs as `sgt defend` in a subprocess: the command it is sent, typed again
    there, gives the same config (nothing dropped, renamed or re-defaulted on the way)."""
    import sgt.launch
    from sgt.defenses.defend import run_defend
    from sgt.defenses.trained import TrainedDefense

    context = dataclasses.replace(CONTEXT, launcher=["accelerate", "launch"])
    defense = make_defense({"name": "booster", "lam": 2.5, "lr": 3e-4, "columns": {"prompt": "q"}}, context)
    sent = {}
    monkeypatch.setattr(sgt.launch, "run_stage", lambda command, stage, *a: sent.update(command=stage))
    defense.apply(tmp_path)
    trained = {}
    monkeypatch.setattr(TrainedDefense, "train", lambda self, out: trained.update(settings=self.settings, out=out))
    run_defend(sent["command"])
    assert trained["out"] == str(tmp_path / "model")
    assert trained["settings"] == defense.settings and trained["settings"].columns == {"prompt": "q"}


def test_one_default_per_attack_setting():
    from sgt.experiment.config import AttackGrid
    from sgt.methods.finetune.config import AttackConfig

    grid, attack = AttackGrid(), AttackConfig()
    assert (grid.lr, grid.epochs, grid.lora) == ([attack.lr], [attack.epochs], [attack.lora])


def test_the_searched_attacker_samples_grid_cells():
    from sgt.experiment.config import SearchSettings
    from sgt.experiment.plan import Cell
    from sgt.experiment.search import sample

    class Trial:  # the first choice of every range
        def suggest_categorical(self, name, choices):
            return choices[-1]

        def suggest_float(self, name, low, high, log=False):
            return low

        def suggest_int(self, name, low, high, log=False):
            return low

    cell, settings = sample(Trial(), SearchSettings(trials=1, shots=16, lora=[False, True]))
    assert type(cell) is Cell and cell.id == "shots16_lr1e-06_ep1_lora_seed0"
    assert settings == {"batch_size": 32, "lora_r": 8, "lora_alpha": 16}


@pytest.mark.parametrize("kind", ["harmful", "mixed"])
def test_attack_settings_are_typed_per_kind_and_cells_set_the_grid_values(kind, tmp_path):
    from sgt.attacks import make_attack
    from sgt.experiment.plan import Cell

    context = dataclasses.replace(CONTEXT, attack_data=DataFields(data="attack.jsonl"),
                                  benign_data=DataFields(data="benign.jsonl"))
    attack = make_attack(kind, {"batch_size": "4"}, context)
    assert attack.settings.batch_size == 4 and attack.settings.harmful_fraction == (1.0 if kind == "harmful" else 0.1)
    config = attack.config("defended", Cell(kind, 8, 1e-3, 2.0, True, 5), tmp_path)
    assert (config.model, config.shots, config.lr, config.epochs, config.lora, config.seed, config.batch_size) == \
        ("defended", 8, 1e-3, 2.0, True, 5, 4)
    assert (config.data, config.benign_data) == ("attack.jsonl", "benign.jsonl")
