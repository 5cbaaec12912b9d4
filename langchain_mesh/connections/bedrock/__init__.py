"""Amazon Bedrock (Converse, InvokeModel): ``connection.py`` (the
:class:`~langchain_mesh.connections.base.Connection`) and ``wire.py`` (mesh requests to the provider's
JSON and back). Tested against :mod:`langchain_mesh.testing.bedrock`, a local server speaking the same
wire format.

``langchain_mesh.connections.bedrock`` gives the names of ``connection.py`` (the module this package
replaced), loaded on first use.
"""

from __future__ import annotations

from typing import Any

_SUBMODULES = frozenset({'connection', 'wire'})


def __getattr__(name: str) -> Any:
    # a submodule being imported is not looked up here (the import system asks for it first)
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.connection"), name)
