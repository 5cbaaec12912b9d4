"""``init_chat_model``: a mesh LLM id -> a chat model object agents accept.

LangChain's own ``init_chat_model("openai:o:gpt-4o")`` (and ``create_agent(model="...")``, which calls
it) reads a mesh id as provider ``openai`` and model ``o:gpt-4o``, and silently builds a ``ChatOpenAI``
against api.openai.com. We cannot change LangChain; pass agents a model *object* instead::

    from langchain_mesh import init_chat_model
    from langgraph.prebuilt import create_react_agent

    model = init_chat_model("openai:myopenai:gpt-4o", mesh="mesh.yaml", temperature=0)
    agent = create_react_agent(model, tools=[multiply])        # or langchain's create_agent(model, ...)

The id is checked here, when the model is made (``UnknownLLMError`` listing the mesh's ids), not on
the first call.
"""

from __future__ import annotations

from typing import Any

from ..errors import SettingsError
from .chat_model import MeshChatModel

__all__ = ["init_chat_model"]

# LangChain's init_chat_model arguments that have no meaning for a mesh id
_NOT_FOR_MESH = {
    "model_provider": "a mesh id names its connection type and connection itself "
                      "(<connection type>:<connection name>:<model>)",
    "configurable_fields": "configurable models are LangChain's init_chat_model's; build a MeshChatModel "
                           "per id, or use .with_config",
    "config_prefix": "configurable models are LangChain's init_chat_model's",
}


def init_chat_model(model: str, *, mesh: Any = None, **kwargs: Any) -> MeshChatModel:
    """A :class:`MeshChatModel` for the mesh LLM id ``model`` (a leading ``mesh:`` is accepted).

    ``mesh``: a Mesh, a config dict or a mesh YAML path; None = ``Mesh.default()``. Other keyword
    arguments are MeshChatModel's (``temperature``, ``max_tokens``, ``timeout``, ``max_retries``,
    ``settings``...); an argument it does not have is an error, not ignored.
    """
    for key, why in _NOT_FOR_MESH.items():
        if key in kwargs:
            raise SettingsError(f"init_chat_model got {key}=...: {why}", [key])
    llm_id = model[len("mesh:"):] if model.startswith("mesh:") and model.count(":") >= 3 else model
    return MeshChatModel.from_id(llm_id, mesh=mesh, **kwargs)
