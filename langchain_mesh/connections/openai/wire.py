"""The OpenAI wire format, both ways: mesh requests -> chat/embeddings/images JSON, and JSON -> mesh
responses and stream events. Pure functions over dicts, no SDK and no I/O, shared by every
connection type that speaks (or nearly speaks) it: openai, azure_openai, azure_llm, databricks,
mistral, openai_compatible.

What differs between those services is small and declared in a :class:`Dialect` (which token-limit
key, how "a tool call is required" is spelled, which settings exist) instead of being patched in
each connection. Requests are built as plain dicts and responses parsed from plain JSON because
that is where the time goes: building the SDK's typed models and walking its parameter transforms
costs more than the whole mesh layer (see ``bench/overhead.py``).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Optional

from ...errors import ProviderError, SettingsError, StreamInterruptedError, answer_object, error_for_status
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCall,
    GeneratedImage,
    ImageGenerationResponse,
    ImagePart,
    ImageURLPart,
    Message,
    StreamChunk,
    StreamFooter,
    TextPart,
    TokenLogProb,
    ToolCall,
    ToolCallDelta,
    Usage,
    sniff_image_mime,
)
from ..transport.sse import SSEDecoder, aiter_sse_data, iter_sse_data  # noqa: F401  (part of this module's API)

from .images import image_body  # noqa: E402,F401  (re-exported: the images API lives there)

__all__ = [
    "Dialect", "chat_body", "parse_chat_completion", "ChunkReader", "SSEDecoder", "iter_sse_data", "aiter_sse_data",
    "embedding_bodies", "parse_embeddings", "image_body", "parse_images", "provider_message",
]


@dataclass(frozen=True)
class Dialect:
    """How one service departs from OpenAI's own chat API."""

    provider: str = "openai"
    #: OpenAI deprecated ``max_tokens`` for ``max_completion_tokens`` (the only one o-series accept);
    #: most OpenAI-compatible servers still know only ``max_tokens``
    max_tokens_key: str = "max_tokens"
    #: OpenAI spells "some tool call is required" ``required``; Mistral ``any``
    tool_choice_required: str = "required"
    seed_key: str = "seed"
    #: seed settings the service has no parameter for; using one is an error unless the connection
    #: is configured to drop them
    unsupported: frozenset[str] = frozenset({"topK"})
    #: settings passed through as non-OpenAI body keys (vLLM's ``top_k``)
    extra_keys: dict[str, str] = field(default_factory=dict)
    #: ``stream_options.include_usage``: some servers reject the key
    stream_usage: bool = True
    #: ``dimensions`` on embeddings
    embedding_dimensions: bool = True
    #: the largest number of inputs one embeddings request may carry
    embedding_batch: int = 2048

    @cached_property
    def setting_keys(self) -> dict[str, str]:
        """Seed setting -> body key, for the plain-valued settings this service has."""
        keys = {"temperature": "temperature", "topP": "top_p", "maxOutputTokens": self.max_tokens_key,
                "stopSequences": "stop", "presencePenalty": "presence_penalty",
                "frequencyPenalty": "frequency_penalty", "logitBias": "logit_bias", "logProbs": "logprobs",
                "topLogProbs": "top_logprobs", "seed": self.seed_key, **self.extra_keys}
        return {k: v for k, v in keys.items() if k not in self.unsupported}


# --------------------------------------------------------------------------------------------------
# requests


def _content(m: Message) -> Any:
    c = m.content
    if c is None or isinstance(c, str):
        return c
    parts: list[dict[str, Any]] = []
    for p in c:
        if isinstance(p, TextPart):
            parts.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": p.data_url}})
        elif isinstance(p, ImageURLPart):
            img: dict[str, Any] = {"url": p.url}
            if p.detail:
                img["detail"] = p.detail
            parts.append({"type": "image_url", "image_url": img})
    return parts


def messages_json(messages: Iterable[Message]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": _content(m)}
        if m.tool_calls:
            d["tool_calls"] = [{"id": tc.id, "type": "function",
                                "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                               for tc in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            d["name"] = m.name
        if d["content"] is None and m.role != "assistant":
            d["content"] = ""  # only assistant turns may omit content
        images = _split_images(d) if m.role != "user" else None
        out.append(d)
        if images:
            out.append({"role": "user", "content": images})
    return _merge_image_turns(out)


def _split_images(d: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    """Chat Completions accepts images in user turns only: a tool result (or system/assistant turn)
    that carries images keeps its text and the images follow in a user turn, which is how a model
    sees a screenshot returned by a tool."""
    content = d["content"]
    if not isinstance(content, list):
        return None
    images = [p for p in content if p["type"] == "image_url"]
    if not images:
        return None
    text = [p for p in content if p["type"] != "image_url"]
    d["content"] = text or ("[image attached in the next message]" if d["role"] == "tool" else "")
    return images


def _merge_image_turns(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Parallel tool results must stay contiguous after the assistant turn that called them: move the
    # image turns split off them to after the last tool result of the run.
    i = 0
    while i < len(out) - 1:
        if out[i]["role"] == "user" and isinstance(out[i]["content"], list) and i > 0 and \
                out[i - 1]["role"] == "tool" and out[i + 1]["role"] == "tool":
            j = i + 1
            while j + 1 < len(out) and out[j + 1]["role"] == "tool":
                j += 1
            out.insert(j, out.pop(i))
            continue
        i += 1
    return out


def _tools_json(request: CompletionRequest) -> list[dict[str, Any]]:
    out = []
    for t in request.settings.tools or []:
        f = t.function
        fn: dict[str, Any] = {"name": f.name, "parameters": f.parameters}
        if f.description is not None:
            fn["description"] = f.description
        if f.strict is not None:
            fn["strict"] = f.strict
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice_json(request: CompletionRequest, dialect: Dialect) -> Any:
    tc = request.settings.toolChoice
    if tc is None:
        return None
    if tc.type == "tool_name":
        return {"type": "function", "function": {"name": tc.name}}
    if tc.type == "required":
        return dialect.tool_choice_required
    return tc.type


def _response_format_json(request: CompletionRequest) -> Optional[dict[str, Any]]:
    rf = request.settings.responseFormat
    if rf is None or rf.type == "text":
        return None
    if rf.schema_ is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema_}
    if rf.strict:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


def chat_body(model: str, request: CompletionRequest, dialect: Dialect, *, stream: bool = False,
              drop_unsupported: bool = False) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions``."""
    s = request.settings
    body: dict[str, Any] = {"model": model, "messages": messages_json(request.messages)}
    given = s.model_fields_set
    if given:
        bad = [n for n in dialect.unsupported if getattr(s, n) is not None]
        if bad and not drop_unsupported:
            raise SettingsError(
                f"{dialect.provider} has no equivalent of the setting(s) {', '.join(sorted(bad))}; remove them, "
                "or set drop_unsupported_settings: true on the connection to ignore them", bad)
        for setting, key in dialect.setting_keys.items():
            value = getattr(s, setting)
            if value is not None:
                body[key] = value
        if "logit_bias" in body:  # JSON object keys are strings
            body["logit_bias"] = {str(k): v for k, v in body["logit_bias"].items()}
        if s.tools:
            body["tools"] = _tools_json(request)
        _put(body, "tool_choice", _tool_choice_json(request, dialect))
        _put(body, "response_format", _response_format_json(request))
        if s.extra:
            body.update(s.extra)  # deliberate pass-through wins (reasoning_effort, user, metadata...)
    if stream:
        body["stream"] = True
        if dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


# --------------------------------------------------------------------------------------------------
# responses

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
           "content_filter": "content_filter", "end_turn": "stop", "stop_sequence": "stop",
           "max_tokens": "length", "tool_use": "tool_calls", "model_length": "length", "error": "error"}


def _finish(reason: Any) -> Optional[str]:
    if reason is None:
        return None
    return _FINISH.get(reason, "stop")


def parse_usage(u: Optional[dict[str, Any]]) -> Usage:
    if not u:
        return Usage()
    inp = u.get("prompt_tokens") or 0
    out = u.get("completion_tokens") or 0
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=u.get("total_tokens") or inp + out,
                 cached_input_tokens=cached, reasoning_tokens=reasoning)


def _log_probs(lp: Optional[dict[str, Any]]) -> Optional[list[TokenLogProb]]:
    if not lp or lp.get("content") is None:
        return None
    return [TokenLogProb(token=t["token"], logprob=t["logprob"],
                         top=[(x["token"], x["logprob"]) for x in t.get("top_logprobs") or []])
            for t in lp["content"]]


def _tool_calls(raw: Optional[list[dict[str, Any]]]) -> list[ToolCall]:
    out = []
    for i, tc in enumerate(raw or []):
        fn = tc.get("function") or {}
        out.append(ToolCall(id=tc.get("id") or f"call_{i}",
                            function=FunctionCall(name=fn.get("name") or "", arguments=fn.get("arguments") or "{}")))
    return out


def parse_chat_completion(body: dict[str, Any], provider: str = "openai") -> CompletionResponse:
    choices = answer_object(body, provider).get("choices")
    if not choices:
        raise ProviderError(f"{provider} answered without any choice", provider=provider,
                            provider_message=json.dumps(body)[:500])
    choice = choices[0]
    msg = choice.get("message") or {}
    text = msg.get("content")
    finish = _finish(choice.get("finish_reason"))
    refusal = msg.get("refusal")
    if not text and refusal:  # structured outputs: the model declined; say so instead of empty JSON
        text, finish = refusal, "content_filter"
    if isinstance(text, list):  # some compatible servers answer with content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    return CompletionResponse(
        text=text or "",
        tool_calls=_tool_calls(msg.get("tool_calls")),
        finish_reason=finish,  # type: ignore[arg-type]
        usage=parse_usage(body.get("usage")),
        log_probs=_log_probs(choice.get("logprobs")),
        model=body.get("model"),
        raw=body,
    )


def stream_error(data: dict[str, Any], provider: str) -> ProviderError:
    """An error event inside an otherwise successful (HTTP 200) stream."""
    err = data.get("error")
    msg = err.get("message") if isinstance(err, dict) else str(err)
    code = err.get("code") if isinstance(err, dict) else None
    status = code if isinstance(code, int) else 500
    return error_for_status(status, msg or "error event in the stream", provider=provider)


class ChunkReader:
    """Turns ``chat.completion.chunk`` JSON objects into mesh stream events.

    The footer is only produced when the stream really finished (a ``finish_reason`` arrived);
    the usage-only chunk that ``include_usage`` adds after it is folded into the same footer.
    """

    def __init__(self, provider: str):
        self.provider = provider
        self.finish: Optional[str] = None
        self.usage = Usage()
        self.model: Optional[str] = None
        self.text: list[str] = []

    def feed(self, data: dict[str, Any]) -> Optional[StreamChunk]:
        answer_object(data, self.provider)
        if "error" in data and not data.get("choices"):
            raise stream_error(data, self.provider)
        if data.get("model"):
            self.model = data["model"]
        if data.get("usage"):
            self.usage = parse_usage(data["usage"])
        choices = data.get("choices")
        if not choices:  # Azure's prompt-filter chunk, or the usage chunk
            return None
        c = choices[0]
        if c.get("finish_reason"):
            self.finish = _finish(c["finish_reason"])
        delta = c.get("delta") or {}
        text = delta.get("content")
        raw_calls = delta.get("tool_calls")
        lp = _log_probs(c.get("logprobs"))
        if not text and not raw_calls and not lp:
            return None
        deltas = []
        for tc in raw_calls or []:
            fn = tc.get("function") or {}
            deltas.append(ToolCallDelta(index=tc.get("index", 0), id=tc.get("id"), name=fn.get("name"),
                                        arguments=fn.get("arguments") or ""))
        if text:
            self.text.append(text)
        return StreamChunk(text=text or None, tool_call_deltas=deltas, log_probs=lp)

    def footer(self) -> StreamFooter:
        if self.finish is None:
            raise StreamInterruptedError(
                f"the {self.provider} stream ended before its finish_reason: the answer is incomplete",
                provider=self.provider, partial_text="".join(self.text))
        return StreamFooter(finish_reason=self.finish, usage=self.usage, model=self.model)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# embeddings and images


def embedding_bodies(model: str, request: EmbeddingRequest, dialect: Dialect,
                     batch_size: Optional[int] = None) -> list[dict[str, Any]]:
    """One request body per batch (the API caps inputs per call)."""
    if request.dimensions is not None and not dialect.embedding_dimensions:
        raise SettingsError(f"{dialect.provider} embeddings have a fixed size: 'dimensions' is not supported",
                            ["dimensions"])
    size = max(1, min(batch_size or dialect.embedding_batch, dialect.embedding_batch))
    out = []
    for i in range(0, len(request.texts), size):
        body: dict[str, Any] = {"model": model, "input": request.texts[i:i + size], "encoding_format": "base64"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        out.append(body)
    return out


def _vector(v: Any) -> list[float]:
    if isinstance(v, str):  # base64 little-endian float32: a quarter of the JSON size
        raw = base64.b64decode(v)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return v


def parse_embeddings(bodies: list[dict[str, Any]]) -> EmbeddingResponse:
    vectors: list[list[float]] = []
    usage = Usage()
    model = None
    for body in bodies:
        data = sorted(answer_object(body, "the provider").get("data") or [], key=lambda d: d.get("index", 0))
        vectors.extend(_vector(d["embedding"]) for d in data)
        u = body.get("usage") or {}
        usage = usage + Usage(input_tokens=u.get("prompt_tokens") or 0, total_tokens=u.get("total_tokens") or 0)
        model = body.get("model") or model
    return EmbeddingResponse(embeddings=vectors, usage=usage, model=model)


def parse_images(body: dict[str, Any], fetch: Any = None) -> ImageGenerationResponse:
    """``fetch(url) -> bytes`` downloads images answered by URL (servers that ignore ``b64_json``)."""
    images = []
    for d in answer_object(body, "the provider").get("data") or []:
        if d.get("b64_json"):
            data = base64.b64decode(d["b64_json"])
        elif d.get("url") and fetch is not None:
            data = fetch(d["url"])
        else:
            raise ProviderError("the image answer carried neither b64_json nor a url", provider="openai")
        try:
            mime = sniff_image_mime(data)
        except ValueError:
            mime = "image/png"
        images.append(GeneratedImage(data=data, mime_type=mime))
    return ImageGenerationResponse(images=images, model=body.get("model"))


# --------------------------------------------------------------------------------------------------
# errors


def provider_message(body: Any, fallback: str = "") -> str:
    """The human part of an error body, whichever service's shape it has.

    OpenAI/Azure: ``{"error": {"message": ...}}``; Mistral: ``{"object": "error", "message": ...}``
    (a dict of validation details on 422); Databricks: ``{"error_code": ..., "message": ...}``.
    """
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            msg = inner.get("message", inner.get("detail"))
            code = inner.get("code") or body.get("error_code")
            if msg is None:
                msg = json.dumps(inner)[:500]
            elif not isinstance(msg, str):
                msg = json.dumps(msg)[:500]
            return f"{msg} ({code})" if code and isinstance(code, str) and code not in msg else msg
        if isinstance(inner, str):
            return inner
    if isinstance(body, str) and body:
        return body[:500]
    return fallback
