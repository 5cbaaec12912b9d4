"""Knowledge banks: vector stores on FAISS, Elasticsearch and Azure AI Search, hybrid search, fusion.

Names are exported lazily: ``import knowledge_banks`` imports neither FAISS, numpy nor LangChain.
"""

from __future__ import annotations

import importlib
from typing import Any

from langchain_mesh import _moved

# modules that moved into the backend subpackages: their old paths still import
_moved.register(__name__, {
    "azure_search_bank": "backends.azure_search.bank",
    "azure_search_odata": "backends.azure_search.odata",
    "azure_search_schema": "backends.azure_search.schema",
    "azure_search_store": "backends.azure_search.store",
    "elasticsearch_bank": "backends.elasticsearch.bank",
    "elasticsearch_filters": "backends.elasticsearch.filters",
    "elasticsearch_mapping": "backends.elasticsearch.mapping",
    "elasticsearch_store": "backends.elasticsearch.store",
    "faiss_bank": "backends.faiss.bank",
    "faiss_store": "backends.faiss.store",
    "persistence": "backends.faiss.persistence",
    "vector_index": "backends.faiss.vector_index",
})

_EXPORTS = {
    "FaissVectorStore": "knowledge_banks.backends.faiss.store",
    "ElasticsearchVectorStore": "knowledge_banks.backends.elasticsearch.store",
    "ElasticsearchBulkError": "knowledge_banks.backends.elasticsearch.store",
    "AzureSearchVectorStore": "knowledge_banks.backends.azure_search.store",
    "KnowledgeBankRetriever": "knowledge_banks.retriever",
    "FolderDocumentRef": "knowledge_banks.metadata",
    "ManagedFolderDocumentRef": "knowledge_banks.metadata",
    "BM25Index": "knowledge_banks.lexical",
    "Tokenizer": "knowledge_banks.lexical",
    "compile_filter": "knowledge_banks.filters",
    "FilterError": "knowledge_banks.filters",
    "reciprocal_rank_fusion": "knowledge_banks.fusion",
    "weighted_score_fusion": "knowledge_banks.fusion",
    "StoreFormatError": "knowledge_banks.backends.faiss.persistence",
    "UnsupportedFormatError": "knowledge_banks.backends.faiss.persistence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'knowledge_banks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
