"""Int64-keyed vectors in a FAISS index (flat, HNSW or IVF), with deletes on every index type.

- ``flat``: ``IndexIDMap2(IndexFlat{IP,L2})``: exact; deletes are real (``remove_ids``). A hybrid
  search scores every vector at once from FAISS's own storage (``flat_scores``, up to 16 MB of
  vectors) and picks its candidates with ``topk.py``.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``: HNSW cannot remove vectors, so deleted keys become
  tombstones skipped at search time (over-fetching to compensate) and the graph is rebuilt from the
  live vectors once tombstones exceed a quarter of it, and before every write.
  ``index_params``: ``M`` (32), ``ef_construction`` (80), ``ef_search`` (64).
- ``ivf``: ``IndexIDMap2(IndexIVFFlat)``: stays exact (flat) until ``train_size`` vectors are present
  (default ``39 * nlist``), then trains its coarse quantizer on them and switches; deletes are
  tombstones as for HNSW. ``index_params``: ``nlist`` (auto: ~4*sqrt(n)), ``nprobe`` (auto),
  ``train_size``.

Distances: ``cosine`` normalises vectors and uses inner product (raw score = cosine similarity);
``ip`` is the raw inner product; ``l2`` is FAISS's squared Euclidean distance (lower is better).

When ``faiss.get_num_gpus() > 0`` (faiss-gpu installed and a GPU visible), flat and IVF searches run on
a GPU copy of the index, rebuilt lazily after writes; the CPU index stays the source of truth
(and is what gets written to disk).
"""

from __future__ import annotations

import math
import struct
from typing import Any, Optional

from .topk import best_rows

DISTANCES = ("cosine", "l2", "ip")
INDEX_TYPES = ("flat", "hnsw", "ivf")

__all__ = ["DISTANCES", "INDEX_TYPES", "VectorIndex", "import_faiss"]


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("FaissVectorStore needs FAISS: pip install 'langchain-mesh[faiss]' "
                          "(faiss-cpu, or faiss-gpu-cu12 on a CUDA machine)") from e
    return faiss


_GPU_COUNT: Optional[int] = None
#: flat_scores' bound: 16 MB of float32 vectors (~10k of 384 dimensions); its score array is 1/dim of that
_FLAT_SCORES_MAX_FLOATS = 1 << 22


def _gpu_count(faiss: Any) -> int:
    global _GPU_COUNT
    if _GPU_COUNT is None:
        try:
            _GPU_COUNT = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
        except Exception:  # noqa: BLE001 - a broken CUDA install means CPU, not a crash
            _GPU_COUNT = 0
    return _GPU_COUNT


class VectorIndex:
    """``VectorIndex(dim, "cosine", "hnsw")``; ``add(keys, vecs)``, ``remove(keys)``, ``search(vec, n)``."""

    def __init__(self, dim: int, distance: str = "cosine", kind: str = "flat",
                 params: Optional[dict[str, Any]] = None, _index: Any = None):
        import numpy as np

        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if kind not in INDEX_TYPES:
            raise ValueError(f"index must be one of {INDEX_TYPES}, got {kind!r}")
        self._np = np
        self._faiss = import_faiss()
        self.dim, self.distance, self.kind = int(dim), distance, kind
        self.params = dict(params or {})
        self._tombstones: set[int] = set()
        self._gpu_index: Any = None
        self._id_map: Any = None
        self._searcher: Any = None
        self._flat_view: Any = None
        self._packer: Optional[struct.Struct] = None
        self._index = _index if _index is not None else self._new_index(self._flat_or_kind(0))
        self._stored = int(self._index.ntotal)  # vectors in the FAISS index, tombstones included; see _changed
        self._apply_search_params()

    # ---- construction ----------------------------------------------------------------------------------

    @property
    def _metric(self) -> int:
        f = self._faiss
        return f.METRIC_L2 if self.distance == "l2" else f.METRIC_INNER_PRODUCT

    def _flat_or_kind(self, n: int) -> str:
        if self.kind != "ivf":
            return self.kind
        return "ivf" if n >= self._train_size(n) else "flat"

    def _nlist(self, n: int) -> int:
        nlist = self.params.get("nlist")
        return int(nlist) if nlist else max(1, int(4 * math.sqrt(max(n, 1))))

    def _train_size(self, n: int) -> int:
        return int(self.params.get("train_size") or 39 * self._nlist(n))

    def _new_index(self, kind: str, train: Any = None) -> Any:
        f, d = self._faiss, self.dim
        if kind == "flat":
            inner = f.IndexFlatL2(d) if self.distance == "l2" else f.IndexFlatIP(d)
        elif kind == "hnsw":
            inner = f.IndexHNSWFlat(d, int(self.params.get("M", 32)), self._metric)
            inner.hnsw.efConstruction = int(self.params.get("ef_construction", 80))
        else:
            nlist = min(self._nlist(len(train)), len(train))
            quantizer = f.IndexFlatL2(d) if self.distance == "l2" else f.IndexFlatIP(d)
            inner = f.IndexIVFFlat(quantizer, d, nlist, self._metric)
            inner.train(train)
            inner.make_direct_map()  # reconstruct() for MMR, hybrid scoring and rebuilds
        return f.IndexIDMap2(inner)  # faiss's Python layer keeps `inner` (and the quantizer) alive

    def _inner(self) -> Any:
        return self._faiss.downcast_index(self._index.index)

    @property
    def active_kind(self) -> str:
        """What is really serving searches now ("flat" for an IVF index that is not trained yet)."""
        inner = self._inner()
        if isinstance(inner, self._faiss.IndexHNSW):
            return "hnsw"
        if isinstance(inner, self._faiss.IndexIVF):
            return "ivf"
        return "flat"

    def _apply_search_params(self) -> None:
        inner = self._inner()
        if isinstance(inner, self._faiss.IndexHNSW):
            inner.hnsw.efSearch = int(self.params.get("ef_search", 64))
        elif isinstance(inner, self._faiss.IndexIVF):
            inner.nprobe = int(self.params.get("nprobe") or max(1, min(inner.nlist, inner.nlist // 8 + 1)))

    # ---- state -----------------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones excluded)."""
        return self._stored - len(self._tombstones)

    def prepare(self, vectors: Any, copy: bool = True) -> Any:
        """float32, C-contiguous, (n, dim); unit-normalised for cosine (zero vectors stay zero).

        ``copy=False``: the caller hands over a float32 array it owns, normalised in place.
        """
        np = self._np
        x = self._query_row(vectors) if type(vectors) is list else None
        if x is None:  # a copy unless handed over: normalised in place below
            x = np.array(vectors, dtype=np.float32, order="C", ndmin=2, copy=True if copy else None)
        if x.ndim != 2 or x.shape[1] != self.dim:
            x = np.ascontiguousarray(x.reshape(-1, self.dim))
        if x.shape[0] == 1:  # a query: scalar arithmetic is cheaper than array reductions for one row
            # faiss's float32 sum of squares: one C call (~0.2 µs; ``v @ v`` goes through numpy's
            # dispatch, ~0.9 µs); NaN/inf, or float32 overflow of a huge finite vector, gives a non-finite sum
            sq = self._faiss.fvec_norm_L2sqr(self._faiss.swig_ptr(x), self.dim)
            if not math.isfinite(sq):
                v = x[0]
                if not np.isfinite(v).all():
                    raise ValueError("embeddings contain NaN or infinite values")
                sq = float(v.astype(np.float64) @ v.astype(np.float64))
            if self.distance == "cosine" and sq > 0:
                np.divide(x, math.sqrt(sq), out=x)  # the Python float is taken as float32 (NEP 50)
            return x
        # a sum of squares in float64 is finite exactly when every value is (float32's largest square,
        # ~1.2e77, cannot overflow float64): one reduction instead of isfinite over every value
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        if not np.isfinite(sq).all():
            raise ValueError("embeddings contain NaN or infinite values")
        if self.distance == "cosine":
            norms = np.sqrt(sq)
            x /= np.where(norms > 0, norms, 1.0).astype(np.float32)[:, None]
        return x

    def _query_row(self, vector: list) -> Any:
        """A (1, dim) float32 array from one embedding as a list of ``dim`` numbers, or None.

        Why: ``np.array(list, float32)`` inspects each of the 384+ Python floats (~8 µs, the largest
        cost of a search after FAISS itself); ``struct`` packs them straight into the array's buffer
        (~3 µs), rounding to float32 the same way. Anything it refuses (not numbers, a value beyond
        float32's range) returns None, and the caller's ``np.array`` then says what is wrong."""
        if len(vector) != self.dim:
            return None
        packer = self._packer
        if packer is None:
            packer = self._packer = struct.Struct(f"{self.dim}f")
        x = self._np.empty((1, self.dim), self._np.float32)
        try:
            packer.pack_into(x, 0, *vector)
        except (struct.error, TypeError, OverflowError):
            return None
        return x

    def _changed(self) -> None:
        # every write to self._index ends here: the count is cached because a SWIG attribute read
        # costs ~0.5 µs on each search
        self._stored = int(self._index.ntotal)
        self._gpu_index = None
        self._id_map = None
        self._searcher = None  # the inner index, cached for the search hot path
        self._flat_view = None

    # ---- writes ----------------------------------------------------------------------------------------

    def add(self, keys: Any, vectors: Any, owned: bool = False) -> None:
        """Add vectors under int64 keys; ``owned=True``: ``vectors`` is a float32 array we may modify."""
        np = self._np
        keys = np.ascontiguousarray(np.asarray(keys, dtype=np.int64))
        x = self.prepare(vectors, copy=not owned)
        if len(keys) != len(x):
            raise ValueError(f"{len(keys)} keys for {len(x)} vectors")
        if len(keys) == 0:
            return
        self._index.add_with_ids(x, keys)
        self._changed()
        if self.kind == "ivf" and self.active_kind == "flat" and self.ntotal >= self._train_size(self.ntotal):
            self.rebuild()

    def remove(self, keys: Any) -> None:
        np = self._np
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return
        if self.active_kind == "flat":
            self._index.remove_ids(keys)
        else:
            self._tombstones.update(int(k) for k in keys)
            if len(self._tombstones) > max(64, int(self._index.ntotal) // 4):
                self.rebuild()
        self._changed()

    def live_keys(self) -> Any:
        np = self._np
        ids = self._faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if self._tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self._tombstones, np.int64, len(self._tombstones)))]
        return ids

    def rebuild(self) -> None:
        """Rebuild from the live vectors: drops tombstones, trains IVF when it has enough data."""
        keys = self.live_keys()
        x = self.reconstruct(keys) if len(keys) else self._np.zeros((0, self.dim), self._np.float32)
        kind = self._flat_or_kind(len(keys))
        index = self._new_index(kind, train=x if kind == "ivf" else None)
        if len(keys):
            index.add_with_ids(x, keys)
        self._index = index
        self._tombstones.clear()
        self._apply_search_params()
        self._changed()

    # ---- reads -----------------------------------------------------------------------------------------

    def reconstruct(self, keys: Any) -> Any:
        np = self._np
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32).reshape(len(keys), self.dim)

    def _search_index(self) -> Any:
        if self.active_kind == "hnsw" or _gpu_count(self._faiss) == 0:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = self._faiss.index_cpu_to_all_gpus(self._index)
        return self._gpu_index

    def search(self, vector: Any, n: int, key_mask: Any = None) -> tuple[list[float], list[int]]:
        """Best ``n`` live (raw scores, keys), best first (see the module doc for raw scores)."""
        scores, keys = self.search_arrays(vector, n, key_mask)
        return scores.tolist(), keys.tolist()

    def prepare_query(self, vector: Any) -> Any:
        """The (1, dim) query array that ``search_arrays`` and ``scores_for`` use (``prepared=True``):
        a search that calls both prepares its query once."""
        q = self.prepare(vector)
        return q if len(q) == 1 else q[:1]

    def search_arrays(self, vector: Any, n: int, key_mask: Any = None, prepared: bool = False) -> tuple[Any, Any]:
        """``search`` as numpy arrays (float32 scores, int64 keys), best first.

        ``key_mask``: a boolean array indexed by key (``mask[key]``: may this key be returned?); the
        search itself skips the others (a FAISS ``IDSelector``), so a filter costs no widening.
        ``prepared``: ``vector`` comes from ``prepare_query``.
        """
        np = self._np
        total = self._stored
        if n <= 0 or total == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        q = vector if prepared else self.prepare_query(vector)
        tombstones = self._tombstones
        fetch = min(total, n + len(tombstones))
        if key_mask is not None or _GPU_COUNT == 0 or _gpu_count(self._faiss) == 0 or self.active_kind == "hnsw":
            dists, ids = self._search_cpu(q, fetch, key_mask)  # padding (-1) already dropped
        else:
            dists, ids = self._search_index().search(q, fetch)
            dists, ids = dists[0], ids[0]
            if len(ids) and ids[-1] < 0:  # fewer than `fetch` results: FAISS pads with -1
                keep = ids >= 0
                dists, ids = dists[keep], ids[keep]
        if tombstones:
            keep = ~np.isin(ids, np.fromiter(tombstones, np.int64, len(tombstones)))
            dists, ids = dists[keep], ids[keep]
        return (dists[:n], ids[:n]) if len(ids) > n else (dists, ids)

    def _inner_cached(self) -> tuple[Any, Any]:
        if self._searcher is None or self._id_map is None:
            self._searcher = self._faiss.downcast_index(self._index.index)
            self._id_map = self._faiss.vector_to_array(self._index.id_map)
        return self._searcher, self._id_map

    def flat_scores(self, q: Any) -> Any:
        """Every stored vector's raw score against ``q`` (a ``prepare_query`` array), by storage row, or
        None where there is no flat storage to read (HNSW, trained IVF, L2, a GPU, tombstones) or more
        than ``_FLAT_SCORES_MAX_FLOATS`` of it.

        Why: a hybrid search needs the best ``fetch_k`` (100) dense candidates and the exact score of
        each keyword-only candidate. FAISS's search keeps a 100-deep heap as it scans, then each other
        score is a gather and a product of its own; scoring every vector with FAISS's SIMD kernel in one
        pass (``fvec_inner_products_ny``, one thread, the same arithmetic as its flat scan) and picking
        the best with ``topk.best_rows`` makes the others lookups. A plain search keeps FAISS's scan
        (k is small there: its heap is cheap). One thread on purpose: numpy's BLAS product was 2x
        faster on an idle machine but its spinning worker threads made a loaded one's p95 4.2 ms
        against 0.25 ms (bench/kb_throughput.py beside two busy processes). Beyond the bound the
        score array is as large as the scan is slow."""
        if (self.distance == "l2" or self._tombstones or self._stored * self.dim > _FLAT_SCORES_MAX_FLOATS
                or _gpu_count(self._faiss)):
            return None
        storage = self._flat_storage()
        if storage is None:
            return None
        xb, f = storage[0], self._faiss
        out = self._np.empty(len(xb), self._np.float32)
        f.fvec_inner_products_ny(f.swig_ptr(out), f.swig_ptr(q), f.swig_ptr(xb), self.dim, len(xb))
        return out

    def best(self, every: Any, n: int, key_mask: Any = None) -> tuple[Any, Any]:
        """``search_arrays``'s answer from ``flat_scores``: the best ``n`` (scores, keys) allowed by
        ``key_mask``, best first, ties to the earlier vector."""
        np = self._np
        _, id_map = self._inner_cached()
        if key_mask is not None:
            every = np.where(self._allowed_rows(key_mask), every, -np.inf)
        rows = best_rows(every, n)
        return every[rows], id_map[rows]

    def scores_at(self, every: Any, keys: Any) -> Any:
        """The ``flat_scores`` entries of ``keys`` (stored keys)."""
        storage = self._flat_storage()
        assert storage is not None
        return every[self._rows_of(storage[1], keys)]

    def _allowed_rows(self, key_mask: Any) -> Any:
        """A boolean per storage row: may its key be returned (``key_mask[key]``; keys beyond it: no)."""
        np = self._np
        _, id_map = self._inner_cached()
        allowed = np.zeros(len(id_map), dtype=bool)
        in_range = id_map < len(key_mask)
        allowed[in_range] = key_mask[id_map[in_range]]
        return allowed

    def _search_cpu(self, q: Any, fetch: int, key_mask: Any = None) -> tuple[Any, Any]:
        # IndexIDMap2.search translates positions to ids in an OpenMP loop whose thread start-up costs
        # milliseconds per query on a busy machine (measured: 11.9 ms vs 0.13 ms for the bare index);
        # searching the inner index and translating with numpy gives the same answer in microseconds.
        np = self._np
        inner, id_map = self._inner_cached()
        if key_mask is None:
            # the SWIG method itself, outputs allocated here: faiss's Python wrapper adds argument
            # checks and conversions we have already done in prepare()
            f = self._faiss
            dists, pos = np.empty((1, fetch), np.float32), np.empty((1, fetch), np.int64)
            inner.search_c(1, f.swig_ptr(q), fetch, f.swig_ptr(dists), f.swig_ptr(pos))
        else:
            # the inner index numbers vectors by position: a bitmap over positions, from the key mask
            allowed = self._allowed_rows(key_mask)
            bits = np.packbits(allowed, bitorder="little")
            sel = self._faiss.IDSelectorBitmap(len(allowed), self._faiss.swig_ptr(bits))
            params = self._search_params(sel)
            dists, pos = inner.search(q, min(fetch, max(1, int(allowed.sum()))), params=params)
            del bits  # the selector read it during the search
        pos, dists = pos[0], dists[0]
        if len(pos) and pos[-1] < 0:  # fewer than `fetch` results: FAISS pads with -1 (sorted last)
            keep = pos >= 0
            pos, dists = pos[keep], dists[keep]
        return dists, id_map[pos]

    def _search_params(self, sel: Any) -> Any:
        f, inner = self._faiss, self._searcher
        if isinstance(inner, f.IndexHNSW):
            return f.SearchParametersHNSW(sel=sel, efSearch=inner.hnsw.efSearch)
        if isinstance(inner, f.IndexIVF):
            return f.SearchParametersIVF(sel=sel, nprobe=inner.nprobe)
        return f.SearchParameters(sel=sel)

    def scores_for(self, vector: Any, keys: Any, prepared: bool = False) -> Any:
        """Exact raw scores (float array) of the query against specific stored vectors (``prepared``:
        ``vector`` comes from ``prepare_query``)."""
        np = self._np
        if len(keys) == 0:
            return np.zeros(0, np.float32)
        q = vector[0] if prepared else self.prepare(vector)[0]
        x = self._flat_rows(keys)
        if x is None:
            x = self.reconstruct(keys)
        if self.distance == "l2":
            return ((x - q) ** 2).sum(axis=1)
        return x @ q

    def _flat_rows(self, keys: Any) -> Any:
        """The stored vectors of ``keys`` read straight from a flat index's storage: no reconstruct_batch."""
        storage = self._flat_storage()
        if storage is None:
            return None
        xb, pos = storage
        return xb.take(self._rows_of(pos, keys), axis=0)  # the same rows as xb[rows], ~1 µs faster for 100

    def _flat_storage(self) -> Any:
        """(a zero-copy (n, dim) view of a flat index's vectors, a key -> row array), cached until the
        next write; None for other index types."""
        np = self._np
        if self._flat_view is None:
            inner, id_map = self._inner_cached()
            if not isinstance(inner, self._faiss.IndexFlat):
                return None
            n, d = int(inner.ntotal), int(inner.d)
            xb = self._faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)
            pos = np.full(int(id_map.max()) + 1 if len(id_map) else 0, -1, np.int64)
            pos[id_map] = np.arange(len(id_map))
            self._flat_view = (xb, pos)
        return self._flat_view

    def _rows_of(self, pos: Any, keys: Any) -> Any:
        keys = self._np.asarray(keys, dtype=self._np.int64)
        if not len(keys):
            return keys
        if keys.max() >= len(pos) or keys.min() < 0 or (rows := pos[keys]).min() < 0:
            raise KeyError("scores_for / scores_at: a key that is not in the index")
        return rows

    # ---- disk ------------------------------------------------------------------------------------------

    def write(self, path: str) -> None:
        if self._tombstones:
            self.rebuild()
        self._faiss.write_index(self._index, path)

    def serialize(self) -> Any:
        """The index file's bytes (a uint8 array; what ``write`` would write)."""
        if self._tombstones:
            self.rebuild()
        return self._faiss.serialize_index(self._index)

    @classmethod
    def read(cls, path: str, dim: int, distance: str, kind: str, params: Optional[dict[str, Any]],
             data: Optional[bytes] = None) -> "VectorIndex":
        """Open the index file at ``path`` (or its bytes ``data``, already read and checked)."""
        faiss = import_faiss()
        try:
            if data is not None:
                import numpy as np

                index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
            else:
                index = faiss.read_index(path)
        except RuntimeError as e:  # faiss's C++ exceptions: a truncated or foreign file
            from .persistence import StoreFormatError

            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreFormatError(f"{path}: not a readable FAISS index ({first}); restore the bank from a "
                                   "previous version (`mesh kb rollback`) or ingest it again") from None
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path}: expected a FAISS IndexIDMap2, found {type(index).__name__}")
        if index.d != dim:
            raise ValueError(f"{path}: index has {index.d} dimensions, the manifest says {dim}")
        return cls(dim, distance, kind, params, _index=index)
