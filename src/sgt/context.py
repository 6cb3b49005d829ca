"""What every stage of a run shares: one object, built once by the experiment (or by `sgt defend`), read by
the defenses, the attacks and the evaluation, so that no list of shared fields is kept by hand anywhere
else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .data.sources import DataFields


@dataclass
class RunContext:
    model: str = ""                          # the base model every defense starts from
    format: str = "plain"                    # prompt format of every stage: plain or chat
    dtype: str = "auto"
    seed: int = 42                           # a defense copy's seed (defense_seeds), else the experiment's
    trust_remote_code: bool = False
    progress: bool = False                   # per-step progress bars of every stage
    launcher: list[str] | None = None        # train stages in subprocesses under it (None: in this process)
    # Where artefacts that several defenses of one run can share are kept by fingerprint (e.g. stage-1
    # triggers: SGT variants with the same stage-1 settings train it once); None: in each defense's folder.
    shared_dir: Path | None = None
    defense_data: DataFields = field(default_factory=DataFields)  # stages 1-2 and the defenses' data
    attack_data: DataFields = field(default_factory=DataFields)   # the attacker's harmful pairs
    benign_data: DataFields = field(default_factory=DataFields)   # benign rows for the mixed/benign attacks

    # The fields every stage config shares with the run, by the same names.
    STAGE_FIELDS: ClassVar[tuple[str, ...]] = ("format", "dtype", "seed", "trust_remote_code", "progress")

    @classmethod
    def of(cls, config, **values) -> RunContext:
        """The context of `config` (an experiment or a command config): every field of this class that
        `config` has by the same name, then `values`."""
        found = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if hasattr(config, f.name)}
        return cls(**{**found, **values})

    def stage_fields(self) -> dict:
        """The values of the fields every stage config shares with the run (format, dtype, seed, ...)."""
        return {name: getattr(self, name) for name in self.STAGE_FIELDS}
