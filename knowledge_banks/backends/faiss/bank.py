"""``backend: faiss``: a bank as versioned folders on local disk (see :mod:`knowledge_banks.versions`).

It implements :class:`knowledge_banks.backends.BankEngine` (as Elasticsearch and Azure AI Search do
over indexes and aliases): ``open_current`` for readers; ``stage``, ``commit`` and ``discard`` for
the all-or-nothing writer; ``versions`` and ``rollback``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from ...versions import BankFolder, VersionInfo

__all__ = ["FaissBankEngine", "open_engine"]

_STORE_DIR = "store"


class FaissBankEngine:
    def __init__(self, kb_id: str, folder: BankFolder, settings: dict[str, Any], embedding: Callable[[], Any]):
        self.kb_id = kb_id
        self.folder = folder
        self.settings = settings
        self._embedding = embedding  # a factory: resolving the embedding LLM is deferred to first use
        self._staging: Optional[Path] = None

    def _new(self) -> Any:
        from .store import FaissVectorStore

        return FaissVectorStore(embedding=self._embedding(), **self.settings)

    def _load(self, version_path: Optional[Path]) -> Any:
        from .store import FaissVectorStore

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


def open_engine(kb_id: str, folder: BankFolder, settings: dict[str, Any], embeddings: Callable[[], Any],
                metadata_schema: dict[str, str]) -> FaissBankEngine:
    """The ``faiss`` entry of the backend registry (:mod:`knowledge_banks.backends`)."""
    return FaissBankEngine(kb_id, folder, settings, embeddings)
