"""The knowledge-bank API: a bank, its settings, its versions and its writer.

``mesh.get_knowledge_bank(id)`` returns a :class:`KnowledgeBank`. Readers get a LangChain vector
store or retriever over the *current* version; ``get_writer()`` stages every change in a new version
and makes it current only when the ``with`` block exits cleanly (see :mod:`knowledge_banks.versions`).
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Protocol

from langchain_mesh.errors import KnowledgeBankError

from .metadata import MetadataFormatter, check_schema, validate_metadata
from .versions import BankFolder, VersionInfo
from .writer_lock import WriterBusyError, acquire_writer_lock

if TYPE_CHECKING:
    from langchain_mesh.config import KnowledgeBankConfig

    from .backends import BankEngine


class MeshLike(Protocol):
    """What a bank needs of the mesh that opens it: its LLMs (for the embedding model). Banks receive
    it; they never import :mod:`langchain_mesh.mesh` (the import contracts in pyproject.toml)."""

    def get_llm(self, llm_id: str) -> Any: ...

__all__ = ["KnowledgeBank", "KnowledgeBankListItem", "MeshLike", "KnowledgeBankSettings", "KnowledgeBankWriter",
           "SyncResult", "WriterBusyError"]


@dataclass(frozen=True)
class SyncResult:
    """What :meth:`KnowledgeBankWriter.sync_documents` changed: only ``added`` documents were embedded."""

    added: int
    unchanged: int
    deleted: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.deleted)


@dataclass(frozen=True)
class KnowledgeBankListItem:
    """One entry of ``mesh.list_knowledge_banks()`` (the seed's ``DSSKnowledgeBankListItem``: it prints
    ``kb.name`` and ``kb.id``); ``as_core_knowledge_bank()`` opens the bank."""

    id: str
    name: str
    backend: str
    description: str
    embedding_llm: str = ""
    mesh: Any = field(default=None, repr=False, compare=False)

    def as_core_knowledge_bank(self) -> "KnowledgeBank":
        if self.mesh is None:
            raise RuntimeError(f"list item {self.id!r} was made without its mesh; use mesh.get_knowledge_bank(id)")
        return self.mesh.get_knowledge_bank(self.id)

    def to_knowledge_bank(self) -> "KnowledgeBank":
        return self.as_core_knowledge_bank()


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
    def __init__(self, mesh: MeshLike, kb_id: str, config: "KnowledgeBankConfig"):
        from langchain_mesh.ids import check_bank_id

        self.mesh = mesh
        self.id = check_bank_id(kb_id)  # it names a folder: never a path
        self.config = config
        root = config.path or os.path.join(os.environ.get("MESH_BANKS_DIR", "banks"), kb_id)
        # settings.json and images live here for every backend; FAISS keeps its versions here too
        self.folder = BankFolder(Path(root).expanduser().resolve())
        self._engine: Any = None

    # ---- settings ---------------------------------------------------------------------------------

    def _default_settings(self) -> dict[str, Any]:
        return {"metadata_schema": dict(self.config.metadata_schema), "images_folder": None}

    def _settings_data(self) -> dict[str, Any]:
        path = self.folder.root / "settings.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._default_settings()
        except (ValueError, UnicodeDecodeError) as e:
            raise KnowledgeBankError(f"{path} is corrupt ({e}); kb.get_settings() starts from the config's "
                                     "defaults, and its save() rewrites the file") from None
        if not isinstance(data, dict):
            raise KnowledgeBankError(f"{path} is corrupt (a JSON {type(data).__name__}, not an object); "
                                     "kb.get_settings() starts from the config's defaults, and its save() "
                                     "rewrites the file")
        return data

    def _save_settings(self, data: dict[str, Any]) -> None:
        from langchain_mesh._atomic import write_atomic

        self.folder.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder.root / "settings.json", json.dumps(data, indent=2))

    def get_settings(self) -> KnowledgeBankSettings:
        """The bank's settings to edit; a corrupt settings.json is replaced by the config's defaults
        (with a warning) so that ``save()`` repairs it."""
        try:
            data = self._settings_data()
        except KnowledgeBankError as e:
            warnings.warn(str(e), stacklevel=2)
            data = self._default_settings()
        return KnowledgeBankSettings(self, data)

    @property
    def images_dir(self) -> Path:
        folder = self._settings_data().get("images_folder")
        return Path(folder).expanduser().resolve() if folder else self.folder.root / "images"

    # ---- engine -----------------------------------------------------------------------------------

    def embeddings(self) -> Any:
        """The bank's embedding model as LangChain ``Embeddings``; with ``query_cache`` (the default), a
        question asked before reads its vector from ``query_cache.sqlite`` (:mod:`.query_cache`)."""
        make = lambda: self.mesh.get_llm(self.config.embedding_llm).as_langchain_embeddings()  # noqa: E731
        if not self.config.query_cache:
            return make()
        from .query_cache import QueryCachedEmbeddings, embedding_fingerprint

        return QueryCachedEmbeddings(make, self.folder.root / "query_cache.sqlite",
                                     lambda: embedding_fingerprint(self.mesh, self.config.embedding_llm),
                                     self.config.query_cache)

    @property
    def engine(self) -> "BankEngine":
        """The backend's engine (:class:`knowledge_banks.backends.BankEngine`), from the backend registry."""
        if self._engine is None:
            from .backends import get_backend

            self._engine = get_backend(self.config.backend).open(
                self.id, self.folder, dict(self.config.settings), self.embeddings,
                self._settings_data().get("metadata_schema") or {})
        return self._engine

    # ---- reading ----------------------------------------------------------------------------------

    def versions(self) -> list[VersionInfo]:
        return self.engine.versions()

    def rollback(self, version: str) -> None:
        """Make an earlier version current again (readers opened afterwards see it)."""
        self.engine.rollback(version)

    def as_core_knowledge_bank(self) -> "KnowledgeBank":
        """The bank itself: the seed's ``project.get_knowledge_bank(id).as_core_knowledge_bank()`` runs as is
        (here the public handle and the core handle are one object)."""
        return self

    def as_langchain_vectorstore(self, **vectorstore_kwargs: Any) -> Any:
        """The current version as a LangChain vector store (FAISS: a snapshot, later commits are not seen).

        Keywords: on Elasticsearch, ``strategy=DenseVectorStrategy(hybrid=True, rrf=True | False | {...})``
        makes the store's similarity search the hybrid search. Any other keyword is refused, named."""
        allowed = tuple(getattr(self.engine, "reader_options", ()))
        unknown = sorted(set(vectorstore_kwargs) - set(allowed))
        if unknown:
            from langchain_mesh.errors import SettingsError

            raise SettingsError(
                f"knowledge bank {self.id!r} ({self.config.backend}): as_langchain_vectorstore() does not take "
                f"{', '.join(unknown)}; it takes {', '.join(allowed) or 'no keyword'} on this backend", unknown)
        return self.engine.open_current(**vectorstore_kwargs)

    def as_langchain_retriever(self, search_type: str = "similarity", search_kwargs: Optional[dict[str, Any]] = None,
                               vectorstore_kwargs: Optional[dict[str, Any]] = None, **retriever_kwargs: Any) -> Any:
        """A retriever over the current version.

        ``search_type``: similarity, similarity_score_threshold, mmr, hybrid, keyword (semantic_hybrid on
        Azure AI Search); ``search_kwargs``: what that search takes (k, filter, ...);
        ``vectorstore_kwargs``: passed to :meth:`as_langchain_vectorstore` (the seed's Elasticsearch
        ``{"strategy": DenseVectorStrategy(hybrid=True)}``); other keywords are the retriever's own
        (``k``, ``tags``, ``metadata``). Anything not understood is refused with an error naming it."""
        from langchain_mesh.errors import SettingsError

        from .retriever import KnowledgeBankRetriever

        own = set(KnowledgeBankRetriever.model_fields) - {"vectorstore", "search_type", "search_kwargs", "images_dir"}
        unknown = sorted(set(retriever_kwargs) - own)
        if unknown:
            raise SettingsError(f"as_langchain_retriever() does not take {', '.join(unknown)}; it takes search_type, "
                                f"search_kwargs, vectorstore_kwargs and {', '.join(sorted(own))}", unknown)
        if search_type not in KnowledgeBankRetriever.allowed_search_types:
            raise SettingsError(f"search_type {search_type!r} is not one of "
                                f"{', '.join(KnowledgeBankRetriever.allowed_search_types)}", ["search_type"])
        store = self.as_langchain_vectorstore(**(vectorstore_kwargs or {}))
        if getattr(store, "hybrid", None) is not None and search_type != "similarity":
            raise SettingsError(f"search_type {search_type!r} cannot be used with a hybrid strategy: only "
                                "'similarity' is (it runs the hybrid search)", ["search_type"])
        _check_search_kwargs(store, search_type, search_kwargs or {})
        return KnowledgeBankRetriever(vectorstore=store, search_type=search_type, search_kwargs=search_kwargs or {},
                                      images_dir=str(self.images_dir), knowledge_bank=self.id, mesh=self.mesh,
                                      **retriever_kwargs)

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
        self._synced = False
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
            if exc_type is None and not self._nothing_new():
                engine.commit(self._store)
            else:
                engine.discard(self._store)
        except BaseException:
            engine.discard(self._store)
            raise
        finally:
            self._close()
        return False

    def _nothing_new(self) -> bool:
        # After a sync that found every document unchanged, a store that can tell it holds nothing new
        # makes no new version: an identical copy would only push a real one out of the history.
        return self._synced and not getattr(self._store, "has_unsaved_changes", True)

    def _close(self) -> None:
        self._store = None
        if self._release is not None:
            self._release()
            self._release = None

    @property
    def folder_path(self) -> str:
        """The bank's local folder (settings, images, and FAISS's versions): the seed prints it."""
        return str(self.bank.folder.root)

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

    def sync_documents(self, documents: list[Any], ids: list[str], *, cleanup: Optional[str] = None,
                       batch_size: int = 64, on_batch: Any = None, on_progress: Any = None) -> SyncResult:
        """Make the staged version hold ``documents`` under ``ids``, embedding only what changed.

        A document whose id is already stored with the same text and metadata keeps its vector; a new
        or changed one is (re-)embedded. ``cleanup="full"`` also deletes every stored document not in
        ``ids`` (the bank then mirrors exactly this set); ``None`` deletes nothing. ``on_batch(n)`` is
        called after each batch of documents is compared, for progress bars. Every document is compared
        before any is embedded, so ``on_progress(embedded, unchanged)`` is called first as ``(0, n)``
        with how many are kept as they are (what is left is the embedding work: a progress bar's total,
        or no bar at all when it is 0), then as ``(k, 0)`` after each batch of ``k`` texts is embedded.
        """
        self._require_open()
        if cleanup not in (None, "full"):
            raise ValueError(f"cleanup must be None or 'full', not {cleanup!r}")
        if len(ids) != len(documents):
            raise ValueError(f"{len(ids)} ids for {len(documents)} documents")
        store = self.as_langchain_vectorstore()
        todo: list[tuple[Any, str]] = []
        for start in range(0, len(documents), batch_size):
            docs, doc_ids = documents[start:start + batch_size], ids[start:start + batch_size]
            stored = {d.id: d for d in store.get_by_ids(doc_ids)}
            todo += [(d, i) for d, i in zip(docs, doc_ids) if not _same_document(stored.get(i), d)]
            if on_batch is not None:
                on_batch(len(docs))
        added, unchanged = len(todo), len(documents) - len(todo)
        if on_progress is not None:
            on_progress(0, unchanged)
        for start in range(0, added, batch_size):
            part = todo[start:start + batch_size]
            store.add_documents([d for d, _ in part], ids=[i for _, i in part])
            if on_progress is not None:
                on_progress(len(part), 0)
        deleted = self._delete_others(store, set(ids)) if cleanup == "full" else 0
        self._synced = True
        return SyncResult(added=added, unchanged=unchanged, deleted=deleted)

    def _delete_others(self, store: Any, keep: set[str]) -> int:
        all_ids = getattr(self._store, "document_ids", None)
        if all_ids is None:
            raise NotImplementedError(
                f"the {self.bank.config.backend} backend cannot list its documents, so sync_documents cannot "
                f"remove stale ones; use cleanup=None, or writer.clear() before adding")
        stale = [i for i in all_ids() if i not in keep]
        if stale:
            store.delete(stale)
        return len(stale)

    def get_metadata_formatter(self) -> MetadataFormatter:
        return MetadataFormatter(self.bank.images_dir)


def _same_document(stored: Any, doc: Any) -> bool:
    return stored is not None and stored.page_content == doc.page_content and stored.metadata == doc.metadata


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




# What each search type calls on the store: a retriever's search_kwargs must be parameters of one of
# these (the methods pass **kwargs down the chain, which would otherwise swallow a typo silently).
_SEARCH_METHODS = {
    "similarity": ("similarity_search", "similarity_search_with_score", "similarity_search_with_score_by_vector"),
    "similarity_score_threshold": ("similarity_search_with_relevance_scores", "similarity_search_with_score",
                                   "similarity_search_with_score_by_vector"),
    "mmr": ("max_marginal_relevance_search", "max_marginal_relevance_search_by_vector"),
    "hybrid": ("hybrid_search", "hybrid_search_with_score", "hybrid_search_with_score_by_vector"),
    "keyword": ("keyword_search", "keyword_search_with_score"),
    "semantic_hybrid": ("semantic_hybrid_search", "semantic_hybrid_search_with_score"),
}
_NOT_SEARCH_KWARGS = {"self", "query", "embedding", "run_manager"}


def _search_params(store: Any, search_type: str) -> set[str]:
    names = {"k", "filter"} | ({"score_threshold"} if search_type == "similarity_score_threshold" else set())
    if search_type == "similarity" and getattr(store, "hybrid", None) is not None:
        return names | {"num_candidates"}  # what the hybrid strategy's search takes
    for method in _SEARCH_METHODS.get(search_type, ()):
        fn = getattr(store, method, None)
        if fn is None:
            continue
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in _NOT_SEARCH_KWARGS:
                names.add(p.name)
    return names


def _check_search_kwargs(store: Any, search_type: str, search_kwargs: dict[str, Any]) -> None:
    from langchain_mesh.errors import SettingsError

    known = _search_params(store, search_type)
    unknown = sorted(set(search_kwargs) - known)
    if unknown:
        raise SettingsError(f"search_kwargs {', '.join(unknown)} not understood by a {search_type!r} search on "
                            f"{type(store).__name__}; it takes {', '.join(sorted(known))}", unknown)
