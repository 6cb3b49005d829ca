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
    # Where artefacts that several defenses of one run can share are kept by fingerprint (e.g. stage-1
    # triggers: SGT variants with the same stage-1 settings train it once); None: in each defense's folder.
    shared_dir: Path | None = None

    def common(self) -> dict:
        """Fields every stage config shares with the experiment."""
        return {"model": self.base_model, "format": self.format, "dtype": self.dtype, "seed": self.seed,
                "trust_remote_code": self.trust_remote_code, "progress": self.progress}


class Defense:
    """Base class: subclasses set `kind` and `summary` and implement `fingerprint` and `apply`."""

    kind = ""
    summary = ""
    # True for the model as released: the report measures every defense's capability against it
    undefended = False

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
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return DEFENSES


def make_defense(spec: dict, context: DefenseContext) -> Defense:
    """`spec` = {name: ..., defense: kind (default: the name), ...settings}."""
    from ..utils import check_name

    spec = dict(spec)
    name = check_name(str(spec.pop("name", "") or spec.get("defense", "")), "defense name")  # a folder name
    kind = str(spec.pop("defense", name))
    kinds = defense_kinds()
    if kind not in kinds:
        raise UserError(f"unknown defense {kind!r} (in defenses: {name}); use one of {', '.join(sorted(kinds))}")
    if "out" in spec:
        raise UserError(f"defenses: {name} sets `out`, but a defense is written under --out (defenses/{name}); "
                        "remove it")
    return kinds[kind](name, spec, context)


def settings_section(settings: dict, key: str, where: str) -> dict:
    """The mapping `settings[key]` (e.g. an sgt defense's `trigger:`), or a one-line error for any
    other shape."""
    section = settings.get(key) or {}
    if not isinstance(section, dict):
        raise UserError(f"{where}.{key} must be a mapping of field: value (e.g. {key}: {{lr: 0.03}}), got {section!r}")
    return section


def without_run_fields(values: dict) -> dict:
    """Fields that do not change a stage's result (where it is written, progress bars, resuming, what a
    weak trigger does)."""
    return {k: v for k, v in values.items()
            if k not in ("out", "progress", "resume", "logging_steps", "save_steps", "min_refusal", "on_weak")}


class TrainedDefense(Defense):
    """A defense that is one training run of `trainer_class` on the three defense streams (refusal,
    harmful, benign; see sgt.methods.defend). Subclasses set `config_class` (a DefenseTrainingConfig
    with the defense's own coefficients) and `trainer_class` (its loss)."""

    config_class: type = None
    trainer_class: type = None

    def __init__(self, name: str, settings: dict, context: DefenseContext):
        from ..config import build_config

        super().__init__(name, settings, context)
        values = {**context.common(), **context.defense_data, **settings}
        self.config = build_config(self.config_class, values, where=f"defenses.{name}")

    def fingerprint(self) -> dict:
        from ..config import to_dict

        return {"kind": self.kind, **without_run_fields(to_dict(self.config))}

    def apply(self, folder: Path) -> str:
        """Train (in this process, or under the experiment's launcher via `sgt defend`)."""
        import dataclasses

        from ..launch import resumable, run_stage
        from .defend import DefendConfig, run_defend

        out = folder / "model"
        # A killed run left checkpoints: continue from them (in this process, or via `sgt defend`).
        config = resumable(dataclasses.replace(self.config, out=str(out)))
        if not self.context.launcher:
            self._train(config)
            return str(out)
        command = DefendConfig(defense=self.kind, out=str(out), settings=dataclasses.asdict(config))
        run_stage("defend", command, run_defend, self.context.launcher, folder)
        return str(out)

    def train(self, out: str) -> dict:
        """Train into `out` (`sgt defend`); resumes only when the settings say resume."""
        import dataclasses

        return self._train(dataclasses.replace(self.config, out=out))

    def _train(self, config) -> dict:
        from ..launch import stage_done
        from ..methods.defend import train_defense

        return {} if stage_done(config) else train_defense(config, self.trainer_class)
