"""API keys of the server: ``server.api_keys`` in the mesh config.

Keys are resolved (they may be ``{{env:...}}`` / ``{{file:...}}`` references) and kept only as
SHA-256 digests, built once at startup; a presented key is hashed and compared with every stored
digest by ``hmac.compare_digest``, so neither the values nor which key matched leak through timing.
With no keys the server is open, which is only allowed on a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Optional

from ..config import ServerConfig
from ..errors import ConfigError
from ..policies.scope import CallScope
from .errors import APIError

__all__ = ["Principal", "KeyRing", "check_bind"]

log = logging.getLogger("langchain_mesh.server")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (for usage records) and the LLM ids it may use (None: all)."""

    name: str
    allowed: Optional[frozenset[str]] = None
    #: the policies' view of this caller (limits, budgets, ledger): set for each of its requests
    scope: CallScope = field(default=CallScope(), compare=False)
    admin: bool = False  # may read the usage page and API

    def __post_init__(self) -> None:
        if self.scope.key is None:
            object.__setattr__(self, "scope", CallScope(key=self.name, user=self.name))

    def allows(self, llm_id: str) -> bool:
        return self.allowed is None or llm_id in self.allowed


ANONYMOUS = Principal("anonymous")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, config: ServerConfig):
        self._keys: list[tuple[bytes, Principal]] = []
        for i, k in enumerate(config.api_keys):
            allowed = frozenset(k.allowed_llms) if k.allowed_llms is not None else None
            scope = CallScope(key=k.name, user=k.user or k.name, team=k.team, tags=tuple(k.tags))
            self._keys.append((_digest(k.key.get(f"server.api_keys[{i}].key")),
                               Principal(k.name, allowed, scope, k.admin)))

    @property
    def open(self) -> bool:
        return not self._keys

    @property
    def admins(self) -> list[bytes]:
        """The digests of the admin keys (``admin: true``): what signs the usage page's session cookie."""
        return [d for d, p in self._keys if p.admin]

    def admin_digest(self, presented: bytes) -> Optional[bytes]:
        """The digest of ``presented`` when it is an admin key (constant time in which one), else None."""
        got = hashlib.sha256(presented.strip()).digest()
        found = None
        for digest, principal in self._keys:
            if hmac.compare_digest(digest, got) and principal.admin:
                found = digest
        return found

    def authenticate(self, authorization: Optional[bytes]) -> Principal:
        """The principal of an ``Authorization: Bearer <key>`` header; 401 otherwise."""
        if not self._keys:
            return ANONYMOUS
        if not authorization or not authorization[:7].lower() == b"bearer ":
            raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                           type="invalid_request_error", code="invalid_api_key")
        presented = hashlib.sha256(authorization[7:].strip()).digest()
        found = None
        for digest, principal in self._keys:  # every digest is compared: constant time in which one matched
            if hmac.compare_digest(digest, presented):
                found = principal
        if found is None:
            raise APIError(401, "Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key")
        return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyRing) -> None:
    """Refuse to serve without keys anywhere but loopback; say loudly that loopback is open."""
    if not keys.open:
        return
    if not _is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without API keys: anyone who can reach it could use every LLM of "
            "the mesh. Add keys under server.api_keys in the config, or bind a loopback address (127.0.0.1).",
            [("server.api_keys", "required to listen on a non-loopback address")])
    log.warning("mesh serve: no API keys configured (server.api_keys); the server on %s is UNAUTHENTICATED: "
                "every program and user of this machine can use it (web pages cannot: requests with a foreign "
                "Host or Origin, or a body that is not JSON, are refused)", host)
