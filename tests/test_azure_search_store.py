"""AzureSearchVectorStore: LangChain's standard suite (local server and, when configured, the real
service), hybrid and semantic ranking, filters that agree with FAISS, batching, per-item failures."""

from __future__ import annotations

import json
import os
import uuid

import pytest

pytest.importorskip("azure.search.documents")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from knowledge_banks.azure_search_schema import decode_key, encode_key  # noqa: E402
from knowledge_banks.azure_search_store import AzureSearchIndexingError, AzureSearchVectorStore  # noqa: E402
from knowledge_banks.filters import FilterError  # noqa: E402


class BagOfWords(Embeddings):
    """Hashed bag-of-words vectors: texts sharing words are close (DeterministicFakeEmbedding's random
    vectors make every text equally far, which says nothing about ranking)."""

    def __init__(self, size: int = 32):
        self.size = size

    def _embed(self, text: str) -> list[float]:
        import hashlib
        import re

        v = [0.0] * self.size
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.size] += 1.0
        if not any(v):
            v[0] = 1e-3
        return v

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def _store(srv, emb=None, **kw) -> AzureSearchVectorStore:
    return AzureSearchVectorStore(embedding=emb or BagOfWords(), index_name=f"t-{uuid.uuid4().hex[:12]}",
                                  endpoint=srv.url, key=srv.api_key, **kw)


# ---- LangChain's standard suite ----------------------------------------------------------------------


class TestLocalStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, _mesh_azure_search_server_session):
        store = _store(_mesh_azure_search_server_session, self.get_embeddings())
        yield store
        store.delete_index()

    @property
    def has_get_by_ids(self) -> bool:
        return True


_REAL = os.environ.get("AZURE_SEARCH_ENDPOINT") and os.environ.get("AZURE_SEARCH_KEY")


@pytest.mark.skipif(not _REAL, reason="set AZURE_SEARCH_ENDPOINT and AZURE_SEARCH_KEY to run the standard suite "
                                      "against a real Azure AI Search service")
class TestRealServiceStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        store = AzureSearchVectorStore(embedding=self.get_embeddings(), index_name=f"mesh-test-{uuid.uuid4().hex[:12]}",
                                       endpoint=os.environ["AZURE_SEARCH_ENDPOINT"], key=os.environ["AZURE_SEARCH_KEY"])
        yield store
        store.delete_index()

    @property
    def has_get_by_ids(self) -> bool:
        return True


# ---- data ----------------------------------------------------------------------------------------------

DOCS = [
    Document(page_content="the cat sat on the mat", metadata={"kind": "pet", "year": 2019, "tags": ["a", "b"]},
             id="cat"),
    Document(page_content="dogs chase cats in the park", metadata={"kind": "pet", "year": 2021}, id="dog"),
    Document(page_content="stock markets fell sharply today", metadata={"kind": "news", "year": 2023}, id="stock"),
    Document(page_content="the central bank raised interest rates",
             metadata={"kind": "news", "year": 2024, "draft": True, "tags": ["b"]}, id="bank"),
    Document(page_content="a recipe for lemon cake", metadata={"kind": "food", "year": 2020, "id": "meta-id",
                                                                "author": "O'Brien"}, id="cake"),
    Document(page_content="grilled fish with lemon", metadata={"kind": "food", "year": 2022.5, "author": "Smith, J"},
             id="https://example.org/fish?x=1"),
]


@pytest.fixture
def srv(azure_search_server):
    return azure_search_server


@pytest.fixture
def store(srv):
    s = _store(srv)
    s.add_documents(DOCS)
    return s


# ---- keys, round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize("doc_id", ["plain-id_1", "a/b c", "b64=looks-encoded", "_leading", "ünï", "x" * 900, "=x"])
def test_keys_encode_reversibly_into_the_allowed_alphabet(doc_id):
    import re

    key = encode_key(doc_id)
    assert re.fullmatch(r"[A-Za-z0-9\-=][A-Za-z0-9_\-=]*", key)
    assert decode_key(key) == doc_id


def test_round_trip_of_odd_ids_and_metadata(store, srv):
    got = store.get_by_ids(["https://example.org/fish?x=1", "cake", "nope"])
    assert [d.id for d in got] == ["https://example.org/fish?x=1", "cake"]
    assert got[1].metadata == {"kind": "food", "year": 2020, "id": "meta-id", "author": "O'Brien"}
    assert isinstance(got[1].metadata["year"], int) and got[0].metadata["year"] == 2022.5
    stored = srv.documents(store.index_name)
    assert encode_key("https://example.org/fish?x=1") in stored and "cake" in stored
    # typed, filterable fields (not one JSON string); the metadata "id" stays apart from the key
    fields = {f["name"]: f for f in srv.indexes[store.index_name].definition["fields"]}
    assert fields["year"]["type"] == "Edm.Double" and fields["draft"]["type"] == "Edm.Boolean"
    assert fields["tags"]["type"] == "Collection(Edm.String)" and fields["meta_id"]["filterable"]
    assert stored["cake"]["meta_id"] == "meta-id" and stored["cake"]["id"] == "cake"


def test_schema_types_fields_and_rejects_mismatches(srv):
    s = _store(srv, metadata_schema={"year": "int", "when": "date", "score": "float", "ok": "bool", "kind": "string"})
    s.add_texts(["a b", "c d"], [{"year": 2020, "when": "2024-05-01T10:00:00"}, {"year": 2021, "ok": True}],
                ids=["1", "2"])
    fields = {f["name"]: f["type"] for f in srv.indexes[s.index_name].definition["fields"]}
    assert fields["year"] == "Edm.Int64" and fields["when"] == "Edm.DateTimeOffset" and fields["ok"] == "Edm.Boolean"
    assert [d.id for d in s.similarity_search("a b", k=5, filter={"when": {"$gte": "2024-01-01"}})] == ["1"]
    with pytest.raises(TypeError, match="year"):
        s.add_texts(["x"], [{"year": "nineteen"}])


# ---- search types ---------------------------------------------------------------------------------------


def test_similarity_scores_and_relevance(store):
    hits = store.similarity_search_with_score("the cat sat on the mat", k=3)
    assert hits[0][0].id == "cat" and hits[0][1] == pytest.approx(1.0)
    rel = store.similarity_search_with_relevance_scores("the cat sat on the mat", k=3)
    assert rel[0][1] == pytest.approx(1.0) and all(0.0 <= s <= 1.0 for _, s in rel)
    assert [s for _, s in rel] == sorted((s for _, s in rel), reverse=True)


def test_hybrid_returns_the_fused_ranking(srv):
    # "zebra" docs: only BM25 finds d-text (the vector of "zebra quagga" is far from the embedding of
    # "okapi"), only kNN finds d-vec (an exact vector match with no shared term): hybrid returns both.
    class Scripted(BagOfWords):
        def embed_query(self, text: str) -> list[float]:
            return self._embed("violet indigo") if text == "zebra" else super().embed_query(text)

    s = _store(srv, Scripted())
    s.add_texts(["zebra stripes on the savanna", "violet indigo", "unrelated words here", "more filler text"],
                ids=["d-text", "d-vec", "x1", "x2"])
    keyword = [d.id for d in s.keyword_search("zebra", k=4)]
    vector = [d.id for d in s.similarity_search("zebra", k=1)]
    assert keyword == ["d-text"] and vector == ["d-vec"]
    hybrid = s.hybrid_search_with_score("zebra", k=2)
    assert {d.id for d, _ in hybrid} == {"d-text", "d-vec"}
    body = srv.last_request.json
    assert body["search"] == "zebra" and body["vectorQueries"][0]["kind"] == "vector"
    # RRF scores: each found at rank 1 of one list, so 1/(60+1) plus its rank in the other list
    assert all(0.0 < score <= 2 / 61 + 1e-9 for _, score in hybrid)


def test_semantic_hybrid_surfaces_reranker_scores_and_captions(store, srv):
    docs = store.semantic_hybrid_search("lemon cake recipe", k=3)
    top = docs[0]
    assert top.id == "cake"
    assert 0.0 <= top.metadata["@search.reranker_score"] <= 4.0
    assert top.metadata["@search.reranker_score"] >= docs[-1].metadata["@search.reranker_score"]
    caption = top.metadata["@search.captions"][0]
    assert "lemon" in caption["text"] and "<em>lemon</em>" in caption["highlights"]
    body = srv.last_request.json
    assert body["queryType"] == "semantic" and body["semanticConfiguration"] == "default"
    assert body["captions"] == "extractive|highlight-true"
    retriever = store.as_retriever(search_type="semantic_hybrid", k=2)
    assert [d.id for d in retriever.invoke("lemon cake recipe")][0] == "cake"


def test_retriever_search_types(store):
    assert len(store.as_retriever(k=2).invoke("cat")) == 2
    assert len(store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 6}).invoke("cat")) == 3
    hyb = store.as_retriever(search_type="hybrid", search_kwargs={"k": 2, "filter": {"kind": "news"}})
    assert {d.id for d in hyb.invoke("interest rates")} == {"bank", "stock"}
    assert store.as_retriever(search_type="keyword", k=1).invoke("lemon cake")[0].id == "cake"
    with pytest.raises(ValueError):
        store.as_retriever(search_type="nonsense")


async def test_async_variants(store):
    assert (await store.asimilarity_search("the cat sat on the mat", k=1))[0].id == "cat"
    assert {d.id for d in await store.ahybrid_search("lemon", k=2)} == {"cake", "https://example.org/fish?x=1"}
    sem = await store.asemantic_hybrid_search("lemon cake", k=1)
    assert sem[0].metadata["@search.reranker_score"] is not None
    assert [d.id for d in await store.aget_by_ids(["dog", "nope", "cat"])] == ["dog", "cat"]
    await store.aadd_texts(["async text"], [{"kind": "x"}], ids=["a1"])
    assert (await store.aget_by_ids(["a1"]))[0].metadata == {"kind": "x"}
    await store.adelete(["a1"])
    assert await store.aget_by_ids(["a1"]) == []


# ---- filters: the same answers as FAISS ------------------------------------------------------------------

FILTERS = [
    {"kind": "pet"},
    {"kind": {"$ne": "pet"}},
    {"year": {"$gte": 2021, "$lt": 2024}},
    {"year": {"$gt": 2022}},
    {"kind": {"$in": ["news", "food"]}},
    {"kind": {"$nin": ["news", "food"]}},
    {"tags": "b"},
    {"tags": {"$in": ["a", "zzz"]}},
    {"tags": {"$ne": "b"}},
    {"tags": {"$exists": True}},
    {"draft": {"$exists": False}},
    {"draft": True},
    {"draft": {"$ne": True}},
    {"$or": [{"kind": "food"}, {"$and": [{"year": {"$gt": 2020}}, {"kind": "pet"}]}]},
    {"$not": {"kind": "pet"}},
    {"author": "O'Brien"},
    {"author": {"$in": ["O'Brien", "Smith, J"]}},
    {"author": {"$nin": ["O'Brien"]}},
    {"id": "meta-id"},
    {"never_seen": "x"},
    {"never_seen": {"$ne": "x"}},
    {"year": "2020"},
    {"year": 2022.5},
    {"year": {"$gt": "2020"}},
    {"kind": {"$in": []}},
]


@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filters_agree_with_faiss(store, spec):
    pytest.importorskip("faiss")
    from knowledge_banks import FaissVectorStore

    faiss = FaissVectorStore(embedding=BagOfWords())
    faiss.add_documents(DOCS)
    want = sorted(d.id for d in faiss.similarity_search("cat", k=10, filter=spec))
    got = sorted(d.id for d in store.similarity_search("cat", k=10, filter=spec))
    assert got == want


def test_odata_escaping_on_the_wire(store, srv):
    store.similarity_search("x", k=2, filter={"author": "O'Brien"})
    assert srv.last_request.json["filter"] == "author eq 'O''Brien'"
    store.similarity_search("x", k=2, filter={"author": {"$in": ["O'Brien", "Smith, J"]}})
    assert srv.last_request.json["filter"] == "search.in(author, 'O''Brien|Smith, J', '|')"
    with pytest.raises(FilterError):
        store.similarity_search("x", filter={"kind": {"$regex": "a"}})
    with pytest.raises(FilterError):
        store.similarity_search("x", filter=lambda md: True)


# ---- writes: batching, failures, deletes ------------------------------------------------------------------


def test_uploads_are_batched_within_the_service_limits(srv):
    s = _store(srv, BagOfWords(size=4))
    ids = s.add_texts([f"doc {i}" for i in range(2345)])
    uploads = [r for r in srv.requests if r.path.endswith("/docs/search.index")]
    assert [len(r.json["value"]) for r in uploads] == [1000, 1000, 345]
    assert len(srv.documents(s.index_name)) == 2345 and len(ids) == 2345
    srv.reset()
    small = _store(srv, BagOfWords(size=4), max_batch_bytes=4000)
    small.add_texts(["x" * 500 for _ in range(20)])
    uploads = [r for r in srv.requests if r.path.endswith("/docs/search.index")]
    assert len(uploads) > 2 and all(len(r.body) <= 4000 + 64 for r in uploads)
    assert sum(len(r.json["value"]) for r in uploads) == 20


def test_per_item_failures_are_reported(store, srv):
    srv.fail_item(encode_key("bad/one"), 422, "Field 'x' is malformed.")
    with pytest.raises(AzureSearchIndexingError) as e:
        store.add_texts(["ok text", "bad text"], ids=["ok", "bad/one"])
    assert e.value.failures == [("bad/one", 422, "Field 'x' is malformed.")] and e.value.succeeded == ["ok"]
    assert "'bad/one': 422" in str(e.value)
    assert srv.last_request.path.endswith("/docs/search.index")
    assert [d.id for d in store.get_by_ids(["ok"])] == ["ok"]


def test_readd_replaces_delete_tolerates_missing_and_delete_all(store):
    store.add_texts(["lemon tart with cream"], [{"kind": "food"}], ids=["cake"])
    assert store.get_by_ids(["cake"])[0].page_content == "lemon tart with cream"
    assert store.delete(["cake", "never-there"]) is True
    assert store.get_by_ids(["cake"]) == []
    store.delete()
    assert store.similarity_search("cat", k=10) == []


def test_wire_requests_carry_api_key_and_api_version(store, srv):
    srv.reset()
    store.similarity_search("cat", k=1)
    store.get_by_ids(["cat"])
    assert srv.requests
    for r in srv.requests:
        assert r.headers["api-key"] == srv.api_key
        assert r.query["api-version"]


def test_search_on_a_missing_index_is_empty_and_bad_key_raises(srv):
    from azure.core.exceptions import HttpResponseError

    assert _store(srv).similarity_search("x") == []
    bad = AzureSearchVectorStore(embedding=BagOfWords(), index_name="whatever", endpoint=srv.url, key="wrong")
    with pytest.raises(HttpResponseError) as e:
        bad.similarity_search("x")
    assert e.value.status_code == 403


def test_constructor_validates():
    with pytest.raises(ValueError):
        AzureSearchVectorStore(embedding=BagOfWords(), index_name="i", endpoint="http://x")
    with pytest.raises(ValueError):
        AzureSearchVectorStore(embedding=BagOfWords(), index_name="i", endpoint="http://x", key="k", metric="l2")
