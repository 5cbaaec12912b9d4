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

from .metadata import MetadataFormatter, check_schema, validate_metadata
from .versions import BankFolder, VersionInfo
from .writer_lock import WriterBusyError, acquire_writer_lock

if TYPE_CHECKING:
    from langchain_mesh.config import KnowledgeBankConfig
    from langchain_mesh.mesh import Mesh

__all__ = ["KnowledgeBank", "KnowledgeBankListItem", "KnowledgeBankSettings", "KnowledgeBankWriter",
           "WriterBusyError"]

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
        self.mesh = mesh
        self.id = kb_id
        self.config = config
        root = config.path or os.path.join(os.environ.get("MESH_BANKS_DIR", "banks"), kb_id)
        # settings.json and images live here for every backend; FAISS keeps its versions here too
        self.folder = BankFolder(Path(root).expanduser().resolve())
        self._engine: Any = None

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

    @property
    def engine(self) -> Any:
        """The backend's engine (see :mod:`knowledge_banks.faiss_bank` for the interface)."""
        if self._engine is None:
            backend = self.config.backend
            settings = dict(self.config.settings)
            if backend == "faiss":
                from .faiss_bank import FaissBankEngine

                self._engine = FaissBankEngine(self.id, self.folder, settings, self.embeddings)
            else:
                if backend == "elasticsearch":
                    from .elasticsearch_bank import ElasticsearchBankEngine as Engine
                else:
                    from .azure_search_bank import AzureSearchBankEngine as Engine  # type: ignore[no-redef]
                # typed, filterable index fields come from the bank's metadata schema
                self._engine = Engine(self.id, settings, self.embeddings(),
                                      metadata_schema=self._settings_data().get("metadata_schema"))
        return self._engine

    # ---- reading ----------------------------------------------------------------------------------

    def versions(self) -> list[VersionInfo]:
        return self.engine.versions()

    def rollback(self, version: str) -> None:
        """Make an earlier version current again (readers opened afterwards see it)."""
        self.engine.rollback(version)

    def as_langchain_vectorstore(self, **kwargs: Any) -> Any:
        """The current version as a LangChain vector store (a snapshot: later commits are not seen)."""
        return self.engine.open_current()

    def as_langchain_retriever(self, search_type: str = "similarity", search_kwargs: Optional[dict[str, Any]] = None,
                               **kwargs: Any) -> Any:
        from .retriever import KnowledgeBankRetriever

        store = self.as_langchain_vectorstore()
        return KnowledgeBankRetriever(vectorstore=store, search_type=search_type, search_kwargs=search_kwargs or {},
                                      images_dir=str(self.images_dir), knowledge_bank=self.id, mesh=self.mesh,
                                      **kwargs)

    # ---- writing ----------------------------------------------------------------------------------

    def get_writer(self) -> "KnowledgeBankWriter":
        return KnowledgeBankWriter(self)

    def __repr__(self) -> str:
        return f"KnowledgeBank({self.id!r}, backend={self.config.backend!r}, path={str(self.folder.root)!r})"


class KnowledgeBankWriter:
    """All-or-nothing: changes go to a staged version that becomes current only on a clean exit."""

    def __init__(self, bank: KnowledgeBank):
        self.bank = bank
        self._store: Any = None
        self._release: Any = None
        self._schema = bank._settings_data().get("metadata_schema") or {}

    def __enter__(self) -> "KnowledgeBankWriter":
        engine = self.bank.engine
        self._release = acquire_writer_lock(self.bank.folder.root, self.bank.id)
        try:
            self._store = engine.stage(clear=False)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        engine = self.bank.engine
        try:
            if exc_type is None:
                engine.commit(self._store)
            else:
                engine.discard(self._store)
        except BaseException:
            engine.discard(self._store)
            raise
        finally:
            self._close()
        return False

    def _close(self) -> None:
        self._store = None
        if self._release is not None:
            self._release()
            self._release = None

    def _require_open(self) -> None:
        if self._store is None:
            raise RuntimeError("use the writer as a context manager: `with kb.get_writer() as writer:`")

    def clear(self) -> None:
        """Start the new version empty (the old one stays readable until the commit)."""
        self._require_open()
        engine = self.bank.engine
        engine.discard(self._store)
        self._store = engine.stage(clear=True)

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


