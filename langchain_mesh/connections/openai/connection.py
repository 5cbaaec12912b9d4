"""``openai``: OpenAI's own API (chat, embeddings, images), optionally restricted to an allow-list.

    connections:
      myopenai:
        type: openai
        api_key: "{{env:OPENAI_API_KEY}}"     # the default
        models: [{id: gpt-4o}, {id: gpt-4o-mini}, {id: text-embedding-3-small}]   # the allow-list

With no ``models`` the connection offers OpenAI's current catalogue (``mesh models``); with a list,
only those ids resolve (any other is an unknown-LLM error before a request is made). Capabilities
and purposes of listed models come from the catalogue, so a list of bare ids is enough.
"""

from __future__ import annotations

from typing import Any, Optional

from ...config import ModelConfig, Secret
from ...schema import ModelCapabilities, ModelInfo
from .base import OpenAIWireConfig, OpenAIWireConnection
from .models import OPENAI_DEFAULT_MODELS, openai_model_info
from .wire import Dialect

__all__ = ["OpenAIConnection", "OpenAIConfig"]


class OpenAIConfig(OpenAIWireConfig):
    type: str = "openai"
    api_key: Optional[Secret] = Secret("{{env:OPENAI_API_KEY}}")
    organization: Optional[str] = None
    project: Optional[str] = None


class OpenAIConnection(OpenAIWireConnection):
    type_name = "openai"
    config_model = OpenAIConfig
    # max_completion_tokens: the only token limit o-series and gpt-5 accept; the others take it too
    dialect = Dialect(provider="openai", max_tokens_key="max_completion_tokens")

    def client_kwargs(self, model: str, is_async: bool) -> dict[str, Any]:
        cfg: OpenAIConfig = self.config  # type: ignore[assignment]
        return {**super().client_kwargs(model, is_async), "organization": cfg.organization, "project": cfg.project}

    def default_models(self) -> list[ModelInfo]:
        return [info for info in map(openai_model_info, OPENAI_DEFAULT_MODELS) if info is not None]

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        return openai_model_info(model.id)

    def capabilities_for(self, model: str) -> ModelCapabilities:
        # a fine-tune (ft:gpt-4o-mini:org::id) behaves like its base model
        base = model.split(":")[1] if model.startswith("ft:") else model
        info = openai_model_info(base)
        return info.capabilities if info else ModelCapabilities(tools=True, tool_choice=True, json_output=True)
