"""Who a call is for and how the caller wants it treated: read by the policy layers.

The gateway sets it per request from the caller's API key (``server.api_keys[]``: name, user, team,
tags); library code sets it around its calls::

    from langchain_mesh.policies.scope import call_scope

    with call_scope(key="batch-job", team="search", sticky_key="user-42", cache=False):
        chat.invoke("hello")   # limits and budgets of key/team, the same route target for user-42, no cache

A context variable carries it, so each asyncio task and thread the mesh starts for a call sees the
scope of the call that started it. Unset fields fall back to the per-user identity
(:func:`langchain_mesh.credentials.identity.current_user`).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

__all__ = ["CallScope", "call_scope", "current_scope", "set_scope", "reset_scope"]


@dataclass(frozen=True)
class CallScope:
    key: Optional[str] = None  # the API key's name (gateway) or a name the library caller chooses
    user: Optional[str] = None
    team: Optional[str] = None
    tags: tuple[str, ...] = ()
    sticky_key: Optional[str] = None  # same key -> same traffic-split target (A/B tests)
    cache: Optional[bool] = None  # False: bypass the response cache for these calls
    extra: dict[str, Any] = field(default_factory=dict)


_EMPTY = CallScope()
_SCOPE: ContextVar[CallScope] = ContextVar("langchain_mesh_scope", default=_EMPTY)


def current_scope() -> CallScope:
    return _SCOPE.get()


@contextlib.contextmanager
def call_scope(**fields: Any) -> Iterator[CallScope]:
    """Narrow the current scope with ``fields`` for the calls inside the block."""
    unknown = set(fields) - set(CallScope.__dataclass_fields__)
    if unknown:
        raise TypeError(f"call_scope() got unknown field(s) {sorted(unknown)}; "
                        f"known: {sorted(CallScope.__dataclass_fields__)}")
    token = _SCOPE.set(replace(_SCOPE.get(), **fields))
    try:
        yield _SCOPE.get()
    finally:
        _SCOPE.reset(token)


def set_scope(scope: CallScope):  # type: ignore[no-untyped-def]
    """For servers: set the scope of the current task; returns the token to reset."""
    return _SCOPE.set(scope)


def reset_scope(token) -> None:  # type: ignore[no-untyped-def]
    _SCOPE.reset(token)
