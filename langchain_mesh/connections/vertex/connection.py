"""``vertex``: Google Gemini, text embeddings and Imagen through the official ``google-genai`` SDK,
on Vertex AI (the default) or on the Gemini Developer API::

    gcp:                                          # vertex:gcp:gemini-2.5-flash
      type: vertex
      project: my-project                         # default: the key's project_id, or ADC's project
      location: us-central1
      service_account_key: "{{file:~/keys/vertex-sa.json}}"   # the key JSON itself
      # oauth_token: "{{env:GOOGLE_OAUTH_TOKEN}}" # instead: an OAuth access token
      # neither: application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server)
    gemini:                                       # vertex:gemini:gemini-2.5-flash
      type: vertex
      backend: gemini                             # the Gemini Developer API (generativelanguage.googleapis.com)
      api_key: "{{env:GEMINI_API_KEY}}"           # the default

A service-account key is exchanged for access tokens by google-auth's own JWT-bearer flow, at its
``token_uri``, scoped to ``cloud-platform``. ``base_url`` sends every request elsewhere (a proxy, or
:mod:`langchain_mesh.testing.vertex`); ``api_version`` overrides the SDK's (``v1beta1`` on Vertex).
Vertex "express mode" (an API key on Vertex) is not offered: use ``backend: gemini`` for keys.

Settings: ``temperature``, ``topP``, ``topK``, ``maxOutputTokens``, ``stopSequences``, the two
penalties, ``seed``, ``logProbs``/``topLogProbs`` (``response_logprobs``/``logprobs``), ``tools``,
``toolChoice`` (AUTO/ANY/NONE, a named tool is ANY with ``allowed_function_names``) and
``responseFormat`` (``application/json`` with the schema translated to Gemini's subset); ``extra``
adds config keys (``safety_settings``, ``thinking_config``, ``labels``...). ``logitBias`` has no
Gemini parameter and is refused with a :class:`SettingsError`. Thought signatures of function calls
(thinking models need them back with the call) are kept per connection, by call id, for the
conversation's next turn. Embeddings take ``input_type`` (RETRIEVAL_QUERY/RETRIEVAL_DOCUMENT) and
``dimensions`` (``output_dimensionality``). Imagen (Vertex only) takes ``aspect_ratio`` (a width and
height, or a ratio, snap to the nearest of Imagen's five within 10%), ``negative_prompt``, ``seed``
(which turns the watermark off: Imagen refuses seeds otherwise), ``fidelity`` as ``guidance_scale`` and
``n`` up to 4; weighted prompts are merged. ``imagen-3.0-capability-001`` edits through ``edit_image``:
INPAINTING (a user-provided mask, white = fill) and CONTROLNET_STRUCTURE / CONTROLNET_SKETCH (canny /
scribble control images).

Errors are the mesh's typed errors, with the SDK's retries off.
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
from collections import OrderedDict
from typing import Any, AsyncIterator, Iterator, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ...config import ConnectionConfig, Secret
from ...errors import (
    AuthenticationError,
    CapabilityError,
    ConfigError,
    CredentialError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    SettingsError,
    StreamInterruptedError,
    error_for_status,
    parse_retry_after,
)
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    GeneratedImage,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamEvent,
    Usage,
)
from . import wire
from ..base import Connection
from ..image_settings import ImageTranslation

__all__ = ["VertexConnection", "VertexConfig"]

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class VertexConfig(ConnectionConfig):
    type: str = "vertex"
    backend: Literal["vertex", "gemini"] = "vertex"
    project: Optional[Secret] = None
    location: str = "us-central1"
    service_account_key: Optional[Secret] = None  # the key's JSON text (usually a {{file:...}} reference)
    oauth_token: Optional[Secret] = None
    api_key: Optional[Secret] = None
    base_url: Optional[str] = None
    api_version: Optional[str] = None
    #: texts per embeddings request (Vertex's text-embedding models take up to 250, the Gemini API 100)
    embedding_batch_size: int = Field(default=100, ge=1)

    @field_validator("project", mode="before")
    @classmethod
    def _shown(cls, v: Any) -> Any:
        return Secret(v, masked=False) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_auth(self) -> "VertexConfig":
        if self.backend == "gemini":
            if self.service_account_key is not None or self.oauth_token is not None or self.project is not None:
                raise ValueError("backend 'gemini' (the Gemini Developer API) authenticates with 'api_key' only; "
                                 "'project', 'service_account_key' and 'oauth_token' are for Vertex AI")
            if self.api_key is None:
                self.api_key = Secret("{{env:GEMINI_API_KEY}}")
        else:
            if self.api_key is not None:
                raise ValueError("'api_key' is for backend 'gemini'; Vertex AI takes 'service_account_key', "
                                 "'oauth_token' or application default credentials")
            if self.service_account_key is not None and self.oauth_token is not None:
                raise ValueError("give 'service_account_key' or 'oauth_token', not both")
        return self


# --------------------------------------------------------------------------------------------------
# models

_GEMINI = ModelCapabilities(streaming=True, tools=True, tool_choice=True, json_output=True, structured_output=True,
                            image_input=True, log_probs=True)
_EMBED = ModelCapabilities(streaming=False)
_MULTIMODAL_EMBED = ModelCapabilities(streaming=False, image_embedding=True)
#: multimodalembedding's vector sizes (parameters.dimension; 1408 by default)
MULTIMODAL_DIMENSIONS = (128, 256, 512, 1408)


def _is_multimodal(model: str) -> bool:
    return model.startswith("multimodalembedding")


def _embed_caps(model: str) -> ModelCapabilities:
    return _MULTIMODAL_EMBED if _is_multimodal(model) else _EMBED
_IMAGE = ModelCapabilities(streaming=False)

_CHAT_MODELS = [
    ("gemini-2.5-pro", 1_048_576, "Gemini 2.5 Pro"),
    ("gemini-2.5-flash", 1_048_576, "Gemini 2.5 Flash"),
    ("gemini-2.5-flash-lite", 1_048_576, "Gemini 2.5 Flash-Lite"),
    ("gemini-2.0-flash", 1_048_576, "Gemini 2.0 Flash"),
    ("gemini-2.0-flash-lite", 1_048_576, "Gemini 2.0 Flash-Lite"),
]
_EMBED_MODELS = {
    "vertex": ["text-embedding-005", "text-multilingual-embedding-002", "gemini-embedding-001",
               "multimodalembedding@001"],
    "gemini": ["gemini-embedding-001", "text-embedding-004"],
}
#: Imagen 3 and Imagen 3 Fast (the seed's image models); Vertex AI only
IMAGE_MODELS = {"imagen-3.0-generate-002": "Imagen 3", "imagen-3.0-fast-generate-001": "Imagen 3 Fast",
                "imagen-3.0-capability-001": "Imagen 3 editing (inpainting, ControlNet-style control)"}


def _purpose(model: str) -> Purpose:
    if model.startswith("imagen"):
        return Purpose.IMAGE_GENERATION
    if "embedding" in model:
        return Purpose.TEXT_EMBEDDING_EXTRACTION
    return Purpose.GENERIC_COMPLETION


class _Signatures(OrderedDict):  # type: ignore[type-arg]
    """Thought signatures by call id, the most recent few thousand (a conversation's next turn needs them)."""

    LIMIT = 4096

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def __setitem__(self, key: str, value: bytes) -> None:
        with self._lock:
            super().__setitem__(key, value)
            while len(self) > self.LIMIT:
                self.popitem(last=False)


@functools.lru_cache(maxsize=None)
def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout, transport) exception classes of the HTTP stacks the SDK may run on."""
    timeouts: list[type] = [TimeoutError]
    transports: list[type] = [OSError]
    for name in ("httpx", "httpx2"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        transports.append(mod.TransportError)
    try:
        import aiohttp  # the SDK's async transport when installed
    except ImportError:
        pass
    else:
        transports.append(aiohttp.ClientError)
    return tuple(timeouts), tuple(transports)


def _reason(details: Any) -> Optional[str]:
    """The ``google.rpc.ErrorInfo`` reason of a Google error body, if it has one."""
    error = details.get("error") if isinstance(details, dict) else None
    for d in (error or {}).get("details") or []:
        if isinstance(d, dict) and d.get("reason"):
            return str(d["reason"])
    return None


class VertexConnection(Connection):
    type_name = "vertex"
    embeds_images = True
    config_model = VertexConfig
    config: VertexConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._sdk: Any = None
        self._signatures = _Signatures()

    # ---- models ------------------------------------------------------------------------------------------

    def default_models(self) -> list[ModelInfo]:
        where = "Vertex AI" if self.config.backend == "vertex" else "the Gemini API"
        out = [ModelInfo(id=m, purposes=[Purpose.GENERIC_COMPLETION], description=f"{d} on {where}",
                         capabilities=_GEMINI.model_copy(update={"context_window": ctx}))
               for m, ctx, d in _CHAT_MODELS]
        out += [ModelInfo(id=m, purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION], capabilities=_embed_caps(m),
                          description=f"{m} embeddings on {where}") for m in _EMBED_MODELS[self.config.backend]]
        if self.config.backend == "vertex":
            out += [ModelInfo(id=m, purposes=[Purpose.IMAGE_GENERATION], capabilities=_IMAGE,
                              description=f"{d} on Vertex AI") for m, d in IMAGE_MODELS.items()]
        return out

    def known_model(self, model: Any) -> Optional[ModelInfo]:
        purpose = _purpose(model.id)
        caps = _GEMINI if purpose == Purpose.GENERIC_COMPLETION else _embed_caps(model.id)
        return ModelInfo(id=model.id, purposes=[purpose], capabilities=caps)

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return _GEMINI if _purpose(model) == Purpose.GENERIC_COMPLETION else _embed_caps(model)


    # ---- the SDK client ------------------------------------------------------------------------------

    def _credentials(self) -> tuple[Any, Optional[str]]:
        """google-auth credentials and the project they name, resolved at first use."""
        at = f"connections.{self.name}"
        cfg = self.config
        if cfg.service_account_key is not None:
            from google.oauth2 import service_account

            raw = cfg.service_account_key.get(f"{at}.service_account_key")
            try:
                info = json.loads(raw)
                creds = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
            except (ValueError, KeyError, TypeError) as e:
                # the parsers' messages name the missing field or the position, never the key's content
                raise CredentialError(f"{at}.service_account_key is not a service-account key JSON: "
                                      f"{type(e).__name__}: {e}") from None
            return creds, info.get("project_id")
        if cfg.oauth_token is not None:
            from google.oauth2.credentials import Credentials

            return Credentials(token=cfg.oauth_token.get(f"{at}.oauth_token")), None
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            return google.auth.default(scopes=list(SCOPES))
        except DefaultCredentialsError as e:
            raise CredentialError(f"{at} has no service_account_key or oauth_token and application default "
                                  f"credentials are not available: {e}") from None

    def _make_client(self) -> Any:
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise CapabilityError("the vertex connection needs google-genai: "
                                  "pip install 'langchain-mesh[vertex]'") from None
        cfg, at = self.config, f"connections.{self.name}"
        http = types.HttpOptions(base_url=cfg.base_url, api_version=cfg.api_version, timeout=int(cfg.timeout * 1000),
                                 # one attempt: the mesh's retry policy retries (and an SDK with retry
                                 # options set also skips its hidden aiohttp reconnect-and-retry)
                                 retry_options=types.HttpRetryOptions(attempts=1))
        if cfg.backend == "gemini":
            assert cfg.api_key is not None  # the config defaults it
            return genai.Client(api_key=cfg.api_key.get(f"{at}.api_key"), http_options=http)
        creds, project = self._credentials()
        if cfg.project is not None:
            project = cfg.project.get(f"{at}.project")
        if not project:
            raise ConfigError(f"{at}.project is missing and the credentials name none", [(f"{at}.project", "missing")])
        return genai.Client(vertexai=True, project=project, location=cfg.location, credentials=creds,
                            http_options=http)

    def _client(self) -> Any:
        with self._lock:
            if self._sdk is None:
                self._sdk = self._make_client()
            return self._sdk

    def close(self) -> None:
        with self._lock:
            sdk, self._sdk = self._sdk, None
        if sdk is not None:
            sdk.close()  # the async side's sessions belong to their loops and go with the client

    # ---- errors -----------------------------------------------------------------------------------------

    def _error(self, e: BaseException, decoder: Optional[wire.StreamDecoder] = None) -> BaseException:
        """The SDK's (or its transports') exception as the mesh's error; anything else unchanged."""
        from google.auth import exceptions as auth_errors
        from google.genai import errors as sdk_errors

        if isinstance(e, sdk_errors.APIError):
            headers = getattr(e.response, "headers", None)
            message = e.message or (e.status or "") or str(e.details)[:300]
            if _reason(e.details) == "API_KEY_INVALID":  # Google answers a wrong API key with a 400
                return AuthenticationError(f"{wire.PROVIDER} answered HTTP {e.code}: {message}", status=e.code,
                                           provider=wire.PROVIDER, provider_message=str(message))
            return error_for_status(e.code or 500, str(message), provider=wire.PROVIDER,
                                    retry_after=parse_retry_after(headers))
        if isinstance(e, auth_errors.RefreshError):
            return AuthenticationError(f"{wire.PROVIDER}: the token endpoint refused the credentials of connection "
                                       f"{self.name!r}: {e}", provider=wire.PROVIDER, status=401)
        timeouts, transports = _transport_errors()
        if decoder is not None and decoder.chunks and isinstance(e, timeouts + transports):
            return StreamInterruptedError(
                f"the {wire.PROVIDER} stream broke off after {decoder.chunks} chunks ({type(e).__name__}); "
                "the partial answer was not returned as a success",
                partial_text="".join(decoder.text), provider=wire.PROVIDER)
        if isinstance(e, timeouts):
            return ProviderTimeoutError(f"{wire.PROVIDER} did not answer within {self.config.timeout}s "
                                        f"(connection {self.name!r})", provider=wire.PROVIDER)
        if isinstance(e, transports + (auth_errors.TransportError,)):
            where = self.config.base_url or "Google"
            return ProviderConnectionError(f"cannot reach {wire.PROVIDER} at {where}: {type(e).__name__}: {e}",
                                           provider=wire.PROVIDER)
        return e

    # ---- completion ----------------------------------------------------------------------------------

    def _args(self, model: str, request: CompletionRequest) -> tuple[list[Any], dict[str, Any]]:
        wire.check_request(model, request, self.capabilities_of(model))
        return wire.generate_args(request, self._signatures)

    # ---- tokens ----------------------------------------------------------------------------------------

    def _count_args(self, model: str, request: CompletionRequest) -> tuple[list[Any], dict[str, Any]]:
        contents, config = wire.generate_args(request, self._signatures)
        if self.config.backend != "gemini":  # Vertex AI's countTokens takes the system instruction and tools
            return contents, {k: config[k] for k in ("system_instruction", "tools") if config.get(k)}
        # The Gemini API's countTokens takes contents only (the SDK refuses system_instruction and
        # tools there): they are counted as a first user turn, the same text give or take its framing.
        extra = []
        if config.get("system_instruction"):
            extra.append({"text": str(config["system_instruction"])})
        if config.get("tools"):
            extra.append({"text": json.dumps(_plain(config["tools"]))})
        return ([{"role": "user", "parts": extra}] if extra else []) + list(contents), {}

    def count_tokens(self, model: str, request: CompletionRequest) -> int:
        """Google's own count (``models.countTokens``)."""
        contents, config = self._count_args(model, request)
        try:
            resp = self._client().models.count_tokens(model=model, contents=contents, config=config or None)
        except Exception as e:  # noqa: BLE001 - mapped or re-raised unchanged
            raise self._error(e) from None
        return _token_count(resp)

    async def acount_tokens(self, model: str, request: CompletionRequest) -> int:
        contents, config = self._count_args(model, request)
        try:
            resp = await self._client().aio.models.count_tokens(model=model, contents=contents, config=config or None)
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None
        return _token_count(resp)

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        contents, config = self._args(model, request)
        try:
            resp = self._client().models.generate_content(model=model, contents=contents, config=config)
        except Exception as e:  # noqa: BLE001 - mapped or re-raised unchanged
            # `from None`: the transports' exceptions hold the request, whose headers carry the credential
            raise self._error(e) from None
        return wire.parse_response(resp, model, self._signatures)

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        contents, config = self._args(model, request)
        try:
            resp = await self._client().aio.models.generate_content(model=model, contents=contents, config=config)
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None
        return wire.parse_response(resp, model, self._signatures)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        # validated here, not on first next(): a bad request fails where it is made
        return self._events(model, *self._args(model, request))

    def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:  # type: ignore[override]
        return self._aevents(model, *self._args(model, request))

    def _events(self, model: str, contents: list[Any], config: dict[str, Any]) -> Iterator[StreamEvent]:
        decoder = wire.StreamDecoder(model, self._signatures)
        try:
            for resp in self._client().models.generate_content_stream(model=model, contents=contents, config=config):
                yield from decoder.feed(resp)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, decoder) from None
        yield decoder.footer()

    async def _aevents(self, model: str, contents: list[Any], config: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        decoder = wire.StreamDecoder(model, self._signatures)
        try:
            stream = await self._client().aio.models.generate_content_stream(model=model, contents=contents,
                                                                             config=config)
            async for resp in stream:
                for event in decoder.feed(resp):
                    yield event
        except Exception as e:  # noqa: BLE001
            raise self._error(e, decoder) from None
        yield decoder.footer()

    # ---- embeddings ----------------------------------------------------------------------------------

    def _batches(self, request: EmbeddingRequest) -> list[list[str]]:
        size = self.config.embedding_batch_size
        return [request.texts[i:i + size] for i in range(0, len(request.texts), size)]

    def _embedding(self, model: str, responses: list[Any]) -> EmbeddingResponse:
        vectors = [list(e.values or []) for r in responses for e in r.embeddings or []]
        usage = sum((wire.embed_usage(r) for r in responses), Usage())
        return EmbeddingResponse(embeddings=vectors, usage=usage, model=model)

    # multimodalembedding (texts and images, one per call) answers only Vertex's predict with
    # ``instances: [{"text"} | {"image": {"bytesBase64Encoded"}}]``; the SDK's embed_content sends
    # ``content`` instances there, which it refuses, so these bodies go through the SDK's own request
    # method (its credentials, base_url, project/location path and error types all apply).

    def _multimodal_bodies(self, model: str, request: EmbeddingRequest) -> list[dict[str, Any]]:
        if self.config.backend != "vertex":
            raise CapabilityError(f"{model} is offered on Vertex AI only, not on the Gemini API")
        dims = request.dimensions
        if dims is not None and dims not in MULTIMODAL_DIMENSIONS:
            raise SettingsError(f"{model} makes vectors of {MULTIMODAL_DIMENSIONS}, not dimensions={dims}",
                                ["dimensions"])
        params = {"parameters": {"dimension": dims}} if dims else {}
        instances: list[dict[str, Any]] = (
            [{"image": {"bytesBase64Encoded": img.base64, "mimeType": img.mime_type}} for img in request.images]
            or [{"text": t} for t in request.texts])
        return [{"instances": [inst], **params} for inst in instances]

    @staticmethod
    def _multimodal_vectors(model: str, answers: list[Any]) -> EmbeddingResponse:
        vectors = []
        for a in answers:
            pred = (json.loads(a.body or "{}").get("predictions") or [{}])[0]
            vec = pred.get("imageEmbedding") or pred.get("textEmbedding")
            if vec is None:
                raise ProviderError(f"{model} answered without an embedding", provider="vertex")
            vectors.append([float(x) for x in vec])
        return EmbeddingResponse(embeddings=vectors, model=model)

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        if _is_multimodal(model):
            bodies = self._multimodal_bodies(model, request)
            api = self._client()._api_client
            try:
                answers = [api.request("post", f"publishers/google/models/{model}:predict", b) for b in bodies]
            except Exception as e:  # noqa: BLE001
                raise self._error(e) from None
            return self._multimodal_vectors(model, answers)
        if request.images:
            raise CapabilityError(f"{model} does not embed images; multimodalembedding@001 does (Vertex AI)")
        config = wire.embed_config(request.input_type, request.dimensions)
        client = self._client()
        try:
            out = [client.models.embed_content(model=model, contents=batch, config=config)
                   for batch in self._batches(request)]
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None
        return self._embedding(model, out)

    async def aembed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        if _is_multimodal(model):
            bodies = self._multimodal_bodies(model, request)
            api = self._client()._api_client
            try:
                answers = [await api.async_request("post", f"publishers/google/models/{model}:predict", b)
                           for b in bodies]
            except Exception as e:  # noqa: BLE001
                raise self._error(e) from None
            return self._multimodal_vectors(model, answers)
        if request.images:
            raise CapabilityError(f"{model} does not embed images; multimodalembedding@001 does (Vertex AI)")
        config = wire.embed_config(request.input_type, request.dimensions)
        client = self._client()
        try:
            out = [await client.aio.models.embed_content(model=model, contents=batch, config=config)
                   for batch in self._batches(request)]
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None
        return self._embedding(model, out)

    # ---- images --------------------------------------------------------------------------------------

    def _image_config(self, model: str, request: ImageGenerationRequest) -> tuple[dict[str, Any], Any]:
        if self.config.backend != "vertex":
            raise CapabilityError("Imagen is offered on Vertex AI only (google-genai has no Gemini API path for it)")
        t = ImageTranslation(wire.PROVIDER, model, request)
        return wire.image_config(model, request, t), t

    @staticmethod
    def _images(resp: Any, model: str) -> ImageGenerationResponse:
        wire.check_images(resp, model)
        return ImageGenerationResponse(
            images=[GeneratedImage(data=g.image.image_bytes, mime_type=g.image.mime_type or "image/png")
                    for g in resp.generated_images if g.image is not None and g.image.image_bytes], model=model)

    def _edit(self, model: str, request: ImageGenerationRequest) -> tuple[list[Any], dict[str, Any], Any]:
        if self.config.backend != "vertex":
            raise CapabilityError("Imagen is offered on Vertex AI only (google-genai has no Gemini API path for it)")
        t = ImageTranslation(wire.PROVIDER, model, request)
        refs, config = wire.edit_request(model, request, t)
        return refs, config, t

    def generate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        if wire.is_edit_model(model):
            refs, config, t = self._edit(model, request)
            resp = self._call_edit(self._client().models.edit_image, model, request, refs, config)
        else:
            config, t = self._image_config(model, request)
            resp = self._call_generate(self._client().models.generate_images, model, request, config)
        return t.finish(self._images(resp, model))

    async def agenerate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        if wire.is_edit_model(model):
            refs, config, t = self._edit(model, request)
            resp = await self._acall(self._client().aio.models.edit_image(
                model=model, prompt=request.prompt, reference_images=refs, config=config))
        else:
            config, t = self._image_config(model, request)
            resp = await self._acall(self._client().aio.models.generate_images(
                model=model, prompt=request.prompt, config=config))
        return t.finish(self._images(resp, model))

    def _call_generate(self, fn: Any, model: str, request: ImageGenerationRequest, config: dict[str, Any]) -> Any:
        try:
            return fn(model=model, prompt=request.prompt, config=config)
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None

    def _call_edit(self, fn: Any, model: str, request: ImageGenerationRequest, refs: list[Any],
                   config: dict[str, Any]) -> Any:
        try:
            return fn(model=model, prompt=request.prompt, reference_images=refs, config=config)
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None

    async def _acall(self, pending: Any) -> Any:
        try:
            return await pending
        except Exception as e:  # noqa: BLE001
            raise self._error(e) from None



def _plain(value: Any) -> Any:
    """SDK objects (pydantic) inside a config -> JSON-ready data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _token_count(resp: Any) -> int:
    n = getattr(resp, "total_tokens", None)
    if not isinstance(n, int):
        raise ProviderError(f"{wire.PROVIDER} answered countTokens without totalTokens", provider=wire.PROVIDER)
    return n
