"""Who is calling: the user whose stored credentials a per-user connection uses.

In ``mesh serve`` it is the name of the caller's API key (``server.api_keys[].name``). In library
use it is, first found: :func:`acting_as` around the calls, ``Mesh(..., user="alice")``, the OS user::

    from langchain_mesh.credentials import acting_as

    with acting_as("alice"):
        chat.invoke("hello")          # alice's own OpenAI key, if the connection says {{user}}

A context variable carries it, so each asyncio task and each thread the mesh starts for a call sees
the identity of the call that started it, never another request's.
"""

from __future__ import annotations

import contextlib
import getpass
from contextvars import ContextVar
from typing import Iterator, Optional

__all__ = ["acting_as", "current_user", "os_user"]

_USER: ContextVar[Optional[str]] = ContextVar("langchain_mesh_user", default=None)


def current_user() -> Optional[str]:
    """The user set by :func:`acting_as` (or the server) for this call, or None."""
    return _USER.get()


@contextlib.contextmanager
def acting_as(user: str) -> Iterator[None]:
    if not isinstance(user, str) or not user:
        raise ValueError("acting_as() needs a non-empty user name")
    token = _USER.set(user)
    try:
        yield
    finally:
        _USER.reset(token)


def set_user(user: Optional[str]):  # type: ignore[no-untyped-def]
    """For servers: set the caller for the current task; returns the token to reset."""
    return _USER.set(user)


def reset_user(token) -> None:  # type: ignore[no-untyped-def]
    _USER.reset(token)


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): a fixed name, not an error
        return "default"
