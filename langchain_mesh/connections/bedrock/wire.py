"""Amazon Bedrock Runtime, both ways: mesh requests -> boto3 ``converse`` / ``converse_stream`` /
``invoke_model`` arguments, and their answers -> mesh responses. Pure functions over dicts; no I/O,
so :mod:`.bedrock` only calls boto3 and maps its exceptions.

Wire facts this module relies on (Bedrock Runtime API reference, botocore's service model):

* Converse takes ``messages`` of strictly alternating ``user``/``assistant`` turns whose ``content``
  is a list of one-member blocks (``text``, ``image: {format, source: {bytes | s3Location}}``,
  ``toolUse: {toolUseId, name, input}``, ``toolResult: {toolUseId, content, status}``); tool results
  travel in a *user* turn. ``system`` is a separate list of ``{"text"}`` blocks, ``inferenceConfig``
  holds ``maxTokens``/``temperature``/``topP``/``stopSequences``, tools are ``toolConfig: {tools:
  [{toolSpec: {name, description, inputSchema: {json}}}], toolChoice: {auto|any|tool}}`` (no
  ``none``), model-specific parameters go in ``additionalModelRequestFields``. A request carrying
  toolUse/toolResult blocks must carry ``toolConfig``.
* ConverseStream events: ``messageStart``, ``contentBlockStart`` (only for tool calls: id and name),
  ``contentBlockDelta`` (``text`` or ``toolUse.input`` partial JSON), ``contentBlockStop``,
  ``messageStop`` (``stopReason``), then ``metadata`` (``usage``). Exception events
  (``throttlingException``...) may arrive instead of any of these.
* InvokeModel takes the model's own JSON: Titan and Cohere embeddings, Stability and Titan images.
* Model ids: base ids (``anthropic.claude-3-5-sonnet-20240620-v1:0``), cross-region inference
  profiles (``us.`` + base id) and ARNs (application inference profiles, provisioned throughput).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Iterable, Optional

from ...errors import CapabilityError, ProviderError, SettingsError, StreamInterruptedError, error_for_status
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCall,
    GeneratedImage,
    ImageGenerationRequest,
    ImageGenerationResponse,
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
from ...imaging import black_mask
from ..image_settings import STYLE_PRESETS, ImageTranslation, fidelity_to_scale, weighted_prompt

PROVIDER = "bedrock"

# --------------------------------------------------------------------------------------------------
# model ids and families

#: the geography prefixes of system-defined cross-region inference profiles
GEO_PREFIXES = ("us", "eu", "apac", "global", "us-gov", "jp", "au", "ca")
_GEO = re.compile(r"^(?:%s)\.(?=[a-z0-9-]+\.)" % "|".join(re.escape(p) for p in GEO_PREFIXES))


def is_arn(model: str) -> bool:
    return model.startswith("arn:")


def base_model_id(model: str) -> str:
    """The foundation model id behind a cross-region profile id (``us.anthropic...`` -> ``anthropic...``)."""
    return _GEO.sub("", model, count=1)


def wire_model_id(model: str, inference_profile: Optional[str]) -> str:
    """The ``modelId`` sent: ARNs as they are (an application inference profile already routes its
    traffic), otherwise the base id with the connection's cross-region profile prefix."""
    if is_arn(model) or not inference_profile:
        return model
    return f"{inference_profile}.{base_model_id(model)}"


def family(model: str) -> str:
    """What kind of model a base id names; decides the API (Converse or which InvokeModel body)."""
    m = base_model_id(model)
    if m.startswith("anthropic."):
        return "claude"
    if m.startswith("amazon.titan-embed"):
        return "titan_embed"
    if m.startswith("cohere.embed"):
        return "cohere_embed"
    if m.startswith(("amazon.titan-image", "amazon.nova-canvas")):
        return "titan_image"
    if m.startswith("stability.stable-diffusion-xl"):
        return "sdxl"
    if m.startswith(("stability.sd3", "stability.stable-image")):
        return "stability"
    if m.startswith("amazon.titan-text") or m.startswith("amazon.titan-tg1"):
        return "titan_text"
    if m.startswith("amazon.nova"):
        return "nova"
    if m.startswith("cohere.command"):
        return "cohere"
    if m.startswith(("mistral.", "meta.", "ai21.")):
        return m.split(".", 1)[0]
    return "other"


EMBEDDING_FAMILIES = ("titan_embed", "cohere_embed")
IMAGE_FAMILIES = ("titan_image", "sdxl", "stability")


def purposes_for(model: str) -> list[Purpose]:
    f = family(model)
    if f in EMBEDDING_FAMILIES:
        return [Purpose.TEXT_EMBEDDING_EXTRACTION]
    if f in IMAGE_FAMILIES:
        return [Purpose.IMAGE_GENERATION]
    return [Purpose.GENERIC_COMPLETION]


def capabilities_for(model: str) -> ModelCapabilities:
    """What Converse offers for a model (AWS's "supported models and model features" table)."""
    m, f = base_model_id(model), family(model)
    if f in EMBEDDING_FAMILIES or f in IMAGE_FAMILIES:
        return ModelCapabilities(streaming=False, image_embedding=is_titan_multimodal(m))
    if f == "claude":
        if re.search(r"claude-(v2|instant)", m):
            return ModelCapabilities()
        structured = bool(re.search(r"claude-(sonnet|haiku|opus)-4-[15]", m))
        return ModelCapabilities(tools=True, tool_choice=True, image_input=True, json_output=structured,
                                 structured_output=structured)
    if f == "nova":
        return ModelCapabilities(tools=True, tool_choice=True, image_input="micro" not in m)
    if f == "mistral":
        return ModelCapabilities(tools="large" in m or "pixtral" in m, image_input="pixtral" in m)
    if f == "meta":
        tools = not re.search(r"llama2|llama3-(8b|70b)", m)
        return ModelCapabilities(tools=tools, image_input=bool(re.search(r"llama3-2-(11|90)b|llama4", m)))
    if f == "cohere":
        return ModelCapabilities(tools="command-r" in m)
    if f == "ai21":
        return ModelCapabilities(streaming="j2" not in m, tools="jamba" in m)
    if f == "titan_text":
        return ModelCapabilities()
    # imported, custom and newer families: let Bedrock say what the model cannot do
    return ModelCapabilities(tools=True, tool_choice=True, image_input=True)


def streams_tool_use(model: str) -> bool:
    """ConverseStream accepts ``toolConfig`` only for these families; the others answer tools through
    Converse (the connection then delivers that answer as one chunk)."""
    return family(model) in ("claude", "nova", "other")


def takes_system_prompt(model: str) -> bool:
    m, f = base_model_id(model), family(model)
    if f in ("titan_text",) or (f == "ai21" and "j2" in m):
        return False
    if f == "mistral":
        return "large" in m or "pixtral" in m
    if f == "cohere":
        return "command-r" in m
    return True


def model_info(model: str, description: str = "") -> ModelInfo:
    return ModelInfo(id=model, purposes=purposes_for(model), capabilities=capabilities_for(model),
                     description=description or f"{base_model_id(model)} on Amazon Bedrock")


#: the seed's model families, offered when the connection lists no models
DEFAULT_MODELS = [
    "anthropic.claude-instant-v1", "anthropic.claude-v2:1", "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-sonnet-20240229-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-7-sonnet-20250219-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0",
    "ai21.j2-mid-v1", "ai21.j2-ultra-v1",
    "cohere.command-text-v14", "cohere.command-light-text-v14", "cohere.command-r-v1:0",
    "cohere.command-r-plus-v1:0",
    "amazon.titan-text-express-v1", "amazon.titan-text-lite-v1", "amazon.titan-text-premier-v1:0",
    "amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0",
    "mistral.mistral-7b-instruct-v0:2", "mistral.mixtral-8x7b-instruct-v0:1", "mistral.mistral-large-2402-v1:0",
    "meta.llama2-13b-chat-v1", "meta.llama2-70b-chat-v1", "meta.llama3-8b-instruct-v1:0",
    "meta.llama3-70b-instruct-v1:0", "meta.llama3-1-70b-instruct-v1:0",
    "amazon.titan-embed-text-v1", "amazon.titan-embed-text-v2:0", "amazon.titan-embed-image-v1",
    "cohere.embed-english-v3",
    "cohere.embed-multilingual-v3",
    "stability.stable-diffusion-xl-v1", "stability.stable-image-core-v1:0", "stability.sd3-large-v1:0",
    "stability.stable-image-ultra-v1:0", "amazon.titan-image-generator-v1", "amazon.titan-image-generator-v2:0",
]


# --------------------------------------------------------------------------------------------------
# Converse requests

#: Converse's own top-level request keys that ``extra`` may set; other extra keys are model fields
TOP_LEVEL_EXTRA = frozenset({"guardrailConfig", "performanceConfig", "requestMetadata", "promptVariables",
                             "additionalModelResponseFieldPaths", "serviceTier"})
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}
_BEDROCK_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _top_k_field(model: str, top_k: int) -> Optional[dict[str, Any]]:
    """Where each family takes top-k in ``additionalModelRequestFields`` (None: it has none)."""
    f = family(model)
    if f in ("claude", "mistral"):
        return {"top_k": top_k}
    if f == "cohere":
        return {"k": top_k}
    if f == "nova":
        return {"inferenceConfig": {"topK": top_k}}
    return None


def unsupported_settings(model: str, request: CompletionRequest) -> list[str]:
    """Seed settings set to a value asking for something this model on Converse cannot do."""
    s = request.settings
    bad = []
    if s.topK is not None and _top_k_field(model, s.topK) is None:
        bad.append("topK")
    cohere_r = family(model) == "cohere" and "command-r" in model
    for name in ("presencePenalty", "frequencyPenalty", "seed"):
        if getattr(s, name) is not None and not cohere_r:
            bad.append(name)
    bad += [n for n in ("logitBias", "logProbs", "topLogProbs") if getattr(s, n) not in (None, False, {}, 0)]
    return bad


def check_request(model: str, request: CompletionRequest, caps: ModelCapabilities, drop_unsupported: bool) -> None:
    """Refuse, before any network call, what this model on Bedrock cannot do."""
    bad = [] if drop_unsupported else unsupported_settings(model, request)
    if bad:
        raise SettingsError(
            f"{base_model_id(model)} on {PROVIDER} has no parameter for {', '.join(bad)}: Converse takes "
            "temperature, topP, maxOutputTokens, stopSequences, tools and toolChoice (topK for Claude, Mistral, "
            "Cohere and Nova; penalties and seed for Cohere Command R); remove the others or set "
            "drop_unsupported_settings", bad)
    s = request.settings
    needs = []
    if s.tools and not caps.tools:
        needs.append("tool calling")
    if s.toolChoice is not None and s.toolChoice.type in ("required", "tool_name") and not caps.tool_choice:
        needs.append(f"toolChoice {s.toolChoice.type!r}")
    if s.responseFormat is not None and s.responseFormat.type == "json" and not caps.json_output:
        needs.append("JSON output")
    if any(isinstance(p, (ImagePart, ImageURLPart)) for m in request.messages for p in m.parts) \
            and not caps.image_input:
        needs.append("image input")
    if needs:
        raise CapabilityError(f"{base_model_id(model)} on {PROVIDER} does not offer {' or '.join(needs)}; use a "
                              "model that does or declare the model's capabilities in the config")
    for t in s.tools or []:
        if not _BEDROCK_TOOL_NAME.match(t.function.name):
            raise SettingsError(f"tool name {t.function.name!r}: Bedrock takes letters, digits, '_' and '-' only",
                                ["tools"])


def _image_block(part: Any) -> dict[str, Any]:
    if isinstance(part, ImageURLPart):
        if part.url.startswith("s3://"):  # Bedrock reads images from S3 itself
            return {"image": {"format": _format_from_name(part.url), "source": {"s3Location": {"uri": part.url}}}}
        if not part.url.startswith("data:"):
            raise CapabilityError(f"{PROVIDER} takes images as bytes or s3:// URIs, not by URL ({part.url[:60]}); "
                                  "download the image and pass its bytes")
        part = ImagePart.from_data_url(part.url)
    fmt = IMAGE_FORMATS.get(part.mime_type)
    if fmt is None:
        raise CapabilityError(f"{PROVIDER} does not read {part.mime_type} images; it takes png, jpeg, gif and webp")
    return {"image": {"format": fmt, "source": {"bytes": part.data}}}


def _format_from_name(url: str) -> str:
    ext = url.rsplit(".", 1)[-1].lower()
    fmt = {"jpg": "jpeg"}.get(ext, ext)
    if fmt not in IMAGE_FORMATS.values():
        raise CapabilityError(f"cannot tell the image format of {url}; name it .png, .jpeg, .gif or .webp")
    return fmt


def _arguments_object(arguments: str) -> Any:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise SettingsError(f"tool call arguments must be a JSON object to send to {PROVIDER}, "
                            f"got {arguments[:60]!r}", ["messages"])
    return value


def _content(m: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, (ImagePart, ImageURLPart)):
            blocks.append(_image_block(p))
        elif p.text:  # Bedrock rejects blank text blocks
            blocks.append({"text": p.text})
    for tc in m.tool_calls or []:
        blocks.append({"toolUse": {"toolUseId": tc.id, "name": tc.function.name,
                                   "input": _arguments_object(tc.function.arguments)}})
    return blocks


def converse_messages(model: str, messages: Iterable[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(``system`` blocks, ``messages``): consecutive turns of one role merged, as Converse wants them
    alternating; tool results become ``toolResult`` blocks of a user turn."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            if any(p.type != "text" for p in m.parts):
                raise CapabilityError(f"{PROVIDER} system prompts carry text only; put images in a user message")
            if m.text:
                system.append({"text": m.text})
            continue
        if m.role == "tool":
            role, blocks = "user", [{"toolResult": {"toolUseId": m.tool_call_id,
                                                    "content": [{"text": m.text or "(empty)"}]}}]
        else:
            role, blocks = m.role, _content(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if system and not takes_system_prompt(model):
        # these models' Converse has no system field: the instructions lead the first user turn
        lead = {"text": "\n\n".join(b["text"] for b in system)}
        if out and out[0]["role"] == "user":
            out[0]["content"].insert(0, lead)
        else:
            out.insert(0, {"role": "user", "content": [lead]})
        system = []
    return system, out


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _tool_config(request: CompletionRequest, messages: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    s = request.settings
    if not s.tools:
        return None
    choice = s.toolChoice
    if choice is not None and choice.type == "none":
        # Converse has no "none": leaving the tools out is the same request, unless the history holds
        # tool blocks (Bedrock then requires toolConfig, and the model could call a tool again)
        if _has_tool_blocks(messages):
            raise SettingsError(f"toolChoice 'none' cannot be sent to {PROVIDER} with tool calls in the history: "
                                "Converse has no 'none' and needs the tools there; use 'auto'", ["toolChoice"])
        return None
    tools = []
    for t in s.tools:
        spec: dict[str, Any] = {"name": t.function.name, "inputSchema": {"json": t.function.parameters}}
        if t.function.description:
            spec["description"] = t.function.description
        tools.append({"toolSpec": spec})
    cfg: dict[str, Any] = {"tools": tools}
    if choice is not None:
        cfg["toolChoice"] = {"auto": {"auto": {}}, "required": {"any": {}}}.get(choice.type) \
            or {"tool": {"name": choice.name}}
    return cfg


def converse_kwargs(model: str, model_id: str, request: CompletionRequest) -> dict[str, Any]:
    """The keyword arguments of ``client.converse`` / ``client.converse_stream``."""
    s = request.settings
    system, messages = converse_messages(model, request.messages)
    kw: dict[str, Any] = {"modelId": model_id, "messages": messages}
    if system:
        kw["system"] = system
    inference = {k: v for k, v in (("maxTokens", s.maxOutputTokens), ("temperature", s.temperature),
                                   ("topP", s.topP), ("stopSequences", s.stopSequences)) if v is not None}
    if inference:
        kw["inferenceConfig"] = inference
    tools = _tool_config(request, messages)
    if tools is not None:
        kw["toolConfig"] = tools
    fields: dict[str, Any] = {}
    if s.topK is not None:
        fields.update(_top_k_field(model, s.topK) or {})
    if family(model) == "cohere" and "command-r" in model:
        for name, key in (("presencePenalty", "presence_penalty"), ("frequencyPenalty", "frequency_penalty"),
                          ("seed", "seed")):
            if getattr(s, name) is not None:
                fields[key] = getattr(s, name)
    for key, value in (s.extra or {}).items():
        if key in TOP_LEVEL_EXTRA:
            kw[key] = value
        elif key in fields:
            raise SettingsError(f"extra.{key} is built from a standard setting; set that setting instead", ["extra"])
        else:
            fields[key] = value
    if fields:
        kw["additionalModelRequestFields"] = fields
    fmt = s.responseFormat
    if fmt is not None and fmt.type == "json":
        structure = {"schema": json.dumps(fmt.schema_ or {"type": "object"}), "name": fmt.name or "response"}
        kw["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": structure}}}
    return kw


# --------------------------------------------------------------------------------------------------
# Converse answers

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
           "model_context_window_exceeded": "length", "malformed_model_output": "error",
           "malformed_tool_use": "error"}


def finish_reason(stop: Any) -> Optional[str]:
    return _FINISH.get(stop) if isinstance(stop, str) else None


def parse_usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage()
    return Usage(input_tokens=u.get("inputTokens") or 0, output_tokens=u.get("outputTokens") or 0,
                 total_tokens=u.get("totalTokens") or 0, cached_input_tokens=u.get("cacheReadInputTokens"),
                 cache_creation_input_tokens=u.get("cacheWriteInputTokens"))


def parse_converse(resp: dict[str, Any], model: str) -> CompletionResponse:
    content = ((resp.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(b["text"] for b in content if isinstance(b.get("text"), str))
    calls = [ToolCall(id=b["toolUse"]["toolUseId"],
                      function=FunctionCall(name=b["toolUse"]["name"], arguments=json.dumps(b["toolUse"].get("input")
                                                                                            or {})))
             for b in content if "toolUse" in b]
    finish = finish_reason(resp.get("stopReason")) or ("tool_calls" if calls else "stop")
    return CompletionResponse(text=text, tool_calls=calls, finish_reason=finish,  # type: ignore[arg-type]
                              usage=parse_usage(resp.get("usage")), model=model,
                              raw={k: v for k, v in resp.items() if k != "ResponseMetadata"})


class StreamDecoder:
    """ConverseStream events -> mesh stream events. Tool calls are numbered in the order their blocks open."""

    def __init__(self, model: str):
        self.model = model
        self.text: list[str] = []
        self.events = 0
        self._calls: dict[int, dict[str, str]] = {}  # contentBlockIndex -> call
        self._finish: Optional[str] = None
        self._stopped = False
        self._usage = Usage()

    def feed(self, event: dict[str, Any]) -> Optional[StreamChunk]:
        self.events += 1
        if "contentBlockStart" in event:
            ev = event["contentBlockStart"]
            use = (ev.get("start") or {}).get("toolUse")
            if use:
                i = len(self._calls)
                self._calls[ev["contentBlockIndex"]] = {"index": i, "id": use["toolUseId"], "name": use["name"],
                                                        "arguments": ""}
                return StreamChunk(tool_call_deltas=[ToolCallDelta(index=i, id=use["toolUseId"], name=use["name"])])
        elif "contentBlockDelta" in event:
            ev = event["contentBlockDelta"]
            delta = ev.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                self.text.append(delta["text"])
                return StreamChunk(text=delta["text"])
            if "toolUse" in delta:
                call = self._calls.get(ev["contentBlockIndex"])
                if call is None:
                    raise ProviderError(f"{PROVIDER} streamed tool input for block {ev['contentBlockIndex']}, "
                                        "which opened no tool call", provider=PROVIDER)
                piece = delta["toolUse"].get("input") or ""
                call["arguments"] += piece
                return StreamChunk(tool_call_deltas=[ToolCallDelta(index=call["index"], arguments=piece)])
        elif "messageStop" in event:
            self._stopped = True
            self._finish = finish_reason(event["messageStop"].get("stopReason"))
        elif "metadata" in event:
            self._usage = parse_usage(event["metadata"].get("usage"))
        return None  # messageStart, contentBlockStop, reasoning deltas: nothing for the caller

    def produced(self) -> bool:
        return bool(self.text or self._calls)

    def footer(self) -> StreamFooter:
        """The closing event; a stream that ended before ``messageStop`` is an interrupted one."""
        if not self._stopped:
            raise StreamInterruptedError(f"the {PROVIDER} stream ended after {self.events} events without its "
                                         "messageStop", partial_text="".join(self.text), provider=PROVIDER)
        calls = [ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                 for c in sorted(self._calls.values(), key=lambda c: c["index"])]
        finish = self._finish or ("tool_calls" if calls else "stop")
        return StreamFooter(finish_reason=finish, usage=self._usage, tool_calls=calls,  # type: ignore[arg-type]
                            model=self.model)


def as_chunks(resp: CompletionResponse) -> list[StreamEvent]:
    """A whole answer as a stream (for models whose ConverseStream cannot take tools)."""
    out: list[StreamEvent] = []
    if resp.text:
        out.append(StreamChunk(text=resp.text))
    if resp.tool_calls:
        out.append(StreamChunk(tool_call_deltas=[ToolCallDelta(index=i, id=c.id, name=c.function.name,
                                                               arguments=c.function.arguments)
                                                 for i, c in enumerate(resp.tool_calls)]))
    out.append(StreamFooter(finish_reason=resp.finish_reason, usage=resp.usage, tool_calls=resp.tool_calls,
                            model=resp.model))
    return out


# --------------------------------------------------------------------------------------------------
# errors

#: HTTP status of each Bedrock error code (stream exception events carry only the code)
ERROR_STATUS = {"ValidationException": 400, "ServiceQuotaExceededException": 400, "AccessDeniedException": 403,
                "UnrecognizedClientException": 403, "InvalidSignatureException": 403, "ExpiredTokenException": 403,
                "ResourceNotFoundException": 404, "ModelTimeoutException": 408, "ModelErrorException": 424,
                "ModelStreamErrorException": 424, "ThrottlingException": 429, "ModelNotReadyException": 429,
                "InternalServerException": 500, "ServiceUnavailableException": 503}


def client_error(response: dict[str, Any], retry_after: Optional[float]) -> ProviderError:
    """A botocore ``ClientError``'s parsed response as the mesh error for its status and code."""
    err = response.get("Error") or {}
    code = str(err.get("Code") or "")
    code = code[:1].upper() + code[1:]  # stream exception events name the code in lowerCamelCase
    message = str(err.get("Message") or err.get("message") or code or "unknown error")
    # exception events inside a stream carry no HTTP status of their own: the code's status stands in
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or ERROR_STATUS.get(code, 500)
    e = error_for_status(status, message, provider=PROVIDER, retry_after=retry_after)
    e.args = (f"{PROVIDER} answered HTTP {status} {code}: {message}" if code else e.args[0],)
    return e


# --------------------------------------------------------------------------------------------------
# embeddings (InvokeModel)

TITAN_V2_DIMENSIONS = (256, 512, 1024)
COHERE_INPUT_TYPES = {"query": "search_query", "document": "search_document", None: "search_document"}
COHERE_MAX_TEXTS = 96


#: Titan Multimodal Embeddings G1's output sizes (embeddingConfig.outputEmbeddingLength; 1024 by default)
TITAN_MULTIMODAL_DIMENSIONS = (256, 384, 1024)


def is_titan_multimodal(model: str) -> bool:
    return base_model_id(model).startswith("amazon.titan-embed-image")


def _titan_multimodal_bodies(m: str, request: EmbeddingRequest) -> list[dict[str, Any]]:
    """Titan Multimodal Embeddings: one input a call, ``inputText`` or ``inputImage`` (base64)."""
    dims = request.dimensions
    if dims is not None and dims not in TITAN_MULTIMODAL_DIMENSIONS:
        raise SettingsError(f"{m} makes vectors of {TITAN_MULTIMODAL_DIMENSIONS}, not dimensions={dims}",
                            ["dimensions"])
    config = {"embeddingConfig": {"outputEmbeddingLength": dims}} if dims else {}
    if request.images:
        for img in request.images:
            if img.mime_type not in ("image/png", "image/jpeg"):
                raise SettingsError(f"{m} embeds PNG and JPEG images, not {img.mime_type}", ["images"])
        return [{"inputImage": img.base64, **config} for img in request.images]
    return [{"inputText": t, **config} for t in request.texts]


def embedding_bodies(model: str, request: EmbeddingRequest, batch_size: int) -> list[dict[str, Any]]:
    """One InvokeModel body per request to make: Titan embeds one text a call, Cohere up to 96."""
    m, f, dims = base_model_id(model), family(model), request.dimensions
    if f == "titan_embed" and is_titan_multimodal(m):
        return _titan_multimodal_bodies(m, request)
    if request.images:
        raise CapabilityError(f"{m} on {PROVIDER} does not embed images; Titan Multimodal Embeddings "
                              "(amazon.titan-embed-image-v1) does")
    if f == "titan_embed":
        if "v2" in m:
            if dims is not None and dims not in TITAN_V2_DIMENSIONS:
                raise SettingsError(f"{m} makes vectors of {TITAN_V2_DIMENSIONS}, not dimensions={dims}",
                                    ["dimensions"])
            extra = {"dimensions": dims} if dims else {}
            return [{"inputText": t, **extra, "normalize": True} for t in request.texts]
        if dims not in (None, 1536):
            raise SettingsError(f"{m} makes 1536-dimensional vectors; it cannot give dimensions={dims}",
                                ["dimensions"])
        return [{"inputText": t} for t in request.texts]
    if f == "cohere_embed":
        body: dict[str, Any] = {"input_type": COHERE_INPUT_TYPES[request.input_type]}
        if "v4" in m:
            if dims is not None:
                body["output_dimension"] = dims
        elif dims not in (None, 1024):
            raise SettingsError(f"{m} makes 1024-dimensional vectors; it cannot give dimensions={dims}",
                                ["dimensions"])
        size = min(batch_size, COHERE_MAX_TEXTS)
        return [{"texts": request.texts[i:i + size], **body} for i in range(0, len(request.texts), size)]
    raise CapabilityError(f"{m} on {PROVIDER} is not an embedding model (Titan Text Embeddings and Cohere Embed are)")


def parse_embeddings(model: str, answers: list[tuple[dict[str, Any], int]]) -> EmbeddingResponse:
    """``answers``: each InvokeModel body with the input token count from its response headers."""
    vectors: list[list[float]] = []
    tokens = 0
    for body, header_tokens in answers:
        if "embedding" in body:  # Titan
            vectors.append(body["embedding"])
            tokens += body.get("inputTextTokenCount") or header_tokens
        else:  # Cohere: a list, or {"float": [...]} when embedding_types was asked for
            rows = body.get("embeddings")
            vectors += rows.get("float") if isinstance(rows, dict) else rows or []
            tokens += header_tokens
    return EmbeddingResponse(embeddings=[[float(x) for x in v] for v in vectors], usage=Usage(input_tokens=tokens),
                             model=model)


# --------------------------------------------------------------------------------------------------
# images (InvokeModel)

STABILITY_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
_OUTPUT_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
#: the sizes SDXL 1.0 was trained at (others are refused by the service)
SDXL_SIZES = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344),
              (1536, 640), (640, 1536))
#: Titan Image Generator's sizes
TITAN_SIZES = ((1024, 1024), (768, 768), (512, 512), (768, 1152), (384, 576), (1152, 768), (576, 384),
               (768, 1280), (384, 640), (1280, 768), (640, 384), (896, 1152), (448, 576), (1152, 896),
               (576, 448), (768, 1408), (384, 704), (1408, 768), (704, 384), (640, 1408), (320, 704),
               (1408, 640), (704, 320), (1152, 640), (1173, 640))
#: Titan v2 conditioned generation: the seed's ControlNet modes as Titan's control modes
TITAN_CONTROL = {"CONTROLNET_SKETCH": "CANNY_EDGE", "CONTROLNET_STRUCTURE": "SEGMENTATION"}


def image_bodies(model: str, request: ImageGenerationRequest, strength: float,
                 t: Optional[ImageTranslation] = None) -> list[dict[str, Any]]:
    """InvokeModel bodies for ``request.n`` images (Stability models make one image a call)."""
    m, f = base_model_id(model), family(model)
    t = t or ImageTranslation(PROVIDER, m, request)
    if len(request.images) > 1:
        raise CapabilityError(f"{m} on {PROVIDER} takes one input image")
    if request.images and (request.aspect_ratio or request.width or request.height):
        t.refuse("aspect_ratio", "image-to-image keeps the input image's shape")
    seeds = [None if request.seed is None else request.seed + i for i in range(request.n)]
    if f == "stability":
        body = _stability_body(m, request, t, strength)
    elif f == "sdxl":
        body = _sdxl_body(m, request, t, strength)
    elif f == "titan_image":
        return [_titan_body(m, request, t, strength)]
    else:
        raise CapabilityError(f"{m} on {PROVIDER} is not an image model (Stability and Titan Image models are)")
    return [{**body, **({"seed": s} if s is not None else {})} for s in seeds]


def _stability_body(m: str, request: ImageGenerationRequest, t: ImageTranslation, strength: float) -> dict[str, Any]:
    """SD3, Stable Image Core and Ultra: the Stability API's JSON (prompt weights in its ``(text:w)`` syntax)."""
    fmt = _OUTPUT_FORMATS.get(request.mime_type)
    if fmt is None or (fmt == "webp" and "sd3" in m):
        raise SettingsError(f"{m} writes png or jpeg, not {request.mime_type}", ["mime_type"])
    t.refuse_present(quality="it has no quality setting", style="Bedrock's Stability models take no style preset",
                     fidelity="Bedrock's Stability models take no CFG scale")
    body: dict[str, Any] = {"prompt": weighted_prompt(request.prompts), "output_format": fmt}
    if request.negative_prompts:
        body["negative_prompt"] = weighted_prompt(request.negative_prompts)
    mode = request.mode
    if mode is not None:
        if "sd3" not in m or mode != "MASK_FREE":
            why = "" if "sd3" in m else "; it generates from text only (SD3 models take an input image)"
            raise t.mode_not_offered(["MASK_FREE"] if "sd3" in m else [], why)
        body.update(mode="image-to-image", image=request.images[0].base64, strength=t.strength(strength))
        return body
    ratio = t.snap_ratio(STABILITY_RATIOS)
    if ratio:
        body["aspect_ratio"] = ratio
    if "sd3" in m:
        body["mode"] = "text-to-image"
    return body


def _sdxl_body(m: str, request: ImageGenerationRequest, t: ImageTranslation, strength: float) -> dict[str, Any]:
    """SDXL 1.0: weighted ``text_prompts`` (negative prompts as negative weights), sizes, masks."""
    if request.mime_type != "image/png":
        raise SettingsError(f"{m} writes png images, not {request.mime_type}", ["mime_type"])
    t.refuse_present(quality="it has no quality setting")
    prompts = [{"text": p.text, "weight": 1.0 if p.weight is None else p.weight} for p in request.prompts]
    prompts += [{"text": p.text, "weight": -abs(1.0 if p.weight is None else p.weight)}
                for p in request.negative_prompts]
    body: dict[str, Any] = {"text_prompts": prompts, "samples": 1}
    if request.style is not None:
        style = t.choice("style", {s: s for s in STYLE_PRESETS})
        if style:
            body["style_preset"] = style
    if request.fidelity is not None:
        body["cfg_scale"] = fidelity_to_scale(request.fidelity)
    mode = request.mode
    if mode is None:
        size = t.snap_size(SDXL_SIZES)
        if size:
            body["width"], body["height"] = size
        return body
    source = request.images[0]
    body["init_image"] = source.base64
    if mode == "MASK_FREE":
        # SDXL's image_strength is how much the init image counts (1 = the same image): the seed's weight
        body.update(init_image_mode="IMAGE_STRENGTH", image_strength=round(1.0 - t.strength(strength), 4))
    elif mode == "INPAINTING":
        t.refuse_present(weight="SDXL's inpainting has no image strength")
        if request.mask_type == "MASK_IMAGE_BLACK":
            t.check_mask()
            body.update(mask_source="MASK_IMAGE_BLACK", mask_image=request.mask.base64)  # type: ignore[union-attr]
        else:
            body["mask_source"] = "INIT_IMAGE_ALPHA"
    else:
        raise t.mode_not_offered(["MASK_FREE", "INPAINTING"])
    return body


def _titan_body(m: str, request: ImageGenerationRequest, t: ImageTranslation, strength: float) -> dict[str, Any]:
    """Titan Image Generator: one call makes up to 5 images; task types per mode."""
    if request.mime_type != "image/png":
        raise SettingsError(f"{m} writes png images, not {request.mime_type}", ["mime_type"])
    if request.n > 5:
        raise SettingsError(f"{m} makes at most 5 images a request", ["images_to_generate"])
    t.refuse_present(style="Titan has no style setting")
    config: dict[str, Any] = {"numberOfImages": request.n}
    quality = t.choice("quality", {"standard": "standard", "premium": "premium", "hd": "premium"})
    if quality:
        config["quality"] = quality
    if request.fidelity is not None:
        config["cfgScale"] = fidelity_to_scale(request.fidelity, low=1.1)
    if request.seed is not None:
        config["seed"] = request.seed
    params: dict[str, Any] = {}
    if request.prompts:
        params["text"] = request.prompt  # Titan takes one plain prompt: weighted prompts are merged
    if request.negative_prompt:
        params["negativeText"] = request.negative_prompt
    mode = request.mode
    if mode is None:
        size = t.snap_size(TITAN_SIZES)
        if size:
            config["width"], config["height"] = size
        return {"taskType": "TEXT_IMAGE", "textToImageParams": params, "imageGenerationConfig": config}
    source = request.images[0]
    if mode in ("MASK_FREE", "VARY"):
        # Titan asks how *similar* to stay: the seed's weight, else 1 - the connection's image_strength
        weight = round(1.0 - t.strength(strength), 4)
        if not 0.2 <= weight <= 1.0:
            raise SettingsError(f"{m} takes an image weight (similarityStrength) from 0.2 to 1.0, got {weight}",
                                ["weight"])
        params.update(images=[source.base64], similarityStrength=weight)
        return {"taskType": "IMAGE_VARIATION", "imageVariationParams": params, "imageGenerationConfig": config}
    if mode == "INPAINTING":
        t.refuse_present(weight="Titan's inpainting has no image strength")
        t.check_mask()
        mask = black_mask(request.mask_type or "", source.data, request.mask.data if request.mask else None)
        params.update(image=source.base64, maskImage=base64.b64encode(mask).decode("ascii"))
        return {"taskType": "INPAINTING", "inPaintingParams": params, "imageGenerationConfig": config}
    if "v2" not in m:  # conditioned generation came with Titan Image Generator v2
        raise t.mode_not_offered(["MASK_FREE", "VARY", "INPAINTING"], "; v2 adds the ControlNet modes")
    params.update(conditionImage=source.base64, controlMode=TITAN_CONTROL[mode],
                  controlStrength=0.7 if request.image_weight is None else request.image_weight)
    return {"taskType": "TEXT_IMAGE", "textToImageParams": params, "imageGenerationConfig": config}


def parse_images(model: str, bodies: list[dict[str, Any]], mime_type: str) -> ImageGenerationResponse:
    images: list[GeneratedImage] = []
    for body in bodies:
        reasons = [r for r in body.get("finish_reasons") or [] if r] + \
                  [a.get("finishReason") for a in body.get("artifacts") or [] if a.get("finishReason") != "SUCCESS"]
        if body.get("error"):
            reasons.append(body["error"])
        if reasons:
            raise error_for_status(400, f"{base_model_id(model)} made no image: {'; '.join(map(str, reasons))}",
                                   provider=PROVIDER)
        encoded = body.get("images") or [a["base64"] for a in body.get("artifacts") or []]
        images += [GeneratedImage(data=base64.b64decode(b), mime_type=mime_type) for b in encoded]
    return ImageGenerationResponse(images=images, model=model)
