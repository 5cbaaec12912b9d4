"""Knowledge-bank API against the seed: Elasticsearch's DenseVectorStrategy honoured on the wire, every
keyword of as_langchain_retriever / as_langchain_vectorstore honoured or refused by name, and the
seed's handles (as_core_knowledge_bank, writer.folder_path, list items, document references)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("elasticsearch")
pytest.importorskip("faiss")

from elasticsearch.helpers.vectorstore import DenseVectorStrategy, DistanceMetric  # noqa: E402
from langchain_core.documents import Document  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import SettingsError  # noqa: E402

DOCS = [Document(page_content="Paris is the capital of France."),
        Document(page_content="The mitochondria is the powerhouse of the cell."),
        Document(page_content="Berlin is the capital of Germany.")]


def _mesh(tmp_path: Path, backend: str, settings: dict) -> Mesh:
    return Mesh.from_config({
        "connections": {"fake": {"type": "scripted"}},
        "knowledge_banks": {"docs": {"backend": backend, "path": str(tmp_path / "bank"),
                                     "embedding_llm": "scripted:fake:embed", "settings": settings}}})


@pytest.fixture
def es_kb(tmp_path, elasticsearch_server):
    mesh = _mesh(tmp_path, "elasticsearch", {"es_url": elasticsearch_server.url})
    kb = mesh.get_knowledge_bank("docs")
    with kb.get_writer() as w:
        w.as_langchain_vectorstore().add_documents(DOCS, ids=["paris", "mito", "berlin"])
    yield kb
    mesh.close()


@pytest.fixture
def faiss_kb(tmp_path):
    mesh = _mesh(tmp_path, "faiss", {})
    kb = mesh.get_knowledge_bank("docs")
    with kb.get_writer() as w:
        w.as_langchain_vectorstore().add_documents(DOCS, ids=["paris", "mito", "berlin"])
    yield kb
    mesh.close()


def _searches(server):
    return [r.json for r in server.requests if r.path.endswith("/_search")]


def test_rrf_strategy_sends_the_rrf_retriever(es_kb, elasticsearch_server):
    n = len(_searches(elasticsearch_server))
    retriever = es_kb.as_langchain_retriever(vectorstore_kwargs={"strategy": DenseVectorStrategy(hybrid=True, rrf=True)})
    docs = retriever.invoke("mitochondria powerhouse")
    assert docs[0].page_content == "The mitochondria is the powerhouse of the cell."
    body = _searches(elasticsearch_server)[n:][-1]
    rrf = body["retriever"]["rrf"]
    assert [next(iter(r)) for r in rrf["retrievers"]] == ["knn", "standard"]
    assert rrf["retrievers"][1]["standard"]["query"]["bool"]["must"][0]["match"]
    assert rrf["rank_constant"] == 60 and "knn" not in body


def test_rrf_parameters_reach_the_wire(es_kb, elasticsearch_server):
    store = es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(
        hybrid=True, rrf={"rank_constant": 20, "rank_window_size": 50}))
    n = len(_searches(elasticsearch_server))
    store.as_retriever(search_type="similarity").invoke("capital of Germany")
    rrf = _searches(elasticsearch_server)[n:][-1]["retriever"]["rrf"]
    assert rrf["rank_constant"] == 20 and rrf["rank_window_size"] == 50


def test_hybrid_without_rrf_sends_knn_and_query_together(es_kb, elasticsearch_server):
    store = es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(hybrid=True, rrf=False))
    n = len(_searches(elasticsearch_server))
    docs = store.similarity_search("mitochondria", k=2)
    assert docs[0].page_content.startswith("The mitochondria")
    body = _searches(elasticsearch_server)[n:][-1]
    assert set(body) >= {"knn", "query", "size"} and "retriever" not in body
    assert body["query"]["bool"]["must"][0]["match"]


def test_plain_strategy_and_default_send_knn_only(es_kb, elasticsearch_server):
    n = len(_searches(elasticsearch_server))
    es_kb.as_langchain_retriever().invoke("capital")
    es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy()).similarity_search("capital")
    bodies = _searches(elasticsearch_server)[n:]
    assert len(bodies) == 2 and all("knn" in b and "query" not in b and "retriever" not in b for b in bodies)


def test_strategy_refusals_name_what_is_wrong(es_kb):
    with pytest.raises(SettingsError, match="distance"):
        es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(distance=DistanceMetric.DOT_PRODUCT))
    with pytest.raises(SettingsError, match="model_id"):
        es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(model_id="my-elser"))
    with pytest.raises(SettingsError, match="rank_constnt"):
        es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(hybrid=True, rrf={"rank_constnt": 3}))
    with pytest.raises(SettingsError, match="only 'similarity'"):
        es_kb.as_langchain_retriever(search_type="mmr", vectorstore_kwargs={"strategy": DenseVectorStrategy(hybrid=True)})
    store = es_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(hybrid=True))
    with pytest.raises(SettingsError, match="max marginal relevance"):
        store.max_marginal_relevance_search("capital")
    with pytest.raises(SettingsError, match="strateg"):
        es_kb.as_langchain_vectorstore(strategy="hybrid")


def test_unknown_keywords_are_refused_by_name(faiss_kb, es_kb):
    with pytest.raises(SettingsError, match="strategy") as e:
        faiss_kb.as_langchain_vectorstore(strategy=DenseVectorStrategy(hybrid=True))
    assert "faiss" in str(e.value)
    with pytest.raises(SettingsError, match="strategi"):
        es_kb.as_langchain_vectorstore(strategi=DenseVectorStrategy(hybrid=True))
    with pytest.raises(SettingsError, match="vectorstore_kwarg"):
        es_kb.as_langchain_retriever(vectorstore_kwarg={"strategy": DenseVectorStrategy(hybrid=True)})
    with pytest.raises(SettingsError, match="fetchk"):
        faiss_kb.as_langchain_retriever(search_type="mmr", search_kwargs={"fetchk": 10})
    with pytest.raises(SettingsError, match="search_type"):
        faiss_kb.as_langchain_retriever(search_type="simlarity")
    # what is understood works
    docs = faiss_kb.as_langchain_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 3}, k=1,
                                           tags=["t"]).invoke("capital")
    assert len(docs) == 1
    es_kb.as_langchain_retriever(search_type="hybrid", search_kwargs={"k": 2, "alpha": 0.3, "fusion": "weighted"})


def test_seed_handles(faiss_kb, tmp_path):
    from knowledge_banks.metadata import DOCUMENT_KEY, RETRIEVAL_KEY, ManagedFolderDocumentRef

    assert faiss_kb.as_core_knowledge_bank() is faiss_kb
    [item] = faiss_kb.mesh.list_knowledge_banks()
    assert (item.id, item.name, item.embedding_llm) == ("docs", "docs", "scripted:fake:embed")
    assert item.as_core_knowledge_bank().id == "docs"
    images = Path(faiss_kb.images_dir)
    (images / "shots").mkdir(parents=True)
    (images / "shots" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n0000")
    with faiss_kb.get_writer() as writer:
        assert writer.folder_path == str(tmp_path / "bank")
        ref = ManagedFolderDocumentRef("/file.pdf", str(tmp_path / "originals"))
        doc = (writer.get_metadata_formatter().with_original_document_ref(ref)
               .with_original_document_page_range(1, 1)
               .with_retrieval_content(image_paths=["/shots/p1.png"])
               .format_metadata(Document(page_content="Summarized text")))
        assert '"folder"' in doc.metadata[DOCUMENT_KEY] and "shots/p1.png" in doc.metadata[RETRIEVAL_KEY]
        writer.as_langchain_vectorstore().add_documents([doc])
    found = faiss_kb.as_langchain_retriever(search_kwargs={"k": 4}).invoke("Summarized text")
    shot = [d for d in found if d.metadata.get("retrieval_images")][0]
    assert shot.metadata["retrieval_images"][0]["path"] == str(images / "shots" / "p1.png")
    with pytest.raises(FileNotFoundError, match="images folder"):
        writer2 = faiss_kb.get_writer()
        with writer2:
            writer2.get_metadata_formatter().with_retrieval_content(image_paths=["/no/such.png"])
