"""A local Cohere v2 API, for offline tests of the ``cohere`` connection with the real ``cohere`` SDK.

Speaks ``POST /v2/chat`` (a JSON answer, or with ``"stream": true`` server-sent events framed as
Cohere sends them: ``event: <type>`` then ``data: {"type": <type>, ...}`` for ``message-start``,
``content-start``/``-delta``/``-end``, ``tool-plan-delta``, ``tool-call-start``/``-delta``/``-end`` and
``message-end`` with ``finish_reason`` and ``usage``) and ``POST /v2/embed`` (``embeddings.float``)::

    with CohereServer(api_key="co-key") as srv:
        srv.script(text="Paris")                                     # the next answer
        srv.script(text="Let me check.", tool_calls=[("get_weather", {"city": "Oslo"})])  # text = tool plan
        srv.script(status=429, error_message="slow down", headers={"Retry-After": "2"})
        srv.script(text="a b c d", cut_after=3)                      # the stream dies after 3 events
        srv.last_request.json

Requests are authenticated (``Authorization: Bearer <key>``; else 401 ``{"id", "message"}``) and
validated as the API documents: message roles and content parts, tool results answering an
assistant tool call id, tool definitions, ``tool_choice`` (``REQUIRED``/``NONE``, with tools),
``response_format``, ``p`` in [0.01, 0.99], ``k`` in [0, 500], penalties in [0, 1], at most 5 stop
sequences; embed requests need ``input_type`` (v3+ models), at most 96 texts, and
``output_dimension`` only on embed-v4. Problems answer 400 with Cohere's ``{"id", "message"}``.
Unscripted, chat echoes the last user message and embed returns deterministic hashed vectors.

``python -m langchain_mesh.testing.cohere --port 8080`` serves it (key ``test-key``).
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from typing import Any, Iterator, Optional

from .fakes import count_tokens, embed_image_words, embed_text, stream_pieces
from .wire import RecordedRequest, Reply, Responder, WireServer, serve_main

__all__ = ["CohereServer", "CHAT_PATH", "EMBED_PATH"]

CHAT_PATH = "/v2/chat"
EMBED_PATH = "/v2/embed"
_CHAT_KEYS = {"model", "messages", "tools", "strict_tools", "documents", "citation_options", "response_format",
              "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
              "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking", "priority", "stream"}
_EMBED_KEYS = {"model", "texts", "images", "inputs", "input_type", "embedding_types", "output_dimension",
               "truncate", "max_tokens", "priority"}
_INPUT_TYPES = {"search_document", "search_query", "classification", "clustering", "image"}
_DIMENSIONS = {"embed-v4.0": 1536, "embed-english-v3.0": 1024, "embed-multilingual-v3.0": 1024,
               "embed-english-light-v3.0": 384, "embed-multilingual-light-v3.0": 384}


class _Invalid(Exception):
    pass


class CohereServer(WireServer):
    provider = "cohere"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = "test-key"):
        super().__init__(host, port)
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return self.url

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        routes = {CHAT_PATH: self._chat, EMBED_PATH: self._embed}
        if request.path not in routes or request.method != "POST":
            self._error(respond, 404, f"route {request.method} {request.path} not found")
            return
        auth = request.headers.get("Authorization") or ""
        if auth != f"Bearer {self.api_key}":
            self._error(respond, 401, "invalid api token")
            return
        try:
            body = request.json
        except ValueError:
            self._error(respond, 400, "invalid request: the body is not valid JSON")
            return
        try:
            routes[request.path](body, respond)
        except _Invalid as e:
            self._error(respond, 400, f"invalid request: {e}")

    @staticmethod
    def _error(respond: Responder, status: int, message: str, headers: Optional[dict[str, str]] = None) -> None:
        respond.json(status, {"id": str(uuid.uuid4()), "message": message}, headers or {})

    def _scripted(self, respond: Responder) -> Optional[Reply]:
        reply = self.next_reply() or Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            self._error(respond, reply.status, reply.error_message or f"scripted HTTP {reply.status}", reply.headers)
            return None
        if reply.json_body is not None:
            respond.json(200, reply.json_body, reply.headers)
            return None
        return reply

    # ---- validation ---------------------------------------------------------------------------------------

    def _check_chat(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _Invalid("the body must be a JSON object")
        unknown = sorted(set(body) - _CHAT_KEYS)
        if unknown:
            raise _Invalid(f"unknown field(s) {unknown}")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _Invalid("model is required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid("messages must be a non-empty list")
        call_ids: set[str] = set()
        for i, m in enumerate(messages):
            self._check_message(m, i, call_ids)
        names = self._check_tools(body.get("tools"))
        choice = body.get("tool_choice")
        if choice is not None and (choice not in ("REQUIRED", "NONE") or not names):
            raise _Invalid("tool_choice must be REQUIRED or NONE, and requires tools")
        self._range(body, "p", 0.01, 0.99)
        self._range(body, "k", 0, 500)
        self._range(body, "temperature", 0, 1e9)
        self._range(body, "frequency_penalty", 0, 1)
        self._range(body, "presence_penalty", 0, 1)
        stops = body.get("stop_sequences")
        if stops is not None and (not isinstance(stops, list) or len(stops) > 5):
            raise _Invalid("stop_sequences must be a list of at most 5 strings")
        fmt = body.get("response_format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object")
                                or not isinstance(fmt.get("json_schema", {}), dict)):
            raise _Invalid("response_format must be {type: text} or {type: json_object, json_schema?}")

    @staticmethod
    def _range(body: dict[str, Any], key: str, low: float, high: float) -> None:
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high):
            raise _Invalid(f"{key} must be between {low} and {high}")

    @staticmethod
    def _check_message(m: Any, i: int, call_ids: set[str]) -> None:
        role = m.get("role") if isinstance(m, dict) else None
        at = f"messages[{i}]"
        if role not in ("system", "user", "assistant", "tool"):
            raise _Invalid(f"{at}.role must be system, user, assistant or tool")
        content = m.get("content")
        if role == "tool":
            if m.get("tool_call_id") not in call_ids:
                raise _Invalid(f"{at}.tool_call_id does not answer any tool call of an earlier assistant message")
        if role == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                fn = c.get("function") or {}
                if not c.get("id") or not fn.get("name") or not isinstance(fn.get("arguments"), str):
                    raise _Invalid(f"{at}.tool_calls need id, function.name and function.arguments (a JSON string)")
                call_ids.add(c["id"])
            return
        if isinstance(content, str):
            return
        if not isinstance(content, list) or not content:
            raise _Invalid(f"{at}.content must be a string or a non-empty list of content parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            allowed = {"text", "image_url"} if role == "user" else {"text", "document"} if role == "tool" else {"text"}
            if kind not in allowed:
                raise _Invalid(f"{at}.content parts of a {role} message are {sorted(allowed)}")
            if kind == "image_url" and not str((part.get("image_url") or {}).get("url") or "").startswith(
                    ("data:image/", "http://", "https://")):
                raise _Invalid(f"{at}: image_url.url must be a data URL or an http(s) URL")

    @staticmethod
    def _check_tools(tools: Any) -> list[str]:
        if tools is None:
            return []
        names = []
        for t in tools if isinstance(tools, list) else [None]:
            fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
            if not isinstance(fn, dict) or not fn.get("name") or not isinstance(fn.get("parameters", {}), dict):
                raise _Invalid("tools must be [{type: function, function: {name, description, parameters}}]")
            names.append(fn["name"])
        return names

    # ---- chat -----------------------------------------------------------------------------------------------

    def _chat(self, body: Any, respond: Responder) -> None:
        self._check_chat(body)
        reply = self._scripted(respond)
        if reply is None:
            return
        text = reply.text
        if text is None and not reply.tool_calls:
            last = next(m for m in reversed(body["messages"]) if m["role"] == "user")
            c = last.get("content")
            text = c if isinstance(c, str) else "".join(p.get("text") or "" for p in c if p.get("type") == "text")
        text = text or ""
        finish = reply.finish_reason
        limit = body.get("max_tokens")
        if limit is not None and len(stream_pieces(text)) > limit:
            text, finish = "".join(stream_pieces(text)[:limit]), finish or "MAX_TOKENS"
        calls = [(f"{name}_{uuid.uuid4().hex[:12]}", name, reply.arguments_text(i))
                 for i, (name, _) in enumerate(reply.tool_calls)]
        finish = finish or ("TOOL_CALL" if calls else "COMPLETE")
        prompt = sum(count_tokens(json.dumps(m.get("content") or "")) for m in body["messages"])
        usage = {"billed_units": {"input_tokens": prompt, "output_tokens": count_tokens(text)},
                 "tokens": {"input_tokens": prompt + 5, "output_tokens": count_tokens(text) + 1}}
        usage["billed_units"].update(reply.usage or {})
        if body.get("stream"):
            respond.sse(self._events(text, calls, finish, usage, bool(body.get("logprobs"))), headers=reply.headers,
                        chunk_delay=reply.chunk_delay, cut_after=reply.cut_after)
            return
        message: dict[str, Any] = {"role": "assistant"}
        if calls:  # with tool calls, the model's text is its tool plan
            message["tool_plan"] = text
            message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": n, "arguments": a}}
                                     for cid, n, a in calls]
        else:
            message["content"] = [{"type": "text", "text": text}]
        out: dict[str, Any] = {"id": str(uuid.uuid4()), "finish_reason": finish, "message": message, "usage": usage}
        if body.get("logprobs"):
            out["logprobs"] = [self._logprob(w, i) for i, w in enumerate(stream_pieces(text))]
        respond.json(200, out, reply.headers)

    @staticmethod
    def _logprob(word: str, i: int) -> dict[str, Any]:
        return {"token_ids": [1000 + i], "text": word, "logprobs": [-0.25]}

    def _events(self, text: str, calls: list[tuple[str, str, str]], finish: str, usage: dict[str, Any],
                logprobs: bool) -> Iterator[tuple[str, str]]:
        def ev(kind: str, **fields: Any) -> tuple[str, str]:
            return kind, json.dumps({"type": kind, **fields}, separators=(",", ":"))

        yield ev("message-start", id=str(uuid.uuid4()), delta={"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}})
        if calls:
            for w in stream_pieces(text):
                yield ev("tool-plan-delta", delta={"message": {"tool_plan": w}})
            for i, (cid, name, args) in enumerate(calls):
                yield ev("tool-call-start", index=i, delta={"message": {"tool_calls": {
                    "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}}})
                step = max(1, math.ceil(len(args) / 3))  # the arguments arrive in pieces
                for j in range(0, len(args), step):
                    yield ev("tool-call-delta", index=i, delta={"message": {"tool_calls": {
                        "function": {"arguments": args[j:j + step]}}}})
                yield ev("tool-call-end", index=i)
        else:
            yield ev("content-start", index=0, delta={"message": {"content": {"type": "text", "text": ""}}})
            for i, w in enumerate(stream_pieces(text)):
                extra = {"logprobs": self._logprob(w, i)} if logprobs else {}
                yield ev("content-delta", index=0, delta={"message": {"content": {"text": w}}}, **extra)
            yield ev("content-end", index=0)
        yield ev("message-end", delta={"finish_reason": finish, "usage": usage})

    # ---- embed ---------------------------------------------------------------------------------------------

    def _embed(self, body: Any, respond: Responder) -> None:
        if not isinstance(body, dict):
            raise _Invalid("the body must be a JSON object")
        unknown = sorted(set(body) - _EMBED_KEYS)
        if unknown:
            raise _Invalid(f"unknown field(s) {unknown}")
        model = body.get("model")
        if model not in _DIMENSIONS:
            raise _Invalid(f"model '{model}' not found, make sure the correct model ID was used")
        images = body.get("images")
        if images is not None:
            return self._embed_images(model, body, images, respond)
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _Invalid("texts must be a non-empty list of strings")
        if len(texts) > 96:
            raise _Invalid(f"too many texts - received {len(texts)}, maximum is 96")
        if body.get("input_type") not in _INPUT_TYPES:
            raise _Invalid(f"input_type is required for embed v3+ models and must be one of {sorted(_INPUT_TYPES)}")
        dims = body.get("output_dimension")
        if dims is not None and (not model.startswith("embed-v4") or dims not in (256, 512, 1024, 1536)):
            raise _Invalid("output_dimension is only supported on embed-v4.0, with 256, 512, 1024 or 1536")
        kinds = body.get("embedding_types") or ["float"]
        reply = self._scripted(respond)
        if reply is None:
            return
        size = dims or _DIMENSIONS[model]
        vectors = reply.embeddings or [embed_text(f"{body['input_type']} {t}", size) for t in texts]
        respond.json(200, {"id": str(uuid.uuid4()), "embeddings": {k: vectors for k in kinds}, "texts": texts,
                           "meta": {"api_version": {"version": "2"},
                                    "billed_units": {"input_tokens": sum(count_tokens(t) for t in texts)}},
                           "response_type": "embeddings_by_type"}, reply.headers)

    def _embed_images(self, model: str, body: dict[str, Any], images: Any, respond: Responder) -> None:
        """``images``: one data URL a call (``input_type: image``), on embed v3.0 models and newer."""
        if body.get("texts"):
            raise _Invalid("texts and images cannot be embedded in the same call")
        if not (model.startswith("embed-v4") or model.endswith("v3.0")):
            raise _Invalid(f"model '{model}' does not support image embeddings")
        if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
            raise _Invalid("images must be a list of exactly one data URI")
        if body.get("input_type") != "image":
            raise _Invalid("input_type must be 'image' when embedding images")
        m = re.fullmatch(r"data:image/(png|jpeg|gif|webp);base64,(.+)", images[0], re.S)
        if not m:
            raise _Invalid("images must be data URIs of png, jpeg, gif or webp images")
        try:
            data = base64.b64decode(m.group(2), validate=True)
        except ValueError:
            raise _Invalid("the image data URI is not valid base64") from None
        dims = body.get("output_dimension")
        if dims is not None and (not model.startswith("embed-v4") or dims not in (256, 512, 1024, 1536)):
            raise _Invalid("output_dimension is only supported on embed-v4.0, with 256, 512, 1024 or 1536")
        reply = self._scripted(respond)
        if reply is None:
            return
        vectors = reply.embeddings or [embed_text(embed_image_words(data), dims or _DIMENSIONS[model])]
        kinds = body.get("embedding_types") or ["float"]
        respond.json(200, {"id": str(uuid.uuid4()), "embeddings": {k: vectors for k in kinds}, "texts": [],
                           "images": [{"width": 1, "height": 1, "format": m.group(1), "bit_depth": 8}],
                           "meta": {"api_version": {"version": "2"}, "billed_units": {"images": 1}},
                           "response_type": "embeddings_by_type"}, reply.headers)


if __name__ == "__main__":
    serve_main(CohereServer)
