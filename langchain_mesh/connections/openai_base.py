"""The base of every connection that calls an OpenAI-wire service through the official ``openai`` SDK.

The SDK does what it is good at: auth headers (API key, Azure's ``api-key`` or Entra bearer), Azure's
deployment URLs and ``api-version``, connection pooling, timeouts and typed HTTP errors. We ask it
for the raw HTTP response (``cast_to=Response``) and read the JSON ourselves with
:mod:`.openai_wire`: the SDK's parameter transforms and typed models would cost more than the rest
of the mesh together, and we would then translate them a second time. Retries are off in the SDK
(``max_retries=0``): the mesh's retry policy retries every provider the same way.

A subclass is a few lines: its :class:`Dialect`, its config model, how to build the SDK client
(:meth:`client_kwargs`) and which models it offers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, ClassVar, Iterator, Optional

from pydantic import Field

from ..config import ConnectionConfig, Secret, resolve_optional
from ..errors import (
    CapabilityError,
    ConfigError,
    ProviderConnectionError,
    ProviderTimeoutError,
    StreamInterruptedError,
    error_for_status,
    parse_retry_after,
)
from ..schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageGenerationRequest,
    ImageGenerationResponse,
    StreamEvent,
)
from .base import Connection
from .openai_wire import (
    ChunkReader,
    Dialect,
    aiter_sse_data,
    chat_body,
    embedding_bodies,
    image_body,
    iter_sse_data,
    parse_chat_completion,
    parse_embeddings,
    parse_images,
    provider_message,
)

__all__ = ["OpenAIWireConfig", "OpenAIWireConnection"]


class OpenAIWireConfig(ConnectionConfig):
    api_key: Optional[Secret] = None
    base_url: Optional[str] = None
    #: extra headers on every request (an APIM subscription key, a tenant id); values may be secrets
    default_headers: dict[str, Secret] = Field(default_factory=dict)
    #: silently drop seed settings the service has no parameter for, instead of failing
    drop_unsupported_settings: bool = False
    #: inputs per embeddings request (lowered to the service's cap when larger)
    embedding_batch_size: int = Field(default=2048, ge=1)


def _loads(data: Any) -> Any:
    try:
        from jiter import from_json  # the openai SDK's own dependency, 2-3x faster than json

        return from_json(data if isinstance(data, bytes) else data.encode())
    except ImportError:  # pragma: no cover - jiter ships with the SDK
        return json.loads(data)


def _http() -> Any:
    """The HTTP library the installed SDK is built on (``httpx2`` for openai>=3, ``httpx`` before)."""
    from openai import _base_client

    return getattr(_base_client, "httpx2", None) or _base_client.httpx


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise CapabilityError("this connection needs the openai SDK: pip install 'langchain-mesh[openai]'") from None
    return openai


class OpenAIWireConnection(Connection):
    config_model: ClassVar[type[ConnectionConfig]] = OpenAIWireConfig
    dialect: ClassVar[Dialect] = Dialect()

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._clients: dict[str, Any] = {}
        self._aclients: dict[str, Any] = {}
        self._response_cls: Any = None

    # ---- what subclasses adapt ------------------------------------------------------------------

    def client_kwargs(self, model: str, is_async: bool) -> dict[str, Any]:
        """Constructor arguments of the SDK client for ``model`` (credentials resolved here, lazily)."""
        cfg: OpenAIWireConfig = self.config  # type: ignore[assignment]
        return {"api_key": self._secret(cfg.api_key, "api_key"), "base_url": cfg.base_url,
                "default_headers": self._headers()}

    def client_class(self, openai: Any, is_async: bool) -> Any:
        return openai.AsyncOpenAI if is_async else openai.OpenAI

    def client_key(self, model: str) -> str:
        """Models sharing a key share a client (azure_llm has one endpoint, so one client, per model)."""
        return ""

    def wire_model(self, model: str) -> str:
        """The ``model`` field sent for an LLM id's model part."""
        return model

    # ---- helpers for subclasses ---------------------------------------------------------------------

    def _secret(self, value: Optional[Secret], key: str, required: bool = True) -> Optional[str]:
        where = f"connections.{self.name}.{key}"
        if value is None:
            if required:
                raise ConfigError(f"{where} is missing: the {self.type_name} connection needs it", [(where, "missing")])
            return None
        return resolve_optional(value, where)

    def _headers(self) -> dict[str, str]:
        cfg: OpenAIWireConfig = self.config  # type: ignore[assignment]
        return {k: v.get(f"connections.{self.name}.default_headers.{k}") for k, v in cfg.default_headers.items()}

    # ---- clients ----------------------------------------------------------------------------------------

    def _make_client(self, model: str, is_async: bool) -> Any:
        openai = _import_openai()
        if self._response_cls is None:
            self._response_cls = _http().Response
        kwargs = {k: v for k, v in self.client_kwargs(model, is_async).items() if v is not None}
        return self.client_class(openai, is_async)(max_retries=0, timeout=self.config.timeout, **kwargs)

    def _client(self, model: str) -> Any:
        key = self.client_key(model)
        c = self._clients.get(key)
        if c is None:
            with self._lock:
                c = self._clients.get(key)
                if c is None:
                    c = self._clients[key] = self._make_client(model, False)
        return c

    def _aclient(self, model: str) -> Any:
        key = self.client_key(model)
        c = self._aclients.get(key)
        if c is None:
            with self._lock:
                c = self._aclients.get(key)
                if c is None:
                    c = self._aclients[key] = self._make_client(model, True)
        return c

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        # async clients close on their own loop; dropping them lets the pool be collected
        self._aclients.clear()

    # ---- errors -----------------------------------------------------------------------------------------

    def _error(self, e: BaseException, client: Any = None) -> BaseException:
        """The SDK's exception as the mesh's error type; anything else unchanged."""
        openai = _import_openai()
        provider = self.dialect.provider
        if isinstance(e, openai.APIStatusError):
            return error_for_status(e.status_code, provider_message(e.body, e.message), provider=provider,
                                    retry_after=parse_retry_after(e.response.headers))
        if isinstance(e, openai.APITimeoutError):
            return ProviderTimeoutError(f"{provider} did not answer within {self.config.timeout}s "
                                        f"(connection {self.name!r}; raise its timeout: if the model is slow)",
                                        provider=provider)
        if isinstance(e, openai.APIConnectionError):
            where = f" at {client.base_url}" if client is not None else ""
            cause = e.__cause__ or e
            return ProviderConnectionError(f"cannot reach {provider}{where}: {cause}", provider=provider)
        return e

    def _interrupted(self, e: BaseException, reader: ChunkReader) -> StreamInterruptedError:
        return StreamInterruptedError(
            f"the {self.dialect.provider} stream broke before it finished ({type(e).__name__}: {e}); "
            "the partial answer was not returned as a success",
            provider=self.dialect.provider, partial_text="".join(reader.text))

    # ---- completion -----------------------------------------------------------------------------------

    def _chat_body(self, model: str, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        return chat_body(self.wire_model(model), request, self.dialect, stream=stream,
                         drop_unsupported=self.config.drop_unsupported_settings)  # type: ignore[attr-defined]

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        body = self._chat_body(model, request, False)
        client = self._client(model)
        try:
            resp = client.post("/chat/completions", body=body, cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return parse_chat_completion(_loads(resp.content), self.dialect.provider)

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        body = self._chat_body(model, request, False)
        client = self._aclient(model)
        try:
            resp = await client.post("/chat/completions", body=body, cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return parse_chat_completion(_loads(resp.content), self.dialect.provider)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        body = self._chat_body(model, request, True)
        client = self._client(model)
        try:
            resp = client.post("/chat/completions", body=body, cast_to=self._response_cls, stream=True)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        reader = ChunkReader(self.dialect.provider)
        transport_error = _http().TransportError
        try:
            for data in iter_sse_data(resp.iter_lines()):
                chunk = reader.feed(_loads(data))
                if chunk is not None:
                    yield chunk
        except transport_error as e:
            raise self._interrupted(e, reader) from None
        finally:
            resp.close()
        yield reader.footer()

    async def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        body = self._chat_body(model, request, True)
        client = self._aclient(model)
        try:
            resp = await client.post("/chat/completions", body=body, cast_to=self._response_cls, stream=True)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        reader = ChunkReader(self.dialect.provider)
        transport_error = _http().TransportError
        try:
            async for data in aiter_sse_data(resp.aiter_lines()):
                chunk = reader.feed(_loads(data))
                if chunk is not None:
                    yield chunk
        except transport_error as e:
            raise self._interrupted(e, reader) from None
        finally:
            await resp.aclose()
        yield reader.footer()

    # ---- embeddings and images ------------------------------------------------------------------------

    def _embedding_bodies(self, model: str, request: EmbeddingRequest) -> list[dict[str, Any]]:
        if not request.texts:
            return []
        return embedding_bodies(self.wire_model(model), request, self.dialect,
                                self.config.embedding_batch_size)  # type: ignore[attr-defined]

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        client = self._client(model)
        out = []
        for body in self._embedding_bodies(model, request):
            try:
                resp = client.post("/embeddings", body=body, cast_to=self._response_cls)
            except Exception as e:  # noqa: BLE001
                raise self._error(e, client) from None
            out.append(_loads(resp.content))
        return parse_embeddings(out)

    async def aembed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        client = self._aclient(model)
        sem = asyncio.Semaphore(4)  # batches in parallel, but not a burst that trips the rate limit

        async def one(body: dict[str, Any]) -> Any:
            async with sem:
                try:
                    resp = await client.post("/embeddings", body=body, cast_to=self._response_cls)
                except Exception as e:  # noqa: BLE001
                    raise self._error(e, client) from None
                return _loads(resp.content)

        return parse_embeddings(list(await asyncio.gather(*(one(b) for b in self._embedding_bodies(model, request)))))

    def generate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        client = self._client(model)
        try:
            resp = client.post("/images/generations", body=image_body(self.wire_model(model), request),
                               cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return parse_images(_loads(resp.content), fetch=self._fetch)

    def _fetch(self, url: str) -> bytes:
        # A plain GET without the SDK: image URLs point at blob storage, which must not see our key.
        r = _http().get(url, timeout=self.config.timeout, follow_redirects=True)
        if r.status_code >= 400:
            raise error_for_status(r.status_code, f"downloading the generated image failed: {r.text[:200]}",
                                   provider=self.dialect.provider)
        return r.content

