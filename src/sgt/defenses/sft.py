"""`sft`: conventional safety alignment - cross-entropy on refusals (harmful) and answers (benign)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import build_config, to_dict
from ..launch import run_stage
from . import Defense, register, without_run_fields


@register
class SFTDefense(Defense):
    kind = "sft"
    summary = "sft (refusal/benign cross-entropy)"

    def __init__(self, name: str, settings: dict, context):
        from ..methods.finetune import FinetuneConfig

        super().__init__(name, settings, context)
        values = {**context.common(), **context.defense_data, "refuse_harmful": True, **settings}
        self.config = build_config(FinetuneConfig, values, where=f"defenses.{name}")

    def fingerprint(self) -> dict:
        return {"kind": self.kind, **without_run_fields(to_dict(self.config))}

    def apply(self, folder: Path) -> str:
        from ..methods.finetune import run_finetune

        config = dataclasses.replace(self.config, out=str(folder / "model"))
        run_stage("sft", config, run_finetune, self.context.launcher, folder)
        return config.out
