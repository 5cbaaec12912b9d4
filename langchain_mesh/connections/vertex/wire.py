"""Gemini's ``generateContent`` format, both ways, as the ``google-genai`` SDK takes and returns it:
mesh requests -> ``contents`` + ``GenerateContentConfig`` dicts (snake_case; the SDK camel-cases them
and writes the Vertex AI or Gemini Developer API body), and the SDK's response objects -> mesh
responses. No I/O, so the sync and async paths of :mod:`.vertex` share every line of translation.

Wire facts this module relies on (Vertex AI / Gemini API references):

* roles are ``user`` and ``model``; the system prompt is a separate ``system_instruction``; tool
  results go back as ``function_response`` parts of a ``user`` turn, consecutive results in one turn;
* tool parameters and ``response_schema`` are an OpenAPI 3.0 *subset* of JSON Schema: no
  ``$ref``/``$defs``, ``additionalProperties``, ``const``, ``oneOf``/``allOf``, type lists. We inline
  refs, turn ``["string", "null"]`` into ``nullable`` and drop what the subset lacks;
* function calls carry an ``id`` only on newer models: a call without one gets a generated id, and
  each tool result is sent back with the name of the call it answers (looked up by that id);
* a function call arrives whole, in one stream chunk (never in pieces), with a
  ``thought_signature`` on thinking models that must travel back with the call in the next turn;
* a stream has no end event: its last chunk carries ``finish_reason``.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from typing import Any, Iterable, MutableMapping, Optional

from ...errors import CapabilityError, ProviderError, SettingsError, StreamInterruptedError
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    FunctionCall,
    ImageGenerationRequest,
    ImagePart,
    Message,
    ModelCapabilities,
    StreamChunk,
    StreamFooter,
    TokenLogProb,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from ..image_settings import ImageTranslation, fidelity_to_scale

__all__ = ["PROVIDER", "check_request", "generate_args", "parse_response", "StreamDecoder", "embed_config",
           "image_config", "aspect_ratio_for", "json_schema_to_gemini"]

PROVIDER = "vertex"

#: config keys built from the request; ``extra`` may add others (safety_settings, thinking_config...)
BUILT_KEYS = frozenset({"system_instruction", "temperature", "top_p", "top_k", "max_output_tokens", "stop_sequences",
                        "presence_penalty", "frequency_penalty", "seed", "response_logprobs", "logprobs",
                        "response_mime_type", "response_schema", "tools", "tool_config", "candidate_count"})
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
           "MODEL_ARMOR": "content_filter"}
_TOOL_MODE = {"auto": "AUTO", "required": "ANY", "none": "NONE", "tool_name": "ANY"}
#: the JSON Schema keywords Gemini's schema subset has (snake_case, as the SDK's Schema type names them)
_SCHEMA_KEYS = {"type": "type", "format": "format", "title": "title", "description": "description",
                "nullable": "nullable", "enum": "enum", "items": "items", "properties": "properties",
                "required": "required", "minItems": "min_items", "maxItems": "max_items",
                "minProperties": "min_properties", "maxProperties": "max_properties", "minLength": "min_length",
                "maxLength": "max_length", "pattern": "pattern", "minimum": "minimum", "maximum": "maximum",
                "default": "default", "example": "example", "anyOf": "any_of", "propertyOrdering": "property_ordering"}
#: Imagen's aspect ratios (Stability's list is longer; see stability.py)
IMAGEN_ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")


# --------------------------------------------------------------------------------------------------
# JSON Schema -> Gemini's OpenAPI subset


def json_schema_to_gemini(schema: dict[str, Any], where: str = "tools") -> dict[str, Any]:
    """``schema`` in Gemini's subset: refs inlined, nullable types folded, unsupported keywords dropped."""
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _convert(schema, defs, (), where)


def _convert(node: Any, defs: dict[str, Any], seen: tuple[str, ...], where: str) -> Any:
    if not isinstance(node, dict):
        return {}  # `true` / `{}`: any value, which the subset says by saying nothing
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise SettingsError(f"{where}: the schema refers to {ref!r} recursively; Gemini's schema subset has no "
                                "references, so recursive schemas cannot be sent", [where])
        if name not in defs:
            raise SettingsError(f"{where}: {ref!r} names no entry of $defs/definitions", [where])
        return _convert({**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}, defs, seen + (name,), where)
    node = dict(node)
    for key in ("allOf",):  # a one-schema allOf is how pydantic wraps a described $ref
        if len(node.get(key) or []) == 1:
            node = {**node.pop(key)[0], **node}
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        if len(rest) == len(kind) - 1:
            out["nullable"] = True
        kind = rest[0] if len(rest) == 1 else None
        if len(rest) > 1:
            node["anyOf"] = [{"type": k} for k in rest]
    if kind is not None:
        out["type"] = kind
    if "const" in node and "enum" not in node:
        node["enum"] = [node["const"]]
    alternatives = node.get("anyOf") or node.get("oneOf")
    if alternatives:
        subs = [s for s in alternatives if not (isinstance(s, dict) and s.get("type") == "null")]
        if len(subs) < len(alternatives):
            out["nullable"] = True
        if len(subs) == 1:  # Optional[X]: X, nullable
            merged = _convert(subs[0], defs, seen, where)
            return {**merged, **{k: v for k, v in out.items() if k != "type"},
                    **_plain_keys(node, defs, seen, where, skip={"anyOf", "oneOf", "type"})}
        out["any_of"] = [_convert(s, defs, seen, where) for s in subs]
    out.update(_plain_keys(node, defs, seen, where, skip={"type", "anyOf", "oneOf"}))
    if "enum" in out:
        out["enum"] = [str(v) for v in out["enum"] if v is not None]  # Gemini enums are strings
        out.setdefault("type", "string")
    return out


def _plain_keys(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...], where: str,
                skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, target in _SCHEMA_KEYS.items():
        if key in skip or key not in node:
            continue
        value = node[key]
        if key == "properties":
            value = {k: _convert(v, defs, seen, where) for k, v in value.items()}
        elif key == "items":
            value = _convert(value, defs, seen, where)
        out[target] = value
    return out


# --------------------------------------------------------------------------------------------------
# requests


def unsupported_settings(request: CompletionRequest) -> list[str]:
    """Seed settings Gemini has no parameter for, set to something that would change the answer."""
    return ["logitBias"] if request.settings.logitBias else []


def check_request(model: str, request: CompletionRequest, caps: ModelCapabilities) -> None:
    """Refuse, before any request, what Gemini or this model cannot do."""
    bad = unsupported_settings(request)
    if bad:
        raise SettingsError(f"Gemini has no parameter for {', '.join(bad)}; remove it from the settings", bad)
    s = request.settings
    if s.tools and not caps.tools:
        raise CapabilityError(f"{model} on {PROVIDER} does not take tools")
    if s.responseFormat is not None and s.responseFormat.type == "json" and not caps.json_output:
        raise CapabilityError(f"{model} on {PROVIDER} does not offer JSON output")
    if not caps.image_input and any(p.type != "text" for m in request.messages for p in m.parts):
        raise CapabilityError(f"{model} on {PROVIDER} does not take images")
    for key in (s.extra or {}):
        if key in BUILT_KEYS:
            raise SettingsError(f"extra.{key} is a key the mesh builds from the request and its settings; "
                                "use the message or the standard setting instead", ["extra"])


def _image(part: Any) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"inline_data": {"mime_type": part.mime_type, "data": part.data}}
    if part.url.startswith("data:"):
        return _image(ImagePart.from_data_url(part.url))
    # gs:// (Vertex) and https:// (both APIs) files are fetched by Google; the API needs their type
    mime = mimetypes.guess_type(part.url.split("?", 1)[0])[0]
    if not mime or not mime.startswith("image/"):
        raise SettingsError(f"cannot tell the image type of {part.url!r} from its name; send the image inline "
                            "(with_inline_image) instead", ["messages"])
    return {"file_data": {"file_uri": part.url, "mime_type": mime}}


def _parts(m: Message) -> list[dict[str, Any]]:
    return [{"text": p.text} if p.type == "text" else _image(p) for p in m.parts]


def _arguments(tc: ToolCall) -> Any:
    try:
        return json.loads(tc.function.arguments or "{}")
    except json.JSONDecodeError:
        raise SettingsError(f"tool call arguments must be JSON to send to Gemini, got "
                            f"{tc.function.arguments[:60]!r}", ["messages"]) from None


def _contents(messages: Iterable[Message], signatures: MutableMapping[str, bytes]) -> tuple[Any, list[Any]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # a tool result must name its function; mesh tool messages carry the id
    results: Optional[list[dict[str, Any]]] = None  # the parts of the turn collecting the current tool results
    for m in messages:
        if m.role == "tool":
            name = call_names.get(m.tool_call_id or "") or m.name
            if not name:
                raise SettingsError(f"the tool result for call {m.tool_call_id!r} follows no assistant tool call "
                                    "with that id, and Gemini needs the function's name; add the assistant "
                                    "message or set name=", ["messages"])
            if results is None:
                results = []
                out.append({"role": "user", "parts": results})
            results.append({"function_response": {"id": m.tool_call_id, "name": name,
                                                  "response": {"output": m.text}}})
            continue
        results = None
        if m.role == "system":
            if any(p.type != "text" for p in m.parts):
                raise CapabilityError("Gemini's system instruction is text only; put images in a user message")
            system.append(m.text)
        elif m.role == "user":
            out.append({"role": "user", "parts": _parts(m)})
        else:
            parts = [{"text": m.text}] if m.text else []
            for tc in m.tool_calls or []:
                call_names[tc.id] = tc.function.name
                part: dict[str, Any] = {"function_call": {"id": tc.id, "name": tc.function.name,
                                                          "args": _arguments(tc)}}
                if tc.id in signatures:
                    part["thought_signature"] = signatures[tc.id]
                parts.append(part)
            out.append({"role": "model", "parts": parts or [{"text": ""}]})
    return ("\n\n".join(system) if system else None), out


def _tools(request: CompletionRequest) -> list[dict[str, Any]]:
    decls = []
    for i, t in enumerate(request.settings.tools or []):
        d: dict[str, Any] = {"name": t.function.name}
        if t.function.description:
            d["description"] = t.function.description
        if t.function.parameters.get("properties"):  # Gemini rejects an object schema with no properties
            d["parameters"] = json_schema_to_gemini(t.function.parameters, f"tools[{i}]")
        decls.append(d)
    return [{"function_declarations": decls}]


def generate_args(request: CompletionRequest, signatures: MutableMapping[str, bytes]) -> tuple[list[Any], dict]:
    """``(contents, config)`` for ``client.models.generate_content(model=, contents=, config=)``."""
    s = request.settings
    system, contents = _contents(request.messages, signatures)
    config: dict[str, Any] = {}
    if system is not None:
        config["system_instruction"] = system
    for key, value in (("temperature", s.temperature), ("top_p", s.topP), ("top_k", s.topK),
                       ("max_output_tokens", s.maxOutputTokens), ("stop_sequences", s.stopSequences),
                       ("presence_penalty", s.presencePenalty), ("frequency_penalty", s.frequencyPenalty),
                       ("seed", s.seed)):
        if value is not None:
            config[key] = value
    if s.logProbs:
        config["response_logprobs"] = True
        if s.topLogProbs:
            config["logprobs"] = s.topLogProbs
    if s.tools:
        config["tools"] = _tools(request)
    if s.toolChoice is not None:
        fc: dict[str, Any] = {"mode": _TOOL_MODE[s.toolChoice.type]}
        if s.toolChoice.type == "tool_name":
            fc["allowed_function_names"] = [s.toolChoice.name]
        config["tool_config"] = {"function_calling_config": fc}
    fmt = s.responseFormat
    if fmt is not None and fmt.type == "json":
        config["response_mime_type"] = "application/json"
        if fmt.schema_ is not None:
            config["response_schema"] = json_schema_to_gemini(fmt.schema_, "responseFormat")
    config.update(s.extra or {})
    return contents, config


# --------------------------------------------------------------------------------------------------
# responses (the SDK's GenerateContentResponse objects)


def _enum(value: Any) -> Optional[str]:
    return None if value is None else str(getattr(value, "value", value))


def parse_usage(meta: Any) -> Optional[Usage]:
    if meta is None:
        return None
    thoughts = meta.thoughts_token_count
    output = (meta.candidates_token_count or 0) + (thoughts or 0)  # thinking is billed as output
    return Usage(input_tokens=meta.prompt_token_count or 0, output_tokens=output,
                 total_tokens=meta.total_token_count or 0, cached_input_tokens=meta.cached_content_token_count,
                 reasoning_tokens=thoughts)


def _log_probs(candidate: Any) -> Optional[list[TokenLogProb]]:
    result = candidate.logprobs_result
    if result is None or not result.chosen_candidates:
        return None
    tops = result.top_candidates or []
    out = []
    for i, chosen in enumerate(result.chosen_candidates):
        top = tops[i].candidates or [] if i < len(tops) else []
        out.append(TokenLogProb(token=chosen.token or "", logprob=chosen.log_probability or 0.0,
                                top=[(t.token or "", t.log_probability or 0.0) for t in top]))
    return out


class _Calls:
    """Numbers a response's function calls and gives each an id (Gemini's own when it sent one)."""

    def __init__(self, signatures: MutableMapping[str, bytes]):
        self.calls: list[ToolCall] = []
        self._signatures = signatures

    def add(self, fc: Any, signature: Optional[bytes]) -> ToolCall:
        call = ToolCall(id=fc.id or f"call_{uuid.uuid4().hex[:24]}",
                        function=FunctionCall(name=fc.name or "", arguments=json.dumps(fc.args or {})))
        if signature:
            self._signatures[call.id] = signature
        self.calls.append(call)
        return call


def _finish(reason: Optional[str], has_calls: bool) -> str:
    if reason in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
        return "tool_calls" if has_calls else "stop"
    return _FINISH.get(reason, "error")


def _blocked(resp: Any) -> Optional[str]:
    feedback = getattr(resp, "prompt_feedback", None)
    return _enum(feedback.block_reason) if feedback is not None and feedback.block_reason else None


def parse_response(resp: Any, model: str, signatures: MutableMapping[str, bytes]) -> CompletionResponse:
    candidate = (resp.candidates or [None])[0]
    calls = _Calls(signatures)
    text: list[str] = []
    if candidate is not None and candidate.content is not None:
        for part in candidate.content.parts or []:
            if part.function_call is not None:
                calls.add(part.function_call, part.thought_signature)
            elif part.text and not part.thought:  # thought summaries are not the answer
                text.append(part.text)
    if candidate is None:  # the prompt itself was blocked: no candidate at all
        finish = "content_filter" if _blocked(resp) else "error"
    else:
        finish = _finish(_enum(candidate.finish_reason), bool(calls.calls))
    return CompletionResponse(text="".join(text), tool_calls=calls.calls,
                              finish_reason=finish,  # type: ignore[arg-type]
                              usage=parse_usage(resp.usage_metadata) or Usage(),
                              model=resp.model_version or model,
                              log_probs=_log_probs(candidate) if candidate is not None else None, raw=resp)


class StreamDecoder:
    """The SDK's stream chunks -> mesh stream events. Function calls come whole: one delta each."""

    def __init__(self, model: str, signatures: MutableMapping[str, bytes]):
        self.model = model
        self.text: list[str] = []
        self.chunks = 0
        self._calls = _Calls(signatures)
        self._usage: Optional[Usage] = None
        self._reason: Optional[str] = None
        self._blocked = False

    def feed(self, resp: Any) -> list[StreamChunk]:
        self.chunks += 1
        self.model = resp.model_version or self.model
        self._usage = parse_usage(resp.usage_metadata) or self._usage  # cumulative: the last one counts
        self._blocked = self._blocked or bool(_blocked(resp))
        out: list[StreamChunk] = []
        for candidate in (resp.candidates or [])[:1]:
            self._reason = _enum(candidate.finish_reason) or self._reason
            for part in (candidate.content.parts or []) if candidate.content is not None else []:
                if part.function_call is not None:
                    call = self._calls.add(part.function_call, part.thought_signature)
                    out.append(StreamChunk(tool_call_deltas=[ToolCallDelta(
                        index=len(self._calls.calls) - 1, id=call.id, name=call.function.name,
                        arguments=call.function.arguments)]))
                elif part.text and not part.thought:
                    self.text.append(part.text)
                    out.append(StreamChunk(text=part.text))
            lp = _log_probs(candidate)
            if lp and out and out[-1].text is not None:
                out[-1] = out[-1].model_copy(update={"log_probs": lp})
        return out

    def footer(self) -> StreamFooter:
        """The closing event, once the body ended: Gemini's last chunk says why it finished."""
        if self._reason is None and not self._blocked:
            raise StreamInterruptedError(
                f"the {PROVIDER} stream ended after {self.chunks} chunks without a finish reason",
                partial_text="".join(self.text), provider=PROVIDER)
        finish = "content_filter" if self._reason is None else _finish(self._reason, bool(self._calls.calls))
        return StreamFooter(finish_reason=finish, usage=self._usage or Usage(),  # type: ignore[arg-type]
                            tool_calls=self._calls.calls, model=self.model)


# --------------------------------------------------------------------------------------------------
# embeddings and images


def embed_config(input_type: Optional[str], dimensions: Optional[int]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if input_type is not None:
        config["task_type"] = "RETRIEVAL_QUERY" if input_type == "query" else "RETRIEVAL_DOCUMENT"
    if dimensions is not None:
        config["output_dimensionality"] = dimensions
    return config


def embed_usage(resp: Any) -> Usage:
    """Tokens from Vertex's per-text statistics (the Gemini API reports none)."""
    tokens = sum(int(e.statistics.token_count or 0) for e in resp.embeddings or [] if e.statistics is not None)
    return Usage(input_tokens=tokens)


def aspect_ratio_for(width: int, height: int, allowed: Iterable[str], tolerance: float = 0.02) -> Optional[str]:
    """The allowed ``W:H`` ratio within ``tolerance`` of ``width/height`` (1344x768 is 16:9), if any."""
    want = width / height
    best = min(allowed, key=lambda r: abs(_ratio(r) - want))
    return best if abs(_ratio(best) - want) <= tolerance * want else None


def _ratio(r: str) -> float:
    w, h = r.split(":")
    return int(w) / int(h)


def image_config(model: str, request: ImageGenerationRequest,
                 t: Optional[ImageTranslation] = None) -> dict[str, Any]:
    """``GenerateImagesConfig`` for Imagen; what Imagen cannot do raises before any request.

    Imagen takes one plain prompt (weighted prompts are merged), a negative prompt, a seed, an aspect
    ratio (a size or ratio snaps to the nearest of its five), ``fidelity`` as ``guidance_scale`` (1-10),
    and no quality or style.
    """
    t = t or ImageTranslation(PROVIDER, model, request)
    if request.images:
        raise t.mode_not_offered(["text-to-image"], "; image-to-image is imagen-3.0-capability-001's")
    if request.n > 4:
        raise SettingsError(f"Imagen generates at most 4 images per request, asked for n={request.n}",
                            ["images_to_generate"])
    if request.mime_type not in ("image/png", "image/jpeg"):
        raise SettingsError(f"Imagen writes image/png or image/jpeg, not {request.mime_type}", ["mime_type"])
    t.refuse_present(quality="Imagen has no quality setting", style="Imagen has no style setting")
    config: dict[str, Any] = {"number_of_images": request.n, "output_mime_type": request.mime_type}
    ratio = t.snap_ratio(IMAGEN_ASPECT_RATIOS)
    if ratio is not None:
        config["aspect_ratio"] = ratio
    if request.negative_prompt:
        config["negative_prompt"] = request.negative_prompt
    if request.fidelity is not None:
        config["guidance_scale"] = fidelity_to_scale(request.fidelity)
    if request.seed is not None:
        # Imagen refuses a seed while its invisible watermark is on: asking for a seed turns it off
        config["seed"] = request.seed
        config["add_watermark"] = False
    return config


#: the seed's ControlNet modes as Imagen's control reference types
IMAGEN_CONTROL = {"CONTROLNET_STRUCTURE": "CONTROL_TYPE_CANNY", "CONTROLNET_SKETCH": "CONTROL_TYPE_SCRIBBLE"}


def is_edit_model(model: str) -> bool:
    """Imagen's editing and customization model (``imagen-3.0-capability-001``) edits; the others generate."""
    return "capability" in model


def edit_request(model: str, request: ImageGenerationRequest,
                 t: Optional[ImageTranslation] = None) -> tuple[list[Any], dict[str, Any]]:
    """``edit_image``'s reference images and ``EditImageConfig`` for the capability model:

    * INPAINTING: the raw image and a user-provided mask (white = the area: the seed's black mask, or the
      original's transparent pixels, converted), edit mode ``EDIT_MODE_INPAINT_INSERTION``;
    * CONTROLNET_STRUCTURE / CONTROLNET_SKETCH: a control image (``CONTROL_TYPE_CANNY`` / ``_SCRIBBLE``),
      edit mode ``EDIT_MODE_CONTROLLED_EDITING``.

    MASK_FREE and VARY have no Imagen 3 API; an image weight has no Imagen parameter.
    """
    from google.genai import types

    from ...imaging import white_mask

    t = t or ImageTranslation(PROVIDER, model, request)
    mode = request.mode
    if mode not in ("INPAINTING", *IMAGEN_CONTROL):
        raise t.mode_not_offered(["INPAINTING", *IMAGEN_CONTROL], "; it edits an input image"
                                 if mode is None else "")
    if len(request.images) > 1:
        raise SettingsError(f"{model} edits one input image", ["images"])
    if request.n > 4:
        raise SettingsError(f"Imagen generates at most 4 images per request, asked for n={request.n}",
                            ["images_to_generate"])
    if request.mime_type not in ("image/png", "image/jpeg"):
        raise SettingsError(f"Imagen writes image/png or image/jpeg, not {request.mime_type}", ["mime_type"])
    t.refuse_present(quality="Imagen has no quality setting", style="Imagen has no style setting",
                     weight="Imagen's editing has no image strength")
    if request.aspect_ratio is not None or request.width or request.height:
        t.refuse("aspect_ratio", "an edit takes the input image's shape")
    source = request.images[0]
    image = types.Image(image_bytes=source.data, mime_type=source.mime_type)
    config: dict[str, Any] = {"number_of_images": request.n, "output_mime_type": request.mime_type}
    if mode == "INPAINTING":
        t.check_mask()
        mask = white_mask(request.mask_type or "", source.data, request.mask.data if request.mask else None)
        refs: list[Any] = [
            types.RawReferenceImage(reference_id=1, reference_image=image),
            types.MaskReferenceImage(reference_id=2,
                                     reference_image=types.Image(image_bytes=mask, mime_type="image/png"),
                                     config=types.MaskReferenceConfig(mask_mode="MASK_MODE_USER_PROVIDED"))]
        config["edit_mode"] = "EDIT_MODE_INPAINT_INSERTION"
    else:
        refs = [types.ControlReferenceImage(reference_id=1, reference_image=image, config=types.ControlReferenceConfig(
            control_type=IMAGEN_CONTROL[mode]))]
        config["edit_mode"] = "EDIT_MODE_CONTROLLED_EDITING"
    if request.negative_prompt:
        config["negative_prompt"] = request.negative_prompt
    if request.fidelity is not None:
        config["guidance_scale"] = fidelity_to_scale(request.fidelity)
    if request.seed is not None:
        config["seed"] = request.seed
        config["add_watermark"] = False
    return refs, config


def check_images(resp: Any, model: str) -> None:
    """An Imagen answer with every image filtered out is an error, not an empty success."""
    if not [g for g in resp.generated_images or [] if g.image is not None and g.image.image_bytes]:
        reasons = [g.rai_filtered_reason for g in resp.generated_images or [] if g.rai_filtered_reason]
        raise ProviderError(f"{model} returned no image" + (f": {'; '.join(reasons)}" if reasons else
                                                            " (all were filtered by Responsible AI checks)"),
                            provider=PROVIDER)
