"""Connection types: one module per provider, looked up by the first part of an LLM id.

Built-in types are named here as import paths so that nothing is imported before it is used;
third-party types register through the ``langchain_mesh.connections`` entry point group (or
:func:`register_connection_type` at run time), the way ``llm`` plugins do.
"""

from __future__ import annotations

import difflib
import importlib

# The registry imports no connection module, not even for typing (classes are annotated `type`):
# config.py asks it for a type's config model, and connection modules import config (the import
# contracts in pyproject.toml).

__all__ = ["register_connection_type", "get_connection_class", "connection_types"]

_BUILTIN: dict[str, str] = {
    "huggingfacelocal": "langchain_mesh.connections.huggingface_local:HuggingFaceLocalConnection",
    "openai": "langchain_mesh.connections.openai:OpenAIConnection",
    "anthropic": "langchain_mesh.connections.anthropic:AnthropicConnection",
    "azure_openai": "langchain_mesh.connections.azure_openai:AzureOpenAIConnection",
    "azure_llm": "langchain_mesh.connections.azure_llm:AzureLLMConnection",
    "databricks": "langchain_mesh.connections.databricks:DatabricksConnection",
    "mistral": "langchain_mesh.connections.mistral:MistralConnection",
    "openai_compatible": "langchain_mesh.connections.openai_compatible:OpenAICompatibleConnection",
    "scripted": "langchain_mesh.testing.scripted:ScriptedConnection",
    "snowflake_cortex": "langchain_mesh.connections.snowflake_cortex:SnowflakeCortexConnection",
    "bedrock": "langchain_mesh.connections.bedrock:BedrockConnection",
    "sagemaker": "langchain_mesh.connections.sagemaker:SageMakerConnection",
    "cohere": "langchain_mesh.connections.cohere:CohereConnection",
    "vertex": "langchain_mesh.connections.vertex:VertexConnection",
    "stability": "langchain_mesh.connections.stability:StabilityConnection",
}
_REGISTERED: dict[str, type] = {}
_ENTRY_POINT_GROUP = "langchain_mesh.connections"


def register_connection_type(type_name: str, cls: type) -> None:
    """Make ``cls`` the connection class for ``type_name`` in this process."""
    if not type_name or ":" in type_name:
        raise ValueError(f"connection type {type_name!r} must be non-empty and contain no ':'")
    cls.type_name = type_name
    _REGISTERED[type_name] = cls


def _entry_points() -> dict[str, object]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=_ENTRY_POINT_GROUP)}


def connection_types() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def get_connection_class(type_name: str) -> type:
    cls = _REGISTERED.get(type_name)
    if cls is not None:
        return cls
    target = _BUILTIN.get(type_name)
    if target is not None:
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        # Only a type we do not ship costs an entry-point scan.
        ep = _entry_points().get(type_name)
        if ep is None:
            known = connection_types()
            hint = difflib.get_close_matches(type_name, known, n=1)
            raise LookupError(
                f"unknown connection type {type_name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; known types: {', '.join(known)}")
        cls = ep.load()  # type: ignore[attr-defined]
    cls.type_name = type_name
    _REGISTERED[type_name] = cls
    return cls
