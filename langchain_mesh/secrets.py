"""Resolvers for Databricks-style secret references, ``{{secrets/<scope>/<key>}}``.

The gateway seed (and Databricks) write central secrets as ``{{secrets/my_scope/openai_api_key}}``.
The mesh resolves them through the one resolver the config names::

    secrets:
      resolver: env                     # env | file | the name of a plugin's resolver
      options: {prefix: MESH_SECRET_}   # env: {{secrets/my_scope/openai_api_key}} is read from
                                        #      $MESH_SECRET_MY_SCOPE__OPENAI_API_KEY
    # or
    secrets:
      resolver: file
      options: {directory: /run/secrets}  # file: /run/secrets/my_scope/openai_api_key

A ``{{secrets/...}}`` reference in a config without a ``secrets:`` section is a ``ConfigError`` at
load time: it is never sent anywhere as if it were a key.

**Writing a resolver** (a vault, a cloud secret manager): subclass :class:`SecretResolver`, take your
options as keyword arguments of ``__init__`` (an option you do not know must be an error; Python's
``TypeError`` for an unexpected keyword is turned into a ``ConfigError`` naming it), implement
``resolve(scope, key)`` and raise :class:`~langchain_mesh.errors.CredentialError` (naming the scope
and key, never a value) when it cannot. Register it under the ``langchain_mesh.secret_resolvers``
entry point group::

    [project.entry-points."langchain_mesh.secret_resolvers"]
    vault = "my_package.vault:VaultResolver"

or at run time with :func:`register_secret_resolver`. ``resolve`` is called when a connection first
needs the value (not at load time), from any thread; cache inside the resolver if lookups are slow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, CredentialError

__all__ = ["SecretResolver", "EnvSecretResolver", "FileSecretResolver", "register_secret_resolver",
           "secret_resolver_names", "make_secret_resolver"]

_ENTRY_POINT_GROUP = "langchain_mesh.secret_resolvers"
_NAME_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SecretResolver:
    """Resolves ``{{secrets/<scope>/<key>}}``. Subclasses take their options as ``__init__`` keywords."""

    #: the name the config uses (``secrets.resolver``); set on registration
    name: str = ""

    def resolve(self, scope: str, key: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EnvSecretResolver(SecretResolver):
    """``{{secrets/scope/key}}`` -> ``$<prefix><SCOPE>__<KEY>`` (upper case, other characters as ``_``).

    The double underscore keeps ``a/b_c`` and ``a_b/c`` apart."""

    def __init__(self, prefix: str = "MESH_SECRET_"):
        if not isinstance(prefix, str):
            raise ConfigError("secrets.options.prefix must be a string")
        self.prefix = prefix

    def variable(self, scope: str, key: str) -> str:
        def norm(s: str) -> str:
            return re.sub(r"[^A-Za-z0-9]", "_", s).upper()

        return f"{self.prefix}{norm(scope)}__{norm(key)}"

    def resolve(self, scope: str, key: str) -> str:
        var = self.variable(scope, key)
        value = os.environ.get(var)
        if not value:
            raise CredentialError(
                f"secret {scope}/{key} is not set: the env resolver reads it from ${var}; export it")
        return value

    def __repr__(self) -> str:
        return f"EnvSecretResolver(prefix={self.prefix!r})"


class FileSecretResolver(SecretResolver):
    """``{{secrets/scope/key}}`` -> the text of ``<directory>/<scope>/<key>`` (trailing newline
    stripped), the layout of Docker and Kubernetes secret mounts."""

    def __init__(self, directory: str = "/run/secrets"):
        if not isinstance(directory, str) or not directory:
            raise ConfigError("secrets.options.directory must be a directory path")
        self.directory = Path(directory).expanduser()

    def resolve(self, scope: str, key: str) -> str:
        path = self.directory / scope / key
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise CredentialError(f"cannot read secret {scope}/{key} from {path}: {e.strerror}") from None

    def __repr__(self) -> str:
        return f"FileSecretResolver(directory={str(self.directory)!r})"


_BUILTIN: dict[str, type[SecretResolver]] = {"env": EnvSecretResolver, "file": FileSecretResolver}
_REGISTERED: dict[str, type[SecretResolver]] = {}


def register_secret_resolver(name: str, cls: type[SecretResolver]) -> None:
    """Make ``cls`` the resolver called ``name`` (``secrets.resolver: <name>``) in this process."""
    if not name or not isinstance(name, str):
        raise ValueError("a secret resolver needs a non-empty name")
    cls.name = name
    _REGISTERED[name] = cls


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=_ENTRY_POINT_GROUP)}


def secret_resolver_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def make_secret_resolver(name: str, options: Mapping[str, Any]) -> SecretResolver:
    """The configured resolver, built once at load time. Errors are ``ConfigError`` naming the key."""
    cls = _REGISTERED.get(name) or _BUILTIN.get(name)
    if cls is None:
        ep = _entry_points().get(name)
        if ep is None:
            why = (f"unknown secret resolver {name!r}; known: {', '.join(secret_resolver_names())} "
                   f"(plugins register more under the {_ENTRY_POINT_GROUP!r} entry point group)")
            raise ConfigError(f"secrets.resolver: {why}", [("secrets.resolver", why)])
        cls = ep.load()
    try:
        resolver = cls(**dict(options))
    except TypeError as e:
        why = f"the {name!r} resolver refused its options: {e}"
        raise ConfigError(f"secrets.options: {why}", [("secrets.options", why)]) from None
    resolver.name = name
    return resolver


def check_scope_key(scope: str, key: str) -> None:
    """Scope and key are single path segments (no ``..``, no separators): a file resolver cannot be
    steered outside its directory, and every resolver sees the same names."""
    for part in (scope, key):
        if not _NAME_PART.match(part) or part in (".", ".."):
            raise ValueError(f"secret scope and key may hold letters, digits, '_', '-' and '.', got {part!r}")
