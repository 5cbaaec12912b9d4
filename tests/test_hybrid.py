"""BM25, fusion and hybrid search (plus LangChain's retriever suite on the hybrid retriever)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("faiss")

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from knowledge_banks import FaissVectorStore, KnowledgeBankRetriever  # noqa: E402
from knowledge_banks.fusion import min_max_normalize, reciprocal_rank_fusion, weighted_score_fusion  # noqa: E402
from knowledge_banks.lexical import BM25Index, Tokenizer  # noqa: E402



def _embeddings():
    """Deterministic hashed bag-of-words embeddings from the scripted connection (no model)."""
    from langchain_mesh import Mesh
    from langchain_mesh.langchain import MeshEmbeddings

    mesh = Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})
    return MeshEmbeddings(model="scripted:fake:embed", mesh=mesh)


CORPUS = {
    "d1": "The quick brown fox jumps over the lazy dog",
    "d2": "A fast brown fox leaps over lazy hounds",
    "d3": "Cats are running in the garden",
    "d4": "Interest rates and the central bank",
    "d5": "The dog sleeps; the dog dreams of running foxes",
}


@pytest.fixture(scope="module")
def emb():
    return _embeddings()


# ---- tokenizer and BM25 ------------------------------------------------------------------------------


def test_tokenizer_lowercases_stems_and_drops_stopwords():
    tok = Tokenizer()
    assert tok("The Cats were RUNNING, and the dogs ran!") == ["cat", "run", "dog", "ran"]
    assert Tokenizer(stemmer=None, stopwords=None)("The Cats") == ["the", "cats"]
    assert Tokenizer.from_config(tok.config())("foxes") == tok("foxes") == ["fox"]


def test_bm25_exact_term_match_ranks_first():
    index = BM25Index()
    index.add_many(CORPUS.items())
    assert index.search("central bank", k=1)[0][0] == "d4"
    assert index.search("garden cats", k=1)[0][0] == "d3"
    hits = dict(index.search("dog"))
    assert set(hits) == {"d1", "d5"} and hits["d5"] > hits["d1"]  # tf=2 beats tf=1
    assert index.search("zeppelin") == []
    assert [k for k, _ in index.search("fox", predicate=lambda key: key != "d1")] == ["d2", "d5"] or \
        {k for k, _ in index.search("fox", predicate=lambda key: key != "d1")} == {"d2", "d5"}


def test_bm25_matches_the_formula_by_hand():
    index = BM25Index(Tokenizer(stemmer=None, stopwords=None), k1=1.2, b=0.75)
    docs = {"a": "x y", "b": "x x z z z", "c": "z"}
    index.add_many(docs.items())
    avgdl = (2 + 5 + 1) / 3
    idf_x = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected_b = idf_x * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 5 / avgdl))
    assert dict(index.search("x"))["b"] == pytest.approx(expected_b, rel=1e-5)


def test_bm25_agrees_with_bm25s():
    bm25s = pytest.importorskip("bm25s")
    tok = Tokenizer()
    texts = list(CORPUS.values()) + ["brown dogs and brown foxes in the garden", "running is good for the dog"]
    ours = BM25Index(tok, k1=1.5, b=0.75)
    ours.add_many((str(i), t) for i, t in enumerate(texts))
    ref = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    ref.index([tok(t) for t in texts], show_progress=False)
    for query in ["brown fox", "dog running garden", "central bank rates"]:
        expected = ref.get_scores(tok(query)) * (1.5 + 1)  # bm25s drops the constant (k1 + 1) factor
        got = ours.score_all(query)
        assert [round(float(x), 4) for x in got] == [round(float(x), 4) for x in expected]


def test_bm25_incremental_equals_rebuild():
    inc = BM25Index()
    inc.add_many(CORPUS.items())
    inc.remove("d2")
    inc.add("d3", "a fox in the garden")  # replace
    inc.add("d6", "brown bears")
    assert not inc.remove("missing")
    fresh = BM25Index()
    fresh.add_many({**{k: v for k, v in CORPUS.items() if k != "d2"}, "d3": "a fox in the garden",
                    "d6": "brown bears"}.items())
    for q in ["brown fox", "garden", "dog running"]:
        assert dict(inc.search(q)) == pytest.approx(dict(fresh.search(q)))


def test_store_keeps_bm25_in_step(emb):
    store = FaissVectorStore(embedding=emb)
    store.add_texts(list(CORPUS.values()), ids=list(CORPUS))
    assert store.keyword_search("central bank", k=1)[0].id == "d4"
    store.delete(["d4"])
    assert all(d.id != "d4" for d in store.keyword_search("central bank"))
    store.add_texts(["the central bank of mars"], ids=["d9"])
    assert store.keyword_search("central bank", k=1)[0].id == "d9"
    store.add_texts(["nothing relevant here"], ids=["d9"])
    assert store.keyword_search("central bank mars") == []


# ---- fusion ------------------------------------------------------------------------------------------


def test_rrf_math():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], rank_constant=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [k for k, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]])] == ["a", "c", "b"]
    weighted = dict(reciprocal_rank_fusion([["a"], ["b"]], weights=[0.2, 0.8], rank_constant=0))
    assert weighted == {"a": pytest.approx(0.2), "b": pytest.approx(0.8)}
    assert dict(reciprocal_rank_fusion([["a", "a", "b"]], rank_constant=0)) == {"a": 1.0, "b": pytest.approx(1 / 3)}
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], weights=[1, 2])


def test_weighted_fusion_math():
    assert min_max_normalize({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert min_max_normalize({"a": 5.0}) == {"a": 1.0}
    fused = dict(weighted_score_fusion([{"a": 0.9, "b": 0.5, "c": 0.1}, {"a": 0.0, "b": 10.0, "c": 5.0}],
                                       weights=[0.5, 0.5]))
    assert fused["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert fused["b"] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert fused["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)
    assert [k for k, _ in weighted_score_fusion([{"a": 1, "b": 0}, {"a": 0, "b": 1}], [0.7, 0.3])] == ["a", "b"]


# ---- hybrid search -----------------------------------------------------------------------------------

# Hashed bag-of-words embeddings weigh every shared word alike (stopwords included); BM25 drops the
# stopwords and weighs the rare identifier, so only it finds the one document that answers the query.
KEYWORD_CORPUS = {
    "target": "E4721 error: reflash the laptop firmware",
    "a": "what is the best way for the team to plan the week",
    "b": "what is the role of the manager in the team",
    "c": "the laptop is on the desk for the meeting",
    "d": "the fix for the sink is in the kitchen",
    "e": "how to reset the router when the wifi drops",
}
QUERY = "what is the fix for the E4721 error on the laptop"


def _rank(docs, doc_id):
    ids = [d.id for d in docs]
    return ids.index(doc_id) if doc_id in ids else len(ids) + 100


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_hybrid_beats_dense_when_keyword_matters(emb, fusion):
    store = FaissVectorStore(embedding=emb)
    store.add_texts(list(KEYWORD_CORPUS.values()), ids=list(KEYWORD_CORPUS))
    dense = store.similarity_search(QUERY, k=6)
    hybrid = store.hybrid_search(QUERY, k=6, fusion=fusion)
    assert _rank(dense, "target") == 5  # dense ranks it last
    assert _rank(hybrid, "target") <= 2 < _rank(dense, "target")
    assert store.keyword_search(QUERY, k=1)[0].id == "target"


def test_hybrid_alpha_extremes_and_validation(emb):
    store = FaissVectorStore(embedding=emb)
    store.add_texts(list(KEYWORD_CORPUS.values()), ids=list(KEYWORD_CORPUS))
    dense_ids = [d.id for d in store.similarity_search(QUERY, k=4)]
    kw_ids = [d.id for d in store.keyword_search(QUERY, k=4)]
    for fusion in ("rrf", "weighted"):
        assert [d.id for d in store.hybrid_search(QUERY, k=4, fusion=fusion, alpha=1.0)] == dense_ids
        assert [d.id for d in store.hybrid_search(QUERY, k=4, fusion=fusion, alpha=0.0)][:1] == kw_ids[:1]
    scored = store.hybrid_search_with_score(QUERY, k=5, fusion="weighted")
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    with pytest.raises(ValueError):
        store.hybrid_search(QUERY, fusion="borda")
    with pytest.raises(ValueError):
        store.hybrid_search(QUERY, alpha=1.5)
    assert FaissVectorStore(embedding=emb).hybrid_search("x") == []


# ---- LangChain's retriever suite on the hybrid retriever ---------------------------------------------


def _hybrid_store():
    store = FaissVectorStore(embedding=_embeddings())
    store.add_documents([Document(page_content=t, id=i) for i, t in CORPUS.items()])
    return store


class TestHybridRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[KnowledgeBankRetriever]:
        return KnowledgeBankRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": _hybrid_store(), "search_type": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return "brown fox running"
