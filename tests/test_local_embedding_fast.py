"""The local embedding path (langchain_mesh/local/embedding.py): length-sorted batches come back in
the caller's order and give the same vectors as embedding each text alone."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langchain_mesh.local.embedding import SentenceEncoder, default_batch_size, length_order  # noqa: E402

TEXTS = [
    "short",
    "A considerably longer sentence about proteins, cells and the genes that regulate their growth in mice.",
    "medium length text on blood",
    "x",
    "Another long one: randomized trials of a therapy dose in patients with cancer risk over ten years of follow-up.",
    "two words",
    "The immune receptor signal.",
]


@pytest.fixture(scope="module")
def encoder_parts():
    from langchain_mesh.local.loading import load_encoder, packaged_model_path

    try:
        enc = load_encoder(packaged_model_path("all-MiniLM-L6-v2"), "cpu")
    except Exception as e:  # noqa: BLE001 - the packaged model is an optional extra
        pytest.skip(f"packaged MiniLM not available: {e}")
    return enc


def test_length_order_is_longest_first_and_stable():
    assert length_order(["aa", "b", "cccc", "dd"]) == [2, 0, 3, 1]
    assert default_batch_size("cpu") == 32 and default_batch_size("cuda:0") == 256


def test_sorted_batches_come_back_in_order_and_match_single_texts(encoder_parts):
    enc = encoder_parts
    batched = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=3)
    vectors, tokens = batched.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    single = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=1)
    for i, text in enumerate(TEXTS):
        alone, _ = single.encode([text])
        assert float(vectors[i] @ alone[0]) > 0.9999, f"text {i} is not in its place"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tokens == sum(len(enc.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert batched.precision == "fp32"  # no half precision on CPU
    progress = []
    batched.encode(TEXTS, on_batch=progress.append)
    assert sum(progress) == len(TEXTS)
    empty, n = batched.encode([])
    assert empty.shape == (0, 384) and n == 0


def test_tokenizer_errors_reach_the_caller(encoder_parts):
    enc = encoder_parts

    class Broken:
        def __call__(self, *a, **k):
            raise RuntimeError("tokenizer exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        SentenceEncoder(enc.model, Broken(), "cpu", 128).encode(["a", "b"])


def test_bad_precision_is_refused(encoder_parts):
    with pytest.raises(ValueError, match="precision"):
        SentenceEncoder(encoder_parts.model, encoder_parts.tokenizer, "cpu", precision="fp8")
