"""``anthropic``: Claude models over the Anthropic Messages API, through the official ``anthropic`` SDK::

    claude:                                      # anthropic:claude:claude-sonnet-4-5
      type: anthropic
      api_key: "{{env:ANTHROPIC_API_KEY}}"       # the default
      # base_url: https://proxy.example.com      # instead of https://api.anthropic.com (no /v1)
      # anthropic_version: "2023-06-01"          # the API version whose body this connection builds
      # default_max_tokens: 1024                 # max_tokens when a request sets no maxOutputTokens
      # default_headers: {anthropic-beta: "..."} # values may be secrets

The SDK does what it is good at: the ``x-api-key`` and ``anthropic-version`` headers, connection
pooling, timeouts and typed HTTP errors. The body is built and read here (:mod:`.anthropic_wire`) and
sent as JSON with ``cast_to=httpx.Response``, like the openai connections do: the SDK's typed models
would cost more than the rest of the mesh and be translated a second time. SDK retries are off
(``max_retries=0``): the mesh's retry policy retries every provider alike.

Settings: ``temperature`` (0 to 1 on this API), ``topK``, ``topP``, ``maxOutputTokens``
(``max_tokens``, which the API requires: a per-model default when unset), ``stopSequences``,
``tools``, ``toolChoice`` (``required`` is sent as ``any``) and ``responseFormat`` (a forced answer
tool, see :mod:`.anthropic_wire`; its input comes back as the text). ``extra`` adds body keys
(``metadata``, ``service_tier``...). The API has no parameter for penalties, ``logitBias``,
``logProbs`` or ``seed``: a request setting one is refused with a :class:`SettingsError` naming it
(``drop_unsupported_settings: true`` drops them instead). Usage counts cached prompt tokens in
``input_tokens`` and reports them in ``cached_input_tokens`` and ``cache_creation_input_tokens``.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Iterator, Optional

from pydantic import Field

from ...config import ConnectionConfig, ModelConfig, Secret
from ...errors import (
    CapabilityError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamInterruptedError,
    error_for_status,
    parse_retry_after,
)
from ...schema import CompletionRequest, CompletionResponse, ModelCapabilities, ModelInfo, StreamEvent
from . import wire
from ..base import Connection
from ..transport.clients import PerLoopClients

__all__ = ["AnthropicConnection", "AnthropicConfig"]


class AnthropicConfig(ConnectionConfig):
    type: str = "anthropic"
    api_key: Secret = Field(default_factory=lambda: Secret("{{env:ANTHROPIC_API_KEY}}"))
    #: where to send requests instead of https://api.anthropic.com (a proxy, a test server); no /v1
    base_url: Optional[str] = None
    #: the ``anthropic-version`` header: the API version whose request body this connection builds
    anthropic_version: str = "2023-06-01"
    #: ``max_tokens`` for requests without ``maxOutputTokens``; unset: the model's own default
    default_max_tokens: Optional[int] = Field(default=None, ge=1)
    #: extra headers on every request (``anthropic-beta``...); values may be secrets
    default_headers: dict[str, Secret] = Field(default_factory=dict)
    #: silently drop seed settings the API has no parameter for, instead of failing
    drop_unsupported_settings: bool = False


def _sdk() -> Any:
    try:
        import anthropic
    except ImportError:
        raise CapabilityError("the anthropic connection needs the anthropic SDK: "
                              "pip install 'langchain-mesh[anthropic]'") from None
    return anthropic


class AnthropicConnection(Connection):
    type_name = "anthropic"
    config_model = AnthropicConfig
    config: AnthropicConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._clients = PerLoopClients(self._make_client, lambda c: c.close(), lambda c: c.close())
        self._response_cls: Any = None
        self._transport_error: Any = None

    # ---- models ------------------------------------------------------------------------------------------

    def default_models(self) -> list[ModelInfo]:
        return wire.default_models()

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        return wire.model_info(model.id)

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return wire.capabilities_for(model)


    # ---- clients -----------------------------------------------------------------------------------------

    def _make_client(self, is_async: bool) -> Any:
        anthropic = _sdk()
        if self._response_cls is None:
            from anthropic import _base_client  # the HTTP library this SDK version is built on

            http = getattr(_base_client, "httpx2", None) or _base_client.httpx
            self._response_cls, self._transport_error = http.Response, http.TransportError
        cfg, at = self.config, f"connections.{self.name}"
        headers = {k: v.get(f"{at}.default_headers.{k}") for k, v in cfg.default_headers.items()}
        cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
        return cls(api_key=cfg.api_key.get(f"{at}.api_key"), base_url=cfg.base_url, max_retries=0,
                   timeout=cfg.timeout, default_headers={"anthropic-version": cfg.anthropic_version, **headers})

    def close(self) -> None:
        self._clients.close()

    # ---- errors ------------------------------------------------------------------------------------------

    def _error(self, e: BaseException, client: Any) -> BaseException:
        """The SDK's exception as the mesh's error type; anything else unchanged."""
        anthropic = _sdk()
        if isinstance(e, anthropic.APIStatusError):
            return error_for_status(e.status_code, wire.error_message(e.body, e.message), provider=wire.PROVIDER,
                                    retry_after=parse_retry_after(e.response.headers))
        if isinstance(e, anthropic.APITimeoutError):
            return ProviderTimeoutError(f"{wire.PROVIDER} did not answer within {self.config.timeout}s "
                                        f"(connection {self.name!r}; raise its timeout: if the model is slow)",
                                        provider=wire.PROVIDER)
        if isinstance(e, anthropic.APIConnectionError):
            return ProviderConnectionError(f"cannot reach {wire.PROVIDER} at {client.base_url}: {e.__cause__ or e}",
                                           provider=wire.PROVIDER)
        return e

    def _interrupted(self, e: BaseException, decoder: wire.StreamDecoder) -> StreamInterruptedError:
        return StreamInterruptedError(
            f"the {wire.PROVIDER} stream broke before it finished ({type(e).__name__}: {e}); "
            "the partial answer was not returned as a success",
            provider=wire.PROVIDER, partial_text="".join(decoder.text))

    @staticmethod
    def _json(resp: Any) -> Any:
        try:
            return json.loads(resp.content)
        except ValueError:
            raise ProviderError(f"{wire.PROVIDER} answered HTTP {resp.status_code} with a body that is not JSON: "
                                f"{resp.content[:200]!r}", provider=wire.PROVIDER, status=resp.status_code) from None

    # ---- completion --------------------------------------------------------------------------------------

    def _body(self, model: str, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        wire.check_request(model, request, self.capabilities_of(model), self.config.drop_unsupported_settings)
        return wire.message_body(model, request, stream=stream, default_max_tokens_value=self.config.default_max_tokens)

    # ---- tokens ------------------------------------------------------------------------------------------

    def _count_body(self, model: str, request: CompletionRequest) -> dict[str, Any]:
        body = wire.message_body(model, request, stream=False, default_max_tokens_value=self.config.default_max_tokens)
        body = {k: v for k, v in body.items() if k in wire.COUNT_TOKENS_KEYS}
        if not body.get("messages") and body.get("system"):
            # a system prompt alone (trim_messages counts one): the API needs a message, so the same
            # text is counted as the user's
            system = body.pop("system")
            body["messages"] = [{"role": "user", "content": system}]
        return body

    def count_tokens(self, model: str, request: CompletionRequest) -> int:
        """Anthropic's own count (``POST /v1/messages/count_tokens``)."""
        client = self._clients.sync()
        try:
            resp = client.post(wire.COUNT_TOKENS_PATH, body=self._count_body(model, request), cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return wire.parse_token_count(self._json(resp))

    async def acount_tokens(self, model: str, request: CompletionRequest) -> int:
        client = self._clients.running_loop()
        try:
            resp = await client.post(wire.COUNT_TOKENS_PATH, body=self._count_body(model, request),
                                     cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return wire.parse_token_count(self._json(resp))

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        body = self._body(model, request, False)
        client = self._clients.sync()
        try:
            resp = client.post(wire.MESSAGES_PATH, body=body, cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return wire.parse_message(self._json(resp), model, wire.answer_tool(request))

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        body = self._body(model, request, False)
        client = self._clients.running_loop()
        try:
            resp = await client.post(wire.MESSAGES_PATH, body=body, cast_to=self._response_cls)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        return wire.parse_message(self._json(resp), model, wire.answer_tool(request))

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        # validated here, not on first next(): a bad request fails where it is made
        return self._events(model, self._body(model, request, True), wire.answer_tool(request))

    def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:  # type: ignore[override]
        return self._aevents(model, self._body(model, request, True), wire.answer_tool(request))

    def _events(self, model: str, body: dict[str, Any], answer: Optional[str]) -> Iterator[StreamEvent]:
        client = self._clients.sync()
        try:
            resp = client.post(wire.MESSAGES_PATH, body=body, cast_to=self._response_cls, stream=True)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        decoder = wire.StreamDecoder(model, answer)
        try:
            for event, data in wire.iter_sse(resp.iter_lines()):
                yield from decoder.feed(event, data)
        except self._transport_error as e:
            raise self._interrupted(e, decoder) from None
        finally:
            resp.close()  # a body not read to its end closes the connection: the model stops
        yield decoder.footer()

    async def _aevents(self, model: str, body: dict[str, Any], answer: Optional[str]) -> AsyncIterator[StreamEvent]:
        client = self._clients.running_loop()
        try:
            resp = await client.post(wire.MESSAGES_PATH, body=body, cast_to=self._response_cls, stream=True)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, client) from None
        decoder = wire.StreamDecoder(model, answer)
        framer = wire.SSEFramer()
        try:
            async for line in resp.aiter_lines():
                ev = framer.line(line)
                if ev is not None:
                    for out in decoder.feed(*ev):
                        yield out
            ev = framer.end()
            if ev is not None:
                for out in decoder.feed(*ev):
                    yield out
        except self._transport_error as e:
            raise self._interrupted(e, decoder) from None
        finally:
            await resp.aclose()
        yield decoder.footer()
