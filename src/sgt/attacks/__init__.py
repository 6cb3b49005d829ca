"""Attacks an experiment runs against every defended model: a registry with one contract.

Every cell of the attack grid names a kind. A kind is one module in this package with one class:

    @register
    class MyAttack(Attack):
        kind = "my-attack"
        summary = "what it does, in a few words"
        settings_class = AttackConfig                                   # its settings (default: sgt attack's)
        def check(self, cell) -> None: ...                               # validate one cell's settings
        def run(self, model_dir: str, cell, out: Path) -> dict: ...      # train, write a checkpoint to `out`

`cell` (sgt.experiment.plan.Cell) carries the grid values (shots, lr, epochs, lora, seed): the grid (or the
searched attacker) is their only source, so the settings - the experiment's `attack.settings` (shared by
every cell) plus `attack.kinds.<kind>` (this kind's own) - cannot set them (`overwritten_settings`). They
are typed when the attack is built (`make_attack`): `self.settings` is an instance of `settings_class`.
`sgt run` calls `check` with every cell before any model is loaded. Modules are discovered automatically:
adding an attack kind is one new file (plus its test).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import build_config, under
from ..context import RunContext
from ..methods.finetune.config import AttackConfig
from ..registry import Registry

ATTACKS = Registry("attack kind", __name__, key="kind")
register = ATTACKS.register

# The attack fields a cell sets, with the grid field that gives their values (attack.seeds -> seed).
CELL_FIELDS = {"shots": "shots", "lr": "lr", "epochs": "epochs", "lora": "lora", "seed": "seeds"}
# The attack fields the run sets: the model under attack and where its checkpoint goes.
RUN_FIELDS = ("model", "out")


def overwritten_settings(settings: dict, where: str) -> list[str]:
    """One problem per key of `settings` that a cell or the run would overwrite: such a setting could
    never take effect, so a user who writes it must not believe it did."""
    problems = []
    for key, value in settings.items():
        if key in CELL_FIELDS:
            problems.append(f"{where}.{key} is set by the grid: use attack.{CELL_FIELDS[key]}: [{json.dumps(value)}]")
        elif key in RUN_FIELDS:
            problems.append(f"{where}.{key} is set by the run (every defended model is attacked, outputs go "
                            "under --out): remove it")
    return problems


class Attack:
    kind = ""
    summary = ""
    settings_class: type = AttackConfig
    defaults: dict = {}  # what this kind is (e.g. its harmful fraction); the settings may refine it

    def __init__(self, settings, context: RunContext):
        self.settings, self.context = settings, context

    @classmethod
    def run_values(cls, context: RunContext) -> dict:
        """The run-wide values under the settings (only those `settings_class` has are used): the
        attacker's data, the benign rows to mix in, the stage fields, then this kind's defaults."""
        return {**dataclasses.asdict(context.attack_data), "benign_data": context.benign_data.data,
                **context.stage_fields(), **cls.defaults}

    @classmethod
    def typed_settings(cls, values: dict, context: RunContext, where: str):
        return build_config(cls.settings_class, under(cls.settings_class, values, cls.run_values(context)), where=where)

    def with_settings(self, changes: dict) -> Attack:
        """The same attack with some settings changed (a searched attacker's batch size or LoRA rank)."""
        return type(self)(dataclasses.replace(self.settings, **changes), self.context)

    def check(self, cell) -> None:
        """Validate the settings as `cell` would use them (UserError); nothing is loaded or trained."""

    def run(self, model_dir: str, cell, out: Path) -> dict:
        raise NotImplementedError


def make_attack(kind: str, settings: dict, context: RunContext, where: str = "attack.kind") -> Attack:
    cls = ATTACKS.get(kind, where=where)
    return cls(cls.typed_settings(settings, context, where="attack.settings"), context)
