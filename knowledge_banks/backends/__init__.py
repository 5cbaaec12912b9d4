"""Bank backends: the :class:`BankEngine` interface, and the registry that maps ``backend:`` to one.

A backend is a name, a pydantic model of its ``settings:`` (checked when the mesh config loads, every
problem named by its key path, e.g. ``knowledge_banks.docs.settings.es_ulr: unknown key (did you
mean 'es_url'?)``) and a factory of engines. Built-in backends are named here as import paths, so
that loading a config imports no engine; third-party backends register through the
``knowledge_banks.backends`` entry point group (an object like :class:`BankBackend`), or
:func:`register_backend` at run time, as connection types do::

    # pyproject.toml of a plugin
    [project.entry-points."knowledge_banks.backends"]
    chroma = "my_pkg.bank:BACKEND"          # BankBackend("chroma", ChromaSettings, "my_pkg.bank:open_engine")

    # mesh.yaml
    knowledge_banks:
      docs: {backend: chroma, settings: {collection: docs}}

This module imports nothing of the project but pydantic models of its own: ``langchain_mesh.config``
asks it about backends while it validates a config (the import contracts in pyproject.toml).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Protocol, Union, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BankEngine", "BankBackend", "register_backend", "get_backend", "backend_names",
           "FaissSettings", "ElasticsearchSettings", "AzureSearchSettings"]


@runtime_checkable
class BankEngine(Protocol):
    """Versioned storage of one bank. Readers get :meth:`open_current`; the all-or-nothing writer
    :meth:`stage`\\ s a store for the next version, writes there, then :meth:`commit` makes it current
    (atomically, for readers) or :meth:`discard` drops it."""

    def open_current(self) -> Any:
        """A LangChain vector store over the current version (a snapshot)."""

    def versions(self) -> list[Any]:
        """The committed versions (:class:`knowledge_banks.versions.VersionInfo`), oldest first."""

    def rollback(self, version: str) -> None:
        """Make an earlier version current again."""

    def stage(self, clear: bool = False) -> Any:
        """A store for the next version: a copy of the current one, or empty."""

    def commit(self, store: Any) -> None: ...

    def discard(self, store: Any) -> None: ...


#: ``factory(kb_id, folder, settings, embeddings, metadata_schema) -> BankEngine``: ``folder`` the
#: bank's :class:`~knowledge_banks.versions.BankFolder`, ``settings`` the validated settings as a dict
#: of the keys the config set, ``embeddings`` a zero-argument factory of the LangChain embeddings
#: (resolving the embedding LLM waits for first use)
EngineFactory = Callable[[str, Any, dict[str, Any], Callable[[], Any], dict[str, str]], BankEngine]


@dataclass(frozen=True)
class BankBackend:
    name: str
    settings_model: type[BaseModel]
    #: the engine factory, or its import path ``"module:function"`` (imported on first use)
    engine: Union[str, EngineFactory]

    def open(self, kb_id: str, folder: Any, settings: dict[str, Any], embeddings: Callable[[], Any],
             metadata_schema: dict[str, str]) -> BankEngine:
        factory = self.engine
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(kb_id, folder, settings, embeddings, metadata_schema)


# ---- the built-in backends' settings ---------------------------------------------------------------


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class FaissSettings(_Settings):
    """``backend: faiss``: the :class:`~knowledge_banks.FaissVectorStore` options."""

    distance: Optional[Literal["cosine", "l2", "ip"]] = None
    index: Optional[Literal["flat", "hnsw", "ivf"]] = None
    index_params: Optional[dict[str, Any]] = None
    bm25_params: Optional[dict[str, Any]] = None
    verify: Optional[bool] = None


class ElasticsearchSettings(_Settings):
    """``backend: elasticsearch`` (see :mod:`knowledge_banks.elasticsearch_bank`); the connection values
    may be ``{{env:NAME}}`` / ``{{file:PATH}}`` references, resolved when the bank is opened."""

    es_url: Optional[str] = None
    cloud_id: Optional[str] = None
    api_key: Optional[str] = None
    basic_auth: Optional[tuple[str, str]] = None
    index_prefix: Optional[str] = None
    similarity: Optional[Literal["cosine", "dot_product", "l2_norm", "max_inner_product"]] = None
    index_options: Optional[dict[str, Any]] = None
    retention: Optional[int] = Field(default=None, ge=0)
    metadata_schema: Optional[dict[str, str]] = None
    client_kwargs: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _where(self) -> "ElasticsearchSettings":
        if not (self.es_url or self.cloud_id):
            raise ValueError("backend elasticsearch needs es_url, or cloud_id (+ api_key)")
        return self


class AzureSearchSettings(_Settings):
    """``backend: azure_search`` (see :mod:`knowledge_banks.azure_search_bank`)."""

    endpoint: str
    key: Optional[str] = None
    index_prefix: Optional[str] = None
    vector_algorithm: Optional[Literal["hnsw", "exhaustive_knn"]] = None
    metric: Optional[Literal["cosine", "euclidean", "dotProduct"]] = None
    semantic_configuration: Optional[str] = None
    keep_versions: Optional[int] = Field(default=None, ge=1)
    api_version: Optional[str] = None
    metadata_schema: Optional[dict[str, str]] = None


# the engine factories are named by import path: this module imports no engine (and so neither
# FAISS nor a search client, nor langchain_mesh.config, which imports this module)
_BUILTIN: dict[str, BankBackend] = {
    "faiss": BankBackend("faiss", FaissSettings, "knowledge_banks.backends.faiss.bank:open_engine"),
    "elasticsearch": BankBackend("elasticsearch", ElasticsearchSettings, "knowledge_banks.backends.elasticsearch.bank:open_engine"),
    "azure_search": BankBackend("azure_search", AzureSearchSettings, "knowledge_banks.backends.azure_search.bank:open_engine"),
}
_REGISTERED: dict[str, BankBackend] = {}
_ENTRY_POINT_GROUP = "knowledge_banks.backends"


def register_backend(backend: BankBackend) -> None:
    """Make ``backend`` available as ``backend: <its name>`` in this process."""
    if not backend.name or not isinstance(backend.settings_model, type) or not issubclass(
            backend.settings_model, BaseModel):
        raise TypeError("a bank backend needs a name and a pydantic settings model")
    _REGISTERED[backend.name] = backend


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=_ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def get_backend(name: str) -> BankBackend:
    """The backend registered as ``name``; LookupError (naming the known ones) when there is none."""
    backend = _REGISTERED.get(name) or _BUILTIN.get(name)
    if backend is not None:
        return backend
    ep = _entry_points().get(name)  # only a backend we do not ship costs an entry-point scan
    if ep is None:
        known = backend_names()
        hint = difflib.get_close_matches(name, known, n=1)
        raise LookupError(f"unknown knowledge bank backend {name!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; known: {', '.join(known)}")
    backend = ep.load()
    if not isinstance(backend, BankBackend):
        raise TypeError(f"entry point {name!r} of {_ENTRY_POINT_GROUP} must be a BankBackend, got {type(backend).__name__}")
    _REGISTERED[name] = backend
    return backend

