"""The trained baselines' shared defense: one training run on the three defense streams."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import to_dict
from . import Defense, without_run_fields


class TrainedDefense(Defense):
    """A defense that is one training run of `trainer_class` on the three defense streams (refusal,
    harmful, benign; see sgt.methods.defend). Subclasses set `settings_class` (a DefenseTrainingConfig
    with the defense's own coefficients: the settings are the stage's whole config) and `trainer_class`
    (its loss)."""

    trainer_class: type = None

    def fingerprint(self) -> dict:
        return {"kind": self.kind, **without_run_fields(to_dict(self.settings))}

    def apply(self, folder: Path) -> str:
        """Train (in this process, or under the experiment's launcher via `sgt defend`)."""
        from ..launch import resumable, run_stage
        from .defend import DefendConfig, run_defend

        out = folder / "model"
        # A killed run left checkpoints: continue from them (in this process, or via `sgt defend`).
        config = resumable(dataclasses.replace(self.settings, out=str(out)))
        if not self.context.launcher:
            self._train(config)
            return str(out)
        # `sgt defend` in the subprocess types these settings into the same config
        settings = {k: v for k, v in to_dict(config).items() if k != "out"}
        command = DefendConfig(defense=self.kind, out=str(out), settings=settings)
        run_stage("defend", command, run_defend, self.context.launcher, folder)
        return str(out)

    def train(self, out: str) -> dict:
        """Train into `out` (`sgt defend`); resumes only when the settings say resume."""
        return self._train(dataclasses.replace(self.settings, out=out))

    def _train(self, config) -> dict:
        from ..launch import stage_done
        from ..methods.defend import train_defense

        return {} if stage_done(config) else train_defense(config, self.trainer_class)
