"""A lean Llama decoder and tokenizer for answering with a converted local model, without transformers.

Why hand-written: importing transformers' modeling stack costs 3-4 s per process on two cores (it pulls in
torch.distributed, torch._dynamo, scipy...), its tokenizer loader another second, and its decode step
spends a third of its time re-allocating the KV cache (``torch.cat`` per layer per token). The main job
answers one question per process, so that fixed cost was most of its wall time. This module runs the
same arithmetic as ``transformers.models.llama.modeling_llama`` (same op order, same SDPA call; logits agree to the last bits: equal on the prompts tried, except that
the prompt's last position is projected alone, which BLAS may sum differently; greedy decoding gave the
same tokens on every prompt tried; ``tests/test_local_model.py`` compares the two) on the weights
:mod:`~langchain_mesh.local.loading` already saved as safetensors, with a preallocated KV cache, and
tokenizes with the ``tokenizers`` library and the model's own Jinja chat template.

It only serves plain Llama checkpoints (the embedded default SmolLM2 and its kin) on CPU; anything else
(other architectures, LoRA adapters, fine-tuning, grammar-constrained decoding) uses the transformers
objects, which :class:`LeanLlama` and :class:`LeanTokenizer` load on first use (``.hf``). Used by
:func:`~langchain_mesh.local.loading.load_causal_lm`; nothing to configure::

    lm = load_causal_lm(packaged_model_path("SmolLM2-135M-Instruct"))   # lean once converted
    lm.model(input_ids=ids, cache=None).logits                          # what generate() calls
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["LeanLlama", "LeanTokenizer", "lean_supported"]

_SUPPORTED_KEYS = {"model_type": "llama", "hidden_act": "silu", "attention_bias": False, "mlp_bias": False}


def lean_supported(folder: Path) -> bool:
    """Whether ``folder`` holds a plain Llama checkpoint this module computes exactly like transformers."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    rope = cfg.get("rope_parameters") or {}
    return (all(cfg.get(k, v) == v for k, v in _SUPPORTED_KEYS.items())
            and (rope.get("rope_type", "default") == "default") and not cfg.get("rope_scaling")
            and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
            and (folder / "chat_template.jinja").is_file())


class _Lazy:
    """The transformers object behind a lean one, loaded once on first use (thread-safe)."""

    def __init__(self, load: Callable[[], Any]):
        self._load, self._value, self._lock = load, None, threading.Lock()

    def get(self) -> Any:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._load()
        return self._value


@dataclass
class _Config:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    eos_token_id: Any


@dataclass
class _GenerationConfig:
    eos_token_id: Any


@dataclass
class LeanOutput:
    logits: Any
    cache: "KVCache"


class KVCache:
    """Keys and values of every layer in buffers that grow by doubling (not per token: a ``torch.cat`` per
    layer per step re-allocates and copies the whole cache, a third of a decode step on CPU)."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: Any):
        self.layers, self.kv_heads, self.head_dim, self.dtype = layers, kv_heads, head_dim, dtype
        self.length = 0
        self.keys: list[Any] = []
        self.values: list[Any] = []

    def reserve(self, n: int) -> None:
        import torch

        cap = self.keys[0].shape[2] if self.keys else 0
        if self.length + n <= cap:
            return
        new_cap = max(self.length + n, 2 * cap, 256)
        shape = (1, self.kv_heads, new_cap, self.head_dim)
        for store in (self.keys, self.values):
            for i in range(self.layers):
                buf = torch.empty(shape, dtype=self.dtype)
                if i < len(store):
                    buf[:, :, :self.length] = store[i][:, :, :self.length]
                    store[i] = buf
                else:
                    store.append(buf)


class LeanLlama:
    """The forward pass of ``LlamaForCausalLM`` (sdpa attention, no padding, batch of one) on CPU."""

    def __init__(self, folder: Path, hf: Callable[[], Any]):
        import torch
        from safetensors.torch import load_file

        cfg = json.loads((folder / "config.json").read_text())
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        self.config = _Config(
            vocab_size=int(cfg["vocab_size"]), hidden_size=hidden, num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=heads, num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads), rms_norm_eps=float(cfg["rms_norm_eps"]),
            rope_theta=float((cfg.get("rope_parameters") or {}).get("rope_theta") or cfg.get("rope_theta", 10000.0)),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
            eos_token_id=cfg.get("eos_token_id"))
        gen_file = folder / "generation_config.json"
        gen = json.loads(gen_file.read_text()) if gen_file.is_file() else {}
        self.generation_config = _GenerationConfig(gen.get("eos_token_id", cfg.get("eos_token_id")))
        self._hf = _Lazy(hf)
        w = load_file(str(folder / "model.safetensors"))
        self.dtype = w["model.embed_tokens.weight"].dtype
        self.embed = w["model.embed_tokens.weight"]
        self.lm_head = w.get("lm_head.weight", self.embed)
        self.norm = w["model.norm.weight"]
        self.layers = []
        for i in range(self.config.num_hidden_layers):
            p = f"model.layers.{i}."
            # separate matrices, as transformers has them: fusing q/k/v and gate/up measured no faster
            # here (memory-bound either way), cost a copy at load, and changed the sums' last bits
            self.layers.append(tuple(w[p + n] for n in (
                "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")))
        d = self.config.head_dim
        # transformers' default RoPE: the same expression, so cos/sin match bit for bit
        self.inv_freq = 1.0 / (self.config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
        self.scaling = d ** -0.5

    @property
    def hf(self) -> Any:
        """The transformers model of the same weights (adapters, fine-tuning, grammar work need it)."""
        return self._hf.get()

    def forward(self, input_ids: Any, use_cache: bool = True, cache: Optional[KVCache] = None) -> LeanOutput:
        import torch
        import torch.nn.functional as F

        c = self.config
        if cache is None:
            cache = KVCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, self.dtype)
        t = int(input_ids.shape[1])
        start = cache.length
        cache.reserve(t)
        end = start + t
        positions = torch.arange(start, end).unsqueeze(0)
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
        half = c.head_dim // 2
        eps = c.rms_norm_eps

        def rms(x: Any, weight: Any) -> Any:
            return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

        def rope(x: Any) -> Any:
            rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
            return (x * cos) + (rotated * sin)

        x = F.embedding(input_ids, self.embed)
        for i, (ln1, wq, wk, wv, wo, ln2, wg, wu, wd) in enumerate(self.layers):
            h = rms(x, ln1)
            q = F.linear(h, wq).view(1, t, -1, c.head_dim).transpose(1, 2)
            k = F.linear(h, wk).view(1, t, -1, c.head_dim).transpose(1, 2)
            v = F.linear(h, wv).view(1, t, -1, c.head_dim).transpose(1, 2)
            q, k = rope(q), rope(k)
            cache.keys[i][:, :, start:end] = k
            cache.values[i][:, :, start:end] = v
            keys, values = cache.keys[i][:, :, :end], cache.values[i][:, :, :end]
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=None, dropout_p=0.0, scale=self.scaling,
                                               is_causal=t > 1, enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(1, t, -1), wo)
            h = rms(x, ln2)
            x = x + F.linear(F.silu(F.linear(h, wg)) * F.linear(h, wu), wd)
        cache.length = end
        # only the last position's logits: generate() reads no others, and the vocabulary projection of
        # every prompt position was a fifth of the prompt's arithmetic. (transformers projects them all;
        # BLAS may sum one row differently from many, so the prompt's last logits can differ from its
        # by an ulp.)
        x = rms(x[:, -1:], self.norm)
        return LeanOutput(F.linear(x, self.lm_head), cache)

    __call__ = forward


class LeanTokenizer:
    """The parts of a transformers fast tokenizer that prompting and decoding use, on ``tokenizers``."""

    def __init__(self, folder: Path, hf: Callable[[], Any]):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg_file = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        self.chat_template = (folder / "chat_template.jinja").read_text()
        self._hf = _Lazy(hf)
        self._specials = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                          if isinstance(cfg.get(k), str)}
        self.clean_up_tokenization_spaces = bool(cfg.get("clean_up_tokenization_spaces", False))
        self._template: Any = None

    @property
    def hf(self) -> Any:
        return self._hf.get()

    def __getattr__(self, name: str) -> Any:
        # bos_token, eos_token_id, unk_token_id...: from tokenizer_config.json, as transformers reads them
        if name.startswith("_"):  # copy/pickle probe before __init__ ran
            raise AttributeError(name)
        role, _, suffix = name.rpartition("_")
        if name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            return self._specials.get(name)
        if suffix == "id" and role in ("bos_token", "eos_token", "unk_token", "pad_token"):
            token = self._specials.get(role)
            return None if token is None else self._tok.token_to_id(token)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}; use .hf for the transformers tokenizer")

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self._specials.values()))

    def get_added_vocab(self) -> dict[str, int]:
        return {t.content: i for i, t in self._tok.get_added_tokens_decoder().items()}

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: Any) -> Any:
        if isinstance(tokens, str):
            return self._tok.token_to_id(tokens)
        return [self._tok.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        if isinstance(ids, int):
            return self._tok.id_to_token(ids)
        return [self._tok.id_to_token(int(i)) for i in ids]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        text = self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces:  # transformers' clean-up, applied when the tokenizer asks for it
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    def apply_chat_template(self, conversation: list[dict[str, str]], add_generation_prompt: bool = False,
                            tokenize: bool = True, return_dict: bool = False) -> Any:
        """Renders the model's Jinja template as transformers does (trim_blocks, lstrip_blocks, no special
        tokens added around it)."""
        if self._template is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                from jinja2.exceptions import TemplateError

                raise TemplateError(message)

            def strftime_now(fmt: str) -> str:
                from datetime import datetime

                return datetime.now().strftime(fmt)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
            env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: (
                json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys))
            self._template = env.from_string(self.chat_template)
        text = self._template.render(messages=conversation, add_generation_prompt=add_generation_prompt,
                                     **self._specials)
        if not tokenize:
            return text
        ids = self.encode(text, add_special_tokens=False)
        return {"input_ids": ids} if return_dict else ids
