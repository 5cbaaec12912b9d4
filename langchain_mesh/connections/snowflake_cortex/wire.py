"""The Snowflake Cortex inference REST API, both ways: mesh requests -> ``inference:complete`` /
``inference:embed`` JSON, and JSON / server-sent events -> mesh responses. Pure functions over
dicts plus the key-pair JWT Snowflake documents; no I/O, so the sync and async paths of
:mod:`.snowflake_cortex` share every line of translation.

Wire facts this module relies on (Cortex REST API reference and what its clients observe):

* tools are ``{"tool_spec": {"type": "generic", "name", "description", "input_schema"}}``;
  ``tool_choice`` is ``{"type": "auto"|"required"|"none"|"tool", "name": [names]}``;
  structured output is ``response_format: {"type": "json", "schema": {...}}``;
* an assistant's tool calls travel as ``content_list`` items ``{"type": "tool_use", "tool_use":
  {"tool_use_id", "name", "input"}}`` and their results as a *user* message with items
  ``{"type": "tool_results", "tool_results": {"tool_use_id", "name", "content": [...]}}``;
* images are ``content_list`` items ``{"type": "image", "details": {"type": "base64", "content",
  "content_type"}}``;
* a stream is ``data:`` events whose ``choices[0].delta`` is text (``type: text``, ``content``) or a
  tool-call fragment (``type: tool_use``: ``tool_use_id`` and ``name`` open a call, later fragments
  carry only ``input`` text). Deltas have no call index and the stream has no end event: it simply
  ends. ``finish_reason`` comes with ``stream: false`` answers (and is read from a stream if sent).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Iterable, Optional

from ...errors import CapabilityError, CredentialError, ProviderError, SettingsError, StreamInterruptedError
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingResponse,
    FunctionCall,
    ImagePart,
    ImageURLPart,
    Message,
    ModelCapabilities,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "PROVIDER", "TOOL_RESULTS_CONTENT", "check_request", "completion_body", "parse_completion", "StreamDecoder",
    "embed_body", "parse_embeddings", "error_message", "load_private_key", "keypair_jwt",
    "jwt_account",
]

PROVIDER = "snowflake_cortex"

#: seed settings Cortex's complete API has a parameter for; any other is refused (see unsupported_settings)
SUPPORTED_SETTINGS = frozenset({"temperature", "topP", "maxOutputTokens", "tools", "toolChoice",
                                "responseFormat", "extra"})
#: body keys built from the request; ``extra`` may add others but not these
BUILT_KEYS = frozenset({"model", "messages", "stream", "temperature", "top_p", "max_tokens", "max_output_tokens",
                        "tools", "tool_choice", "response_format"})
#: the image types Cortex accepts inline
IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp", "image/heic",
                         "image/heif"})
#: Cortex rejects a message whose ``content`` is empty; a tool-results turn has nothing else to say
TOOL_RESULTS_CONTENT = "[tool results]"
_FINISH = {"stop": "stop", "length": "length", "max_tokens": "length", "content_filter": "content_filter",
           "tool_calls": "tool_calls", "tool_use": "tool_calls"}


# --------------------------------------------------------------------------------------------------
# requests


def unsupported_settings(request: CompletionRequest) -> list[str]:
    """Seed settings set to something that asks for behaviour Cortex cannot give.

    ``False``, ``[]`` and ``{}`` ask for nothing (``logProbs: false`` is what every caller means
    by default), so only values that would change the answer count.
    """
    return [k for k, v in request.settings.to_dict().items()
            if k not in SUPPORTED_SETTINGS and v not in (False, [], {})]


def check_request(model: str, request: CompletionRequest, caps: ModelCapabilities) -> None:
    """Refuse, before any network call, what this model on Cortex cannot do."""
    bad = unsupported_settings(request)
    if bad:
        raise SettingsError(
            f"{PROVIDER} does not support the setting{'s' if len(bad) > 1 else ''} {', '.join(bad)}: the Cortex "
            "complete API takes temperature, topP, maxOutputTokens, tools, toolChoice and responseFormat "
            "(and provider keys under 'extra'); remove the others", bad)
    s = request.settings
    needs = []
    if s.tools and not caps.tools:
        needs.append("tool calling")
    if s.responseFormat is not None and s.responseFormat.type == "json" and not caps.json_output:
        needs.append("JSON output")
    if any(isinstance(p, (ImagePart, ImageURLPart)) for m in request.messages for p in m.parts) \
            and not caps.image_input:
        needs.append("image input")
    if needs:
        raise CapabilityError(
            f"{model} on Snowflake Cortex does not offer {' or '.join(needs)}; use a model that does "
            "(claude-3-5-sonnet offers all three) or declare the model's capabilities in the config")


def _image_item(part: Any) -> dict[str, Any]:
    detail = None
    if isinstance(part, ImageURLPart):
        if not part.url.startswith("data:"):
            raise CapabilityError(f"{PROVIDER} takes images inline, not by URL ({part.url[:60]}); "
                                  "download the image and pass its bytes")
        detail = part.detail
        part = ImagePart.from_data_url(part.url)
    if part.mime_type not in IMAGE_TYPES:
        raise CapabilityError(f"{PROVIDER} does not read {part.mime_type} images; "
                              f"it takes {', '.join(sorted(IMAGE_TYPES))}")
    details = {"type": "base64", "content": part.base64, "content_type": part.mime_type}
    if detail:
        details["detail"] = detail
    return {"type": "image", "details": details}


def _user_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "user", "content": m.text}
    if any(p.type != "text" for p in m.parts):
        out["content_list"] = [{"type": "text", "text": p.text} if p.type == "text" else _image_item(p)
                               for p in m.parts]
    return out


def _assistant_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": m.text}
    if m.tool_calls:
        items: list[dict[str, Any]] = [{"type": "text", "text": m.text}] if m.text else []
        items += [{"type": "tool_use", "tool_use": {"tool_use_id": tc.id, "name": tc.function.name,
                                                    "input": _arguments_object(tc.function.arguments)}}
                  for tc in m.tool_calls]
        out["content_list"] = items
    return out


def _arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        raise SettingsError(f"tool call arguments must be JSON to send to {PROVIDER}, got {arguments[:60]!r}",
                            ["messages"]) from None


def _tool_result_item(m: Message, call_names: dict[str, str]) -> dict[str, Any]:
    name = call_names.get(m.tool_call_id or "") or m.name
    if not name:
        raise SettingsError(f"the tool result for call {m.tool_call_id!r} follows no assistant tool call with that "
                            f"id, and {PROVIDER} needs the tool's name; add the assistant message or set name=",
                            ["messages"])
    return {"type": "tool_results", "tool_results": {"tool_use_id": m.tool_call_id, "name": name,
                                                     "content": [{"type": "text", "text": m.text}]}}


def messages_json(messages: Iterable[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool results must name their tool; mesh tool messages carry only the id
    results: Optional[dict[str, Any]] = None  # the user message collecting the current turn's tool results
    for m in messages:
        if m.role == "tool":
            if results is None:
                results = {"role": "user", "content": TOOL_RESULTS_CONTENT, "content_list": []}
                out.append(results)
            results["content_list"].append(_tool_result_item(m, call_names))
            continue
        results = None
        if m.role == "system":
            if any(p.type != "text" for p in m.parts):
                raise CapabilityError(f"{PROVIDER} system messages carry text only; put images in a user message")
            out.append({"role": "system", "content": m.text})
        elif m.role == "user":
            out.append(_user_message(m))
        else:
            call_names.update({tc.id: tc.function.name for tc in m.tool_calls or []})
            out.append(_assistant_message(m))
    return out


def _tools_json(request: CompletionRequest) -> list[dict[str, Any]]:
    return [{"tool_spec": {"type": "generic", "name": t.function.name, "description": t.function.description or "",
                           "input_schema": t.function.parameters}}
            for t in request.settings.tools or []]


def _tool_choice_json(request: CompletionRequest) -> Optional[dict[str, Any]]:
    tc = request.settings.toolChoice
    if tc is None:
        return None
    if tc.type == "tool_name":
        return {"type": "tool", "name": [tc.name]}
    return {"type": tc.type}


def completion_body(model: str, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
    s = request.settings
    body: dict[str, Any] = {"model": model, "messages": messages_json(request.messages), "stream": stream}
    if s.temperature is not None:
        body["temperature"] = s.temperature
    if s.topP is not None:
        body["top_p"] = s.topP
    if s.maxOutputTokens is not None:
        body["max_tokens"] = s.maxOutputTokens
    if s.tools:
        body["tools"] = _tools_json(request)
    choice = _tool_choice_json(request)
    if choice is not None:
        body["tool_choice"] = choice
    fmt = s.responseFormat
    if fmt is not None and fmt.type == "json":
        # Cortex always wants a schema ("any JSON object" is the schema of any object) and always
        # enforces it, so `strict` is met either way; the format's `name` has no place on this API
        body["response_format"] = {"type": "json", "schema": fmt.schema_ or {"type": "object"}}
    for key, value in (s.extra or {}).items():
        if key in BUILT_KEYS:
            raise SettingsError(f"extra.{key} is a key the mesh builds from the request and its settings; "
                                "use the message or the standard setting instead", ["extra"])
        body[key] = value
    return body


# --------------------------------------------------------------------------------------------------
# responses


def parse_usage(u: Any) -> Optional[Usage]:
    if not isinstance(u, dict) or not u:
        return None
    return Usage(input_tokens=u.get("prompt_tokens") or 0, output_tokens=u.get("completion_tokens") or 0,
                 total_tokens=u.get("total_tokens") or 0, cached_input_tokens=u.get("cache_read_input_tokens"),
                 cache_creation_input_tokens=u.get("cache_write_input_tokens"))


def _finish(reason: Any) -> Optional[str]:
    return _FINISH.get(reason) if isinstance(reason, str) else None


def _tool_call(item: dict[str, Any], i: int) -> ToolCall:
    # the reference nests the call under "tool_use"; streamed-and-merged answers put it flat
    call = item.get("tool_use") if isinstance(item.get("tool_use"), dict) else item
    args = call.get("input")
    text = args if isinstance(args, str) else json.dumps(args if args is not None else {})
    return ToolCall(id=call.get("tool_use_id") or f"call_{i}",
                    function=FunctionCall(name=call.get("name") or "", arguments=text or "{}"))


def parse_completion(body: dict[str, Any], model: str) -> CompletionResponse:
    """A ``stream: false`` answer."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    items = message.get("content_list") or []
    text = message.get("content")
    if not isinstance(text, str):
        text = "".join(i.get("text") or "" for i in items if i.get("type") == "text")
    calls = [_tool_call(i, n) for n, i in enumerate(x for x in items if x.get("type") == "tool_use"
                                                    or "tool_use_id" in x)]
    finish = _finish(choice.get("finish_reason") or body.get("finish_reason"))
    return CompletionResponse(text=text, tool_calls=calls,
                              finish_reason=finish or ("tool_calls" if calls else "stop"),  # type: ignore[arg-type]
                              usage=parse_usage(body.get("usage")) or Usage(), model=body.get("model") or model,
                              raw=body)


class StreamDecoder:
    """Turns Cortex stream events into mesh stream events, numbering tool calls as they open.

    Cortex deltas carry no call index: a fragment with ``tool_use_id`` opens the next call and the
    ``input`` fragments after it belong to that call.
    """

    def __init__(self, model: str):
        self.model = model
        self.text: list[str] = []
        self.events = 0
        self._calls: list[dict[str, str]] = []
        self._usage: Optional[Usage] = None
        self._finish: Optional[str] = None

    def feed(self, data: str) -> list[StreamEvent]:
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise ProviderError(f"{PROVIDER} sent a stream event that is not JSON: {data[:80]!r}",
                                provider=PROVIDER) from None
        self.events += 1
        self.model = event.get("model") or self.model
        self._usage = parse_usage(event.get("usage")) or self._usage  # usage counts are cumulative
        out: list[StreamEvent] = []
        for choice in event.get("choices") or []:
            self._finish = _finish(choice.get("finish_reason")) or self._finish
            chunk = self._delta(choice.get("delta") or {})
            if chunk is not None:
                out.append(chunk)
        return out

    def _delta(self, d: dict[str, Any]) -> Optional[StreamChunk]:
        if d.get("type") == "tool_use":
            if d.get("tool_use_id"):
                self._calls.append({"id": d["tool_use_id"], "name": d.get("name") or "", "arguments": ""})
            elif not self._calls:
                raise ProviderError(f"{PROVIDER} streamed tool input before any tool call opened", provider=PROVIDER)
            i = len(self._calls) - 1
            piece = d.get("input") or ""
            self._calls[i]["arguments"] += piece
            return StreamChunk(tool_call_deltas=[ToolCallDelta(
                index=i, id=d.get("tool_use_id"), name=d.get("name") if d.get("tool_use_id") else None,
                arguments=piece)])
        if d.get("type") not in (None, "text"):  # reasoning output ("anthropic"/"openai" deltas) is not text
            return None
        piece = d.get("content") if isinstance(d.get("content"), str) else d.get("text")
        if not piece:
            return None
        self.text.append(piece)
        return StreamChunk(text=piece)

    def footer(self) -> StreamFooter:
        """The closing event, once the body has ended cleanly."""
        if not self.events:
            raise StreamInterruptedError(f"the {PROVIDER} stream ended before its first event", provider=PROVIDER)
        calls = [ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                 for c in self._calls]
        finish = self._finish or ("tool_calls" if calls else "stop")
        return StreamFooter(finish_reason=finish, usage=self._usage or Usage(),  # type: ignore[arg-type]
                            tool_calls=calls, model=self.model)


# --------------------------------------------------------------------------------------------------
# embeddings


def embed_body(model: str, texts: list[str]) -> dict[str, Any]:
    return {"model": model, "text": texts}


def _vector(v: Any) -> list[float]:
    # the reference types each embedding as a nested array ([[...]]); accept the flat form too
    if v and isinstance(v[0], list):
        v = v[0]
    return [float(x) for x in v]


def parse_embeddings(body: dict[str, Any], model: str) -> EmbeddingResponse:
    rows = sorted(body.get("data") or [], key=lambda d: d.get("index", 0))
    usage = Usage(input_tokens=(body.get("usage") or {}).get("total_tokens") or 0)
    return EmbeddingResponse(embeddings=[_vector(r.get("embedding") or []) for r in rows], usage=usage,
                             model=body.get("model") or model)


# --------------------------------------------------------------------------------------------------
# errors


def error_message(text: str) -> str:
    """The message of a Snowflake error body (``{"message", "code", "request_id"}``), else the raw text."""
    raw = text.strip()[:500] or "(empty body)"
    try:
        body = json.loads(text)
    except ValueError:
        return raw
    if not isinstance(body, dict):
        return raw
    msg = body.get("message")
    if msg is None and isinstance(body.get("error"), dict):  # gateways in front of Cortex use OpenAI's shape
        msg = body["error"].get("message")
    code = body.get("code") or body.get("error_code")
    return f"{msg or raw} (code {code})" if code else str(msg or raw)


# --------------------------------------------------------------------------------------------------
# key-pair authentication


def jwt_account(account: str) -> str:
    """The account part of JWT claims, as Snowflake's reference generator derives it.

    Region and cloud suffixes (``xy12345.us-east-2.aws``) are dropped; for a ``.global``
    (replication) identifier the part before the first ``-`` is kept; the result is uppercase.
    """
    if ".global" in account:
        head = account.split("-", 1)[0]
    else:
        head = account.split(".", 1)[0]
    return head.upper()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_key_fingerprint(public_key: Any) -> str:
    """``SHA256:<base64 of the SHA-256 of the DER public key>``, the form Snowflake stores for a user."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def load_private_key(pem: str, passphrase: Optional[str], where: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as e:
        # the library's message names the problem (bad passphrase, not PEM), never the key
        raise CredentialError(f"the private key of {where} cannot be loaded: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError(f"the private key of {where} is not an RSA key; Snowflake key-pair auth uses RSA")
    return key


def keypair_jwt(account: str, user: str, key: Any, lifetime: float) -> tuple[str, float]:
    """An RS256 JWT for Snowflake key-pair auth, and when it expires (epoch seconds)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    now = time.time()
    qualified = f"{jwt_account(account)}.{user.upper()}"
    iat, exp = int(now), int(now + lifetime)
    claims = {"iss": f"{qualified}.{public_key_fingerprint(key.public_key())}", "sub": qualified,
              "iat": iat, "exp": exp}
    header = {"alg": "RS256", "typ": "JWT"}
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}", float(exp)
