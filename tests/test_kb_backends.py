"""The knowledge-bank API, unchanged, on each backend: FAISS on disk, Elasticsearch and Azure AI Search
(their local wire-compatible servers here; a real service when ``ELASTICSEARCH_URL`` or
``AZURE_SEARCH_ENDPOINT`` + ``AZURE_SEARCH_KEY`` are set). Banks come from a mesh config, exactly as
users declare them, and the same writes, searches, filters and failed writes must give the same
results on all three.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("faiss")
from langchain_core.documents import Document  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402

SCHEMA = {"source": "string", "year": "int"}
DOCS = [
    Document(page_content="Paris is the capital of France.", metadata={"source": "geo", "year": 2001}),
    Document(page_content="The mitochondria is the powerhouse of the cell.", metadata={"source": "bio", "year": 1990}),
    Document(page_content="Berlin is the capital of Germany.", metadata={"source": "geo", "year": 2015}),
    Document(page_content="Photosynthesis turns light into chemical energy.", metadata={"source": "bio", "year": 2020}),
]


def _settings(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    prefix = f"t{uuid.uuid4().hex[:8]}"  # a real service is shared: never collide with another run
    if backend == "faiss":
        return {}
    if backend == "elasticsearch":
        url = os.environ.get("ELASTICSEARCH_URL") or request.getfixturevalue("elasticsearch_server").url
        return {"es_url": url, "index_prefix": prefix}
    endpoint, key = os.environ.get("AZURE_SEARCH_ENDPOINT"), os.environ.get("AZURE_SEARCH_KEY")
    if not (endpoint and key):
        srv = request.getfixturevalue("azure_search_server")
        endpoint, key = srv.url, srv.api_key
    return {"endpoint": endpoint, "key": key, "index_prefix": prefix}


@pytest.fixture(params=["faiss", "elasticsearch", "azure_search"])
def kb(request: pytest.FixtureRequest, tmp_path: Path):
    backend = request.param
    pytest.importorskip({"faiss": "faiss", "elasticsearch": "elasticsearch",
                         "azure_search": "azure.search.documents"}[backend])
    mesh = Mesh.from_config({
        "connections": {"fake": {"type": "scripted"}},
        "knowledge_banks": {"docs": {"backend": backend, "path": str(tmp_path / "bank"), "metadata_schema": SCHEMA,
                                     "embedding_llm": "scripted:fake:embed",
                                     "settings": _settings(backend, request)}}})
    yield mesh.get_knowledge_bank("docs")
    mesh.close()


def write(kb: Any, docs: list[Document], clear: bool = False) -> list[str]:
    with kb.get_writer() as writer:
        if clear:
            writer.clear()
        return writer.as_langchain_vectorstore().add_documents(docs, ids=[f"d{i}" for i in range(len(docs))])


def contents(docs: list[Document]) -> list[str]:
    return [d.page_content for d in docs]


def test_write_search_filter_and_hybrid(kb):
    write(kb, DOCS)
    store = kb.as_langchain_vectorstore()
    assert contents(store.similarity_search("capital of France", k=1)) == ["Paris is the capital of France."]
    geo = store.similarity_search("capital", k=4, filter={"source": "geo"})
    assert sorted(contents(geo)) == ["Berlin is the capital of Germany.", "Paris is the capital of France."]
    recent = store.similarity_search("energy", k=4, filter={"year": {"$gte": 2015}})
    assert {d.metadata["year"] for d in recent} == {2015, 2020}
    retriever = kb.as_langchain_retriever(search_type="hybrid", search_kwargs={"k": 2})
    assert "The mitochondria is the powerhouse of the cell." in contents(retriever.invoke("mitochondria powerhouse"))


def test_a_failed_write_leaves_the_old_bank_live(kb):
    write(kb, DOCS[:2])
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with kb.get_writer() as writer:
            writer.clear()
            writer.as_langchain_vectorstore().add_documents(DOCS[2:], ids=["x1", "x2"])
            raise RuntimeError("crash mid-write")
    store = kb.as_langchain_vectorstore()
    assert sorted(contents(store.similarity_search("anything", k=10))) == sorted(contents(DOCS[:2]))


def test_clear_replaces_and_versions_roll_back(kb):
    write(kb, DOCS[:2])
    first = [v for v in kb.versions() if v.current][0].id
    write(kb, DOCS[2:], clear=True)
    assert sorted(contents(kb.as_langchain_vectorstore().similarity_search("x", k=10))) == sorted(contents(DOCS[2:]))
    kb.rollback(first)
    assert sorted(contents(kb.as_langchain_vectorstore().similarity_search("x", k=10))) == sorted(contents(DOCS[:2]))


def test_the_metadata_schema_is_enforced_before_anything_is_written(kb):
    from knowledge_banks.metadata import MetadataSchemaError

    with pytest.raises(MetadataSchemaError):
        with kb.get_writer() as writer:
            writer.as_langchain_vectorstore().add_documents(
                [Document(page_content="bad", metadata={"source": "geo", "year": "not a year"})])
    assert kb.as_langchain_vectorstore().similarity_search("bad", k=5) == []


def test_retriever_search_types(kb):
    write(kb, DOCS)
    keyword = kb.as_langchain_retriever(search_type="keyword", search_kwargs={"k": 1}).invoke("mitochondria")
    assert contents(keyword) == ["The mitochondria is the powerhouse of the cell."]
    semantic = kb.as_langchain_retriever(search_type="semantic_hybrid", search_kwargs={"k": 2})
    if kb.config.backend != "azure_search":
        with pytest.raises(ValueError, match="semantic_hybrid_search"):
            semantic.invoke("capital of Germany")
        return
    docs = semantic.invoke("capital of Germany")
    assert "Berlin is the capital of Germany." in contents(docs)
    assert all("@search.reranker_score" in d.metadata for d in docs)
