"""``cohere``: Cohere's chat (v2) and embed APIs through the official ``cohere`` SDK.

    co:
      type: cohere
      api_key: "{{env:CO_API_KEY}}"            # the default
      # base_url: https://api.cohere.com        # or a proxy, a private deployment, a test server
      # embedding_input_type: search_document  # input_type when a request gives none

Chat (``ClientV2.chat`` / ``chat_stream``): system/user/assistant/tool messages, images for vision
models, tools and tool results with their ids, ``toolChoice`` (``required``/``none``; a named tool
is sent as the only tool with ``REQUIRED``), JSON output with or without a schema, ``temperature``,
``topP`` (``p``), ``topK`` (``k``), ``maxOutputTokens``, ``stopSequences``, ``seed``, penalties and
``logProbs``. Cohere has no ``logitBias`` and no top alternatives per token (``topLogProbs``):
those are refused with a :class:`SettingsError`. Streams yield text (including the tool plan) and
partial tool calls as Cohere sends them; a stream without ``message-end`` is interrupted.
Embed: ``input_type`` from the request (query/document) or the connection default, float
vectors, at most 96 texts a call (larger requests are batched), ``output_dimension`` on embed-v4.

SDK retries are off (the mesh retries), ``timeout`` is the SDK's. One sync client, and one async
client per event loop (their connection pools belong to the loop that opened them).
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator, Iterator, Optional

from pydantic import Field

from ...config import ConnectionConfig, Secret
from ...errors import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    error_for_status,
    parse_retry_after,
)
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamEvent,
    Usage,
)
from . import wire
from ..base import Connection
from ..transport.clients import PerLoopClients

__all__ = ["CohereConnection", "CohereConfig"]


class CohereConfig(ConnectionConfig):
    type: str = "cohere"
    api_key: Secret = Field(default_factory=lambda: Secret("{{env:CO_API_KEY}}"))
    base_url: Optional[str] = None
    embedding_input_type: str = Field(default="search_document", pattern="^(" + "|".join(wire.INPUT_TYPES) + ")$")


_CHAT = ModelCapabilities(tools=True, tool_choice=True, json_output=True, structured_output=True, log_probs=True)
_LEGACY = ModelCapabilities(log_probs=True)  # the seed's command / command-light: no tools, no JSON mode
_VISION = ModelCapabilities(image_input=True, json_output=True, log_probs=True)
_CHAT_MODELS = [
    ("command-a-03-2025", _CHAT, 256000, "Command A"),
    ("command-r-plus-08-2024", _CHAT, 128000, "Command R+"),
    ("command-r-08-2024", _CHAT, 128000, "Command R"),
    ("command-r7b-12-2024", _CHAT, 128000, "Command R7B"),
    ("command", _LEGACY, 4096, "Command"),
    ("command-light", _LEGACY, 4096, "Command Light"),
    ("command-a-vision-07-2025", _VISION, 128000, "Command A Vision (images)"),
]
#: embedding models and their default vector sizes
EMBEDDING_DIMENSIONS = {"embed-v4.0": 1536, "embed-english-v3.0": 1024, "embed-multilingual-v3.0": 1024,
                        "embed-english-light-v3.0": 384, "embed-multilingual-light-v3.0": 384}


def _guess_capabilities(model: str) -> ModelCapabilities:
    if model in EMBEDDING_DIMENSIONS or model.startswith("embed-"):
        # images are embedded by the v3.0 models and newer (Cohere's /v2/embed ``images``)
        return ModelCapabilities(streaming=False, image_embedding=bool(re.match(r"embed-(v4|.*v3\.0)", model)))
    if "vision" in model:
        return _VISION
    if model in ("command", "command-light", "command-nightly", "command-light-nightly"):
        return _LEGACY
    return _CHAT


def _transport_error(e: Exception, base: str) -> ProviderError:
    import httpx

    if isinstance(e, httpx.TimeoutException):
        return ProviderTimeoutError(f"{wire.PROVIDER} at {base} did not answer in time ({type(e).__name__})",
                                    provider=wire.PROVIDER)
    return ProviderConnectionError(f"cannot reach {wire.PROVIDER} at {base}: {e or type(e).__name__}",
                                   provider=wire.PROVIDER)


class CohereConnection(Connection):
    type_name = "cohere"
    embeds_images = True
    config_model = CohereConfig
    config: CohereConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        # (SDK client, its httpx client): we make the httpx client so close() can close its pool
        self._clients = PerLoopClients(self._make_client, lambda pair: pair[1].close(), lambda pair: pair[1].aclose())

    # ---- models ------------------------------------------------------------------------------------------

    def default_models(self) -> list[ModelInfo]:
        chat = [ModelInfo(id=mid, purposes=[Purpose.GENERIC_COMPLETION], description=f"{desc} on Cohere",
                          capabilities=caps.model_copy(update={"context_window": ctx}))
                for mid, caps, ctx, desc in _CHAT_MODELS]
        emb = [ModelInfo(id=mid, purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION], capabilities=_guess_capabilities(mid),
                         description=f"{mid} ({dims}-dim embeddings) on Cohere")
               for mid, dims in EMBEDDING_DIMENSIONS.items()]
        return chat + emb

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return _guess_capabilities(model)


    # ---- clients --------------------------------------------------------------------------------------------

    @property
    def _base(self) -> str:
        return (self.config.base_url or "https://api.cohere.com").rstrip("/")

    def _kwargs(self) -> dict[str, Any]:
        return {"api_key": self.config.api_key.get(f"connections.{self.name}.api_key"), "base_url": self._base,
                "timeout": self.config.timeout, "max_retries": 0, "client_name": "langchain-mesh"}

    @staticmethod
    def _sdk() -> Any:
        try:
            import cohere
        except ImportError:
            raise ConfigError("the cohere connection needs the cohere SDK: pip install 'langchain-mesh[cohere]'") \
                from None
        return cohere

    def _make_client(self, is_async: bool) -> tuple[Any, Any]:
        import httpx

        sdk = self._sdk()
        if is_async:
            http: Any = httpx.AsyncClient(timeout=self.config.timeout)
            return sdk.AsyncClientV2(**self._kwargs(), httpx_client=http), http
        http = httpx.Client(timeout=self.config.timeout)
        return sdk.ClientV2(**self._kwargs(), httpx_client=http), http

    # ---- errors -------------------------------------------------------------------------------------------

    def _mapped(self, e: Exception, decoder: Optional[wire.StreamDecoder] = None) -> Exception:
        """The mesh error for an SDK or transport failure; our own errors and bugs pass unchanged."""
        import httpx
        from cohere.core.api_error import ApiError

        if isinstance(e, ApiError):
            headers = {k.lower(): v for k, v in (e.headers or {}).items()}
            return error_for_status(e.status_code or 500, wire.error_message(e.body), provider=wire.PROVIDER,
                                    retry_after=parse_retry_after(headers))
        if isinstance(e, httpx.HTTPError):
            if decoder is not None and decoder.events:  # the body broke after the stream began
                return decoder.interrupted(f"{type(e).__name__}: {e}")
            return _transport_error(e, self._base)
        return e

    # ---- completion -----------------------------------------------------------------------------------------

    def _args(self, model: str, request: CompletionRequest) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
        wire.check_request(model, request, self.capabilities_of(model))
        extra = request.settings.extra
        options = {"additional_body_parameters": extra} if extra else None
        return wire.chat_arguments(model, request), options

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        args, options = self._args(model, request)
        try:
            resp = self._clients.sync()[0].chat(**args, request_options=options)
        except Exception as e:
            raise self._mapped(e) from None
        return wire.parse_chat(resp.dict(by_alias=True, exclude_none=True), model)

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        args, options = self._args(model, request)
        try:
            resp = await self._clients.running_loop()[0].chat(**args, request_options=options)
        except Exception as e:
            raise self._mapped(e) from None
        return wire.parse_chat(resp.dict(by_alias=True, exclude_none=True), model)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        args, options = self._args(model, request)  # a bad request fails here, not on the first next()
        return self._events(model, args, options)

    def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:  # type: ignore[override]
        args, options = self._args(model, request)
        return self._aevents(model, args, options)

    def _events(self, model: str, args: dict[str, Any], options: Any) -> Iterator[StreamEvent]:
        decoder = wire.StreamDecoder(model)
        try:
            for ev in self._clients.sync()[0].chat_stream(**args, request_options=options):
                yield from decoder.feed(ev.dict(by_alias=True, exclude_none=True))
        except Exception as e:
            raise self._mapped(e, decoder) from None
        decoder.check_ended()

    async def _aevents(self, model: str, args: dict[str, Any], options: Any) -> AsyncIterator[StreamEvent]:
        decoder = wire.StreamDecoder(model)
        try:
            async for ev in self._clients.running_loop()[0].chat_stream(**args, request_options=options):
                for out in decoder.feed(ev.dict(by_alias=True, exclude_none=True)):
                    yield out
        except Exception as e:
            raise self._mapped(e, decoder) from None
        decoder.check_ended()

    # ---- embeddings -------------------------------------------------------------------------------------

    def _embed_calls(self, model: str, request: EmbeddingRequest) -> list[dict[str, Any]]:
        dims_ok = model.startswith("embed-v4")
        if request.images:  # one image a call: the API's limit for ``images``
            return [wire.image_embed_arguments(model, image, request, dims_ok) for image in request.images]
        return [wire.embed_arguments(model, request.texts[i:i + wire.EMBED_BATCH], request,
                                     self.config.embedding_input_type, dims_ok)
                for i in range(0, len(request.texts), wire.EMBED_BATCH)]

    @staticmethod
    def _merge(model: str, parts: list[tuple[list[list[float]], Usage]]) -> EmbeddingResponse:
        vectors = [v for vs, _ in parts for v in vs]
        usage = Usage(input_tokens=sum(u.input_tokens for _, u in parts))
        return EmbeddingResponse(embeddings=vectors, usage=usage, model=model)

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        parts = []
        for args in self._embed_calls(model, request):
            try:
                resp = self._clients.sync()[0].embed(**args)
            except Exception as e:
                raise self._mapped(e) from None
            parts.append(wire.parse_embeddings(resp.dict(by_alias=True, exclude_none=True)))
        return self._merge(model, parts)

    async def aembed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        parts = []
        for args in self._embed_calls(model, request):
            try:
                resp = await self._clients.running_loop()[0].embed(**args)
            except Exception as e:
                raise self._mapped(e) from None
            parts.append(wire.parse_embeddings(resp.dict(by_alias=True, exclude_none=True)))
        return self._merge(model, parts)

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._clients.close()
