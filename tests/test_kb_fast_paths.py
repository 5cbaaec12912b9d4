"""The knowledge-bank fast paths give the same answers as the plain computations they replace:
dense search = brute force (with and without filters), the vectorised hybrid fusion = the reference
fusion functions, a persisted BM25 index = a rebuilt one, fast Documents = validated ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402

from knowledge_banks import FaissVectorStore  # noqa: E402
from knowledge_banks._documents import _unchecked, _validated, make_document  # noqa: E402
from knowledge_banks.fusion import reciprocal_rank_fusion, weighted_score_fusion  # noqa: E402
from knowledge_banks.lexical import BM25Index  # noqa: E402

WORDS = ("protein cell gene cancer risk trial dose brain virus immune model patients mouse "
         "expression signal therapy receptor growth blood study").split()


class TableEmbeddings(Embeddings):
    """Text -> fixed random vector (no model), so brute force can recompute every score."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text].tolist()


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(7)
    n, dim = 600, 32
    texts = [f"doc {i} " + " ".join(rng.choice(WORDS, 12)) for i in range(n)]
    queries = [" ".join(rng.choice(WORDS, 3)) + f" q{i}" for i in range(25)]
    vecs = rng.standard_normal((n + len(queries), dim)).astype(np.float32)
    emb = TableEmbeddings(dict(zip(texts + queries, vecs)))
    mds = [{"row": i, "group": ["a", "b", "c"][i % 3], "score": float(i) / 7} for i in range(n)]
    return texts, queries, emb, mds


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _store(corpus, **kw) -> FaissVectorStore:
    texts, _, emb, mds = corpus
    return FaissVectorStore.from_texts(texts, emb, metadatas=mds, ids=[f"d{i}" for i in range(len(texts))], **kw)


def _brute_dense(corpus, query: str, k: int, allowed=None, deleted=()) -> list[str]:
    texts, _, emb, mds = corpus
    docs = _unit(np.asarray(emb.embed_documents(texts)))
    sims = docs @ _unit(np.asarray(emb.embed_query(query)))
    order = [i for i in np.argsort(-sims, kind="stable")
             if f"d{i}" not in deleted and (allowed is None or allowed(mds[i]))]
    return [f"d{i}" for i in order[:k]]


def test_dense_search_equals_brute_force_with_filters_and_deletes(corpus):
    store = _store(corpus)
    _, queries, _, _ = corpus
    for q in queries:
        assert [d.id for d in store.similarity_search(q, k=10)] == _brute_dense(corpus, q, 10)
        got = store.similarity_search(q, k=7, filter={"group": "b"})  # dict filter: a FAISS IDSelector mask
        assert [d.id for d in got] == _brute_dense(corpus, q, 7, lambda md: md["group"] == "b")
        assert all(d.metadata["group"] == "b" for d in got)
        got = store.similarity_search(q, k=7, filter=lambda md: md["row"] % 5 == 0)  # callable: widening
        assert [d.id for d in got] == _brute_dense(corpus, q, 7, lambda md: md["row"] % 5 == 0)
    # a selective filter (4 documents) returns exactly those, best first, even with k larger
    rare = {"row": {"$in": [3, 30, 300, 333]}}
    got = store.similarity_search(queries[0], k=10, filter=rare)
    assert [d.id for d in got] == _brute_dense(corpus, queries[0], 10, lambda md: md["row"] in (3, 30, 300, 333))
    # writes invalidate the cached filter masks
    store.delete(["d0", "d3", "d6"])
    got = store.similarity_search(queries[1], k=5, filter={"group": "a"})
    assert [d.id for d in got] == _brute_dense(corpus, queries[1], 5, lambda md: md["group"] == "a",
                                                deleted={"d0", "d3", "d6"})


def test_search_results_are_independent_copies(corpus):
    store = _store(corpus)
    q = corpus[1][0]
    first = store.similarity_search(q, k=3)
    first[0].metadata["group"] = "mutated"
    again = store.similarity_search(q, k=3)
    assert again[0].metadata["group"] != "mutated" and again[0].id == first[0].id
    assert isinstance(again[0], Document) and again[0] == Document(**again[0].model_dump())


def test_fast_documents_equal_validated_ones():
    args = ("some text", {"a": 1, "b": [1, 2]}, "id-1")
    fast, ref = _unchecked(*args), _validated(*args)
    assert fast == ref and repr(fast) == repr(ref) and fast.model_dump() == ref.model_dump()
    assert make_document(*args) == ref
    fast.metadata["c"] = 3  # an ordinary, mutable Document
    assert fast.metadata == {"a": 1, "b": [1, 2], "c": 3}


def _reference_hybrid(store: FaissVectorStore, corpus, query: str, k: int, fusion: str, pred=None) -> list[str]:
    """The hybrid ranking computed the plain way: brute-force dense scores, BM25 by predicate, the
    reference fusion functions from knowledge_banks.fusion over dicts."""
    texts, _, emb, mds = corpus
    fetch_k = max(100, 4 * k)
    ok = [i for i in range(len(texts)) if pred is None or pred(mds[i])]
    docs = _unit(np.asarray(emb.embed_documents(texts)))
    sims = docs @ _unit(np.asarray(emb.embed_query(query)))
    dense_rank = sorted(ok, key=lambda i: -sims[i])[:fetch_k]
    bm25 = BM25Index()
    for i in range(len(texts)):
        bm25.add(f"d{i}", texts[i])
    lex = bm25.search(query, fetch_k, None if pred is None else (lambda key: pred(mds[int(key[1:])])))
    if fusion == "rrf":
        fused = reciprocal_rank_fusion([[f"d{i}" for i in dense_rank], [key for key, _ in lex]], weights=[1, 1])
    else:
        dense = {f"d{i}": float(sims[i]) for i in dense_rank}
        lexical = dict(lex)
        cands = list(dense) + [key for key in lexical if key not in dense]
        dense_full = {key: float(sims[int(key[1:])]) for key in cands}
        lex_full = {key: lexical.get(key, dict(zip(*[[key], bm25.score_keys(query, [key])])).get(key))
                    for key in cands}
        fused = weighted_score_fusion([dense_full, lex_full], weights=[0.5, 0.5])
    return [key for key, _ in fused[:k]]


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_vectorised_hybrid_equals_reference_fusion(corpus, fusion):
    store = _store(corpus)
    for q in corpus[1][:10]:
        got = [d.id for d in store.hybrid_search(q, k=10, fusion=fusion)]
        assert got == _reference_hybrid(store, corpus, q, 10, fusion)
        got = [d.id for d in store.hybrid_search(q, k=10, fusion=fusion, filter={"group": {"$ne": "a"}})]
        assert got == _reference_hybrid(store, corpus, q, 10, fusion, lambda md: md["group"] != "a")


def test_bm25_is_persisted_with_the_version_and_reloaded(corpus, tmp_path, monkeypatch):
    store = _store(corpus)
    queries = corpus[1]
    before = {q: [(d.id, round(s, 5)) for d, s in store.hybrid_search_with_score(q, k=10)] for q in queries[:8]}
    kw_before = {q: [d.id for d in store.keyword_search(q, k=10)] for q in queries[:8]}
    path = store.save(tmp_path / "bank")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["files"]["bm25"].endswith(".npz") and "bm25" in manifest["blake3"]

    # the loaded store scores from the saved index: tokenising a document would be a rebuild
    def no_rebuild(self, key, tokens):
        raise AssertionError("BM25 rebuilt after load")

    monkeypatch.setattr(BM25Index, "add_tokens", no_rebuild)
    loaded = FaissVectorStore.load(path, embedding=corpus[2])
    for q in queries[:8]:
        assert [(d.id, round(s, 5)) for d, s in loaded.hybrid_search_with_score(q, k=10)] == before[q]
        assert [d.id for d in loaded.keyword_search(q, k=10)] == kw_before[q]
    monkeypatch.undo()

    # changes after load keep it in step (same answers as a store built from scratch with them)
    loaded.delete(["d1", "d2"])
    loaded.add_texts([corpus[0][5]], metadatas=[{"row": 5, "group": "c", "score": 0.0}], ids=["d5"])  # re-add
    fresh = _store(corpus)
    fresh.delete(["d1", "d2"])
    fresh.add_texts([corpus[0][5]], metadatas=[{"row": 5, "group": "c", "score": 0.0}], ids=["d5"])
    for q in queries[:8]:
        assert [d.id for d in loaded.keyword_search(q, k=10)] == [d.id for d in fresh.keyword_search(q, k=10)]
        assert [d.id for d in loaded.hybrid_search(q, k=10)] == [d.id for d in fresh.hybrid_search(q, k=10)]
    # and the next version carries the updated index
    again = FaissVectorStore.load(loaded.save(tmp_path / "v2"), embedding=corpus[2])
    assert [d.id for d in again.keyword_search(queries[0], k=10)] == [d.id for d in fresh.keyword_search(queries[0], k=10)]


def test_corrupt_bm25_file_is_refused_by_checksum(corpus, tmp_path):
    store = _store(corpus)
    store.keyword_search("cell", k=1)
    path = store.save(tmp_path / "bank")
    name = json.loads((path / "manifest.json").read_text())["files"]["bm25"]
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    from knowledge_banks.backends.faiss.persistence import StoreFormatError

    with pytest.raises(StoreFormatError, match="BLAKE3 checksum does not match"):
        FaissVectorStore.load(path, embedding=corpus[2])


def test_bm25_bytes_round_trip_string_keys():
    index = BM25Index()
    docs = {"a": "the cell grows", "b": "cells and genes", "c": "gene therapy trial", "d": "blood cell count"}
    index.add_many(docs.items())
    index.remove("c")
    copy = BM25Index.from_bytes(index.to_bytes())
    for q in ("cell", "gene", "therapy", "blood cells"):
        assert copy.search(q) == index.search(q)
    copy.add("e", "cell cell cell")  # a loaded index can change
    index.add("e", "cell cell cell")
    assert copy.search("cell") == index.search("cell")
    with pytest.raises(ValueError, match="not a BM25 index"):
        BM25Index.from_bytes(b"not an npz")


def test_bm25_file_narrow_types_and_older_files():
    """Counts and slots are stored in the narrowest unsigned type that holds them (a term repeated 300
    times needs uint16), scores are unchanged after a round trip, and a file written with the older wide
    types (int64 offsets, int32 slots, float32 counts) loads to the same scores."""
    import io

    index = BM25Index(int_keys=True)
    index.add_many([(0, "cell " * 300 + "gene"), (1, "gene therapy"), (2, "blood cell count")])
    data = index.to_bytes()
    with np.load(io.BytesIO(data)) as z:
        arrays = {name: z[name] for name in z.files}
    assert (arrays["tfs"].dtype, arrays["slots"].dtype, arrays["ptr"].dtype) == (np.uint16, np.uint8, np.uint8)
    wide = {**arrays, "ptr": arrays["ptr"].astype(np.int64), "slots": arrays["slots"].astype(np.int32),
            "tfs": arrays["tfs"].astype(np.float32)}
    buf = io.BytesIO()
    np.savez(buf, **wide)
    for copy in (BM25Index.from_bytes(data), BM25Index.from_bytes(buf.getvalue())):
        for q in ("cell", "gene", "blood cells", "therapy gene"):
            assert np.array_equal(copy.score_all(q), index.score_all(q))
        assert copy.to_bytes() == data  # re-saved unchanged, in the narrow types


def test_bulk_bm25_equals_one_by_one(corpus):
    """BM25Index.bulk (what a store builds its keyword index with) gives the same scores and the same
    persisted bytes as adding the documents one by one, before and after later changes."""
    texts, queries, _, _ = corpus
    keys = list(range(3, 3 + 2 * len(texts), 2))  # sparse keys, as after deletes
    one = BM25Index(int_keys=True)
    for key, text in zip(keys, texts):
        one.add(key, text)
    bulk = BM25Index.bulk(keys, texts)
    assert bulk.to_bytes() == one.to_bytes()
    for q in queries:
        assert np.array_equal(bulk.score_all(q), one.score_all(q))
    for index in (one, bulk):
        index.remove(keys[0])
        index.add(10_000, "protein cell therapy")
    assert bulk.to_bytes() == one.to_bytes()
    assert np.array_equal(bulk.score_all("protein cell"), one.score_all("protein cell"))
    with pytest.raises(ValueError, match="keys for"):
        BM25Index.bulk([1, 2], ["one text"])


def _reference_best(scores: np.ndarray, k: int, floor: float) -> list[int]:
    """Best k rows with score > floor by (score desc, row asc): the plain sort best_rows replaces."""
    hits = [i for i in range(len(scores)) if scores[i] > floor]
    return sorted(hits, key=lambda i: (-scores[i], i))[:k]


@pytest.mark.parametrize("seed", range(40))
def test_top_k_selection_equals_a_full_sort(seed):
    """The sampled-threshold top k (the BM25 side of keyword/hybrid search, and the dense side of a flat
    index) returns exactly what a full sort returns, in order: ties go to the earliest rows; fewer
    candidates than k; many zeros; heavy ties (few distinct scores); a threshold sample that misses the
    best scores; negative scores (inner products) with no floor and masked rows at -inf."""
    from knowledge_banks.backends.faiss.topk import best_rows

    rng = np.random.default_rng(seed)
    n = int(rng.choice([0, 1, 5, 40, 300, 5000]))
    kind = seed % 5
    if kind == 0:  # continuous scores, some zeros
        scores = rng.random(n).astype(np.float32) * (rng.random(n) > 0.3)
    elif kind == 1:  # heavy ties: a handful of distinct values
        scores = rng.integers(0, 4, n).astype(np.float32)
    elif kind == 2:  # few positives (sparse query terms)
        scores = np.zeros(n, np.float32)
        scores[rng.choice(n, min(n, 7), replace=False)] = rng.random(min(n, 7)).astype(np.float32) + 0.5
    elif kind == 3:  # the best scores avoid the strided sample (positions not multiples of 16)
        scores = np.full(n, 0.25, np.float32)
        scores[np.arange(n) % 16 != 0] = 0.5
        scores[np.arange(n) % 16 == 3] = 2.0
    else:  # cosine-like scores in [-1, 1], most rows masked out (-inf), as a filtered dense search has
        scores = (rng.random(n) * 2 - 1).astype(np.float32)
        scores[rng.random(n) > 0.2] = -np.inf
    for floor in (0.0, -np.inf):
        for k in (0, 1, 3, 10, 100, n + 5):
            got = best_rows(scores, k, floor=floor).tolist()
            assert got == _reference_best(scores, k, floor), (n, kind, k, floor)


@pytest.mark.parametrize("distance", ["cosine", "ip"])
def test_flat_scores_path_answers_as_faiss_searches(distance):
    """Hybrid search's dense side on a flat index: every score at once (flat_scores), then
    topk.best_rows, answers as FAISS's own search does: the same ranking and scores, with a key mask,
    after deletes and re-adds; duplicate vectors (ties everywhere) in storage order."""
    from knowledge_banks.backends.faiss.vector_index import VectorIndex

    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 24)).astype(np.float32)
    x[350:] = x[:350]  # every vector twice: ties everywhere
    vi = VectorIndex(24, distance, "flat")
    vi.add(np.arange(700) * 3 + 5, x)  # keys not equal to storage rows
    vi.remove(np.array([5, 8, 11 + 3 * 350]))
    vi.add(np.array([5000, 5001]), x[:2])  # re-added vectors: later rows, ties with their copies
    mask = rng.random(6000) > 0.5
    for qv in rng.standard_normal((20, 24)).astype(np.float32):
        q = vi.prepare_query(qv.tolist())
        every = vi.flat_scores(q)
        assert every is not None and len(every) == vi.ntotal
        for n, key_mask in ((1, None), (10, None), (150, None), (10, mask), (900, mask)):
            ours_s, ours_k = vi.best(every, n, key_mask)
            faiss_s, faiss_k = vi._search_cpu(q, min(n, vi.ntotal), key_mask)
            # the same ranking up to float rounding: two summation orders may split a tie differently,
            # so keys are compared where their scores are apart, and every score is the key's own
            np.testing.assert_allclose(ours_s, faiss_s[:n], rtol=0, atol=1e-5)
            np.testing.assert_allclose(vi.scores_for(q, ours_k, prepared=True), ours_s, rtol=0, atol=1e-5)
            clear = ours_s[-1] + 1e-5
            assert set(ours_k[ours_s > clear].tolist()) == set(faiss_k[:n][faiss_s[:n] > clear].tolist())
            assert key_mask is None or mask[ours_k].all()
            tied = np.flatnonzero(np.diff(ours_s) == 0)  # exactly equal scores: the earlier vector first
            assert all(vi._flat_storage()[1][ours_k[i]] < vi._flat_storage()[1][ours_k[i + 1]] for i in tied)
        picked = np.array([5000, 17, 5 + 3 * 699])
        np.testing.assert_allclose(vi.scores_at(every, picked), vi.scores_for(q, picked, prepared=True), atol=1e-6)
    assert VectorIndex(24, "l2", "flat").flat_scores(np.zeros((1, 24), np.float32)) is None  # l2: FAISS searches
