"""`harmful`: malicious fine-tuning on `shots` harmful question -> answer pairs (seed script 4.2_mft)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from ..launch import run_stage
from . import CELL_FIELDS, Attack, register


@register
class HarmfulFinetune(Attack):
    kind = "harmful"
    summary = "SFT on harmful QA pairs"
    defaults: dict = {"harmful_fraction": 1.0}  # what this kind is; its settings may refine the rest

    def check(self, cell) -> None:
        """The settings, and whether the data can give this cell's sample (local files that exist: a hub
        dataset is not downloaded to check it, a world file not built yet is checked once it is)."""
        from ..methods.finetune import attack_examples

        config = self.config(".", cell, Path("."))
        harmful = self._local_examples(config.data, config)
        benign = self._local_examples(config.benign_data) if config.harmful_fraction < 1 else []
        if harmful is not None and benign is not None:
            try:
                attack_examples(harmful, config.shots, config.seed, config.allow_repeat, config.harmful_fraction, benign)
            except UserError as exc:
                raise UserError(f"attack {self.kind} at {cell.shots} shots: {exc}") from None

    def _local_examples(self, path: str, fields=None) -> list | None:
        """The examples of a local data file, read once per attack (None: not a local file that exists)."""
        from ..data.sources import load_data, load_examples, looks_local

        if not path or not looks_local(path) or not Path(path).is_file():
            return None
        cache = self.__dict__.setdefault("_examples", {})
        if path not in cache:
            cache[path] = load_data(fields) if fields is not None else load_examples(path)
        return cache[path]

    def config(self, model_dir: str, cell, out: Path):
        """The stage config of one cell: the typed settings with the grid's values (the only source of
        shots, lr, epochs, lora and seed: settings cannot name them, see attacks.overwritten_settings),
        the model under attack and where it goes."""
        return dataclasses.replace(self.settings, model=model_dir, out=str(out),
                                   **{field: getattr(cell, field) for field in CELL_FIELDS})

    def run(self, model_dir: str, cell, out: Path) -> dict:
        from ..methods.finetune import run_finetune
        from ..utils import read_json

        config = self.config(model_dir, cell, out)
        run_stage("attack", config, run_finetune, self.context.launcher, out.parent)
        return read_json(out / "metrics.json")
