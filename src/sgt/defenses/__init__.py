"""Defenses applied before release: a registry with one contract.

A defense turns the base model into a defended Hugging Face checkpoint. It is one module in this
package with one class:

    @register
    class MyDefense(Defense):
        kind = "my-defense"                      # the name used in configs (`defense: my-defense`)
        summary = "what it does, in a few words" # shown by `sgt run --dry-run`
        def __init__(self, name, settings: dict, context): ...   # validate settings here (UserError)
        def fingerprint(self) -> dict: ...        # everything its result depends on (for resume)
        def apply(self, folder: Path) -> str: ... # write the defended model under `folder`, return its path

`apply` runs its training stages with `run_stage` (sgt.launch), which skips finished stages and
resumes interrupted ones, so a killed run resumes inside a defense too. Modules in this package are
discovered automatically: adding a defense is one new file (plus its test). The experiment runner
and the report hold no defense-specific code.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFENSES: dict[str, type] = {}


@dataclass
class DefenseContext:
    """What every defense gets from the experiment: the base model and the defense data."""

    base_model: str
    defense_data: dict        # DataFields values of the defense (alignment) data
    format: str
    dtype: str
    seed: int
    trust_remote_code: bool
    progress: bool
    launcher: list[str] | None  # e.g. ["accelerate", "launch", ...]: train in subprocesses

    def common(self) -> dict:
        """Fields every stage config shares with the experiment."""
        return {"model": self.base_model, "format": self.format, "dtype": self.dtype, "seed": self.seed,
                "trust_remote_code": self.trust_remote_code, "progress": self.progress}


class Defense:
    """Base class: subclasses set `kind` and `summary` and implement `fingerprint` and `apply`."""

    kind = ""
    summary = ""

    def __init__(self, name: str, settings: dict, context: DefenseContext):
        self.name, self.context = name, context

    def fingerprint(self) -> dict:
        raise NotImplementedError

    def apply(self, folder: Path) -> str:
        raise NotImplementedError

    def trigger_path(self, folder: Path) -> Path | None:
        """Where this defense's trigger is once applied (None: it has none); used by the drift measure."""
        return None


def register(cls: type) -> type:
    """Class decorator: make a defense available under `cls.kind`."""
    DEFENSES[cls.kind] = cls
    return cls


def defense_kinds() -> dict[str, type]:
    """Every registered defense (importing each module of this package once)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return DEFENSES


def make_defense(spec: dict, context: DefenseContext) -> Defense:
    """`spec` = {name: ..., defense: kind (default: the name), ...settings}."""
    spec = dict(spec)
    name = str(spec.pop("name", "") or spec.get("defense", ""))
    kind = str(spec.pop("defense", name))
    kinds = defense_kinds()
    if kind not in kinds:
        raise UserError(f"unknown defense {kind!r} (in defenses: {name}); use one of {', '.join(sorted(kinds))}")
    return kinds[kind](name, spec, context)


def without_run_fields(values: dict) -> dict:
    """Fields that do not change a stage's result (where it is written, progress bars, resuming)."""
    return {k: v for k, v in values.items() if k not in ("out", "progress", "resume", "logging_steps", "save_steps")}
