"""``snowflake_cortex``: Snowflake Cortex models over the Cortex inference REST API.

``POST /api/v2/cortex/inference:complete`` (chat, tools, structured output, images) and
``POST /api/v2/cortex/inference:embed`` on ``https://<account_identifier>.snowflakecomputing.com``::

    sf:
      type: snowflake_cortex
      account: myorg-myaccount                    # or base_url: https://proxy.example.com
      token: "{{env:SNOWFLAKE_PAT}}"              # a programmatic access token (the default token_type)
      # token_type: OAUTH                         # or KEYPAIR_JWT for a JWT made elsewhere
      # key-pair auth instead of a token: the connection signs its own RS256 JWT
      # user: MESH_SVC
      # private_key: "{{file:~/.snowflake/rsa_key.p8}}"
      # private_key_passphrase: "{{env:SNOWFLAKE_KEY_PASSPHRASE}}"

Settings: ``temperature``, ``topP``, ``maxOutputTokens`` (``max_tokens``), ``tools``,
``toolChoice`` and ``responseFormat`` translate to the API's own parameters; ``extra`` adds raw body
keys (``guardrails``, ``provisioned_throughput_id``, ``anthropic``...). The API has no parameter for
``topK``, ``stopSequences``, penalties, ``logitBias``, ``logProbs`` or ``seed``: a request setting
one is refused with a :class:`SettingsError` naming it, because dropping it would return an answer
the caller did not ask for. A model that cannot do what a request needs (tools, JSON, images) is
refused with a :class:`CapabilityError` before any network call. Embedding requests carry no
``input_type`` on this API (the hint is not sent) and a model's vector size is fixed.

``complete`` asks for one JSON answer (``stream: false``, which also carries ``finish_reason``);
``stream`` reads the server-sent events. Errors are the mesh's typed errors; nothing is retried
here (the mesh's retry policy decides). Credentials are resolved at first use and never shown.
"""

from __future__ import annotations

import threading
import time
from typing import Any, AsyncIterator, Iterable, Iterator, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ...config import ConnectionConfig, Secret
from ...errors import (
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
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamEvent,
)
from . import wire
from ..base import Connection, collect_stream
from ..transport.clients import PerLoopClients
from ..transport.sse import aiter_sse_data, iter_sse_data

__all__ = ["SnowflakeCortexConnection", "SnowflakeCortexConfig"]

COMPLETE_PATH = "/api/v2/cortex/inference:complete"
EMBED_PATH = "/api/v2/cortex/inference:embed"
TokenType = Literal["PROGRAMMATIC_ACCESS_TOKEN", "OAUTH", "KEYPAIR_JWT"]


class SnowflakeCortexConfig(ConnectionConfig):
    type: str = "snowflake_cortex"
    #: the account identifier (``myorg-myaccount``, or a locator such as ``xy12345.us-east-2.aws``)
    account: Optional[Secret] = None
    #: where to send requests instead of the account URL (a proxy, a test server)
    base_url: Optional[str] = None
    token: Optional[Secret] = None
    token_type: TokenType = "PROGRAMMATIC_ACCESS_TOKEN"
    user: Optional[Secret] = None
    private_key: Optional[Secret] = None  # PEM text, usually a {{file:...}} reference
    private_key_passphrase: Optional[Secret] = None
    #: seconds a signed JWT is valid; Snowflake accepts at most one hour
    jwt_lifetime: float = Field(default=3540, ge=60, le=3600)

    @field_validator("account", "user", mode="before")
    @classmethod
    def _shown(cls, v: Any) -> Any:
        # not secrets, but they may come from the environment: references resolve like secrets, shown in reprs
        return Secret(v, masked=False) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_auth(self) -> "SnowflakeCortexConfig":
        if (self.token is None) == (self.private_key is None):
            raise ValueError("give either 'token' (with 'token_type') or key-pair auth ('user' and 'private_key')")
        if self.private_key is not None and (self.user is None or self.account is None):
            raise ValueError("key-pair auth needs 'user' and 'account' (the JWT names both)")
        if self.account is None and not self.base_url:
            raise ValueError("give 'account' (the URL is https://<account>.snowflakecomputing.com) or 'base_url'")
        return self


# --------------------------------------------------------------------------------------------------
# models

_TEXT = ModelCapabilities(streaming=True)
_JSON = ModelCapabilities(streaming=True, json_output=True, structured_output=True)
_FULL = ModelCapabilities(streaming=True, tools=True, tool_choice=True, json_output=True, structured_output=True,
                          image_input=True)
_EMBED = ModelCapabilities(streaming=False)

# (id, capabilities, context window, description); the first six are the seed's list
_CHAT_MODELS = [
    ("gemma-7b", _TEXT, 8000, "Gemma 7B"),
    ("llama2-70b-chat", _TEXT, 4096, "Llama 2 70B chat"),
    ("mistral-7b", _TEXT, 32000, "Mistral 7B"),
    ("mixtral-8x7b", _TEXT, 32000, "Mixtral 8x7B"),
    ("mistral-large", _TEXT, 32000, "Mistral Large"),
    ("snowflake-arctic", _TEXT, 4096, "Snowflake Arctic"),
    ("llama3.1-8b", _JSON, 128000, "Llama 3.1 8B"),
    ("llama3.1-70b", _JSON, 128000, "Llama 3.1 70B"),
    ("llama3.1-405b", _JSON, 128000, "Llama 3.1 405B"),
    ("mistral-large2", _JSON, 128000, "Mistral Large 2"),
    ("claude-3-5-sonnet", _FULL, 18000, "Claude 3.5 Sonnet (tools, images)"),
]
#: embedding models and their fixed vector sizes
EMBEDDING_DIMENSIONS = {
    "snowflake-arctic-embed-m-v1.5": 768,
    "snowflake-arctic-embed-l-v2.0": 1024,
    "e5-base-v2": 768,
    "multilingual-e5-large": 1024,
    "voyage-multilingual-2": 1024,
}


def _guess_capabilities(model: str) -> ModelCapabilities:
    """For a configured model without declared capabilities: what Cortex offers by family."""
    if model.startswith(("claude-", "openai-")):
        return _FULL
    if model.startswith(("llama4", "pixtral")):
        return _JSON.model_copy(update={"image_input": True})
    if model.startswith(("llama3", "mistral-large2", "deepseek", "snowflake-llama")):
        return _JSON
    return _EMBED if model in EMBEDDING_DIMENSIONS else _TEXT


# --------------------------------------------------------------------------------------------------
# credentials


class _Credentials:
    """The ``Authorization`` headers: a token resolved at first use, or a key-pair JWT renewed before expiry."""

    def __init__(self, name: str, config: SnowflakeCortexConfig):
        self._name = name
        self._config = config
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._key: Any = None
        self._expires = 0.0

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._config.private_key is None:
                kind = self._config.token_type
                if self._token is None:
                    self._token = self._config.token.get(f"connections.{self._name}.token")  # type: ignore[union-attr]
            else:
                kind = "KEYPAIR_JWT"
                self._renew_jwt()
        return {"Authorization": f"Bearer {self._token}", "X-Snowflake-Authorization-Token-Type": kind}

    def _renew_jwt(self) -> None:
        c, at = self._config, f"connections.{self._name}"
        lifetime = c.jwt_lifetime
        # renew well before expiry so a request signed now is still valid when Snowflake reads it
        if self._token is not None and time.time() < self._expires - min(300.0, lifetime / 4):
            return
        assert c.private_key is not None and c.account is not None and c.user is not None  # the config checks
        if self._key is None:
            passphrase = c.private_key_passphrase.get(f"{at}.private_key_passphrase") \
                if c.private_key_passphrase is not None else None
            self._key = wire.load_private_key(c.private_key.get(f"{at}.private_key"), passphrase, at)
        account, user = c.account.get(f"{at}.account"), c.user.get(f"{at}.user")
        self._token, self._expires = wire.keypair_jwt(account, user, self._key, lifetime)


# --------------------------------------------------------------------------------------------------


class SnowflakeCortexConnection(Connection):
    type_name = "snowflake_cortex"
    config_model = SnowflakeCortexConfig
    config: SnowflakeCortexConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._credentials = _Credentials(name, self.config)
        self._http = PerLoopClients(self._make_http, lambda c: c.close(), lambda c: c.aclose())
        self._base: Optional[str] = None

    # ---- models ------------------------------------------------------------------------------------------

    def default_models(self) -> list[ModelInfo]:
        chat = [ModelInfo(id=mid, purposes=[Purpose.GENERIC_COMPLETION], description=f"{desc} on Snowflake Cortex",
                          capabilities=caps.model_copy(update={"context_window": ctx}))
                for mid, caps, ctx, desc in _CHAT_MODELS]
        emb = [ModelInfo(id=mid, purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION], capabilities=_EMBED,
                         description=f"{mid} ({dims}-dim embeddings) on Snowflake Cortex")
               for mid, dims in EMBEDDING_DIMENSIONS.items()]
        return chat + emb

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return _guess_capabilities(model)


    # ---- HTTP plumbing ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base is None:
            if self.config.base_url:
                self._base = self.config.base_url.rstrip("/")
            else:
                account = self.config.account.get(f"connections.{self.name}.account")  # type: ignore[union-attr]
                # Snowflake recommends hyphens for underscores in account URLs (some network paths reject '_')
                self._base = f"https://{account.lower().replace('_', '-')}.snowflakecomputing.com"
        return self._base

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Accept": accept, "User-Agent": "langchain-mesh", **self._credentials.headers()}

    def _make_http(self, is_async: bool) -> Any:
        import httpx

        return (httpx.AsyncClient if is_async else httpx.Client)(timeout=self.config.timeout)

    def _transport_error(self, e: Exception) -> ProviderError:
        import httpx

        if isinstance(e, httpx.TimeoutException):
            return ProviderTimeoutError(f"{wire.PROVIDER} at {self.base_url} did not answer within "
                                        f"{self.config.timeout}s ({type(e).__name__})", provider=wire.PROVIDER)
        return ProviderConnectionError(f"cannot reach {wire.PROVIDER} at {self.base_url}: {e or type(e).__name__}",
                                       provider=wire.PROVIDER)

    @staticmethod
    def _status_error(status: int, text: str, headers: Any) -> ProviderError:
        return error_for_status(status, wire.error_message(text), provider=wire.PROVIDER,
                                retry_after=parse_retry_after(headers))

    @staticmethod
    def _interrupted(e: Exception, decoder: wire.StreamDecoder) -> StreamInterruptedError:
        return StreamInterruptedError(
            f"the {wire.PROVIDER} stream broke off after {decoder.events} events ({e or type(e).__name__})",
            partial_text="".join(decoder.text), provider=wire.PROVIDER)

    @staticmethod
    def _json(resp: Any) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise ProviderError(f"{wire.PROVIDER} answered HTTP {resp.status_code} with a body that is not JSON: "
                                f"{resp.text[:200]!r}", provider=wire.PROVIDER, status=resp.status_code) from None

    # The transport exceptions below are re-raised `from None`: they hold the request, whose headers
    # carry the credential, and the mesh error already says what happened.

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        headers = self._headers("application/json")
        try:
            resp = self._http.sync().post(self.base_url + path, json=body, headers=headers)
        except httpx.TransportError as e:
            raise self._transport_error(e) from None
        if resp.status_code >= 400:
            raise self._status_error(resp.status_code, resp.text, resp.headers)
        return resp

    async def _apost(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        headers = self._headers("application/json")
        try:
            resp = await self._http.running_loop().post(self.base_url + path, json=body, headers=headers)
        except httpx.TransportError as e:
            raise self._transport_error(e) from None
        if resp.status_code >= 400:
            raise self._status_error(resp.status_code, resp.text, resp.headers)
        return resp

    # ---- completion ----------------------------------------------------------------------------------

    def _body(self, model: str, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        wire.check_request(model, request, self.capabilities_of(model))
        return wire.completion_body(model, request, stream=stream)

    def _completion(self, resp: Any, model: str) -> CompletionResponse:
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            # a deployment that streams even when asked not to: read the events all the same
            return collect_stream(_decode(resp.text.splitlines(), model))
        return wire.parse_completion(self._json(resp), model)

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        return self._completion(self._post(COMPLETE_PATH, self._body(model, request, stream=False)), model)

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        resp = await self._apost(COMPLETE_PATH, self._body(model, request, stream=False))
        return self._completion(resp, model)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        # validated here, not on first next(): a bad request fails where it is made
        return self._events(model, self._body(model, request, stream=True))

    def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:  # type: ignore[override]
        return self._aevents(model, self._body(model, request, stream=True))

    def _events(self, model: str, body: dict[str, Any]) -> Iterator[StreamEvent]:
        import httpx

        decoder = wire.StreamDecoder(model)
        headers = self._headers("text/event-stream")
        try:
            with self._http.sync().stream("POST", self.base_url + COMPLETE_PATH, json=body, headers=headers) as resp:
                if resp.status_code >= 400:
                    raise self._status_error(resp.status_code, resp.read().decode(errors="replace"), resp.headers)
                try:
                    for data in iter_sse_data(resp.iter_lines()):
                        yield from decoder.feed(data)
                except httpx.TransportError as e:
                    raise self._interrupted(e, decoder) from None
        except httpx.TransportError as e:
            raise self._transport_error(e) from None
        # Cortex sends no end event: a body that ended cleanly (its last chunk arrived) is complete
        yield decoder.footer()

    async def _aevents(self, model: str, body: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        import httpx

        decoder = wire.StreamDecoder(model)
        headers = self._headers("text/event-stream")
        try:
            async with self._http.running_loop().stream("POST", self.base_url + COMPLETE_PATH, json=body,
                                              headers=headers) as resp:
                if resp.status_code >= 400:
                    text = (await resp.aread()).decode(errors="replace")
                    raise self._status_error(resp.status_code, text, resp.headers)
                try:
                    async for data in aiter_sse_data(resp.aiter_lines()):
                        for ev in decoder.feed(data):
                            yield ev
                except httpx.TransportError as e:
                    raise self._interrupted(e, decoder) from None
        except httpx.TransportError as e:
            raise self._transport_error(e) from None
        yield decoder.footer()

    # ---- embeddings ----------------------------------------------------------------------------------

    @staticmethod
    def _check_dimensions(model: str, request: EmbeddingRequest) -> None:
        dims = EMBEDDING_DIMENSIONS.get(model)
        if request.dimensions is not None and request.dimensions != dims:
            size = f"{dims}-dimensional vectors" if dims else "vectors of a fixed size"
            raise SettingsError(f"{model} on Snowflake Cortex produces {size}; it cannot give "
                                f"dimensions={request.dimensions}", ["dimensions"])

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        self._check_dimensions(model, request)
        resp = self._post(EMBED_PATH, wire.embed_body(model, request.texts))
        return wire.parse_embeddings(self._json(resp), model)

    async def aembed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        self._check_dimensions(model, request)
        resp = await self._apost(EMBED_PATH, wire.embed_body(model, request.texts))
        return wire.parse_embeddings(self._json(resp), model)

    # ---- lifecycle -------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()


def _decode(lines: Iterable[str], model: str) -> Iterator[StreamEvent]:
    decoder = wire.StreamDecoder(model)
    for data in iter_sse_data(lines):
        yield from decoder.feed(data)
    yield decoder.footer()
