"""LLM ids: ``<connection type>:<connection name>:<model>``, and ``route:<name>`` for routes.

Only the first two ``:`` separate fields; the model part keeps any further ``:`` (Bedrock ids such as
``anthropic.claude-3-sonnet-20240229-v1:0``, local model options such as ``...:promptDriven=true``).
A route (a virtual LLM of the config's ``routes:``) parses to ``LLMId("route", name, "")``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidLLMIdError, KnowledgeBankError


#: the connection type of route ids (no connection type may take this name)
ROUTE = "route"


class LLMId(NamedTuple):
    connection_type: str
    connection_name: str
    model: str

    def __str__(self) -> str:
        return format_llm_id(self.connection_type, self.connection_name, self.model)


def parse_llm_id(llm_id: str) -> LLMId:
    if not isinstance(llm_id, str):
        raise InvalidLLMIdError(f"an LLM id must be a string, got {type(llm_id).__name__}")
    parts = llm_id.split(":", 2)
    if len(parts) == 2 and parts[0] == ROUTE and parts[1].strip():
        return LLMId(ROUTE, parts[1], "")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise InvalidLLMIdError(
            f"invalid LLM id {llm_id!r}: expected '<connection type>:<connection name>:<model>', "
            "for example 'openai:myopenai:gpt-4o', or 'route:<name>' for a route (list the ids with `mesh models`)")
    return LLMId(*parts)


def format_llm_id(connection_type: str, connection_name: str, model: str) -> str:
    if connection_type == ROUTE and not model:
        if not connection_name or ":" in connection_name:
            raise InvalidLLMIdError(f"the route name {connection_name!r} must be non-empty and contain no ':'")
        return f"{ROUTE}:{connection_name}"
    for label, part in (("connection type", connection_type), ("connection name", connection_name)):
        if not part or ":" in part:
            raise InvalidLLMIdError(f"the {label} {part!r} must be non-empty and contain no ':'")
    if not model:
        raise InvalidLLMIdError("the model part of an LLM id must be non-empty")
    return f"{connection_type}:{connection_name}:{model}"


# A name that becomes a folder name (knowledge banks: ``banks/<id>``): letters, digits, ``_ . -``,
# starting with a letter or digit, so that it can be neither ``..`` nor a path nor hidden.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_bank_id(kb_id: object) -> str:
    """``kb_id`` when it is a usable knowledge-bank id; :class:`KnowledgeBankError` otherwise."""
    if not isinstance(kb_id, str) or not _FOLDER_NAME.fullmatch(kb_id):
        raise KnowledgeBankError(
            f"invalid knowledge bank id {kb_id!r}: use 1-128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (the id names the bank's folder, so no '/' or '..')")
    return kb_id
