"""The plan of an experiment: the attack grid's cells, the fingerprints that decide what is done,
and the text `sgt run --dry-run` prints."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

from .config import GRID_FIELDS, AttackGrid, defense_name


@dataclass
class Cell:
    kind: str
    shots: int
    lr: float
    epochs: float
    lora: bool
    seed: int

    @property
    def id(self) -> str:
        prefix = "" if self.kind == "harmful" else f"{self.kind}_"
        return f"{prefix}shots{self.shots}_lr{self.lr:g}_ep{self.epochs:g}_{'lora' if self.lora else 'full'}_seed{self.seed}"

    @property
    def setting(self) -> str:
        """The attack setting without the budget and seed (one line per setting in the plots)."""
        kind = "" if self.kind == "harmful" else f"{self.kind}, "
        return f"{kind}lr={self.lr:g}, ep={self.epochs:g}, {'LoRA' if self.lora else 'full'}"


def grid_cells(grid: AttackGrid) -> list[Cell]:
    """The product of the grid's values, then of each `extra` grid (its missing keys from the main one);
    a cell listed twice runs once."""
    cells = []
    for part in [{}, *grid.extra]:
        values = [part.get(key, getattr(grid, key)) for key in GRID_FIELDS]
        for k, s, lr, e, lo, seed in itertools.product(*values):
            cell = Cell(str(k), int(s), float(lr), float(e), bool(lo), int(seed))
            if cell not in cells:
                cells.append(cell)
    return cells


def fingerprint(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def defense_copies(config) -> dict[str, list[tuple[str, int]]]:
    """Per defense name: its trained copies as (folder name, seed). One seed: the folder is the name
    itself; several: NAME@seedK."""
    seeds = list(config.defense_seeds) or [config.seed]
    return {defense_name(spec): [(defense_name(spec) if len(seeds) == 1 else f"{defense_name(spec)}@seed{s}", s)
                                 for s in seeds] for spec in config.defenses}
