"""OpenAI request bodies -> mesh requests, and mesh responses -> OpenAI response bodies.

The reverse of :mod:`langchain_mesh.connections.openai_wire` (which turns mesh requests into OpenAI
bodies for providers). The server imports no provider module, so the OpenAI names of the settings are
written out here; a test checks them against ``openai_wire.Dialect`` so the two directions cannot
drift apart. The mesh's own validation (``validate_settings``, the ``Message``
model) checks values; its errors are mapped back to the request field the client sent.
"""

from __future__ import annotations

import base64
import itertools
import re
import struct
import time
import uuid
from typing import Any, Callable, Optional, Sequence

from pydantic import ValidationError

from ..schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCall,
    ImageGenerationRequest,
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
    validate_settings,
)
from ..errors import SettingsError
from .errors import APIError, api_error
from .models import ChatCompletionRequest, EmbeddingsRequest, ImagesRequest

__all__ = ["completion_request", "check_request", "completion_json", "ChunkStream", "embedding_request", "embeddings_json",
           "image_request", "edit_request", "variation_request", "images_json", "usage_json"]

# OpenAI parameter -> seed setting: openai_wire's table read backwards (top_k is vLLM's spelling)
# the OpenAI request key -> the seed setting it sets (the API this server speaks; top_k as vLLM spells it)
_SETTING_OF: dict[str, str] = {
    "temperature": "temperature", "top_p": "topP", "max_tokens": "maxOutputTokens", "stop": "stopSequences",
    "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty", "logit_bias": "logitBias",
    "logprobs": "logProbs", "top_logprobs": "topLogProbs", "seed": "seed", "top_k": "topK",
}
_SETTING_OF["max_completion_tokens"] = "maxOutputTokens"  # OpenAI's newer name; wins over max_tokens
# -> settings.extra: OpenAI request fields with no seed setting, for the services that take them
# (another provider answers a clear 400 naming the field it does not know)
_PASS_THROUGH = ("user", "parallel_tool_calls", "reasoning_effort", "metadata", "store", "service_tier",
                 "prompt_cache_key", "safety_identifier", "verbosity")
_FINISH = {None: "stop", "error": "stop"}  # OpenAI has no "error" finish reason


# Response ids: unique per process by a random prefix (workers differ), then a counter; uuid4 per
# response would be a system call and an object on every request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}{_ID_PREFIX}{next(_ids):012x}"


# --------------------------------------------------------------------------------------------------
# chat: request


def _text_parts(content: Any) -> Any:
    return content if isinstance(content, str) else [TextPart(text=p.text) for p in content]


def _user_parts(content: Any, at: str) -> Any:
    if isinstance(content, str):
        return content
    parts: list[Any] = []
    for j, p in enumerate(content):
        if p.type == "text":
            parts.append(TextPart(text=p.text))
        elif p.image_url.url.startswith("data:"):
            try:
                parts.append(ImagePart.from_data_url(p.image_url.url))
            except ValueError as e:
                raise APIError(400, f"invalid image data URL: {e} (expected data:<mime>;base64,<data>)",
                               param=f"{at}.content[{j}].image_url.url", code="invalid_image_url") from None
        else:
            parts.append(ImageURLPart(url=p.image_url.url, detail=p.image_url.detail))
    return parts


def _message(m: Any, at: str) -> Message:
    role = m.role
    if role in ("system", "developer"):
        return Message(role="system", content=_text_parts(m.content), name=m.name)
    if role == "user":
        return Message(role="user", content=_user_parts(m.content, at), name=m.name)
    if role == "tool":
        return Message(role="tool", content=_text_parts(m.content), tool_call_id=m.tool_call_id, name=m.name)
    content = m.content
    if isinstance(content, list):  # assistant history: text and refusal parts, as text
        content = "".join(p.text if p.type == "text" else p.refusal for p in content)
    calls = [ToolCall(id=tc.id, function=FunctionCall(name=tc.function.name, arguments=tc.function.arguments))
             for tc in m.tool_calls or ()] or None
    return Message(role="assistant", content=content, tool_calls=calls, name=m.name)


def _settings(req: ChatCompletionRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The seed settings of a request, and which request field each came from."""
    settings: dict[str, Any] = {}
    given: dict[str, str] = {}
    sent = req.model_fields_set  # every field below defaults to None: only those the client sent can be set
    for param, setting in _SETTING_OF.items():
        if param in sent:
            value = getattr(req, param)
            if value is not None:
                settings[setting] = value
                given[setting] = param
    if req.tools:
        settings["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
        given["tools"] = "tools"
    tc = req.tool_choice
    if tc is not None:
        settings["toolChoice"] = tc if isinstance(tc, str) else {"type": "tool_name", "name": tc.function.name}
        given["toolChoice"] = "tool_choice"
    rf = req.response_format
    if rf is not None and rf.type != "text":
        fmt: dict[str, Any] = {"type": "json"}
        if rf.type == "json_schema" and rf.json_schema.schema_ is not None:
            fmt.update(schema=rf.json_schema.schema_, name=rf.json_schema.name, strict=bool(rf.json_schema.strict))
        settings["responseFormat"] = fmt
        given["responseFormat"] = "response_format"
    extra = {k: getattr(req, k) for k in _PASS_THROUGH if k in sent and getattr(req, k) is not None}
    if extra:
        settings["extra"] = extra
    return settings, given


def completion_request(req: ChatCompletionRequest) -> tuple[CompletionRequest, Callable[[Sequence[str]], Optional[str]]]:
    """The mesh request, and a function naming the request field behind a :class:`SettingsError`."""
    _check_stream_options(req)
    messages = [_checked_message(m, i) for i, m in enumerate(req.messages)]
    settings, param_of = _checked_settings(req)
    # the messages are validated Message objects already
    return CompletionRequest.model_construct(messages=messages, settings=settings), param_of


def check_request(req: ChatCompletionRequest, known: Optional[Callable[[Sequence[str]], Optional[str]]] = None
                  ) -> Callable[[Sequence[str]], Optional[str]]:
    """The checks of :func:`completion_request` without building the mesh request (the pass-through
    path forwards the client's JSON): the same 400s, the same fields named. A message whose content is
    a string and that is neither a tool result nor an assistant turn has nothing left to check after
    the request model, so it is not converted.

    ``known``: the ``param_of`` of an earlier request with the same fields but the messages
    (:class:`.validated.KnownShapes`): the settings, which depend on those fields alone, passed then,
    so only the messages are checked; it is returned."""
    _check_stream_options(req)
    for i, m in enumerate(req.messages):
        if m.role in ("tool", "assistant") or type(m.content) is not str:
            _checked_message(m, i)
    if known is not None:
        return known
    settings, given = _settings(req)
    _validated(settings, given)
    return _param_of(given)


def _check_stream_options(req: ChatCompletionRequest) -> None:
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")


def _checked_message(m: Any, i: int) -> Message:
    at = f"messages[{i}]"
    try:
        return _message(m, at)
    except ValidationError as e:
        raise APIError(400, f"{at}: {e.errors()[0]['msg']}", param=at) from None


def _checked_settings(req: ChatCompletionRequest) -> tuple[Any, Callable[[Sequence[str]], Optional[str]]]:
    settings, given = _settings(req)
    return _validated(settings, given), _param_of(given)


def _param_of(given: dict[str, str]) -> Callable[[Sequence[str]], Optional[str]]:
    def param_of(names: Sequence[str]) -> Optional[str]:
        return next((given[n] for n in names if n in given), None)
    return param_of


def _validated(settings: dict[str, Any], given: dict[str, str]) -> Any:
    try:
        return validate_settings(settings)
    except SettingsError as e:  # a bad value or incoherent settings: name the field the client sent
        raise api_error(e, _param_of(given)) from None


# --------------------------------------------------------------------------------------------------
# chat: response


def usage_json(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens or 0},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0}}


def _logprobs_json(lps: Optional[list[TokenLogProb]]) -> Optional[dict[str, Any]]:
    if lps is None:
        return None
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}
                                          for tok, lp in t.top]} for t in lps],
            "refusal": None}


def _tool_call_json(tc: ToolCall) -> dict[str, Any]:
    return {"id": tc.id, "type": "function", "function": {"name": tc.function.name, "arguments": tc.function.arguments}}


def completion_json(resp: CompletionResponse, llm_id: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": resp.text if resp.text or not resp.tool_calls else None,
                           "refusal": None}
    if resp.tool_calls:
        msg["tool_calls"] = [_tool_call_json(tc) for tc in resp.tool_calls]
    return {"id": _new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()), "model": llm_id,
            "choices": [{"index": 0, "message": msg, "logprobs": _logprobs_json(resp.log_probs),
                         "finish_reason": _FINISH.get(resp.finish_reason, resp.finish_reason)}],
            "usage": usage_json(resp.usage), "system_fingerprint": None}


def _delta_json(d: ToolCallDelta) -> dict[str, Any]:
    # OpenAI's layout: the first fragment of a call has its id, type and name; later ones only arguments
    out: dict[str, Any] = {"index": d.index}
    fn: dict[str, Any] = {}
    if d.id:
        out["id"] = d.id
        out["type"] = "function"
    if d.name:
        fn["name"] = d.name
    fn["arguments"] = d.arguments
    out["function"] = fn
    return out


class ChunkStream:
    """Mesh stream events -> ``chat.completion.chunk`` objects, OpenAI's sequence: a role chunk,
    content and tool-call deltas, a finish chunk, then (``include_usage``) a usage-only chunk."""

    def __init__(self, llm_id: str, include_usage: bool):
        self._base = {"id": _new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": int(time.time()),
                      "model": llm_id, "system_fingerprint": None}
        self._usage = include_usage
        self._calls_streamed = False

    def _chunk(self, delta: dict[str, Any], finish: Optional[str] = None,
               logprobs: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        d = {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        if self._usage:
            d["usage"] = None  # as OpenAI: null on every chunk but the last under include_usage
        return d

    def start(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def chunk(self, ev: StreamChunk) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if ev.text is not None:
            delta["content"] = ev.text
        if ev.tool_call_deltas:
            self._calls_streamed = True
            delta["tool_calls"] = [_delta_json(d) for d in ev.tool_call_deltas]
        return self._chunk(delta, logprobs=_logprobs_json(ev.log_probs))

    def end(self, footer: StreamFooter) -> list[dict[str, Any]]:
        out = []
        if footer.tool_calls and not self._calls_streamed:
            # a connection that only reports its calls in the footer: send them whole, as one delta
            out.append(self._chunk({"tool_calls": [{"index": i, **_tool_call_json(tc)}
                                                   for i, tc in enumerate(footer.tool_calls)]}))
        out.append(self._chunk({}, finish=_FINISH.get(footer.finish_reason, footer.finish_reason)))
        if self._usage:
            out.append({**self._base, "choices": [], "usage": usage_json(footer.usage)})
        return out


# --------------------------------------------------------------------------------------------------
# embeddings and images


def token_arrays(req: EmbeddingsRequest) -> Optional[list[list[int]]]:
    """The request's token-id input as a list of arrays, or None when it is text."""
    inp = req.input
    if isinstance(inp, str) or not inp or isinstance(inp[0], str):
        return None
    return [inp] if isinstance(inp[0], int) else inp  # type: ignore[list-item,return-value]


def embedding_texts(req: EmbeddingsRequest) -> list[str]:
    """The texts to embed. Token-id inputs are decoded with the tiktoken encoding the request's
    model name implies, else ``cl100k_base`` (what OpenAI clients send for a model they do not
    know, ``OpenAIEmbeddings`` by default; see :mod:`langchain_mesh.tokens`): mesh models have their
    own tokenizers, so ids are turned back into the text they stand for."""
    arrays = token_arrays(req)
    if arrays is None:
        return [req.input] if isinstance(req.input, str) else list(req.input)  # type: ignore[arg-type]
    if any(not ids for ids in arrays):
        raise APIError(400, "a token array in input must not be empty", param="input")
    from ..errors import CapabilityError
    from ..tokens import decode_token_arrays

    try:
        return decode_token_arrays(arrays, req.model.rsplit(":", 1)[-1])
    except ValueError as e:
        raise APIError(400, str(e), param="input", code="invalid_token_ids") from None
    except CapabilityError as e:
        raise APIError(400, f"token-id input cannot be read here: {e}; send the text instead",
                       param="input") from None


def embedding_request(req: EmbeddingsRequest) -> EmbeddingRequest:
    texts = embedding_texts(req)
    if not texts:
        raise APIError(400, "input must not be empty", param="input")
    if req.dimensions is not None and req.dimensions < 1:
        raise APIError(400, f"dimensions must be at least 1, got {req.dimensions}", param="dimensions")
    return EmbeddingRequest(texts=texts, dimensions=req.dimensions)


def embeddings_json(resp: EmbeddingResponse, llm_id: str, encoding: str) -> dict[str, Any]:
    if encoding == "base64":  # little-endian float32, as OpenAI (and the SDK's decoder) expect
        vectors: list[Any] = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in resp.embeddings]
    else:
        vectors = resp.embeddings
    return {"object": "list", "model": llm_id,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": resp.usage.input_tokens, "total_tokens": resp.usage.total_tokens}}


_OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def _size(size: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    if not size or size == "auto":
        return None, None
    m = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    if not m or not int(m[1]) or not int(m[2]):
        raise APIError(400, f"size {size!r} must be WIDTHxHEIGHT with no zero side, or auto", param="size")
    return int(m[1]), int(m[2])


def _image_fields(req: Any) -> dict[str, Any]:
    """What the generations, edits and variations bodies share, as ImageGenerationRequest fields."""
    if req.n is not None and req.n < 1:
        raise APIError(400, f"n must be at least 1, got {req.n}", param="n")
    width, height = _size(req.size)
    out: dict[str, Any] = {"n": req.n or 1, "width": width, "height": height}
    if getattr(req, "quality", None) not in (None, "auto"):
        out["quality"] = req.quality
    if getattr(req, "style", None) is not None:
        out["style"] = req.style
    if getattr(req, "output_format", None) is not None:
        out["mime_type"] = _OUTPUT_FORMATS[req.output_format]
    return out


def _checked(**fields: Any) -> ImageGenerationRequest:
    try:
        return ImageGenerationRequest.checked(**fields)
    except SettingsError as e:
        param = {"prompts": "prompt", "images": "image", "mask_type": "mask"}.get(e.settings[0] if e.settings else "")
        raise APIError(400, str(e), param=param or (e.settings[0] if e.settings else None)) from None


def image_request(req: ImagesRequest) -> ImageGenerationRequest:
    return _checked(prompt=req.prompt, **_image_fields(req))


def _upload(files: dict[str, list[Any]], name: str) -> list[ImagePart]:
    out = []
    for up in files.get(name, []):
        try:
            out.append(ImagePart.from_bytes(up.data))
        except ValueError:
            raise APIError(400, f"{name} {up.filename!r} is not a PNG, JPEG, GIF or WebP image", param=name) from None
    return out


def _form(model: type[Any], fields: dict[str, str], files: dict[str, list[Any]], file_names: set[str]) -> Any:
    unknown = sorted(set(files) - file_names)
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                       code="unknown_parameter")
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        param = ".".join(str(x) for x in err["loc"]) or None
        if err["type"] == "extra_forbidden":
            raise APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                           code="unknown_parameter") from None
        raise APIError(400, f"Invalid '{param}': {err['msg']}", param=param) from None


def edit_request(fields: dict[str, str], files: dict[str, list[Any]]) -> tuple[str, ImageGenerationRequest]:
    """``POST /v1/images/edits``: with a mask (transparent = the area to edit) it is INPAINTING; without,
    an image with transparent pixels is inpainted there (ORIGINAL_IMAGE_ALPHA), any other is a prompted
    variation (MASK_FREE)."""
    from ..imaging import mask_from_alpha_png
    from .models import ImageEditForm

    req = _form(ImageEditForm, fields, files, {"image", "mask"})
    images = _upload(files, "image")
    if not images:
        raise APIError(400, "image is required", param="image")
    masks = _upload(files, "mask")
    out = {"prompt": req.prompt, "images": images, **_image_fields(req)}
    if masks:
        out.update(image_mode="INPAINTING", mask_type="MASK_IMAGE_BLACK", mask=ImagePart.from_bytes(
            mask_from_alpha_png(masks[0].data)))
    elif _has_transparency(images[0].data):
        out.update(image_mode="INPAINTING", mask_type="ORIGINAL_IMAGE_ALPHA")
    else:
        out["image_mode"] = "MASK_FREE"
    return req.model, _checked(**out)


def variation_request(fields: dict[str, str], files: dict[str, list[Any]]) -> tuple[str, ImageGenerationRequest]:
    """``POST /v1/images/variations``: an unprompted variation (mode VARY) of the one image."""
    from .models import ImageVariationForm

    req = _form(ImageVariationForm, fields, files, {"image"})
    images = _upload(files, "image")
    if len(images) != 1:
        raise APIError(400, "one image is required", param="image")
    return req.model, _checked(images=images, image_mode="VARY", **_image_fields(req))


def _has_transparency(data: bytes) -> bool:
    """A PNG with an alpha channel and at least one transparent pixel."""
    if not data.startswith(b"\x89PNG") or len(data) < 26 or data[25] not in (4, 6):
        return False
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        lo, _ = im.getchannel("A").getextrema()
    return lo < 128


def images_json(resp: ImageGenerationResponse) -> dict[str, Any]:
    return {"created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(img.data).decode()} for img in resp.images]}
