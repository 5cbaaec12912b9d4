"""The OpenAI-wire family: every service that speaks OpenAI's chat-completions wire format.

``base.py`` (:class:`OpenAIWireConnection`: the SDK for auth and URLs, the lean HTTP/1.1 transport,
the byte-level pass-through), ``wire.py`` (mesh requests to OpenAI JSON and back, and each service's
:class:`Dialect`), ``models.py`` (what OpenAI's models can do), then one small module per service:
``connection.py`` (OpenAI), ``compatible.py`` (vLLM, TGI, any compatible server), ``azure.py`` (Azure
OpenAI), ``azure_llm.py``, ``databricks.py``, ``mistral.py``. Tested against
:mod:`langchain_mesh.testing.openai` (OpenAI and Azure flavours).

``langchain_mesh.connections.openai`` gives the names of ``connection.py`` (the module this package
replaced), loaded on first use.
"""

from __future__ import annotations

from typing import Any

_SUBMODULES = frozenset({'azure', 'azure_llm', 'base', 'compatible', 'connection', 'databricks', 'mistral', 'models', 'wire'})


def __getattr__(name: str) -> Any:
    # a submodule being imported is not looked up here (the import system asks for it first)
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.connection"), name)
