"""Small shared utilities: seeding, atomic file/folder writes, JSONL I/O."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
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
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary file behind
        raise


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

# A name that becomes one folder (a defense's, an attack cell's, a search's): one path component of
# safe characters, so that what sgt writes under it can only ever land inside the run folder.
SAFE_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,127}")


def check_name(name: str, where: str) -> str:
    """`name` if it is a safe folder name (see SAFE_NAME: no separators, no "..", not hidden), else a
    one-line error."""
    from .errors import UserError

    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{where} {name!r} is not a usable name: it becomes a folder, so use letters, digits "
                        "and . _ @ + - only (no / or .., not starting with a dot, at most 128 characters)")
    return name


def _held_kind(folder: Path) -> str | None:
    """The kind of sgt output `folder` holds (its marker), or None when sgt did not write it."""
    marker = folder / OUTPUT_MARKER
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else None


def check_output(out: str | Path, kind: str, partial: bool = True) -> None:
    """Fail with one line, before any work, unless `out` can receive an output of `kind`: it must be
    new, an empty folder, or an earlier sgt output of the same kind (which is then replaced); its work
    folder OUT.partial must be absent or sgt's own unfinished work of that kind. A user's file or
    folder is never renamed or deleted. The location must be writable. `partial=False`: an output that
    is written in place (a run folder), whose OUT.partial is not sgt's business."""
    from .errors import UserError

    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is an existing file; give a folder name (sgt writes a folder there)")
        held = _held_kind(out)
        if held != kind and any(out.iterdir()):
            what = f"an sgt {held} output" if held else "files sgt did not write"
            raise UserError(f"--out {out} already holds {what}; choose a new folder (sgt never deletes a "
                            f"folder it did not write as {kind} output)")
    work = partial_dir(out)
    if partial and (work.exists() or work.is_symlink()):
        held = _held_kind(work) if work.is_dir() and not work.is_symlink() else None
        if held != kind:
            what = f"unfinished sgt {held} output" if held else "a file or folder sgt did not write"
            raise UserError(f"{work} (where sgt writes --out {out} while it works) holds {what}; move or "
                            "delete it, or choose another --out")
    _check_writable(out.parent if out.parent != Path("") else Path("."), out.name)


def _check_writable(parent: Path, name: str) -> None:
    """One line unless a folder can be created in `parent` (made if needed)."""
    import errno

    from .errors import UserError

    blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"cannot write under {parent}: {blocking} is a file, not a folder; choose another --out")
    probe = parent / f".{name}.writable{os.getpid()}"
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
