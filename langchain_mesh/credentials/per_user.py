"""Per-user connections: a connection whose settings hold ``{{user}}`` references gets one instance
per calling user, built from a copy of its config with each ``{{user}}`` replaced by that user's
stored value. Nothing else changes: every connection type (built-in or plugin) takes per-user
credentials this way, and each user's instance keeps its own clients and pools.

::

    connections:
      myopenai:
        type: openai
        api_key: "{{user}}"          # each analyst's own key: mesh credentials set myopenai

An instance is rebuilt when the user's stored value changes (a fingerprint of the values is part of
the cache key) and the replaced one is closed.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pydantic import BaseModel

from ..config import Secret, _secrets_in
from ..errors import MissingUserCredentialError

if TYPE_CHECKING:
    from ..connections.base import Connection

__all__ = ["user_slots", "PerUserConnections"]


def user_slots(config: BaseModel) -> dict[str, list[str]]:
    """The ``{{user}}`` references of a connection config: credential target -> its fields."""
    out: dict[str, list[str]] = {}
    for _, s in _secrets_in(config, ""):
        if s.kind == "user" and s.user_slot is not None:
            target, field = s.user_slot
            if field not in out.setdefault(target, []):
                out[target].append(field)
    return out


def _replace(obj: Any, values: Mapping[tuple[str, str], str]) -> Any:
    """A copy of ``obj`` with each bound ``{{user}}`` Secret replaced by a masked literal."""
    if isinstance(obj, Secret):
        if obj.kind == "user" and obj.user_slot is not None:
            return Secret.literal(values[obj.user_slot])  # never parsed: a user cannot name the server's variables
        return obj
    if isinstance(obj, BaseModel):
        update = {}
        for k in type(obj).model_fields:
            v = getattr(obj, k, None)
            nv = _replace(v, values)
            if nv is not v:
                update[k] = nv
        return obj.model_copy(update=update) if update else obj
    if isinstance(obj, dict):
        new = {k: _replace(v, values) for k, v in obj.items()}
        return new if any(new[k] is not obj[k] for k in obj) else obj
    if isinstance(obj, list):
        new_l = [_replace(v, values) for v in obj]
        return new_l if any(a is not b for a, b in zip(new_l, obj)) else obj
    return obj


def missing_message(user: str, target: str, fields: list[str]) -> str:
    body = ", ".join(f'"{f}": "..."' for f in fields)
    return (f"no stored credential for user {user!r} for {target!r} (needed: {', '.join(fields)}); each user "
            f"sets their own: `mesh credentials set {target} --user {user}` or, through mesh serve, "
            f"PUT /v1/credentials/{target} with {{{body}}}")


class PerUserConnections:
    """The per-user instances of the mesh's per-user connections."""

    def __init__(self, store_factory: Callable[[], Any]):
        self._store_factory = store_factory
        self._store: Any = None
        self._lock = threading.Lock()
        self._conns: dict[tuple[str, str], tuple[str, "Connection"]] = {}

    @property
    def store(self) -> Any:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._store_factory()
        return self._store

    def values_for(self, user: str, slots: dict[str, list[str]]) -> dict[tuple[str, str], str]:
        values: dict[tuple[str, str], str] = {}
        for target, fields in slots.items():
            stored = self.store.get(user, target) or {}
            missing = [f for f in fields if not stored.get(f)]
            if missing:
                raise MissingUserCredentialError(missing_message(user, target, missing),
                                                 user=user, target=target, fields=missing)
            for f in fields:
                values[(target, f)] = stored[f]
        return values

    def connection(self, base: "Connection", slots: dict[str, list[str]], user: str) -> "Connection":
        values = self.values_for(user, slots)
        digest = hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()
        key = (base.name, user)
        found = self._conns.get(key)
        if found is not None and found[0] == digest:
            return found[1]
        with self._lock:
            found = self._conns.get(key)
            if found is not None and found[0] == digest:
                return found[1]
            conn = type(base)(base.name, _replace(base.config, values))
            self._conns[key] = (digest, conn)
        if found is not None:
            found[1].close()  # the user's previous credential: its clients go
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for _, c in conns:
            c.close()


def open_store(config: Any) -> Any:
    """The credential store a mesh config describes."""
    from .store import FileCredentialStore, default_path, load_key

    cfg = config.credentials
    path = cfg.path or default_path()
    return FileCredentialStore(path, load_key(cfg.key))


