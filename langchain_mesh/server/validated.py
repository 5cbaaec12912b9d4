"""Chat requests shaped like one already validated: the pass-through path's checks without pydantic.

Validating a pass-through chat request (the request model, then :func:`.translate.check_request`'s
setting checks) was ~18 of the ~57 µs of Python that ``mesh serve`` spends on it
(``bench/gateway_micro.py``), though clients send the same few shapes again and again. What is
remembered is the *fields* of a request that passed the whole validation (every key but ``model`` and
``messages``, with its value's type and the value, :meth:`KnownShapes.remember`): its settings, which
depend on those fields alone, would pass again, and its ``param_of`` (which request field set each
setting) is the same. A request with known fields is then

* *known valid* when its messages are plain as well: each a dict holding a ``role`` of system,
  developer, user or assistant, a string ``content`` and at most a string ``name``. The request model
  takes such a message with no further check and ``check_request`` has nothing to check in it, so
  neither runs;
* otherwise (tool calls, tool results, content parts) parsed by the request model and its messages
  checked as always; only the settings are not validated again (``check_request(req, known)``).

A request with new fields is validated in full, with the same 400s as before, and remembered when it
passes. Only validity is remembered, never a request: the body forwarded is still the one the client
sent. The ``model`` is checked on every request (``MeshApp._llm``), as before.

Fields whose validity is their type alone (an end-user id, a cache key) are remembered by type, so a
new user does not cost a full validation.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import orjson

__all__ = ["KnownShapes"]

_ROLES = frozenset({"system", "developer", "user", "assistant"})
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: ``Optional[str]`` fields forwarded as they are (settings ``extra``): nothing checks their value
_TYPE_ONLY = frozenset({"user", "prompt_cache_key", "safety_identifier"})
_MAX_VALUE = 512  # bytes of JSON: a larger list or object (a tool list) is validated each time
_MAX_SHAPES = 4096  # remembered shapes; the set starts again when full (a flood of shapes gains nothing)


def _plain(messages: Any) -> bool:
    if type(messages) is not list or not messages:
        return False
    for m in messages:
        if type(m) is not dict or type(m.get("content")) is not str:
            return False
        role = m.get("role")
        if type(role) is not str or role not in _ROLES:
            return False
        n = len(m)
        if n != 2 and not (n == 3 and type(m.get("name")) is str):
            return False
    return True


def _fields(data: dict[str, Any]) -> Optional[tuple[Any, ...]]:
    """The key of ``data``'s fields but model and messages, or None when it has none to give."""
    key: list[Any] = []
    for k, v in data.items():
        if k == "model" or k == "messages":
            continue
        t = type(v)
        if t in _SCALARS:
            key.append((k, t) if k in _TYPE_ONLY else (k, t, v))
        elif t is dict or t is list:
            try:
                dumped = orjson.dumps(v)
            except TypeError:  # not what orjson parses (an integer past 64 bits): validated in full
                return None
            if len(dumped) > _MAX_VALUE:
                return None
            key.append((k, t, dumped))
        else:
            return None
    return tuple(key)


class KnownShapes:
    """The shapes of the valid chat requests seen so far (one per :class:`~.app.MeshApp`)."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], Callable[..., Optional[str]]] = {}

    def check(self, data: dict[str, Any]) -> tuple[Optional[Callable[..., Optional[str]]], Optional[tuple[Any, ...]],
                                                   bool]:
        """``(param_of, key, plain)``: ``param_of`` when ``data``'s fields are those of a request that
        passed the whole validation (else None), the key to :meth:`remember` them by once validated
        (None: fields that cannot be remembered), and whether its messages are plain: with
        ``param_of``, a plain request is known valid."""
        key = _fields(data)
        if key is None:
            return None, None, False
        return self._seen.get(key), key, _plain(data.get("messages"))

    def remember(self, key: tuple[Any, ...], param_of: Callable[..., Optional[str]]) -> None:
        """``key`` (from :meth:`check`) belongs to a request that passed the whole validation."""
        if len(self._seen) >= _MAX_SHAPES:
            self._seen.clear()
        self._seen[key] = param_of
