"""`sgt`: stage 1 (learn the trigger on the frozen base) then stage 2 (align to it)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import cfg, to_dict
from ..errors import UserError
from ..launch import run_stage
from ..methods.align.config import AlignConfig
from ..methods.trigger.config import TriggerConfig
from . import Defense, register, without_run_fields


@dataclass
class SGTSettings:
    """An sgt defense's settings: one section per stage (each gets the run's model, data, format, seed...)."""

    trigger: TriggerConfig = cfg(TriggerConfig(), "Stage 1: learning the trigger on the frozen base (`sgt trigger`).")
    align: AlignConfig = cfg(AlignConfig(), "Stage 2: aligning the model to base + trigger (`sgt align`).")


@register
class SGTDefense(Defense):
    kind = "sgt"
    summary = "trigger (stage 1) -> align (stage 2)"
    settings_class = SGTSettings

    @property
    def trigger(self) -> TriggerConfig:
        return self.settings.trigger

    @property
    def align(self) -> AlignConfig:
        return self.settings.align

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

        trigger_out = str(self.trigger_path(folder))
        if not self.align.trigger:  # (a given trigger was learned elsewhere)
            run_stage("trigger", dataclasses.replace(self.trigger, out=trigger_out), learn_trigger,
                      self.context.launcher, folder)
            self._check_trigger(Path(trigger_out))
        align = dataclasses.replace(self.align, out=str(folder / "model"), trigger=trigger_out)
        run_stage("align", align, align_model, self.context.launcher, folder)
        return align.out

    def _check_trigger(self, trigger_dir: Path) -> None:
        """Stage 2 can at best copy its teacher: a trigger that refuses too little of the held-out
        prompts stops the defense here (on_weak: stop) or is reported loudly (warn)."""
        from ..methods.trigger.trainer import weak_trigger
        from ..utils import print_line, read_json

        metrics = read_json(trigger_dir / "metrics.json") if (trigger_dir / "metrics.json").is_file() else {}
        if "refusal_rate_trigger" not in metrics:
            print_line(f"warning: defense {self.name}: the trigger was not measured on held-out prompts "
                       "(set trigger.eval_data), so nobody knows whether it refuses")
            return
        problem = weak_trigger(metrics, self.trigger)
        if problem and self.trigger.on_weak == "stop":
            raise UserError(f"defense {self.name}: {problem}")
        if problem:
            print_line(f"WARNING: defense {self.name}: {problem}")

    def trigger_path(self, folder: Path) -> Path:
        """A given trigger; else the run's shared trigger of these stage-1 settings (trained once for every
        SGT variant that uses them); else the defense's own folder."""
        if self.align.trigger:
            return Path(self.align.trigger)
        own = folder / "trigger"
        if self.context.shared_dir is None or own.is_dir():  # (a run folder of an older sgt keeps it there)
            return own
        digest = hashlib.sha256(json.dumps(self.fingerprint()["trigger"], sort_keys=True).encode()).hexdigest()
        return self.context.shared_dir / "triggers" / digest[:16]


def _file_digest(trigger: str) -> str | None:
    path = Path(trigger)
    path = path / "trigger.safetensors" if path.is_dir() else path
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
