"""What every knowledge-bank vector store adds to LangChain's ``VectorStore`` in the same way:
the extra search types (``hybrid``, ``keyword``, ``semantic_hybrid``) in ``search``/``asearch``, a
:class:`KnowledgeBankRetriever` from ``as_retriever``, and ``from_texts`` through the constructor."""

from __future__ import annotations

from typing import Any, Optional

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from .retriever import KnowledgeBankRetriever

__all__ = ["BankStoreMixin"]


class BankStoreMixin:
    """Mix in before ``VectorStore``: ``class MyStore(BankStoreMixin, VectorStore)``."""

    #: the search type ``as_retriever`` uses when none is given (a store may set its own per instance)
    search_type = "similarity"

    def search(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        name = KnowledgeBankRetriever._METHODS.get(search_type)
        if name is not None and hasattr(self, name):
            return getattr(self, name)(query, **kwargs)
        return super().search(query, search_type, **kwargs)  # type: ignore[misc]

    async def asearch(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        name = KnowledgeBankRetriever._METHODS.get(search_type)
        if name is not None and hasattr(self, "a" + name):
            return await getattr(self, "a" + name)(query, **kwargs)
        return await super().asearch(query, search_type, **kwargs)  # type: ignore[misc]

    def as_retriever(self, **kwargs: Any) -> KnowledgeBankRetriever:
        """Search types: similarity, similarity_score_threshold, mmr, hybrid, keyword (and
        semantic_hybrid where the store has it); ``k=`` honoured."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]  # type: ignore[attr-defined]
        kwargs.setdefault("search_type", self.search_type)
        return KnowledgeBankRetriever(vectorstore=self, tags=tags, **kwargs)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: Optional[list[dict]] = None, *,
                   ids: Optional[list[str]] = None, **kwargs: Any) -> Any:
        store = cls(embedding=embedding, **kwargs)  # type: ignore[call-arg]
        store.add_texts(texts, metadatas, ids=ids)  # type: ignore[attr-defined]
        return store

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings, metadatas: Optional[list[dict]] = None, *,
                          ids: Optional[list[str]] = None, **kwargs: Any) -> Any:
        store = cls(embedding=embedding, **kwargs)  # type: ignore[call-arg]
        await store.aadd_texts(texts, metadatas, ids=ids)  # type: ignore[attr-defined]
        return store
