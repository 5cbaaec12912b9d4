"""Token ids and counts offline: the OpenAI-family BPE encodings, and the documented estimate.

tiktoken (OpenAI's tokenizer) downloads its BPE files from the internet on first use, which fails on
an offline machine (LangChain's own fallback, GPT-2 from the Hugging Face hub, fails the same way and
counts 0). ``bpe-openai`` (GitHub's ``bpe-openai`` Rust crate, tiktoken-compatible API) ships the
``cl100k_base`` and ``o200k_base`` files in its wheel, so counting works with no network; it is the
``tokens`` extra (also pulled by ``langchain`` and ``server``).

Which encoding for which model, as tiktoken decides it (``tiktoken.model.encoding_for_model``):
``o200k_base`` for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4; ``cl100k_base`` for gpt-4, gpt-3.5
and the text-embedding models. ::

    from langchain_mesh.tokens import openai_encoding
    openai_encoding("gpt-4o").encode("hello world")        # [24912, 2375]

A model from another family with no count of its own (see ``Connection.count_tokens``) is counted
with ``o200k_base`` as an **estimate**: modern BPE vocabularies of 100k-260k entries give counts
within about 15% of each other on English text; never 0.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Sequence

from .errors import CapabilityError

__all__ = ["openai_encoding", "openai_encoding_name", "decode_token_arrays", "estimate_tokens",
           "seed_tiktoken_cache", "ESTIMATE_ENCODING", "TOKEN_ARRAY_ENCODING"]

#: the encoding an estimate counts with (OpenAI's current one)
ESTIMATE_ENCODING = "o200k_base"
#: how token-id inputs are read when the model name says nothing: tiktoken's and langchain-openai's
#: fallback for a model name they do not know (``OpenAIEmbeddings`` sends such ids by default), and
#: the encoding of OpenAI's embedding models
TOKEN_ARRAY_ENCODING = "cl100k_base"

# tiktoken.model's prefixes, newest first (a prefix match, as tiktoken does)
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"), ("chatgpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"), ("o3", "o200k_base"), ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5", "cl100k_base"), ("gpt-35", "cl100k_base"),
    ("text-embedding-", "cl100k_base"),
)


def openai_encoding_name(model: Optional[str], default: Optional[str] = None) -> Optional[str]:
    """The tiktoken encoding of an OpenAI model name (an Azure deployment named after its model
    works too), else ``default``."""
    if model:
        name = model.rsplit("/", 1)[-1].lower()
        for prefix, enc in _PREFIXES:
            if name.startswith(prefix):
                return enc
    return default


@functools.lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    try:
        import bpe_openai
    except ImportError:
        raise CapabilityError(
            "counting and decoding OpenAI-family tokens offline needs the bpe-openai package, which "
            "ships the BPE files: pip install 'langchain-mesh[tokens]'") from None
    return bpe_openai.get_encoding(name)


def openai_encoding(model_or_encoding: str) -> Any:
    """The tokenizer (``encode``/``decode``, tiktoken's API) of an OpenAI model or an encoding name;
    an unknown model gets :data:`ESTIMATE_ENCODING`."""
    if model_or_encoding in ("o200k_base", "cl100k_base"):
        return _encoding(model_or_encoding)
    return _encoding(openai_encoding_name(model_or_encoding, ESTIMATE_ENCODING))  # type: ignore[arg-type]


def estimate_tokens(text: str) -> int:
    """The :data:`ESTIMATE_ENCODING` count of ``text`` (see the module docstring)."""
    return len(_encoding(ESTIMATE_ENCODING).encode_ordinary(text)) if text else 0


def decode_token_arrays(arrays: Sequence[Sequence[int]], model: Optional[str] = None) -> list[str]:
    """Token-id inputs (OpenAI's ``input=[[9906, 1917]]``) back to text: read with ``model``'s
    OpenAI encoding when it names one, else :data:`TOKEN_ARRAY_ENCODING`. Raises ``ValueError``
    naming the first id outside the vocabulary."""
    enc = _encoding(openai_encoding_name(model, TOKEN_ARRAY_ENCODING))  # type: ignore[arg-type]
    n = enc.n_vocab
    out = []
    for i, ids in enumerate(arrays):
        bad = next((t for t in ids if not 0 <= t < n), None)
        if bad is not None:
            raise ValueError(f"input[{i}] holds token id {bad}, outside the {enc.name} vocabulary (0..{n - 1})")
        out.append(enc.decode(list(ids)))
    return out


# tiktoken's own URLs and sha256s for the two files (tiktoken_ext/openai_public.py)
_TIKTOKEN_FILES = {
    "cl100k_base": ("https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}


def seed_tiktoken_cache(cache_dir: Optional[str] = None) -> str:
    """Put the ``cl100k_base`` and ``o200k_base`` files bpe-openai ships into tiktoken's cache, so
    that tiktoken, and what counts with it (langchain-openai's ``OpenAIEmbeddings`` and
    ``ChatOpenAI.get_num_tokens``), works offline. Returns the cache folder.

    ``cache_dir`` defaults to tiktoken's own choice (``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR``,
    else ``<tmp>/data-gym-cache``). Each file is checked against the sha256 tiktoken expects (and
    tiktoken checks it again on reading), and named as tiktoken names it (the sha1 of its URL)::

        from langchain_mesh.tokens import seed_tiktoken_cache
        seed_tiktoken_cache()
        OpenAIEmbeddings(model=..., base_url="http://127.0.0.1:8000/v1").embed_query("hi")
    """
    import gzip
    import hashlib
    import tempfile
    from pathlib import Path

    try:
        import bpe_openai.data as data
    except ImportError:
        raise CapabilityError("seeding tiktoken's cache needs bpe-openai: pip install 'langchain-mesh[tokens]'") from None
    folder = Path(cache_dir or os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                  or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    folder.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in _TIKTOKEN_FILES.items():
        target = folder / hashlib.sha1(url.encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        blob = gzip.decompress((Path(data.__file__).parent / f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(blob).hexdigest() != sha256:
            raise CapabilityError(f"bpe-openai's {name} file is not the one tiktoken expects; not seeding it")
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, target)  # atomic: a concurrent reader never sees half a file
    return str(folder)
