"""Schema-constrained decoding for local models, with llguidance.

Why llguidance: it is maintained (it backs Guidance, vLLM's and llama.cpp's structured output), it
is a small Rust wheel with no torch/CUDA build of its own (xgrammar pulls triton, ~300 MB; outlines
pulls a much larger stack), it computes the allowed-token mask in microseconds per step on CPU, and
it accepts both JSON Schema and Lark grammars — the latter lets "auto" tool choice be one grammar:
*either* free text *or* a tagged, schema-valid tool call.

Every token the model may emit is masked to what keeps the output valid, so a forced tool call or a
JSON answer parses and validates by construction (up to the token budget).
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..errors import CapabilityError
from ..schema import ToolSpec
from .loading import LoadedModel

__all__ = ["GrammarConstraint", "json_grammar", "tool_call_grammar", "TOOL_CALL_OPEN", "TOOL_CALL_CLOSE"]

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# A tiny model under a grammar can still wander inside a string or an array until the token budget
# runs out. Capping unbounded strings and arrays only narrows the language (every output stays valid
# against the caller's schema) and makes the call finish.
_MAX_STRING = 256
_MAX_ITEMS = 16
# JSON Schema cannot bound the digits of a number, and a tiny model will happily write
# 0.0123456789012345... forever; after this many digit tokens in a row, digits are masked out
# whenever the grammar allows anything else (a number can always be closed).
_MAX_DIGIT_RUN = 8


def _bounded(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    types = out.get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types and not any(k in out for k in ("maxLength", "enum", "const", "format", "pattern")):
        out["maxLength"] = _MAX_STRING
    if "object" in types and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False  # as OpenAI's strict mode: only the declared arguments
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = max(_MAX_ITEMS, int(out.get("minItems", 0)))
    return out


_SCALAR = [{"type": "string", "maxLength": _MAX_STRING}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]
_VALUE = {"anyOf": _SCALAR + [{"type": "array", "maxItems": _MAX_ITEMS, "items": {"anyOf": _SCALAR}}]}
# "Any JSON object", bounded: two levels deep, at most _MAX_ITEMS members and items per level.
_ANY_OBJECT = {"type": "object", "maxProperties": _MAX_ITEMS, "additionalProperties": {
    "anyOf": [_VALUE, {"type": "object", "maxProperties": _MAX_ITEMS, "additionalProperties": _VALUE}]}}


def json_grammar(schema: Optional[dict[str, Any]]) -> str:
    import llguidance

    target = _bounded(schema) if schema else _ANY_OBJECT
    return llguidance.LLMatcher.grammar_from_json_schema(target, defaults={"whitespace_flexible": False})


def _call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    options = [{
        "type": "object",
        "properties": {"name": {"const": t.function.name}, "arguments": _bounded(t.function.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_call_grammar(tools: Sequence[ToolSpec], allow_text: bool) -> str:
    """``allow_text=False``: exactly one JSON call ``{"name":..., "arguments":...}``.
    ``allow_text=True``: either a free-text answer or ``<tool_call>{...}</tool_call>``."""
    import llguidance

    schema = _call_schema(tools)
    if not allow_text:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    lark = (
        "start: call | answer\n"
        f'call: "{TOOL_CALL_OPEN}" body "{TOOL_CALL_CLOSE}"\n'
        f"body: %json {json.dumps(schema)}\n"
        "answer: TEXT\n"
        # any text that does not open a tool call
        "TEXT: /[^<]([^<]|<[^t])*/\n"
    )
    return llguidance.LLMatcher.grammar_from_lark(lark)


class GrammarConstraint:
    """Masks logits to the tokens a grammar allows next; one per generation."""

    def __init__(self, lm: LoadedModel, grammar: str):
        import llguidance
        import llguidance.torch as lt

        tokenizer = lm.guidance_tokenizer()
        err = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
        if err:
            raise CapabilityError(f"the local model cannot constrain its output to this schema: {err}")
        self._matcher = llguidance.LLMatcher(tokenizer, grammar)
        self._lt = lt
        self._vocab = tokenizer.vocab_size
        self._mask = lt.allocate_token_bitmask(1, self._vocab)
        self._digits = lm.digit_tokens()
        self._digit_run = 0

    def apply(self, logits: Any) -> None:
        self._lt.fill_next_token_bitmask(self._matcher, self._mask, 0)
        n = min(self._vocab, logits.shape[-1])
        view = logits[:n].unsqueeze(0)
        self._lt.apply_token_bitmask_inplace(view, self._mask.to(logits.device))
        if logits.shape[-1] > n:
            logits[n:] = float("-inf")
        if self._digit_run >= _MAX_DIGIT_RUN:
            digits = logits[self._digits].clone()
            logits[self._digits] = float("-inf")
            if not bool((logits > float("-inf")).any()):  # nothing else allowed: keep the digits
                logits[self._digits] = digits

    def advance(self, token_id: int) -> None:
        if not self._matcher.consume_token(token_id):
            raise CapabilityError(f"constrained decoding rejected token {token_id}: {self._matcher.get_error()}")
        self._digit_run = self._digit_run + 1 if self._is_digit(token_id) else 0

    def _is_digit(self, token_id: int) -> bool:
        import torch

        return bool(torch.any(self._digits == token_id))

    def is_stopped(self) -> bool:
        return self._matcher.is_stopped()
