"""Whole-file writes that readers never see half done: a temporary file in the same folder, fsynced,
then renamed over the target (``os.replace`` is atomic on one filesystem). Used by the knowledge
banks' versions and the fine-tuned saved models' registry::

    write_atomic(root / "CURRENT", "v000002")
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
