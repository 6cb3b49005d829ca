"""A lock on a run folder: two `sgt run` on the same --out would compute every cell twice and delete
each other's work in progress. The second one stops with one line naming the holder.

An OS-level lock (fcntl.flock) is released by the kernel when its process dies, so the lock of a
killed run is never stale: the next run simply takes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".sgt.lock"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of `folder` (created if needed) for the duration of the block."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"{folder} is in use by a running `sgt run` (pid {holder}); wait for it to finish "
                            "or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
