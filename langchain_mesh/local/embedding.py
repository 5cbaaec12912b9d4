"""Fast sentence embeddings with a local BERT-style encoder: mean pooling + L2 normalisation.

    from langchain_mesh.local.embedding import SentenceEncoder
    enc = SentenceEncoder(model, tokenizer, device="cuda", max_length=256)   # precision="auto"
    vectors, tokens = enc.encode(texts)          # float32 (n, dim), in the order of `texts`

What makes it fast (``bench/embed_throughput.py`` measures it against sentence-transformers):

- length-sorted batches: texts are ordered by length (characters, as sentence-transformers does) so
  each batch pads to similar lengths; the results are put back in the caller's order;
- a device-sized default batch: 32 on CPU (larger batches only add padding there), 256 on CUDA (a
  small encoder needs large batches to fill a GPU);
- tokenising off the critical path: a background thread tokenises (and pads) the next batches while
  the model runs the current one (the Rust tokenizers release the GIL), and on CUDA the batch is
  copied with ``non_blocking`` from pinned memory; pooled vectors stay on the device until the end,
  so there is one device-to-host copy, not one sync per batch;
- half precision when exact enough: ``precision="auto"`` embeds the first batch in fp32 and in a half
  precision and keeps it only if every vector's cosine with the fp32 one is >= ``min_cosine`` (0.999);
  the check's outcome is in ``enc.precision`` and ``enc.precision_check``. On CUDA it tries fp16, then
  bf16. On a CPU it tries bf16 only where the CPU multiplies bf16 itself (AVX512-BF16 or AMX: oneDNN's
  bf16 matmuls then beat fp32, MiniLM 1.9x on an AVX512-BF16 EPYC); elsewhere bf16 is emulated and
  slower, so ``auto`` stays fp32. An explicit ``precision`` is used as given, on any device.

Only torch, transformers' tokenizer/model objects and numpy are needed here (no pydantic, no
LangChain): the GPU benchmark loads this file on its own.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Optional, Sequence

__all__ = ["SentenceEncoder", "cpu_has_native_bf16", "default_batch_size", "length_order"]

CPU_BATCH = 32
CUDA_BATCH = 256


def default_batch_size(device: str) -> int:
    return CUDA_BATCH if str(device).startswith("cuda") else CPU_BATCH


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 itself (AVX512-BF16 or AMX tiles), as torch reports it."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):  # torch's own dispatch checks
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - a probe torch lacks or cannot answer: not native
            continue
    return False


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts`` longest first (stable), the order batches are built in."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


class SentenceEncoder:
    """Mean-pooled, normalised sentence embeddings from a HF encoder model; see the module doc."""

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", max_length: int = 512,
                 batch_size: Optional[int] = None, precision: str = "auto", min_cosine: float = 0.999,
                 normalize: bool = True):
        if precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, not {precision!r}")
        self.model, self.tokenizer, self.device = model, tokenizer, str(device)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size or default_batch_size(self.device))
        self.cuda = self.device.startswith("cuda")
        # the half precisions "auto" may keep (module doc): none on a CPU without native bf16
        self._halves = ("fp16", "bf16") if self.cuda else ("bf16",) if cpu_has_native_bf16() else ()
        self.precision = "fp32" if precision == "auto" and not self._halves else precision
        self.min_cosine = float(min_cosine)
        self.normalize = normalize
        self.precision_check: Optional[dict[str, float]] = None  # {"fp16": min cosine, ...} once checked
        self._models: dict[str, Any] = {"fp32": model}
        self._lock = threading.Lock()

    # ---- precision ---------------------------------------------------------------------------------

    def _model_for(self, precision: str) -> Any:
        import copy

        import torch

        m = self._models.get(precision)
        if m is None:
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
            m = copy.deepcopy(self.model).to(dtype).eval()
            self._models[precision] = m
        return m

    def _choose_precision(self, batch: dict[str, Any]) -> None:
        """precision="auto": keep the first half precision whose vectors match fp32's (cosine)."""
        ref = self._forward(self._models["fp32"], batch).float()
        check: dict[str, float] = {}
        chosen = "fp32"
        for candidate in self._halves:
            vecs = self._forward(self._model_for(candidate), batch).float()
            cos = float(((vecs * ref).sum(1) / (vecs.norm(dim=1) * ref.norm(dim=1)).clamp(min=1e-12)).min())
            check[candidate] = cos
            if cos >= self.min_cosine:
                chosen = candidate
                break
        for name in list(self._models):
            if name not in ("fp32", chosen):
                del self._models[name]
        self.precision, self.precision_check = chosen, check

    # ---- batches -----------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.cuda:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch

    def _batches(self, texts: Sequence[str], order: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(start, tokenised batch) in order, produced by a background thread a few batches ahead."""
        bs = self.batch_size
        starts = list(range(0, len(order), bs))
        q: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()

        def produce() -> None:
            try:
                for start in starts:
                    if stop.is_set():
                        return
                    q.put((start, self._tokenize([texts[i] for i in order[start:start + bs]])))
                q.put(None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                q.put(e)

        worker = threading.Thread(target=produce, name="embed-tokenizer", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(0.01)

    def _forward(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch

        with torch.inference_mode():
            # pooled in fp32 whatever the model's precision: a bf16 sum over hundreds of tokens loses digits
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled

    # ---- the entry point ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], on_batch: Optional[Callable[[int], None]] = None) -> tuple[Any, int]:
        """(float32 numpy array (len(texts), dim) in the order of ``texts``, tokens counted)."""
        import numpy as np
        import torch

        texts = list(texts)
        dim = int(self.model.config.hidden_size)
        if not texts:
            return np.zeros((0, dim), np.float32), 0
        order = length_order(texts)
        pooled: list[Any] = []
        counts: list[Any] = []  # token counts stay on the device too: summed once at the end
        with self._lock:
            for start, batch in self._batches(texts, order):
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                if self.precision == "auto":
                    self._choose_precision(batch)
                pooled.append(self._forward(self._model_for(self.precision), batch).float())
                counts.append(batch["attention_mask"].sum())
                if on_batch is not None:
                    on_batch(min(self.batch_size, len(texts) - start))
            vectors = torch.cat(pooled).cpu().numpy()  # one device-to-host copy
            tokens = int(torch.stack(counts).sum())
        out = np.empty_like(vectors)
        out[np.asarray(order)] = vectors  # back to the caller's order
        return out, tokens
