"""``databricks``: Databricks Mosaic AI Model Serving: the Foundation Model APIs (pay-per-token
``databricks-*`` endpoints) and your own serving endpoints, through their OpenAI-compatible API.

    connections:
      dbx:
        type: databricks
        host: "{{env:DATABRICKS_HOST}}"        # https://adb-123.4.azuredatabricks.net
        token: "{{env:DATABRICKS_TOKEN}}"      # a personal access token, or:
        # client_id: ...; client_secret: "{{env:DATABRICKS_CLIENT_SECRET}}"   (OAuth M2M, service principal)

The model part of an LLM id is the serving endpoint's name. With OAuth the connection fetches a
workspace token from ``<host>/oidc/v1/token`` and renews it before it expires.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional

from pydantic import model_validator

from ...config import ConnectionConfig, ModelConfig, Secret, resolve_optional
from ...errors import error_for_status
from ...schema import ModelCapabilities, ModelInfo, Purpose
from .base import OpenAIWireConfig, OpenAIWireConnection, _http, _loads
from .wire import Dialect, provider_message

__all__ = ["DatabricksConnection", "DatabricksConfig"]


class DatabricksConfig(OpenAIWireConfig):
    type: str = "databricks"
    host: Secret = Secret("{{env:DATABRICKS_HOST}}", masked=False)
    token: Optional[Secret] = None
    client_id: Optional[str] = None
    client_secret: Optional[Secret] = None

    @model_validator(mode="after")
    def _one_auth(self) -> "DatabricksConfig":
        if self.client_id and self.token:
            raise ValueError("give either token (a PAT) or client_id + client_secret (OAuth M2M), not both")
        if self.client_id and not self.client_secret:
            raise ValueError("client_id needs client_secret for OAuth M2M")
        return self


_CHAT = ModelCapabilities(tools=True, tool_choice=True, json_output=True, structured_output=True,
                          context_window=128_000)
_EMB = ModelCapabilities(streaming=False, context_window=512)
_ENDPOINTS: dict[str, tuple[list[Purpose], ModelCapabilities, str]] = {
    "databricks-meta-llama-3-3-70b-instruct": ([Purpose.GENERIC_COMPLETION], _CHAT, "Llama 3.3 70B Instruct"),
    "databricks-meta-llama-3-1-405b-instruct": ([Purpose.GENERIC_COMPLETION], _CHAT, "Llama 3.1 405B Instruct"),
    "databricks-meta-llama-3-1-70b-instruct": ([Purpose.GENERIC_COMPLETION], _CHAT, "Llama 3.1 70B Instruct"),
    "databricks-dbrx-instruct": ([Purpose.GENERIC_COMPLETION], _CHAT, "DBRX Instruct"),
    "databricks-mixtral-8x7b-instruct": ([Purpose.GENERIC_COMPLETION], _CHAT, "Mixtral 8x7B Instruct"),
    "databricks-claude-3-7-sonnet": ([Purpose.GENERIC_COMPLETION], _CHAT, "Claude 3.7 Sonnet"),
    "databricks-bge-large-en": ([Purpose.TEXT_EMBEDDING_EXTRACTION], _EMB, "BGE Large En (1024 dims)"),
    "databricks-gte-large-en": ([Purpose.TEXT_EMBEDDING_EXTRACTION], _EMB, "GTE Large En (1024 dims)"),
}


class _OAuthToken:
    """A workspace OAuth token from client credentials, renewed a minute before it expires."""

    def __init__(self, host: str, client_id: str, client_secret: str, timeout: float):
        self._url = f"{host}/oidc/v1/token"
        self._auth = (client_id, client_secret)
        self._timeout = timeout
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def fresh(self) -> bool:
        return time.monotonic() < self._expires

    def async_provider(self) -> Any:
        async def token() -> str:
            # only a renewal does I/O; keep it off the event loop
            return self._token if self.fresh() else await asyncio.to_thread(self)
        return token

    def __call__(self) -> str:
        if self.fresh():
            return self._token
        with self._lock:
            if time.monotonic() >= self._expires:
                r = _http().post(self._url, auth=self._auth, timeout=self._timeout,
                                 data={"grant_type": "client_credentials", "scope": "all-apis"})
                if r.status_code >= 400:
                    raise error_for_status(r.status_code, "OAuth token request failed: " +
                                           provider_message(_safe_json(r), r.text[:200]), provider="databricks")
                body = _loads(r.content)
                self._token = body["access_token"]
                self._expires = time.monotonic() + float(body.get("expires_in", 3600)) - 60
        return self._token


def _safe_json(r: Any) -> Any:
    try:
        return _loads(r.content)
    except ValueError:
        return None


class DatabricksConnection(OpenAIWireConnection):
    type_name = "databricks"
    config_model = DatabricksConfig
    dialect = Dialect(provider="databricks", unsupported=frozenset({"logitBias"}), extra_keys={"topK": "top_k"},
                      embedding_dimensions=False, embedding_batch=150)

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._oauth: Optional[_OAuthToken] = None

    def _host(self) -> str:
        cfg: DatabricksConfig = self.config  # type: ignore[assignment]
        host = cfg.host.get(f"connections.{self.name}.host").rstrip("/")
        return host if host.startswith(("http://", "https://")) else f"https://{host}"

    def client_kwargs(self, model: str, is_async: bool) -> dict[str, Any]:
        cfg: DatabricksConfig = self.config  # type: ignore[assignment]
        host = self._host()
        if cfg.client_id:
            secret = resolve_optional(cfg.client_secret, f"connections.{self.name}.client_secret") or ""
            if self._oauth is None:
                self._oauth = _OAuthToken(host, cfg.client_id, secret, cfg.timeout)
            # the SDK calls the provider before each request, so renewal is automatic
            key: Any = self._oauth.async_provider() if is_async else self._oauth
        else:
            key = self._secret(cfg.token or Secret("{{env:DATABRICKS_TOKEN}}"), "token")
        return {"api_key": key, "base_url": f"{host}/serving-endpoints", "default_headers": self._headers()}

    def default_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=k, purposes=list(p), capabilities=c, description=d) for k, (p, c, d) in _ENDPOINTS.items()]

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        if "embed" in model.id or model.id.endswith(("-bge-large-en", "-gte-large-en")):
            return ModelInfo(id=model.id, purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION], capabilities=_EMB)
        return None

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return _CHAT
