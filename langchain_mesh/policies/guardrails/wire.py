"""Guardrails on the pass-through: the OpenAI-wire bodies ``Mesh.aforward`` carries as bytes, read and
rewritten in place of the mesh objects the translated path would build (which cost a guarded gateway
request ~3x the rules' own work: bench/gateway_micro.py ``POLICIES=1 PII=1``).

The same texts as on the translated path (``layer._map_texts``, ``checks.request_size``): each
message's string content and the ``text`` of its ``text`` parts; an embeddings request's string
inputs; an answer's ``choices[i].message.content``. What the wire carries that the translated path
does not guard either (tool-call arguments, names) is left as it is.

    changed = map_request_texts("/chat/completions", data, redact)   # data: the body, parsed
    texts, messages, images = wire_size("/chat/completions", data)
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["GUARDED_PATHS", "map_request_texts", "wire_size", "answer_texts", "message_text", "withhold_choice"]

#: the pass-through paths whose bodies the guardrails read; any other is refused (never sent unread)
GUARDED_PATHS = frozenset({"/chat/completions", "/embeddings"})


def message_text(m: Any) -> str:
    """A wire message's text: its string content, or its text parts joined."""
    content = m.get("content") if type(m) is dict else None
    if type(content) is str:
        return content
    if type(content) is list:
        return "".join(p["text"] for p in content if type(p) is dict and p.get("type") == "text"
                       and type(p.get("text")) is str)
    return ""


def map_request_texts(path: str, data: dict[str, Any], fn: Callable[[str], str]) -> bool:
    """Every text of the request body ``data`` passed through ``fn``, in place; whether any changed."""
    changed = False
    if path == "/embeddings":
        inputs = data.get("input")
        if type(inputs) is str:
            new = fn(inputs)
            if new != inputs:
                data["input"], changed = new, True
        elif type(inputs) is list:
            for i, text in enumerate(inputs):
                if type(text) is str and (new := fn(text)) != text:
                    inputs[i], changed = new, True
        return changed
    for m in data.get("messages") or ():
        if type(m) is not dict:
            continue
        content = m.get("content")
        if type(content) is str:
            if content and (new := fn(content)) != content:
                m["content"], changed = new, True
        elif type(content) is list:
            for p in content:
                if type(p) is dict and p.get("type") == "text" and type(p.get("text")) is str \
                        and (new := fn(p["text"])) != p["text"]:
                    p["text"], changed = new, True
    return changed


def wire_size(path: str, data: dict[str, Any]) -> tuple[list[str], int, int]:
    """(texts, messages, images) of a request body, as ``checks.request_size`` counts a parsed one."""
    if path == "/embeddings":
        inputs = data.get("input")
        return ([inputs] if type(inputs) is str else [t for t in inputs if type(t) is str]
                if type(inputs) is list else []), 0, 0
    messages = data.get("messages") or []
    images = sum(1 for m in messages if type(m) is dict and type(m.get("content")) is list
                 for p in m["content"] if type(p) is dict and p.get("type") == "image_url")
    return [message_text(m) for m in messages], len(messages), images


def answer_texts(answer: Any) -> list[tuple[dict[str, Any], str]]:
    """(message, its text) of each choice of a chat answer with string content."""
    out = []
    for choice in answer.get("choices") or () if type(answer) is dict else ():
        m = choice.get("message") if type(choice) is dict else None
        if type(m) is dict and type(m.get("content")) is str:
            out.append((m, m["content"]))
    return out


def withhold_choice(answer: dict[str, Any], message: dict[str, Any]) -> None:
    """The choice holding ``message`` withheld, as the translated path's ``_withheld``: no text, no
    tool calls, ``finish_reason: content_filter``."""
    for choice in answer["choices"]:
        if choice.get("message") is message:
            message["content"] = ""
            message.pop("tool_calls", None)
            choice["finish_reason"] = "content_filter"
