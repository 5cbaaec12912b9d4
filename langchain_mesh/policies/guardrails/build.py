"""A guardrail config entry -> the rule or check that runs it."""

from __future__ import annotations

from typing import Any

from .checks import JSONCheck, JudgeCheck, SizeCheck
from .rules import pii_rule, terms_rule

__all__ = ["build_rule"]

_STAGES = {"input": frozenset({"input"}), "output": frozenset({"output"}), "both": frozenset({"input", "output"})}


def build_rule(g: Any) -> Any:
    stages, keys = _STAGES[g.stage], tuple(g.keys)
    if g.type == "pii":
        return pii_rule(g.name, g.action, stages, g.entities, keys)
    if g.type == "terms":
        return terms_rule(g.name, g.action, stages, g.terms, g.patterns, keys)
    if g.type == "size":
        return SizeCheck(g.name, g.max_tokens, g.max_chars, g.max_messages, g.max_images, keys)
    if g.type == "json":
        return JSONCheck(g.name, g.schema_, g.on_invalid, keys)
    return JudgeCheck(g.name, g.llm, g.policy, g.action, stages, keys)
