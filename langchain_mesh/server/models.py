"""The OpenAI request bodies the server accepts, as pydantic models: the validators of the hot path
and the source of ``/openapi.json``.

Validating with pydantic-core straight from the request bytes (``model_validate_json``) parses and
checks in one compiled pass (a few microseconds for a chat request) and names the offending field,
which a hand-written dict walk would have to re-implement. Only *shapes* live here: the ranges of the
settings (temperature 0..2...) belong to :class:`~langchain_mesh.schema.CompletionSettings`, which
checks them when the request is translated, so there is one definition of each rule.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatCompletionRequest", "CompletionsRequest", "EmbeddingsRequest", "ImagesRequest"]


class _Body(BaseModel):
    # strict: a number sent as a string is a client bug OpenAI rejects too; NaN and Infinity are not
    # JSON (pydantic's parser reads them) and would slip past every range check
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, allow_inf_nan=False)


class ImageURL(_Body):
    url: str
    detail: Optional[Literal["auto", "low", "high"]] = None


class TextContent(_Body):
    type: Literal["text"]
    text: str


class ImageContent(_Body):
    type: Literal["image_url"]
    image_url: ImageURL


class RefusalContent(_Body):
    type: Literal["refusal"]
    refusal: str


UserContent = Annotated[Union[TextContent, ImageContent], Field(discriminator="type")]
AssistantContent = Annotated[Union[TextContent, RefusalContent], Field(discriminator="type")]


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Body):
    role: Literal["system", "developer"]
    content: Union[str, list[TextContent]]
    name: Optional[str] = None


class UserMessage(_Body):
    role: Literal["user"]
    content: Union[str, list[UserContent]]
    name: Optional[str] = None


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: Union[str, list[AssistantContent], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    refusal: Optional[str] = None
    # a field of OpenAI's answers (url citations) that clients echo back with the message (the SDK's
    # ``message.model_dump()``); read-only information, not sent on to the provider
    annotations: Optional[list[dict[str, Any]]] = None


class ToolMessage(_Body):
    role: Literal["tool"]
    content: Union[str, list[TextContent]]
    tool_call_id: str
    # not in OpenAI's current reference, but its API takes it and clients send it (instructor's
    # re-ask names the tool); it goes on to the provider with the message
    name: Optional[str] = None


ChatMessage = Annotated[Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage],
                        Field(discriminator="role")]


class FunctionDefinition(_Body):
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JSONSchema(_Body):
    name: str
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class TextFormat(_Body):
    type: Literal["text"]


class JSONObjectFormat(_Body):
    type: Literal["json_object"]


class JSONSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat = Annotated[Union[TextFormat, JSONObjectFormat, JSONSchemaFormat], Field(discriminator="type")]


class StreamOptions(_Body):
    include_usage: Optional[bool] = None


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``. ``model`` is a mesh LLM id."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None  # not OpenAI's, but vLLM's and TGI's: the seed's topK
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    stop: Union[str, list[str], None] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    seed: Optional[int] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["auto", "none", "required"], NamedToolChoice, None] = None
    response_format: Optional[ResponseFormat] = None
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    n: Optional[Literal[1]] = Field(default=None, description="only one choice per request")
    # passed through to the connection (settings.extra): OpenAI-family services honour them
    user: Optional[str] = None
    parallel_tool_calls: Optional[bool] = None
    reasoning_effort: Optional[Literal["minimal", "low", "medium", "high"]] = None
    metadata: Optional[dict[str, str]] = None
    store: Optional[bool] = None
    service_tier: Optional[Literal["auto", "default", "flex", "scale", "priority"]] = None
    prompt_cache_key: Optional[str] = None
    safety_identifier: Optional[str] = None
    verbosity: Optional[Literal["low", "medium", "high"]] = None


class CompletionsRequest(_Body):
    """``POST /v1/completions`` (OpenAI's legacy text completion). ``prompt``: a string, or a list of
    strings answered as one choice each. Token-id prompts are not taken (mesh models have different
    tokenizers); ``echo``, ``suffix`` and ``best_of`` > 1 are refused with a 400 naming them."""

    model: str
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    stop: Union[str, list[str], None] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    logprobs: Optional[int] = None
    seed: Optional[int] = None
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    n: Optional[Literal[1]] = Field(default=None, description="only one choice per prompt")
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = None
    user: Optional[str] = None


class EmbeddingsRequest(_Body):
    """``POST /v1/embeddings``. ``input``: a string, strings, token ids or lists of token ids, as
    OpenAI takes them (token ids: see :func:`langchain_mesh.server.translate.embedding_texts`)."""

    model: str
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None
    user: Optional[str] = None


class ImagesRequest(_Body):
    """``POST /v1/images/generations``; images are answered inline (``b64_json``). ``quality`` and
    ``style`` are the mesh's settings of the same names (translated or refused per model)."""

    prompt: str
    model: str
    n: Optional[int] = None
    size: Optional[str] = Field(default=None, pattern=r"^(auto|\d{1,5}x\d{1,5})$")
    response_format: Optional[Literal["b64_json"]] = None
    quality: Optional[str] = None
    style: Optional[str] = None
    output_format: Optional[Literal["png", "jpeg", "webp"]] = None
    user: Optional[str] = None


class ImageVariationForm(_Body):
    """``POST /v1/images/variations`` (multipart/form-data; the ``image`` file aside)."""

    # form fields are all text: "2" is the number 2 here
    model_config = ConfigDict(extra="forbid", strict=False, populate_by_name=True, allow_inf_nan=False)
    model: str
    n: Optional[int] = None
    size: Optional[str] = Field(default=None, pattern=r"^(auto|\d{1,5}x\d{1,5})$")
    response_format: Optional[Literal["b64_json"]] = None
    user: Optional[str] = None


class ImageEditForm(ImageVariationForm):
    """``POST /v1/images/edits`` (multipart/form-data; the ``image`` and ``mask`` files aside)."""

    prompt: str
    quality: Optional[str] = None
    output_format: Optional[Literal["png", "jpeg", "webp"]] = None
