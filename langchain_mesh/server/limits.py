"""The one place that bounds what a request may cost the gateway: header size and time, body size and time.

The headers' size and time and the body's time are bounded in the HTTP protocol (:mod:`.protocol`:
431, 408), the body's size here by :func:`read_body` (413), the embeddings inputs by the app (400); all
read these limits.

The limits come from the mesh config and can be raised there::

    server:
      limits:
        max_header_bytes: 65536      # request line + headers (431 beyond)
        header_timeout: 10           # seconds to send them (408 after)
        max_body_bytes: 33554432     # 32 MiB (413 beyond)
        body_timeout: 60             # seconds to send the body (408 after)
        max_embedding_inputs: 2048   # inputs of one /v1/embeddings request (400 beyond)
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from ..config import ServerLimits
from .errors import APIError

__all__ = ["read_body", "ClientGone", "limits_of"]

_DEFAULT = ServerLimits()


class ClientGone(Exception):
    """The client disconnected before its request was read or answered."""


def limits_of(app: Any) -> ServerLimits:
    # uvicorn may wrap the app in middleware (each keeps the inner one as ``.app``)
    for _ in range(4):
        limits = getattr(app, "limits", None)
        if isinstance(limits, ServerLimits):
            return limits
        app = getattr(app, "app", None)
    return _DEFAULT


Receive = Callable[[], Awaitable[dict[str, Any]]]


async def read_body(receive: Receive, limits: ServerLimits) -> bytes:
    """The request body: 413 beyond ``max_body_bytes``. (The time to send it is bounded by the
    protocol, :mod:`.protocol`: a timer there costs nothing for a body that arrives with its headers,
    where one here would cost every request.)"""
    msg = await receive()
    if not msg.get("more_body") and msg["type"] == "http.request":  # the usual case: all here at once
        body = msg.get("body", b"")
        if len(body) > limits.max_body_bytes:
            raise _too_large(limits)
        return body
    return await _read_rest(receive, msg, limits)


async def _read_rest(receive: Receive, msg: dict[str, Any], limits: ServerLimits) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        if msg["type"] == "http.disconnect":
            raise ClientGone
        part = msg.get("body", b"")
        size += len(part)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        if not msg.get("more_body"):
            return part if not parts else b"".join(parts) + part
        parts.append(part)
        msg = await receive()


def _too_large(limits: ServerLimits) -> APIError:
    return APIError(413, f"request body larger than {limits.max_body_bytes} bytes (server.limits.max_body_bytes)",
                    code="body_too_large")
