"""Token-by-token decoding for local causal LMs.

A plain loop over the model with a KV cache rather than ``model.generate`` plus a streamer thread:
every token is yielded as soon as it exists (real streaming, no thread to leak when a caller stops
reading), and the seed's settings map one to one onto the steps below — logit bias, presence and
frequency penalties (OpenAI's definitions), a grammar mask, temperature / top-k / top-p sampling,
log-probabilities, and stop sequences that never leak into the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol, Union

from .loading import LoadedModel

__all__ = ["GenerationParams", "TextDelta", "Finished", "generate", "StopMatcher"]


class Constraint(Protocol):
    def apply(self, logits: Any) -> None: ...
    def advance(self, token_id: int) -> None: ...
    def is_stopped(self) -> bool: ...


@dataclass
class GenerationParams:
    max_new_tokens: int = 512
    temperature: Optional[float] = None  # None or 0: greedy
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)


@dataclass
class TextDelta:
    text: str
    logprobs: Optional[list[tuple[str, float, list[tuple[str, float]]]]] = None


@dataclass
class Finished:
    reason: str  # "stop" | "length"
    input_tokens: int
    output_tokens: int
    text: str


class StopMatcher:
    """Releases text only once it cannot be the start of a stop sequence."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.emitted = 0

    def feed(self, full: str) -> tuple[str, bool]:
        """Given all text so far, return (text safe to emit now, whether a stop sequence was hit)."""
        for s in self.stops:
            i = full.find(s, max(0, self.emitted - len(s) + 1))
            if i >= 0:
                out = full[self.emitted:i] if i > self.emitted else ""
                self.emitted = max(self.emitted, i)
                return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(full)), 0, -1):
                if full.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        end = len(full) - hold
        out = full[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return out, False

    def flush(self, full: str) -> str:
        out = full[self.emitted:]
        self.emitted = len(full)
        return out


def _eos_ids(lm: LoadedModel) -> set[int]:
    ids: set[int] = set()
    gen = getattr(lm.model, "generation_config", None)
    for source in (getattr(gen, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(x) for x in source)
    return ids


def generate(lm: LoadedModel, input_ids: list[int], params: GenerationParams,
             constraint: Optional[Constraint] = None) -> Iterator[Union[TextDelta, Finished]]:
    import torch

    model, tok = lm.model, lm.tokenizer
    eos = _eos_ids(lm)
    vocab = int(model.config.vocab_size)
    for t in params.logit_bias:
        if not 0 <= t < vocab:
            from ..errors import SettingsError

            raise SettingsError(f"logitBias names token {t}, outside this model's vocabulary (0..{vocab - 1})",
                                ["logitBias"])
    bias = None
    if params.logit_bias:
        bias = torch.zeros(vocab, device=lm.device)
        for t, b in params.logit_bias.items():
            bias[t] = b
    gen = None
    if params.seed is not None:
        gen = torch.Generator(device=lm.device).manual_seed(params.seed)
    greedy = not params.temperature  # None or 0.0
    counts = torch.zeros(vocab, device=lm.device) if (params.presence_penalty or params.frequency_penalty) else None

    stop = StopMatcher(params.stop)
    generated: list[int] = []
    ids = torch.tensor([input_ids], device=lm.device)
    past = None
    reason = "length"
    hit_stop = False
    for _ in range(params.max_new_tokens):
        with torch.inference_mode():
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1, :vocab].float().clone()
        if bias is not None:
            logits += bias
        if counts is not None:
            logits -= counts * params.frequency_penalty + (counts > 0).float() * params.presence_penalty
        if constraint is not None:
            constraint.apply(logits)
        token = int(torch.argmax(logits)) if greedy else _sample(logits, params, gen)
        if constraint is not None:
            constraint.advance(token)
        if token in eos:
            reason = "stop"
            break
        generated.append(token)
        ids = torch.tensor([[token]], device=lm.device)
        if counts is not None:
            counts[token] += 1
        lp = None
        if params.logprobs:
            lsm = torch.log_softmax(logits, dim=-1)
            top = []
            if params.top_logprobs:
                vals, idx = torch.topk(lsm, params.top_logprobs)
                top = [(tok.decode([int(i)]), float(v)) for v, i in zip(vals, idx)]
            lp = [(tok.decode([token]), float(lsm[token]), top)]
        full = tok.decode(generated, skip_special_tokens=True)
        if full.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        text, hit_stop = stop.feed(full)
        if text or lp:
            yield TextDelta(text, lp)
        if hit_stop or (constraint is not None and constraint.is_stopped()):
            reason = "stop"
            break
    full = tok.decode(generated, skip_special_tokens=True)
    if hit_stop:
        final = full[:stop.emitted]
    else:
        rest = stop.flush(full)
        if rest:
            yield TextDelta(rest)
        final = full
    yield Finished(reason, len(input_ids), len(generated), final)


def _sample(logits: Any, params: GenerationParams, gen: Any) -> int:
    import torch

    logits = logits / float(params.temperature or 1.0)
    if params.top_k:
        k = min(params.top_k, logits.numel())
        kth = torch.topk(logits, k).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = torch.cumsum(probs, dim=-1)
        drop = cum - probs > params.top_p  # keep the smallest set whose mass reaches top_p
        sorted_logits[drop] = float("-inf")
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
