"""The seed's query, settings and response dicts <-> the mesh schema, for ``BaseLLM`` plugins.

What ``process(query, settings, trace)`` receives::

    query = {"messages": [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "What is in this image?",            # text of the parts, always
         "parts": [{"type": "TEXT", "text": "What is in this image?"},   # only with images
                   {"type": "IMAGE_INLINE", "inlineImage": "<base64>", "imageMimeType": "image/png"},
                   {"type": "IMAGE_URI", "imageUrl": "https://..."}]},
        {"role": "assistant", "content": "", "toolCalls": [
            {"type": "function", "id": "call_1", "function": {"name": "f", "arguments": "{\\"x\\": 1}"}}]},
        {"role": "tool", "content": "42", "toolOutputs": [{"callId": "call_1", "output": "42"}]},
    ]}
    settings = {"temperature": 0.2, "maxOutputTokens": 100, "tools": [...], "toolChoice": {"type": "auto"}, ...}
                # the seed's setting names, only those the caller set

What it returns (a plain string is taken as the text)::

    {"text": "...", "toolCalls": [...], "finishReason": "stop" | "length" | "tool_calls" | ...,
     "promptTokens": 12, "completionTokens": 5, "totalTokens": 17, "estimatedCost": 0.0001}

and what ``process_stream`` yields: ``{"chunk": {"text": "..."}}`` (a chunk may also carry complete
``toolCalls``) and, last, ``{"footer": {...the response keys but text...}}``. A generator that ends
without a footer ends the stream normally (finish reason ``stop``, or ``tool_calls`` when calls were
streamed). Unknown keys are errors naming the key: a misspelt ``promptTokkens`` is a bug to fix, not
a zero to record.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import ProviderError
from ..schema import (
    CompletionRequest,
    CompletionResponse,
    FunctionCall,
    ImagePart,
    ImageURLPart,
    Message,
    StreamChunk,
    StreamFooter,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["to_query", "to_settings", "to_response", "StreamTranslator", "PluginAnswerError"]

_RESPONSE_KEYS = {"text", "toolCalls", "finishReason", "promptTokens", "completionTokens", "totalTokens",
                  "estimatedCost"}
_CHUNK_KEYS = {"text", "toolCalls"}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter",
           "error": "error", "max_tokens": "length", "tool_call": "tool_calls", "tool_use": "tool_calls",
           "end_turn": "stop"}


class PluginAnswerError(ProviderError):
    """A plugin's ``process``/``process_stream`` returned something that is not a seed-format answer."""


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if isinstance(m.content, list) and any(not isinstance(p, TextPart) for p in m.content):
        parts = []
        for p in m.content:
            if isinstance(p, TextPart):
                parts.append({"type": "TEXT", "text": p.text})
            elif isinstance(p, ImagePart):
                parts.append({"type": "IMAGE_INLINE", "inlineImage": p.base64, "imageMimeType": p.mime_type})
            elif isinstance(p, ImageURLPart):
                parts.append({"type": "IMAGE_URI", "imageUrl": p.url})
        out["parts"] = parts
    if m.tool_calls:
        out["toolCalls"] = [c.model_dump() for c in m.tool_calls]
    if m.role == "tool":
        out["toolOutputs"] = [{"callId": m.tool_call_id, "output": m.text}]
    if m.name:
        out["name"] = m.name
    return out


def to_query(request: CompletionRequest) -> dict[str, Any]:
    return {"messages": [_message(m) for m in request.messages]}


def to_settings(request: CompletionRequest) -> dict[str, Any]:
    return request.settings.to_dict()


def _who(where: str) -> str:
    return f"the plugin's {where}"


def _tool_calls(raw: Any, where: str) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PluginAnswerError(f"{_who(where)} returned toolCalls that is not a list")
    out = []
    for i, c in enumerate(raw):
        try:
            fn = c["function"]
            args = fn.get("arguments", "{}")
            if isinstance(args, (dict, list)):  # a common slip: arguments as an object instead of JSON text
                args = json.dumps(args)
            out.append(ToolCall(id=c.get("id") or f"call_{i}", function=FunctionCall(name=fn["name"], arguments=args)))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise PluginAnswerError(f"{_who(where)} returned toolCalls[{i}] not of the form "
                                    '{"type": "function", "id": ..., "function": {"name": ..., "arguments": "<JSON>"}}'
                                    ) from None
    return out


def _usage(d: dict[str, Any]) -> Usage:
    pt = int(d.get("promptTokens") or 0)
    ct = int(d.get("completionTokens") or 0)
    return Usage(input_tokens=pt, output_tokens=ct, total_tokens=int(d.get("totalTokens") or pt + ct))


def _finish(d: dict[str, Any], has_calls: bool, where: str) -> Optional[str]:
    raw = d.get("finishReason")
    if raw is None:
        return "tool_calls" if has_calls else "stop"
    fr = _FINISH.get(str(raw).lower())
    if fr is None:
        raise PluginAnswerError(f"{_who(where)} returned finishReason {raw!r}; expected one of "
                                f"{sorted(set(_FINISH.values()))}")
    return fr


def _check_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise PluginAnswerError(f"{_who(where)} returned unknown key(s) {extra}; the answer's keys are "
                                f"{sorted(allowed)}")


def to_response(answer: Any, where: str = "process") -> CompletionResponse:
    if isinstance(answer, str):
        return CompletionResponse(text=answer, finish_reason="stop")
    if not isinstance(answer, dict):
        raise PluginAnswerError(f"{_who(where)} returned a {type(answer).__name__}; it must return a dict "
                                '{"text": ...} (or the text as a str)')
    _check_keys(answer, _RESPONSE_KEYS, where)
    calls = _tool_calls(answer.get("toolCalls"), where)
    text = answer.get("text") or ""
    if not isinstance(text, str):
        raise PluginAnswerError(f"{_who(where)} returned a text that is a {type(text).__name__}, not a str")
    return CompletionResponse(text=text, tool_calls=calls, finish_reason=_finish(answer, bool(calls), where),
                              usage=_usage(answer))


class StreamTranslator:
    """Seed stream items -> mesh stream events, one item at a time."""

    def __init__(self, where: str = "process_stream"):
        self.where = where
        self.calls = 0
        self.done = False

    def event(self, item: Any) -> Optional[Any]:
        if self.done:
            raise PluginAnswerError(f"{_who(self.where)} yielded after its footer; the footer must be last")
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ("chunk", "footer"):
            raise PluginAnswerError(f"{_who(self.where)} yielded {type(item).__name__} "
                                    f"{list(item) if isinstance(item, dict) else ''}; each item is "
                                    '{"chunk": {"text": ...}} or, last, {"footer": {...}}')
        kind, body = next(iter(item.items()))
        if not isinstance(body, dict):
            raise PluginAnswerError(f"{_who(self.where)} yielded a {kind} that is not an object")
        if kind == "chunk":
            _check_keys(body, _CHUNK_KEYS, self.where)
            calls = _tool_calls(body.get("toolCalls"), self.where)
            deltas = []
            for c in calls:
                deltas.append(ToolCallDelta(index=self.calls, id=c.id, name=c.function.name,
                                            arguments=c.function.arguments))
                self.calls += 1
            text = body.get("text")
            if text is None and not deltas:
                return None
            return StreamChunk(text=text, tool_call_deltas=deltas)
        _check_keys(body, _RESPONSE_KEYS - {"text"}, self.where)
        self.done = True
        calls = _tool_calls(body.get("toolCalls"), self.where)
        return StreamFooter(finish_reason=_finish(body, bool(calls) or self.calls > 0, self.where),
                            usage=_usage(body), tool_calls=calls)

    def end(self) -> Optional[StreamFooter]:
        """The footer of a generator that ended without one."""
        if self.done:
            return None
        self.done = True
        return StreamFooter(finish_reason="tool_calls" if self.calls else "stop")
