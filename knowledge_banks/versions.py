"""Versioned bank folders with an atomic switch between versions.

Layout of a bank folder::

    <bank>/
      settings.json          metadata schema, images folder (see settings.py)
      CURRENT                the name of the version readers use, e.g. "v000003"
      versions/v000001/      one complete store per version (engine files)
      versions/v000002/
      versions/.staging-*    a writer's work in progress; never read, removed when stale
      images/                retrieval content copied in by writers

A commit writes a whole new version folder, then replaces ``CURRENT`` with ``os.replace`` (atomic
on POSIX and Windows). Readers resolve ``CURRENT`` once, so they see the old bank or the new one,
never a mixture; a crash at any point leaves ``CURRENT`` naming a complete version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langchain_mesh._atomic import write_atomic

__all__ = ["VersionInfo", "BankFolder"]

_VERSION = re.compile(r"^v(\d{6})$")


@dataclass(frozen=True)
class VersionInfo:
    id: str
    number: int
    created_at: float
    documents: int
    current: bool


class BankFolder:
    def __init__(self, root: Path, keep: int = 10):
        self.root = root
        self.keep = keep
        self.versions_dir = root / "versions"

    def current(self) -> Optional[str]:
        try:
            name = (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if _VERSION.match(name) and (self.versions_dir / name).is_dir() else None

    def current_path(self) -> Optional[Path]:
        name = self.current()
        return self.versions_dir / name if name else None

    def version_path(self, version: str) -> Path:
        return self.versions_dir / version

    def new_staging(self) -> Path:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale_staging()
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))

    def remove_stale_staging(self, older_than_s: float = 3600.0) -> None:
        """Staging folders of writers that died (a killed process) are garbage after a while."""
        now = time.time()
        for p in self.versions_dir.glob(".staging-*"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
            except FileNotFoundError:
                pass

    def commit(self, staging: Path, documents: int) -> str:
        """Turn a finished staging folder into the next version and make it current."""
        numbers = [int(m.group(1)) for p in self.versions_dir.iterdir() if (m := _VERSION.match(p.name))]
        name = f"v{(max(numbers) + 1) if numbers else 1:06d}"
        write_atomic(staging / "VERSION.json", json.dumps({"version": name, "created_at": time.time(),
                                                            "documents": documents}))
        os.rename(staging, self.versions_dir / name)
        write_atomic(self.root / "CURRENT", name)
        self._prune()
        return name

    def set_current(self, version: str) -> None:
        if not _VERSION.match(version) or not (self.versions_dir / version).is_dir():
            have = ", ".join(v.id for v in self.list()) or "none"
            raise ValueError(f"no version {version!r} in {self.root}; versions: {have}")
        write_atomic(self.root / "CURRENT", version)

    def list(self) -> list[VersionInfo]:
        if not self.versions_dir.is_dir():
            return []
        cur = self.current()
        out = []
        for p in sorted(self.versions_dir.iterdir()):
            m = _VERSION.match(p.name)
            if not m:
                continue
            try:
                meta = json.loads((p / "VERSION.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            out.append(VersionInfo(p.name, int(m.group(1)), float(meta.get("created_at", p.stat().st_mtime)),
                                   int(meta.get("documents", -1)), p.name == cur))
        return out

    def _prune(self) -> None:
        versions = self.list()
        for v in versions[: max(0, len(versions) - self.keep)]:
            if not v.current:
                shutil.rmtree(self.versions_dir / v.id, ignore_errors=True)
