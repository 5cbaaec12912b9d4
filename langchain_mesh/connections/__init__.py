"""Connection types: one module per provider, looked up by the first part of an LLM id.

Built-in types are named here as import paths so that nothing is imported before it is used;
third-party types register through the ``langchain_mesh.connections`` entry point group (or
:func:`register_connection_type` at run time), the way ``llm`` plugins do.
"""

from __future__ import annotations

import difflib
import importlib

from .. import _moved

# The registry imports no connection module, not even for typing (classes are annotated `type`):
# config.py asks it for a type's config model, and connection modules import config (the import
# contracts in pyproject.toml).

__all__ = ["register_connection_type", "get_connection_class", "connection_types"]

# modules that moved into the family and transport subpackages: their old paths still import
_moved.register(__name__, {
    "anthropic_wire": "anthropic.wire",
    "aws": "transport.aws",
    "azure_llm": "openai.azure_llm",
    "azure_openai": "openai.azure",
    "bedrock_wire": "bedrock.wire",
    "clients": "transport.clients",
    "cohere_wire": "cohere.wire",
    "databricks": "openai.databricks",
    "http1": "transport.http1",
    "mistral": "openai.mistral",
    "openai_base": "openai.base",
    "openai_compatible": "openai.compatible",
    "openai_models": "openai.models",
    "openai_wire": "openai.wire",
    "sagemaker_wire": "sagemaker.wire",
    "snowflake_cortex_wire": "snowflake_cortex.wire",
    "sse": "transport.sse",
    "vertex_wire": "vertex.wire",
})

_BUILTIN: dict[str, str] = {
    "huggingfacelocal": "langchain_mesh.connections.huggingface_local.connection:HuggingFaceLocalConnection",
    "openai": "langchain_mesh.connections.openai.connection:OpenAIConnection",
    "anthropic": "langchain_mesh.connections.anthropic.connection:AnthropicConnection",
    "azure_openai": "langchain_mesh.connections.openai.azure:AzureOpenAIConnection",
    "azure_llm": "langchain_mesh.connections.openai.azure_llm:AzureLLMConnection",
    "databricks": "langchain_mesh.connections.openai.databricks:DatabricksConnection",
    "mistral": "langchain_mesh.connections.openai.mistral:MistralConnection",
    "openai_compatible": "langchain_mesh.connections.openai.compatible:OpenAICompatibleConnection",
    "scripted": "langchain_mesh.testing.scripted:ScriptedConnection",
    "snowflake_cortex": "langchain_mesh.connections.snowflake_cortex.connection:SnowflakeCortexConnection",
    "bedrock": "langchain_mesh.connections.bedrock.connection:BedrockConnection",
    "sagemaker": "langchain_mesh.connections.sagemaker.connection:SageMakerConnection",
    "cohere": "langchain_mesh.connections.cohere.connection:CohereConnection",
    "vertex": "langchain_mesh.connections.vertex.connection:VertexConnection",
    "stability": "langchain_mesh.connections.stability.connection:StabilityConnection",
    "custom": "langchain_mesh.plugins.connection:CustomConnection",
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
