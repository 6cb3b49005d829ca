"""Attacks an experiment runs against every defended model: a registry with one contract.

Every cell of the attack grid names a kind. A kind is one module in this package with one class:

    @register
    class MyAttack(Attack):
        kind = "my-attack"
        summary = "what it does, in a few words"
        def __init__(self, settings: dict, context: AttackContext): ...  # validate (UserError)
        def run(self, model_dir: str, cell, out: Path) -> dict: ...      # train, write a checkpoint to `out`

`cell` carries the grid values (shots, lr, epochs, lora, seed); `settings` are the experiment's
`attack.settings` (shared by every cell) plus `attack.kinds.<kind>` (this kind's own). Modules are
discovered automatically: adding an attack kind is one new file (plus its test).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

ATTACKS: dict[str, type] = {}


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

    def run(self, model_dir: str, cell, out: Path) -> dict:
        raise NotImplementedError


def register(cls: type) -> type:
    ATTACKS[cls.kind] = cls
    return cls


def attack_kinds() -> dict[str, type]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return ATTACKS


def make_attack(kind: str, settings: dict, context: AttackContext) -> Attack:
    kinds = attack_kinds()
    if kind not in kinds:
        raise UserError(f"unknown attack kind {kind!r} in attack.kind; use one of {', '.join(sorted(kinds))}")
    return kinds[kind](settings, context)
