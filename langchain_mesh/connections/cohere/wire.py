"""Cohere's v2 API both ways: mesh requests -> ``/v2/chat`` and ``/v2/embed`` arguments, and answers
and stream events (as plain dicts) -> mesh responses. Pure functions, no SDK and no I/O.

Wire facts relied on (Cohere API reference, v2):

* messages are ``system``/``user``/``assistant``/``tool``; user content is a string or parts
  ``{"type": "text"}`` / ``{"type": "image_url", "image_url": {"url", "detail"}}``; an assistant's
  tool calls are ``tool_calls: [{id, type: function, function: {name, arguments}}]`` with its text
  in ``tool_plan``; a tool result is ``{"role": "tool", "tool_call_id", "content"}``;
* ``tool_choice`` is ``REQUIRED`` or ``NONE`` (absent: auto); there is no "this tool" choice, so a
  named tool is sent as the only tool with ``REQUIRED`` (the same constraint);
* ``response_format: {"type": "json_object", "json_schema"?}``; sampling keys ``p``/``k``;
* a stream is events typed ``message-start``, ``content-start``/``-delta``/``-end``,
  ``tool-plan-delta``, ``tool-call-start`` (id, name), ``tool-call-delta`` (argument fragments),
  ``tool-call-end``, ``citation-*`` and ``message-end`` (``finish_reason``, ``usage``), each with the
  ``index`` of its content block or tool call.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ...errors import CapabilityError, SettingsError, StreamInterruptedError
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    FunctionCall,
    ImagePart,
    Message,
    ModelCapabilities,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    TokenLogProb,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["PROVIDER", "EMBED_BATCH", "chat_arguments", "parse_chat", "StreamDecoder", "embed_arguments",
           "image_embed_arguments",
           "INPUT_TYPES", "error_message"]

PROVIDER = "cohere"
#: texts per /v2/embed call, the API's limit
EMBED_BATCH = 96
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_SETTING_KEYS = {"temperature": "temperature", "topP": "p", "topK": "k", "maxOutputTokens": "max_tokens",
                 "stopSequences": "stop_sequences", "seed": "seed", "frequencyPenalty": "frequency_penalty",
                 "presencePenalty": "presence_penalty", "logProbs": "logprobs"}
_HANDLED = set(_SETTING_KEYS) | {"tools", "toolChoice", "responseFormat", "extra"}
_FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls",
           "ERROR": "error", "TIMEOUT": "error"}


# --------------------------------------------------------------------------------------------------
# chat requests


def check_request(model: str, request: CompletionRequest, caps: ModelCapabilities) -> None:
    s = request.settings
    bad = [k for k, v in s.to_dict().items() if k not in _HANDLED and v not in (False, [], {})]
    if bad:
        raise SettingsError(f"{PROVIDER} chat has no parameter for {', '.join(bad)} (logit bias and top "
                            "alternatives per token are not offered); remove "
                            f"{'them' if len(bad) > 1 else 'it'}", bad)
    needs = []
    if s.tools and not caps.tools:
        needs.append("tool calling")
    if s.responseFormat is not None and s.responseFormat.type == "json" and not caps.json_output:
        needs.append("JSON output")
    if any(p.type != "text" for m in request.messages for p in m.parts) and not caps.image_input:
        needs.append("image input")
    if needs:
        raise CapabilityError(f"{model} on Cohere does not offer {' or '.join(needs)}; use a model that does "
                              "(command-a for tools and JSON, command-a-vision for images) or declare the "
                              "model's capabilities in the config")


def _user_content(m: Message) -> Any:
    if all(p.type == "text" for p in m.parts):
        return m.text
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if p.type == "text":
            out.append({"type": "text", "text": p.text})
        else:
            url = p.data_url if isinstance(p, ImagePart) else p.url
            image: dict[str, Any] = {"url": url}
            if getattr(p, "detail", None):
                image["detail"] = p.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def messages_json(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role in ("system", "tool") and any(p.type != "text" for p in m.parts):
            raise CapabilityError(f"{PROVIDER} {m.role} messages carry text only; put images in a user message")
        if m.role == "system":
            out.append({"role": "system", "content": m.text})
        elif m.role == "user":
            out.append({"role": "user", "content": _user_content(m)})
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text})
        elif m.tool_calls:
            # the model's text beside tool calls is its tool plan, and is sent back as one
            msg: dict[str, Any] = {"role": "assistant", "tool_calls": [
                {"id": tc.id, "type": "function", "function": {"name": tc.function.name,
                                                               "arguments": tc.function.arguments or "{}"}}
                for tc in m.tool_calls]}
            if m.text:
                msg["tool_plan"] = m.text
            out.append(msg)
        else:
            out.append({"role": "assistant", "content": m.text})
    return out


def chat_arguments(model: str, request: CompletionRequest) -> dict[str, Any]:
    """Keyword arguments for ``ClientV2.chat`` / ``chat_stream`` (the SDK sends them as the body's keys)."""
    s = request.settings
    args: dict[str, Any] = {"model": model, "messages": messages_json(request.messages)}
    for setting, key in _SETTING_KEYS.items():
        value = getattr(s, setting)
        if value is not None:
            args[key] = value
    tools = s.tools or []
    choice = s.toolChoice
    if choice is not None and choice.type == "tool_name":
        tools = [t for t in tools if t.function.name == choice.name]
    if tools:
        args["tools"] = [{"type": "function", "function": {
            "name": t.function.name, "description": t.function.description or "",
            "parameters": t.function.parameters}} for t in tools]
    if choice is not None and choice.type != "auto":
        args["tool_choice"] = "NONE" if choice.type == "none" else "REQUIRED"
    fmt = s.responseFormat
    if fmt is not None and fmt.type == "json":
        args["response_format"] = {"type": "json_object", **({"json_schema": fmt.schema_} if fmt.schema_ else {})}
    for key in (s.extra or {}):
        if key in args or key in ("stream", "messages", "model"):
            raise SettingsError(f"extra.{key} is a key the mesh builds from the request and its settings; "
                                "use the message or the standard setting instead", ["extra"])
    return args


# --------------------------------------------------------------------------------------------------
# answers


def _usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage()
    # billed units are what Cohere charges; tokens (with the prompt template) when they are absent
    counts = u.get("billed_units") or u.get("tokens") or {}
    return Usage(input_tokens=int(counts.get("input_tokens") or 0), output_tokens=int(counts.get("output_tokens") or 0))


def _logprobs(items: Any) -> Optional[list[TokenLogProb]]:
    if not items:
        return None
    out = []
    for item in items if isinstance(items, list) else [items]:
        probs = item.get("logprobs") or []
        token = item.get("text") or ""
        # one item may cover several token ids; its text is the whole piece, its logprob their sum
        out.append(TokenLogProb(token=token, logprob=float(sum(probs))))
    return out


def _tool_calls(calls: Any) -> list[ToolCall]:
    return [ToolCall(id=c.get("id") or f"call_{i}", function=FunctionCall(
        name=(c.get("function") or {}).get("name") or "", arguments=(c.get("function") or {}).get("arguments") or "{}"))
        for i, c in enumerate(calls or [])]


def parse_chat(body: dict[str, Any], model: str) -> CompletionResponse:
    message = body.get("message") or {}
    text = "".join(c.get("text") or "" for c in message.get("content") or [] if c.get("type") == "text")
    calls = _tool_calls(message.get("tool_calls"))
    if calls and not text:
        text = message.get("tool_plan") or ""
    finish = _FINISH.get(body.get("finish_reason") or "") or ("tool_calls" if calls else "stop")
    return CompletionResponse(text=text, tool_calls=calls, finish_reason=finish,  # type: ignore[arg-type]
                              usage=_usage(body.get("usage")), log_probs=_logprobs(body.get("logprobs")),
                              model=model, raw=body)


class StreamDecoder:
    """Cohere stream events (dicts) -> mesh chunks; the footer comes only with ``message-end``."""

    def __init__(self, model: str):
        self.model = model
        self.text: list[str] = []
        self.events = 0
        self._calls: dict[int, dict[str, str]] = {}
        self._footer: Optional[StreamFooter] = None

    def feed(self, ev: dict[str, Any]) -> list[StreamEvent]:
        self.events += 1
        kind = ev.get("type")
        message = (ev.get("delta") or {}).get("message") or {}
        index = int(ev.get("index") or 0)
        if kind == "content-delta":
            piece = (message.get("content") or {}).get("text") or ""
            return self._text(piece, _logprobs(ev.get("logprobs")))
        if kind == "tool-plan-delta":
            return self._text(message.get("tool_plan") or "", None)
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            fn = call.get("function") or {}
            self._calls[index] = {"id": call.get("id") or f"call_{index}", "name": fn.get("name") or "",
                                  "arguments": fn.get("arguments") or ""}
            return [StreamChunk(tool_call_deltas=[ToolCallDelta(index=index, id=self._calls[index]["id"],
                                                                name=self._calls[index]["name"],
                                                                arguments=fn.get("arguments") or "")])]
        if kind == "tool-call-delta":
            piece = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments") or ""
            self._calls.setdefault(index, {"id": f"call_{index}", "name": "", "arguments": ""})["arguments"] += piece
            return [StreamChunk(tool_call_deltas=[ToolCallDelta(index=index, arguments=piece)])] if piece else []
        if kind == "message-end":
            delta = ev.get("delta") or {}
            calls = [ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                     for _, c in sorted(self._calls.items())]
            finish = _FINISH.get(delta.get("finish_reason") or "") or ("tool_calls" if calls else "stop")
            self._footer = StreamFooter(finish_reason=finish,  # type: ignore[arg-type]
                                        usage=_usage(delta.get("usage")), tool_calls=calls, model=self.model)
            return [self._footer]
        return []  # message-start, content-start/-end, tool-call-end, citations, debug

    def _text(self, piece: str, log_probs: Optional[list[TokenLogProb]]) -> list[StreamEvent]:
        if not piece:
            return []
        self.text.append(piece)
        return [StreamChunk(text=piece, log_probs=log_probs)]

    def check_ended(self) -> None:
        if self._footer is None:
            raise self.interrupted("the stream ended before message-end")

    def interrupted(self, why: str) -> StreamInterruptedError:
        return StreamInterruptedError(f"the {PROVIDER} stream broke off after {self.events} events ({why})",
                                      partial_text="".join(self.text), provider=PROVIDER)


# --------------------------------------------------------------------------------------------------
# embeddings


def embed_arguments(model: str, texts: list[str], request: EmbeddingRequest, default_input_type: str,
                    dimensions_ok: bool) -> dict[str, Any]:
    if request.dimensions is not None and not dimensions_ok:
        raise SettingsError(f"{model} on Cohere has a fixed vector size; output dimensions are chosen only for "
                            "embed-v4 models", ["dimensions"])
    input_type = {"query": "search_query", "document": "search_document"}.get(request.input_type or "",
                                                                               default_input_type)
    args: dict[str, Any] = {"model": model, "texts": texts, "input_type": input_type, "embedding_types": ["float"]}
    if request.dimensions is not None:
        args["output_dimension"] = request.dimensions
    return args


def image_embed_arguments(model: str, image: Any, request: EmbeddingRequest, dimensions_ok: bool) -> dict[str, Any]:
    """One image (a data URL, ``input_type: image``): Cohere embeds one image a call through ``images``."""
    if request.dimensions is not None and not dimensions_ok:
        raise SettingsError(f"{model} on Cohere has a fixed vector size; output dimensions are chosen only for "
                            "embed-v4 models", ["dimensions"])
    if image.mime_type not in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        raise SettingsError(f"{model} on Cohere embeds png, jpeg, gif or webp images, not {image.mime_type}",
                            ["images"])
    args: dict[str, Any] = {"model": model, "images": [image.data_url], "input_type": "image",
                            "embedding_types": ["float"]}
    if request.dimensions is not None:
        args["output_dimension"] = request.dimensions
    return args


def parse_embeddings(body: dict[str, Any]) -> tuple[list[list[float]], Usage]:
    vectors = (body.get("embeddings") or {}).get("float") or []
    billed = (body.get("meta") or {}).get("billed_units") or {}
    return [[float(x) for x in v] for v in vectors], Usage(input_tokens=int(billed.get("input_tokens") or 0))


# --------------------------------------------------------------------------------------------------
# errors


def error_message(body: Any) -> str:
    """Cohere's error body is ``{"id"?, "message"}``; the SDK hands it over parsed (or as text)."""
    if isinstance(body, dict):
        msg = body.get("message") or body.get("detail")
        return msg if isinstance(msg, str) else json.dumps(body)[:500]
    return str(body or "")[:500] or "(empty body)"
