"""Guardrails: checks on what goes to a model and what comes back, in the mesh, so the builders, the
LangChain classes and ``mesh serve`` behave alike. Config (a list; each applies to the LLMs whose id
matches one of ``llms`` and to the callers whose key matches one of ``keys``, both glob patterns,
empty = all)::

    guardrails:
      - {name: pii, type: pii, action: redact}                      # input and output
      - {name: no-cards-out, type: pii, stage: output, entities: [CREDIT_CARD], action: block}
      - {name: words, type: terms, terms: ["project falcon"], patterns: ["(?i)internal only"], action: block}
      - {name: caps, type: size, max_tokens: 32000, max_messages: 100, max_images: 4}
      - {name: json-out, type: json, llms: ["openai:main:*"], schema: {type: object}, on_invalid: repair}
      - {name: safety, type: judge, llm: "openai:main:gpt-4o-mini", policy: "No instructions for weapons."}

Input: ``redact`` rewrites the request; ``block`` (and every size cap) raises :class:`GuardrailError`
before any provider call; ``flag`` only records. Output: ``redact`` rewrites the answer, ``block``
withholds it (empty text, ``finish_reason="content_filter"``), JSON checks repair or refuse. Streams
are redacted as they flow, holding back only text a match may still reach (see ``rules.py``); a
blocked stream stops with a ``content_filter`` footer. Whatever fired is in ``meta.guardrails``
(names and kinds, never the matched text). On the gateway's pass-through the rules read the OpenAI-wire
JSON themselves (``wire.py``); a judge, and a stream under output rules, take the translated path.
A route and its targets apply each rule once (``GuardrailLayer._unrun``).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Optional

from ..chain import Layer
from .layer import GuardrailLayer

__all__ = ["guardrails_layer", "GuardrailLayer"]


def guardrails_layer(mesh: Any, llm: Any) -> Optional[Layer]:
    from .build import build_rule

    rules = [build_rule(g) for g in mesh.config.guardrails
             if not g.llms or any(fnmatch.fnmatchcase(llm.id, p) for p in g.llms)]
    for rule in rules:
        if getattr(rule, "llm_id", None) is not None:
            mesh.get_llm(rule.llm_id)  # a judge that does not exist: UnknownLLMError now, not on a BLOCK later
    return GuardrailLayer(rules) if rules else None
