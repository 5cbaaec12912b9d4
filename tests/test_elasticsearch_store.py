"""ElasticsearchVectorStore: LangChain's standard suite against the local server (and a real cluster when
ELASTICSEARCH_URL is set), filters that agree with FAISS, bulk errors, kNN/BM25/hybrid, async, wire headers."""

from __future__ import annotations

import os
import uuid

import pytest

pytest.importorskip("elasticsearch")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from knowledge_banks.elasticsearch_store import ElasticsearchVectorStore  # noqa: E402

REAL_URL = os.environ.get("ELASTICSEARCH_URL")


class TestLocalServerStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    async def vectorstore(self, elasticsearch_server):
        store = ElasticsearchVectorStore(embedding=self.get_embeddings(), index_name=f"std-{uuid.uuid4().hex[:12]}",
                                         es_url=elasticsearch_server.url)
        yield store
        store.close()
        await store.aclose()  # the async tests' AsyncElasticsearch (aiohttp) sessions


@pytest.mark.skipif(not REAL_URL, reason="set ELASTICSEARCH_URL (and ELASTICSEARCH_API_KEY if needed) to run the "
                                         "standard suite against a real cluster")
class TestRealClusterStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    async def vectorstore(self):
        store = ElasticsearchVectorStore(embedding=self.get_embeddings(), index_name=f"mesh-test-{uuid.uuid4().hex[:12]}",
                                         es_url=REAL_URL, api_key=os.environ.get("ELASTICSEARCH_API_KEY"))
        yield store
        store.client.indices.delete(index=store.index_name, ignore_unavailable=True)
        store.close()
        await store.aclose()


# ---- helpers -----------------------------------------------------------------------------------------

import asyncio  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402

from knowledge_banks.elasticsearch_store import ElasticsearchBulkError  # noqa: E402
from knowledge_banks.filters import FilterError, compile_filter  # noqa: E402
from knowledge_banks.fusion import reciprocal_rank_fusion, weighted_score_fusion  # noqa: E402


class ConceptEmbedding(Embeddings):
    """Words map to concept axes (synonyms share one), unknown words to nothing: kNN finds synonyms that BM25
    cannot, and BM25 finds rare exact terms that kNN ignores. Unit-length, so every similarity applies."""

    CONCEPTS = {"car": 0, "automobile": 0, "vehicle": 0, "engine": 1, "motor": 1, "repair": 2, "fix": 2,
                "maintenance": 2, "cat": 3, "kitten": 3, "dog": 4, "puppy": 4, "bank": 5, "money": 5,
                "interest": 6, "rates": 6, "cake": 7, "recipe": 7, "lemon": 8}
    DIM = 10

    def _one(self, text: str) -> list[float]:
        v = [0.0] * self.DIM
        v[self.DIM - 1] = 0.05  # a bias axis: no zero vectors
        for w in re.findall(r"\w+", text.lower()):
            if w in self.CONCEPTS:
                v[self.CONCEPTS[w]] += 1.0
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


def _mesh_embeddings():
    from langchain_mesh import Mesh
    from langchain_mesh.langchain import MeshEmbeddings

    mesh = Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})
    return MeshEmbeddings(model="scripted:fake:embed", mesh=mesh)


def _store(server, emb, name=None, **kw) -> ElasticsearchVectorStore:
    return ElasticsearchVectorStore(embedding=emb, index_name=name or f"t-{uuid.uuid4().hex[:10]}",
                                    es_url=server.url, **kw)


DOCS = [
    Document(page_content="the cat sat on the mat", metadata={"kind": "pet", "year": 2019, "tags": ["a", "b"]},
             id="cat"),
    Document(page_content="dogs chase cats in the park", metadata={"kind": "pet", "year": 2021}, id="dog"),
    Document(page_content="stock markets fell sharply today", metadata={"kind": "news", "year": 2023}, id="stock"),
    Document(page_content="the central bank raised interest rates", metadata={"kind": "news", "year": 2024,
                                                                              "draft": True}, id="bank"),
    Document(page_content="a recipe for lemon cake", metadata={"kind": "food", "year": 2020, "id": "meta-id"},
             id="cake"),
    Document(page_content="nothing much here", metadata={"kind": None, "year": 2022.5, "flag": False, "tags": [],
                                                         "when": "2021-06-01"}, id="odd"),
]

FILTERS = [
    {"kind": "pet"}, {"kind": {"$eq": "news"}}, {"kind": {"$ne": "pet"}}, {"kind": {"$in": ["food", "news"]}},
    {"kind": {"$nin": ["food", "news"]}}, {"year": {"$gt": 2021}}, {"year": {"$gte": 2021}}, {"year": {"$lt": 2020}},
    {"year": {"$lte": 2020}}, {"year": {"$gte": 2020, "$lt": 2023}}, {"kind": "news", "year": 2024},
    {"$and": [{"kind": "pet"}, {"year": {"$gt": 2020}}]}, {"$or": [{"kind": "food"}, {"year": 2019}]},
    {"$or": [{"kind": "food"}, {"$and": [{"kind": "news"}, {"draft": True}]}]}, {"$not": {"kind": "pet"}},
    {"draft": {"$exists": True}}, {"draft": {"$exists": False}}, {"draft": {"$ne": True}}, {"tags": "a"},
    {"tags": {"$in": ["b", "z"]}}, {"tags": {"$nin": ["a"]}}, {"tags": {"$exists": True}}, {"id": "meta-id"},
    # type mismatches never match (ES alone would coerce "2000" to 2000, or 0 to false)
    {"year": {"$gt": "2000"}}, {"kind": 1}, {"flag": 0}, {"flag": False}, {"year": True}, {"kind": {"$gt": 3}},
    # None and empty lists, which Elasticsearch does not index
    {"kind": None}, {"kind": {"$ne": None}}, {"kind": {"$in": [None, "food"]}}, {"kind": {"$exists": True}},
    {"missing": {"$exists": False}}, {"missing": "x"}, {"missing": {"$ne": "x"}}, {"missing": {"$nin": ["x"]}},
    # string ranges, float values
    {"kind": {"$gt": "m"}}, {"year": {"$gt": 2022, "$lt": 2023}}, {"year": 2022.5}, {"when": {"$gte": "2021"}},
]


@pytest.fixture(scope="module")
def emb():
    return _mesh_embeddings()


@pytest.fixture(scope="module")
def faiss_store(emb):
    pytest.importorskip("faiss")
    from knowledge_banks import FaissVectorStore

    store = FaissVectorStore(embedding=emb)
    store.add_documents(DOCS)
    return store


# ---- filters agree with FAISS and with the shared predicate -------------------------------------------


def test_filters_agree_with_faiss(elasticsearch_server, emb, faiss_store):
    es = _store(elasticsearch_server, emb)
    es.add_documents(DOCS)
    for spec in FILTERS:
        expected = {d.id for d in DOCS if compile_filter(spec)(d.metadata)}
        faiss_ids = {d.id for d in faiss_store.similarity_search("anything", k=10, filter=spec)}
        es_ids = {d.id for d in es.similarity_search("anything", k=10, filter=spec)}
        assert es_ids == faiss_ids == expected, spec
        assert {d.id for d in es.hybrid_search("cat bank", k=10, filter=spec)} == \
            {d.id for d in faiss_store.hybrid_search("cat bank", k=10, filter=spec)}, spec
        assert {d.id for d in es.keyword_search("the", k=10, filter=spec)} <= expected, spec


def test_inexpressible_and_malformed_filters_raise(elasticsearch_server, emb):
    es = _store(elasticsearch_server, emb)
    es.add_documents(DOCS)
    for bad in ({"tags": ["a", "b"]}, {"a": {"$regex": "x"}}, {"$and": []}, lambda md: True):
        with pytest.raises(FilterError):
            es.similarity_search("x", filter=bad)


# ---- writes --------------------------------------------------------------------------------------------


def test_bulk_item_errors_name_the_failed_documents(elasticsearch_server, emb):
    es = _store(elasticsearch_server, emb)
    es.add_texts(["first"], [{"year": 2020}], ids=["ok0"])
    with pytest.raises(ElasticsearchBulkError) as info:
        es.add_texts(["good", "bad"], [{"year": 2021}, {"year": "not a year"}], ids=["ok1", "bad1"])
    err = info.value
    assert [f[0] for f in err.failures] == ["bad1"] and err.failures[0][1] == 400
    assert "bad1" in str(err) and "document_parsing_exception" in str(err) and "year" in str(err)
    assert err.written == ["ok1"]
    assert [d.id for d in es.get_by_ids(["ok0", "ok1", "bad1"])] == ["ok0", "ok1"]


def test_mapping_from_schema_and_index_options(elasticsearch_server, emb):
    es = _store(elasticsearch_server, emb, metadata_schema={"year": "int", "source": "string", "score": "float",
                                                            "ok": "bool", "day": "date"},
                similarity="dot_product", index_options={"type": "int8_hnsw", "m": 16, "ef_construction": 100})
    es.add_documents([Document(page_content="x", metadata={"year": 2020, "source": "a", "day": "2020-01-02"})])
    mapping = es.client.indices.get_mapping(index=es.index_name)[es.index_name]["mappings"]
    md = mapping["properties"]["metadata"]["properties"]
    assert {k: v["type"] for k, v in md.items()} == {"year": "long", "source": "keyword", "score": "double",
                                                      "ok": "boolean", "day": "date"}
    vec = mapping["properties"]["vector"]
    assert vec["similarity"] == "dot_product" and vec["dims"] == len(emb.embed_query("x"))
    assert vec["index_options"] == {"type": "int8_hnsw", "m": 16, "ef_construction": 100}
    with pytest.raises(ValueError):
        _store(elasticsearch_server, emb, similarity="manhattan")


def test_missing_index_reads_empty_and_reader_does_not_create(elasticsearch_server, emb):
    es = _store(elasticsearch_server, emb, create_index=False)
    assert es.similarity_search("x") == [] and es.keyword_search("x") == [] and es.hybrid_search("x") == []
    assert es.get_by_ids(["a"]) == [] and es.delete(["a"]) is True
    from langchain_mesh.errors import MeshError

    with pytest.raises(MeshError, match="does not exist"):
        es.add_texts(["x"])


# ---- search ------------------------------------------------------------------------------------------

HYBRID = [
    Document(page_content="automobile maintenance guide", id="synonym"),  # kNN only (car ~ automobile)
    Document(page_content="XJ9000 lemon lemon lemon lemon part list", id="rare"),  # BM25 only (exact rare term)
    Document(page_content="cat and kitten photos", id="cats"),
    Document(page_content="interest rates at the bank", id="rates"),
    Document(page_content="lemon cake recipe", id="cake"),
    Document(page_content="puppy training for dogs", id="dogs"),
    Document(page_content="money money money", id="money"),
]


@pytest.fixture
def hybrid_store(elasticsearch_server):
    es = _store(elasticsearch_server, ConceptEmbedding())
    es.add_documents(HYBRID)
    return es


def test_hybrid_returns_what_only_bm25_or_only_knn_finds(hybrid_store):
    q = "car XJ9000"
    knn = [d.id for d in hybrid_store.similarity_search(q, k=2)]
    bm25 = [d.id for d in hybrid_store.keyword_search(q, k=2)]
    assert "synonym" in knn and "rare" not in knn
    assert bm25 == ["rare"]
    for fusion in ("rrf", "weighted"):
        got = [d.id for d in hybrid_store.hybrid_search(q, k=2, fusion=fusion, rank_window_size=3)]
        assert set(got) == {"synonym", "rare"}, fusion
    assert hybrid_store.server_rrf is True
    rel = hybrid_store.as_retriever(search_type="hybrid", k=2, search_kwargs={"rank_window_size": 3}).invoke(q)
    assert {d.id for d in rel} == {"synonym", "rare"}


def test_native_rrf_equals_client_fusion_and_basic_licence_fallback(elasticsearch_server):
    emb = ConceptEmbedding()
    q = "cat bank XJ9000 money"
    native = _store(elasticsearch_server, emb)
    native.add_documents(HYBRID)
    server_side = native.hybrid_search_with_score(q, k=5, rank_window_size=6)
    assert native.server_rrf is True
    bodies = [r.json for r in elasticsearch_server.requests if r.path.endswith("/_search")]
    assert "rrf" in bodies[-1]["retriever"] and bodies[-1]["retriever"]["rrf"]["rank_window_size"] == 6

    # the same fusion computed here from the two rankings
    dense = [d.id for d in native.similarity_search(q, k=6)]
    lexical = [d.id for d in native.keyword_search(q, k=6)]
    manual = reciprocal_rank_fusion([dense, lexical], rank_constant=60)[:5]
    assert [(d.id, s) for d, s in server_side] == manual

    elasticsearch_server.license = "basic"
    basic = ElasticsearchVectorStore(embedding=emb, index_name=native.index_name, es_url=elasticsearch_server.url)
    elasticsearch_server.reset()
    fallback = basic.hybrid_search_with_score(q, k=5, rank_window_size=6)
    assert [(d.id, s) for d, s in fallback] == [(d.id, s) for d, s in server_side]
    assert basic.server_rrf is False
    refused = [r for r in elasticsearch_server.requests if r.json and "retriever" in r.json]
    assert len(refused) == 1  # asked once, refused (403), then fused client-side
    basic.hybrid_search(q, k=5, rank_window_size=6)
    assert len([r for r in elasticsearch_server.requests if r.json and "retriever" in r.json]) == 1  # remembered


def test_weighted_fusion_uses_exact_missing_scores(hybrid_store):
    q = "cat money XJ9000"
    n = len(HYBRID)
    dense_all = {d.id: s for d, s in hybrid_store.similarity_search_with_score(q, k=n)}
    lex_all = {d.id: s for d, s in hybrid_store.keyword_search_with_score(q, k=n)}
    window = 3
    dense_top = dict(list(dense_all.items())[:window])
    lex_top = dict(list(lex_all.items())[:window])
    cands = set(dense_top) | set(lex_top)
    expected = weighted_score_fusion([{i: dense_all[i] for i in cands}, {i: lex_all.get(i, 0.0) for i in cands}],
                                     weights=[0.3, 0.7])
    got = hybrid_store.hybrid_search_with_score(q, k=4, fusion="weighted", alpha=0.3, rank_window_size=window)
    assert [d.id for d, _ in got] == [i for i, _ in expected[:4]]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected[:4]])


@pytest.mark.parametrize("similarity", ["cosine", "dot_product", "l2_norm", "max_inner_product"])
def test_scores_and_relevance(elasticsearch_server, similarity):
    es = _store(elasticsearch_server, ConceptEmbedding(), similarity=similarity)
    es.add_documents(HYBRID)
    raw = es.similarity_search_with_score("lemon cake recipe", k=4)
    assert raw[0][0].id == "cake"
    exact = {"cosine": 1.0, "dot_product": 1.0, "l2_norm": 1.0, "max_inner_product": 2.0}[similarity]
    assert raw[0][1] == pytest.approx(exact, abs=1e-6)
    rel = es.similarity_search_with_relevance_scores("lemon cake recipe", k=4)
    scores = [s for _, s in rel]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)


def test_mmr_and_retriever_types(elasticsearch_server):
    es = _store(elasticsearch_server, ConceptEmbedding())
    es.add_texts(["cat kitten", "cat kitten", "cat kitten cat", "cat bank", "dog"], ids=["d1", "d2", "d3", "p", "b"])
    mmr = [d.id for d in es.max_marginal_relevance_search("cat kitten", k=2, fetch_k=5, lambda_mult=0.3)]
    assert mmr[0] in {"d1", "d2", "d3"} and mmr[1] not in {"d1", "d2", "d3"}
    assert len(es.as_retriever(k=1).invoke("cat")) == 1
    assert es.as_retriever(search_type="keyword", k=1).invoke("dog")[0].id == "b"
    assert len(es.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5}).invoke("cat")) == 3


async def test_async_variants(elasticsearch_server):
    es = _store(elasticsearch_server, ConceptEmbedding())
    assert await es.asimilarity_search("x") == []
    await es.aadd_documents(HYBRID)
    assert (await es.asimilarity_search("lemon cake", k=1))[0].id == "cake"
    assert (await es.akeyword_search("XJ9000", k=1))[0].id == "rare"
    assert {d.id for d in await es.ahybrid_search("car XJ9000", k=2, rank_window_size=3)} == {"synonym", "rare"}
    assert {d.id for d in await es.ahybrid_search("car XJ9000", k=2, rank_window_size=3, fusion="weighted")} == \
        {"synonym", "rare"}
    assert [d.id for d in await es.asimilarity_search("cake", k=5, filter={"missing": "x"})] == []
    assert len(await es.amax_marginal_relevance_search("cat", k=2)) == 2
    assert [d.id for d in await es.aget_by_ids(["rare", "nope", "cake"])] == ["rare", "cake"]
    await es.adelete(["rare"])
    assert await es.aget_by_ids(["rare"]) == []
    await es.adelete()
    assert await es.asimilarity_search("cake") == []
    # async requests went through AsyncElasticsearch (aiohttp), not a thread around the sync client
    agents = {r.headers.get("user-agent") for r in elasticsearch_server.requests}
    assert any("elasticsearch-py" in (a or "") for a in agents)
    metas = {r.headers.get("x-elastic-client-meta", "") for r in elasticsearch_server.requests}
    assert any("ai=" in m for m in metas)  # the aiohttp node marks itself
    await es.aclose()


def test_async_basic_licence_fallback(elasticsearch_server):
    elasticsearch_server.license = "basic"
    es = _store(elasticsearch_server, ConceptEmbedding())
    es.add_documents(HYBRID)

    async def run():
        try:
            return await es.ahybrid_search("car XJ9000", k=2, rank_window_size=3)
        finally:
            await es.aclose()

    got = asyncio.run(run())
    assert {d.id for d in got} == {"synonym", "rare"} and es.server_rrf is False


# ---- connection and wire -----------------------------------------------------------------------------


def test_wire_headers(elasticsearch_server, emb):
    es = _store(elasticsearch_server, emb)
    es.add_documents(DOCS[:2])
    es.similarity_search("cat")
    bulk = next(r for r in elasticsearch_server.requests if r.path.endswith("_bulk"))
    assert bulk.headers["content-type"] == "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
    assert bulk.body.endswith(b"\n") and bulk.query.get("refresh") == "true"
    search = next(r for r in elasticsearch_server.requests if r.path.endswith("_search"))
    assert search.headers["accept"] == "application/vnd.elasticsearch+json; compatible-with=8"
    assert search.headers["content-type"] == "application/vnd.elasticsearch+json; compatible-with=8"
    assert set(search.json) == {"knn", "size", "_source"}


def test_api_key_and_cloud_id(emb):
    from elasticsearch import AuthenticationException

    from langchain_mesh.testing.elasticsearch import ElasticsearchServer

    with ElasticsearchServer(api_key="c2VjcmV0") as srv:
        ok = ElasticsearchVectorStore(embedding=emb, index_name="k", es_url=srv.url, api_key="c2VjcmV0")
        ok.add_texts(["hello"], ids=["1"])
        assert srv.last_request.headers["authorization"] == "ApiKey c2VjcmV0"
        bad = ElasticsearchVectorStore(embedding=emb, index_name="k", es_url=srv.url, api_key="wrong")
        with pytest.raises(AuthenticationException):
            bad.similarity_search("hello")
    import base64

    cloud_id = "mesh:" + base64.b64encode(b"example.test:443$abc123$kib456").decode()
    store = ElasticsearchVectorStore(embedding=emb, index_name="k", cloud_id=cloud_id, api_key="key")
    node = store.client.transport.node_pool.all()[0]
    assert node.config.host == "abc123.example.test" and node.config.scheme == "https"
    with pytest.raises(ValueError, match="exactly one"):
        ElasticsearchVectorStore(embedding=emb, index_name="k")
