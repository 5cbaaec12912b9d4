"""The LangChain face of the mesh: chat model, text-completion model and embeddings.

Importing this package imports langchain-core; ``import langchain_mesh`` does not (the top-level
names are resolved lazily).
"""

from __future__ import annotations

from .chat_model import MeshChatModel, normalize_tool_choice
from .convert import from_mesh_message, from_mesh_messages, to_mesh_message, to_mesh_messages
from .embeddings import MeshEmbeddings
from .factory import init_chat_model
from .llm import MeshLLM

__all__ = [
    "MeshChatModel",
    "MeshLLM",
    "MeshEmbeddings",
    "init_chat_model",
    "normalize_tool_choice",
    "to_mesh_message",
    "to_mesh_messages",
    "from_mesh_message",
    "from_mesh_messages",
]
