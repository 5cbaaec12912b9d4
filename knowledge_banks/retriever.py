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
"""

from __future__ import annotations

from typing import Any, ClassVar, Collection, Optional

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import Field

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
