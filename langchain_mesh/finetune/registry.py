"""The saved-model registry on disk: a folder per saved model, versions committed atomically.

Layout (the root is the connection's ``saved_models_dir``)::

    <root>/<saved model>/
      SAVED_MODEL.json        name, connection, base model, created time, description
      ACTIVE                  the id of the active version, e.g. "v2" (absent until the first version)
      versions/v1/            the version: a PEFT adapter (adapter_config.json, adapter_model.safetensors)
                              or merged weights (config.json, model.safetensors, tokenizer files),
                              and VERSION.json (base model, method, data fingerprint, metrics, created time)
      versions/.staging-*     a training run in progress; never read
      .writer.lock            serialises commits and activations

The protocol is the knowledge-bank writer's (``knowledge_banks/versions.py``): a run trains into its
own staging folder; only a finished run writes VERSION.json, renames the folder to the next version
(one ``rename``) and replaces ACTIVE with ``os.replace``. A run that dies at any point before that
leaves a staging folder and nothing else, so the registry reads as it was. A staging folder is
known to be dead when nobody holds the ``flock`` its run took on it (the kernel drops a killed
process's locks), and is then removed by the next run; its age says nothing (a run may train for days).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .._atomic import write_atomic
from ..errors import ConfigError, MeshError

__all__ = ["VersionInfo", "SavedModelFolder", "SavedModelError", "check_name", "VERSION_RE", "saved_models_root"]

FORMAT = "langchain-mesh.saved-model"
FORMAT_VERSION = 1
VERSION_RE = re.compile(r"^v([1-9]\d*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SavedModelError(MeshError, LookupError):
    """A saved model or version that does not exist, or a registry operation that cannot be done."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"invalid saved model name {name!r}: letters, digits, '.', '_' and '-' only "
                          "(it becomes part of an LLM id: huggingfacelocal:<connection>:<name>@<version>)")
    return name


@dataclass(frozen=True)
class VersionInfo:
    id: str
    number: int
    created_at: float
    method: str                      # lora | qlora | dpo | custom
    kind: str                        # adapter | merged
    base_model: str
    data_fingerprint: Optional[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    active: bool = False
    path: Path = field(default=Path("."), repr=False)


def _flock(path: Path, blocking: bool) -> Optional[int]:
    """An exclusive flock on ``path``; None when ``blocking`` is False and someone else holds it."""
    import fcntl

    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class SavedModelFolder:
    """One saved model's folder. Reads never lock; commits and activations take ``.writer.lock``."""

    def __init__(self, root: Path):
        self.root = root
        self.name = root.name
        self.versions_dir = root / "versions"

    # ---- the saved model itself ------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.root / "SAVED_MODEL.json").is_file()

    def create(self, connection: str, base_model: str, description: str = "") -> None:
        if self.exists():
            raise SavedModelError(f"saved model {self.name!r} already exists in {self.root.parent}")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        # built in a temporary folder and renamed: a half-created saved model is never seen
        tmp = Path(tempfile.mkdtemp(prefix=f".creating-{self.name}-", dir=self.root.parent))
        try:
            (tmp / "versions").mkdir()
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
                    "connection": connection, "base_model": base_model, "description": description,
                    "created_at": time.time()}
            write_atomic(tmp / "SAVED_MODEL.json", json.dumps(meta, indent=2))
            os.rename(tmp, self.root)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.exists():
                raise SavedModelError(f"saved model {self.name!r} already exists in {self.root.parent}") from None
            raise SavedModelError(f"cannot create saved model {self.name!r} in {self.root.parent}: {e}") from None

    def meta(self) -> dict[str, Any]:
        try:
            meta = json.loads((self.root / "SAVED_MODEL.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SavedModelError(f"no saved model {self.name!r} in {self.root.parent}") from None
        except ValueError as e:
            raise SavedModelError(f"{self.root / 'SAVED_MODEL.json'} is corrupt: {e}") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise SavedModelError(f"{self.root} was written in an unknown format "
                                  f"({meta.get('format')} {meta.get('format_version')})")
        return meta

    # ---- versions --------------------------------------------------------------------------------

    def active(self) -> Optional[str]:
        try:
            name = (self.root / "ACTIVE").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if VERSION_RE.match(name) and (self.versions_dir / name).is_dir() else None

    def version_path(self, version: str) -> Path:
        if not VERSION_RE.match(version or "") or not (self.versions_dir / version / "VERSION.json").is_file():
            have = ", ".join(v.id for v in self.list()) or "none yet"
            raise SavedModelError(f"saved model {self.name!r} has no version {version!r}; versions: {have}")
        return self.versions_dir / version

    def list(self) -> list[VersionInfo]:
        if not self.versions_dir.is_dir():
            return []
        active = self.active()
        out = []
        for p in self.versions_dir.iterdir():
            info = self._read(p, active)
            if info is not None:
                out.append(info)
        return sorted(out, key=lambda v: v.number)

    def version_info(self, version: str) -> VersionInfo:
        """One version's record (reads only that version's VERSION.json)."""
        info = self._read(self.version_path(version), self.active())
        assert info is not None
        return info

    @staticmethod
    def _read(p: Path, active: Optional[str]) -> Optional[VersionInfo]:
        m = VERSION_RE.match(p.name)
        if not m:
            return None
        try:
            meta = json.loads((p / "VERSION.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # not a committed version (commit() never leaves one; skip it, do not guess)
        return VersionInfo(id=p.name, number=int(m.group(1)), created_at=float(meta["created_at"]),
                           method=meta.get("method", "custom"), kind=meta.get("kind", "adapter"),
                           base_model=meta.get("base_model", ""), data_fingerprint=meta.get("data_fingerprint"),
                           metrics=meta.get("metrics") or {}, settings=meta.get("settings") or {},
                           active=p.name == active, path=p)

    def new_staging(self) -> tuple[Path, Callable[[], None]]:
        """A fresh staging folder, locked for as long as this run lives; returns (folder, release)."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.remove_dead_staging()
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        fd = _flock(staging / ".run.lock", blocking=True)
        assert fd is not None
        return staging, lambda: os.close(fd)

    def remove_dead_staging(self) -> list[Path]:
        removed = []
        for p in self.versions_dir.glob(".staging-*"):
            lock = p / ".run.lock"
            fd = _flock(lock, blocking=False) if p.is_dir() else None
            if fd is None:
                continue  # a live run holds it (or it vanished meanwhile)
            try:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            finally:
                os.close(fd)
        return removed

    def commit(self, staging: Path, meta: dict[str, Any], activate: bool) -> str:
        """Turn a finished staging folder into the next version (and make it active)."""
        fd = _flock(self.root / ".writer.lock", blocking=True)
        try:
            numbers = [int(m.group(1)) for p in self.versions_dir.iterdir() if (m := VERSION_RE.match(p.name))]
            version = f"v{(max(numbers) + 1) if numbers else 1}"
            write_atomic(staging / "VERSION.json", json.dumps({"version": version, **meta}, indent=2))
            os.rename(staging, self.versions_dir / version)
            # only now: while the folder was .staging-*, the lock file told cleaners it was alive
            (self.versions_dir / version / ".run.lock").unlink(missing_ok=True)
            if activate or self.active() is None:
                write_atomic(self.root / "ACTIVE", version)
            return version
        finally:
            os.close(fd)  # type: ignore[arg-type]

    def set_active(self, version: str) -> None:
        self.version_path(version)  # exists, or a clear error
        fd = _flock(self.root / ".writer.lock", blocking=True)
        try:
            write_atomic(self.root / "ACTIVE", version)
        finally:
            os.close(fd)  # type: ignore[arg-type]


def list_saved_models(root: Path) -> list[SavedModelFolder]:
    if not root.is_dir():
        return []
    return [SavedModelFolder(p) for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p / "SAVED_MODEL.json").is_file()]


def saved_models_root(connection_name: str, config: Any) -> Path:
    """Where a local connection keeps its saved models: ``saved_models_dir`` in its config, else
    ``$MESH_SAVED_MODELS_DIR/<connection>`` (default ``./saved_models/<connection>``)."""
    configured = getattr(config, "saved_models_dir", None)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("MESH_SAVED_MODELS_DIR") or "saved_models") / connection_name
