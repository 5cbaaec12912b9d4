"""A local Amazon Bedrock Runtime, for offline tests of the ``bedrock`` connection and of any boto3 code.

It speaks the REST API exactly as botocore calls it, so the real ``boto3.client("bedrock-runtime",
endpoint_url=srv.url)`` runs its own request validation, SigV4 signing and event-stream decoding:

* ``POST /model/{modelId}/converse``: a JSON answer (``output.message.content``, ``stopReason``,
  ``usage``, ``metrics``);
* ``POST /model/{modelId}/count-tokens`` with ``{"input": {"converse": {...}}}``: ``{"inputTokens": n}``,
  counted as Converse reports its input;
* ``POST /model/{modelId}/converse-stream``: ``application/vnd.amazon.eventstream`` binary frames
  (prelude with lengths and CRC, ``:event-type``/``:message-type``/``:content-type`` headers, JSON
  payload, message CRC): ``messageStart``, text ``contentBlockDelta`` per word, tool calls as
  ``contentBlockStart`` + partial-JSON ``toolUse`` deltas, ``contentBlockStop``, ``messageStop``,
  ``metadata``;
* ``POST /model/{modelId}/invoke``: Titan Text Embeddings (v1, v2), Cohere Embed, Stability (SD3 Large,
  Stable Image Core/Ultra, SDXL) and Titan Image Generator / Nova Canvas bodies, with the
  ``X-Amzn-Bedrock-Input-Token-Count`` header. Image bodies are checked as the models take them: SDXL's
  sizes, style presets, ``init_image`` with ``image_strength`` or a ``mask_source`` (``mask_image`` of
  the init image's size, or an init image with alpha); Titan's ``TEXT_IMAGE`` (with v2's
  ``conditionImage``/``controlMode``), ``IMAGE_VARIATION`` (text optional), ``INPAINTING`` (a
  ``maskImage`` of the image's size), quality, cfgScale and sizes.

Every request is authenticated first: a SigV4 ``Authorization`` header whose credential scope names
the server's region and the service ``bedrock``, a matching ``X-Amz-Date``, the configured access key
(and session token, if one is configured), and a signature that verifies with the secret key. Errors
are Bedrock's: ``x-amzn-ErrorType: <Code>:...`` with ``{"message": ...}``. Model ids may be base ids,
cross-region profile ids (``us.``/``eu.``/``apac.``/``global.``, checked against the region) or
application-inference-profile ARNs given in ``application_profiles``::

    with BedrockServer() as srv:     # region us-east-1, key AKIDTESTKEY / test-secret
        srv.script(text="Paris")
        srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
        srv.script(status=429, error_message="Too many requests")           # ThrottlingException
        srv.script(text="a b c d", cut_after=3)           # the stream's socket dies after 3 frames
        srv.script(text="a b c d", error_type="modelStreamErrorException", error_message="boom",
                   cut_after=3)       # 3 frames, then that exception event (a scripted status stays 200)
        srv.last_request.json

Unscripted, chat echoes the last user message, embeddings are deterministic hashed vectors and images
are PNGs of the asked size (or of the input image's; Stability's ratios as small PNGs).
``python -m langchain_mesh.testing.bedrock --port 8080`` serves it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import socket
import struct
import time
import uuid
import zlib
from typing import Any, Iterable, Optional, Sequence
from urllib.parse import quote, unquote

from .fakes import count_tokens, embed_image_words, embed_text, make_png, stream_pieces
from .wire import ClientGone, RecordedRequest, Reply, Responder, WireServer, serve_main

__all__ = ["BedrockServer", "encode_event_message"]

_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke|count-tokens)$")
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                   r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
                   r"Signature=(?P<sig>[0-9a-f]{64})$")
_GEO = {"us": "us-", "us-gov": "us-gov-", "eu": "eu-", "apac": "ap-", "jp": "ap-northeast-", "au": "ap-southeast-",
        "ca": "ca-", "global": ""}
_CODES = {400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
          404: "ResourceNotFoundException", 408: "ModelTimeoutException", 424: "ModelErrorException",
          429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}
_CONVERSE_KEYS = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                  "additionalModelRequestFields", "promptVariables", "additionalModelResponseFieldPaths",
                  "requestMetadata", "performanceConfig", "serviceTier", "outputConfig"}
_BLOCK_KINDS = {"text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent",
                "cachePoint", "reasoningContent", "citationsContent", "searchResult"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_RATIOS = {"16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"}
_INVALID_MODEL = "The provided model identifier is invalid."


class _Fail(Exception):
    """A request Bedrock rejects: HTTP status, error code and message."""

    def __init__(self, status: int, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.code = status, code or _CODES.get(status, "ValidationException")


def _malformed(message: str) -> _Fail:
    return _Fail(400, f"Malformed input request: {message}, please reformat your input and try again.")


def encode_event_message(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message: total and headers lengths, prelude CRC32,
    string headers (type 7), the payload, then the CRC32 of all that."""
    raw = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                   for k, v in headers)
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _event(name: str, body: dict[str, Any]) -> bytes:
    return encode_event_message([(":event-type", name), (":content-type", "application/json"),
                                 (":message-type", "event")], json.dumps(body, separators=(",", ":")).encode())


def _exception(code: str, message: str) -> bytes:
    return encode_event_message([(":exception-type", code), (":content-type", "application/json"),
                                 (":message-type", "exception")], json.dumps({"message": message}).encode())


def _b64(value: Any, at: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise _Fail(400, f"{at} is not valid base64") from None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class BedrockServer(WireServer):
    provider = "bedrock"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, region: str = "us-east-1",
                 access_key_id: str = "AKIDTESTKEY", secret_access_key: str = "test-secret",
                 session_token: Optional[str] = None, models: Optional[Sequence[str]] = None,
                 application_profiles: Optional[dict[str, str]] = None):
        """``models`` limits the base model ids accepted (None: any); ``application_profiles`` maps
        application-inference-profile ARNs to the base model they run."""
        super().__init__(host, port)
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.models = list(models) if models is not None else None
        self.application_profiles = dict(application_profiles or {})

    @classmethod
    def add_cli_arguments(cls, parser: Any) -> None:
        parser.add_argument("--region", default="us-east-1")
        parser.add_argument("--access-key-id", default="AKIDTESTKEY")
        parser.add_argument("--secret-access-key", default="test-secret")

    @classmethod
    def cli_options(cls, args: Any) -> dict[str, Any]:
        return {"region": args.region, "access_key_id": args.access_key_id,
                "secret_access_key": args.secret_access_key}

    def banner(self) -> str:
        return (super().banner() + f"\nboto3: endpoint_url={self.url} region_name={self.region} "
                f"aws_access_key_id={self.access_key_id} aws_secret_access_key={self.secret_access_key}")

    # ---- routing and errors ------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        route = _ROUTE.match(request.path)
        try:
            if route is None:
                raise _Fail(404, f"Unable to find a route for {request.method} {request.path}",
                            "UnknownOperationException")
            if request.method != "POST":
                raise _Fail(405, f"{request.method} is not allowed", "MethodNotAllowedException")
            self._authenticate(request)
            model = self._resolve_model(unquote(route.group("model")))
            op = route.group("op")
            if op == "invoke":
                self._invoke(request, model, respond)
            elif op == "count-tokens":
                self._count_tokens(request, respond)
            else:
                self._converse(request, model, respond, stream=op == "converse-stream")
        except _Fail as e:
            self._error(respond, e.status, e.code, str(e))

    @staticmethod
    def _error(respond: Responder, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None
               ) -> None:
        respond.json(status, {"message": message}, {
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})})

    def _scripted(self, respond: Responder) -> Optional[Reply]:
        reply = self.next_reply() or Reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            self._error(respond, reply.status, reply.error_type or _CODES.get(reply.status, "ValidationException"),
                        reply.error_message or f"scripted HTTP {reply.status}", reply.headers)
            return None
        return reply

    # ---- authentication (SigV4) --------------------------------------------------------------------------

    def _authenticate(self, request: RecordedRequest) -> None:
        auth = _AUTH.match(request.headers.get("Authorization") or "")
        if auth is None:
            raise _Fail(403, "Missing Authentication Token" if "Authorization" not in request.headers else
                        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' for "
                        "AWS4-HMAC-SHA256", "MissingAuthenticationTokenException"
                        if "Authorization" not in request.headers else "IncompleteSignatureException")
        amz_date = request.headers.get("X-Amz-Date") or ""
        if not amz_date.startswith(auth.group("date")):
            raise _Fail(403, "X-Amz-Date is missing or does not match the credential scope date",
                        "IncompleteSignatureException")
        if auth.group("service") != "bedrock" or auth.group("region") != self.region:
            raise _Fail(403, f"Credential should be scoped to a valid region and service: expected "
                        f"{self.region}/bedrock, got {auth.group('region')}/{auth.group('service')}",
                        "InvalidSignatureException")
        token = request.headers.get("X-Amz-Security-Token")
        if auth.group("akid") != self.access_key_id or (self.session_token is not None and token != self.session_token):
            raise _Fail(403, "The security token included in the request is invalid.", "UnrecognizedClientException")
        if not hmac.compare_digest(self._signature(request, auth, amz_date), auth.group("sig")):
            raise _Fail(403, "The request signature we calculated does not match the signature you provided. Check "
                        "your AWS Secret Access Key and signing method.", "InvalidSignatureException")

    def _signature(self, request: RecordedRequest, auth: re.Match[str], amz_date: str) -> str:
        signed = auth.group("signed").split(";")
        canonical = "\n".join([
            request.method,
            quote(request.path, safe="/~"),  # botocore encodes the already-encoded path once more
            "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(request.query.items())),
            "".join(f"{h}:{' '.join((request.headers.get(h) or '').split())}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(request.body).hexdigest(),
        ])
        scope = f"{auth.group('date')}/{auth.group('region')}/{auth.group('service')}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = ("AWS4" + self.secret_access_key).encode()
        for part in (auth.group("date"), auth.group("region"), auth.group("service"), "aws4_request"):
            key = _hmac(key, part)
        return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()

    # ---- model ids -------------------------------------------------------------------------------------

    def _resolve_model(self, model_id: str) -> str:
        """The base model a ``modelId`` runs, or a 400 as Bedrock answers for an id it does not know."""
        if model_id.startswith("arn:"):
            if model_id not in self.application_profiles:
                raise _Fail(400, _INVALID_MODEL)
            return self.application_profiles[model_id]
        head, _, rest = model_id.partition(".")
        if head in _GEO and "." in rest:  # a cross-region profile: only from a region of its geography
            if not self.region.startswith(_GEO[head]):
                raise _Fail(400, _INVALID_MODEL)
            model_id = rest
        if self.models is not None and model_id not in self.models:
            raise _Fail(400, _INVALID_MODEL)
        return model_id

    # ---- Converse ------------------------------------------------------------------------------------

    def _count_tokens(self, request: RecordedRequest, respond: Responder) -> None:
        """``POST /model/{id}/count-tokens`` with ``{"input": {"converse": {...}}}``: ``{"inputTokens": n}``,
        counted as Converse's usage counts its prompt (text blocks, plus system text and the tools' JSON)."""
        body = self._json(request)
        if set(body) != {"input"} or not isinstance(body["input"], dict) or len(body["input"]) != 1:
            raise _Fail(400, "input must hold exactly one of converse or invokeModel", "ValidationException")
        conv = body["input"].get("converse")
        if not isinstance(conv, dict):
            raise _Fail(400, "only input.converse is served here", "ValidationException")
        unknown = sorted(set(conv) - {"messages", "system", "toolConfig", "additionalModelRequestFields"})
        if unknown:
            raise _Fail(400, f"Unknown field(s) input.converse.{unknown}", "SerializationException")
        tools = self._check_tool_config(conv.get("toolConfig"))
        self._check_messages(conv.get("messages"), tools is not None, counting=True)
        n = sum(count_tokens(b.get("text") or "") for m in conv["messages"] for b in m["content"])
        n += sum(count_tokens(b.get("text") or "") for b in conv.get("system") or [])
        if conv.get("toolConfig"):
            n += count_tokens(json.dumps(conv["toolConfig"].get("tools")))
        respond.json(200, {"inputTokens": n}, {"x-amzn-RequestId": str(uuid.uuid4())})

    def _converse(self, request: RecordedRequest, model: str, respond: Responder, *, stream: bool) -> None:
        body = self._json(request)
        unknown = sorted(set(body) - _CONVERSE_KEYS)
        if unknown:
            raise _Fail(400, f"Unknown field(s) {unknown}", "SerializationException")
        tools = self._check_tool_config(body.get("toolConfig"))
        self._check_messages(body.get("messages"), tools is not None)
        self._check_inference(body.get("inferenceConfig") or {})
        for i, block in enumerate(body.get("system") or []):
            if not isinstance(block, dict) or not (block.get("text") or "").strip() and "cachePoint" not in block:
                raise _Fail(400, f"system.{i}: a system block needs non-blank text")
        reply = self._scripted(respond)
        if reply is None:
            return
        if reply.json_body is not None:
            respond.json(200, reply.json_body, reply.headers)
            return
        text, stop = self._answer_text(body, reply)
        calls = [(f"tooluse_{uuid.uuid4().hex[:22]}", name, reply.arguments_text(i))
                 for i, (name, _) in enumerate(reply.tool_calls)]
        prompt = sum(count_tokens(b.get("text") or "") for m in body["messages"] for b in m["content"])
        usage = self._usage(prompt, count_tokens(text) + sum(count_tokens(a) for _, _, a in calls), reply)
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), **reply.headers}
        if not stream:
            content: list[dict[str, Any]] = [{"text": text}] if text else []
            content += [{"toolUse": {"toolUseId": cid, "name": name, "input": json.loads(args)}}
                        for cid, name, args in calls]
            respond.json(200, {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                               "usage": usage, "metrics": {"latencyMs": 42}}, headers)
            return
        frames = list(self._stream_frames(text, calls, stop, usage))
        tail: list[bytes] = []
        if reply.error_type:  # a scripted exception event, after the content (or after cut_after frames)
            keep = reply.cut_after if reply.cut_after is not None else len(frames) - 2
            frames, tail = frames[:keep], [_exception(reply.error_type, reply.error_message or "scripted failure")]
        _send_frames(respond, frames + tail, headers, reply.chunk_delay,
                     None if reply.error_type else reply.cut_after)

    @staticmethod
    def _json(request: RecordedRequest) -> dict[str, Any]:
        try:
            body = request.json
        except ValueError:
            raise _Fail(400, "Could not parse the request body as JSON", "SerializationException") from None
        if not isinstance(body, dict):
            raise _Fail(400, "The request body must be a JSON object", "SerializationException")
        return body

    @staticmethod
    def _check_tool_config(cfg: Any) -> Optional[list[str]]:
        if cfg is None:
            return None
        tools = cfg.get("tools") if isinstance(cfg, dict) else None
        if not isinstance(tools, list) or not tools:
            raise _Fail(400, "toolConfig.tools must contain at least one tool")
        names = []
        for i, t in enumerate(tools):
            spec = t.get("toolSpec") if isinstance(t, dict) else None
            if not isinstance(spec, dict) or not _TOOL_NAME.match(str(spec.get("name"))):
                raise _Fail(400, f"toolConfig.tools.{i}.toolSpec.name must match [a-zA-Z0-9_-]{{1,64}}")
            if not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
                raise _Fail(400, f"toolConfig.tools.{i}.toolSpec.inputSchema.json must be a JSON schema object")
            names.append(spec["name"])
        choice = cfg.get("toolChoice")
        if choice is not None:
            if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
                raise _Fail(400, "toolConfig.toolChoice must be exactly one of auto, any, tool")
            if "tool" in choice and choice["tool"].get("name") not in names:
                raise _Fail(400, f"toolConfig.toolChoice.tool.name must name one of the tools {names}")
        return names

    @staticmethod
    def _check_messages(messages: Any, has_tools: bool, counting: bool = False) -> None:
        if not isinstance(messages, list) or not messages:
            raise _Fail(400, "A conversation must start with a user message. Try again with a conversation that "
                        "starts with a user message.")
        open_calls: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role != ("user" if i % 2 == 0 else "assistant"):
                raise _Fail(400, "A conversation must alternate between user and assistant roles. Make sure the "
                            "conversation alternates between user and assistant roles and try again."
                            if i else "A conversation must start with a user message.")
            content = m.get("content")
            if not isinstance(content, list) or not content:
                raise _Fail(400, f"messages.{i}.content must not be empty")
            for j, block in enumerate(content):
                at = f"messages.{i}.content.{j}"
                kinds = set(block) & _BLOCK_KINDS if isinstance(block, dict) else set()
                if len(kinds) != 1 or len(block) != 1:
                    raise _Fail(400, f"{at} must set exactly one content block member")
                kind = kinds.pop()
                if kind == "text" and not str(block["text"]).strip():
                    raise _Fail(400, f"{at}: The text field in the ContentBlock object is blank. Add text to the "
                                "text field, and try again.")
                if kind == "image":
                    img = block["image"]
                    if img.get("format") not in ("png", "jpeg", "gif", "webp"):
                        raise _Fail(400, f"{at}.image.format must be png, jpeg, gif or webp")
                    src = img.get("source") or {}
                    if "bytes" in src:
                        _b64(src["bytes"], f"{at}.image.source.bytes")
                    elif "s3Location" not in src:
                        raise _Fail(400, f"{at}.image.source needs bytes or s3Location")
                if kind in ("toolUse", "toolResult") and not has_tools:
                    raise _Fail(400, "The toolConfig field must be defined when using toolUse and toolResult "
                                "content blocks.")
                if kind == "toolUse":
                    use = block["toolUse"]
                    if role != "assistant" or not isinstance(use.get("input"), dict):
                        raise _Fail(400, f"{at}: toolUse blocks belong to assistant turns, with an input object")
                    open_calls.add(use["toolUseId"])
                if kind == "toolResult":
                    result = block["toolResult"]
                    if role != "user" or result.get("toolUseId") not in open_calls:
                        raise _Fail(400, f"{at}: the toolResult's toolUseId {result.get('toolUseId')!r} answers no "
                                    "toolUse of the previous assistant turn")
        if messages[-1]["role"] != "user" and not counting:  # a count generates nothing: no prefill
            raise _Fail(400, "The last message must be a user message (this model does not support assistant "
                        "message prefill).")

    @staticmethod
    def _check_inference(cfg: dict[str, Any]) -> None:
        for key, low, high in (("temperature", 0, 1), ("topP", 0, 1)):
            if key in cfg and not low <= cfg[key] <= high:
                raise _Fail(400, f"inferenceConfig.{key}: must be between {low} and {high}")
        if "maxTokens" in cfg and cfg["maxTokens"] < 1:
            raise _Fail(400, "inferenceConfig.maxTokens: must be at least 1")

    @staticmethod
    def _answer_text(body: dict[str, Any], reply: Reply) -> tuple[str, str]:
        if reply.text is not None:
            text = reply.text
        elif reply.tool_calls:
            text = ""
        else:  # unscripted: echo the last user message's text
            text = " ".join(b["text"] for b in body["messages"][-1]["content"] if "text" in b)
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        words = stream_pieces(text)
        if limit is not None and len(words) > limit:
            return "".join(words[:limit]), reply.finish_reason or "max_tokens"
        return text, reply.finish_reason or ("tool_use" if reply.tool_calls else "end_turn")

    @staticmethod
    def _usage(prompt: int, completion: int, reply: Reply) -> dict[str, int]:
        usage = {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}
        usage.update(reply.usage or {})
        return usage

    @staticmethod
    def _stream_frames(text: str, calls: list[tuple[str, str, str]], stop: str, usage: dict[str, int]
                       ) -> Iterable[bytes]:
        yield _event("messageStart", {"role": "assistant"})
        index = 0
        if text:
            for w in stream_pieces(text):
                yield _event("contentBlockDelta", {"delta": {"text": w}, "contentBlockIndex": index})
            yield _event("contentBlockStop", {"contentBlockIndex": index})
            index += 1
        for cid, name, args in calls:
            yield _event("contentBlockStart", {"start": {"toolUse": {"toolUseId": cid, "name": name}},
                                               "contentBlockIndex": index})
            step = max(1, math.ceil(len(args) / 3))  # the input arrives in pieces, as it is generated
            for i in range(0, len(args), step):
                yield _event("contentBlockDelta", {"delta": {"toolUse": {"input": args[i:i + step]}},
                                                   "contentBlockIndex": index})
            yield _event("contentBlockStop", {"contentBlockIndex": index})
            index += 1
        yield _event("messageStop", {"stopReason": stop})
        yield _event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}})

    # ---- InvokeModel -------------------------------------------------------------------------------------

    def _invoke(self, request: RecordedRequest, model: str, respond: Responder) -> None:
        # absent means application/json (the API's default); anything else is refused
        if not (request.headers.get("Content-Type") or "application/json").startswith("application/json"):
            raise _Fail(400, "The provided content type is not supported; use application/json")
        body = self._json(request)
        if model.startswith("amazon.titan-embed"):
            answer, tokens = self._titan_embed(model, body)
        elif model.startswith("cohere.embed"):
            answer, tokens = self._cohere_embed(model, body)
        elif model.startswith("stability.stable-diffusion-xl"):
            answer, tokens = self._sdxl(body), 0
        elif model.startswith("stability."):
            answer, tokens = self._stability(model, body), 0
        elif model.startswith(("amazon.titan-image", "amazon.nova-canvas")):
            answer, tokens = self._titan_image(body, model), 0
        else:
            raise _Fail(400, f"{model} is not served through InvokeModel by this test server; use Converse")
        reply = self._scripted(respond)
        if reply is None:
            return
        if reply.json_body is not None:
            answer = reply.json_body
        elif reply.embeddings is not None:
            if "embedding" in answer:
                answer["embedding"] = reply.embeddings[0]
            else:
                answer["embeddings"] = reply.embeddings
        respond.json(200, answer, {"x-amzn-RequestId": str(uuid.uuid4()), "X-Amzn-Bedrock-Invocation-Latency": "42",
                                   "X-Amzn-Bedrock-Input-Token-Count": str(tokens), **reply.headers})

    @staticmethod
    def _only(body: dict[str, Any], allowed: set[str], required: Sequence[str] = ()) -> None:
        for key in body:
            if key not in allowed:
                raise _malformed(f"#: extraneous key [{key}] is not permitted")
        for key in required:
            if key not in body:
                raise _malformed(f"#: required key [{key}] not found")

    def _titan_multimodal(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Titan Multimodal Embeddings G1: inputText and/or inputImage (base64 PNG/JPEG), one call each."""
        self._only(body, {"inputText", "inputImage", "embeddingConfig"}, [])
        text, image = body.get("inputText"), body.get("inputImage")
        if text is None and image is None:
            raise _malformed("#: at least one of [inputText, inputImage] is required")
        dims = (body.get("embeddingConfig") or {}).get("outputEmbeddingLength", 1024)
        if dims not in (256, 384, 1024):
            raise _malformed(f"#/embeddingConfig/outputEmbeddingLength: {dims} is not a valid enum value")
        words = []
        if image is not None:
            try:
                data = base64.b64decode(image, validate=True)
            except (ValueError, TypeError):
                raise _malformed("#/inputImage: the image is not valid base64") from None
            if not data.startswith((b"\x89PNG", b"\xff\xd8")):
                raise _malformed("#/inputImage: only PNG and JPEG images are supported")
            words.append(embed_image_words(data))
        if text is not None:
            words.append(text)
        vector = embed_text(" ".join(words), dims)
        tokens = count_tokens(text) if text else 0
        return {"embedding": vector, "inputTextTokenCount": tokens}, tokens

    def _titan_embed(self, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        if model.startswith("amazon.titan-embed-image"):
            return self._titan_multimodal(body)
        v2 = "v2" in model
        self._only(body, {"inputText", "dimensions", "normalize", "embeddingTypes"} if v2 else {"inputText"},
                   ["inputText"])
        text = body["inputText"]
        if not isinstance(text, str) or not text:
            raise _malformed("#/inputText: expected minLength: 1")
        dims = body.get("dimensions", 1024) if v2 else 1536
        if dims not in (256, 512, 1024, 1536):
            raise _malformed(f"#/dimensions: {dims} is not a valid enum value")
        vector = embed_text(text, dims)
        return {"embedding": vector, "inputTextTokenCount": count_tokens(text), "embeddingsByType": {"float": vector}}, \
            count_tokens(text)

    def _cohere_embed(self, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        self._only(body, {"texts", "input_type", "truncate", "embedding_types", "images", "output_dimension",
                          "max_tokens", "inputs"}, ["input_type"])
        texts = body.get("texts")
        if not isinstance(texts, list) or not 1 <= len(texts) <= 96:
            raise _malformed(f"#/texts: expected between 1 and 96 items, got {len(texts or [])}")
        if body["input_type"] not in ("search_document", "search_query", "classification", "clustering", "image"):
            raise _malformed(f"#/input_type: {body['input_type']} is not a valid enum value")
        if "output_dimension" in body and "v4" not in model:
            raise _malformed("#: extraneous key [output_dimension] is not permitted")
        dims = body.get("output_dimension", 1536 if "v4" in model else 1024)
        vectors = [embed_text(t, dims) for t in texts]
        answer: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": texts, "response_type": "embeddings_floats",
                                  "embeddings": vectors}
        if body.get("embedding_types"):
            answer.update(response_type="embeddings_by_type", embeddings={"float": vectors})
        return answer, sum(count_tokens(t) for t in texts)

    def _stability(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        sd3 = "sd3" in model
        allowed = {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "style_preset"}
        self._only(body, allowed | ({"mode", "image", "strength", "cfg_scale"} if sd3 else set()), ["prompt"])
        if body.get("aspect_ratio", "1:1") not in _RATIOS:
            raise _malformed(f"#/aspect_ratio: {body['aspect_ratio']} is not a valid enum value")
        if body.get("output_format", "png") not in ("png", "jpeg") + (() if sd3 else ("webp",)):
            raise _malformed(f"#/output_format: {body['output_format']} is not a valid enum value")
        if not 0 <= body.get("seed", 0) <= 4294967294:
            raise _malformed("#/seed: must be between 0 and 4294967294")
        if body.get("mode") == "image-to-image":
            if "image" not in body or "strength" not in body:
                raise _malformed("#: image-to-image requires keys [image, strength]")
            if "aspect_ratio" in body:
                raise _malformed("#: extraneous key [aspect_ratio] is not permitted")
            _b64(body["image"], "#/image")
        elif "image" in body or "strength" in body:
            raise _malformed("#: image and strength need mode image-to-image")
        seed = body.get("seed", 0) or int(hashlib.md5(body["prompt"].encode()).hexdigest()[:6], 16)
        from .stability import ASPECT_RATIOS, make_image

        size = _png_size(_b64(body["image"], "#/image")) if "image" in body else None
        w, h = size or ASPECT_RATIOS[body.get("aspect_ratio", "1:1")]
        mime = {"jpeg": "image/jpeg", "webp": "image/webp"}.get(body.get("output_format", "png"), "image/png")
        return {"seeds": [seed], "finish_reasons": [None],
                "images": [base64.b64encode(make_image(mime, w, h, str(seed))).decode()]}

    def _sdxl(self, body: dict[str, Any]) -> dict[str, Any]:
        self._only(body, {"text_prompts", "height", "width", "cfg_scale", "clip_guidance_preset", "sampler",
                          "samples", "seed", "steps", "style_preset", "extras", "init_image", "init_image_mode",
                          "image_strength", "step_schedule_start", "step_schedule_end", "mask_source", "mask_image"},
                   ["text_prompts"])
        prompts = body["text_prompts"]
        if not isinstance(prompts, list) or not all(isinstance(p, dict) and p.get("text") for p in prompts):
            raise _malformed("#/text_prompts: expected a list of {text, weight}")
        if body.get("samples", 1) != 1:
            raise _malformed("#/samples: 1 is the only value supported")
        for key in ("height", "width"):
            if key in body and body[key] % 64:
                raise _malformed(f"#/{key}: must be a multiple of 64")
        if ("width" in body or "height" in body) and (body.get("width"), body.get("height")) not in _SDXL_SIZES:
            raise _malformed(f"#: {body.get('width')}x{body.get('height')} is not an SDXL dimension")
        if "style_preset" in body and body["style_preset"] not in _STYLE_PRESETS:
            raise _malformed(f"#/style_preset: {body['style_preset']} is not a valid enum value")
        if not 0 <= body.get("cfg_scale", 7) <= 35:
            raise _malformed("#/cfg_scale: must be between 0 and 35")
        size = (body.get("width", 1024), body.get("height", 1024))
        if "init_image" in body:
            size = _png_size(_b64(body["init_image"], "#/init_image")) or size
            if "mask_source" in body:
                self._sdxl_mask(body, size)
            elif body.get("init_image_mode", "IMAGE_STRENGTH") != "IMAGE_STRENGTH" or \
                    not 0 <= body.get("image_strength", 0.35) <= 1:
                raise _malformed("#: init_image needs init_image_mode IMAGE_STRENGTH and image_strength in [0, 1]")
        elif {"mask_source", "mask_image", "init_image_mode", "image_strength"} & set(body):
            raise _malformed("#: mask and image-strength keys need an init_image")
        seed = body.get("seed", 0) or 7
        png = make_png(size[0], size[1], str(seed))
        return {"result": "success", "artifacts": [{"seed": seed, "finishReason": "SUCCESS",
                                                    "base64": base64.b64encode(png).decode()}]}

    @staticmethod
    def _sdxl_mask(body: dict[str, Any], size: tuple[int, int]) -> None:
        source = body["mask_source"]
        if source not in ("MASK_IMAGE_BLACK", "MASK_IMAGE_WHITE", "INIT_IMAGE_ALPHA"):
            raise _malformed(f"#/mask_source: {source} is not a valid enum value")
        if "image_strength" in body:
            raise _malformed("#: extraneous key [image_strength] is not permitted with a mask")
        if source == "INIT_IMAGE_ALPHA":
            if "mask_image" in body:
                raise _malformed("#: mask_image is not used with INIT_IMAGE_ALPHA")
            if not _png_alpha(_b64(body["init_image"], "#/init_image")):
                raise _malformed("#/init_image: INIT_IMAGE_ALPHA needs an image with an alpha channel")
            return
        if "mask_image" not in body:
            raise _malformed(f"#: mask_source {source} requires key [mask_image]")
        mask = _png_size(_b64(body["mask_image"], "#/mask_image"))
        if mask != size:
            raise _malformed(f"#/mask_image: the mask ({mask}) must have the init image's dimensions ({size})")

    def _titan_image(self, body: dict[str, Any], model: str = "amazon.titan-image-generator-v2:0") -> dict[str, Any]:
        self._only(body, {"taskType", "textToImageParams", "imageVariationParams", "inPaintingParams",
                          "imageGenerationConfig"}, ["taskType"])
        task = body["taskType"]
        params_key = {"TEXT_IMAGE": "textToImageParams", "IMAGE_VARIATION": "imageVariationParams",
                      "INPAINTING": "inPaintingParams"}.get(task)
        if params_key is None:
            raise _malformed(f"#/taskType: {task} is not a valid enum value")
        params = body.get(params_key)
        if not isinstance(params, dict):
            raise _malformed(f"#: required key [{params_key}] not found")
        if (task != "IMAGE_VARIATION" or "text" in params) and not params.get("text"):
            raise _malformed(f"#/{params_key}: required key [text] not found")  # only a variation may go without
        size: Optional[tuple[int, int]] = None
        if task == "TEXT_IMAGE":
            self._only(params, {"text", "negativeText", "conditionImage", "controlMode", "controlStrength"})
            if "conditionImage" in params:
                if "titan-image-generator-v1" in model:
                    raise _malformed("#/textToImageParams: extraneous key [conditionImage] is not permitted")
                size = _png_size(_b64(params["conditionImage"], "#/textToImageParams/conditionImage"))
                if params.get("controlMode", "CANNY_EDGE") not in ("CANNY_EDGE", "SEGMENTATION"):
                    raise _malformed(f"#/textToImageParams/controlMode: {params['controlMode']} is not a valid "
                                     "enum value")
                if not 0 <= params.get("controlStrength", 0.7) <= 1:
                    raise _malformed("#/textToImageParams/controlStrength: must be between 0 and 1")
        elif task == "IMAGE_VARIATION":
            self._only(params, {"text", "negativeText", "images", "similarityStrength"})
            images = params.get("images")
            if not isinstance(images, list) or len(images) != 1:
                raise _malformed("#/imageVariationParams/images: expected 1 image")
            size = _png_size(_b64(images[0], "#/imageVariationParams/images/0"))
            if not 0.2 <= params.get("similarityStrength", 0.7) <= 1.0:
                raise _malformed("#/imageVariationParams/similarityStrength: must be between 0.2 and 1.0")
        else:
            self._only(params, {"text", "negativeText", "image", "maskImage", "maskPrompt"}, ["image"])
            if ("maskImage" in params) == ("maskPrompt" in params):
                raise _malformed("#/inPaintingParams: exactly one of [maskImage, maskPrompt] is required")
            size = _png_size(_b64(params["image"], "#/inPaintingParams/image"))
            if "maskImage" in params:
                mask = _png_size(_b64(params["maskImage"], "#/inPaintingParams/maskImage"))
                if mask != size:
                    raise _malformed(f"#/inPaintingParams/maskImage: the mask ({mask}) must have the image's "
                                     f"dimensions ({size})")
        config = body.get("imageGenerationConfig") or {}
        self._only(config, {"numberOfImages", "width", "height", "seed", "quality", "cfgScale"})
        n = config.get("numberOfImages", 1)
        if not 1 <= n <= 5:
            raise _malformed("#/imageGenerationConfig/numberOfImages: must be between 1 and 5")
        if config.get("quality", "standard") not in ("standard", "premium"):
            raise _malformed(f"#/imageGenerationConfig/quality: {config['quality']} is not a valid enum value")
        if not 1.1 <= config.get("cfgScale", 8.0) <= 10:
            raise _malformed("#/imageGenerationConfig/cfgScale: must be between 1.1 and 10")
        if "width" in config or "height" in config:
            if size is not None:
                raise _malformed("#/imageGenerationConfig: width and height are for TEXT_IMAGE without an image")
            size = (config.get("width", 1024), config.get("height", 1024))
        seed = config.get("seed", 0)
        w, h = size or (1024, 1024)
        return {"images": [base64.b64encode(make_png(w, h, str(seed + i))).decode() for i in range(n)], "error": None}


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None


def _png_alpha(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 25 and (data[25] in (4, 6) or b"tRNS" in data[:4096])


_SDXL_SIZES = {(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344),
               (1536, 640), (640, 1536)}
_STYLE_PRESETS = {"3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
                  "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami",
                  "photographic", "pixel-art", "tile-texture"}


def _send_frames(respond: Responder, frames: list[bytes], headers: dict[str, str], chunk_delay: float,
                 cut_after: Optional[int]) -> None:
    """Write event-stream frames as HTTP chunks; ``cut_after=N`` drops the socket after N frames.

    :meth:`Responder.sse` frames text events; this is the same loop for binary messages, so it reaches
    into the responder's handler the way that method does.
    """
    respond._start(200, "application/vnd.amazon.eventstream", headers, None)
    h = respond._h
    try:
        for i, frame in enumerate(frames):
            if cut_after is not None and i >= cut_after:
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            if i and chunk_delay:
                time.sleep(chunk_delay)
            h.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
    except (BrokenPipeError, ConnectionResetError) as e:
        h.close_connection = True
        raise ClientGone() from e


if __name__ == "__main__":
    serve_main(BedrockServer)
