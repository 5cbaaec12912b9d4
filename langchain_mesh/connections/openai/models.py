"""What OpenAI's models can do, by model name: used by the openai connection for its default
catalogue and by azure_openai for the model each deployment declares. Names are matched by the
longest known prefix, so dated snapshots (``gpt-4o-2024-08-06``) inherit their family's entry."""

from __future__ import annotations

from typing import Optional

from ...schema import ModelCapabilities, ModelInfo, Purpose

__all__ = ["openai_model_info", "OPENAI_DEFAULT_MODELS"]

_CHAT = [Purpose.GENERIC_COMPLETION]
_EMB = [Purpose.TEXT_EMBEDDING_EXTRACTION]
_IMG = [Purpose.IMAGE_GENERATION]


def _chat(context: int, *, vision: bool = True, structured: bool = True, log_probs: bool = True) -> ModelCapabilities:
    return ModelCapabilities(tools=True, tool_choice=True, json_output=True, structured_output=structured,
                             image_input=vision, log_probs=log_probs, context_window=context)


_REASONING = dict(log_probs=False)  # o-series and gpt-5 reasoning models return no log-probs

#: family prefix -> (purposes, capabilities, description)
_FAMILIES: dict[str, tuple[list[Purpose], ModelCapabilities, str]] = {
    "gpt-5": (_CHAT, _chat(400_000, **_REASONING), "GPT-5"),
    "gpt-4.1": (_CHAT, _chat(1_047_576), "GPT-4.1"),
    "gpt-4o": (_CHAT, _chat(128_000), "GPT-4o"),
    "chatgpt-4o": (_CHAT, _chat(128_000, structured=False), "ChatGPT-4o"),
    "gpt-4-turbo": (_CHAT, _chat(128_000, structured=False), "GPT-4 Turbo"),
    "gpt-4": (_CHAT, _chat(8_192, vision=False, structured=False), "GPT-4"),
    "gpt-3.5-turbo": (_CHAT, _chat(16_385, vision=False, structured=False), "GPT-3.5 Turbo"),
    "o1": (_CHAT, _chat(200_000, **_REASONING), "o1 reasoning model"),
    "o3-mini": (_CHAT, _chat(200_000, vision=False, **_REASONING), "o3-mini reasoning model"),
    "o3": (_CHAT, _chat(200_000, **_REASONING), "o3 reasoning model"),
    "o4-mini": (_CHAT, _chat(200_000, **_REASONING), "o4-mini reasoning model"),
    "text-embedding-3-small": (_EMB, ModelCapabilities(streaming=False, context_window=8_191), "embeddings, 1536 dims"),
    "text-embedding-3-large": (_EMB, ModelCapabilities(streaming=False, context_window=8_191), "embeddings, 3072 dims"),
    "text-embedding-ada-002": (_EMB, ModelCapabilities(streaming=False, context_window=8_191), "embeddings, 1536 dims"),
    "dall-e-3": (_IMG, ModelCapabilities(streaming=False), "DALL-E 3 image generation"),
    "dall-e-2": (_IMG, ModelCapabilities(streaming=False), "DALL-E 2 image generation"),
    "gpt-image-1": (_IMG, ModelCapabilities(streaming=False), "GPT Image 1 image generation"),
}
_BY_LENGTH = sorted(_FAMILIES, key=len, reverse=True)

#: what an openai connection offers when its config lists no models
OPENAI_DEFAULT_MODELS = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5", "gpt-5-mini",
    "o1", "o3", "o3-mini", "o4-mini", "gpt-4-turbo", "gpt-3.5-turbo",
    "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002", "dall-e-3", "gpt-image-1",
]


def openai_model_info(name: str, model_id: Optional[str] = None) -> Optional[ModelInfo]:
    """The known entry for model ``name`` (offered under ``model_id``), or None for unknown names."""
    for prefix in _BY_LENGTH:
        if name == prefix or name.startswith(prefix + "-"):
            purposes, caps, desc = _FAMILIES[prefix]
            return ModelInfo(id=model_id or name, purposes=list(purposes), capabilities=caps,
                             description=desc if name == prefix else f"{desc} ({name})")
    return None
