"""Token-by-token decoding for local causal LMs.

A plain loop over the model with a KV cache rather than ``model.generate`` plus a streamer thread:
every token is yielded as soon as it exists (real streaming, no thread to leak when a caller stops
reading), and the seed's settings map one to one onto the steps below — logit bias, presence and
frequency penalties (OpenAI's definitions), a grammar mask, temperature / top-k / top-p sampling,
log-probabilities, and stop sequences that never leak into the output.

Small models loop under greedy decoding (SmolLM2-135M answers a question with ``-m -l -m -l ...``
until the token budget runs out), so two guards run too, both set by the connection's defaults:
a repetition penalty on the tokens already generated (the CTRL/transformers definition; the prompt is
left alone, since a RAG answer should be free to copy its context), and :class:`LoopGuard`, which
stops the answer before any run of ``loop_ngram`` words appears a third time.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
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
    repetition_penalty: float = 1.0  # > 1 discourages tokens already generated; 1 = off
    loop_ngram: int = 0  # stop before a run of this many words occurs a third time; 0 = off
    stop_token_ids: frozenset[int] = frozenset()  # besides EOS: e.g. the chat template's turn markers
    threads: Optional[int] = None  # torch intra-op threads for the one-token steps on CPU; None: torch's own setting


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


class LoopGuard:
    """Finds where an answer starts repeating itself: the point before a run of ``n`` words would occur
    for the ``max_repeats + 1``-th time.

    Words are whitespace-separated, so the guard sees what a reader sees, whatever the tokenizer. Only
    complete words count (a word is complete once whitespace follows it, or at the end of the answer),
    and :meth:`safe_end` tells the decoder not to emit the word still being written, so a cut never
    has to take back text that was already streamed.
    """

    def __init__(self, n: int, max_repeats: int = 2):
        self.n, self.max_repeats = n, max_repeats
        self.counts: dict[tuple[str, ...], int] = {}
        self.words: list[str] = []
        self.pos = 0  # how far ``full`` has been scanned for complete words

    def feed(self, full: str, final: bool = False) -> Optional[int]:
        """Scan newly completed words; the length to cut the answer to when it started looping, else None."""
        for m in re.finditer(r"\S+", full[self.pos:]):
            start, end = self.pos + m.start(), self.pos + m.end()
            if end == len(full) and not final:
                break  # still being written
            self.words.append(m.group())
            if len(self.words) >= self.n:
                gram = tuple(self.words[-self.n:])
                seen = self.counts.get(gram, 0)
                if seen >= self.max_repeats:
                    return start
                self.counts[gram] = seen + 1
        self.pos = max(self.pos, self.safe_end(full)) if not final else len(full)
        return None

    @staticmethod
    def safe_end(full: str) -> int:
        """Text up to the last whitespace may be emitted; the word after it may still be cut."""
        return max(full.rfind(" "), full.rfind("\n"), full.rfind("\t")) + 1


class StopMatcher:
    """Releases text only once it cannot be the start of a stop sequence."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.emitted = 0

    def feed(self, full: str, limit: Optional[int] = None) -> tuple[str, bool]:
        """Given all text so far, return (text safe to emit now, whether a stop sequence was hit).

        ``limit`` caps what may be emitted now (the loop guard holds back the word being written).
        """
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
        end = len(full) - hold if limit is None else min(len(full) - hold, limit)
        out = full[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return out, False

    def flush(self, full: str) -> str:
        out = full[self.emitted:]
        self.emitted = len(full)
        return out


_threads_lock = threading.Lock()
_threads_state = {"users": 0, "saved": 0}


@contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` while a generation step runs, restored when the last
    concurrent step ends (the setting is global to the process; the first step's ``n`` wins).

    Why fewer threads than cores: one token is a matrix-vector product per weight, bound by memory
    bandwidth, and the per-token logits work is on vectors too small to share out. On two cores one
    thread decodes as fast as two (58 vs 59 ms a token, idle), while with two threads every op ends in an
    OpenMP barrier that, when the cores are shared with other work, waits for a descheduled thread:
    measured on two busy cores, an 80-token answer took 14-23 s with two threads, 4.6-6 s with one."""
    if n is None:
        yield
        return
    import torch

    with _threads_lock:
        if _threads_state["users"] == 0:
            _threads_state["saved"] = torch.get_num_threads()
            if _threads_state["saved"] != n:
                torch.set_num_threads(n)
        _threads_state["users"] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_state["users"] -= 1
            if _threads_state["users"] == 0 and torch.get_num_threads() != _threads_state["saved"]:
                torch.set_num_threads(_threads_state["saved"])


@lru_cache(maxsize=None)
def _cache_keyword(model_type: type) -> str:
    """The KV-cache argument's name: transformers 5.25 renamed ``past_key_values`` to ``cache`` (the old
    name warns on every step), older releases only know the old one."""
    import inspect

    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


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
    eos = _eos_ids(lm) | set(params.stop_token_ids)
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
    penalised = params.presence_penalty or params.frequency_penalty or params.repetition_penalty != 1.0
    counts = torch.zeros(vocab, device=lm.device) if penalised else None
    loop = LoopGuard(params.loop_ngram) if params.loop_ngram else None
    # a stand-in for the model (an adapter view) names the class whose forward it calls
    cache_kw = _cache_keyword(getattr(model, "model_class", type(model)))

    stop = StopMatcher(params.stop)
    generated: list[int] = []
    ids = torch.tensor([input_ids], device=lm.device)
    past = None
    reason = "length"
    hit_stop = False
    looped: Optional[int] = None
    threads = params.threads if str(lm.device) == "cpu" else None
    for _ in range(params.max_new_tokens):
        # the prompt (many positions at once: compute-bound) on torch's own threads; the one-token steps
        # after it (bound by memory bandwidth) on ``threads``
        with cpu_threads(threads if past is not None else None):
            with torch.inference_mode():
                out = model(input_ids=ids, use_cache=True, **{cache_kw: past})
            past = getattr(out, cache_kw)
            logits = out.logits[0, -1, :vocab].float().clone()
            if bias is not None:
                logits += bias
            if counts is not None:
                logits -= counts * params.frequency_penalty + (counts > 0).float() * params.presence_penalty
                if params.repetition_penalty != 1.0:
                    seen = counts > 0
                    logits[seen] = torch.where(logits[seen] > 0, logits[seen] / params.repetition_penalty,
                                               logits[seen] * params.repetition_penalty)
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
        cut = loop.feed(full) if loop is not None else None
        if cut is not None:
            looped = cut
            break
        text, hit_stop = stop.feed(full, LoopGuard.safe_end(full) if loop is not None else None)
        if text or lp:
            yield TextDelta(text, lp)
        if hit_stop or (constraint is not None and constraint.is_stopped()):
            reason = "stop"
            break
    full = tok.decode(generated, skip_special_tokens=True)
    if looped is None and loop is not None and not hit_stop:
        looped = loop.feed(full, final=True)
    if looped is not None:  # the answer started over: end it where the repetition began
        reason, hit_stop = "stop", True
        if looped > stop.emitted:  # never below: the word being cut was held back
            yield TextDelta(full[stop.emitted:looped])
            stop.emitted = looped
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
