"""The types every layer speaks: messages and their parts, tools, requests, responses, stream events.

Connections translate *to and from* these types and nothing else; the builders, the LangChain
adapters and the HTTP server only ever see these. Names of the user-facing settings follow the seed
API (camelCase: ``maxOutputTokens``, ``topK``...) because that is what users type into
``completion.settings``; everything else is snake_case Python.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from enum import Enum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from .errors import SettingsError, ToolSchemaError

__all__ = [
    "Purpose", "Role", "TextPart", "ImagePart", "ImageURLPart", "ContentPart", "Message",
    "FunctionSpec", "ToolSpec", "ToolChoice", "FunctionCall", "ToolCall", "ToolCallDelta",
    "ResponseFormat", "CompletionSettings", "CompletionRequest", "Usage", "TokenLogProb",
    "CompletionResponse", "StreamChunk", "StreamFooter", "StreamEvent", "EmbeddingRequest",
    "EmbeddingResponse", "ImageGenerationRequest", "ImageGenerationResponse", "GeneratedImage",
    "WeightedPrompt", "ImageMode", "MaskType", "IMAGE_MODES", "MASK_TYPES", "merge_prompts",
    "normalize_aspect_ratio", "ratio_value",
    "ModelCapabilities", "ModelInfo", "validate_settings",
    "AttemptInfo", "GuardrailHit", "CallMeta", "built",
]


class Purpose(str, Enum):
    GENERIC_COMPLETION = "GENERIC_COMPLETION"
    TEXT_EMBEDDING_EXTRACTION = "TEXT_EMBEDDING_EXTRACTION"
    IMAGE_GENERATION = "IMAGE_GENERATION"


Role = Literal["system", "user", "assistant", "tool"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# BaseModel's slots, set through their descriptors (object.__setattr__ looks each name up first: a
# built() took ~0.8 µs that way, ~0.6 this way)
_SET_DICT = object.__setattr__
_SET_FIELDS = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


def built(cls: Any, values: dict[str, Any], fields_set: Optional[set[str]] = None) -> Any:
    """A model of ``cls`` from ``values`` that are valid already, every field given: what pydantic's
    ``model_construct`` sets, set directly, without its walk over the fields (~5 µs; this ~0.6). For
    the objects the policies make on every call (a route's attempts and meta), never for input.
    ``fields_set``: the fields counted as given (``exclude_unset``); default, all of them."""
    obj = cls.__new__(cls)
    _SET_DICT(obj, "__dict__", values)
    _SET_FIELDS(obj, set(values) if fields_set is None else fields_set)
    _SET_EXTRA(obj, None)
    _SET_PRIVATE(obj, None)
    return obj


# --------------------------------------------------------------------------------------------------
# Message content


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str


def sniff_image_mime(data: bytes) -> str:
    """Mime type from the magic number; providers reject images sent with the wrong type."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("could not recognise the image format; pass mime_type= explicitly "
                     "(image/png, image/jpeg, image/gif or image/webp)")


class ImagePart(_Model):
    """An image carried inline as bytes (base64 on the wire)."""

    type: Literal["image"] = "image"
    data: bytes
    mime_type: str

    @field_validator("data", mode="before")
    @classmethod
    def _decode_b64(cls, v: Any) -> Any:
        # JSON round trips carry base64 text; Python callers pass raw bytes.
        if isinstance(v, str):
            return base64.b64decode(v)
        return v

    @field_serializer("data", when_used="json")
    def _encode_b64(self, v: bytes) -> str:
        # raw image bytes are not UTF-8: JSON carries them as base64 (read back by _decode_b64)
        return base64.b64encode(v).decode("ascii")

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    @property
    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{self.base64}"

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str | None = None) -> "ImagePart":
        return cls(data=data, mime_type=mime_type or sniff_image_mime(data))

    @classmethod
    def from_data_url(cls, url: str) -> "ImagePart":
        m = re.match(r"data:(?P<mime>[\w/+.-]+);base64,(?P<b64>.*)$", url, re.S)
        if not m:
            raise ValueError("not a base64 data URL")
        return cls(data=base64.b64decode(m.group("b64")), mime_type=m.group("mime"))


class ImageURLPart(_Model):
    type: Literal["image_url"] = "image_url"
    url: str
    detail: Optional[Literal["auto", "low", "high"]] = None


ContentPart = Annotated[Union[TextPart, ImagePart, ImageURLPart], Field(discriminator="type")]


class FunctionCall(_Model):
    name: str
    arguments: str = "{}"  # JSON text, as every provider's wire format carries it

    def parsed_arguments(self) -> dict[str, Any]:
        return json.loads(self.arguments or "{}")


class ToolCall(_Model):
    """A complete tool call. Indexable like the seed's dicts: ``call["function"]["arguments"]``."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def __getitem__(self, key: str) -> Any:
        return self.model_dump()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.model_dump().get(key, default)


class Message(_Model):
    role: Role
    content: Union[str, list[ContentPart], None] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None  # for role="tool"
    name: Optional[str] = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> "Message":
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    @property
    def text(self) -> str:
        """The concatenated text parts (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def parts(self) -> list[Any]:
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [TextPart(text=self.content)]
        return list(self.content)


# --------------------------------------------------------------------------------------------------
# Tools

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _check_schema_node(node: Any, path: str) -> None:
    """Structural check of a JSON Schema: catches the mistakes that providers answer with an opaque 400."""
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise ToolSchemaError(f"{path} must be a JSON Schema object, got {type(node).__name__}")
    t = node.get("type")
    types = t if isinstance(t, list) else [t] if t is not None else []
    for one in types:
        if one not in _JSON_TYPES:
            raise ToolSchemaError(f"{path}.type is {one!r}; JSON Schema types are {sorted(_JSON_TYPES)}")
    props = node.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise ToolSchemaError(f"{path}.properties must be an object mapping names to schemas")
        for k, sub in props.items():
            _check_schema_node(sub, f"{path}.properties.{k}")
    req = node.get("required")
    if req is not None:
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise ToolSchemaError(f"{path}.required must be a list of property names")
        missing = [r for r in req if isinstance(props, dict) and r not in props]
        if missing:
            raise ToolSchemaError(f"{path}.required names {missing} which are not in properties")
    if "items" in node:
        _check_schema_node(node["items"], f"{path}.items")
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            if not isinstance(node[key], list):
                raise ToolSchemaError(f"{path}.{key} must be a list of schemas")
            for i, sub in enumerate(node[key]):
                _check_schema_node(sub, f"{path}.{key}[{i}]")
    for key in ("$defs", "definitions"):
        for k, sub in (node.get(key) or {}).items():
            _check_schema_node(sub, f"{path}.{key}.{k}")
    if "enum" in node and not isinstance(node["enum"], list):
        raise ToolSchemaError(f"{path}.enum must be a list")


class FunctionSpec(_Model):
    name: str
    description: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: Optional[bool] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TOOL_NAME.match(v):
            raise ToolSchemaError(
                f"tool name {v!r} is invalid: use 1-64 letters, digits, '_', '.' or '-' "
                "(the rule every provider applies)")
        return v

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise ToolSchemaError(f"tool parameters must be a JSON Schema of type 'object', got {v.get('type')!r}")
        _check_schema_node(v, "parameters")
        return v


class ToolSpec(_Model):
    type: Literal["function"] = "function"
    function: FunctionSpec

    @property
    def name(self) -> str:
        return self.function.name


class ToolChoice(_Model):
    """The seed's ``toolChoice``: ``{"type": "auto"|"required"|"none"|"tool_name", "name": ...}``."""

    type: Literal["auto", "required", "none", "tool_name"]
    name: Optional[str] = None

    @model_validator(mode="after")
    def _name_needed(self) -> "ToolChoice":
        if self.type == "tool_name" and not self.name:
            raise ValueError("toolChoice of type 'tool_name' needs the tool's 'name'")
        return self


class ToolCallDelta(_Model):
    """A fragment of a tool call while streaming; fragments with the same index form one call."""

    index: int
    id: Optional[str] = None
    name: Optional[str] = None
    arguments: str = ""


class ResponseFormat(_Model):
    """JSON output: ``{"type": "json"}`` for any JSON object, or with a ``schema`` to follow."""

    type: Literal["text", "json"] = "json"
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    name: Optional[str] = None
    strict: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if v is not None:
            _check_schema_node(v, "responseFormat.schema")
        return v


# --------------------------------------------------------------------------------------------------
# Settings


# integers a provider's JSON can carry: beyond 64 bits, JSON encoders fail (orjson) or turn them into
# floats, which providers reject or misread; token counts beyond 32 bits are a mistake anywhere
_INT64 = 2**63 - 1
_INT32 = 2**31 - 1


class CompletionSettings(BaseModel):
    """The seed's completion settings, validated: unknown or ill-typed settings are errors."""

    model_config = ConfigDict(extra="forbid", strict=False, populate_by_name=True)

    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    topK: Optional[int] = Field(default=None, ge=1, le=_INT32)
    topP: Optional[float] = Field(default=None, gt=0, le=1)
    maxOutputTokens: Optional[int] = Field(default=None, ge=1, le=_INT32)
    stopSequences: Optional[list[str]] = None
    presencePenalty: Optional[float] = Field(default=None, ge=-2, le=2)
    frequencyPenalty: Optional[float] = Field(default=None, ge=-2, le=2)
    logitBias: Optional[dict[int, float]] = None
    logProbs: Optional[bool] = None
    topLogProbs: Optional[int] = Field(default=None, ge=0, le=20)
    seed: Optional[int] = Field(default=None, ge=-_INT64 - 1, le=_INT64)
    tools: Optional[list[ToolSpec]] = None
    toolChoice: Optional[ToolChoice] = None
    responseFormat: Optional[ResponseFormat] = None
    # Connection-specific pass-through (e.g. {"reasoning_effort": "low"}); explicit so that a
    # misspelt standard setting is still an error instead of silently landing here.
    extra: Optional[dict[str, Any]] = None
    # For the mesh's response cache, never sent to a provider: False bypasses it for this call, True
    # caches it even when not deterministic (see langchain_mesh/policies/cache.py)
    cache: Optional[bool] = None

    @field_validator("temperature", "topK", "topP", "maxOutputTokens", "presencePenalty", "frequencyPenalty",
                     "topLogProbs", "seed", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        # pydantic's lax mode reads True as 1; a bool here is always a caller's mistake
        if isinstance(v, bool):
            raise ValueError("must be a number, not a bool")
        return v

    @field_validator("stopSequences", mode="before")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("toolChoice", mode="before")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        # Accept the bare spellings people type: "auto", "required", "none", or a tool name.
        if isinstance(v, str):
            return {"type": v} if v in ("auto", "required", "none") else {"type": "tool_name", "name": v}
        return v

    @field_validator("logitBias")
    @classmethod
    def _bias(cls, v: Optional[dict[int, float]]) -> Optional[dict[int, float]]:
        if v:
            for tok, b in v.items():
                if not -100 <= b <= 100:
                    raise ValueError(f"bias {b} for token {tok} is outside [-100, 100]")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "CompletionSettings":
        # SettingsError is a ValueError: pydantic wraps it, validate_settings reads back the names.
        if self.topLogProbs and not self.logProbs:
            raise SettingsError("topLogProbs needs logProbs set to True", ["topLogProbs", "logProbs"])
        if self.toolChoice is not None and self.toolChoice.type in ("required", "tool_name") and not self.tools:
            raise SettingsError("toolChoice asks for a tool call but no tools are defined", ["toolChoice", "tools"])
        if self.toolChoice is not None and self.toolChoice.type == "tool_name":
            names = [t.function.name for t in self.tools or []]
            if self.toolChoice.name not in names:
                raise SettingsError(f"toolChoice names {self.toolChoice.name!r}, which is not among the tools {names}",
                                    ["toolChoice"])
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)


_SETTING_NAMES = list(CompletionSettings.model_fields)


def validate_settings(settings: Any) -> CompletionSettings:
    """Validate a user's settings dict, raising :class:`SettingsError` that names each bad setting."""
    if isinstance(settings, CompletionSettings):
        return settings
    if settings is None:
        return CompletionSettings()
    if not isinstance(settings, dict):
        raise SettingsError(f"settings must be a dict, got {type(settings).__name__}", [])
    try:
        return CompletionSettings.model_validate(settings)
    except ToolSchemaError:
        raise
    except ValidationError as e:
        problems = []
        names = []
        tool_problems = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, ToolSchemaError) and loc[:1] == ["tools"]:
                # pydantic wraps our ValueError subclasses; keep the specific type for tool schemas
                tool_problems.append(f"{'.'.join(loc)}: {cause}")
                continue
            if not loc and isinstance(cause, SettingsError):  # a coherence check naming its settings
                names.extend(cause.settings)
                problems.append(str(cause))
                continue
            name = loc[0] if loc else "settings"
            names.append(name)
            where = ".".join(loc) or "settings"
            if err["type"] == "extra_forbidden":
                hint = _suggest_setting(name)
                msg = f"unknown setting {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                     f"; known settings: {', '.join(_SETTING_NAMES)}")
            else:
                msg = f"{where}: {err['msg']} (got {_short(err.get('input'))})"
            problems.append(msg)
        if tool_problems:
            raise ToolSchemaError("invalid tool definition: " + "; ".join(tool_problems + problems)) from None
        raise SettingsError("invalid completion settings: " + "; ".join(problems), names) from None


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _suggest_setting(name: str) -> list[str]:
    # case- and underscore-blind first: 'topk' means topK, not topP; 'max_output_tokens' maxOutputTokens
    by_norm = {_norm(n): n for n in _SETTING_NAMES}
    if _norm(name) in by_norm:
        return [by_norm[_norm(name)]]
    prefixed = [n for k, n in by_norm.items() if len(_norm(name)) >= 3 and k.startswith(_norm(name))]
    if len(prefixed) == 1:  # 'stop' -> stopSequences
        return prefixed
    hint = difflib.get_close_matches(_norm(name), list(by_norm), n=1)
    return [by_norm[hint[0]]] if hint else []


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


# --------------------------------------------------------------------------------------------------
# Requests and responses


class CompletionRequest(_Model):
    messages: list[Message]
    settings: CompletionSettings = Field(default_factory=CompletionSettings)

    @classmethod
    def from_prompt(cls, prompt: str, settings: Optional[CompletionSettings] = None) -> "CompletionRequest":
        """A text completion (a prompt string): one user message. The one definition shared by
        ``POST /v1/completions`` and :class:`~langchain_mesh.langchain.MeshLLM` (mesh LLMs are chat
        models, so a prompt is what a user says; providers' legacy completion APIs are not used)."""
        message = Message.model_construct(role="user", content=prompt, tool_calls=None, tool_call_id=None, name=None)
        return cls.model_construct(messages=[message], settings=settings or CompletionSettings())


# --------------------------------------------------------------------------------------------------
# What the policies did with a call (routes, retries, guardrails, cache, cost): on answers and footers


class AttemptInfo(_Model):
    """One try of one target: ``error`` is None for the attempt that answered."""

    llm_id: str
    error: Optional[str] = None  # the error's type and message, never a secret or the prompt
    status: Optional[int] = None  # the HTTP status of a failed attempt, when it had one
    seconds: float = 0.0


class GuardrailHit(_Model):
    """A guardrail that fired: what it did, never the text it matched."""

    name: str
    action: Literal["redact", "block", "flag", "repair"]
    stage: Literal["input", "output"]
    detail: Optional[str] = None  # what kind of thing fired (e.g. "CREDIT_CARD"), not the thing


class CallMeta(_Model):
    """What the policy layers did (``CompletionResponse.meta``, ``StreamFooter.meta``,
    ``EmbeddingResponse.meta``); None on a call no policy touched."""

    llm_id: Optional[str] = None  # the LLM that answered (a route's target)
    attempts: list[AttemptInfo] = Field(default_factory=list)
    guardrails: list[GuardrailHit] = Field(default_factory=list)
    cache: Optional[Literal["hit", "miss", "bypass"]] = None
    cost: Optional[float] = None  # None: unknown price, never 0 for "unknown"
    currency: Optional[str] = None


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: Optional[int] = None
    cache_creation_input_tokens: Optional[int] = None
    reasoning_tokens: Optional[int] = None

    @model_validator(mode="after")
    def _total(self) -> "Usage":
        if not self.total_tokens:
            self.total_tokens = self.input_tokens + self.output_tokens
        return self

    def __add__(self, other: "Usage") -> "Usage":
        def add(a: Optional[int], b: Optional[int]) -> Optional[int]:
            return None if a is None and b is None else (a or 0) + (b or 0)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_input_tokens=add(self.cached_input_tokens, other.cached_input_tokens),
            cache_creation_input_tokens=add(self.cache_creation_input_tokens, other.cache_creation_input_tokens),
            reasoning_tokens=add(self.reasoning_tokens, other.reasoning_tokens),
        )


class TokenLogProb(_Model):
    token: str
    logprob: float
    top: list[tuple[str, float]] = Field(default_factory=list)


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class CompletionResponse(_Model):
    success: bool = True
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: Optional[FinishReason] = None
    usage: Usage = Field(default_factory=Usage)
    log_probs: Optional[list[TokenLogProb]] = None
    model: Optional[str] = None  # the provider's own model name as it answered
    error: Optional[str] = None  # set with success=False (batch items that failed)
    meta: Optional[CallMeta] = None  # what the policies did (route target, attempts, guardrails, cache, cost)
    raw: Any = Field(default=None, exclude=True, repr=False)

    @property
    def json(self) -> Any:  # type: ignore[override]
        """The text parsed as JSON (for JSON / structured output)."""
        return json.loads(self.text)


class StreamChunk(_Model):
    """One increment of a streamed completion: some text and/or tool-call fragments."""

    text: Optional[str] = None
    tool_call_deltas: list[ToolCallDelta] = Field(default_factory=list)
    log_probs: Optional[list[TokenLogProb]] = None

    @property
    def data(self) -> dict[str, Any]:
        """The seed's view: ``{"text": ..., "toolCalls": [...]}`` with only the keys present."""
        d: dict[str, Any] = {}
        if self.text is not None:
            d["text"] = self.text
        if self.tool_call_deltas:
            d["toolCalls"] = [
                {"index": t.index, "id": t.id, "type": "function",
                 "function": {"name": t.name, "arguments": t.arguments}}
                for t in self.tool_call_deltas
            ]
        return d


class StreamFooter(_Model):
    """The last event of every stream: why it ended and what it cost."""

    finish_reason: Optional[FinishReason] = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCall] = Field(default_factory=list)  # the reassembled calls, if any
    model: Optional[str] = None
    meta: Optional[CallMeta] = None

    @property
    def data(self) -> dict[str, Any]:
        return {
            "finishReason": self.finish_reason,
            "usage": self.usage.model_dump(exclude_none=True),
            **({"toolCalls": [t.model_dump() for t in self.tool_calls]} if self.tool_calls else {}),
        }


StreamEvent = Union[StreamChunk, StreamFooter]


class EmbeddingRequest(_Model):
    """Texts, or images (for models with ``image_embedding``), to embed; one vector each, in order.

    One request holds one kind: a query that mixes them (``add_text`` and ``add_image``) is sent as
    two requests and its vectors put back in the order they were added."""

    texts: list[str] = Field(default_factory=list)
    images: list[ImagePart] = Field(default_factory=list)
    dimensions: Optional[int] = Field(default=None, ge=1)
    input_type: Optional[Literal["query", "document"]] = None

    @model_validator(mode="after")
    def _one_kind(self) -> "EmbeddingRequest":
        if self.texts and self.images:
            raise ValueError("an embedding request holds texts or images, not both (send two requests)")
        if not self.texts and not self.images:
            raise ValueError("an embedding request needs at least one text or image")
        return self


class EmbeddingResponse(_Model):
    embeddings: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    model: Optional[str] = None
    meta: Optional[CallMeta] = None

    def get_embeddings(self) -> list[list[float]]:
        return self.embeddings


class WeightedPrompt(_Model):
    """One prompt of an image generation; ``weight`` None means "not given" (1.0 where weights exist)."""

    text: str = Field(min_length=1)
    weight: Optional[float] = None


#: image-to-image modes (the seed's names): prompted variation, unprompted variation, inpainting,
#: ControlNet-style generation from an image's structure or from a sketch
ImageMode = Literal["MASK_FREE", "VARY", "INPAINTING", "CONTROLNET_STRUCTURE", "CONTROLNET_SKETCH"]
IMAGE_MODES: tuple[str, ...] = ("MASK_FREE", "VARY", "INPAINTING", "CONTROLNET_STRUCTURE", "CONTROLNET_SKETCH")
#: where an inpainting mask comes from: black pixels of a second image, or the original's transparent pixels
MaskType = Literal["MASK_IMAGE_BLACK", "ORIGINAL_IMAGE_ALPHA"]
MASK_TYPES: tuple[str, ...] = ("MASK_IMAGE_BLACK", "ORIGINAL_IMAGE_ALPHA")
#: well-known ratios a float aspect ratio is read as (21/9 is "21:9", not "7:3")
_NAMED_RATIOS = ("1:1", "21:9", "9:21", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "5:4", "4:5", "7:4", "4:7")


def ratio_value(ratio: str) -> float:
    w, _, h = ratio.partition(":")
    return float(w) / float(h)


def normalize_aspect_ratio(value: Any) -> Optional[str]:
    """``21/9`` (a float), ``"21:9"`` or ``"21/9"`` -> ``"21:9"``; anything else is a ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"aspect_ratio must be a number (21/9) or 'W:H' text ('21:9'), not {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ValueError(f"aspect_ratio must be positive, got {value!r}")
        for named in _NAMED_RATIOS:
            if abs(ratio_value(named) - value) <= 0.001 * value:
                return named
        from fractions import Fraction

        f = Fraction(value).limit_denominator(100)
        return f"{f.numerator}:{f.denominator}"
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[:/]\s*(\d+(?:\.\d+)?)\s*", value)
        if m and float(m[1]) > 0 and float(m[2]) > 0:
            return f"{m[1]}:{m[2]}"
    raise ValueError(f"aspect_ratio must be a number (21/9) or 'W:H' text ('21:9'), not {value!r}")


class ImageGenerationRequest(_Model):
    """Text-to-image or image-to-image, every setting of the seed's builder.

    Legacy callers may pass ``prompt=``/``negative_prompt=`` text: it becomes one unweighted prompt.
    :meth:`checked` builds one and turns validation problems into :class:`SettingsError`.
    """

    prompts: list[WeightedPrompt] = Field(default_factory=list)
    negative_prompts: list[WeightedPrompt] = Field(default_factory=list)
    images: list[ImagePart] = Field(default_factory=list)  # inputs for image-to-image
    image_mode: Optional[ImageMode] = None  # with images: MASK_FREE when not given
    image_weight: Optional[float] = Field(default=None, ge=0, le=1)  # how much the original image counts
    mask_type: Optional[MaskType] = None
    mask: Optional[ImagePart] = None  # MASK_IMAGE_BLACK: black pixels are the area to fill
    height: Optional[int] = Field(default=None, gt=0)
    width: Optional[int] = Field(default=None, gt=0)
    aspect_ratio: Optional[str] = None  # "W:H"; a float (21/9) is read as its ratio
    n: int = Field(default=1, ge=1)
    seed: Optional[int] = Field(default=None, ge=0)
    quality: Optional[str] = None  # model-specific: "standard", "hd", "premium", "high"...
    style: Optional[str] = None  # model-specific: "vivid", "natural", "anime", "photographic"...
    fidelity: Optional[float] = Field(default=None, ge=0, le=1)  # how strongly to adhere to the prompt
    mime_type: str = "image/png"
    #: a setting the model does not take is dropped (and listed in the response's ``ignored_settings``)
    #: instead of refused with a SettingsError
    lenient: bool = False

    @model_validator(mode="before")
    @classmethod
    def _legacy_prompts(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key, target in (("prompt", "prompts"), ("negative_prompt", "negative_prompts")):
                if key in data:
                    text = data.pop(key)
                    if text:
                        data[target] = [*data.get(target, []), {"text": text}]
        return data

    @field_validator("aspect_ratio", mode="before")
    @classmethod
    def _ratio(cls, v: Any) -> Optional[str]:
        return normalize_aspect_ratio(v)

    @model_validator(mode="after")
    def _coherent(self) -> "ImageGenerationRequest":
        mode = self.mode
        if self.image_mode is not None and not self.images:
            raise ValueError(f"image_mode {self.image_mode} needs an original image (with_original_image)")
        if not self.prompts and mode != "VARY":
            raise ValueError("an image generation needs a prompt (with_prompt); only mode VARY goes without")
        if mode == "INPAINTING" and self.mask_type is None:
            raise ValueError("INPAINTING needs a mask: with_mask('MASK_IMAGE_BLACK', image=...) or "
                             "with_mask('ORIGINAL_IMAGE_ALPHA')")
        if self.mask_type is not None and mode != "INPAINTING":
            raise ValueError(f"a mask ({self.mask_type}) is for mode INPAINTING, not {mode or 'text-to-image'}")
        if self.mask_type == "MASK_IMAGE_BLACK" and self.mask is None:
            raise ValueError("mask type MASK_IMAGE_BLACK needs the mask image (with_mask(..., image=...))")
        if self.mask_type == "ORIGINAL_IMAGE_ALPHA" and self.mask is not None:
            raise ValueError("mask type ORIGINAL_IMAGE_ALPHA reads the original image's transparent pixels; "
                             "pass no mask image (or use MASK_IMAGE_BLACK)")
        return self

    @classmethod
    def checked(cls, **fields: Any) -> "ImageGenerationRequest":
        """Validate, with problems as a :class:`SettingsError` naming each setting."""
        try:
            return cls(**fields)
        except ValidationError as e:
            names = [str(err["loc"][0]) for err in e.errors() if err.get("loc")] or ["request"]
            reasons = "; ".join((f"{err['loc'][0]}: " if err.get("loc") else "") + err["msg"].removeprefix(
                "Value error, ") for err in e.errors())
            raise SettingsError(f"invalid image generation: {reasons}", names) from None

    @property
    def mode(self) -> Optional[str]:
        """The image-to-image mode (MASK_FREE when images were given without one), None for text-to-image."""
        return self.image_mode or ("MASK_FREE" if self.images else None)

    @property
    def prompt(self) -> str:
        """The prompts merged into one text (for models without weighted prompts)."""
        return merge_prompts(self.prompts)

    @property
    def negative_prompt(self) -> Optional[str]:
        return merge_prompts(self.negative_prompts) or None

    @property
    def weighted(self) -> bool:
        """Whether any prompt carries a weight other than 1."""
        return any(p.weight is not None and p.weight != 1 for p in self.prompts + self.negative_prompts)

    @property
    def ratio(self) -> Optional[float]:
        """The asked shape as width/height: from ``aspect_ratio``, else from ``width``/``height``."""
        if self.aspect_ratio is not None:
            return ratio_value(self.aspect_ratio)
        if self.width and self.height:
            return self.width / self.height
        return None


def merge_prompts(prompts: list[WeightedPrompt]) -> str:
    """Texts in order, comma-separated: how weighted prompts reach a model that takes one plain prompt."""
    return ", ".join(p.text.strip() for p in prompts if p.text.strip())


class GeneratedImage(_Model):
    data: bytes
    mime_type: str = "image/png"


class ImageGenerationResponse(_Model):
    images: list[GeneratedImage]
    model: Optional[str] = None
    success: bool = True  # errors raise; the seed's callers test ``if resp.success:``
    error: Optional[str] = None
    #: lenient requests only: the settings this model does not take, which were not sent
    ignored_settings: list[str] = Field(default_factory=list)

    def first_image(self) -> bytes:
        if not self.images:
            raise IndexError("the response carries no image")
        return self.images[0].data

    def get_images(self) -> list[bytes]:
        return [i.data for i in self.images]


# --------------------------------------------------------------------------------------------------
# What a model is and can do


class ModelCapabilities(_Model):
    streaming: bool = True
    tools: bool = False
    tool_choice: bool = False
    json_output: bool = False
    structured_output: bool = False
    image_input: bool = False
    #: embeds images (``EmbeddingRequest.images``): Titan Multimodal, Vertex multimodalembedding, Cohere embed-v4
    image_embedding: bool = False
    log_probs: bool = False
    context_window: Optional[int] = None


class ModelInfo(_Model):
    """One model a connection offers, as ``list_llms`` reports it."""

    id: str  # the model part of the LLM id
    purposes: list[Purpose]
    description: str = ""
    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)
