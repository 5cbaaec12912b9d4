"""The Anthropic Messages API, both ways: mesh requests -> ``POST /v1/messages`` bodies, and JSON
answers / server-sent events -> mesh responses. Pure functions over dicts (no I/O), so the sync and
async paths of :mod:`.anthropic` share every line of translation.

Wire facts this module relies on (Messages API reference, ``anthropic-version: 2023-06-01``):

* ``system`` is a top-level parameter, not a message role; ``messages`` alternate ``user`` and
  ``assistant`` turns (consecutive turns of one role are merged here, as the API would);
* ``max_tokens`` is required;
* an assistant's tool calls are ``tool_use`` content blocks ``{"id", "name", "input": {...}}``; their
  results go back as ``tool_result`` blocks ``{"tool_use_id", "content"}`` at the start of the next
  *user* turn, one turn for all the results of one assistant turn;
* images are ``image`` blocks with a ``base64`` source (``media_type``, ``data``) or a ``url`` source;
* ``tool_choice`` is ``{"type": "auto"|"any"|"none"}`` or ``{"type": "tool", "name"}``;
* a stream is named events: ``message_start`` (model, input and cache usage), per content block
  ``content_block_start`` (a ``text`` block, or a ``tool_use`` block with ``id`` and ``name``),
  ``content_block_delta`` (``text_delta``, or ``input_json_delta`` fragments of the tool input),
  ``content_block_stop``; then ``message_delta`` (``stop_reason``, cumulative output usage) and
  ``message_stop``; ``ping`` anywhere, and ``error`` when the API fails mid-stream;
* usage counts ``input_tokens`` *excluding* cached ones, ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` beside it.

There is no JSON mode in this API version: ``responseFormat`` becomes a tool the model is forced to
call (its ``input_schema`` is the requested schema, ``{"type": "object"}`` for any JSON object), and
the input of that call is returned as the answer's text (streamed as text too). The schema guides
the model; the API does not enforce it, so ``strict`` is best effort.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Iterator, Optional

from ...errors import (
    CapabilityError,
    ProviderError,
    SettingsError,
    StreamInterruptedError,
    ToolSchemaError,
    answer_object,
    error_for_status,
)
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    FunctionCall,
    ImagePart,
    ImageURLPart,
    Message,
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "PROVIDER", "MESSAGES_PATH", "model_info", "capabilities_for", "default_max_tokens", "message_body",
    "parse_message", "StreamDecoder", "SSEFramer", "iter_sse", "error_message", "ERROR_STATUS",
]

PROVIDER = "anthropic"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
#: the keys of a Messages body that count_tokens takes (the prompt, not the generation settings)
COUNT_TOKENS_KEYS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking"})

#: seed settings the Messages API has a parameter for; any other is refused (see unsupported_settings)
SUPPORTED_SETTINGS = frozenset({"temperature", "topK", "topP", "maxOutputTokens", "stopSequences", "tools",
                                "toolChoice", "responseFormat", "extra"})
#: body keys built from the request; ``extra`` may add others (metadata, service_tier...) but not these
BUILT_KEYS = frozenset({"model", "messages", "system", "max_tokens", "stream", "temperature", "top_k", "top_p",
                        "stop_sequences", "tools", "tool_choice"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: the name of the forced tool carrying a JSON answer when the response format names none
ANSWER_TOOL = "json_answer"
ANSWER_TOOL_DESCRIPTION = "Give your whole answer as this tool's input: a JSON value following its schema."
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")  # no '.', which the mesh's own rule allows
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
           "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
#: the HTTP status of each error type Anthropic names (an ``error`` event carries only the type)
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


# --------------------------------------------------------------------------------------------------
# models

_FULL = ModelCapabilities(streaming=True, tools=True, tool_choice=True, json_output=True, structured_output=True,
                          image_input=True)
_LEGACY = ModelCapabilities(streaming=True)  # Claude 2 / Instant: text only

# (id, context window, max output tokens, description)
_MODELS = [
    ("claude-opus-4-5-20251101", 200_000, 64_000, "Claude Opus 4.5"),
    ("claude-opus-4-1-20250805", 200_000, 32_000, "Claude Opus 4.1"),
    ("claude-opus-4-20250514", 200_000, 32_000, "Claude Opus 4"),
    ("claude-sonnet-4-5-20250929", 200_000, 64_000, "Claude Sonnet 4.5"),
    ("claude-sonnet-4-20250514", 200_000, 64_000, "Claude Sonnet 4"),
    ("claude-haiku-4-5-20251001", 200_000, 64_000, "Claude Haiku 4.5"),
    ("claude-3-7-sonnet-20250219", 200_000, 64_000, "Claude 3.7 Sonnet"),
    ("claude-3-5-sonnet-20241022", 200_000, 8_192, "Claude 3.5 Sonnet v2"),
    ("claude-3-5-sonnet-20240620", 200_000, 8_192, "Claude 3.5 Sonnet"),
    ("claude-3-5-haiku-20241022", 200_000, 8_192, "Claude 3.5 Haiku"),
    ("claude-3-opus-20240229", 200_000, 4_096, "Claude 3 Opus"),
    ("claude-3-haiku-20240307", 200_000, 4_096, "Claude 3 Haiku"),
]
_BY_ID = {m[0]: m for m in _MODELS}
#: Anthropic's aliases, which point at the newest snapshot of a model
ALIASES = {"claude-opus-4-5": "claude-opus-4-5-20251101", "claude-opus-4-1": "claude-opus-4-1-20250805",
           "claude-opus-4-0": "claude-opus-4-20250514", "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
           "claude-sonnet-4-0": "claude-sonnet-4-20250514", "claude-haiku-4-5": "claude-haiku-4-5-20251001",
           "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
           "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
           "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022", "claude-3-opus-latest": "claude-3-opus-20240229"}
#: ``max_tokens`` sent when the caller sets no ``maxOutputTokens``: the model's maximum, up to this,
#: so that an answer not streamed still fits in the default timeout (the API requires some value)
DEFAULT_MAX_TOKENS_CAP = 8_192
_UNKNOWN_MAX_TOKENS = 4_096


def model_info(model: str) -> Optional[ModelInfo]:
    row = _BY_ID.get(ALIASES.get(model, model))
    if row is None:
        return None
    _, ctx, out, desc = row
    alias = f", alias of {ALIASES[model]}" if model in ALIASES else ""
    return ModelInfo(id=model, purposes=[Purpose.GENERIC_COMPLETION],
                     description=f"{desc} ({out} output tokens at most{alias})",
                     capabilities=_FULL.model_copy(update={"context_window": ctx}))


def default_models() -> list[ModelInfo]:
    """The aliases (what most callers type) and the dated snapshots they point at."""
    return [info for info in map(model_info, [*ALIASES, *_BY_ID]) if info is not None]


def capabilities_for(model: str) -> ModelCapabilities:
    """A configured model the table does not know: Claude 2 and Instant are text only, the rest Claude 3+."""
    info = model_info(model)
    if info is not None:
        return info.capabilities
    return _LEGACY if model.startswith(("claude-2", "claude-instant")) else _FULL


def default_max_tokens(model: str) -> int:
    row = _BY_ID.get(ALIASES.get(model, model))
    return min(row[2], DEFAULT_MAX_TOKENS_CAP) if row else _UNKNOWN_MAX_TOKENS


# --------------------------------------------------------------------------------------------------
# requests


def unsupported_settings(request: CompletionRequest) -> list[str]:
    """Seed settings set to something the Messages API cannot give (``False``, ``[]``, ``{}`` ask for nothing)."""
    return [k for k, v in request.settings.to_dict().items()
            if k not in SUPPORTED_SETTINGS and v not in (False, [], {})]


def check_request(model: str, request: CompletionRequest, caps: ModelCapabilities, drop_unsupported: bool) -> None:
    """Refuse, before any network call, what the API or this model cannot do."""
    bad = [] if drop_unsupported else unsupported_settings(request)
    if bad:
        raise SettingsError(
            f"{PROVIDER} does not support the setting{'s' if len(bad) > 1 else ''} {', '.join(bad)}: the Messages "
            "API takes temperature, topK, topP, maxOutputTokens, stopSequences, tools, toolChoice and "
            "responseFormat (and provider keys under 'extra'); remove the others or set "
            "drop_unsupported_settings: true on the connection", bad)
    s = request.settings
    if s.temperature is not None and s.temperature > 1:
        raise SettingsError(f"{PROVIDER} takes a temperature between 0 and 1, got {s.temperature}", ["temperature"])
    fmt = s.responseFormat
    if fmt is not None and fmt.type == "json":
        if s.tools:
            raise SettingsError(f"JSON output on {PROVIDER} is a forced call of an answer tool, so it cannot be "
                                "combined with tools; ask for one or the other", ["responseFormat", "tools"])
        if (fmt.schema_ or {}).get("type", "object") != "object":
            raise SettingsError(f"JSON output on {PROVIDER} is a tool's input, which must be an object; wrap the "
                                "schema in an object property", ["responseFormat"])
    needs = []
    if s.tools and not caps.tools:
        needs.append("tool calling")
    if fmt is not None and fmt.type == "json" and not caps.json_output:
        needs.append("JSON output")
    if not caps.image_input and any(isinstance(p, (ImagePart, ImageURLPart)) for m in request.messages
                                    for p in m.parts):
        needs.append("image input")
    if needs:
        raise CapabilityError(f"{model} does not offer {' or '.join(needs)} on {PROVIDER}; use a Claude 3 or "
                              "newer model, or declare the model's capabilities in the config")


def answer_tool(request: CompletionRequest) -> Optional[str]:
    """The name of the forced tool that carries a JSON answer, when the request asks for JSON."""
    fmt = request.settings.responseFormat
    if fmt is None or fmt.type != "json":
        return None
    return fmt.name if fmt.name and _TOOL_NAME.match(fmt.name) else ANSWER_TOOL


def _image_block(part: Any) -> dict[str, Any]:
    if isinstance(part, ImageURLPart):
        if not part.url.startswith("data:"):
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        part = ImagePart.from_data_url(part.url)
    if part.mime_type not in IMAGE_TYPES:
        raise CapabilityError(f"{PROVIDER} does not read {part.mime_type} images; "
                              f"it takes {', '.join(sorted(IMAGE_TYPES))}")
    return {"type": "image", "source": {"type": "base64", "media_type": part.mime_type, "data": part.base64}}


def _user_content(m: Message) -> Any:
    if isinstance(m.content, str):
        return m.content
    return [{"type": "text", "text": p.text} if p.type == "text" else _image_block(p) for p in m.parts]


def _arguments_object(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise SettingsError(f"tool call arguments must be a JSON object to send to {PROVIDER}, got "
                            f"{arguments[:60]!r}", ["messages"])
    return value


def _assistant_content(m: Message) -> Any:
    if any(p.type != "text" for p in m.parts):
        raise CapabilityError(f"{PROVIDER} assistant turns carry text and tool calls only, not images")
    if not m.tool_calls and isinstance(m.content, str):
        return m.content
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.text}] if m.text else []
    blocks += [{"type": "tool_use", "id": tc.id, "name": tc.function.name,
                "input": _arguments_object(tc.function.arguments)} for tc in m.tool_calls or []]
    return blocks


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _append(out: list[dict[str, Any]], role: str, content: Any) -> None:
    """Add a turn, merging it into the previous one of the same role (the API wants alternating turns)."""
    if out and out[-1]["role"] == role:
        out[-1]["content"] = _blocks(out[-1]["content"]) + _blocks(content)
    else:
        out.append({"role": role, "content": content})


def messages_json(messages: Iterable[Message]) -> tuple[Optional[str], list[dict[str, Any]]]:
    """``(system, messages)``: system messages hoisted to the top-level prompt, the rest as turns."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            if any(p.type != "text" for p in m.parts):
                raise CapabilityError(f"{PROVIDER} system prompts carry text only; put images in a user message")
            system.append(m.text)
        elif m.role == "tool":
            # results of one assistant turn land in one user turn, before any text that follows them
            content = _user_content(m) if m.content is not None else ""
            _append(out, "user", [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": content}])
        elif m.role == "user":
            _append(out, "user", _user_content(m))
        elif m.text or m.tool_calls:  # an empty assistant turn says nothing, and the API refuses it
            _append(out, "assistant", _assistant_content(m))
    return ("\n\n".join(system) if system else None), out


def _tools_json(request: CompletionRequest) -> list[dict[str, Any]]:
    tools = []
    for t in request.settings.tools or []:
        f = t.function
        if not _TOOL_NAME.match(f.name):
            raise ToolSchemaError(f"tool name {f.name!r} is invalid on {PROVIDER}: use 1-128 letters, digits, "
                                  "'_' or '-'")
        spec: dict[str, Any] = {"name": f.name, "input_schema": f.parameters}
        if f.description:
            spec["description"] = f.description
        tools.append(spec)
    return tools


def _tool_choice_json(request: CompletionRequest) -> Optional[dict[str, Any]]:
    tc = request.settings.toolChoice
    if tc is None or not request.settings.tools:  # the API refuses a tool_choice without tools
        return None
    if tc.type == "tool_name":
        return {"type": "tool", "name": tc.name}
    return {"type": {"required": "any"}.get(tc.type, tc.type)}


def message_body(model: str, request: CompletionRequest, *, stream: bool,
                 default_max_tokens_value: Optional[int] = None) -> dict[str, Any]:
    s = request.settings
    system, messages = messages_json(request.messages)
    body: dict[str, Any] = {"model": model, "messages": messages,
                            "max_tokens": s.maxOutputTokens or default_max_tokens_value or default_max_tokens(model)}
    if system is not None:
        body["system"] = system
    if stream:
        body["stream"] = True
    if s.temperature is not None:
        body["temperature"] = s.temperature
    if s.topK is not None:
        body["top_k"] = s.topK
    if s.topP is not None:
        body["top_p"] = s.topP
    if s.stopSequences:
        body["stop_sequences"] = s.stopSequences
    if s.tools:
        body["tools"] = _tools_json(request)
    choice = _tool_choice_json(request)
    if choice is not None:
        body["tool_choice"] = choice
    name, fmt = answer_tool(request), s.responseFormat
    if name is not None and fmt is not None:
        body["tools"] = [{"name": name, "description": ANSWER_TOOL_DESCRIPTION,
                          "input_schema": fmt.schema_ or {"type": "object"}}]
        body["tool_choice"] = {"type": "tool", "name": name}
    for key, value in (s.extra or {}).items():
        if key in BUILT_KEYS:
            raise SettingsError(f"extra.{key} is a key the mesh builds from the request and its settings; "
                                "use the message or the standard setting instead", ["extra"])
        body[key] = value
    return body


# --------------------------------------------------------------------------------------------------
# responses


def parse_usage(u: Any, into: Optional[Usage] = None) -> Usage:
    """Anthropic's usage as the mesh's: ``input_tokens`` counts every prompt token, cached ones included.

    Stream usage arrives in two parts (``message_start``, then cumulative counts in ``message_delta``):
    ``into`` is what is known so far, overridden by the counts ``u`` carries.
    """
    prev = into or Usage()
    u = u if isinstance(u, dict) else {}
    read = u.get("cache_read_input_tokens", prev.cached_input_tokens)
    created = u.get("cache_creation_input_tokens", prev.cache_creation_input_tokens)
    uncached = u.get("input_tokens")
    if uncached is None:  # not in this event: what was counted before, less its cache parts
        uncached = prev.input_tokens - (prev.cached_input_tokens or 0) - (prev.cache_creation_input_tokens or 0)
    output = u.get("output_tokens", prev.output_tokens) or 0
    return Usage(input_tokens=uncached + (read or 0) + (created or 0), output_tokens=output,
                 cached_input_tokens=read, cache_creation_input_tokens=created)


def finish_reason(stop_reason: Any, answer: bool) -> Optional[str]:
    reason = _FINISH.get(stop_reason) if isinstance(stop_reason, str) else None
    # the forced answer tool ends the turn with tool_use, but to the caller it is a finished answer
    return "stop" if answer and reason == "tool_calls" else reason


def parse_message(body: dict[str, Any], model: str, answer: Optional[str] = None) -> CompletionResponse:
    """A non-streamed ``message``; ``answer`` names the forced JSON-answer tool, if the request had one."""
    text: list[str] = []
    calls: list[ToolCall] = []
    answered = False
    for block in answer_object(body, "anthropic").get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "tool_use" and answer is not None and block.get("name") == answer:
            # a forced tool call is the whole turn (the API writes no text before it)
            text.append(json.dumps(block.get("input") if block.get("input") is not None else {}))
            answered = True
        elif kind == "tool_use":
            calls.append(ToolCall(id=block.get("id") or f"toolu_{len(calls)}",
                                  function=FunctionCall(name=block.get("name") or "",
                                                        arguments=json.dumps(block.get("input") or {}))))
    finish = finish_reason(body.get("stop_reason"), answered) or ("tool_calls" if calls else "stop")
    return CompletionResponse(text="".join(text), tool_calls=calls, finish_reason=finish,  # type: ignore[arg-type]
                              usage=parse_usage(body.get("usage")), model=body.get("model") or model, raw=body)


class SSEFramer:
    """Server-sent event framing, one line at a time (sync and async line sources share it)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def line(self, line: str) -> Optional[tuple[str, str]]:
        """``(event, data)`` when ``line`` completes an event (multi-line data joined; comments skipped)."""
        if not line:
            return self.end()
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:"):
            self._data.append(line[5:].lstrip(" "))
        return None

    def end(self) -> Optional[tuple[str, str]]:
        """The pending event, if any (also what a final event without its blank line leaves)."""
        out = (self._event, "\n".join(self._data)) if self._data else None
        self._event, self._data = "", []
        return out


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` of each server-sent event."""
    framer = SSEFramer()
    for line in lines:
        ev = framer.line(line)
        if ev is not None:
            yield ev
    ev = framer.end()
    if ev is not None:
        yield ev


class StreamDecoder:
    """Anthropic stream events -> mesh stream events.

    Content blocks are numbered by the API (``index``); tool calls get their own 0-based index in the
    order their blocks open, so ``ToolCallDelta.index`` counts calls, not blocks. A body that ends
    before ``message_stop`` is an interrupted stream.
    """

    def __init__(self, model: str, answer: Optional[str] = None):
        self.model = model
        self.answer = answer
        self.text: list[str] = []
        self.events = 0
        self.stopped = False
        self._blocks: dict[int, tuple[str, int]] = {}  # block index -> ("text"|"tool"|"answer"|"other", call index)
        self._calls: list[dict[str, str]] = []
        self._usage = Usage()
        self._stop_reason: Optional[str] = None
        self._answered = False

    def feed(self, event: str, data: str) -> list[StreamEvent]:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            raise ProviderError(f"{PROVIDER} sent a stream event that is not JSON: {data[:80]!r}",
                                provider=PROVIDER) from None
        self.events += 1
        kind = payload.get("type") or event
        if kind == "content_block_delta":
            return self._delta(payload)
        if kind == "content_block_start":
            return self._start(payload)
        if kind == "message_start":
            message = payload.get("message") or {}
            self.model = message.get("model") or self.model
            self._usage = parse_usage(message.get("usage"))
        elif kind == "message_delta":
            self._stop_reason = (payload.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._usage = parse_usage(payload.get("usage"), self._usage)
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            raise self._error(payload.get("error") or {})
        return []  # ping, content_block_stop, and event types added after this was written

    def _start(self, payload: dict[str, Any]) -> list[StreamEvent]:
        block = payload.get("content_block") or {}
        index = payload.get("index", len(self._blocks))
        if block.get("type") == "text":
            self._blocks[index] = ("text", -1)
            return self._text(block.get("text") or "")
        if block.get("type") != "tool_use":  # thinking and server-tool blocks are not the answer
            self._blocks[index] = ("other", -1)
            return []
        if self.answer is not None and block.get("name") == self.answer:
            self._blocks[index] = ("answer", -1)
            self._answered = True
            return []
        call = len(self._calls)
        self._calls.append({"id": block.get("id") or f"toolu_{call}", "name": block.get("name") or "", "arguments": ""})
        self._blocks[index] = ("tool", call)
        return [StreamChunk(tool_call_deltas=[ToolCallDelta(index=call, id=self._calls[call]["id"],
                                                            name=self._calls[call]["name"])])]

    def _delta(self, payload: dict[str, Any]) -> list[StreamEvent]:
        delta = payload.get("delta") or {}
        kind, call = self._blocks.get(payload.get("index", -1), ("other", -1))
        if delta.get("type") == "text_delta" and kind == "text":
            return self._text(delta.get("text") or "")
        if delta.get("type") != "input_json_delta":
            return []
        piece = delta.get("partial_json") or ""
        if kind == "answer":
            return self._text(piece)
        if kind != "tool" or not piece:
            return []
        self._calls[call]["arguments"] += piece
        return [StreamChunk(tool_call_deltas=[ToolCallDelta(index=call, arguments=piece)])]

    def _text(self, piece: str) -> list[StreamEvent]:
        if not piece:
            return []
        self.text.append(piece)
        return [StreamChunk(text=piece)]

    def _error(self, error: dict[str, Any]) -> ProviderError:
        kind = error.get("type") or "api_error"
        message = f"{error.get('message') or 'stream error'} ({kind})"
        if self.text or self._calls:  # some of the answer went out already: it is not a complete answer
            return StreamInterruptedError(f"the {PROVIDER} stream failed mid-answer: {message}",
                                          partial_text="".join(self.text), provider=PROVIDER,
                                          status=ERROR_STATUS.get(kind), provider_message=message)
        return error_for_status(ERROR_STATUS.get(kind, 500), message, provider=PROVIDER)

    def footer(self) -> StreamFooter:
        """The closing event, once the body has ended; a body without ``message_stop`` was cut."""
        if not self.stopped:
            raise StreamInterruptedError(
                f"the {PROVIDER} stream ended after {self.events} events without message_stop; the partial answer "
                "was not returned as a success", partial_text="".join(self.text), provider=PROVIDER)
        calls = [ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                 for c in self._calls]
        finish = finish_reason(self._stop_reason, self._answered) or ("tool_calls" if calls else "stop")
        return StreamFooter(finish_reason=finish, usage=self._usage, tool_calls=calls,  # type: ignore[arg-type]
                            model=self.model)


# --------------------------------------------------------------------------------------------------
# errors


def error_message(body: Any, fallback: str = "") -> str:
    """``message (type)`` of an Anthropic error body ``{"type": "error", "error": {"type", "message"}}``."""
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        msg, kind = err.get("message"), err.get("type")
        if msg:
            return f"{msg} ({kind})" if kind and kind != "error" else str(msg)
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback or "(no error message)"


def parse_token_count(data: Any) -> int:
    """``{"input_tokens": n}`` -> n."""
    n = data.get("input_tokens") if isinstance(data, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise ProviderError(f"{PROVIDER} answered count_tokens without input_tokens: {str(data)[:200]}",
                            provider=PROVIDER)
    return n
