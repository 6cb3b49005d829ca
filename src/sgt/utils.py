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


OUTPUT_MARKER = ".sgt-output"  # names the kind of output a folder holds (written by output_dir)


def check_output(out: str | Path, kind: str) -> None:
    """Fail with one line, before any work, unless `out` can receive an output of `kind`: it must be
    new, an empty folder, or an earlier sgt output of the same kind (which is then replaced). A user's
    file or folder is never renamed or deleted. The location must be writable."""
    import errno

    from .errors import UserError

    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is an existing file; give a folder name (sgt writes a folder there)")
        marker = out / OUTPUT_MARKER
        held = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if held != kind and any(out.iterdir()):
            what = f"an sgt {held} output" if held else "files sgt did not write"
            raise UserError(f"--out {out} already holds {what}; choose a new folder (sgt never deletes a "
                            f"folder it did not write as {kind} output)")
    parent = out.parent if out.parent != Path("") else Path(".")
    probe = parent / f".{out.name}.writable{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        reason = "read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else exc.strerror
        raise UserError(f"cannot write to {parent} ({reason}); choose another --out") from None


@contextlib.contextmanager
def output_dir(out: str | Path, keep_partial: bool = False, kind: str = "output") -> Iterator[Path]:
    """Yield a work folder `OUT.partial`; on success it replaces `OUT` in one rename.

    On failure the partial folder is removed, unless `keep_partial` (stages with checkpoints keep it
    so that `--resume` can pick them up). A previous finished `OUT` of the same `kind` stays untouched
    until the new one is complete; any other existing `OUT` is refused (see check_output).
    """
    out = Path(out)
    check_output(out, kind)
    work = partial_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    (work / OUTPUT_MARKER).write_text(kind, encoding="utf-8")
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


def print_line(text: str) -> None:
    """A progress line on stderr (stdout is kept for results)."""
    import sys

    print(text, file=sys.stderr, flush=True)
