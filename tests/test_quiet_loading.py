"""transformers' own progress bars stay off while we load a model (ours says what happens)."""

from __future__ import annotations

import contextlib
import io

import pytest


def test_gguf_conversion_bar_is_silenced_and_restored():
    g = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from langchain_mesh.local.loading import _quiet_transformers

    before = g.tqdm
    buf = io.StringIO()
    with _quiet_transformers(), contextlib.redirect_stderr(buf):
        for _ in g.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
    assert buf.getvalue() == ""
    assert g.tqdm is before  # the caller's own use of transformers keeps its bars
