"""The knowledge-bank API: a bank, its settings, its versions and its writer.

``mesh.get_knowledge_bank(id)`` returns a :class:`KnowledgeBank`. Readers get a LangChain vector
store or retriever over the *current* version; ``get_writer()`` stages every change in a new version
and makes it current only when the ``with`` block exits cleanly (see :mod:`knowledge_banks.versions`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from langchain_mesh.errors import MeshError

from .metadata import MetadataFormatter, check_schema, validate_metadata
from .versions import BankFolder, VersionInfo

if TYPE_CHECKING:
    from langchain_mesh.config import KnowledgeBankConfig
    from langchain_mesh.mesh import Mesh

__all__ = ["KnowledgeBank", "KnowledgeBankListItem", "KnowledgeBankSettings", "KnowledgeBankWriter",
           "WriterBusyError"]

_STORE_DIR = "store"


class WriterBusyError(MeshError):
    """Another writer holds this bank; commits are serialised so no change is lost."""


@dataclass(frozen=True)
class KnowledgeBankListItem:
    id: str
    name: str
    backend: str
    description: str


class KnowledgeBankSettings:
    """The seed's ``kb.get_settings()``: edit, then ``save()``."""

    def __init__(self, bank: "KnowledgeBank", data: dict[str, Any]):
        self._bank = bank
        self.metadata_schema: dict[str, str] = dict(data.get("metadata_schema") or {})
        self.images_folder: Optional[str] = data.get("images_folder")

    def set_metadata_schema(self, schema: dict[str, str]) -> "KnowledgeBankSettings":
        self.metadata_schema = check_schema(schema)
        return self

    def set_images_folder(self, folder: str) -> "KnowledgeBankSettings":
        self.images_folder = str(folder)
        return self

    def save(self) -> None:
        self._bank._save_settings({"metadata_schema": self.metadata_schema, "images_folder": self.images_folder})


class KnowledgeBank:
    def __init__(self, mesh: "Mesh", kb_id: str, config: "KnowledgeBankConfig"):
        if config.backend != "faiss":
            raise NotImplementedError(f"knowledge bank {kb_id!r}: backend {config.backend!r} is not available yet")
        self.mesh = mesh
        self.id = kb_id
        self.config = config
        root = config.path or os.path.join(os.environ.get("MESH_BANKS_DIR", "banks"), kb_id)
        self.folder = BankFolder(Path(root).expanduser().resolve())

    # ---- settings ---------------------------------------------------------------------------------

    def _settings_data(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder.root / "settings.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"metadata_schema": dict(self.config.metadata_schema), "images_folder": None}

    def _save_settings(self, data: dict[str, Any]) -> None:
        from .versions import _write_atomic

        self.folder.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.folder.root / "settings.json", json.dumps(data, indent=2))

    def get_settings(self) -> KnowledgeBankSettings:
        return KnowledgeBankSettings(self, self._settings_data())

    @property
    def images_dir(self) -> Path:
        folder = self._settings_data().get("images_folder")
        return Path(folder).expanduser().resolve() if folder else self.folder.root / "images"

    # ---- engine -----------------------------------------------------------------------------------

    def embeddings(self) -> Any:
        return self.mesh.get_llm(self.config.embedding_llm).as_langchain_embeddings()

    def _new_store(self) -> Any:
        from .faiss_store import FaissVectorStore

        return FaissVectorStore(embedding=self.embeddings(), **self.config.settings)

    def _load_store(self, version_path: Optional[Path]) -> Any:
        from .faiss_store import FaissVectorStore

        if version_path is None:
            return self._new_store()
        return FaissVectorStore.load(version_path / _STORE_DIR, embedding=self.embeddings())

    # ---- reading ----------------------------------------------------------------------------------

    def versions(self) -> list[VersionInfo]:
        return self.folder.list()

    def rollback(self, version: str) -> None:
        """Make an earlier version current again (readers opened afterwards see it)."""
        self.folder.set_current(version)

    def as_langchain_vectorstore(self, **kwargs: Any) -> Any:
        """The current version as a LangChain vector store (a snapshot: later commits are not seen)."""
        return self._load_store(self.folder.current_path())

    def as_langchain_retriever(self, search_type: str = "similarity", search_kwargs: Optional[dict[str, Any]] = None,
                               **kwargs: Any) -> Any:
        from .retriever import KnowledgeBankRetriever

        store = self.as_langchain_vectorstore()
        return KnowledgeBankRetriever(vectorstore=store, search_type=search_type, search_kwargs=search_kwargs or {},
                                      images_dir=str(self.images_dir), **kwargs)

    # ---- writing ----------------------------------------------------------------------------------

    def get_writer(self) -> "KnowledgeBankWriter":
        return KnowledgeBankWriter(self)

    def __repr__(self) -> str:
        return f"KnowledgeBank({self.id!r}, backend={self.config.backend!r}, path={str(self.folder.root)!r})"


class KnowledgeBankWriter:
    """All-or-nothing: changes go to a staging folder and become the current version on a clean exit."""

    def __init__(self, bank: KnowledgeBank):
        self.bank = bank
        self.folder_path: Optional[Path] = None
        self._store: Any = None
        self._lock_fd: Optional[int] = None
        self._schema = bank._settings_data().get("metadata_schema") or {}

    def __enter__(self) -> "KnowledgeBankWriter":
        self.bank.folder.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self.folder_path = self.bank.folder.new_staging()
            self._store = self.bank._load_store(self.bank.folder.current_path())
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if exc_type is None:
                assert self.folder_path is not None
                self._store.save(self.folder_path / _STORE_DIR)
                self.bank.folder.commit(self.folder_path, len(self._store))
                self.folder_path = None
        finally:
            self._discard()
        return False

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.bank.folder.root / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusyError(f"another writer is open on knowledge bank {self.bank.id!r}; "
                                  "close it first (writes are all-or-nothing and serialised)") from None
        self._lock_fd = fd

    def _discard(self) -> None:
        import shutil

        if self.folder_path is not None:
            shutil.rmtree(self.folder_path, ignore_errors=True)
            self.folder_path = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _require_open(self) -> None:
        if self._store is None or self._lock_fd is None:
            raise RuntimeError("use the writer as a context manager: `with kb.get_writer() as writer:`")

    def clear(self) -> None:
        """Start the new version empty (the old one stays readable until the commit)."""
        self._require_open()
        self._store = self.bank._new_store()

    def as_langchain_vectorstore(self) -> Any:
        self._require_open()
        return _SchemaCheckedStore(self)

    def get_metadata_formatter(self) -> MetadataFormatter:
        return MetadataFormatter(self.bank.images_dir)


class _SchemaCheckedStore:
    """The staged store, with the bank's metadata schema enforced before anything is added."""

    def __init__(self, writer: KnowledgeBankWriter):
        self._writer = writer

    def _check(self, metadatas: Iterable[Any]) -> None:
        if self._writer._schema:
            validate_metadata(self._writer._schema, metadatas)

    def add_documents(self, documents: list[Any], **kwargs: Any) -> list[str]:
        self._check(documents)
        return self._writer._store.add_documents(documents, **kwargs)

    async def aadd_documents(self, documents: list[Any], **kwargs: Any) -> list[str]:
        self._check(documents)
        return await self._writer._store.aadd_documents(documents, **kwargs)

    def add_texts(self, texts: Iterable[str], metadatas: Optional[list[dict[str, Any]]] = None, **kwargs: Any) -> list[str]:
        self._check(metadatas or [])
        return self._writer._store.add_texts(texts, metadatas=metadatas, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer._store, name)


