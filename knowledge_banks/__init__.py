"""Knowledge banks: vector stores on FAISS, Elasticsearch and Azure AI Search, hybrid search, fusion.

Names are exported lazily: ``import knowledge_banks`` imports neither FAISS, numpy nor LangChain.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FaissVectorStore": "knowledge_banks.faiss_store",
    "ElasticsearchVectorStore": "knowledge_banks.elasticsearch_store",
    "ElasticsearchBulkError": "knowledge_banks.elasticsearch_store",
    "AzureSearchVectorStore": "knowledge_banks.azure_search_store",
    "KnowledgeBankRetriever": "knowledge_banks.retriever",
    "FolderDocumentRef": "knowledge_banks.metadata",
    "ManagedFolderDocumentRef": "knowledge_banks.metadata",
    "BM25Index": "knowledge_banks.lexical",
    "Tokenizer": "knowledge_banks.lexical",
    "compile_filter": "knowledge_banks.filters",
    "FilterError": "knowledge_banks.filters",
    "reciprocal_rank_fusion": "knowledge_banks.fusion",
    "weighted_score_fusion": "knowledge_banks.fusion",
    "StoreFormatError": "knowledge_banks.persistence",
    "UnsupportedFormatError": "knowledge_banks.persistence",
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
