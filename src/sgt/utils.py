"""Small shared utilities: seeding, atomic file/folder writes, JSONL I/O."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a config + seed reproduces its numbers."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------------------------------------
# Atomic outputs: never leave a half-written file or folder where a finished one is expected.
# ---------------------------------------------------------------------------------------------


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def partial_dir(out: str | Path) -> Path:
    """Where a stage writes while it works; renamed to `out` when complete (see `output_dir`)."""
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


@contextlib.contextmanager
def output_dir(out: str | Path, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a work folder `OUT.partial`; on success it replaces `OUT` in one rename.

    On failure the partial folder is removed, unless `keep_partial` (stage 2 keeps it so that
    `--resume` can pick up the Trainer checkpoints inside it). A previous finished `OUT` stays
    untouched until the new one is complete.
    """
    out = Path(out)
    work = partial_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    if not is_main_process():  # under torchrun/accelerate only rank 0 owns the folder
        yield work
        wait_for_everyone()
        return
    try:
        yield work
    except BaseException:
        if not keep_partial:
            shutil.rmtree(work, ignore_errors=True)
        raise
    wait_for_everyone()  # every rank has written its part (e.g. per-rank RNG states)
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cache_root() -> Path:
    """Per-user cache of derived files (de-quantised GGUF checkpoints): $SGT_CACHE or ~/.cache/sgt."""
    return Path(os.environ.get("SGT_CACHE") or Path.home() / ".cache" / "sgt").expanduser()


def human_seconds(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s"
