"""`sgt`: stage 1 (learn the trigger on the frozen base) then stage 2 (align to it)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from ..config import build_config, to_dict
from ..errors import UserError
from ..launch import run_stage
from . import Defense, register, settings_section, without_run_fields


@register
class SGTDefense(Defense):
    kind = "sgt"
    summary = "trigger (stage 1) -> align (stage 2)"

    def __init__(self, name: str, settings: dict, context):
        from ..methods.align import AlignConfig
        from ..methods.trigger import TriggerConfig

        super().__init__(name, settings, context)
        unknown = set(settings) - {"trigger", "align"}
        if unknown:
            raise UserError(f"defense {name!r} (sgt) has unknown settings {sorted(unknown)}; "
                            "put stage-1 fields under `trigger:` and stage-2 fields under `align:`")
        common = {**context.common(), **context.defense_data}
        self.trigger = build_config(TriggerConfig, {**common, **settings_section(settings, "trigger", f"defenses.{name}")},
                                    where=f"defenses.{name}.trigger")
        self.align = build_config(AlignConfig, {**common, **settings_section(settings, "align", f"defenses.{name}")},
                                  where=f"defenses.{name}.align")

    def fingerprint(self) -> dict:
        if self.align.trigger:  # stage 1 is skipped: the result depends on that trigger file instead
            trigger = {"file": self.align.trigger, "sha256": _file_digest(self.align.trigger)}
        else:
            trigger = without_run_fields(to_dict(self.trigger))
        align = {k: v for k, v in without_run_fields(to_dict(self.align)).items() if k != "trigger"}
        return {"kind": self.kind, "trigger": trigger, "align": align}

    def apply(self, folder: Path) -> str:
        from ..methods.align import align_model
        from ..methods.trigger import learn_trigger

        if self.align.trigger:  # a trigger learned elsewhere (e.g. shared by several stage-2 variants)
            trigger_out = self.align.trigger
        else:
            trigger_out = str(folder / "trigger")
            run_stage("trigger", dataclasses.replace(self.trigger, out=trigger_out), learn_trigger,
                      self.context.launcher, folder)
        align = dataclasses.replace(self.align, out=str(folder / "model"), trigger=trigger_out)
        run_stage("align", align, align_model, self.context.launcher, folder)
        return align.out

    def trigger_path(self, folder: Path) -> Path:
        return Path(self.align.trigger) if self.align.trigger else folder / "trigger"


def _file_digest(trigger: str) -> str | None:
    path = Path(trigger)
    path = path / "trigger.safetensors" if path.is_dir() else path
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
