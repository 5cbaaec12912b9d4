"""A VectorStoreRetriever that honours ``k`` as a constructor argument and knows hybrid/keyword search.

``VectorStoreRetriever(vectorstore=vs, k=3)`` in langchain-core ignores ``k`` (it only reads
``search_kwargs``), and only allows the similarity, similarity_score_threshold and mmr search types.
:class:`KnowledgeBankRetriever` adds ``k`` (constructor) / ``k=`` (``invoke``) and the ``"hybrid"`` and
``"keyword"`` (and ``"semantic_hybrid"``) types for stores that have ``hybrid_search`` /
``keyword_search`` / ``semantic_hybrid_search`` (and async variants).
Precedence: ``invoke(..., **kwargs)`` > ``k`` field > ``search_kwargs``.

Documents whose metadata carries retrieval content (set by the knowledge-bank writer's metadata
formatter) come back with that content in place of the embedded chunk (``knowledge_banks.metadata``);
``images_dir`` resolves relative image paths.

A retriever made by ``bank.as_langchain_retriever()`` knows its bank: it is serialisable the
LangChain way (``dumpd``/``loads``: the bank id, the search settings and the mesh as its config with
secret references) and picklable (the other process reopens the bank's current version)::

    retriever = mesh.get_knowledge_bank("docs").as_langchain_retriever(search_type="hybrid", k=4)
    KnowledgeBankRetriever(knowledge_bank="docs", mesh="mesh.yaml", search_type="hybrid", k=4)  # the same
"""

from __future__ import annotations

from typing import Any, ClassVar, Collection, Optional

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import Field, model_validator

from langchain_mesh._langchain_load import allow_in_langchain_load

__all__ = ["KnowledgeBankRetriever"]


class KnowledgeBankRetriever(VectorStoreRetriever):
    """``store.as_retriever(search_type="hybrid", search_kwargs={"k": 5, "alpha": 0.3})``."""

    allowed_search_types: ClassVar[Collection[str]] = (
        "similarity", "similarity_score_threshold", "mmr", "hybrid", "keyword", "semantic_hybrid")
    #: search types served by a store method of that name (``a``-prefixed for async)
    _METHODS: ClassVar[dict[str, str]] = {"hybrid": "hybrid_search", "keyword": "keyword_search",
                                          "semantic_hybrid": "semantic_hybrid_search"}

    k: Optional[int] = Field(default=None, ge=1)
    """Documents to return; overrides ``search_kwargs["k"]``."""
    images_dir: Optional[str] = None
    """Folder that relative retrieval-content image paths are resolved against."""
    knowledge_bank: Optional[str] = None
    """The id of the mesh knowledge bank searched; given without ``vectorstore``, the bank's current
    version is opened."""
    mesh: Optional[Any] = Field(default=None, exclude=True, repr=False)
    """The mesh of ``knowledge_bank``: a Mesh, a config dict or a mesh YAML path; None = ``Mesh.default()``."""

    @model_validator(mode="before")
    @classmethod
    def _open_bank(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("vectorstore") is not None or not data.get("knowledge_bank"):
            return data
        from langchain_mesh.langchain._common import coerce_mesh, resolve_mesh

        mesh = resolve_mesh(coerce_mesh(data.get("mesh")))
        bank = mesh.get_knowledge_bank(data["knowledge_bank"])
        out = {**data, "mesh": mesh, "vectorstore": bank.as_langchain_vectorstore()}
        out.setdefault("images_dir", str(bank.images_dir))
        return out

    # ---- crossing a process boundary (only a retriever that knows its bank can) ------------------

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["knowledge_banks"]

    def _portable_kwargs(self) -> dict[str, Any]:
        if not self.knowledge_bank:
            raise TypeError("this retriever was built on a vector store, not a mesh knowledge bank, so it "
                            "cannot be serialised or pickled; build it with bank.as_langchain_retriever()")
        kwargs: dict[str, Any] = {"knowledge_bank": self.knowledge_bank, "search_type": self.search_type}
        if self.mesh is not None:
            kwargs["mesh"] = self.mesh.portable_config()
        for key in ("search_kwargs", "k", "tags", "metadata"):
            value = getattr(self, key)
            if value:
                kwargs[key] = value
        return kwargs

    def to_json(self) -> Any:
        if not self.knowledge_bank:
            return self.to_json_not_implemented()
        return {"lc": 1, "type": "constructor", "id": self.lc_id(), "kwargs": self._portable_kwargs()}

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # the store (an open index, a client) does not travel: the other side reopens the bank
        return (_revive, (type(self), self._portable_kwargs()))

    def _finish(self, docs: list[Document]) -> list[Document]:
        from pathlib import Path

        from .metadata import RETRIEVAL_KEY, apply_retrieval_content

        if not any(RETRIEVAL_KEY in (d.metadata or {}) for d in docs):
            return docs
        images = Path(self.images_dir) if self.images_dir else None
        return [apply_retrieval_content(d, images) for d in docs]

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        merged = dict(self.search_kwargs)
        if self.k is not None:
            merged["k"] = self.k
        merged.update(kwargs)
        return merged

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        kw = self._kwargs(kwargs)
        method = self._store_method("")
        if method is not None:
            return self._finish(method(query, **kw))
        return self._finish(super()._get_relevant_documents(query, run_manager=run_manager, **kw))

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        kw = self._kwargs(kwargs)
        method = self._store_method("a")
        if method is not None:
            return self._finish(await method(query, **kw))
        return self._finish(await super()._aget_relevant_documents(query, run_manager=run_manager, **kw))

    def _store_method(self, prefix: str) -> Any:
        """The store's method for this search type, or None for the types langchain-core handles."""
        name = self._METHODS.get(self.search_type)
        if name is None:
            return None
        method = getattr(self.vectorstore, prefix + name, None)
        if method is None:
            raise ValueError(f"search_type {self.search_type!r} needs a store with {prefix + name}(); "
                             f"{type(self.vectorstore).__name__} has none (semantic_hybrid is Azure AI Search's)")
        return method


def _revive(cls: type, kwargs: dict[str, Any]) -> Any:
    return cls(**kwargs)


allow_in_langchain_load(KnowledgeBankRetriever)
