"""langchain-mesh: one connection layer over every LLM, with a LangChain face.

Public names are imported on first use (PEP 562) so that ``import langchain_mesh`` costs
milliseconds: pydantic, langchain-core, torch and provider SDKs load only when something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS: dict[str, str] = {
    "Mesh": "langchain_mesh.mesh",
    "LLMListItem": "langchain_mesh.mesh",
    "LLM": "langchain_mesh.queries",
    "Purpose": "langchain_mesh.schema",
    "StreamChunk": "langchain_mesh.schema",
    "StreamFooter": "langchain_mesh.schema",
    "CompletionResponse": "langchain_mesh.schema",
    "EmbeddingResponse": "langchain_mesh.schema",
    "Secret": "langchain_mesh.config",
    "ConnectionConfig": "langchain_mesh.config",
    "ModelConfig": "langchain_mesh.config",
    "Connection": "langchain_mesh.connections.base",
    "register_connection_type": "langchain_mesh.connections",
    "parse_llm_id": "langchain_mesh.ids",
    "format_llm_id": "langchain_mesh.ids",
    "MeshChatModel": "langchain_mesh.langchain",
    "MeshLLM": "langchain_mesh.langchain",
    "MeshEmbeddings": "langchain_mesh.langchain",
    "acting_as": "langchain_mesh.credentials",
    "BaseLLM": "langchain_mesh.plugins",
    "init_chat_model": "langchain_mesh.langchain",
}

__all__ = sorted(_EXPORTS) + ["errors", "__version__"]

if TYPE_CHECKING:
    from . import errors
    from .config import ConnectionConfig, ModelConfig, Secret
    from .connections import register_connection_type
    from .connections.base import Connection
    from .credentials import acting_as
    from .plugins import BaseLLM
    from .ids import format_llm_id, parse_llm_id
    from .langchain import MeshChatModel, MeshEmbeddings, MeshLLM, init_chat_model
    from .mesh import LLMListItem, Mesh
    from .queries import LLM
    from .schema import CompletionResponse, EmbeddingResponse, Purpose, StreamChunk, StreamFooter


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name == "errors":
            return importlib.import_module("langchain_mesh.errors")
        raise AttributeError(f"module 'langchain_mesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
