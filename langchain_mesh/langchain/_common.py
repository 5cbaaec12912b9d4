"""What MeshChatModel, MeshLLM and MeshEmbeddings share: resolving the mesh, mapping LangChain
parameter names to the seed's setting names. Retries and timeouts are the mesh's one policy: the
adapters pass their ``timeout`` / ``max_retries`` to :class:`Mesh` dispatch as overrides."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from ..ids import parse_llm_id
from ..schema import validate_settings
from .serialization import TracedSerializable, dump_with_mesh

if TYPE_CHECKING:
    from ..mesh import Mesh
    from ..queries import LLM


#: LangChain / OpenAI-style parameter names -> the seed's completion setting names
PARAM_TO_SETTING: dict[str, str] = {
    "temperature": "temperature",
    "max_tokens": "maxOutputTokens",
    "max_output_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "top_p": "topP",
    "top_k": "topK",
    "stop": "stopSequences",
    "stop_sequences": "stopSequences",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "logit_bias": "logitBias",
    "logprobs": "logProbs",
    "top_logprobs": "topLogProbs",
    "seed": "seed",
    "tools": "tools",
    "tool_choice": "toolChoice",
    "response_format": "responseFormat",
}
_SEED_NAMES = frozenset(PARAM_TO_SETTING.values()) | {"extra"}
# kwargs LangChain itself may hand to _generate/_stream that are not settings
_LANGCHAIN_PLUMBING = frozenset({"stream", "ls_structured_output_format"})


def coerce_mesh(value: Any) -> Any:
    """``mesh=`` accepts a Mesh, a config dict, a MeshConfig or a path to a mesh YAML file."""
    if value is None:
        return None
    from ..config import MeshConfig
    from ..mesh import Mesh

    if isinstance(value, Mesh):
        return value
    if isinstance(value, (Mapping, MeshConfig, str, os.PathLike)):
        return Mesh.from_config(value)  # type: ignore[arg-type]
    raise TypeError(f"mesh must be a Mesh, a config dict or a path to a mesh YAML file, "
                    f"got {type(value).__name__}")


class RetryDefaults:
    """``with_retry()`` retries the mesh's retryable errors by default (rate limits, 5xx, timeouts,
    unreachable providers, cut streams) instead of LangChain's ``(Exception,)``: a bad request or a
    wrong key fails the same way every time, so retrying it only delays the error."""

    #: the mesh errors worth a retry or a fallback (``langchain_mesh.errors.RETRYABLE_ERRORS``);
    #: ``chat.with_fallbacks([...], exceptions_to_handle=chat.retryable_errors)``
    @property
    def retryable_errors(self) -> tuple[type[BaseException], ...]:
        from ..errors import RETRYABLE_ERRORS

        return RETRYABLE_ERRORS

    def with_retry(self, *, retry_if_exception_type: Optional[tuple[type[BaseException], ...]] = None,
                   **kwargs: Any) -> Any:
        if retry_if_exception_type is None:
            retry_if_exception_type = self.retryable_errors
        return super().with_retry(retry_if_exception_type=retry_if_exception_type, **kwargs)  # type: ignore[misc]


def resolve_mesh(mesh: Optional["Mesh"]) -> "Mesh":
    if mesh is not None:
        return mesh
    from ..mesh import Mesh

    return Mesh.default()


def provider_of(llm_id: str) -> str:
    """The connection type of an LLM id (``openai:myopenai:gpt-4o`` -> ``openai``); 'mesh' if unparsable."""
    try:
        return parse_llm_id(llm_id)[0]
    except Exception:  # noqa: BLE001 - tracing metadata must never fail a call
        return "mesh"


def base_settings(fields: Mapping[str, Any], extra_settings: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The instance-level settings: the free-form ``settings`` dict under the named fields."""
    out: dict[str, Any] = dict(extra_settings or {})
    for param, value in fields.items():
        if value is None:
            continue
        if param == "stop" and not value:
            continue  # stop=[] means "no stop sequences", not an empty list sent to the provider
        out[PARAM_TO_SETTING[param]] = value
    return out


def merge_call_settings(base: dict[str, Any], stop: Optional[list[str]], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Per-call settings: the instance's, then call kwargs (either naming scheme), then ``stop``.

    Unknown kwargs are kept under their own name so that :func:`validate_settings` rejects them
    with a "did you mean" hint rather than dropping them silently.
    """
    settings = dict(base)
    for k, v in kwargs.items():
        if k in _LANGCHAIN_PLUMBING:
            continue
        if k == "settings":
            settings.update(v or {})
            continue
        if k == "parallel_tool_calls":
            if v is not None:
                settings["extra"] = {**(settings.get("extra") or {}), "parallel_tool_calls": v}
            continue
        name = PARAM_TO_SETTING.get(k, k)
        if v is None:
            settings.pop(name, None)
            continue
        settings[name] = v
    if stop is not None:
        if stop:
            settings["stopSequences"] = list(stop)
        else:
            settings.pop("stopSequences", None)
    if "stopSequences" in settings and not settings["stopSequences"]:
        del settings["stopSequences"]
    return settings


def get_llm(mesh: Optional["Mesh"], llm_id: str, purpose: str) -> "LLM":
    """The LLM handle, checked for its purpose (a chat call to an embedding model fails clearly)."""
    from ..schema import Purpose

    llm = resolve_mesh(mesh).get_llm(llm_id)
    want = Purpose(purpose)
    if want not in llm.info.purposes:
        llm._require(want)  # raises CapabilityError listing the models that can
    return llm


class MeshModelFields(RetryDefaults, TracedSerializable, BaseModel):
    """The constructor fields :class:`MeshChatModel` and :class:`MeshLLM` share, validated once."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model: str = Field(validation_alias=AliasChoices("model", "llm_id"))
    """The mesh LLM id, e.g. ``openai:myopenai:gpt-4o`` (``llm_id`` is accepted too)."""
    mesh: Optional[Any] = Field(default=None, exclude=True, repr=False)
    """A Mesh, a config dict, or a path to a mesh YAML file; None = ``Mesh.default()``."""
    temperature: Optional[float] = None
    max_tokens: Optional[int] = Field(default=None, validation_alias=AliasChoices("max_tokens", "max_output_tokens"))
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    stop: Optional[list[str]] = Field(default=None, validation_alias=AliasChoices("stop", "stop_sequences"))
    timeout: Optional[float] = None
    """Seconds for a whole call, retries and waits included (a stream: until its end, checked between
    events on the sync path); None = the connection's ``timeout``."""
    max_retries: Optional[int] = None
    """Retries of retryable mesh errors (rate limits, 5xx, timeouts) for this adapter's calls, in place
    of the connection's ``max_retries`` (None = the connection's); a stream is only retried before its
    first event."""
    streaming: bool = False
    """Make ``invoke`` go through the streaming path (callbacks then see each token)."""
    api_key: Optional[SecretStr] = None
    """Accepted for LangChain compatibility; credentials belong to the mesh connection's config."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Further seed settings (``presencePenalty``, ``frequencyPenalty``, ``logProbs``, ``seed``...)."""

    _base: dict[str, Any] = PrivateAttr(default_factory=dict)
    _base_validated: Any = PrivateAttr(default=None)

    @field_validator("mesh", mode="before")
    @classmethod
    def _coerce_mesh(cls, v: Any) -> Any:
        return coerce_mesh(v)

    @model_serializer(mode="wrap")
    def _dump_with_mesh(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        return dump_with_mesh(self, handler)

    @model_validator(mode="after")
    def _build_settings(self) -> "MeshModelFields":
        self._base = base_settings(
            {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p,
             "top_k": self.top_k, "stop": self.stop}, self.settings)
        # misspelt or out-of-range settings fail here, not on the first call
        self._base_validated = validate_settings(self._base)
        return self

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, **self._base}

    def _get_ls_params(self, stop: Optional[list[str]] = None, **kwargs: Any) -> Any:
        from langchain_core.language_models.base import LangSmithParams

        model = kwargs.get("model") if isinstance(kwargs.get("model"), str) else self.model
        params = LangSmithParams(ls_provider=provider_of(model), ls_model_name=model,
                                 ls_model_type=self._ls_model_type)  # type: ignore[attr-defined]
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        ls_stop = stop or kwargs.get("stop") or self.stop
        if ls_stop:
            params["ls_stop"] = list(ls_stop)
        return params

    # ---- tokens: the model's own count, never LangChain's offline GPT-2 fallback (which counts 0) --

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` from the model's own tokenizer (local models, OpenAI's models).
        Hosted models whose tokenizer only their provider has raise CapabilityError: count them with
        :meth:`get_num_tokens` / ``get_num_tokens_from_messages``, which ask the provider."""
        from ..errors import CapabilityError

        llm = get_llm(self.mesh, self.model, "GENERIC_COMPLETION")
        tok = llm.mesh.tokenizer(llm)
        if tok is None:
            raise CapabilityError(
                f"{llm.id}'s tokenizer is not available in this process (its provider counts tokens "
                "server-side); use get_num_tokens or get_num_tokens_from_messages, which ask the provider")
        return list(tok.encode(text))

    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text``: the model's tokenizer where this process has it; otherwise the
        connection's count of ``text`` sent as one user message (the provider's count-tokens
        endpoint, so it includes that message's few framing tokens; else the documented estimate)."""
        from ..schema import CompletionRequest, Message

        llm = get_llm(self.mesh, self.model, "GENERIC_COMPLETION")
        tok = llm.mesh.tokenizer(llm)
        if tok is not None:
            return len(tok.encode(text))
        return llm.mesh.count_tokens(llm, CompletionRequest(messages=[Message(role="user", content=text)]))

    def _call_settings(self, stop: Optional[list[str]], kwargs: dict[str, Any]) -> Any:
        """Settings of one call: the construction-time ones (validated once) unless the call adds any."""
        if kwargs or stop is not None:
            return validate_settings(merge_call_settings(self._base, stop, kwargs))
        return self._base_validated.model_copy()
