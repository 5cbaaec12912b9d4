"""``azure_llm``: models deployed on Azure Machine Learning or Azure AI Studio serverless endpoints,
called through their OpenAI v1-compatible chat and embeddings API.

    connections:
      azureml:
        type: azure_llm
        models:                               # one entry per endpoint / deployment
          - id: llama3-70b
            target_uri: https://Meta-Llama-3-70B-Instruct-abcd.eastus2.models.ai.azure.com
            api_key: "{{env:AZUREML_LLAMA_KEY}}"
          - id: cohere-embed
            target_uri: https://Cohere-embed-v3-english-xyz.eastus2.models.ai.azure.com
            api_key: "{{env:AZUREML_COHERE_KEY}}"
            purposes: [TEXT_EMBEDDING_EXTRACTION]

Each endpoint has its own URI and key, so each gets its own client. The target URI is used as
Azure shows it; a bare host gets ``/v1`` appended (the OpenAI v1 routes of serverless endpoints),
and a URI pasted with ``/chat/completions`` on the end is trimmed.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from ...config import ModelConfig, Secret
from ...schema import ModelCapabilities
from .base import OpenAIWireConfig, OpenAIWireConnection
from .wire import Dialect

__all__ = ["AzureLLMConnection", "AzureLLMConfig", "AzureEndpoint"]


class AzureEndpoint(ModelConfig):
    target_uri: Secret = Field(description="the endpoint's Target URI as Azure shows it")
    api_key: Secret
    #: the ``model`` field to send, for endpoints that serve several models (Azure AI model inference)
    model_name: Optional[str] = None
    #: ``api-version`` query parameter, for endpoints that require one
    api_version: Optional[str] = None

    def model_post_init(self, __context: Any) -> None:
        if not self.target_uri.is_reference:  # a URI is not a secret: show it in reprs and errors
            self.target_uri.masked = False


class AzureLLMConfig(OpenAIWireConfig):
    type: str = "azure_llm"
    models: list[AzureEndpoint] = Field(min_length=1)  # type: ignore[assignment]


def _base_url(uri: str) -> str:
    uri = uri.rstrip("/")
    for tail in ("/chat/completions", "/embeddings"):
        if uri.endswith(tail):
            uri = uri[: -len(tail)]
    path = uri.split("://", 1)[-1].partition("/")[2]
    return uri if path else uri + "/v1"


class AzureLLMConnection(OpenAIWireConnection):
    type_name = "azure_llm"
    config_model = AzureLLMConfig
    dialect = Dialect(provider="azure_llm", extra_keys={"topK": "top_k"}, unsupported=frozenset(),
                      embedding_dimensions=False)

    def _endpoint(self, model: str) -> AzureEndpoint:
        return next(e for e in self.config.models or [] if e.id == model)  # type: ignore[misc,return-value]

    def client_key(self, model: str) -> str:
        return model

    def wire_model(self, model: str) -> str:
        return self._endpoint(model).model_name or model

    def client_kwargs(self, model: str, is_async: bool) -> dict[str, Any]:
        ep = self._endpoint(model)
        at = f"connections.{self.name}.models[{model}]"
        return {"api_key": ep.api_key.get(f"{at}.api_key"),
                "base_url": _base_url(ep.target_uri.get(f"{at}.target_uri")),
                "default_headers": self._headers(),
                "default_query": {"api-version": ep.api_version} if ep.api_version else None}

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return ModelCapabilities(tools=True, tool_choice=True, json_output=True)
