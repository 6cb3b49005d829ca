"""Attacks an experiment runs against every defended model: a registry with one contract.

Every cell of the attack grid names a kind. A kind is one module in this package with one class:

    @register
    class MyAttack(Attack):
        kind = "my-attack"
        summary = "what it does, in a few words"
        def __init__(self, settings: dict, context: AttackContext): ...  # validate (UserError)
        def check(self, cell) -> None: ...                               # validate one cell's settings
        def run(self, model_dir: str, cell, out: Path) -> dict: ...      # train, write a checkpoint to `out`

`cell` carries the grid values (shots, lr, epochs, lora, seed): the grid (or the searched attacker) is
their only source, so `settings` - the experiment's `attack.settings` (shared by every cell) plus
`attack.kinds.<kind>` (this kind's own) - cannot set them (`overwritten_settings`). `sgt run` calls
`check` with every cell before any model is loaded. Modules are discovered automatically: adding an
attack kind is one new file (plus its test).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

ATTACKS: dict[str, type] = {}

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


@dataclass
class AttackContext:
    """What every attack gets from the experiment: the attacker's data and the shared run settings."""

    attack_data: dict       # DataFields values of the attacker's harmful data
    benign_data: str        # benign fine-tuning data (for kinds that mix it in)
    format: str
    dtype: str
    trust_remote_code: bool
    progress: bool
    launcher: list[str] | None

    def common(self) -> dict:
        return {"format": self.format, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code,
                "progress": self.progress}


class Attack:
    kind = ""
    summary = ""

    def __init__(self, settings: dict, context: AttackContext):
        self.settings, self.context = settings, context

    def check(self, cell) -> None:
        """Validate the settings as `cell` would use them (UserError); nothing is loaded or trained."""

    def run(self, model_dir: str, cell, out: Path) -> dict:
        raise NotImplementedError


def register(cls: type) -> type:
    ATTACKS[cls.kind] = cls
    return cls


def attack_kinds() -> dict[str, type]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return ATTACKS


def make_attack(kind: str, settings: dict, context: AttackContext, where: str = "attack.kind") -> Attack:
    kinds = attack_kinds()
    if kind not in kinds:
        raise UserError(f"unknown attack kind {kind!r} in {where}; use one of {', '.join(sorted(kinds))}")
    return kinds[kind](settings, context)
