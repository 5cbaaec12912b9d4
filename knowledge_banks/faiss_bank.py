"""``backend: faiss``: a bank as versioned folders on local disk (see :mod:`knowledge_banks.versions`).

The engine interface every backend implements (Elasticsearch and Azure AI Search have the same
methods over indexes and aliases): ``open_current`` for readers; ``acquire_writer``, ``stage``,
``commit`` and ``discard`` for the all-or-nothing writer; ``versions`` and ``rollback``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from langchain_mesh.errors import MeshError

from .versions import BankFolder, VersionInfo

__all__ = ["FaissBankEngine", "WriterBusyError"]

_STORE_DIR = "store"


class WriterBusyError(MeshError):
    """Another writer holds this bank; commits are serialised so no change is lost."""


class FaissBankEngine:
    def __init__(self, kb_id: str, folder: BankFolder, settings: dict[str, Any], embedding: Callable[[], Any]):
        self.kb_id = kb_id
        self.folder = folder
        self.settings = settings
        self._embedding = embedding  # a factory: resolving the embedding LLM is deferred to first use
        self._staging: Optional[Path] = None

    def _new(self) -> Any:
        from .faiss_store import FaissVectorStore

        return FaissVectorStore(embedding=self._embedding(), **self.settings)

    def _load(self, version_path: Optional[Path]) -> Any:
        from .faiss_store import FaissVectorStore

        if version_path is None:
            return self._new()
        return FaissVectorStore.load(version_path / _STORE_DIR, embedding=self._embedding())

    # ---- readers ----------------------------------------------------------------------------------

    def open_current(self) -> Any:
        return self._load(self.folder.current_path())

    def versions(self) -> list[VersionInfo]:
        return self.folder.list()

    def rollback(self, version: str) -> None:
        self.folder.set_current(version)

    # ---- the writer -------------------------------------------------------------------------------

    def acquire_writer(self) -> Callable[[], None]:
        """Take the bank's writer lock; returns the function that releases it."""
        import fcntl

        self.folder.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder.root / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusyError(f"another writer is open on knowledge bank {self.kb_id!r}; "
                                  "close it first (writes are all-or-nothing and serialised)") from None
        return lambda: os.close(fd)  # closing releases the flock

    def stage(self, clear: bool = False) -> Any:
        """A store for the next version: a copy of the current one, or empty."""
        self._staging = self.folder.new_staging()
        try:
            return self._new() if clear else self._load(self.folder.current_path())
        except BaseException:
            self.discard(None)
            raise

    def commit(self, store: Any) -> None:
        assert self._staging is not None, "commit without stage"
        store.save(self._staging / _STORE_DIR)
        self.folder.commit(self._staging, len(store))
        self._staging = None

    def discard(self, store: Any) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
