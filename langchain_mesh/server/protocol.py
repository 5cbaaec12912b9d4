"""uvicorn's httptools protocol with a bound on header size and on the time to send the headers.

uvicorn's protocol reads headers without a size limit (httptools buffers a header value until it
ends: a 192 MB header held the event loop for 42 s) and never times out a client that sends its
headers slowly. :class:`GuardedHttpToolsProtocol` adds both bounds: a request line and headers larger
than ``server.limits.max_header_bytes`` get a 431 and the connection is closed; headers not complete
``server.limits.header_timeout`` seconds after the connection opened (or after the first byte of the
next request on a kept-alive connection, when that request does not arrive in one piece) get a 408. ``mesh serve`` runs uvicorn with it
(``http=GuardedHttpToolsProtocol``); the limits are the served app's (:func:`.limits.limits_of`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import limits_of

__all__ = ["GuardedHttpToolsProtocol"]


def _reply(status: bytes, msg: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(msg) + msg)


_TOO_LARGE = _reply(b"431 Request Header Fields Too Large",
                    b'{"error":{"message":"request headers too large (server.limits.max_header_bytes)",'
                    b'"type":"invalid_request_error","param":null,"code":"headers_too_large"}}')
_TOO_SLOW = _reply(b"408 Request Timeout",
                   b'{"error":{"message":"request headers not received in time (server.limits.header_timeout)",'
                   b'"type":"invalid_request_error","param":null,"code":"request_timeout"}}')


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header size and on the time to send them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = limits_of(self.app)
        self._max_head = limits.max_header_bytes
        self._head_timeout = limits.header_timeout
        self._in_head = True      # reading a request line and headers (or waiting for the next request)
        self._head_bytes = 0
        self._head_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            return super().data_received(data)
        self._head_bytes += len(data)
        # a piece is parsed before the check (pieces are at most the transport's read size), so the
        # parser's cost is bounded by the limit plus one piece
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes > self._max_head:
                self._refuse(_TOO_LARGE)
            elif self._head_timer is None:
                # headers cut across pieces: from now on they have header_timeout to complete (a request
                # that arrives whole, the usual case, never needs the timer)
                self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True  # (its bytes are counted from the piece that began it: data_received)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_head = True  # the next request's bytes count from here (the keep-alive timer runs meanwhile)
        self._head_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and self.transport is not None and not self.transport.is_closing():
            # a connection idle between requests is the keep-alive timer's; one with a request begun is ours
            if self._head_bytes or self.cycle is None:
                self._refuse(_TOO_SLOW)

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        self.transport.write(answer)
        self.transport.close()


