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
    batched = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=3, precision="fp32")
    vectors, tokens = batched.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    single = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=1, precision="fp32")
    for i, text in enumerate(TEXTS):
        alone, _ = single.encode([text])
        assert float(vectors[i] @ alone[0]) > 0.9999, f"text {i} is not in its place"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tokens == sum(len(enc.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert batched.precision == "fp32"  # as asked
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


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_keeps_bf16_only_where_the_cpu_has_it_and_it_is_exact(encoder_parts, monkeypatch,
                                                                                    native):
    """precision="auto" on a CPU: bf16 is tried only where the CPU computes bf16 itself (faster there,
    emulated and slower elsewhere), and kept only if its vectors match fp32's (cosine >= min_cosine);
    an explicit precision is used as given."""
    import langchain_mesh.local.embedding as embedding

    enc = encoder_parts
    monkeypatch.setattr(embedding, "cpu_has_native_bf16", lambda: native)
    auto = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=4)
    vectors, _ = auto.encode(TEXTS)
    fp32, _ = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=4,
                              precision="fp32").encode(TEXTS)
    if native:
        assert auto.precision == "bf16" and auto.precision_check["bf16"] >= 0.999
        assert set(auto._models) == {"fp32", "bf16"}
    else:
        assert auto.precision == "fp32" and auto.precision_check is None and set(auto._models) == {"fp32"}
    assert float(np.min(np.sum(vectors * fp32, axis=1))) >= 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # pooled and normalised in fp32
    strict = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, batch_size=4, min_cosine=1.01)
    strict.encode(TEXTS[:2])
    assert strict.precision == "fp32"  # no half precision can be that exact: fp32 is kept
    assert (strict.precision_check or {}).get("bf16", 0.0) < 1.01 and set(strict._models) == {"fp32"}
    explicit = SentenceEncoder(enc.model, enc.tokenizer, "cpu", enc.context_window, precision="bf16")
    explicit.encode(TEXTS[:2])
    assert explicit.precision == "bf16" and explicit.precision_check is None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_connection_passes_its_embedding_precision_and_refuses_unknown_ones(encoder_parts, precision):
    """Explicit precisions: unlike auto, neither runs the fp32 check (precision_check stays None); on a
    CPU without native bf16 auto would give fp32, with it bf16, so one of the two tells them apart."""
    from langchain_mesh import Mesh
    from langchain_mesh.errors import ConfigError
    from langchain_mesh.schema import EmbeddingRequest

    with Mesh({"connections": {"local": {"type": "huggingfacelocal", "device": "cpu",
                                         "embedding_precision": precision}}}) as mesh:
        llm = mesh.get_llm("huggingfacelocal:local:all-MiniLM-L6-v2")
        with pytest.raises(TypeError, match="EmbeddingRequest"):
            mesh.embed(llm, ["a text", "another"])
        mesh.embed(llm, EmbeddingRequest(texts=["a text", "another"]))
        conn = mesh.connection("local")
        (encoder,) = conn._sentence_encoders.values()
        assert encoder.precision == precision and encoder.precision_check is None
    with pytest.raises(ConfigError, match="embedding_precision"):
        Mesh({"connections": {"local": {"type": "huggingfacelocal", "embedding_precision": "fp8"}}})
