"""LangChain serialisation of the mesh classes: ``dumpd``/``load``, ``model_dump`` and pickle carry the
mesh as its *portable config* (secret references, never resolved values), see
:func:`langchain_mesh.config.portable_config`.

```python
from langchain_core.load import dumpd, load
data = dumpd(chat)    # {"id": ["langchain_mesh", "MeshChatModel"], "kwargs": {"model": ..., "mesh": {...}}}
chat2 = load(data, valid_namespaces=["langchain_mesh"], allowed_objects=[MeshChatModel])
```
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cached_property
from typing import Any

from pydantic import SerializerFunctionWrapHandler

from .._langchain_load import allow_in_langchain_load  # noqa: F401  (re-exported for the adapters)

__all__ = ["MeshSerializable", "TracedSerializable", "dump_with_mesh", "allow_in_langchain_load"]


#: set while LangChain serialises a model for its callbacks and traces (``_serialized``): the mesh
#: config is left out there (traces do not need it, and a literal secret must not fail a call)
_TRACE_DUMP: ContextVar[bool] = ContextVar("langchain_mesh_trace_dump", default=False)


class MeshSerializable:
    """LangChain serialisation (``dumpd``/``loads``) of the mesh classes, mixed in before their
    LangChain base.

    The mesh travels as its *portable config* (``Mesh.portable_config()``: secret references as
    written, never resolved values; a literal secret raises :class:`~langchain_mesh.errors.CredentialError`);
    ``loads`` rebuilds it with ``Mesh.from_config``. A model on the default mesh (``mesh=None``)
    carries none and uses the loading process's default. The class ids are
    ``["langchain_mesh", "<ClassName>"]`` whatever module defines the class::

        from langchain_core.load import dumpd, load
        data = dumpd(chat)
        chat2 = load(data, valid_namespaces=["langchain_mesh"], allowed_objects="all")
    """

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_mesh"]

    @property
    def lc_attributes(self) -> dict[str, Any]:
        mesh = getattr(self, "mesh", None)
        if mesh is None or _TRACE_DUMP.get():
            return {}
        return {"mesh": mesh.portable_config()}


def dump_with_mesh(model: Any, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
    """``model_dump()`` with the mesh as its portable config, so that ``Cls(**obj.model_dump())``
    rebuilds an equivalent object (the ``mesh`` field itself is excluded: a Mesh is not data)."""
    data = handler(model)
    mesh = getattr(model, "mesh", None)
    if mesh is not None and isinstance(data, dict):
        data["mesh"] = mesh.portable_config()
    return data


class TracedSerializable(MeshSerializable):
    """For the language models: the ``_serialized`` LangChain hands to callbacks leaves the mesh out."""

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "MESH_API_KEY"}

    @cached_property
    def _serialized(self) -> dict[str, Any]:
        from langchain_core.load import dumpd

        token = _TRACE_DUMP.set(True)
        try:
            return dumpd(self)
        finally:
            _TRACE_DUMP.reset(token)
