"""Folder plugins in the seed's shape (``python-llms/<component>/llm.json`` + ``llm.py``), their
parameter sets and presets, and the ``custom`` connection type that serves them as
``custom:<connection>:<model>``. See :mod:`.connection` for the config, :mod:`.translate` for the
dict formats and :mod:`.base_llm` for the class a plugin subclasses."""

from __future__ import annotations

from .base_llm import BaseLLM, Trace

__all__ = ["BaseLLM", "Trace"]
