"""A local Anthropic Messages API, for offline tests of the ``anthropic`` connection or any Anthropic client.

Speaks ``POST /v1/messages`` (a ``message`` object, or with ``"stream": true`` server-sent events
with Anthropic's event names: ``message_start``, ``ping``, ``content_block_start`` /
``content_block_delta`` (``text_delta``, ``input_json_delta``) / ``content_block_stop``,
``message_delta``, ``message_stop``), ``POST /v1/messages/count_tokens`` (``{"input_tokens": n}``, counted as
a Messages call reports its input) and ``GET /v1/models``. Point the real SDK at it::

    import anthropic
    from langchain_mesh.testing.anthropic import AnthropicServer

    with AnthropicServer() as srv:                   # api_key="test-key"
        client = anthropic.Anthropic(base_url=srv.base_url, api_key="test-key", max_retries=0)
        srv.script(text="Paris")                     # the next answer
        srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])     # a tool_use turn
        srv.script(status=429, error_message="slow down", headers={"retry-after": "2"})
        srv.script(status=529)                       # overloaded_error
        srv.script(text="a b c d", cut_after=3)      # the stream dies after 3 events
        srv.script(text="a b c", error_type="overloaded_error")  # streams, then an `error` event
        srv.last_request.json                        # what the client sent

Every request is checked as the API does, in this order: ``x-api-key`` (or ``Authorization: Bearer``
for OAuth tokens) must be the server's key, else 401 ``authentication_error``; ``anthropic-version``
must be present and a ``YYYY-MM-DD`` date (or one of ``versions``), else 400. Then the body:
``model`` and ``max_tokens`` required (``max_tokens`` within a known model's output limit), unknown
fields refused, roles ``user``/``assistant`` only (a ``system`` role is refused with the API's hint),
consecutive same-role turns merged and the first turn the user's, content blocks of the right kind
for their role (text non-empty, images with a ``base64`` source of an accepted media type or a
``url`` source), every ``tool_use`` answered by a ``tool_result`` in the next turn and every
``tool_result`` answering a ``tool_use`` of the turn before, tools with valid names and object input
schemas, ``tool_choice`` consistent with the tools, sampling parameters in range. A problem answers
400 ``invalid_request_error`` with the API's error body ``{"type": "error", "error": {"type",
"message"}, "request_id"}``; only then does a scripted error or answer apply.

Unscripted, the answer echoes the text of the last user turn (or, under a ``tool_choice`` that
forces a tool, calls it with an instance of its schema). ``max_tokens`` cuts the answer
(``stop_reason: max_tokens``), a stop sequence in it ends it there (``stop_sequence``). Scripted
``finish_reason`` is sent as the ``stop_reason`` (``refusal``...), ``usage`` keys are added to the
usage (``cache_read_input_tokens``...). Token counts use a simple word-and-punctuation tokenizer.

``python -m langchain_mesh.testing.anthropic --port 8080`` serves it (key ``test-key``).
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import time
from typing import Any, Iterator, Optional, Sequence

from .fakes import count_tokens, sample_from_schema
from .wire import RecordedRequest, Reply, Responder, WireServer, serve_main

__all__ = ["AnthropicServer", "MESSAGES_PATH", "MODELS_PATH", "ERROR_TYPES", "MAX_OUTPUT_TOKENS"]

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"

#: the error type Anthropic names in its body for each status
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
#: output limits the API enforces on ``max_tokens`` for these models (others: not checked)
MAX_OUTPUT_TOKENS = {
    "claude-opus-4-5-20251101": 64_000, "claude-opus-4-1-20250805": 32_000, "claude-opus-4-20250514": 32_000,
    "claude-sonnet-4-5-20250929": 64_000, "claude-sonnet-4-20250514": 64_000, "claude-haiku-4-5-20251001": 64_000,
    "claude-3-7-sonnet-20250219": 64_000, "claude-3-5-sonnet-20241022": 8_192, "claude-3-5-sonnet-20240620": 8_192,
    "claude-3-5-haiku-20241022": 8_192, "claude-3-opus-20240229": 4_096, "claude-3-haiku-20240307": 4_096,
}
_BODY_KEYS = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
              "top_k", "top_p", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
              "context_management", "output_config", "cache_control", "inference_geo"}
# what count_tokens takes: the prompt, not the generation settings
_COUNT_KEYS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
               "context_management", "output_config", "cache_control"}
_BLOCKS = {"user": {"text", "image", "document", "tool_result", "search_result"},
           "assistant": {"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use"}}
_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PIECE = re.compile(r"\s*\S+")  # one streamed text delta: a word with the space before it


class _Invalid(Exception):
    """A request the API refuses: the status and error type, and the message of its body."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")[:24]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for b in content or []:
        if b.get("type") == "text":
            out.append(b.get("text") or "")
        elif b.get("type") == "tool_result":
            out.append(_text_of(b.get("content")))
    return " ".join(t for t in out if t)


class AnthropicServer(WireServer):
    provider = "anthropic"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = "test-key",
                 models: Optional[Sequence[str]] = None, versions: Optional[Sequence[str]] = None):
        """``models`` limits the accepted model ids (None: any); ``versions`` the accepted
        ``anthropic-version`` values (None: any date)."""
        super().__init__(host, port)
        self.api_key = api_key
        self.models = list(models) if models is not None else None
        self.versions = list(versions) if versions is not None else None

    @property
    def base_url(self) -> str:
        """What the SDK takes as ``base_url`` (it adds ``/v1/...`` itself)."""
        return self.url

    # ---- routing and errors ------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        routes = {MESSAGES_PATH: ("POST", self._messages), MODELS_PATH: ("GET", self._list_models),
                  COUNT_TOKENS_PATH: ("POST", self._count_tokens)}
        if request.path not in routes:
            self.not_found(request, respond)
            return
        method, answer = routes[request.path]
        try:
            if request.method != method:
                raise _Invalid(f"Method Not Allowed: use {method} {request.path}", 405)
            self._authenticate(request)
            try:
                body = request.json if method == "POST" else None
            except ValueError:
                raise _Invalid("There was an issue with your request body: it is not valid JSON") from None
            answer(body, respond)
        except _Invalid as e:
            self._error(respond, e.status, str(e))

    def not_found(self, request: RecordedRequest, respond: Responder) -> None:
        self._error(respond, 404, f"Not Found: {request.method} {request.path}")

    @staticmethod
    def _error(respond: Responder, status: int, message: str, kind: Optional[str] = None,
               headers: Optional[dict[str, str]] = None) -> None:
        rid = _new_id("req_")
        body = {"type": "error", "error": {"type": kind or ERROR_TYPES.get(status, "api_error"), "message": message},
                "request_id": rid}
        respond.json(status, body, {"request-id": rid, **(headers or {})})

    def _authenticate(self, request: RecordedRequest) -> None:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization") or ""
        if key is None and auth.startswith("Bearer "):
            key = auth[len("Bearer "):]
        if key is None:
            raise _Invalid("x-api-key header is required", 401)
        if key != self.api_key:
            raise _Invalid("invalid x-api-key", 401)
        version = request.headers.get("anthropic-version")
        if not version:
            raise _Invalid("anthropic-version: header is required")
        if not _VERSION.match(version) or (self.versions is not None and version not in self.versions):
            raise _Invalid(f'anthropic-version: "{version}" is not a valid version')

    def _scripted(self, respond: Responder) -> Optional[Reply]:
        """The next script, after its delay; None once a scripted error or raw body was sent."""
        reply = self.next_reply() or Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            self._error(respond, reply.status, reply.error_message or f"scripted HTTP {reply.status}",
                        reply.error_type, reply.headers)
            return None
        if reply.json_body is not None:
            respond.json(200, reply.json_body, reply.headers)
            return None
        return reply

    # ---- validation ----------------------------------------------------------------------------------------

    def _check(self, body: Any) -> list[dict[str, Any]]:
        """Validate a Messages request; returns its turns, consecutive same-role ones merged."""
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a JSON object")
        unknown = sorted(set(body) - _BODY_KEYS)
        if unknown:
            raise _Invalid(f"{unknown[0]}: Extra inputs are not permitted")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Invalid("model: Field required")
        if self.models is not None and model not in self.models:
            raise _Invalid(f"model: {model}", 404)
        limit = body.get("max_tokens")
        if limit is None:
            raise _Invalid("max_tokens: Field required")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _Invalid("max_tokens: Input should be a valid integer greater than or equal to 1")
        if model in MAX_OUTPUT_TOKENS and limit > MAX_OUTPUT_TOKENS[model]:
            raise _Invalid(f"max_tokens: {limit} > {MAX_OUTPUT_TOKENS[model]}, which is the maximum allowed number "
                           f"of output tokens for {model}")
        self._check_number(body, "temperature", 0, 1)
        self._check_number(body, "top_p", 0, 1)
        if "top_k" in body and (isinstance(body["top_k"], bool) or not isinstance(body["top_k"], int)
                                or body["top_k"] < 0):
            raise _Invalid("top_k: Input should be a non-negative integer")
        stops = body.get("stop_sequences")
        if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
            raise _Invalid("stop_sequences: Input should be a list of non-empty strings")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _Invalid("stream: Input should be a valid boolean")
        self._check_system(body.get("system"))
        names = self._check_tools(body.get("tools"))
        self._check_tool_choice(body.get("tool_choice"), names)
        return self._check_messages(body.get("messages"))

    @staticmethod
    def _check_number(body: dict[str, Any], key: str, low: float, high: float) -> None:
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high):
            raise _Invalid(f"{key}: Input should be a number between {low} and {high}")

    def _check_system(self, system: Any) -> None:
        if system is None or isinstance(system, str):
            return
        if not isinstance(system, list):
            raise _Invalid("system: Input should be a valid string or a list of text blocks")
        for i, b in enumerate(system):
            if not isinstance(b, dict) or b.get("type") != "text":
                raise _Invalid(f"system.{i}.type: Input should be 'text'")
            self._check_text(b, f"system.{i}")

    def _check_messages(self, messages: Any) -> list[dict[str, Any]]:
        if not isinstance(messages, list):
            raise _Invalid("messages: Field required" if messages is None else "messages: Input should be a valid list")
        if not messages:
            raise _Invalid("messages: at least one message is required")
        turns: list[dict[str, Any]] = []
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role == "system":
                raise _Invalid('messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                               'parameter, not "system" as an input message role.')
            if role not in ("user", "assistant"):
                raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            blocks = self._check_content(m.get("content"), role, f"messages.{i}",
                                         final_assistant=role == "assistant" and i == len(messages) - 1)
            if turns and turns[-1]["role"] == role:  # the API merges consecutive same-role turns
                turns[-1]["content"] += blocks
            else:
                turns.append({"role": role, "content": blocks, "index": i})
        if turns[0]["role"] != "user":
            raise _Invalid('messages: first message must use the "user" role')
        self._check_tool_pairs(turns)
        return turns

    def _check_content(self, content: Any, role: str, at: str, final_assistant: bool) -> list[dict[str, Any]]:
        if isinstance(content, str):
            if not content and not final_assistant:
                raise _Invalid(f"{at}: all messages must have non-empty content except for the optional final "
                               "assistant message")
            return [{"type": "text", "text": content}] if content else []
        if not isinstance(content, list):
            raise _Invalid(f"{at}.content: Input should be a valid string or list of content blocks")
        if not content and not final_assistant:
            raise _Invalid(f"{at}: all messages must have non-empty content except for the optional final "
                           "assistant message")
        for j, b in enumerate(content):
            kind = b.get("type") if isinstance(b, dict) else None
            where = f"{at}.content.{j}"
            if kind not in _BLOCKS[role]:
                raise _Invalid(f"{where}.type: Input tag '{kind}' is not a valid {role} content block; expected "
                               f"one of {', '.join(sorted(_BLOCKS[role]))}")
            if kind == "text":
                self._check_text(b, where)
            elif kind == "image":
                self._check_image(b, where)
            elif kind == "tool_use":
                if not isinstance(b.get("id"), str) or not _TOOL_ID.match(b["id"]):
                    raise _Invalid(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
                if not isinstance(b.get("name"), str) or not b["name"]:
                    raise _Invalid(f"{where}.name: Field required")
                if not isinstance(b.get("input"), dict):
                    raise _Invalid(f"{where}.input: Input should be a valid dictionary")
            elif kind == "tool_result":
                self._check_tool_result(b, where)
        return list(content)

    @staticmethod
    def _check_text(b: dict[str, Any], at: str) -> None:
        if not isinstance(b.get("text"), str):
            raise _Invalid(f"{at}.text: Field required")
        if not b["text"]:
            raise _Invalid(f"{at}: text content blocks must be non-empty")

    @staticmethod
    def _check_image(b: dict[str, Any], at: str) -> None:
        src = b.get("source") if isinstance(b.get("source"), dict) else {}
        if src.get("type") == "base64":
            if src.get("media_type") not in _MEDIA_TYPES:
                raise _Invalid(f"{at}.source.base64.media_type: Input should be {', '.join(map(repr, _MEDIA_TYPES))}")
            try:
                base64.b64decode(src.get("data") or "", validate=True)
            except ValueError:
                raise _Invalid(f"{at}.source.base64.data: invalid base64 data") from None
            if not src.get("data"):
                raise _Invalid(f"{at}.source.base64.data: Field required")
        elif src.get("type") == "url":
            if not str(src.get("url") or "").startswith(("https://", "http://")):
                raise _Invalid(f"{at}.source.url.url: Input should be an http(s) URL")
        else:
            raise _Invalid(f"{at}.source: Input tag '{src.get('type')}' does not match 'base64', 'url' or 'file'")

    def _check_tool_result(self, b: dict[str, Any], at: str) -> None:
        if not isinstance(b.get("tool_use_id"), str) or not _TOOL_ID.match(b["tool_use_id"]):
            raise _Invalid(f"{at}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        content = b.get("content")
        if isinstance(content, list):
            for k, item in enumerate(content):
                kind = item.get("type") if isinstance(item, dict) else None
                if kind == "text":
                    self._check_text(item, f"{at}.content.{k}")
                elif kind == "image":
                    self._check_image(item, f"{at}.content.{k}")
                else:
                    raise _Invalid(f"{at}.content.{k}.type: Input tag '{kind}' is not 'text' or 'image'")
        elif content is not None and not isinstance(content, str):
            raise _Invalid(f"{at}.content: Input should be a valid string or list")
        if "is_error" in b and not isinstance(b["is_error"], bool):
            raise _Invalid(f"{at}.is_error: Input should be a valid boolean")

    @staticmethod
    def _check_tool_pairs(turns: list[dict[str, Any]]) -> None:
        """Each tool_use answered in the next turn; each tool_result answering the turn before."""
        for n, turn in enumerate(turns):
            at = f"messages.{turn['index']}"
            if turn["role"] == "assistant":
                ids = [b["id"] for b in turn["content"] if b.get("type") == "tool_use"]
                if not ids or n == len(turns) - 1:
                    continue
                answered = {b.get("tool_use_id") for b in turns[n + 1]["content"] if b.get("type") == "tool_result"}
                missing = [i for i in ids if i not in answered]
                if missing:
                    raise _Invalid(f"{at}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                                   f"{', '.join(missing)}. Each `tool_use` block must have a corresponding "
                                   "`tool_result` block in the next message.")
            else:
                results = [b for b in turn["content"] if b.get("type") == "tool_result"]
                if not results:
                    continue
                before = turns[n - 1]["content"] if n else []
                called = {b.get("id") for b in before if b.get("type") == "tool_use"}
                stray = [b["tool_use_id"] for b in results if b["tool_use_id"] not in called]
                if stray:
                    raise _Invalid(f"{at}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                                   f"{', '.join(stray)}. Each `tool_result` block must have a corresponding "
                                   "`tool_use` block in the previous message.")
                kinds = [b.get("type") for b in turn["content"]]
                if kinds[:len(results)] != ["tool_result"] * len(results):
                    raise _Invalid(f"{at}.content: `tool_result` blocks must come first in the user message, "
                                   "before any other content")

    @staticmethod
    def _check_tools(tools: Any) -> list[str]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise _Invalid("tools: Input should be a valid list")
        names = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict):
                raise _Invalid(f"tools.{i}: Input should be a valid dictionary")
            if t.get("type") not in (None, "custom"):  # a server tool (web_search...): the API's own schema
                names.append(t.get("name") or "")
                continue
            name = t.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise _Invalid(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            schema = t.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _Invalid(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
            if name in names:
                raise _Invalid(f"tools: Tool names must be unique, found {name!r} more than once")
            names.append(name)
        return names

    @staticmethod
    def _check_tool_choice(choice: Any, names: list[str]) -> None:
        if choice is None:
            return
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            raise _Invalid("tool_choice.type: Input tag does not match any of 'auto', 'any', 'tool', 'none'")
        if not names:
            raise _Invalid("tool_choice may only be specified while providing tools")
        if kind == "tool" and choice.get("name") not in names:
            raise _Invalid(f"tool_choice.name: tool {choice.get('name')!r} is not among the tools {names}")

    # ---- answers -------------------------------------------------------------------------------------------

    def _count_tokens(self, body: Any, respond: Responder) -> None:
        """``POST /v1/messages/count_tokens``: the Messages body less its generation settings;
        answers ``{"input_tokens": n}``, the count a Messages call would report."""
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a JSON object")
        unknown = sorted(set(body) - _COUNT_KEYS)
        if unknown:
            raise _Invalid(f"{unknown[0]}: Extra inputs are not permitted")
        turns = self._check({**body, "max_tokens": 1})
        system = body.get("system")
        n = sum(count_tokens(_text_of(t["content"])) for t in turns) + count_tokens(
            system if isinstance(system, str) else _text_of(system or []))
        if body.get("tools"):
            n += count_tokens(json.dumps(body["tools"]))
        respond.json(200, {"input_tokens": n}, {"request-id": _new_id("req_")})

    def _messages(self, body: Any, respond: Responder) -> None:
        turns = self._check(body)
        reply = self._scripted(respond)
        if reply is None:
            return
        blocks, stop_reason, stop_sequence = self._answer(body, turns, reply)
        system = body.get("system")
        prompt = sum(count_tokens(_text_of(t["content"])) for t in turns) + count_tokens(
            system if isinstance(system, str) else _text_of(system or []))
        output = sum(count_tokens(b.get("text") or json.dumps(b.get("input"))) for b in blocks)
        usage = {"input_tokens": prompt, "output_tokens": output, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, **(reply.usage or {})}
        message = {"id": _new_id("msg_"), "type": "message", "role": "assistant", "model": body["model"],
                   "content": blocks, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}
        headers = {"request-id": _new_id("req_"), **reply.headers}
        if not body.get("stream"):
            if reply.error_type:  # a failure that, streamed, arrives as an `error` event
                self._error(respond, _status_of(reply.error_type), reply.error_message or "scripted error",
                            reply.error_type, headers)
                return
            respond.json(200, message, headers)
            return
        respond.sse(self._events(message, reply), headers=headers, chunk_delay=reply.chunk_delay,
                    cut_after=reply.cut_after)

    def _answer(self, body: dict[str, Any], turns: list[dict[str, Any]],
                reply: Reply) -> tuple[list[dict[str, Any]], str, Optional[str]]:
        calls = [(name, reply.arguments_text(i)) for i, (name, _) in enumerate(reply.tool_calls)]
        choice = body.get("tool_choice") or {}
        if reply.text is None and not calls and choice.get("type") in ("tool", "any"):
            tool = next(t for t in body["tools"] if choice.get("type") == "any" or t.get("name") == choice["name"])
            calls = [(tool["name"], json.dumps(sample_from_schema(tool.get("input_schema"),
                                                                  _text_of(turns[-1]["content"]))))]
        if reply.text is not None:
            text = reply.text
        elif calls:
            text = ""
        else:  # unscripted: echo the last user turn
            text = _text_of(turns[-1]["content"]) if turns[-1]["role"] == "user" else ""
        stop_reason, stop_sequence = ("tool_use" if calls else "end_turn"), None
        hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s in text]
        if hits:
            cut, stop_sequence = min(hits)
            text, stop_reason, calls = text[:cut], "stop_sequence", []
        pieces = _PIECE.findall(text)
        if len(pieces) > body["max_tokens"]:
            text, stop_reason, stop_sequence, calls = "".join(pieces[:body["max_tokens"]]), "max_tokens", None, []
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks += [{"type": "tool_use", "id": _new_id("toolu_"), "name": name, "input": json.loads(args)}
                   for name, args in calls]
        return blocks, reply.finish_reason or stop_reason, stop_sequence

    @staticmethod
    def _events(message: dict[str, Any], reply: Reply) -> Iterator[tuple[str, str]]:
        def ev(kind: str, **data: Any) -> tuple[str, str]:
            return kind, json.dumps({"type": kind, **data}, separators=(",", ":"))

        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**usage, "output_tokens": 1}}
        yield ev("message_start", message=start)
        yield ev("ping")
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield ev("content_block_start", index=i, content_block={"type": "text", "text": ""})
                for piece in _PIECE.findall(block["text"]):
                    yield ev("content_block_delta", index=i, delta={"type": "text_delta", "text": piece})
            else:
                yield ev("content_block_start", index=i, content_block={**block, "input": {}})
                args = json.dumps(block["input"])
                step = max(1, math.ceil(len(args) / 3))  # the input arrives in pieces, as it is generated
                yield ev("content_block_delta", index=i, delta={"type": "input_json_delta", "partial_json": ""})
                for k in range(0, len(args), step):
                    yield ev("content_block_delta", index=i,
                             delta={"type": "input_json_delta", "partial_json": args[k:k + step]})
            yield ev("content_block_stop", index=i)
        if reply.error_type:
            yield ev("error", error={"type": reply.error_type, "message": reply.error_message or "scripted error"})
            return
        yield ev("message_delta", delta={"stop_reason": message["stop_reason"],
                                         "stop_sequence": message["stop_sequence"]},
                 usage={"output_tokens": usage["output_tokens"]})
        yield ev("message_stop")

    def _list_models(self, body: Any, respond: Responder) -> None:
        ids = self.models if self.models is not None else list(MAX_OUTPUT_TOKENS)
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in ids]
        respond.json(200, {"data": data, "has_more": False, "first_id": ids[0] if ids else None,
                           "last_id": ids[-1] if ids else None})


def _status_of(error_type: str) -> int:
    return next((s for s, t in ERROR_TYPES.items() if t == error_type), 500)


if __name__ == "__main__":
    serve_main(AnthropicServer)
