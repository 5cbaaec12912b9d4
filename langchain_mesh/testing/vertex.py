"""A local Google Gemini API, on both of its faces, for offline tests of the ``vertex`` connection.

Vertex AI (``/v1beta1|v1/projects/{project}/locations/{location}/publishers/google/models/{model}:METHOD``,
``Authorization: Bearer <access token>``) and the Gemini Developer API (``/v1|v1beta/models/{model}:METHOD``,
``x-goog-api-key`` or ``?key=``), with the methods ``google-genai`` calls: ``generateContent``,
``streamGenerateContent`` (server-sent events with ``alt=sse``, else one JSON array),
``batchEmbedContents``/``embedContent``, ``countTokens`` (``{"totalTokens": n}``, counted as
generateContent reports its prompt), and ``predict`` (text-embedding models and Imagen)::

    with VertexServer(project="my-proj") as srv:
        key = srv.service_account_key()           # a real RSA key JSON whose token_uri is srv.url/token
        srv.script(text="Paris")
        srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
        srv.script(status=429, error_message="Quota exceeded", headers={"Retry-After": "3"})
        srv.script(text="a b c d", cut_after=2)    # the stream dies after two chunks

``POST /token`` is Google's OAuth token endpoint for service accounts: it takes the JWT-bearer grant
google-auth sends (an RS256 JWT signed with the key, ``iss`` the client email, ``aud`` Google's token URI,
``scope`` naming cloud-platform, an hour at most), checks its structure and signature against the
keys this server issued (``service_account_key``) and answers an access token that the API then
accepts. Static tokens (``tokens``, default ``test-token``) are accepted as OAuth tokens too.

Checks, in Google's order: authentication (401 ``UNAUTHENTICATED``; a bad API key is Google's 400
``API_KEY_INVALID``), the project (403 ``PERMISSION_DENIED``), the model (404 ``NOT_FOUND`` when
``models`` is given), then the body (400 ``INVALID_ARGUMENT`` with Google's wording: unknown fields,
roles, parts, function responses answering the previous turn's calls, schema keywords outside
Gemini's subset, tool config, generation config ranges, Imagen parameters). Only then does a script
apply. Errors are ``{"error": {"code", "message", "status"}}``. Unscripted, a completion echoes the
last user text (an instance of ``responseSchema`` for JSON output, a call to the one allowed function
under mode ``ANY``); embeddings are deterministic hashed vectors; Imagen answers real PNG/JPEG images.
``call_ids=True`` gives function calls ids (newer models do), ``thought_signatures=True`` adds
signatures and then refuses a later turn that sends a call back without its signature (as thinking
models do).

``python -m langchain_mesh.testing.vertex --port 8080`` serves it.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import parse_qs

from .fakes import (alternative_tokens, count_tokens, embed_image_words, embed_text, sample_from_schema, stream_pieces,
                    token_logprob)
from .wire import RecordedRequest, Reply, Responder, WireServer, serve_main, sse_json

__all__ = ["VertexServer"]

_VERTEX = re.compile(r"^/(v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                     r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>\w+)$")
_GEMINI = re.compile(r"^/(v1|v1beta)/models/(?P<model>[^/:]+):(?P<method>\w+)$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_BODY_KEYS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
              "labels", "cachedContent", "model"}
_GEN_KEYS = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "presencePenalty",
             "frequencyPenalty", "seed", "responseLogprobs", "logprobs", "responseMimeType", "responseSchema",
             "responseJsonSchema", "thinkingConfig", "responseModalities", "mediaResolution", "speechConfig",
             "audioTimestamp", "routingConfig", "imageConfig"}
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult")
_SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "items", "properties", "required",
                "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
                "minimum", "maximum", "default", "example", "anyOf", "propertyOrdering"}
_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL", "TYPE_UNSPECIFIED"}
_ASPECT_RATIOS = {"1:1": (64, 64), "3:4": (48, 64), "4:3": (64, 48), "9:16": (36, 64), "16:9": (64, 36)}
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: google-auth signs for Google's token URI whatever the key's token_uri says; Google takes both spellings
_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://accounts.google.com/o/oauth2/token")
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class _Invalid(Exception):
    def __init__(self, message: str, status: int = 400, reason: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


def _camel(key: str) -> str:
    """The lowerCamelCase spelling of a proto field name (Google's JSON parsers take either)."""
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _get(d: dict[str, Any], key: str) -> Any:
    """A field by its camelCase name or its proto name (the SDK sends nested dicts' keys as given)."""
    return d.get(key, d.get(re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key)))


def _bytes(text: Any) -> bytes:
    """A proto ``bytes`` field from JSON: Google takes standard and URL-safe base64 (the SDK sends URL-safe)."""
    return base64.b64decode(str(text).replace("-", "+").replace("_", "/"), validate=True)


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _lower_schema(schema: Any) -> Any:
    """Gemini's upper-case types as JSON Schema, for sample_from_schema."""
    if isinstance(schema, dict):
        return {("anyOf" if k == "any_of" else k):
                (v.lower() if k == "type" and isinstance(v, str) else _lower_schema(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_schema(v) for v in schema]
    return schema


class VertexServer(WireServer):
    provider = "vertex"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, project: str = "test-project",
                 api_key: str = "test-api-key", tokens: Sequence[str] = ("test-token",),
                 models: Optional[Sequence[str]] = None, call_ids: bool = False, thought_signatures: bool = False):
        super().__init__(host, port)
        self.project = project
        self.api_key = api_key
        self.tokens = set(tokens)
        self.models = list(models) if models is not None else None
        self.call_ids = call_ids
        self.thought_signatures = thought_signatures
        self._public_keys: dict[str, Any] = {}  # client_email -> public key of the keys issued here
        self._signatures: set[bytes] = set()  # thought signatures handed out

    # ---- credentials -------------------------------------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account_key(self, client_email: Optional[str] = None) -> dict[str, Any]:
        """A service-account key JSON (a fresh RSA key) that the ``/token`` endpoint accepts."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = client_email or f"mesh-test-{uuid.uuid4().hex[:8]}@{self.project}.iam.gserviceaccount.com"
        self._public_keys[email] = key.public_key()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": self.project, "private_key_id": uuid.uuid4().hex,
                "private_key": pem, "client_email": email, "client_id": str(uuid.uuid4().int)[:21],
                "token_uri": self.token_uri}

    def _token(self, request: RecordedRequest, respond: Responder) -> None:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        problem = self._grant_problem(form)
        if problem:
            respond.json(400, {"error": "invalid_grant", "error_description": problem})
            return
        token = f"ya29.mesh-{uuid.uuid4().hex}"
        self.tokens.add(token)
        respond.json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _grant_problem(self, form: dict[str, str]) -> Optional[str]:
        if form.get("grant_type") != _JWT_BEARER:
            return f"grant_type must be {_JWT_BEARER}"
        parts = (form.get("assertion") or "").split(".")
        if len(parts) != 3:
            return "Invalid JWT: the assertion is not three base64url parts"
        try:
            header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
        except (ValueError, TypeError):
            return "Invalid JWT: header or claims are not base64url JSON"
        if header.get("alg") != "RS256":
            return f"Invalid JWT: alg is {header.get('alg')!r}, not RS256"
        missing = [c for c in ("iss", "aud", "iat", "exp", "scope") if c not in claims]
        if missing:
            return f"Invalid JWT: missing claims {missing}"
        if claims["aud"] not in _AUDIENCES + (self.token_uri,):
            return f"Invalid JWT: aud {claims['aud']!r} is not Google's token URI"
        if _CLOUD_PLATFORM not in str(claims["scope"]).split():
            return "Invalid JWT: the scope does not include cloud-platform"
        now = time.time()
        if claims["exp"] < now - 60 or claims["iat"] > now + 60 or claims["exp"] - claims["iat"] > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe"
        key = self._public_keys.get(claims["iss"])
        if key is None:
            return f"Invalid JWT Signature: no key of {claims['iss']!r} is known"
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            key.verify(base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)),
                       f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        return None

    # ---- routing -----------------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        if request.path == "/token" and request.method == "POST":
            self._token(request, respond)
            return
        vertex, gemini = _VERTEX.match(request.path), _GEMINI.match(request.path)
        m = vertex or gemini
        if m is None or request.method != "POST":
            self._error(respond, 404, f"The requested URL {request.path} was not found on this server.")
            return
        try:
            self._authenticate(request, vertex is not None)
            if vertex is not None and m.group("project") != self.project:
                raise _Invalid(f"Permission denied on resource project {m.group('project')}.", 403)
            model = m.group("model")
            if self.models is not None and model not in self.models:
                name = (f"projects/{self.project}/locations/{m.group('location')}/publishers/google/models/{model}"
                        if vertex else f"models/{model}")
                raise _Invalid(f"Publisher Model `{name}` was not found or your project does not have access to it.",
                               404)
            try:
                body = request.json
            except ValueError:
                raise _Invalid("Invalid JSON payload received.") from None
            if not isinstance(body, dict):
                raise _Invalid("Invalid JSON payload received. Expected an object.")
            method = m.group("method")
            answer = {"generateContent": self._generate, "streamGenerateContent": self._generate,
                      "predict": self._predict, "batchEmbedContents": self._batch_embed,
                      "embedContent": self._embed_one, "countTokens": self._count_tokens}.get(method)
            if answer is None:
                raise _Invalid(f"Method {method} is not served here.", 404)
            answer(request, model, body, respond)
        except _Invalid as e:
            self._error(respond, e.status, str(e), reason=e.reason)

    def _authenticate(self, request: RecordedRequest, vertex: bool) -> None:
        if not vertex:
            key = request.headers.get("x-goog-api-key") or request.query.get("key")
            if not key:
                raise _Invalid("Method doesn't allow unregistered callers (callers without established identity). "
                               "Please use API Key or other form of API consumer identity to call this API.", 403)
            if key != self.api_key:
                raise _Invalid("API key not valid. Please pass a valid API key.", 400, reason="API_KEY_INVALID")
            return
        auth = request.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:].strip() not in self.tokens:
            raise _Invalid("Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                           "cookie or other valid authentication credential.", 401)

    @staticmethod
    def _error(respond: Responder, status: int, message: str, headers: Optional[dict[str, str]] = None,
               reason: Optional[str] = None) -> None:
        error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
        if reason:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                                 "domain": "googleapis.com"}]
        respond.json(status, {"error": error}, headers or {})

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

    # ---- generateContent validation ------------------------------------------------------------------

    def _check_generate(self, body: dict[str, Any]) -> None:
        unknown = sorted(set(body) - _BODY_KEYS)
        if unknown:
            raise _Invalid(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Invalid("* GenerateContentRequest.contents: contents is not specified")
        system = body.get("systemInstruction")
        if system is not None:
            self._check_parts(system.get("parts") if isinstance(system, dict) else None, "system_instruction")
        declared = self._check_tools(body.get("tools"))
        pending: list[dict[str, Any]] = []  # the previous model turn's calls, which the next user turn answers
        for i, c in enumerate(contents):
            if not isinstance(c, dict) or c.get("role", "user") not in ("user", "model"):
                raise _Invalid(f"Please use a valid role: user, model. (contents[{i}])")
            parts = self._check_parts(c.get("parts"), f"contents[{i}]")
            calls = [p["functionCall"] for p in parts if "functionCall" in p]
            answers = [p["functionResponse"] for p in parts if "functionResponse" in p]
            if c.get("role") == "model":
                for p in parts:
                    if "functionCall" in p:
                        self._check_call(p, declared, i)
                pending = calls
                continue
            if answers:
                self._check_answers(answers, pending, i)
            pending = []
        if contents[-1].get("role", "user") == "model" and pending:
            raise _Invalid("Please ensure that function call turn comes immediately after a user turn or after a "
                           "function response turn.")
        self._check_tool_config(body.get("toolConfig"), declared)
        self._check_generation_config(body.get("generationConfig") or {})

    def _check_parts(self, parts: Any, at: str) -> list[dict[str, Any]]:
        if not isinstance(parts, list) or not parts:
            raise _Invalid(f"* GenerateContentRequest.{at}.parts: contents.parts must not be empty.")
        for j, p in enumerate(parts):
            data = [k for k in _PART_DATA if isinstance(p, dict) and k in p]
            if len(data) != 1:
                raise _Invalid(f"* GenerateContentRequest.{at}.parts[{j}].data: required oneof field 'data' must "
                               "have one initialized field")
            if data[0] == "inlineData":
                d = p["inlineData"]
                if not str(_get(d, "mimeType") or "").startswith(("image/", "application/pdf", "audio/", "video/",
                                                               "text/")):
                    raise _Invalid(f"Unsupported MIME type: {_get(d, 'mimeType')}")
                try:
                    _bytes(d.get("data") or "")
                except ValueError:
                    raise _Invalid(f"Invalid value at '{at}.parts[{j}].inline_data.data' (TYPE_BYTES), "
                                   "Base64 decoding failed") from None
            if data[0] == "fileData" and not (_get(p["fileData"], "fileUri") and _get(p["fileData"], "mimeType")):
                raise _Invalid(f"* {at}.parts[{j}].file_data: file_uri and mime_type are required")
        return parts

    def _check_call(self, part: dict[str, Any], declared: dict[str, Any], i: int) -> None:
        fc = part["functionCall"]
        if not fc.get("name") or not isinstance(fc.get("args", {}), dict):
            raise _Invalid(f"* contents[{i}]: function_call needs a name and object args")
        if self.thought_signatures and fc.get("name") in declared:
            try:
                signature = _bytes(part.get("thoughtSignature") or "")
            except ValueError:
                signature = b""
            if signature not in self._signatures:
                raise _Invalid(f"Function call `{fc['name']}` in the {i}. content block is missing a "
                               "`thought_signature`.")

    @staticmethod
    def _check_answers(answers: list[dict[str, Any]], calls: list[dict[str, Any]], i: int) -> None:
        if len(answers) != len(calls):
            raise _Invalid("Please ensure that the number of function response parts is equal to the number of "
                           f"function call parts of the function call turn. (contents[{i}])")
        for a in answers:
            if not isinstance(a.get("response"), dict):
                raise _Invalid(f"* contents[{i}]: function_response.response must be an object")
            match = [c for c in calls if c.get("name") == a.get("name")
                     and (a.get("id") is None or c.get("id") is None or c.get("id") == a.get("id"))]
            if not match:
                raise _Invalid(f"* contents[{i}]: function_response {a.get('name')!r} answers no function call of "
                               "the previous turn")

    def _check_tools(self, tools: Any) -> dict[str, Any]:
        declared: dict[str, Any] = {}
        for i, tool in enumerate(tools or []):
            for j, d in enumerate(_get(tool, "functionDeclarations") or []):
                if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$", str(d.get("name") or "")):
                    raise _Invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid "
                                   "function name.")
                if "parameters" in d:
                    self._check_schema(d["parameters"], f"tools[{i}].function_declarations[{j}].parameters")
                declared[d["name"]] = d
        return declared

    def _check_schema(self, node: Any, at: str) -> None:
        if not isinstance(node, dict):
            raise _Invalid(f"Invalid JSON payload received. '{at}' must be an object.")
        for key, value in node.items():
            if _camel(key) not in _SCHEMA_KEYS:
                raise _Invalid(f'Invalid JSON payload received. Unknown name "{key}" at \'{at}\': Cannot find field.')
            if key == "type" and str(value).upper() not in _TYPES:
                raise _Invalid(f"Invalid value at '{at}.type' (type.googleapis.com/google.cloud.aiplatform.v1beta1."
                               f"Type), \"{value}\"")
        for name, sub in (node.get("properties") or {}).items():
            self._check_schema(sub, f"{at}.properties[{name}]")
        if "items" in node:
            self._check_schema(node["items"], f"{at}.items")
        for k, sub in enumerate(_get(node, "anyOf") or []):
            self._check_schema(sub, f"{at}.any_of[{k}]")

    @staticmethod
    def _check_tool_config(config: Any, declared: dict[str, Any]) -> None:
        fc = _get(config or {}, "functionCallingConfig")
        if fc is None:
            return
        mode = fc.get("mode", "AUTO")
        if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
            raise _Invalid(f"Invalid value at 'tool_config.function_calling_config.mode', \"{mode}\"")
        allowed = _get(fc, "allowedFunctionNames")
        if allowed:
            if mode not in ("ANY", "VALIDATED"):
                raise _Invalid("allowed_function_names can only be set when mode is ANY.")
            unknown = [n for n in allowed if n not in declared]
            if unknown:
                raise _Invalid(f"allowed_function_names {unknown} are not among the declared functions.")
        if mode == "ANY" and not declared:
            raise _Invalid("Function calling config is set without function_declarations.")

    def _check_generation_config(self, g: dict[str, Any]) -> None:
        unknown = sorted(k for k in g if _camel(k) not in _GEN_KEYS)
        if unknown:
            raise _Invalid(f'Invalid JSON payload received. Unknown name "{unknown[0]}" at \'generation_config\': '
                           "Cannot find field.")
        for key, low, high in (("temperature", 0, 2), ("topP", 0, 1), ("presencePenalty", -2, 2),
                               ("frequencyPenalty", -2, 2), ("topK", 1, None), ("maxOutputTokens", 1, None),
                               ("logprobs", 0, 20)):
            v = _get(g, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < low
                                  or (high is not None and v > high)):
                raise _Invalid(f"Unable to submit request because it has a {key} value of {v} but the supported "
                               f"range is from {low} (inclusive) to {high if high is not None else 'inf'}.")
        if _get(g, "logprobs") is not None and not _get(g, "responseLogprobs"):
            raise _Invalid("logprobs requires response_logprobs to be set to true.")
        if len(_get(g, "stopSequences") or []) > 5:
            raise _Invalid("stop_sequences supports at most 5 sequences.")
        mime = _get(g, "responseMimeType")
        if mime not in (None, "text/plain", "application/json", "text/x.enum"):
            raise _Invalid(f"response_mime_type {mime!r} is not supported.")
        schema = _get(g, "responseSchema")
        if schema is not None:
            if mime not in ("application/json", "text/x.enum"):
                raise _Invalid("response_schema requires response_mime_type to be application/json.")
            self._check_schema(schema, "generation_config.response_schema")

    # ---- countTokens ----------------------------------------------------------------------------------------

    def _count_tokens(self, request: RecordedRequest, model: str, body: dict[str, Any], respond: Responder) -> None:
        """``models/{model}:countTokens``: ``{"totalTokens": n}``, counted as generateContent's usage
        counts its prompt (text parts, plus the system instruction and the tools' JSON)."""
        allowed = {"contents", "systemInstruction", "tools", "generationConfig", "generateContentRequest", "instances"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _Invalid(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Invalid("* CountTokensRequest.contents: contents is not specified")
        for i, c in enumerate(contents):
            self._check_parts(c.get("parts") if isinstance(c, dict) else None, f"contents[{i}]")
        n = sum(count_tokens(p.get("text") or "") for c in contents for p in c["parts"])
        system = body.get("systemInstruction")
        if isinstance(system, dict):
            n += sum(count_tokens(p.get("text") or "") for p in system.get("parts") or [])
        if body.get("tools"):
            n += count_tokens(json.dumps(body["tools"]))
        respond.json(200, {"totalTokens": n})

    # ---- generateContent answers ----------------------------------------------------------------------------

    def _generate(self, request: RecordedRequest, model: str, body: dict[str, Any], respond: Responder) -> None:
        self._check_generate(body)
        reply = self._scripted(respond)
        if reply is None:
            return
        g = body.get("generationConfig") or {}
        text, calls = self._answer(body, reply)
        limit = _get(g, "maxOutputTokens")
        finish = reply.finish_reason or "STOP"
        if limit is not None and len(stream_pieces(text)) > limit:
            text, finish = "".join(stream_pieces(text)[:limit]), reply.finish_reason or "MAX_TOKENS"
        prompt = sum(count_tokens(p.get("text") or "") for c in body["contents"] for p in c["parts"])
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": count_tokens(text) + len(calls),
                 "totalTokenCount": 0, **(reply.usage or {})}
        usage["totalTokenCount"] = usage["totalTokenCount"] or (
            usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0))
        if not request.path.endswith(":streamGenerateContent"):
            parts = ([{"text": text}] if text or not calls else []) + calls
            respond.json(200, self._response(model, parts, finish, usage, g, text), reply.headers)
            return
        events = list(self._chunks(model, text, calls, finish, usage, g))
        if request.query.get("alt") == "sse":
            respond.sse(sse_json(events), headers=reply.headers, chunk_delay=reply.chunk_delay,
                        cut_after=reply.cut_after)
        else:  # without alt=sse Google streams one JSON array
            respond.json(200, events, reply.headers)

    def _answer(self, body: dict[str, Any], reply: Reply) -> tuple[str, list[dict[str, Any]]]:
        g = body.get("generationConfig") or {}
        declared = self._check_tools(body.get("tools"))
        named = list(reply.tool_calls)
        fc = _get(body.get("toolConfig") or {}, "functionCallingConfig") or {}
        if not named and reply.text is None and fc.get("mode") == "ANY":  # unscripted forced call
            allowed = _get(fc, "allowedFunctionNames") or list(declared)
            params = _lower_schema(declared[allowed[0]].get("parameters") or {})
            named = [(allowed[0], sample_from_schema(params, "x") or {})]
        calls = []
        for i, (name, args) in enumerate(named):
            call: dict[str, Any] = {"name": name, "args": json.loads(args) if isinstance(args, str) else args}
            if self.call_ids:
                call["id"] = f"call-{uuid.uuid4().hex[:12]}"
            part: dict[str, Any] = {"functionCall": call}
            if self.thought_signatures:
                signature = uuid.uuid4().bytes + b"\xfb\xff"  # bytes whose two base64 spellings differ
                self._signatures.add(signature)
                part["thoughtSignature"] = base64.b64encode(signature).decode()
            calls.append(part)
        if reply.text is not None:
            return reply.text, calls
        if calls:
            return "", calls
        last = next((c for c in reversed(body["contents"]) if c.get("role", "user") == "user"), body["contents"][-1])
        # the user's text, or the outputs of the function responses it carries
        text = "".join(p.get("text") or json.dumps((p.get("functionResponse") or {}).get("response", ""))
                       if "text" not in p else p["text"] for p in last["parts"] if "inlineData" not in p
                       and "fileData" not in p)
        if _get(g, "responseMimeType") == "application/json":
            schema = _get(g, "responseSchema")
            text = json.dumps(sample_from_schema(_lower_schema(schema), text) if schema else {"text": text})
        return text, calls

    @staticmethod
    def _log_probs(text: str, top: int) -> dict[str, Any]:
        tokens = stream_pieces(text)
        return {"chosenCandidates": [{"token": t, "logProbability": token_logprob(t)} for t in tokens],
                "topCandidates": [{"candidates": [{"token": a, "logProbability": token_logprob(a)}
                                                  for a in alternative_tokens(t, top)]} for t in tokens]}

    def _response(self, model: str, parts: list[dict[str, Any]], finish: str, usage: dict[str, int],
                  g: dict[str, Any], text: str) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "finishReason": finish}
        if _get(g, "responseLogprobs"):
            candidate["logprobsResult"] = self._log_probs(text, _get(g, "logprobs") or 0)
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                "responseId": uuid.uuid4().hex[:20]}

    def _chunks(self, model: str, text: str, calls: list[dict[str, Any]], finish: str, usage: dict[str, int],
                g: dict[str, Any]) -> Iterator[dict[str, Any]]:
        pieces: list[dict[str, Any]] = [{"text": w} for w in stream_pieces(text)] + calls  # a call arrives whole
        if not pieces:
            pieces = [{"text": ""}]
        rid = uuid.uuid4().hex[:20]
        for n, part in enumerate(pieces):
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}}
            if _get(g, "responseLogprobs") and "text" in part:
                candidate["logprobsResult"] = self._log_probs(part["text"], _get(g, "logprobs") or 0)
            chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": rid}
            if n == len(pieces) - 1:  # the last chunk says why it ended and what it cost
                candidate["finishReason"] = finish
                chunk["usageMetadata"] = usage
            else:
                chunk["usageMetadata"] = {"promptTokenCount": usage["promptTokenCount"]}
            yield chunk

    # ---- embeddings and Imagen -------------------------------------------------------------------------

    def _vectors(self, model: str, texts: list[str], dims: Optional[int], reply: Reply) -> list[list[float]]:
        if reply.embeddings is not None:
            return reply.embeddings
        size = dims or (3072 if model.startswith("gemini-embedding") else 768)
        return [embed_text(t, size) for t in texts]

    def _batch_embed(self, request: RecordedRequest, model: str, body: dict[str, Any], respond: Responder) -> None:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _Invalid("* BatchEmbedContentsRequest.requests: requests is required")
        texts, dims = [], None
        for i, r in enumerate(requests):
            config = {**r, **(r.get("embedContentConfig") or {})}
            if "model" in r and r["model"] != f"models/{model}":
                raise _Invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: model must be models/{model}")
            task = _get(config, "taskType")
            if task is not None and task not in ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
                                                 "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING",
                                                 "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY"):
                raise _Invalid(f"Invalid value at 'requests[{i}].task_type', \"{task}\"")
            parts = self._check_parts((r.get("content") or {}).get("parts"), f"requests[{i}].content")
            texts.append("".join(p.get("text") or "" for p in parts))
            dims = _get(config, "outputDimensionality") or dims
        reply = self._scripted(respond)
        if reply is not None:
            vectors = self._vectors(model, texts, dims, reply)
            respond.json(200, {"embeddings": [{"values": v} for v in vectors]}, reply.headers)

    def _embed_one(self, request: RecordedRequest, model: str, body: dict[str, Any], respond: Responder) -> None:
        parts = self._check_parts((body.get("content") or {}).get("parts"), "content")
        reply = self._scripted(respond)
        if reply is not None:
            text = "".join(p.get("text") or "" for p in parts)
            vector = self._vectors(model, [text], _get(body, "outputDimensionality"), reply)[0]
            respond.json(200, {"embedding": {"values": vector}}, reply.headers)

    def _predict(self, request: RecordedRequest, model: str, body: dict[str, Any], respond: Responder) -> None:
        if not _VERTEX.match(request.path):
            raise _Invalid(f"Method predict is not offered for models/{model} on this API.", 404)
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise _Invalid("instances must be a non-empty list")
        params = body.get("parameters") or {}
        if model.startswith("imagen"):
            self._imagen(model, instances, params, respond)
            return
        if model.startswith("multimodalembedding"):
            self._multimodal(instances, params, respond)
            return
        texts = []
        for i, inst in enumerate(instances):
            if not isinstance(inst.get("content"), str):
                raise _Invalid(f"instances[{i}].content must be a string")
            texts.append(inst["content"])
        reply = self._scripted(respond)
        if reply is None:
            return
        vectors = self._vectors(model, texts, params.get("outputDimensionality"), reply)
        respond.json(200, {"predictions": [{"embeddings": {"values": v, "statistics": {
            "token_count": count_tokens(t), "truncated": False}}} for v, t in zip(vectors, texts)],
            "metadata": {"billableCharacterCount": sum(len(t) for t in texts)}}, reply.headers)

    def _multimodal(self, instances: list[Any], params: dict[str, Any], respond: Responder) -> None:
        """multimodalembedding@001: one instance of ``text`` and/or ``image.bytesBase64Encoded``."""
        if len(instances) != 1 or not isinstance(instances[0], dict):
            raise _Invalid("multimodalembedding takes exactly one instance per request")
        inst = instances[0]
        unknown = sorted(set(inst) - {"text", "image", "video"})
        if unknown or not ({"text", "image"} & set(inst)):
            raise _Invalid(f"instances[0] must have text and/or image (unknown: {unknown})")
        dims = params.get("dimension", 1408)
        if dims not in (128, 256, 512, 1408) or set(params) - {"dimension"}:
            raise _Invalid(f"parameters.dimension must be 128, 256, 512 or 1408, got {dims}")
        out: dict[str, Any] = {}
        if "image" in inst:
            image = inst["image"] if isinstance(inst["image"], dict) else {}
            try:
                data = base64.b64decode(image.get("bytesBase64Encoded") or "", validate=True)
            except ValueError:
                data = b""
            if not data:
                raise _Invalid("instances[0].image.bytesBase64Encoded must be a base64 image")
            out["imageEmbedding"] = embed_text(embed_image_words(data), dims)
        if "text" in inst:
            if not isinstance(inst["text"], str) or not inst["text"]:
                raise _Invalid("instances[0].text must be a non-empty string")
            out["textEmbedding"] = embed_text(inst["text"], dims)
        reply = self._scripted(respond)
        if reply is None:
            return
        respond.json(200, {"predictions": [out], "deployedModelId": "multimodal"}, reply.headers)

    def _imagen(self, model: str, instances: list[Any], params: dict[str, Any], respond: Responder) -> None:
        from .stability import make_image

        prompt = instances[0].get("prompt") if isinstance(instances[0], dict) else None
        if len(instances) != 1 or not isinstance(prompt, str) or not prompt:
            raise _Invalid("Imagen takes exactly one instance with a non-empty prompt.")
        unknown_fields = sorted(set(instances[0]) - {"prompt", "referenceImages"})
        if unknown_fields:
            raise _Invalid(f"Unknown instance field(s): {', '.join(unknown_fields)}.")
        edit_size = self._imagen_edit(model, instances[0].get("referenceImages"), params)
        unknown = sorted(set(params) - _IMAGEN_PARAMETERS)
        if unknown:
            raise _Invalid(f"Unknown Imagen parameter(s): {', '.join(unknown)}.")
        if "editMode" in params and "capability" not in model:
            raise _Invalid(f"editMode is not supported by {model}; edits are imagen-3.0-capability-001's.")
        if "guidanceScale" in params and not isinstance(params["guidanceScale"], (int, float)):
            raise _Invalid("guidanceScale must be a number.")
        count = params.get("sampleCount", 4)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise _Invalid(f"sampleCount must be between 1 and 4, got {count}.")
        ratio = params.get("aspectRatio", "1:1")
        if ratio not in _ASPECT_RATIOS:
            raise _Invalid(f"Unsupported aspect ratio {ratio!r}; supported: {', '.join(_ASPECT_RATIOS)}.")
        if "seed" in params and params.get("addWatermark", True):
            raise _Invalid("Seed is not supported when watermark is enabled.")
        mime = (params.get("outputOptions") or {}).get("mimeType", "image/png")
        if mime not in ("image/png", "image/jpeg"):
            raise _Invalid(f"Unsupported output mime type {mime!r}.")
        reply = self._scripted(respond)
        if reply is None:
            return
        w, h = edit_size or _ASPECT_RATIOS[ratio]
        seed = f"{prompt}|{params.get('seed')}|{params.get('negativePrompt')}"
        images = [make_image(mime, w, h, f"{seed}|{i}") for i in range(count)]
        respond.json(200, {"predictions": [{"bytesBase64Encoded": base64.b64encode(img).decode(), "mimeType": mime}
                                           for img in images]}, reply.headers)


    @staticmethod
    def _imagen_edit(model: str, refs: Any, params: dict[str, Any]) -> Optional[tuple[int, int]]:
        """Imagen 3 editing: reference images by editMode; returns the edited image's size."""
        from .stability import _image_size

        if "capability" not in model:
            if refs is not None:
                raise _Invalid(f"{model} does not support reference images; use imagen-3.0-capability-001.")
            return None
        if not isinstance(refs, list) or not refs:
            raise _Invalid(f"{model} edits: instances[0].referenceImages is required.")
        by_type: dict[str, dict[str, Any]] = {}
        for i, ref in enumerate(refs):
            kind = ref.get("referenceType")
            if kind not in ("REFERENCE_TYPE_RAW", "REFERENCE_TYPE_MASK", "REFERENCE_TYPE_CONTROL",
                            "REFERENCE_TYPE_STYLE", "REFERENCE_TYPE_SUBJECT"):
                raise _Invalid(f"referenceImages[{i}].referenceType {kind!r} is not valid.")
            if not isinstance(ref.get("referenceId"), int):
                raise _Invalid(f"referenceImages[{i}].referenceId must be an integer.")
            data = (ref.get("referenceImage") or {}).get("bytesBase64Encoded")
            try:
                ref["_bytes"] = base64.b64decode(data, validate=True)
            except (TypeError, ValueError):
                raise _Invalid(f"referenceImages[{i}].referenceImage.bytesBase64Encoded must be base64.") from None
            by_type[kind] = ref
        mode = params.get("editMode")
        if mode == "EDIT_MODE_INPAINT_INSERTION":
            raw, mask = by_type.get("REFERENCE_TYPE_RAW"), by_type.get("REFERENCE_TYPE_MASK")
            if raw is None or mask is None:
                raise _Invalid("EDIT_MODE_INPAINT_INSERTION needs a REFERENCE_TYPE_RAW and a REFERENCE_TYPE_MASK "
                               "image.")
            if (mask.get("maskImageConfig") or {}).get("maskMode") != "MASK_MODE_USER_PROVIDED":
                raise _Invalid("a mask reference image needs maskImageConfig.maskMode (MASK_MODE_USER_PROVIDED here).")
            size, mask_size = _image_size(raw["_bytes"]), _image_size(mask["_bytes"])
            if size != mask_size:
                raise _Invalid(f"The mask ({mask_size}) must have the raw image's dimensions ({size}).")
            return size
        if mode == "EDIT_MODE_CONTROLLED_EDITING":
            control = by_type.get("REFERENCE_TYPE_CONTROL")
            if control is None:
                raise _Invalid("EDIT_MODE_CONTROLLED_EDITING needs a REFERENCE_TYPE_CONTROL image.")
            kind = (control.get("controlImageConfig") or {}).get("controlType")
            if kind not in ("CONTROL_TYPE_CANNY", "CONTROL_TYPE_SCRIBBLE", "CONTROL_TYPE_FACE_MESH"):
                raise _Invalid(f"controlImageConfig.controlType {kind!r} is not valid.")
            return _image_size(control["_bytes"])
        raise _Invalid(f"editMode {mode!r} is not supported by this test server "
                       "(EDIT_MODE_INPAINT_INSERTION, EDIT_MODE_CONTROLLED_EDITING).")


_IMAGEN_PARAMETERS = {"sampleCount", "aspectRatio", "seed", "addWatermark", "outputOptions", "negativePrompt",
                      "editMode", "editConfig",
                      "guidanceScale", "personGeneration", "safetySetting", "includeRaiReason", "enhancePrompt",
                      "language", "sampleImageSize", "includeSafetyAttributes", "storageUri"}


if __name__ == "__main__":
    serve_main(VertexServer)
