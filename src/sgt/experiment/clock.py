"""run.json: how long a run took, over every `sgt run` invocation on its folder, and on what machine."""

from __future__ import annotations

import time
from pathlib import Path

from ..utils import atomic_write_json, read_json


class RunClock:
    """run.json's timing. Every invocation of `sgt run` on a folder is recorded and the current one is
    rewritten after every trained defense and finished evaluation, so the total is the compute time of
    the whole run (an interrupted invocation counted up to its last finished step). The world's build
    time is part of the invocation that built it; a reused world is recorded with its build time."""

    def __init__(self, out: Path, world: Path | None):
        self.path, self.world, self.start = Path(out) / "run.json", world, time.time()
        self.world_state = None if world is None else ("cached" if (world / "world.json").is_file() else "built")
        previous = read_json(self.path) if self.path.is_file() else {}
        self.earlier = [i for i in previous.get("invocations", []) if isinstance(i, dict)]
        if previous.get("wall_seconds") and not self.earlier:  # run.json of an older sgt: one invocation
            self.earlier = [{"wall_seconds": previous["wall_seconds"], "finished": previous.get("finished"),
                             "world": None}]

    def tick(self) -> float:
        """Rewrite run.json with the time so far; returns the total over every invocation."""
        now = {"wall_seconds": round(time.time() - self.start, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
               "world": self.world_state}
        invocations = [*self.earlier, now]
        build = None
        if self.world is not None and (self.world / "world.json").is_file():
            build = read_json(self.world / "world.json").get("build_seconds")
        total = round(sum(i.get("wall_seconds") or 0 for i in invocations), 1)
        atomic_write_json(self.path, {"wall_seconds": total, "invocations": invocations, "machine": machine_info(),
                                      "finished": now["finished"], "world_build_seconds": build})
        return total


def machine_info() -> str:
    import os
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
    return f"{device}; Python {platform.python_version()}, torch {torch.__version__}"
