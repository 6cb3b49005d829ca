"""`sft`: conventional safety alignment - cross-entropy on refusals (harmful) and answers (benign)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import to_dict
from ..launch import run_stage
from ..methods.finetune.config import FinetuneConfig
from . import Defense, register, without_run_fields


@register
class SFTDefense(Defense):
    kind = "sft"
    summary = "sft (refusal/benign cross-entropy)"
    settings_class = FinetuneConfig

    @classmethod
    def run_values(cls, context) -> dict:
        return {**super().run_values(context), "refuse_harmful": True}  # what this defense is; settings may say otherwise

    def fingerprint(self) -> dict:
        return {"kind": self.kind, **without_run_fields(to_dict(self.settings))}

    def apply(self, folder: Path) -> str:
        from ..methods.finetune import run_finetune

        config = dataclasses.replace(self.settings, out=str(folder / "model"))
        run_stage("sft", config, run_finetune, self.context.launcher, folder)
        return config.out
