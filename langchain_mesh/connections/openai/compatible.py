"""``openai_compatible``: any server that speaks the OpenAI API: vLLM, TGI, Ollama, LM Studio,
llama.cpp's server. The scale-out path for local models: serve them once, call them from anywhere.

    connections:
      vllm:
        type: openai_compatible
        base_url: http://gpu-box:8000/v1
        api_key: "{{env:VLLM_API_KEY}}"          # optional: most local servers need none
        models: [{id: Qwen/Qwen2.5-7B-Instruct}]  # or discover_models: true to ask GET /models

``topK`` is sent as ``top_k`` (vLLM, TGI and llama.cpp honour it). ``stream_usage: false`` for
servers that reject ``stream_options``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ...config import ConnectionConfig
from ...schema import ModelCapabilities, ModelInfo, Purpose
from .base import OpenAIWireConfig, OpenAIWireConnection, _loads
from .wire import Dialect

__all__ = ["OpenAICompatibleConnection", "OpenAICompatibleConfig"]

log = logging.getLogger(__name__)


class OpenAICompatibleConfig(OpenAIWireConfig):
    type: str = "openai_compatible"
    base_url: str  # type: ignore[assignment]  # required: there is no default server
    stream_usage: bool = True
    #: with no ``models`` listed, ask the server's ``GET /models`` at first listing
    discover_models: bool = False


class OpenAICompatibleConnection(OpenAIWireConnection):
    type_name = "openai_compatible"
    config_model = OpenAICompatibleConfig
    dialect = Dialect(provider="openai_compatible", unsupported=frozenset(), extra_keys={"topK": "top_k"})

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        cfg: OpenAICompatibleConfig = config  # type: ignore[assignment]
        if not cfg.stream_usage:
            self.dialect = dataclasses.replace(type(self).dialect, stream_usage=False)  # type: ignore[misc]

    def client_kwargs(self, model: str, is_async: bool) -> dict[str, Any]:
        cfg: OpenAICompatibleConfig = self.config  # type: ignore[assignment]
        # The SDK refuses a missing key; local servers accept any bearer, "EMPTY" is vLLM's convention.
        key = self._secret(cfg.api_key, "api_key", required=False) or "EMPTY"
        return {"api_key": key, "base_url": cfg.base_url, "default_headers": self._headers()}

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return ModelCapabilities(tools=True, tool_choice=True, json_output=True, structured_output=True)

    def default_models(self) -> list[ModelInfo]:
        cfg: OpenAICompatibleConfig = self.config  # type: ignore[assignment]
        if not cfg.discover_models:
            return []
        try:
            resp = self._client("").get("/models", cast_to=self._response_cls)
            ids = [m["id"] for m in _loads(resp.content).get("data", [])]
        except Exception as e:  # noqa: BLE001 - a server that is down must not break listing the mesh
            log.warning("connection %r: could not list models from %s: %s", self.name, cfg.base_url, self._error(e))
            return []
        caps = self.capabilities_for("")
        return [ModelInfo(id=i, purposes=[Purpose.GENERIC_COMPLETION], capabilities=caps) for i in ids]
