"""``azure_openai``: an Azure OpenAI resource and its deployments (chat, embeddings, images).

    connections:
      azure:
        type: azure_openai
        endpoint: https://my-resource.openai.azure.com
        api_version: "2024-10-21"
        api_key: "{{env:AZURE_OPENAI_API_KEY}}"      # or auth: entra_id (below)
        default_headers: {Ocp-Apim-Subscription-Key: "{{env:APIM_KEY}}"}   # behind an APIM gateway
        models:                                       # one entry per deployment
          - {id: prod-gpt4o, model: gpt-4o}           # id = deployment name, model = what it runs
          - {id: embed, model: text-embedding-3-small}

The model part of an LLM id is the deployment name; the declared ``model`` gives the deployment its
capabilities and purposes (and, in the gateway, its cost). Microsoft Entra ID instead of a key:
``auth: entra_id`` with ``entra_token`` (a bearer you obtain yourself, e.g. ``{{file:/run/token}}``,
re-read when it changes), or ``tenant_id``/``client_id``/``client_secret`` for a service principal,
or nothing more to use ``DefaultAzureCredential`` (managed identity, ``az login``); the last two
need ``azure-identity``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from ...config import ModelConfig, Secret
from ...errors import CapabilityError
from ...schema import ModelCapabilities, ModelInfo
from .base import OpenAIWireConfig, OpenAIWireConnection
from .models import openai_model_info
from .wire import Dialect

__all__ = ["AzureOpenAIConnection", "AzureOpenAIConfig", "AzureDeployment"]

_SCOPE = "https://cognitiveservices.azure.com/.default"


class AzureDeployment(ModelConfig):
    #: the OpenAI model the deployment runs (gpt-4o, text-embedding-3-small, dall-e-3...)
    model: str


class AzureOpenAIConfig(OpenAIWireConfig):
    type: str = "azure_openai"
    endpoint: Secret = Secret("{{env:AZURE_OPENAI_ENDPOINT}}", masked=False)
    api_version: str = "2024-10-21"
    auth: Literal["api_key", "entra_id"] = "api_key"
    api_key: Optional[Secret] = Secret("{{env:AZURE_OPENAI_API_KEY}}")
    entra_token: Optional[Secret] = None
    tenant_id: Optional[str] = None
    client_id: Optional[str] = None
    client_secret: Optional[Secret] = None
    models: list[AzureDeployment] = Field(min_length=1)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _auth(self) -> "AzureOpenAIConfig":
        sp = [self.tenant_id, self.client_id, self.client_secret]
        if any(sp) and not all(sp):
            raise ValueError("a service principal needs tenant_id, client_id and client_secret together")
        if self.auth == "api_key" and (self.entra_token or any(sp)):
            raise ValueError("entra_token / service principal settings need auth: entra_id")
        return self


class _FileToken:
    """A bearer read from a secret reference, re-read at most every 30 s (token files get rotated)."""

    def __init__(self, secret: Secret, where: str):
        self._secret, self._where = secret, where
        self._value, self._read_at = "", 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        if time.monotonic() - self._read_at > 30:
            with self._lock:
                self._value, self._read_at = self._secret.get(self._where), time.monotonic()
        return self._value


class AzureOpenAIConnection(OpenAIWireConnection):
    type_name = "azure_openai"
    config_model = AzureOpenAIConfig
    dialect = Dialect(provider="azure_openai", max_tokens_key="max_completion_tokens")

    def client_class(self, openai: Any, is_async: bool) -> Any:
        return openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI

    def client_kwargs(self, model: str, is_async: bool) -> dict[str, Any]:
        cfg: AzureOpenAIConfig = self.config  # type: ignore[assignment]
        kw: dict[str, Any] = {"azure_endpoint": cfg.endpoint.get(f"connections.{self.name}.endpoint"),
                              "api_version": cfg.api_version, "default_headers": self._headers()}
        if cfg.auth == "api_key":
            kw["api_key"] = self._secret(cfg.api_key, "api_key")
        else:
            kw["azure_ad_token_provider"] = self._token_provider()
        return kw

    def _token_provider(self) -> Any:
        cfg: AzureOpenAIConfig = self.config  # type: ignore[assignment]
        if cfg.entra_token is not None:
            return _FileToken(cfg.entra_token, f"connections.{self.name}.entra_token")
        try:
            from azure.identity import ClientSecretCredential, DefaultAzureCredential, get_bearer_token_provider
        except ImportError:
            raise CapabilityError("auth: entra_id without entra_token needs azure-identity: "
                                  "pip install 'langchain-mesh[azure]'") from None
        if cfg.client_id:
            secret = self._secret(cfg.client_secret, "client_secret")
            cred: Any = ClientSecretCredential(cfg.tenant_id, cfg.client_id, secret)
        else:
            cred = DefaultAzureCredential()
        # azure-identity caches the token and renews it before expiry; the SDK asks before each call
        return get_bearer_token_provider(cred, os.environ.get("AZURE_OPENAI_SCOPE", _SCOPE))

    def _deployment(self, model: str) -> Optional[AzureDeployment]:
        return next((d for d in self.config.models or [] if d.id == model), None)  # type: ignore[misc]

    def underlying_model(self, model: str) -> str:
        d = self._deployment(model)
        return d.model if d is not None else model

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        return openai_model_info(getattr(model, "model", model.id), model.id)

    def capabilities_for(self, model: str) -> ModelCapabilities:
        info = openai_model_info(self.underlying_model(model))
        return info.capabilities if info else ModelCapabilities(tools=True, tool_choice=True, json_output=True)
