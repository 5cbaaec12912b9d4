"""What a call used, as the limits, budgets and the ledger read it, whatever the operation.

A translated call's answer carries its :class:`~langchain_mesh.schema.Usage` (a stream's footer
does). The gateway's pass-through (``op == "forward"``) deals in bytes, and ``mesh serve`` reads the
usage out of them anyway (it parses a whole answer; a stream's usage arrives in its last events) for
its own usage record. So the layers do not parse the bytes again: they register a callback and its
state with :func:`on_forward_end`, which puts a :class:`ForwardEnd` beside a whole answer's bytes or
wraps a stream's body (:class:`ForwardStream`), and the server calls ``end(usage, ok)`` once it has the usage
(the OpenAI wire ``usage`` dict: turning it into a :class:`Usage` is left to whoever needs more than
its token count, the ledger's writer thread) and ``ok``: True, False (failed), None (a stream the
client cut). Whoever calls :meth:`Mesh.aforward` with policies on
calls ``end`` (``mesh serve`` does, on every path, failures included); each callback is then called
as ``fn(state, usage, ok)``. A callback is a plain function and its state a tuple or a slotted object
the hook made anyway: a callable object or a closure per call costs ~1–2k instructions to make, a
tuple ~0.3k (callgrind, Python 3.11).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..schema import Usage

#: a callback of :func:`on_forward_end`: ``fn(state, usage, ok)``
Ended = Callable[[Any, Any, Optional[bool]], None]

__all__ = ["estimate_tokens", "on_forward_end", "ForwardEnd", "ForwardStream", "usage_of_raw", "tokens_of"]


def estimate_tokens(call: Any) -> int:
    """Input tokens of the call, estimated before sending at ~4 characters (bytes) a token: cheap and
    the same on every path (an exact count may cost a provider round trip); reconciled afterwards
    with the provider's own usage."""
    req = call.request
    if call.op == "forward":
        return max(1, len(req[1]) // 4)
    chars = 0
    for m in getattr(req, "messages", None) or ():
        c = m.content
        if isinstance(c, str):
            chars += len(c)
        elif c:
            for part in c:
                chars += len(getattr(part, "text", None) or "")
    for t in getattr(req, "texts", None) or ():
        chars += len(t)
    prompt = getattr(req, "prompt", None)
    if isinstance(prompt, str):
        chars += len(prompt)
    return max(1, chars // 4)


def usage_of_raw(raw: Any) -> Optional[Usage]:
    """The OpenAI wire ``usage`` object as a :class:`Usage` (None when absent)."""
    if type(raw) is not dict:
        return raw if isinstance(raw, Usage) else None
    details = raw.get("prompt_tokens_details") or {}
    out_details = raw.get("completion_tokens_details") or {}
    return Usage(input_tokens=raw.get("prompt_tokens") or 0, output_tokens=raw.get("completion_tokens") or 0,
                 cached_input_tokens=details.get("cached_tokens") if type(details) is dict else None,
                 reasoning_tokens=out_details.get("reasoning_tokens") if type(out_details) is dict else None)


def tokens_of(usage: Any) -> Optional[int]:
    """Input + output tokens of a :class:`Usage` or of an OpenAI wire ``usage`` dict; None if unknown."""
    if usage is None:
        return None
    if type(usage) is dict:
        return (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
    return (usage.input_tokens or 0) + (usage.output_tokens or 0)


class ForwardEnd(list):  # type: ignore[type-arg]
    """The callbacks of a whole pass-through answer, in the second place of its ``(bytes, None)``
    result (unused for a whole answer): ``end(usage, ok)``, ``usage`` the OpenAI wire ``usage`` dict
    (or None), called by the server once it has parsed the answer."""

    # the list of its callbacks itself (a list subclass is made without a Python __init__: ~1k
    # instructions less per call than an object holding a list)
    __slots__ = ()

    def end(self, usage: Any, ok: bool = True) -> None:
        ends = self[:]
        self.clear()
        for fn, state in ends:
            fn(state, usage, ok)


class ForwardStream:
    """A pass-through stream's body with callbacks for its end: ``read``/``close`` are the body's;
    ``end(usage, ok)`` is called once by the server when the stream is over."""

    __slots__ = ("_body", "_ends", "read", "_done")

    def __init__(self, body: Any):
        self._body = body
        self._ends: list[tuple[Ended, Any]] = []
        self.read = body.read  # the hot path reads straight from the body
        self._done = False

    def close(self) -> None:
        self._body.close()

    def end(self, usage: Any, ok: bool = True) -> None:
        if self._done:
            return
        self._done = True
        for fn, state in self._ends:
            fn(state, usage, ok)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def on_forward_end(result: tuple[Any, Any], fn: Ended, state: Any) -> tuple[Any, Any]:
    """``result`` (a pass-through answer: (bytes, None), or a stream's (body, first piece)) with
    ``fn(state, usage, ok)`` called when the server has read the usage: a whole answer's
    ``(bytes, ForwardEnd)``, a stream's ``(ForwardStream, first piece)``; the server calls ``end`` on
    the one that has it."""
    body, first = result
    if type(body) is bytes or isinstance(body, (bytearray, memoryview)):  # (bytes: every whole answer)
        if type(first) is not ForwardEnd:
            first = ForwardEnd()
        first.append((fn, state))
        return body, first
    if type(body) is not ForwardStream:
        body = ForwardStream(body)
    body._ends.append((fn, state))
    return body, first
