"""The base of every connection that calls an OpenAI-wire service through the official ``openai`` SDK.

The SDK does what it is good at: auth headers (API key, Azure's ``api-key`` or Entra bearer), Azure's
deployment URLs and ``api-version``, connection pooling, timeouts and typed HTTP errors. We ask it
for the raw HTTP response (``cast_to=Response``) and read the JSON ourselves with
:mod:`.openai_wire`: the SDK's parameter transforms and typed models would cost more than the rest
of the mesh together, and we would then translate them a second time. Retries are off in the SDK
(``max_retries=0``): the mesh's retry policy retries every provider the same way.

The async path (``acomplete``/``astream``/``aembed``, and the gateway's pass-through) sends over
:mod:`.http1`, a lean keep-alive HTTP/1.1 client, one per connection and event loop, when httptools
is installed (the ``server`` extra) and no proxy is configured. Behind ``mesh serve`` a pass-through
request cost the gateway ~166 µs of CPU with a pooled aiohttp session and ~65 µs with this client
(bench/gateway.py); the SDK's async client costs several times more than aiohttp (DESIGN.md), and an
async call through the mesh takes about a quarter of ``AsyncOpenAI``'s latency (bench/overhead.py).
The SDK client still decides *what* is sent: the URL and headers
come from its own request builder (cached; rebuilt per request when the credential is a token
provider, which the SDK calls before every request), so auth, Azure deployment URLs and
``api-version`` stay exactly the SDK's. Only the SDK's telemetry headers (``x-stainless-*``, see
:data:`_TELEMETRY`) are left out, unless ``default_headers`` names one.

A subclass is a few lines: its :class:`Dialect`, its config model, how to build the SDK client
(:meth:`client_kwargs`) and which models it offers.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any, AsyncIterator, ClassVar, Iterator, Optional

from pydantic import Field

from ...config import ConnectionConfig, ImageDownloadConfig, Secret, resolve_optional
from ...errors import (
    CapabilityError,
    ConfigError,
    MeshError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamInterruptedError,
    error_for_status,
    parse_retry_after,
)
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageGenerationRequest,
    ImageGenerationResponse,
    StreamEvent,
)
from ..transport import http1
from ..base import Connection, Passthrough
from ..transport.clients import PerLoopClients
from ..transport.http1 import HTTPClient, HTTPError, Target
from .images import image_plan
from .wire import (
    ChunkReader,
    Dialect,
    aiter_sse_data,
    chat_body,
    embedding_bodies,
    iter_sse_data,
    parse_chat_completion,
    parse_embeddings,
    parse_images,
    parse_usage,
    provider_message,
)

__all__ = ["OpenAIWireConfig", "OpenAIWireConnection", "ForwardedBody"]


class OpenAIWireConfig(ConnectionConfig):
    api_key: Optional[Secret] = None
    base_url: Optional[str] = None
    #: extra headers on every request (an APIM subscription key, a tenant id); values may be secrets
    default_headers: dict[str, Secret] = Field(default_factory=dict)
    #: silently drop seed settings the service has no parameter for, instead of failing
    drop_unsupported_settings: bool = False
    #: inputs per embeddings request (lowered to the service's cap when larger)
    embedding_batch_size: int = Field(default=2048, ge=1)
    #: which image URLs an images answer may make the mesh download (see transport/image_fetch.py)
    image_download: ImageDownloadConfig = Field(default_factory=ImageDownloadConfig)


def _loads(data: Any) -> Any:
    """An answer's JSON; a body that is not JSON is the provider's fault: a typed error."""
    try:
        try:
            from jiter import from_json  # the openai SDK's own dependency, 2-3x faster than json
        except ImportError:  # pragma: no cover - jiter ships with the SDK
            return json.loads(data)
        return from_json(data if isinstance(data, bytes) else data.encode())
    except ValueError as e:
        raise ProviderError(f"the provider answered with a body that is not JSON ({e})",
                            provider_message=_text(data[:200])) from None


def _text(data: Any) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)


def _dumps(body: Any) -> bytes:
    try:
        import orjson
    except ImportError:
        return json.dumps(body).encode()
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def lean_transport() -> bool:
    """Whether the async path can use :mod:`.http1`: httptools is installed (the ``server`` extra) and
    the environment names no proxy (which only the SDK's client honours)."""
    if http1.httptools is None:
        return False
    import urllib.request

    return not urllib.request.getproxies()


# Methods that build or send a request: a subclass overriding one gets no pass-through (its requests
# are not what the client sent)
_WIRE_METHODS = ("acomplete", "astream", "aembed", "_chat_body", "_embedding_bodies", "_apost", "_send", "_target")
# OpenAI's own request key of each seed setting (topK as vLLM and most compatible servers spell it)
_OPENAI_KEYS = Dialect(unsupported=frozenset(), extra_keys={"topK": "top_k"}).setting_keys


# Headers of the SDK's built request the HTTP/1.1 client sets itself (the body's length, the host) or
# must not send (httpx advertises br/zstd encodings; the lean client asks for none)
_OWN_HEADERS = frozenset({"content-length", "host", "accept-encoding", "connection", "transfer-encoding"})
# The SDK's telemetry headers (x-stainless-lang, -os, -arch, -runtime-version, -retry-count...): they describe
# this machine and the Python SDK, which behind mesh serve is neither the caller nor what it runs, and
# none changes what a server answers. The lean transport leaves them out: every upstream parses them on
# every request (aiohttp's C parser: +1-3 µs a request for these nine lines, of ~6; under wrk, straight at
# bench/gateway.py's aiohttp upstream, 59-61 µs a request without them, 64-66 with them; behind the
# gateway the difference was within that machine's noise).
_TELEMETRY = "x-stainless-"


async def _sse_lines(resp: Any) -> AsyncIterator[str]:
    """Lines of a streamed body, read in whatever pieces arrive (no line-length limit)."""
    tail = b""
    while True:
        piece = await resp.readany()
        if not piece:
            break
        *lines, tail = (tail + piece).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if tail:
        yield tail.rstrip(b"\r").decode()


async def _close_all(clients: dict[str, Any]) -> None:
    for c in clients.values():
        await c.close()


def _safe_loads(raw: bytes) -> Any:
    """An error body: its JSON, else its text (provider_message reads either)."""
    try:
        return _loads(raw)
    except (ValueError, ProviderError):
        return raw.decode(errors="replace")[:500]


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


class ForwardedBody:
    """The body of a forwarded streaming answer: ``await read()`` gives each piece as it arrives (``b""``
    at the end); ``close()`` releases the response (before its end: its connection is closed, so the
    upstream stops), also when nothing was read yet."""

    __slots__ = ("_resp", "_provider")

    def __init__(self, resp: Any, provider: str):
        self._resp = resp
        self._provider = provider

    async def read(self) -> bytes:
        try:
            return await self._resp.readany()
        except (HTTPError, TimeoutError) as e:
            raise StreamInterruptedError(
                f"the {self._provider} stream broke before it finished ({type(e).__name__}: {e}); "
                "the partial answer was not returned as a success", provider=self._provider) from None

    def close(self) -> None:
        self._resp.release()


class OpenAIWireConnection(Connection):
    config_model: ClassVar[type[ConnectionConfig]] = OpenAIWireConfig
    dialect: ClassVar[Dialect] = Dialect()

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._clients: dict[str, Any] = {}
        # the SDK's async clients, per event loop (their pools belong to it), each a dict by client key
        self._aclients = PerLoopClients(lambda _: {}, lambda _: None, _close_all)
        self._response_cls: Any = None
        # the lean async transport: one HTTPClient per event loop; a Target per client key, path, model
        self._http = PerLoopClients(self._make_http, lambda _: None, lambda c: c.close())
        self._targets: dict[tuple[str, str, str], Target] = {}
        self._lean = lean_transport()
        self._token_auth: dict[str, bool] = {}  # client key -> credential is a per-request token provider

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

    def tokenizer(self, model: str) -> Optional[Any]:
        """OpenAI's models (on OpenAI or Azure OpenAI, or any service when the name is OpenAI's):
        their tiktoken encoding, offline (:mod:`langchain_mesh.tokens`). Other models behind this wire
        format (Mistral, Llama on Databricks or vLLM...) have tokenizers of their own: None, so their
        counts are the documented estimate."""
        from ...tokens import openai_encoding, openai_encoding_name

        name = self.underlying_model(model)
        if openai_encoding_name(name) is None and self.dialect.provider not in ("openai", "azure_openai"):
            return None
        return openai_encoding(name)

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
        if is_async:
            self._token_auth[self.client_key(model)] = callable(kwargs.get("api_key")) or \
                "azure_ad_token_provider" in kwargs
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
        clients = self._aclients.running_loop()
        c = clients.get(key)
        if c is None:
            with self._lock:
                c = clients.get(key)
                if c is None:
                    c = clients[key] = self._make_client(model, True)
        return c

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
        self._aclients.close()
        self._targets.clear()
        self._http.close()

    # ---- the lean async transport (http1) --------------------------------------------------------------

    def _make_http(self, is_async: bool) -> HTTPClient:
        t = self.config.timeout  # like the SDK's httpx client: connect, and each read, within the timeout
        return HTTPClient(connect_timeout=t, read_timeout=t)

    async def _target(self, model: str, path: str) -> Target:
        """``POST path`` with the URL and headers exactly as the SDK client builds them (cached, unless
        the credential is a token provider, which the SDK calls before every request)."""
        ckey = self.client_key(model)
        key = (ckey, path, model)
        target = self._targets.get(key)
        if target is not None:
            return target
        from openai._models import FinalRequestOptions

        client = self._aclient(model)
        # Azure routes by the body's model (its deployment); nothing else of the body matters here
        options = FinalRequestOptions.construct(method="post", url=path, json_data={"model": self.wire_model(model)})
        options = await client._prepare_options(options)  # calls a token provider, as the SDK does
        request = client._build_request(options)
        await client._prepare_request(request)
        own = {k.lower() for k in self.config.default_headers}  # (configured: sent whatever the name)
        target = Target("POST", str(request.url), [(k, v) for k, v in request.headers.items()
                                                   if k not in _OWN_HEADERS and (not k.startswith(_TELEMETRY) or k in own)])
        if not self._token_auth.get(ckey):
            self._targets[key] = target
        return target

    async def _send(self, model: str, path: str, body: bytes, stream: bool) -> Any:
        """POST ``body``: the answer's bytes, or (``stream``) the open :class:`~.http1.Response`; an
        error status, a timeout or a transport failure raised as the mesh's error."""
        # a cached target without another coroutine (the per-request path); else built (and cached) now
        target = self._targets.get((self.client_key(model), path, model)) or await self._target(model, path)
        try:
            resp = await self._http.running_loop().request(target, body, stream)
            if resp.status >= 400 or not stream:
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
                if resp.status >= 400:
                    raise self._status_error(resp.status, _safe_loads(raw), resp.headers)
                return raw
        except TimeoutError:
            raise self._timeout() from None
        except HTTPError as e:
            raise self._unreachable(e, target.url) from None
        return resp

    async def _apost(self, model: str, path: str, body: dict[str, Any]) -> Any:
        return _loads(await self._send(model, path, _dumps(body), False))

    async def aforward(self, model: str, path: str, body: bytes, stream: bool = False) -> Any:
        """``POST path`` with ``body`` (JSON bytes, sent as they are), for a gateway that forwards an
        OpenAI-wire request without translating it: the answer's bytes, or (``stream``) a
        :class:`ForwardedBody` yielding its pieces as they arrive. URL and headers are the SDK's, as
        for every other async call; errors are raised as the mesh's, as for every other call."""
        if not self._lean:
            raise CapabilityError("forwarding a request needs httptools (pip install 'langchain-mesh[server]') "
                                  "and no proxy in the environment")
        out = await self._send(model, path, body, stream)
        return ForwardedBody(out, self.dialect.provider) if stream else out

    def passthrough(self, model: str) -> Optional[Passthrough]:
        """Byte-level pass-through when this service takes OpenAI's own request as it is (at most the
        token-limit key renamed) and requests go over the lean transport; None otherwise (a subclass
        that changes how requests are built or sent, a dialect that departs further): translate."""
        if not self._lean:
            return None
        cls = type(self)
        if any(getattr(cls, m) is not getattr(OpenAIWireConnection, m) for m in _WIRE_METHODS):
            return None
        d = self.dialect
        if (d.tool_choice_required != "required" or d.seed_key != "seed" or not d.stream_usage
                or d.max_tokens_key not in ("max_tokens", "max_completion_tokens")
                or any(k == "maxOutputTokens" or _OPENAI_KEYS.get(k) != v for k, v in d.extra_keys.items())):
            return None
        cfg: OpenAIWireConfig = self.config  # type: ignore[assignment]

        async def prepare(path: str) -> None:
            await self._target(model, path)

        return Passthrough(
            wire="openai", provider=d.provider, wire_model=self.wire_model(model), token_limit_key=d.max_tokens_key,
            unsupported=frozenset(d.unsupported), drop_unsupported=bool(getattr(cfg, "drop_unsupported_settings", False)),
            embedding_batch=min(d.embedding_batch, getattr(cfg, "embedding_batch_size", d.embedding_batch)),
            embedding_base64=d.provider in ("openai", "azure_openai") and d.embedding_dimensions,
            send=partial(self.aforward, model), prepare=prepare, parse_usage=parse_usage)  # (no wrapper coroutine)

    async def _astream_lean(self, model: str, body: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        resp = await self._send(model, "/chat/completions", _dumps(body), True)
        reader = ChunkReader(self.dialect.provider)
        try:
            async for data in aiter_sse_data(_sse_lines(resp)):
                chunk = reader.feed(_loads(data))
                if chunk is not None:
                    yield chunk
        except (HTTPError, TimeoutError) as e:
            raise self._interrupted(e, reader) from None
        finally:
            resp.release()  # a body not read to its end closes the connection: the upstream stops
        yield reader.footer()

    # ---- errors -----------------------------------------------------------------------------------------

    def _error(self, e: BaseException, client: Any = None) -> BaseException:
        """The SDK's exception as the mesh's error type; anything else unchanged."""
        openai = _import_openai()
        if isinstance(e, openai.APIStatusError):
            return self._status_error(e.status_code, e.body, e.response.headers, e.message)
        if isinstance(e, openai.APITimeoutError):
            return self._timeout()
        if isinstance(e, openai.APIConnectionError):
            return self._unreachable(e.__cause__ or e, client.base_url if client is not None else None)
        return e

    def _status_error(self, status: int, body: Any, headers: Any, fallback: str = "") -> ProviderError:
        return error_for_status(status, provider_message(body, fallback or f"HTTP {status}"),
                                provider=self.dialect.provider, retry_after=parse_retry_after(headers))

    def _timeout(self) -> ProviderTimeoutError:
        provider = self.dialect.provider
        return ProviderTimeoutError(f"{provider} did not answer within {self.config.timeout}s "
                                    f"(connection {self.name!r}; raise its timeout: if the model is slow)",
                                    provider=provider)

    def _unreachable(self, cause: BaseException, where: Any = None) -> ProviderConnectionError:
        provider = self.dialect.provider
        at = f" at {where}" if where is not None else ""
        return ProviderConnectionError(f"cannot reach {provider}{at}: {cause}", provider=provider)

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
        if self._lean:
            return parse_chat_completion(await self._apost(model, "/chat/completions", body), self.dialect.provider)
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
        if self._lean:
            async for event in self._astream_lean(model, body):
                yield event
            return
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
        client = None if self._lean else self._aclient(model)
        sem = asyncio.Semaphore(4)  # batches in parallel, but not a burst that trips the rate limit

        async def one(body: dict[str, Any]) -> Any:
            async with sem:
                if client is None:
                    return await self._apost(model, "/embeddings", body)
                try:
                    resp = await client.post("/embeddings", body=body, cast_to=self._response_cls)
                except Exception as e:  # noqa: BLE001
                    raise self._error(e, client) from None
                return _loads(resp.content)

        return parse_embeddings(list(await asyncio.gather(*(one(b) for b in self._embedding_bodies(model, request)))))

    def generate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        """Generations, edits or variations (see :mod:`.images`); ``plan.calls`` requests for
        models that make one image a request."""
        plan = image_plan(self.wire_model(model), request, self.dialect.provider, family_hint=model)
        client = self._client(model)
        images, answer = [], None
        for _ in range(plan.calls):
            try:
                if plan.op == "generations":
                    resp = client.post("/images/generations", body=plan.body, cast_to=self._response_cls)
                else:  # multipart: the SDK encodes body and files as the images endpoints expect
                    resp = client.post(f"/images/{plan.op}", body=plan.body, files=plan.files,
                                       options={"headers": {"Content-Type": "multipart/form-data"}},
                                       cast_to=self._response_cls)
            except Exception as e:  # noqa: BLE001
                raise self._error(e, client) from None
            answer = parse_images(_loads(resp.content), fetch=self._fetch)
            images += answer.images
        assert answer is not None and plan.translation is not None
        answer.images = images
        return plan.translation.finish(answer)

    def _fetch(self, url: str) -> bytes:
        # A plain GET without the SDK (image URLs point at blob storage, which must not see our key),
        # under the connection's image_download policy: the URL is the provider's, not trusted
        from ..transport.image_fetch import fetch_image

        own = getattr(self.config, "base_url", None) or getattr(self.config, "endpoint", None)
        if own is not None and not isinstance(own, str):  # a Secret (Azure's endpoint may be a reference)
            try:
                own = own.get()
            except MeshError:
                own = None
        return fetch_image(_http(), url, self.config.image_download, own, self.config.timeout, self.dialect.provider)
