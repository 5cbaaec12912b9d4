"""Knowledge-bank scale figures: ingest, search and memory of ``FaissVectorStore`` at 5k-500k documents.

    python bench/kb_scale.py                         # 5k, 50k, 500k x flat/hnsw/ivf + hybrid at 5k/50k/100k
    python bench/kb_scale.py --sizes 5000,50000 --hybrid-sizes 5000,50000   # a quicker run

Synthetic corpus: random unit 384-dim vectors (all-MiniLM-L6-v2's size) and short texts of words
drawn from a Zipf-distributed 30,000-word vocabulary (so BM25 postings look like a real corpus's: a
few very common terms, a long tail), with a small metadata dict per document. Each configuration runs
in its own child process, so its memory figure is its own (resident set size after ingest, minus the
process before the store existed, plus the texts and ids it keeps alive, divided by the documents:
vectors, index structures, texts, metadata and ids together).

Rows:
- ingest docs/s: ``add_embeddings`` in batches of ``--batch`` precomputed vectors (the store's work:
  validation, the FAISS add, the docstore; not the embedding model). IVF trains its coarse quantizer
  once enough vectors are in (the store's defaults: ~156·sqrt(n) vectors, nlist ~4·sqrt(n)); HNSW
  builds its graph as vectors arrive (M and efConstruction below).
- search p50/p95: ``similarity_search_by_vector(k=10)`` over ``--queries`` queries from the same
  distribution, with ``--search-threads`` faiss threads (default 1): faiss scans a large flat index for
  ONE query with all its OpenMP threads, and on a busy 2-core machine that stalled (measured at 50k
  documents: 24 ms p50 with 2 threads against 3 ms with 1). ``--search-threads 0`` keeps faiss's default.
- save / load (flat rows): ``save`` of the whole store to a new folder (what every commit of a bank
  version does: the index, the docstore and the manifest, each file synced) and ``load`` of it back
  (every file's SHA-256 checked).
- hybrid p50: ``hybrid_search`` (weighted fusion of dense and BM25 top-100) with the HNSW index, after
  one warm-up search that builds the BM25 index (its build time is reported too).

HNSW at 500k: the default graph (M=32, efConstruction=80) took too long for a 2-core run, so the
500k HNSW row uses ``--hnsw-500k`` (M=16, efConstruction=40: a cheaper graph with lower recall; the
recall@10 against exact search over the same queries is printed next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 384
VOCAB = 30_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def corpus_texts(rng, n: int, words: int = 24) -> list[str]:
    import numpy as np

    vocab = [f"w{i}" for i in range(VOCAB)]
    ranks = np.minimum(rng.zipf(1.2, size=(n, words)), VOCAB) - 1
    return [" ".join(vocab[j] for j in row) for row in ranks.tolist()]


def unit(rng, n: int, centroids=None):
    """``n`` unit vectors around ``centroids`` (each a random centroid plus Gaussian noise of about its
    own length): clustered like real embeddings, unlike uniform random vectors, on which no ANN index
    has useful recall. In slices, so 500k x 384 never needs float64 temporaries."""
    import numpy as np

    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 50_000):
        m = min(50_000, n - s)
        x = rng.standard_normal((m, DIM), dtype=np.float32) * np.float32(0.9 / DIM ** 0.5)
        if centroids is not None:
            x += centroids[rng.integers(0, len(centroids), m)]
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def run_one(n: int, index: str, params: dict, queries: int, batch: int, hybrid: bool, search_threads: int,
            save: bool = False, seed: int = 0) -> dict:
    """One configuration, in this (child) process: build, measure, report a dict."""
    import numpy as np
    from langchain_core.embeddings import Embeddings

    from knowledge_banks import FaissVectorStore

    class NoModel(Embeddings):  # every vector here is given explicitly; embedding a text is a bug
        def embed_documents(self, texts):
            raise AssertionError("kb_scale passes vectors explicitly")

        def embed_query(self, text):
            raise AssertionError("kb_scale passes vectors explicitly")

    rng = np.random.default_rng(seed)
    centroids = unit(rng, 2000)
    vectors = unit(rng, n, centroids)
    texts = corpus_texts(rng, n) if hybrid else [f"doc {i}" for i in range(n)]
    ids = [f"d{i}" for i in range(n)]
    mds = [{"source": "synthetic", "row": i} for i in range(n)]
    qvecs = unit(rng, queries, centroids)
    qtexts = [" ".join(t.split()[:4]) for t in corpus_texts(rng, queries)]
    base = rss_bytes()
    store = FaissVectorStore(embedding=NoModel(), index=index, index_params=params)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        store.add_embeddings(texts[s:s + batch], vectors[s:s + batch], mds[s:s + batch], ids=ids[s:s + batch])
    t_ingest = time.perf_counter() - t0
    # the texts and ids are the caller's objects, kept alive by the store (not copied): counted here
    mem = rss_bytes() - base + sum(map(sys.getsizeof, texts)) + sum(map(sys.getsizeof, ids))
    import faiss

    if search_threads:
        faiss.omp_set_num_threads(search_threads)  # see --search-threads
    lat = []
    for q in qvecs:
        t = time.perf_counter()
        store.similarity_search_by_vector(q, k=10)
        lat.append(time.perf_counter() - t)
    lat = lat[min(10, len(lat) // 10):]  # the first few searches warm caches
    out = {"n": n, "index": index, "active": store._vi.active_kind, "params": params,
           "ingest_docs_s": n / t_ingest, "ingest_s": t_ingest, "mem_per_doc": mem / n,
           "p50_ms": float(np.percentile(lat, 50)) * 1e3, "p95_ms": float(np.percentile(lat, 95)) * 1e3}
    if save:  # a commit writes the whole version: index, docstore, manifest (synced); then reopen it
        import shutil
        import tempfile

        where = Path(tempfile.mkdtemp(prefix="kb-scale-"))
        try:
            t = time.perf_counter()
            store.save(where / "v")
            out["save_s"] = time.perf_counter() - t
            t = time.perf_counter()
            FaissVectorStore.load(where / "v", embedding=NoModel())
            out["load_s"] = time.perf_counter() - t
        finally:
            shutil.rmtree(where, ignore_errors=True)
    if index != "flat":  # recall@10 against exact search over the same vectors
        sims = None
        hits = 0
        for q in qvecs[:50]:
            got = {d.metadata["row"] for d in store.similarity_search_by_vector(q, k=10)}
            sims = vectors @ q
            hits += len(got & set(np.argpartition(-sims, 10)[:10].tolist()))
        out["recall_at_10"] = hits / (10 * min(50, len(qvecs)))
    if hybrid:
        t = time.perf_counter()
        store.hybrid_search_with_score_by_vector(qtexts[0], qvecs[0], k=10)
        out["bm25_build_s"] = time.perf_counter() - t
        hl = []
        for qt, qv in zip(qtexts, qvecs):
            t = time.perf_counter()
            store.hybrid_search_with_score_by_vector(qt, qv, k=10)
            hl.append(time.perf_counter() - t)
        out["hybrid_p50_ms"] = float(np.percentile(hl, 50)) * 1e3
        out["hybrid_p95_ms"] = float(np.percentile(hl, 95)) * 1e3
    return out


def child(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(cfg)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"over {timeout:.0f} s"}
    if p.returncode != 0:
        return {**cfg, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,50000,500000")
    ap.add_argument("--indexes", default="flat,hnsw,ivf")
    ap.add_argument("--hybrid-sizes", default="5000,50000,100000")
    ap.add_argument("--hybrid-index", default="hnsw")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10_000, help="documents per add_embeddings call")
    ap.add_argument("--hnsw-500k", default='{"M": 16, "ef_construction": 40}',
                    help="HNSW index_params for sizes >= 500k (JSON)")
    ap.add_argument("--search-threads", type=int, default=1,
                    help="faiss OpenMP threads while searching (ingest uses faiss's default, all CPUs)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        cfg = json.loads(args.child)
        print(json.dumps(run_one(**cfg)))
        return 0

    import faiss

    print(f"{DIM}-dim synthetic documents; faiss {faiss.__version__}, {os.cpu_count()} CPUs, "
          f"search with {args.search_threads or 'all'} faiss thread(s), "
          f"load average {os.getloadavg()[0]:.1f}; batches of {args.batch}, k=10\n")
    print(f"{'docs':>8s} {'index':>6s} {'ingest docs/s':>14s} {'search p50':>11s} {'p95':>9s} "
          f"{'memory/doc':>11s}  notes")
    t_all = time.perf_counter()
    for n in [int(x) for x in args.sizes.split(",") if x]:
        for index in [x for x in args.indexes.split(",") if x]:
            params = json.loads(args.hnsw_500k) if index == "hnsw" and n >= 500_000 else {}
            r = child({"n": n, "index": index, "params": params, "queries": args.queries, "batch": args.batch,
                       "hybrid": False, "search_threads": args.search_threads, "save": index == "flat"}, args.timeout)
            if "error" in r:
                print(f"{n:>8d} {index:>6s}  failed: {r['error']}")
                continue
            notes = []
            if r["active"] != index:
                notes.append(f"serving as {r['active']} (not trained yet)")
            if params:
                notes.append(f"params {params}")
            if "recall_at_10" in r:
                notes.append(f"recall@10 {r['recall_at_10']:.3f}")
            notes.append(f"ingest {r['ingest_s']:.1f} s")
            if "save_s" in r:
                notes.append(f"save {r['save_s']:.2f} s, load {r['load_s']:.2f} s")
            print(f"{n:>8d} {index:>6s} {r['ingest_docs_s']:>14,.0f} {r['p50_ms']:>8.2f} ms {r['p95_ms']:>6.2f} ms "
                  f"{r['mem_per_doc']:>7,.0f} B  {'; '.join(notes)}", flush=True)
    if args.hybrid_sizes:
        print(f"\nhybrid search (weighted fusion, dense {args.hybrid_index} + BM25, fetch 100 each, k=10):")
        print(f"{'docs':>8s} {'hybrid p50':>11s} {'p95':>9s} {'dense p50':>10s} {'BM25 build':>11s}")
        for n in [int(x) for x in args.hybrid_sizes.split(",") if x]:
            r = child({"n": n, "index": args.hybrid_index, "params": {}, "queries": args.queries,
                       "batch": args.batch, "hybrid": True, "search_threads": args.search_threads}, args.timeout)
            if "error" in r:
                print(f"{n:>8d}  failed: {r['error']}")
                continue
            print(f"{n:>8d} {r['hybrid_p50_ms']:>8.2f} ms {r['hybrid_p95_ms']:>6.2f} ms {r['p50_ms']:>7.2f} ms "
                  f"{r['bm25_build_s']:>9.1f} s", flush=True)
    print(f"\n(total {time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
