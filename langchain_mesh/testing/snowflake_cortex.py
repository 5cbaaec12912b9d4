"""A local Snowflake Cortex inference REST API, for offline tests of the ``snowflake_cortex`` connection.

Speaks ``POST /api/v2/cortex/inference:complete`` (a JSON answer for ``stream: false``, otherwise
server-sent events shaped as Cortex sends them: text deltas, ``tool_use`` fragments that open a call
with ``tool_use_id``/``name`` and then carry ``input`` pieces, cumulative ``usage``, no end event),
``POST /api/v2/cortex/inference:embed`` and ``GET /api/v2/cortex/models``::

    with SnowflakeCortexServer(token="pat-123") as srv:
        srv.script(text="Paris")                                   # the next answer
        srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
        srv.script(status=429, error_message="slow down", headers={"Retry-After": "2"})
        srv.script(text="a b c d", cut_after=2)                    # the stream dies after 2 events
        srv.last_request.json                                      # what the client sent

Every request is authenticated first, as Snowflake does: ``Authorization: Bearer <token>`` with
``X-Snowflake-Authorization-Token-Type`` (absent means ``OAUTH``). A PAT or OAuth token must be the
configured one, of the configured type. A ``KEYPAIR_JWT`` must be an RS256 JWT whose ``sub`` is
``<ACCOUNT>.<USER>``, whose ``iss`` is ``<sub>.SHA256:<fingerprint>``, unexpired and valid for at most
an hour; given ``public_key_pem``, its fingerprint must match and its signature verify. Failures
answer 401 with Snowflake's error body (``{"code", "message", "request_id"}``; the message also says
which check failed, which Snowflake does not). Then the body is validated (unknown fields, roles, the
last message being the user's, tool specs, tool choice, response format, images...) and answered 400
with the problem; only then does a scripted error or answer apply. Unscripted, a completion echoes
the last user message and embeddings are deterministic hashed vectors.

``python -m langchain_mesh.testing.snowflake_cortex --port 8080`` serves it (token ``test-token``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
import uuid
from typing import Any, Iterator, Optional, Sequence

from .fakes import count_tokens, embed_text, stream_pieces
from .wire import RecordedRequest, Reply, Responder, WireServer, serve_main, sse_json

__all__ = ["SnowflakeCortexServer", "COMPLETE_PATH", "EMBED_PATH", "MODELS_PATH"]

COMPLETE_PATH = "/api/v2/cortex/inference:complete"
EMBED_PATH = "/api/v2/cortex/inference:embed"
MODELS_PATH = "/api/v2/cortex/models"

TOKEN_TYPES = ("OAUTH", "PROGRAMMATIC_ACCESS_TOKEN", "KEYPAIR_JWT")
_COMPLETE_KEYS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_output_tokens", "response_format",
                  "guardrails", "tools", "tool_choice", "provisioned_throughput_id", "stream", "anthropic", "openai"}
_EMBED_KEYS = {"model", "text", "provisioned_throughput_id"}
_ITEM_TYPES = {"text", "image", "tool_use", "tool_results"}
_IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif"}
_CLOCK_SKEW = 60  # seconds of clock difference tolerated in JWT times


class _Invalid(Exception):
    """A request the API rejects: the error body's message, and Snowflake's error code where it has one."""

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.code = code


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class SnowflakeCortexServer(WireServer):
    provider = "snowflake_cortex"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str = "test-token",
                 token_type: str = "PROGRAMMATIC_ACCESS_TOKEN", account: str = "MYORG-MYACCOUNT",
                 user: Optional[str] = None, public_key_pem: Optional[str] = None,
                 models: Optional[Sequence[str]] = None, embedding_models: Optional[dict[str, int]] = None):
        """``models``/``embedding_models`` (name -> vector size) limit what is accepted; None accepts any
        model (chat vectors of 768). ``account``/``user`` are what a key-pair JWT must name."""
        super().__init__(host, port)
        self.token = token
        self.token_type = token_type
        self.account = account.upper()
        self.user = user.upper() if user else None
        self.public_key_pem = public_key_pem
        self.models = list(models) if models is not None else None
        self.embedding_models = dict(embedding_models) if embedding_models is not None else None

    # ---- routing -----------------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        routes = {COMPLETE_PATH: ("POST", self._complete), EMBED_PATH: ("POST", self._embed),
                  MODELS_PATH: ("GET", self._models)}
        if request.path not in routes:
            self.not_found(request, respond)
            return
        method, answer = routes[request.path]
        if request.method != method:
            self._error(respond, 405, f"method {request.method} is not allowed on {request.path}; use {method}")
            return
        try:
            self._authenticate(request)
        except _Invalid as e:
            self._error(respond, 401, str(e), code=e.code)
            return
        try:
            body = request.json if method == "POST" else None
        except ValueError:
            self._error(respond, 400, "the request body is not valid JSON")
            return
        try:
            answer(body, respond)
        except _Invalid as e:
            self._error(respond, 400, str(e))

    def not_found(self, request: RecordedRequest, respond: Responder) -> None:
        self._error(respond, 404, f"the requested endpoint {request.path} does not exist")

    @staticmethod
    def _error(respond: Responder, status: int, message: str, code: Optional[str] = None,
               headers: Optional[dict[str, str]] = None) -> None:
        body: dict[str, Any] = {"message": message, "request_id": str(uuid.uuid4())}
        if code:
            body["code"] = code
        respond.json(status, body, headers or {})

    def _scripted(self, respond: Responder) -> Optional[Reply]:
        """The next script, after its delay; None once a scripted error or raw body was sent."""
        reply = self.next_reply() or Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            self._error(respond, reply.status, reply.error_message or f"scripted HTTP {reply.status}",
                        code=reply.error_code, headers=reply.headers)
            return None
        if reply.json_body is not None:
            respond.json(200, reply.json_body, reply.headers)
            return None
        return reply

    # ---- authentication --------------------------------------------------------------------------------

    def _authenticate(self, request: RecordedRequest) -> None:
        auth = request.headers.get("Authorization") or ""
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        if not token:
            raise _Invalid("Authorization header not found or not of the form 'Bearer <token>'.", "390101")
        kind = request.headers.get("X-Snowflake-Authorization-Token-Type") or "OAUTH"  # Snowflake's default
        if kind not in TOKEN_TYPES:
            raise _Invalid(f"Invalid token type {kind!r}; use one of {', '.join(TOKEN_TYPES)}.", "390101")
        if kind == "KEYPAIR_JWT":
            problem = self._jwt_problem(token)
            if problem:
                raise _Invalid(f"JWT token is invalid. [{problem}]", "390144")
        elif kind != self.token_type or token != self.token:
            raise _Invalid("Invalid OAuth access token." if kind == "OAUTH"
                           else "Programmatic access token is invalid.", "390303")

    def _jwt_problem(self, token: str) -> Optional[str]:
        parts = token.split(".")
        if len(parts) != 3:
            return "not a JWT (three base64url parts)"
        try:
            header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
        except (ValueError, TypeError):
            return "header or claims are not base64url JSON"
        if header.get("alg") != "RS256":
            return f"alg is {header.get('alg')!r}, not RS256"
        missing = [c for c in ("iss", "sub", "iat", "exp") if c not in claims]
        if missing:
            return f"missing claims {missing}"
        if self.user and claims["sub"] != f"{self.account}.{self.user}":
            return f"sub {claims['sub']!r} is not {self.account}.{self.user}"
        if not str(claims["iss"]).startswith(f"{claims['sub']}.SHA256:"):
            return "iss is not <sub>.SHA256:<public key fingerprint>"
        now = time.time()
        if claims["exp"] <= now - _CLOCK_SKEW:
            return "expired"
        if claims["iat"] > now + _CLOCK_SKEW or claims["exp"] - claims["iat"] > 3600 + _CLOCK_SKEW:
            return "iat in the future or lifetime over one hour"
        if self.public_key_pem:
            return self._signature_problem(parts, str(claims["iss"]))
        return None

    def _signature_problem(self, parts: list[str], iss: str) -> Optional[str]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = serialization.load_pem_public_key(self.public_key_pem.encode())  # type: ignore[union-attr]
        if not isinstance(key, rsa.RSAPublicKey):
            return "the user's public key is not an RSA key"
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()
        if not iss.endswith("." + fingerprint):
            return "the public key fingerprint does not match the user's key"
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "the signature does not verify"
        return None

    # ---- validation ---------------------------------------------------------------------------------------

    def _check_model(self, model: Any, known: Optional[Sequence[str]]) -> str:
        if not isinstance(model, str) or not model:
            raise _Invalid("'model' is required and must be a string")
        if known is not None and model not in known:
            raise _Invalid(f'unknown model "{model}"')
        return model

    def _check_complete(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _Invalid("the request body must be a JSON object")
        unknown = sorted(set(body) - _COMPLETE_KEYS)
        if unknown:
            raise _Invalid(f"unknown field(s) {unknown}")
        self._check_model(body.get("model"), self.models)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid("'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            self._check_message(m, i)
        if messages[-1].get("role", "user") != "user":
            raise _Invalid("a 'user' message must be the last message in the list")
        self._check_number(body, "temperature", 0, None)
        self._check_number(body, "top_p", 0, 1)
        if "max_tokens" in body and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 0):
            raise _Invalid("'max_tokens' must be a non-negative integer")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _Invalid("'stream' must be a boolean")
        names = self._check_tools(body.get("tools"))
        self._check_tool_choice(body.get("tool_choice"), names)
        fmt = body.get("response_format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json"
                                or not isinstance(fmt.get("schema"), dict)):
            raise _Invalid("'response_format' must be {\"type\": \"json\", \"schema\": <JSON schema object>}")

    @staticmethod
    def _check_number(body: dict[str, Any], key: str, low: float, high: Optional[float]) -> None:
        if key not in body or body[key] is None:
            return
        v = body[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low or (high is not None and v > high):
            raise _Invalid(f"'{key}' must be a number in [{low}, {high if high is not None else 'inf'}]")

    def _check_message(self, m: Any, i: int) -> None:
        if not isinstance(m, dict):
            raise _Invalid(f"messages[{i}] must be an object")
        role = m.get("role", "user")
        if role not in ("system", "user", "assistant"):
            raise _Invalid(f"messages[{i}].role must be 'system', 'user' or 'assistant', got {role!r}")
        if role == "system" and i != 0:
            raise _Invalid("a 'system' message must be the first message")
        if "content" in m and not isinstance(m["content"], str):
            raise _Invalid(f"messages[{i}].content must be a string")
        items = m.get("content_list")
        if items is None:
            if not m.get("content"):
                raise _Invalid(f"messages[{i}] has no content")
            return
        if not isinstance(items, list):
            raise _Invalid(f"messages[{i}].content_list must be a list")
        for j, item in enumerate(items):
            self._check_item(item, f"messages[{i}].content_list[{j}]")

    @staticmethod
    def _check_item(item: Any, at: str) -> None:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in _ITEM_TYPES:
            raise _Invalid(f"{at}.type must be one of {sorted(_ITEM_TYPES)}")
        if kind == "text" and not isinstance(item.get("text"), str):
            raise _Invalid(f"{at}.text must be a string")
        if kind == "image":
            d = item.get("details") or {}
            if d.get("type") != "base64" or d.get("content_type") not in _IMAGE_TYPES:
                raise _Invalid(f"{at}.details must be base64 content of one of {sorted(_IMAGE_TYPES)}")
            try:
                base64.b64decode(d.get("content") or "", validate=True)
            except ValueError:
                raise _Invalid(f"{at}.details.content is not base64") from None
        if kind == "tool_use":
            u = item.get("tool_use") or {}
            if not (u.get("tool_use_id") and u.get("name") and isinstance(u.get("input"), dict)):
                raise _Invalid(f"{at}.tool_use needs tool_use_id, name and an input object")
        if kind == "tool_results":
            r = item.get("tool_results") or {}
            if not (r.get("tool_use_id") and r.get("name") and isinstance(r.get("content"), list)):
                raise _Invalid(f"{at}.tool_results needs tool_use_id, name and a content list")

    @staticmethod
    def _check_tools(tools: Any) -> list[str]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise _Invalid("'tools' must be a list")
        names = []
        for i, t in enumerate(tools):
            spec = t.get("tool_spec") if isinstance(t, dict) else None
            if not isinstance(spec, dict) or not spec.get("type") or not spec.get("name"):
                raise _Invalid(f"tools[{i}] must be {{\"tool_spec\": {{\"type\", \"name\", ...}}}}")
            if spec["type"] == "generic" and not isinstance(spec.get("input_schema"), dict):
                raise _Invalid(f"tools[{i}].tool_spec.input_schema is required for generic tools")
            names.append(spec["name"])
        return names

    @staticmethod
    def _check_tool_choice(choice: Any, names: list[str]) -> None:
        if choice is None:
            return
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "required", "none", "tool"):
            raise _Invalid("'tool_choice.type' must be auto, required, none or tool")
        if kind in ("required", "tool") and not names:
            raise _Invalid(f"tool_choice {kind!r} needs tools")
        if kind == "tool":
            wanted = choice.get("name")
            if not isinstance(wanted, list) or not wanted or any(n not in names for n in wanted):
                raise _Invalid(f"tool_choice 'tool' must name tools from {names} in a list")

    # ---- completion -------------------------------------------------------------------------------------

    def _complete(self, body: Any, respond: Responder) -> None:
        self._check_complete(body)
        reply = self._scripted(respond)
        if reply is None:
            return
        text, finish = self._answer_text(body, reply)
        calls = [(f"tooluse_{uuid.uuid4().hex[:22]}", name, reply.arguments_text(i))
                 for i, (name, _) in enumerate(reply.tool_calls)]
        prompt = sum(count_tokens(m.get("content") or "") for m in body["messages"])
        if body.get("stream", True):
            events = self._stream_events(body["model"], text, calls, prompt, reply)
            respond.sse(sse_json(events), headers=reply.headers, chunk_delay=reply.chunk_delay,
                        cut_after=reply.cut_after)
        else:
            respond.json(200, self._json_answer(body["model"], text, calls, finish, prompt, reply), reply.headers)

    def _answer_text(self, body: dict[str, Any], reply: Reply) -> tuple[str, str]:
        if reply.text is not None:
            text = reply.text
        elif reply.tool_calls:
            text = ""
        else:  # unscripted: echo the last user message
            last = body["messages"][-1]
            text = last.get("content") or "".join(i.get("text", "") for i in last.get("content_list") or [])
        words = stream_pieces(text)
        limit = body.get("max_tokens")
        if limit is not None and len(words) > limit:
            return "".join(words[:limit]), reply.finish_reason or "length"
        return text, reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    @staticmethod
    def _usage(prompt: int, completion: int, reply: Reply) -> dict[str, int]:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        usage.update(reply.usage or {})
        return usage

    def _json_answer(self, model: str, text: str, calls: list[tuple[str, str, str]], finish: str, prompt: int,
                     reply: Reply) -> dict[str, Any]:
        items: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        items += [{"type": "tool_use", "tool_use": {"tool_use_id": cid, "name": name, "input": json.loads(args)}}
                  for cid, name, args in calls]
        completion = count_tokens(text) + sum(count_tokens(args) for _, _, args in calls)
        return {"id": str(uuid.uuid4()), "created": int(time.time()), "model": model,
                "choices": [{"finish_reason": finish, "message": {"content": text, "content_list": items}}],
                "usage": self._usage(prompt, completion, reply)}

    def _stream_events(self, model: str, text: str, calls: list[tuple[str, str, str]], prompt: int,
                       reply: Reply) -> Iterator[dict[str, Any]]:
        rid, created, done = str(uuid.uuid4()), int(time.time()), 0
        deltas: list[tuple[dict[str, Any], str]] = [
            ({"type": "text", "content": w, "content_list": [{"type": "text", "text": w}], "text": w}, w)
            for w in stream_pieces(text)]
        for cid, name, args in calls:
            deltas.append(({"type": "tool_use", "tool_use_id": cid, "name": name, "input": "",
                            "content_list": [{"tool_use_id": cid, "name": name, "input": ""}], "text": ""}, ""))
            step = max(1, math.ceil(len(args) / 3))  # the input arrives in pieces, as it is generated
            deltas += [({"type": "tool_use", "input": args[i:i + step], "content_list": [{"input": args[i:i + step]}],
                         "text": ""}, args[i:i + step]) for i in range(0, len(args), step)]
        if not deltas:  # an empty answer is still one event
            deltas.append(({"type": "text", "content": "", "content_list": [], "text": ""}, ""))
        for n, (delta, piece) in enumerate(deltas):
            done += count_tokens(piece)
            choice: dict[str, Any] = {"delta": delta}
            if n == len(deltas) - 1 and reply.finish_reason:  # Cortex streams carry none unless scripted
                choice["finish_reason"] = reply.finish_reason
            yield {"id": rid, "created": created, "model": model, "choices": [choice],
                   "usage": self._usage(prompt, done, reply)}

    # ---- embeddings and models ---------------------------------------------------------------------------

    def _embed(self, body: Any, respond: Responder) -> None:
        if not isinstance(body, dict):
            raise _Invalid("the request body must be a JSON object")
        unknown = sorted(set(body) - _EMBED_KEYS)
        if unknown:
            raise _Invalid(f"unknown field(s) {unknown}")
        model = self._check_model(body.get("model"), list(self.embedding_models or []) or None)
        texts = body.get("text")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _Invalid("'text' must be a non-empty list of strings")
        reply = self._scripted(respond)
        if reply is None:
            return
        dims = (self.embedding_models or {}).get(model, 768)
        vectors = reply.embeddings or [embed_text(t, dims) for t in texts]
        respond.json(200, {"object": "list", "model": model,
                           "data": [{"object": "embedding", "embedding": [v], "index": i}
                                    for i, v in enumerate(vectors)],
                           "usage": {"total_tokens": sum(count_tokens(t) for t in texts)}}, reply.headers)

    def _models(self, body: Any, respond: Responder) -> None:
        respond.json(200, {"models": sorted(set(self.models or []) | set(self.embedding_models or {}))})


if __name__ == "__main__":
    serve_main(SnowflakeCortexServer)
