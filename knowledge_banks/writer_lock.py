"""One writer per bank at a time, whatever the backend: an exclusive ``flock`` on a file in the bank's
local folder. Writers on other machines are not seen; remote engines make their commit a single
atomic switch (an alias swap), so two of them cannot leave a mixed bank either."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from langchain_mesh.errors import MeshError

__all__ = ["WriterBusyError", "acquire_writer_lock"]


class WriterBusyError(MeshError):
    """Another writer holds this bank; commits are serialised so no change is lost."""


def acquire_writer_lock(root: Path, kb_id: str) -> Callable[[], None]:
    """Take the lock; returns the function that releases it."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WriterBusyError(f"another writer is open on knowledge bank {kb_id!r}; "
                              "close it first (writes are all-or-nothing and serialised)") from None
    return lambda: os.close(fd)  # closing releases the flock
