"""Running one training stage: in this process, or under a launcher (accelerate, torchrun) as a
subprocess that reads the stage's resolved config from a YAML file. Used by defenses and attacks.

A stage whose output folder is complete is not run again; a stage that was interrupted after writing
Trainer checkpoints (save_steps > 0) resumes from the last one. This is what lets `sgt run` pick a
killed experiment up where it stopped.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from .errors import TrainingDiverged, UserError
from .utils import partial_dir


def stage_done(config) -> bool:
    return bool(config.out) and (Path(config.out) / "metrics.json").is_file()


def resumable(config):
    """`config` with resume on when an interrupted run of it left Trainer checkpoints to continue from."""
    checkpoints = partial_dir(config.out) / "checkpoints"
    if hasattr(config, "resume") and getattr(config, "save_steps", 0) and any(checkpoints.glob("checkpoint-*")):
        return dataclasses.replace(config, resume=True)
    return config


def run_stage(command: str, config, function, launcher: list[str] | None, folder: Path):
    """Run `function(config)` (the CLI verb `command`) unless its output is complete; resume if possible."""
    if stage_done(config):
        return None
    config = resumable(config)
    if not launcher:
        return function(config)
    from .config import save_config

    folder.mkdir(parents=True, exist_ok=True)
    config_file = save_config(config, folder, name=f"{command}.config.yaml")
    log = folder / f"{command}.log"
    argv = [*launcher, "-m", "sgt.cli", *command.split(), "--config", str(config_file)]
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        # a diverged stage stays a divergence (sgt run records it as a failed cell instead of stopping)
        marker = f"sgt: error: {TrainingDiverged.PREFIX}"
        diverged = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                    if line.startswith(marker)]
        if diverged:
            raise TrainingDiverged(f"stage `{command}`: {diverged[-1][len(marker):]}")
        raise UserError(f"stage `{command}` failed under {' '.join(launcher)} (exit code {code}); see {log}")
    return None
