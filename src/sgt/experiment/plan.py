"""The plan of an experiment: the attack grid's cells, the trained copies of each defense, and the
fingerprints that decide which results on disk are still valid."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass

from ..config import to_dict
from ..defenses import DefenseSpec
from .config import GRID_FIELDS, AttackGrid


@dataclass
class Cell:
    """One attack: a kind at a data budget, learning rate, number of epochs, full or LoRA, and seed.
    The grid's cells and the searched attacker's trials are both cells."""

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
    names = [DefenseSpec.of(entry).name for entry in config.defenses]
    return {name: [(name if len(seeds) == 1 else f"{name}@seed{s}", s) for s in seeds] for name in names}


class ResultKeys:
    """What each result of a run depends on. A result on disk carries the fingerprint of its key; one whose
    fingerprint no longer matches is computed again (so `--force` on a changed config redoes only what the
    change affects)."""

    def __init__(self, config, copies: dict, defenses: list, judge_version):
        self.config = config                # the resolved experiment config
        self.copies = copies                # defense_copies(config)
        self.defenses = defenses            # the run's Defense objects
        self.judge_version = judge_version  # part of every judgment's key

    def evaluation(self) -> dict:
        """What every evaluation depends on: the evaluation settings, the prompts, the seed and format."""
        r = self.config
        key = {"eval": to_dict(r.eval), "harm_eval": to_dict(r.data.harm_eval), "seed": r.seed, "format": r.format}
        if not r.eval.overrefusal.data:  # not measured: results of runs older than the setting stay valid
            del key["eval"]["overrefusal"]
        if r.eval.drift.trigger:  # the drift reference may be a defense's trigger: results depend on it
            first = [copy for copy, _ in self.copies.get(r.eval.drift.trigger, [])][:1]
            key["drift_defense"] = [d.fingerprint() for d in self.defenses if d.name in first]
        return key

    def release(self, defense) -> dict:
        """Everything the evaluation of `defense`'s model before attack depends on."""
        return {"defense": defense.fingerprint(), **self.evaluation()}

    def cell(self, defense, cell: Cell) -> dict:
        """Everything one attack cell's result depends on."""
        attack = self.config.attack
        key = {**self.release(defense), "cell": dataclasses.asdict(cell),
               "attack": {**attack.settings, **attack.kinds.get(cell.kind, {})},  # the settings as written
               "attack_data": to_dict(self.config.data.attack)}
        if cell.kind != "harmful":  # kinds that mix in benign data depend on it too
            key["benign_data"] = to_dict(self.config.data.benign)
        return key

    def search(self, defense) -> str:
        """The fingerprint in the name of `defense`'s search study: a changed config starts a new study."""
        return fingerprint({"defense": defense.fingerprint(), **self.evaluation(),
                            # not `trials`: asking for more trials continues the same study
                            "search": {k: v for k, v in to_dict(self.config.attack.search).items() if k != "trials"},
                            "attack": self.config.attack.settings,
                            "attack_data": to_dict(self.config.data.attack)})[:8]

    def digests(self, key: dict) -> tuple[tuple[str, str], str]:
        """(the fingerprints that saved answers of the evaluation `key` may carry, the fingerprint of their
        judgment). The answers do not depend on the judge; the judgment depends on it and on its version,
        so that a changed or improved judge judges saved answers again without generating them again.
        Answers saved before this split carry the digest of the whole key, which is accepted too."""
        harm = {k: v for k, v in key["eval"]["harm"].items() if k not in ("judge", "judge_options")}
        answers_key = {**key, "eval": {**key["eval"], "harm": harm}}
        judged = key if self.judge_version is None else {**key, "judge_version": self.judge_version}
        return (fingerprint(answers_key), fingerprint(key)), fingerprint(judged)
