"""``FaissVectorStore``: a LangChain VectorStore on FAISS with BM25 hybrid search and safe persistence.

    store = FaissVectorStore(embedding=emb)                       # in memory; cosine, flat index
    store = FaissVectorStore(embedding=emb, distance="l2", index="hnsw", index_params={"M": 32})
    store.add_documents(docs, ids=[...])                          # re-adding an id replaces it
    store.similarity_search("q", k=4, filter={"year": {"$gte": 2020}})
    store.hybrid_search("q", k=4, fusion="weighted" (default) | "rrf", alpha=0.5)
    store.save("banks/docs"); FaissVectorStore.load("banks/docs", embedding=emb)

Scores. ``similarity_search_with_score`` returns the engine's raw score: cosine similarity for
``distance="cosine"`` (higher is better), the inner product for ``"ip"``, the squared Euclidean
distance for ``"l2"`` (lower is better). ``similarity_search_with_relevance_scores`` maps them to a
relevance in [0, 1], higher is better: cosine -> ``(1 + cos) / 2``; ip -> ``(1 + ip) / 2`` clipped to
[0, 1] (exact for unit-norm embeddings); l2 -> ``1 / (1 + d²)``.

Filters: dicts as in :mod:`knowledge_banks.filters` (or a ``metadata -> bool`` callable), applied to
``fetch_k`` over-fetched candidates, widening the search until ``k`` matches are found or the index is
exhausted, so a filtered search returns the true best ``k`` matching documents.

Keyword and hybrid search use an incremental BM25 index (:mod:`knowledge_banks.lexical`) built on first
use from the stored texts and kept in step with every add and delete after that.

Persistence (:mod:`knowledge_banks.persistence`): FAISS's own index file, a JSON-lines docstore and a
versioned ``manifest.json``; no pickle; atomic. For a versioned writer: ``load`` the current version,
change it in memory, ``save(new_version_dir)``; ``copy_to(dir)`` hard-links an unchanged store.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from . import persistence
from ..._documents import document_maker, make_document
from ...filters import FilterSpec, compile_filter
from ...fusion import FUSION_METHODS
from ...store_base import BankStoreMixin
from .topk import best_rows, top_unordered
from .vector_index import DISTANCES, INDEX_TYPES, VectorIndex

__all__ = ["FaissVectorStore"]

_SCALARS = (str, int, float, bool, type(None))


_SCALAR_TYPES = frozenset(_SCALARS)


def _copy_metadata(md: dict[str, Any]) -> dict[str, Any]:
    if _SCALAR_TYPES.issuperset(map(type, md.values())):  # exact types: a C-level test, no generator
        return dict(md)
    return copy.deepcopy(md)


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _json_metadata(md: Any, i: int) -> tuple[dict[str, Any], bool]:
    """(a JSON-safe copy of ``md``, whether its values are all scalars: a shallow copy is then a full one)."""
    if md is None:
        return {}, True
    if not isinstance(md, dict):
        raise TypeError(f"metadata #{i} must be a dict, not {type(md).__name__}")
    # fast path (most metadata): string keys and plain scalars are already what the JSON round trip
    # below would give back, so a shallow copy decouples us from the caller's dict just as well
    # (set tests over map(type, ...) run in C: ~1 µs a document instead of ~10 for the round trip)
    types = set(map(type, md.values()))
    if _STR.issuperset(map(type, md)) and _JSON_SCALARS.issuperset(types) and (
            float not in types or all(math.isfinite(v) for v in md.values() if type(v) is float)):
        return dict(md), True
    try:  # a JSON round trip validates (the docstore is JSON) and decouples from the caller's objects
        out = json.loads(json.dumps(md, allow_nan=False))
        return out, _SCALAR_TYPES.issuperset(map(type, out.values()))
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata #{i} is not JSON-serialisable ({e}); store strings, numbers, booleans, "
                        f"None, lists and dicts") from None


def _as_matrix(embeddings: Any, n: int) -> Any:
    """(n, dim) float32 from what an ``Embeddings`` returns: a list of float lists is read with one
    ``np.fromiter`` over the chained rows (~15% faster than ``np.asarray``, which probes the nesting)."""
    import itertools

    import numpy as np

    if isinstance(embeddings, list) and embeddings and isinstance(embeddings[0], list):
        dim = len(embeddings[0])
        if dim and all(len(row) == dim for row in embeddings):
            try:
                flat = np.fromiter(itertools.chain.from_iterable(embeddings), np.float32, n * dim)
                return flat.reshape(n, dim)
            except (TypeError, ValueError):
                pass  # not plain numbers: np.asarray below says what is wrong
    return np.array(embeddings, dtype=np.float32)  # a copy: add() normalises it in place


def _minmax(x: Any) -> Any:
    """Scale to [0, 1]; all-equal scores map to 1.0 (as ``knowledge_banks.fusion.min_max_normalize``)."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return x * 0.0 + 1.0
    return (x - lo) / (hi - lo)


class FaissVectorStore(BankStoreMixin, VectorStore):
    """LangChain vector store on FAISS (flat / HNSW / IVF) with BM25 hybrid search; see the module doc."""

    def __init__(self, embedding: Embeddings, path: Optional[str] = None, distance: Optional[str] = None,
                 index: Optional[str] = None, index_params: Optional[dict[str, Any]] = None,
                 bm25_params: Optional[dict[str, Any]] = None, verify: bool = True, **kwargs: Any):
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        self.embedding = embedding
        self.path: Optional[Path] = Path(path) if path is not None else None
        self._lock = threading.RLock()
        # one record tuple (key, id, text, metadata) per document, reachable by id and by FAISS key: a
        # search result reads it through the key alone (one lookup, fewer cache lines than key -> id -> record)
        self._records: dict[str, tuple[int, str, str, dict[str, Any]]] = {}
        self._by_key: dict[int, tuple[int, str, str, dict[str, Any]]] = {}
        self._vi: Optional[VectorIndex] = None
        self._dim: Optional[int] = None
        self._next_key = 0
        self._bm25: Any = None
        self._bm25_bytes: Optional[bytes] = None  # a loaded version's BM25 file, parsed on first use
        self._generation = 0  # bumped by every write: filter masks are cached per generation
        self._masks: dict[str, Any] = {}
        # keys whose metadata holds lists or dicts (a result copies those deeply, the rest with dict.copy);
        # kept in step with writes; None after a load until the first search computes it
        self._nested: Optional[set[int]] = set()
        self._dirty = False
        if self.path is not None and persistence.is_store(self.path):
            self._open(self.path, distance, index, index_params, bm25_params, verify)
        else:
            self.distance = distance or "cosine"
            self.index_type = index or "flat"
            self.index_params = dict(index_params or {})
            self.bm25_params = dict(bm25_params or {})
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index must be one of {INDEX_TYPES}, got {self.index_type!r}")

    # ---- basics ----------------------------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return (f"FaissVectorStore(documents={len(self)}, distance={self.distance!r}, index={self.index_type!r}, "
                f"path={str(self.path) if self.path else None!r})")

    @property
    def dimensions(self) -> Optional[int]:
        return self._dim

    def _index_for(self, dim: int) -> VectorIndex:
        if self._vi is None:
            self._vi = VectorIndex(dim, self.distance, self.index_type, self.index_params)
            self._dim = dim
        elif dim != self._dim:
            raise ValueError(f"embedding has {dim} dimensions but this store holds {self._dim}-dimensional vectors "
                             f"(was it built with another embedding model?)")
        return self._vi

    def _doc(self, doc_id: str) -> Document:
        _, _, text, md = self._records[doc_id]
        return make_document(text, _copy_metadata(md), doc_id)

    def _changed(self) -> None:
        self._dirty = True
        self._generation += 1
        self._masks.clear()

    # ---- writes ----------------------------------------------------------------------------------------

    def add_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                  ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = self.embedding.embed_documents(texts) if texts else []
        return self.add_embeddings(texts, vectors, metadatas, ids=ids)

    async def aadd_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                         ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = await self.embedding.aembed_documents(texts) if texts else []
        return self.add_embeddings(texts, vectors, metadatas, ids=ids)

    def add_embeddings(self, texts: Sequence[str], embeddings: Any, metadatas: Optional[Sequence[Optional[dict]]] = None,
                       *, ids: Optional[Sequence[Optional[str]]] = None) -> list[str]:
        """Add precomputed embeddings (one row per text); ids default to new UUIDs; returns the ids."""
        import numpy as np

        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} texts")
        out_ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * n)]
        if n == 0:
            return []
        mds, flat = zip(*[_json_metadata(metadatas[i] if metadatas else None, i) for i in range(n)])
        x = _as_matrix(embeddings, n)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"expected {n} embeddings, got an array of shape {x.shape}")
        last = {doc_id: i for i, doc_id in enumerate(out_ids)}  # an id repeated in one batch: last wins
        keep = sorted(last.values())
        with self._lock:
            vi = self._index_for(int(x.shape[1]))
            self._remove([doc_id for doc_id in last if doc_id in self._records])
            keys = np.arange(self._next_key, self._next_key + len(keep), dtype=np.int64)
            vi.add(keys, x if len(keep) == n else x[keep], owned=True)  # x is our own array
            self._next_key += len(keep)
            bm25 = self._loaded_bm25()
            nested = self._nested
            for key, i in zip(keys.tolist(), keep):
                self._records[out_ids[i]] = self._by_key[key] = (key, out_ids[i], str(texts[i]), mds[i])
                if bm25 is not None:
                    bm25.add(key, str(texts[i]))
                if nested is not None and not flat[i]:
                    nested.add(key)
            self._changed()
        return out_ids

    def _remove(self, doc_ids: Sequence[str]) -> int:
        present = [d for d in doc_ids if d in self._records]
        if not present:
            return 0
        keys = [self._records[d][0] for d in present]
        assert self._vi is not None
        self._vi.remove(keys)
        bm25 = self._loaded_bm25()
        for d, key in zip(present, keys):
            del self._records[d]
            del self._by_key[key]
            if self._nested is not None:
                self._nested.discard(key)
            if bm25 is not None:
                bm25.remove(key)
        self._changed()
        return len(present)

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete by id (missing ids are ignored); ``ids=None`` deletes everything. Returns True."""
        with self._lock:
            if ids is None:
                self.clear()
            else:
                self._remove(list(dict.fromkeys(str(i) for i in ids)))
        return True

    async def adelete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        return self.delete(ids, **kwargs)

    def clear(self) -> None:
        """Remove every document (the dimensions and settings are kept)."""
        with self._lock:
            self._records.clear()
            self._by_key.clear()
            self._nested = set()
            if self._vi is not None:
                self._vi = VectorIndex(self._vi.dim, self.distance, self.index_type, self.index_params)
            self._bm25, self._bm25_bytes = None, None
            self._changed()

    def document_ids(self) -> list[str]:
        """Every stored document's id (what a writer's ``sync_documents(cleanup="full")`` compares)."""
        with self._lock:
            return list(self._records)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        with self._lock:
            return [self._doc(i) for i in ids if i in self._records]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return self.get_by_ids(ids)

    # ---- dense search ----------------------------------------------------------------------------------

    def _filter(self, filter: FilterSpec) -> tuple[Optional[Callable], Any]:
        """(predicate, key mask) for a filter: a dict filter becomes a boolean mask over FAISS keys, built
        once per store generation and cached, that the search applies itself (no widening); a callable
        cannot be cached, so it stays a predicate applied to over-fetched candidates."""
        pred = compile_filter(filter)
        if pred is None or not isinstance(filter, dict):
            return pred, None
        try:
            cache_key = json.dumps(filter, sort_keys=True)
        except (TypeError, ValueError):
            return pred, None
        with self._lock:
            mask = self._masks.get(cache_key)
            if mask is None:
                import numpy as np

                mask = np.zeros(max(self._next_key, 1), dtype=bool)
                hits = [key for key, _, _, md in self._records.values() if pred(md)]
                mask[np.asarray(hits, dtype=np.int64)] = True
                if len(self._masks) >= 16:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[cache_key] = mask
            return pred, mask

    def _dense_arrays(self, vector: Any, k: int, pred: Optional[Callable], mask: Any,
                      fetch_k: int, prepared: bool = False) -> tuple[Any, Any]:
        """Best ``k`` (raw scores, keys) as arrays, matching the filter, best first (``prepared``: the
        vector comes from ``VectorIndex.prepare_query``)."""
        import numpy as np

        vi = self._vi
        if vi is not None and (pred is None or mask is not None):
            return vi.search_arrays(vector, k, mask, prepared)  # (empty arrays for k <= 0 or an empty index)
        if vi is None or vi.ntotal == 0 or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        n = min(vi.ntotal, max(fetch_k, k))
        while True:
            scores, keys = vi.search_arrays(vector, n, prepared=prepared)
            by_key = self._by_key
            ok = np.fromiter((pred(by_key[key][3]) for key in keys.tolist()), bool, len(keys))
            if int(ok.sum()) >= k or n >= vi.ntotal:
                return scores[ok][:k], keys[ok][:k]
            n = min(vi.ntotal, n * 4)

    def _dense(self, vector: Any, k: int, pred: Optional[Callable], fetch_k: int,
               mask: Any = None) -> list[tuple[str, float]]:
        """Best ``k`` (id, raw score) matching ``pred``, best first."""
        with self._lock:
            scores, keys = self._dense_arrays(vector, k, pred, mask, fetch_k)
            by_key = self._by_key
            return [(by_key[key][1], s) for s, key in zip(scores.tolist(), keys.tolist())]

    def _results(self, keys: list[int], scores: Optional[list[float]] = None) -> list[Any]:
        """A fresh Document per FAISS key, paired with its score when ``scores`` are given; the caller
        holds the lock.

        The hot loop of every search: the Documents are copies (a caller may change their metadata
        without touching the store), built without re-validation (``document_maker``); flat metadata
        (the usual case) is copied with ``dict.copy``, nested metadata deeply."""
        make = document_maker()
        by_key = self._by_key
        nested = self._nested
        if nested is None:  # after a load: which documents have nested metadata, found once
            flat = _SCALAR_TYPES.issuperset
            nested = self._nested = {key for key, _, _, md in by_key.values() if not flat(map(type, md.values()))}
        deep = copy.deepcopy
        docs = [make(text, deep(md) if key in nested else md.copy(), doc_id)
                for key, doc_id, text, md in map(by_key.__getitem__, keys)]
        return docs if scores is None else list(zip(docs, scores))

    def _similarity(self, embedding: Any, k: int, filter: FilterSpec, fetch_k: int, with_scores: bool) -> list[Any]:
        pred, mask = self._filter(filter) if filter is not None else (None, None)
        with self._lock:
            scores, keys = self._dense_arrays(embedding, k, pred, mask, fetch_k)
            return self._results(keys.tolist(), scores.tolist() if with_scores else None)

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                               fetch_k: int = 20, **kwargs: Any) -> list[tuple[Document, float]]:
        return self._similarity(embedding, k, filter, fetch_k, True)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None, fetch_k: int = 20,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        if not self._records:
            return []
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter, fetch_k)

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                            fetch_k: int = 20, **kwargs: Any) -> list[tuple[Document, float]]:
        if not self._records:
            return []
        vector = await self.embedding.aembed_query(query)
        return self.similarity_search_with_score_by_vector(vector, k, filter, fetch_k)

    def similarity_search(self, query: str, k: int = 4, filter: FilterSpec = None, fetch_k: int = 20,
                          **kwargs: Any) -> list[Document]:
        if not self._records:
            return []
        return self._similarity(self.embedding.embed_query(query), k, filter, fetch_k, False)

    async def asimilarity_search(self, query: str, k: int = 4, filter: FilterSpec = None, fetch_k: int = 20,
                                 **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter, fetch_k)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                    fetch_k: int = 20, **kwargs: Any) -> list[Document]:
        return self._similarity(embedding, k, filter, fetch_k, False)

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                           fetch_k: int = 20, **kwargs: Any) -> list[Document]:
        return self.similarity_search_by_vector(embedding, k, filter, fetch_k)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.distance == "l2":
            return lambda d: 1.0 / (1.0 + max(float(d), 0.0))
        return lambda s: min(1.0, max(0.0, (1.0 + float(s)) / 2.0))

    # ---- MMR -------------------------------------------------------------------------------------------

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: FilterSpec = None,
                                                **kwargs: Any) -> list[Document]:
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        pred, mask = self._filter(filter)
        hits = self._dense(embedding, max(fetch_k, k), pred, fetch_k, mask)
        if not hits:
            return []
        with self._lock:
            assert self._vi is not None
            vectors = self._vi.reconstruct([self._records[i][0] for i, _ in hits])
            query = self._vi.prepare(embedding)[0]
            chosen = maximal_marginal_relevance(np.asarray(query), list(vectors), lambda_mult=lambda_mult, k=k)
            return [self._doc(hits[j][0]) for j in chosen]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        if not self._records:
            return []
        return self.max_marginal_relevance_search_by_vector(self.embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: FilterSpec = None,
                                             **kwargs: Any) -> list[Document]:
        if not self._records:
            return []
        vector = await self.embedding.aembed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5, filter: FilterSpec = None,
                                                       **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(embedding, k, fetch_k, lambda_mult, filter)

    # ---- keyword and hybrid search ---------------------------------------------------------------------

    def _new_bm25(self, records: Optional[list[tuple]] = None) -> Any:
        """An empty BM25 index with this store's settings, or one over ``records`` (built in bulk)."""
        from ...lexical import BM25Index, Tokenizer

        params = dict(self.bm25_params)
        tokenizer = Tokenizer.from_config(params.pop("tokenizer", None))
        if records is not None:
            return BM25Index.bulk([r[0] for r in records], [r[2] for r in records], tokenizer, **params)
        return BM25Index(tokenizer, **params, int_keys=True)  # keyed by FAISS key: scores index by key

    def _loaded_bm25(self) -> Any:
        """The BM25 index if it is in memory or was saved with this version (None otherwise)."""
        if self._bm25 is None and self._bm25_bytes is not None:
            from ...lexical import BM25Index

            data, self._bm25_bytes = self._bm25_bytes, None
            try:
                bm25 = BM25Index.from_bytes(data)
            except ValueError:
                return None  # unreadable: rebuilt from the texts on first use
            if (bm25.int_keys and bm25.config() == self._new_bm25().config()
                    and set(bm25._slot) == set(self._by_key)):
                self._bm25 = bm25
        return self._bm25

    def _keyword_index(self) -> Any:
        with self._lock:
            if self._loaded_bm25() is None:
                self._bm25 = self._new_bm25(list(self._records.values()))
            return self._bm25

    def _keyword_arrays(self, query: str, k: int, pred: Optional[Callable], mask: Any) -> tuple[Any, Any, Any]:
        """(every BM25 score indexed by key, the best ``k`` matching keys with score > 0, their scores)."""
        import numpy as np

        with self._lock:
            scores = self._keyword_index().score_all(query)
            if len(scores) < self._next_key:
                scores = np.concatenate([scores, np.zeros(self._next_key - len(scores), np.float32)])
            if mask is not None:
                scores[~mask[:len(scores)]] = 0.0
            if pred is not None and mask is None:  # a callable filter: tested on the scoring documents
                hits = np.flatnonzero(scores > 0)
                by_key = self._by_key
                hits = hits[np.fromiter((pred(by_key[key][3]) for key in hits.tolist()), bool, len(hits))]
                hits = top_unordered(scores, hits, k)
                hits = hits[np.lexsort((hits, -scores[hits]))]  # best first; ties by key (insertion order)
            else:
                hits = best_rows(scores, k, floor=0.0)
            return scores, hits, scores[hits]

    def _keyword(self, query: str, k: int, pred: Optional[Callable], mask: Any = None) -> list[tuple[str, float]]:
        _, keys, scores = self._keyword_arrays(query, k, pred, mask)
        return [(self._by_key[key][1], s) for key, s in zip(keys.tolist(), scores.tolist())]

    def keyword_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                  **kwargs: Any) -> list[tuple[Document, float]]:
        """BM25 search: documents sharing no term with the query are not returned."""
        if k <= 0 or not self._records:
            return []
        pred, mask = self._filter(filter)
        hits = self._keyword(query, k, pred, mask)
        with self._lock:
            return [(self._doc(i), s) for i, s in hits if i in self._records]

    def keyword_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.keyword_search_with_score(query, k, filter)]

    async def akeyword_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return self.keyword_search(query, k, filter)

    def hybrid_search_with_score_by_vector(self, query: str, embedding: list[float], k: int = 4,
                                           filter: FilterSpec = None, *, fusion: str = "weighted", alpha: float = 0.5,
                                           rank_constant: float = 60.0, fetch_k: Optional[int] = None,
                                           **kwargs: Any) -> list[tuple[Document, float]]:
        """Fuse the dense and BM25 rankings of ``fetch_k`` candidates each (default ``max(100, 4k)``).

        ``alpha`` weighs dense against keyword (1 = dense only, 0 = keyword only). ``fusion="rrf"``:
        ``2α/(c + rank_dense) + 2(1-α)/(c + rank_bm25)`` (plain RRF at α = 0.5, ``c = rank_constant``).
        ``fusion="weighted"``: ``α·minmax(dense) + (1-α)·minmax(bm25)`` over the candidate union, with the
        missing score of each candidate computed exactly (dense similarity or BM25), not taken as 0.
        Returns (document, fused score) best first.

        Defaults measured on SciFact dev (all-MiniLM-L6-v2, bench/retrieval.py): weighted α=0.5 gives
        nDCG@10 0.742 against 0.715 for plain RRF, 0.665 dense and 0.702 BM25.
        """
        if fusion not in FUSION_METHODS:
            raise ValueError(f"fusion must be one of {FUSION_METHODS}, got {fusion!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if k <= 0 or not self._records:
            return []
        fetch_k = max(int(fetch_k or max(100, 4 * k)), k)
        if rank_constant < 0:
            raise ValueError(f"rank_constant must be >= 0, got {rank_constant}")
        pred, mask = self._filter(filter)
        with self._lock:
            keys, fused = self._fuse(query, embedding, fetch_k, pred, mask, fusion, alpha, rank_constant)
            return self._results(keys[:k].tolist(), fused[:k].tolist())

    def _fuse(self, query: str, embedding: Any, fetch_k: int, pred: Optional[Callable], mask: Any, fusion: str,
              alpha: float, rank_constant: float) -> tuple[Any, Any]:
        """Candidate keys and fused scores, best first: numpy over the candidate union, no Python loop.

        Candidates: the union of the dense and BM25 top ``fetch_k``, dense ones first in rank order then
        keyword-only ones in rank order, so equal fused scores keep that order (as ``fusion.py`` does).
        """
        import numpy as np

        vi = self._vi
        prepared = vi is not None and vi.ntotal > 0
        if prepared:  # once for the dense search and the keyword-only candidates' exact dense scores
            assert vi is not None
            embedding = vi.prepare_query(embedding)
        every = vi.flat_scores(embedding) if prepared and (pred is None or mask is not None) else None
        if every is not None:  # every dense score at once: the keyword-only candidates' are lookups
            assert vi is not None
            d_scores, d_keys = vi.best(every, fetch_k, mask)
        else:
            d_scores, d_keys = self._dense_arrays(embedding, fetch_k, pred, mask, fetch_k, prepared)
        lex_all, l_keys, _ = self._keyword_arrays(query, fetch_k, pred, mask)
        in_dense = np.zeros(max(self._next_key, 1), dtype=bool)
        in_dense[d_keys] = True
        l_only = l_keys[~in_dense[l_keys]]
        keys = np.concatenate([d_keys, l_only])
        if len(keys) == 0:
            return keys, np.zeros(0, np.float64)
        if fusion == "rrf":
            c = float(rank_constant)
            fused = np.zeros(len(keys), np.float64)
            fused[:len(d_keys)] += 2 * alpha / (c + np.arange(1, len(d_keys) + 1))
            # each candidate's BM25 rank (inf = not in the BM25 list): positions via a sort, not a dict
            l_rank = np.full(len(keys), np.inf)
            order = np.argsort(keys, kind="stable")
            where = order[np.searchsorted(keys[order], l_keys)]
            l_rank[where] = np.arange(1, len(l_keys) + 1)
            fused += 2 * (1 - alpha) / (c + l_rank)
        else:
            sign = -1.0 if self.distance == "l2" else 1.0  # fusion wants higher = better
            dense = np.empty(len(keys), np.float64)
            dense[:len(d_keys)] = d_scores
            if len(l_only):  # the exact dense score of keyword-only candidates, not 0
                assert vi is not None
                dense[len(d_keys):] = (vi.scores_at(every, l_only) if every is not None
                                       else vi.scores_for(embedding, l_only, prepared))
            if sign != 1.0:
                dense *= sign
            fused = alpha * _minmax(dense) + (1 - alpha) * _minmax(lex_all[keys].astype(np.float64))
        order = np.argsort(-fused, kind="stable")
        return keys[order], fused[order]

    def hybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                 **kwargs: Any) -> list[tuple[Document, float]]:
        if not self._records:
            return []
        return self.hybrid_search_with_score_by_vector(query, self.embedding.embed_query(query), k, filter, **kwargs)

    def hybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.hybrid_search_with_score(query, k, filter, **kwargs)]

    async def ahybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                        **kwargs: Any) -> list[tuple[Document, float]]:
        if not self._records:
            return []
        vector = await self.embedding.aembed_query(query)
        return self.hybrid_search_with_score_by_vector(query, vector, k, filter, **kwargs)

    async def ahybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.ahybrid_search_with_score(query, k, filter, **kwargs)]

    # ---- persistence -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, embedding: Embeddings, verify: bool = True) -> "FaissVectorStore":
        """Open the store saved at ``path`` (refuses unknown format versions; checks file checksums)."""
        if not persistence.is_store(path):
            raise persistence.StoreFormatError(f"{path} is not a FAISS store: no manifest.json")
        return cls(embedding=embedding, path=str(path), verify=verify)

    def _open(self, path: Path, distance: Optional[str], index: Optional[str],
              index_params: Optional[dict[str, Any]], bm25_params: Optional[dict[str, Any]], verify: bool) -> None:
        m = persistence.read_manifest(path)
        for name, given, stored in (("distance", distance, m["distance"]), ("index", index, m["index"])):
            if given is not None and given != stored:
                raise ValueError(f"{path} was built with {name}={stored!r}, not {given!r}")
        self.distance, self.index_type = m["distance"], m["index"]
        self.index_params = {**m.get("index_params", {}), **(index_params or {})}
        self.bm25_params = dict(bm25_params if bm25_params is not None else m.get("bm25", {}))
        self._dim = m.get("dimensions")
        self._next_key = int(m["next_key"])
        # The index and BM25 files are checked (their checksums) in a thread while this one parses the
        # docstore (whose checksum is taken over the bytes that are then parsed). The index is only
        # hashed there, streamed, then opened there too: FAISS reads the checked file itself, as
        # read_index(path), without the GIL, while the parse holds it (SciFact: 2.5-4 ms off a 24 ms
        # load; handing FAISS bytes cost two more copies: 5.5 s of a 500k-document load). Data files are
        # never modified in place. (Hashing the docstore in that thread too, while this one parses it,
        # was measured slower on SciFact, 26.5 -> 29.8 ms: the parse holds the GIL, and the thread
        # waits for it between steps.)
        def open_index(fpath: Path) -> VectorIndex:
            if not self._dim:
                raise persistence.StoreFormatError(f"{path}: manifest has an index file but no dimensions")
            return VectorIndex.read(str(fpath), self._dim, self.distance, self.index_type, self.index_params)

        background = persistence.BackgroundRead(path, m, ("bm25",), verify, check={"index": open_index})
        try:
            docstore = persistence.data_bytes(path, m, "docstore", verify)
            rows = persistence.docstore_records(docstore, str(path / m["files"]["docstore"])) if docstore else []
        except BaseException:
            background.join()  # this error is the one reported
            raise
        data = background.result()
        if data["index"] is not None:
            self._vi = data["index"]
        if rows:
            self._records = dict(zip([r[1] for r in rows], rows))
            self._by_key = dict(zip([r[0] for r in rows], rows))
            self._nested = None  # found on the first search (a pass over every metadata dict)
        # the BM25 index saved with this version: checked now, parsed on the first keyword/hybrid search
        self._bm25_bytes = data["bm25"]
        stored_keys = set(self._vi.live_keys().tolist()) if self._vi is not None else set()
        if stored_keys != set(self._by_key) or len(self._records) != int(m["count"]):
            raise persistence.StoreFormatError(
                f"{path}: the index ({len(stored_keys)} vectors) and the docstore ({len(self._records)} documents) "
                f"do not match")

    def _manifest(self) -> dict[str, Any]:
        from langchain_mesh._version import __version__ as version

        return {"dimensions": self._dim, "distance": self.distance, "index": self.index_type,
                "index_params": self.index_params, "bm25": self.bm25_params, "count": len(self._records),
                "next_key": self._next_key, "written_by": f"langchain-mesh {version}",
                "embedding": type(self.embedding).__name__}

    def save(self, path: Optional[str | Path] = None) -> Path:
        """Write the store to ``path`` (default: the store's path) atomically; returns the path.

        A store without a path adopts the one it is first saved to.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("save() needs a path (this store was created without one)")
        with self._lock:
            records = ({"key": key, "id": doc_id, "text": text, "metadata": md}
                       for key, doc_id, text, md in self._records.values())
            vi = self._vi
            bm25 = self._bm25
            extra: dict[str, tuple[str, Any]] = {}
            if bm25 is not None:  # persisted with the version, so loading it never re-tokenises the corpus
                extra["bm25"] = ("npz", bm25.to_bytes)  # encoded by write_store, after the index
            elif self._bm25_bytes is not None:  # loaded, unchanged and not parsed yet: written back as is
                extra["bm25"] = ("npz", self._bm25_bytes)
            # FAISS writes its own file (no serialised copy in memory); write_store hashes it back
            # (its writeback started first) and fdatasyncs it before the commit.
            # The store's lock is held until write_store returns, so the index cannot change meanwhile.
            index = ("file", vi.write) if vi is not None else None
            persistence.write_store(target, self._manifest(), index, records, extra)
            if self.path is None:
                self.path = target
            if target.resolve() == self.path.resolve():
                self._dirty = False
        return target

    def copy_to(self, path: str | Path) -> Path:
        """Write a copy of the current state to ``path`` (hard links when nothing changed since the last
        save); this store keeps its own path. The way a writer stages a new version."""
        with self._lock:
            if self.path is not None and not self._dirty and persistence.is_store(self.path):
                persistence.copy_store(self.path, path)
                return Path(path)
            saved_path, saved_dirty = self.path, self._dirty
            try:
                self.path = Path(path)
                self.save(path)
            finally:
                self.path, self._dirty = saved_path, saved_dirty
            return Path(path)

    @property
    def has_unsaved_changes(self) -> bool:
        return self._dirty
