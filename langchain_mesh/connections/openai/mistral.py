"""``mistral``: Mistral AI's API (chat with tools and JSON output, ``mistral-embed`` embeddings).

Mistral's chat API is OpenAI's with a few renames, declared in the dialect: a required tool call is
``tool_choice: "any"``, the seed is ``random_seed``; it has no top-k, logit bias or log-probs (those
settings are errors unless ``drop_unsupported_settings``), and its embeddings have a fixed size.
"""

from __future__ import annotations

from typing import Optional

from ...config import ModelConfig, Secret
from ...schema import ModelCapabilities, ModelInfo, Purpose
from .base import OpenAIWireConfig, OpenAIWireConnection
from .wire import Dialect

__all__ = ["MistralConnection", "MistralConfig"]


class MistralConfig(OpenAIWireConfig):
    type: str = "mistral"
    api_key: Optional[Secret] = Secret("{{env:MISTRAL_API_KEY}}")
    base_url: Optional[str] = "https://api.mistral.ai/v1"


def _chat(context: int, vision: bool = False) -> ModelCapabilities:
    return ModelCapabilities(tools=True, tool_choice=True, json_output=True, structured_output=True,
                             image_input=vision, context_window=context)


_MODELS: dict[str, tuple[str, ModelCapabilities]] = {
    "mistral-large-latest": ("Mistral Large", _chat(128_000)),
    "mistral-medium-latest": ("Mistral Medium", _chat(128_000, vision=True)),
    "mistral-small-latest": ("Mistral Small", _chat(128_000, vision=True)),
    "pixtral-large-latest": ("Pixtral Large (vision)", _chat(128_000, vision=True)),
    "codestral-latest": ("Codestral", _chat(256_000)),
    "open-mistral-7b": ("Mistral 7B", _chat(32_000)),
    "open-mixtral-8x7b": ("Mixtral 8x7B", _chat(32_000)),
    "open-mixtral-8x22b": ("Mixtral 8x22B", _chat(64_000)),
}


class MistralConnection(OpenAIWireConnection):
    type_name = "mistral"
    config_model = MistralConfig
    dialect = Dialect(provider="mistral", tool_choice_required="any", seed_key="random_seed",
                      unsupported=frozenset({"topK", "logitBias", "logProbs", "topLogProbs"}),
                      embedding_dimensions=False, embedding_batch=512)

    def default_models(self) -> list[ModelInfo]:
        chats = [ModelInfo(id=k, purposes=[Purpose.GENERIC_COMPLETION], description=d, capabilities=c)
                 for k, (d, c) in _MODELS.items()]
        return chats + [ModelInfo(id="mistral-embed", purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION],
                                  description="Mistral Embed (1024 dims)",
                                  capabilities=ModelCapabilities(streaming=False, context_window=8_192))]

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        if "embed" in model.id:
            return ModelInfo(id=model.id, purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION],
                             capabilities=ModelCapabilities(streaming=False))
        return None

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return _MODELS.get(model, ("", _chat(32_000)))[1]
