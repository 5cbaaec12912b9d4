"""What a call used, as the limits, budgets and the ledger read it, whatever the operation.

A translated call's answer carries its :class:`~langchain_mesh.schema.Usage` (a stream's footer
does). The gateway's pass-through (``op == "forward"``) deals in bytes: a whole answer's usage is read
from its JSON once (and kept in ``call.notes`` for the other layers); a stream's arrives only at its
end, which the server reads anyway for its usage record, so the answer's body object is wrapped in a
:class:`ForwardStream` that ``mesh serve`` calls back with that usage (:meth:`ForwardStream.end`)
when the stream is over. Layers register what to do then with :func:`on_forward_end`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..schema import Usage

__all__ = ["estimate_tokens", "forward_usage", "on_forward_end", "ForwardStream", "usage_of_raw"]


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
        return None
    details = raw.get("prompt_tokens_details") or {}
    out_details = raw.get("completion_tokens_details") or {}
    return Usage(input_tokens=raw.get("prompt_tokens") or 0, output_tokens=raw.get("completion_tokens") or 0,
                 cached_input_tokens=details.get("cached_tokens") if type(details) is dict else None,
                 reasoning_tokens=out_details.get("reasoning_tokens") if type(out_details) is dict else None)


def forward_usage(call: Any, result: Any) -> Optional[Usage]:
    """The usage of a whole (non-stream) pass-through answer, parsed once per call."""
    notes = call.notes
    if "usage" in notes:
        return notes["usage"]
    import orjson

    content = result[0]
    usage = None
    if isinstance(content, (bytes, bytearray, memoryview)):
        try:
            usage = usage_of_raw(orjson.loads(content).get("usage"))
        except (orjson.JSONDecodeError, AttributeError):
            usage = None
    notes["usage"] = usage
    return usage


class ForwardStream:
    """A pass-through stream's body with callbacks for its end: ``read``/``close`` are the body's;
    ``end(usage, ok)`` is called once by the server when the stream is over."""

    __slots__ = ("_body", "_ends", "read", "_done")

    def __init__(self, body: Any):
        self._body = body
        self._ends: list[Callable[[Optional[Usage], bool], None]] = []
        self.read = body.read  # the hot path reads straight from the body
        self._done = False

    def close(self) -> None:
        self._body.close()

    def end(self, usage: Optional[Usage], ok: bool = True) -> None:
        if self._done:
            return
        self._done = True
        for fn in self._ends:
            fn(usage, ok)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def on_forward_end(result: tuple[Any, Any], fn: Callable[[Optional[Usage], bool], None]) -> tuple[Any, Any]:
    """``result`` (a pass-through stream's (body, first piece)) with ``fn`` called at the stream's end."""
    body, first = result
    if not isinstance(body, ForwardStream):
        body = ForwardStream(body)
    body._ends.append(fn)
    return body, first
