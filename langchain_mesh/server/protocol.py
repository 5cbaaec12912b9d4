"""uvicorn's httptools protocol with bounds on header size and on the time to send headers and body.

uvicorn's protocol reads headers without a size limit (httptools buffers a header value until it
ends: a 192 MB header held the event loop for 42 s) and never times out a client that sends slowly.
:class:`GuardedHttpToolsProtocol` adds the bounds of ``server.limits``:

* a request line and headers larger than ``max_header_bytes``: 431, and the connection is closed;
* headers not complete ``header_timeout`` seconds after the connection opened, or after the piece that
  began them on a kept-alive connection: 408;
* a body not complete ``body_timeout`` seconds after the piece that ended the headers: 408, and the
  app's ``receive`` answers ``http.disconnect`` (the request is dropped).

A request that arrives in one piece, the usual case, arms no timer. ``mesh serve`` runs uvicorn with
``http=GuardedHttpToolsProtocol``; the limits are those of the served app (:func:`.limits.limits_of`).

Each request's ASGI cycle is a :class:`_Cycle`: uvicorn's, except that the head of an answer with a
``content-length`` waits for the first body message and goes out in the same write. uvicorn writes
the head and the body separately: two ``send`` syscalls and two wake-ups of the client per answer, which
cost the gateway ~15% of its CPU per pass-through request on loopback (bench/gateway.py). Streamed
answers (no length) are written as before, head first.

Timers that would be armed and cancelled on every request (uvicorn's keep-alive timer, ~2.5 µs each on
uvloop) are one per connection instead, armed when none is and checking its deadline when it fires.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

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
_BODY_TOO_SLOW = _reply(b"408 Request Timeout",
                        b'{"error":{"message":"the request body was not received in time (server.limits.body_timeout)",'
                        b'"type":"invalid_request_error","param":null,"code":"request_timeout"}}')


class _HeadCatcher:
    """Stands in for the transport while uvicorn builds an answer's head: keeps its bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle, writing a fixed-length answer's head and first body piece at once.

    The head is built by uvicorn's own ``send`` (its checks and keep-alive logic unchanged) into a
    :class:`_HeadCatcher`, then held until the next message, which writes it first (in the same write
    when that message is the body). A head is never held past the app's end: ``run_asgi`` flushes it.
    """

    _held: Optional[bytes] = None

    async def send(self, message: Any) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if message["type"] == "http.response.body" and not self.disconnected:
                body = message.get("body", b"")
                if (len(body) == self.expected_content_length and not message.get("more_body", False)
                        and not self.flow.write_paused and self.scope["method"] != "HEAD"):
                    # the whole answer, the usual case: what uvicorn's send does with a last body piece that
                    # fills the content-length, in one write and without a second pass through its send
                    # (~2 µs of a pass-through request); any other body goes through uvicorn's send below
                    self.transport.write(held + body)
                    self.expected_content_length = 0
                    self.response_complete = True
                    self.message_event.set()
                    if not self.keep_alive:
                        self.transport.close()
                    self.on_response()
                    return None
                if body:  # one write for head and body; uvicorn's send then accounts for the body
                    transport = self.transport
                    self.transport = _Prefixed(transport, held)  # type: ignore[assignment]
                    try:
                        return await super().send(message)
                    finally:
                        self.transport = transport
            self.transport.write(held)
            return await super().send(message)
        if (message["type"] == "http.response.start" and not self.response_started and not self.disconnected
                and not self.flow.write_paused and message.get("status", 200) >= 200):
            transport, catcher = self.transport, _HeadCatcher()
            self.transport = catcher  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            if self.chunked_encoding is False and catcher.data:  # a length-delimited answer: hold its head
                self._held = catcher.data
            elif catcher.data:
                transport.write(catcher.data)
            return None
        return await super().send(message)

    async def run_asgi(self, app: Any) -> None:
        try:
            await super().run_asgi(app)
        finally:
            held, self._held = self._held, None
            if held is not None and not self.transport.is_closing():
                self.transport.write(held)  # an app that started an answer and never sent its body


class _Prefixed:
    """The transport for one write: ``prefix`` goes out with the first write, in the same call."""

    __slots__ = ("transport", "prefix")

    def __init__(self, transport: Any, prefix: bytes):
        self.transport = transport
        self.prefix = prefix

    def write(self, data: bytes) -> None:
        prefix, self.prefix = self.prefix, b""
        self.transport.write(prefix + data if prefix else data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


LINGER = 2.0  # seconds a refused connection keeps reading (and dropping) before it closes


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
        self._body_timeout = limits.body_timeout
        self._body_timer: Optional[asyncio.TimerHandle] = None
        self._refused = False
        self._idle_since: Optional[float] = None  # loop time of the last answer of an idle connection

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        self._disarm_body()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped unparsed
        if not self._in_head:
            super().data_received(data)
            return self._watch_body()
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
        else:
            self._watch_body()

    def _watch_body(self) -> None:
        """A body still incomplete after a piece was parsed gets ``body_timeout`` to arrive (a body that
        arrives with its headers, the usual case, never needs the timer)."""
        cycle = self.cycle
        if self._body_timer is None and cycle is not None and cycle.more_body and not cycle.response_complete:
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm_body()

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport is None or self.transport.is_closing():
            return
        if not cycle.response_started:
            self.transport.write(_BODY_TOO_SLOW)
        # closing tells the app (its receive answers http.disconnect), which drops the request (no linger:
        # a client this slow has little unread input)
        self.transport.close()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn builds its RequestResponseCycle by name; ours differs only in send and run_asgi and
        # adds no state, so the cycle becomes one before its task (and so its run_asgi) is created
        cycle.__class__ = _Cycle
        super()._start_asgi_task(cycle, app)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True  # (its bytes are counted from the piece that began it: data_received)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive timer: uvicorn arms one per answer and cancels it when the
        # next request's bytes arrive, ~2.5 µs of a pass-through request's CPU on uvloop; here one timer
        # per connection is armed when none is, and checks when it fires whether the connection has been
        # idle for the whole timeout (else it waits out the rest): the connection closes at the same time
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self._idle_since = None
            self.flow.resume_reading()  # unpause data reads if needed
            if self.pipeline:  # pipelined requests start in turn
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_since = self.loop.time()
                if self.timeout_keep_alive_task is None:
                    self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)
        self._in_head = True  # the next request's bytes count from here (the keep-alive timer runs meanwhile)
        self._head_bytes = 0

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy: an armed keep-alive timer finds it so and lets the connection be

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # busy since (its next answer arms the timer again), or closed
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:  # a later answer reset the idle time: wait out the rest
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

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
        """Answer and close, lingering: a socket closed with unread input sends a reset, which can
        destroy the answer before the client reads it; so the write side is shut first, and what the
        client still sends is read and dropped for up to :data:`LINGER` seconds (nginx's lingering close)."""
        self._disarm()
        self._disarm_body()
        self._refused = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()


