"""``BaseLLM``: the class a folder plugin's ``llm.py`` subclasses (the seed's
``dataiku.llm.python.BaseLLM``; only that import line changes)::

    from langchain_mesh.plugins import BaseLLM

    class MyLLM(BaseLLM):
        def set_config(self, config: dict, plugin_config: dict) -> None:
            self.model = config["model"]
            self.api_key = config["api_key"]["param_set_api_key"]

        def process(self, query, settings, trace):
            return {"text": "..."}

The mesh calls ``set_config`` once per (connection, model, and user when credentials are per user),
then ``process`` / ``process_stream`` per call, or ``aprocess`` / ``aprocess_stream`` on the async
path when the class defines them (else the sync ones run in a worker thread). A class may define
only ``process`` (a stream is then one chunk and a footer) or only ``process_stream`` (a completion
then drains it). Formats: :mod:`langchain_mesh.plugins.translate`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["BaseLLM", "Trace"]


class BaseLLM:
    def __init__(self) -> None:
        pass

    def set_config(self, config: dict, plugin_config: dict) -> None:
        self.config = config
        self.plugin_config = plugin_config

    def get_max_parallelism(self) -> int:
        return 8

    # process, process_stream, aprocess, aprocess_stream: defined by subclasses (the mesh looks
    # for them on the class; none is defined here so that "not implemented" is visible)


class Trace:
    """The ``trace`` argument: a span the plugin may annotate (``trace.subspan(name)``,
    ``trace.attributes``, ``trace.inputs``, ``trace.outputs``). Kept in memory for the call; the mesh
    never logs it, so a plugin that puts a secret there does not leak it through the mesh."""

    def __init__(self, name: str = "custom-llm"):
        self.name = name
        self.attributes: dict[str, Any] = {}
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.children: list["Trace"] = []

    @contextlib.contextmanager
    def subspan(self, name: str) -> Iterator["Trace"]:
        child = Trace(name)
        self.children.append(child)
        yield child

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "attributes": self.attributes, "inputs": self.inputs, "outputs": self.outputs,
                "children": [c.to_dict() for c in self.children]}

    def __repr__(self) -> str:
        return f"Trace({self.name!r}, children={len(self.children)})"
