"""`harmful`: malicious fine-tuning on `shots` harmful question -> answer pairs (seed script 4.2_mft)."""

from __future__ import annotations

from pathlib import Path

from ..config import build_config
from ..launch import run_stage
from . import Attack, register


@register
class HarmfulFinetune(Attack):
    kind = "harmful"
    summary = "SFT on harmful QA pairs"
    defaults: dict = {"harmful_fraction": 1.0}  # what this kind is; its settings may refine the rest

    def __init__(self, settings: dict, context):
        super().__init__(settings, context)
        self.config(".", _ProbeCell(), Path("."))  # validate the settings now, before any training

    def config(self, model_dir: str, cell, out: Path):
        from ..methods.finetune import AttackConfig

        values = {**self.context.attack_data, **self.context.common(), "benign_data": self.context.benign_data,
                  **self.defaults, **self.settings, "model": model_dir,
                  "out": str(out), "shots": cell.shots, "lr": cell.lr, "epochs": cell.epochs, "lora": cell.lora,
                  "seed": cell.seed}
        return build_config(AttackConfig, values, where="attack.settings")

    def run(self, model_dir: str, cell, out: Path) -> dict:
        from ..methods.finetune import run_finetune
        from ..utils import read_json

        config = self.config(model_dir, cell, out)
        run_stage("attack", config, run_finetune, self.context.launcher, out.parent)
        return read_json(out / "metrics.json")


class _ProbeCell:
    """Grid values that always pass validation (the real cells are checked by the grid)."""

    shots, lr, epochs, lora, seed = 1, 1e-5, 1.0, False, 0
