"""Defenses applied before release, behind one small interface.

A defense turns the base model into a defended Hugging Face checkpoint:

    class MyDefense:
        kind = "my-defense"
        def __init__(self, name, settings, context): ...
        def fingerprint(self) -> dict: ...          # what its result depends on (for resume)
        def apply(self, folder) -> str: ...          # writes/returns the defended model's folder

and is registered in `DEFENSES`. The experiment runner treats all of them alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .config import build_config, to_dict
from .errors import UserError


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


class NoDefense:
    """`none`: the base model as released (the unaligned baseline)."""

    kind = "none"

    def __init__(self, name: str, settings: dict, context: DefenseContext):
        if settings:
            raise UserError(f"defense {name!r} (none) takes no settings, got {sorted(settings)}")
        self.name, self.context = name, context

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "model": self.context.base_model}

    def apply(self, folder: Path) -> str:
        return self.context.base_model


class SFTDefense:
    """`sft`: conventional safety alignment - cross-entropy on refusals (harmful) and answers (benign)."""

    kind = "sft"

    def __init__(self, name: str, settings: dict, context: DefenseContext):
        from .finetune import FinetuneConfig

        self.name, self.context = name, context
        values = {**_common(context), **context.defense_data, "refuse_harmful": True, **settings}
        self.config = build_config(FinetuneConfig, values, where=f"defenses.{name}")

    def fingerprint(self) -> dict:
        return {"kind": self.kind, **_without_run_fields(to_dict(self.config))}

    def apply(self, folder: Path) -> str:
        from .finetune import run_finetune

        config = dataclasses.replace(self.config, out=str(folder / "model"))
        run_stage("sft", config, run_finetune, self.context.launcher, folder)
        return config.out


class SGTDefense:
    """`sgt`: stage 1 (learn the trigger on the frozen base) then stage 2 (align to it)."""

    kind = "sgt"

    def __init__(self, name: str, settings: dict, context: DefenseContext):
        from .stage1 import TriggerConfig
        from .stage2 import AlignConfig

        self.name, self.context = name, context
        unknown = set(settings) - {"trigger", "align"}
        if unknown:
            raise UserError(f"defense {name!r} (sgt) has unknown settings {sorted(unknown)}; "
                            "put stage-1 fields under `trigger:` and stage-2 fields under `align:`")
        common = {**_common(context), **context.defense_data}
        self.trigger = build_config(TriggerConfig, {**common, **settings.get("trigger", {})},
                                    where=f"defenses.{name}.trigger")
        self.align = build_config(AlignConfig, {**common, **settings.get("align", {})}, where=f"defenses.{name}.align")

    def fingerprint(self) -> dict:
        if self.align.trigger:  # stage 1 is skipped: the result depends on that trigger file instead
            trigger = {"file": self.align.trigger, "sha256": _file_digest(self.align.trigger)}
        else:
            trigger = _without_run_fields(to_dict(self.trigger))
        return {"kind": self.kind, "trigger": trigger, "align": _without_run_fields(to_dict(self.align))}

    def apply(self, folder: Path) -> str:
        from .stage1 import learn_trigger
        from .stage2 import align_model

        if self.align.trigger:  # a trigger learned elsewhere (e.g. shared by several stage-2 variants)
            trigger_out = self.align.trigger
        else:
            trigger_out = str(folder / "trigger")
            if not (folder / "trigger" / "trigger.safetensors").is_file():
                run_stage("trigger", dataclasses.replace(self.trigger, out=trigger_out), learn_trigger,
                          self.context.launcher, folder)
        align = dataclasses.replace(self.align, out=str(folder / "model"), trigger=trigger_out)
        run_stage("align", align, align_model, self.context.launcher, folder)
        return align.out


DEFENSES = {cls.kind: cls for cls in (NoDefense, SFTDefense, SGTDefense)}


def make_defense(spec: dict, context: DefenseContext):
    """`spec` = {name: ..., defense: kind (default: the name), ...settings}."""
    spec = dict(spec)
    name = str(spec.pop("name", "") or spec.get("defense", ""))
    kind = str(spec.pop("defense", name))
    if kind not in DEFENSES:
        raise UserError(f"unknown defense {kind!r} (in defenses: {name}); use one of {', '.join(DEFENSES)}")
    return DEFENSES[kind](name, spec, context)


def _common(context: DefenseContext) -> dict:
    return {"model": context.base_model, "format": context.format, "dtype": context.dtype, "seed": context.seed,
            "trust_remote_code": context.trust_remote_code, "progress": context.progress}


def _file_digest(trigger: str) -> str | None:
    import hashlib

    path = Path(trigger)
    path = path / "trigger.safetensors" if path.is_dir() else path
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _without_run_fields(values: dict) -> dict:
    """Fields that do not change the result (where it is written, progress bars) are left out."""
    return {k: v for k, v in values.items() if k not in ("out", "progress", "resume", "trigger", "logging_steps")}


def run_stage(command: str, config, function, launcher: list[str] | None, folder: Path):
    """Run one training stage in this process, or under `launcher` (e.g. accelerate launch) as a subprocess."""
    if not launcher:
        return function(config)
    import subprocess

    from .config import save_config

    folder.mkdir(parents=True, exist_ok=True)
    config_file = save_config(config, folder, name=f"{command}.config.yaml")
    log = folder / f"{command}.log"
    argv = [*launcher, "-m", "sgt.cli", *command.split(), "--config", str(config_file)]
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        raise UserError(f"stage `{command}` failed under {' '.join(launcher)} (exit code {code}); see {log}")
    return None
