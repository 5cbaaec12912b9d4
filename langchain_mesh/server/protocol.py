"""``mesh serve``'s HTTP/1.1 protocol: httptools parsing, the app called through ASGI, bounded requests.

uvicorn runs the server (sockets, workers, signals, lifespan, graceful shutdown) with
``http=MeshHttpProtocol``; this module is what it speaks on each connection. Why not uvicorn's own
httptools protocol: its per-request machinery (a ``RequestResponseCycle`` built from eleven keyword
arguments, an ``asyncio.Event`` waited on and set three times, two regular expressions per header,
a head and a body written apart) was ~110k of the ~315k instructions a pass-through request cost the
gateway (``bench/gateway_micro.py CALLGRIND=1``: a bare ASGI app on it, 149k; a bare httptools
protocol answering the same bytes, 36k). This one keeps uvicorn's behaviour (its answers to a bad
request, an app that fails or answers wrongly, pipelining, ``Expect: 100-continue``, flow control,
keep-alive and shutdown) with per-request state in one slotted object and no event or regex where a
flag or a cache does. The app is still called through ASGI: the same app runs under any ASGI server.

The bounds of ``server.limits`` (:func:`.limits.limits_of`)::

    server:
      limits: {max_header_bytes: 65536, header_timeout: 10, body_timeout: 60}

* a request line and headers larger than ``max_header_bytes``: 431, and the connection is closed
  (httptools would buffer a header value until it ends: a 192 MB header held the event loop for 42 s);
* headers not complete ``header_timeout`` seconds after the connection opened, or after the piece that
  began them on a kept-alive connection: 408;
* a body not complete ``body_timeout`` seconds after the piece that ended the headers: 408, and the
  app's ``receive`` answers ``http.disconnect`` (the request is dropped).

A request that arrives in one piece, the usual case, arms no timer. An answer with a
``content-length`` goes out in one write, head and first body piece together (two writes cost the
client two wake-ups). The keep-alive timer is one per connection, armed when none is and checking
its deadline when it fires, not armed and cancelled on every request (~2.5 µs each on uvloop).
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import re
import urllib.parse
from collections import deque
from typing import Any, Optional

import httptools
from uvicorn.protocols.utils import get_client_addr, get_local_addr, get_path_with_query_string, get_remote_addr, is_ssl

from .._loop import serving
from .limits import limits_of

__all__ = ["MeshHttpProtocol"]

log = logging.getLogger("uvicorn.error")  # where uvicorn's protocol says what went wrong
access_log = logging.getLogger("uvicorn.access")

HIGH_WATER = 65536  # request body bytes buffered before reading pauses (uvicorn's HIGH_WATER_LIMIT)
LINGER = 2.0  # seconds a refused connection keeps reading (and dropping) before it closes

# the characters RFC 9110 forbids in a header name, and the control characters forbidden in a value:
# an answer with one is refused (RuntimeError in the app's send), never written (header injection)
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
# header pairs already checked: the app's answers repeat a handful (content types, fixed values), so
# each is searched once; bounded, since values such as content lengths vary
_CHECKED: set[tuple[bytes, bytes]] = set()


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


_STATUS = {code: _status_line(code) for code in range(100, 600)}


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
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}  # (a fresh dict per answer would cost, and no app writes to it)
_SERVER_ERROR = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"),
                 (b"connection", b"close")]
_BUSY = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"19"), (b"connection", b"close")]


def _check(name: bytes, value: bytes) -> None:
    if _BAD_NAME.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    if _BAD_VALUE.search(value):
        raise RuntimeError("Invalid HTTP header value.")


def _checked(name: bytes, value: bytes) -> None:
    pair = (name, value)
    if pair not in _CHECKED:
        _check(name, value)
        if len(_CHECKED) < 4096:
            _CHECKED.add(pair)


class _Cycle:
    """One request: the ``receive`` and ``send`` its app is called with, and what they have done."""

    __slots__ = ("conn", "scope", "head_only", "keep_alive", "waiting_100", "parts", "buffered", "more_body",
                 "ready", "waiter", "disconnected", "started", "complete", "chunked", "left", "held", "done")

    def __init__(self, conn: "MeshHttpProtocol", scope: dict[str, Any], keep_alive: bool, expect_100: bool):
        self.conn = conn
        self.scope = scope
        self.head_only = scope["method"] == "HEAD"
        self.keep_alive = keep_alive
        self.waiting_100 = expect_100
        self.parts: list[bytes] = []  # body pieces not yet handed to the app
        self.buffered = 0
        self.more_body = True
        self.ready = False  # something new for receive: body, its end, the answer's end, a disconnect
        self.waiter: Optional[asyncio.Future[None]] = None  # a receive waiting for that
        self.disconnected = False
        self.started = False  # the answer's head was sent
        self.complete = False  # ... and its whole body
        self.chunked: Optional[bool] = None
        self.left = 0  # bytes the content-length still promises
        self.held: Optional[bytes] = None  # a length-delimited answer's head, waiting for its body
        self.done = False  # the app has returned

    def wake(self) -> None:
        self.ready = True
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def run(self, app: Any) -> None:
        conn = self.conn
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # noqa: BLE001 - as uvicorn: said, and the client answered or cut
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.started:
                await self._send_500()
            else:
                self._flush()
                conn.transport.close()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self._flush()
                conn.transport.close()
            elif not self.started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self._flush()
                conn.transport.close()
        finally:
            self.done = True

    def _flush(self) -> None:
        """A held head goes out (an app that started an answer and never sent its body)."""
        held, self.held = self.held, None
        if held is not None and not self.conn.transport.is_closing():
            self.conn.transport.write(held)

    async def _send_500(self) -> None:
        await self.send({"type": "http.response.start", "status": 500, "headers": _SERVER_ERROR})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.waiting_100:
            self.waiting_100 = False
            if not conn.transport.is_closing():
                conn.transport.write(_CONTINUE)
        if not self.disconnected and not self.complete:
            if not self.ready:
                conn.resume_reading()
                waiter = self.waiter  # (shared by receives that wait at once, as an asyncio.Event would be)
                if waiter is None:
                    waiter = self.waiter = conn.loop.create_future()
                await waiter
            self.ready = False
        if self.disconnected or self.complete:
            return _DISCONNECT
        parts, self.parts, self.buffered = self.parts, [], 0
        return {"type": "http.request", "body": b"".join(parts), "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self._start(message)
        elif not self.complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")

    def _start(self, message: dict[str, Any]) -> None:
        self.started = True
        self.waiting_100 = False
        status = message["status"]
        conn = self.conn
        if conn.access_log:
            access_log.info('%s - "%s %s HTTP/%s" %d', get_client_addr(self.scope), self.scope["method"],
                            get_path_with_query_string(self.scope), self.scope["http_version"], status)
        out = [_STATUS[status], conn.default_head]
        closes = False
        for name, value in message.get("headers", ()):
            name = name.lower()
            length = name == b"content-length"
            # a length of digits is a valid value: not searched, nor kept in _CHECKED (lengths vary: once it
            # was full of them, every answer's length would be searched again)
            if not (length and value.isdigit()):
                _checked(name, value)
            if length and self.chunked is None:
                self.left = int(value)  # (bytes: a value that is no number raises ValueError, as its str did)
                self.chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.left = 0
                self.chunked = True
            elif name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
                self.keep_alive = False
                closes = True
            out += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closes:
            out.append(b"connection: close\r\n")
        if self.chunked is None and not self.head_only and status not in (204, 304):
            self.chunked = True  # neither content-length nor transfer-encoding given
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"\r\n")
        head = b"".join(out)
        if self.chunked is False:
            self.held = head  # written with the first body piece
        else:
            conn.transport.write(head)

    def _body(self, body: bytes, more: bool) -> None:
        if self.head_only:
            self.left = 0
            data = b""
        elif self.chunked:
            data = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (b"" if more else b"0\r\n\r\n")
        else:
            if len(body) > self.left:
                raise RuntimeError("Response content longer than Content-Length")
            self.left -= len(body)
            data = body
        held = self.held
        if held is not None:
            self.held = None
            data = held + data
        conn = self.conn
        if data:
            conn.transport.write(data)
        if not more:
            if self.left:
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.wake()
            if not self.keep_alive:
                conn.transport.close()
            if not self.done:
                conn.response_complete()


class MeshHttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection of ``mesh serve`` (made by uvicorn's server: ``http=MeshHttpProtocol``)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.access_log = access_log.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        try:  # answer the first of pipelined requests even when the client closes after sending them
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # httptools < 0.6.3
            pass
        self.root_path = config.root_path
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.limit_concurrency = config.limit_concurrency
        self.fresh_context = bool(getattr(config, "reset_contextvars", False))
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.timeout_keep_alive = config.timeout_keep_alive
        self.timeout_keep_alive_task: Optional[asyncio.TimerHandle] = None
        limits = limits_of(self.app)
        self._max_head = limits.max_header_bytes
        self._head_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self.transport: Any = None
        self.server: Any = None
        self.client: Any = None
        self.scheme = "http"
        self.cycle: Optional[_Cycle] = None  # the request read last
        self.running: Optional[_Cycle] = None  # the request being answered (pipelined ones wait their turn)
        self.pipeline: deque[_Cycle] = deque()
        self.read_paused = False
        self.write_paused = False
        self._drains: list[asyncio.Future[None]] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100 = False
        self._in_head = True  # reading a request line and headers (or waiting for the next request)
        self._head_bytes = 0
        self._head_timer: Optional[asyncio.TimerHandle] = None
        self._body_timer: Optional[asyncio.TimerHandle] = None
        self._refused = False
        self._idle_since: Optional[float] = None  # loop time of the last answer of an idle connection

    @property
    def default_head(self) -> bytes:
        """uvicorn's default headers (``date``, ``server``), as head lines; the server renews them each second."""
        headers = self.server_state.default_headers
        if headers is not _head_of[0]:
            for name, value in headers:  # (uvicorn's date and server lines, and any --header of its config)
                _check(name, value)  # (not remembered: the date changes every second)
            _head_of[:] = [headers, b"".join(b"%s: %s\r\n" % (n.lower(), v) for n, v in headers)]
        return _head_of[1]  # type: ignore[no-any-return]

    # ---- the connection --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self.connections.add(self)
        self.transport = transport
        serving(self.loop)  # the policies and clients ask for the running loop without a getpid (_loop.py)
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.connections.discard(self)
        self._disarm()
        self._disarm_body()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        for cycle in {self.cycle, self.running, *self.pipeline}:
            if cycle is not None:
                if not cycle.complete:
                    cycle.disconnected = True
                cycle.wake()
        self.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None

    def eof_received(self) -> None:
        pass

    def shutdown(self) -> None:
        """uvicorn's server asks for a graceful shutdown: close now when idle, else after this answer."""
        cycle = self.cycle
        if cycle is None or cycle.complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drains, self._drains = self._drains, []
        for fut in drains:
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        while self.write_paused:
            fut = self.loop.create_future()
            self._drains.append(fut)
            await fut

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped unparsed
        self._idle_since = None  # busy: an armed keep-alive timer finds it so and lets the connection be
        if not self._in_head:
            self._feed(data)
            return self._watch_body()
        self._head_bytes += len(data)
        # a piece is parsed before the check (pieces are at most the transport's read size), so the
        # parser's cost is bounded by the limit plus one piece
        self._feed(data)
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes > self._max_head:
                self._refuse(_TOO_LARGE)
            elif self._head_timer is None:
                # headers cut across pieces: from now on they have header_timeout to complete (a request
                # that arrives whole, the usual case, never needs the timer)
                self._arm()
        else:
            self._watch_body()

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            log.warning("Invalid HTTP request received.")
            self._bad_request(b"Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:  # no protocol to upgrade to: answered as plain HTTP (as uvicorn)
            log.warning("Unsupported upgrade request.")

    def _bad_request(self, msg: bytes) -> None:
        self.transport.write(_STATUS[400] + self.default_head + b"content-type: text/plain; charset=utf-8\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n" % len(msg) + msg)
        self.transport.close()

    # ---- the parser's callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True  # (its bytes are counted from the piece that began it: data_received)
        self.url = b""
        self.headers = []
        self.expect_100 = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 (5.5) excludes from the value
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        parser = self.parser
        version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        scope = {"type": "http", "asgi": self.asgi, "http_version": version, "server": self.server,
                 "client": self.client, "scheme": self.scheme, "method": parser.get_method().decode("ascii"),
                 "root_path": root, "path": root + path, "raw_path": root.encode("ascii") + raw_path if root
                 else raw_path, "query_string": url.query or b"", "headers": self.headers}
        if self.app_state:
            scope["state"] = self.app_state.copy()
        cycle = _Cycle(self, scope, version != "1.0" and parser.should_keep_alive(), self.expect_100)
        previous, self.cycle = self.cycle, cycle
        if previous is None or previous.complete:
            self._start(cycle)
        else:  # pipelined: answered in turn (response_complete starts it), reading paused meanwhile
            self.pause_reading()
            self.pipeline.appendleft(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.parts.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > HIGH_WATER:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        self._disarm_body()
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.more_body = False
        cycle.wake()

    # ---- requests in turn ----------------------------------------------------------------------------

    def _start(self, cycle: _Cycle) -> None:
        self.running = cycle
        app = self.app
        if self.limit_concurrency is not None and (len(self.connections) >= self.limit_concurrency
                                                   or len(self.tasks) >= self.limit_concurrency):
            log.warning("Exceeded concurrency limit.")
            app = _service_unavailable
        work = cycle.run(app)
        task = self.loop.create_task(work, context=contextvars.Context()) if self.fresh_context \
            else self.loop.create_task(work)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def response_complete(self) -> None:
        self.server_state.total_requests += 1
        self._in_head = True  # the next request's bytes count from here (the keep-alive timer runs meanwhile)
        self._head_bytes = 0
        if self.transport.is_closing():
            return
        self.resume_reading()
        if self.pipeline:  # the next pipelined request, in turn
            self._start(self.pipeline.pop())
        else:
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    # ---- timers --------------------------------------------------------------------------------------

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

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _watch_body(self) -> None:
        """A body still incomplete after a piece was parsed gets ``body_timeout`` to arrive (a body that
        arrives with its headers, the usual case, never needs the timer)."""
        cycle = self.cycle
        if self._body_timer is None and cycle is not None and cycle.more_body and not cycle.complete:
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_timed_out)

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport is None or self.transport.is_closing():
            return
        if not cycle.started:
            self.transport.write(_BODY_TOO_SLOW)
        # closing tells the app (its receive answers http.disconnect), which drops the request (no linger:
        # a client this slow has little unread input)
        self.transport.close()

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


_head_of: list[Any] = [None, b""]  # the default headers last seen, and their head lines


async def _service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": _BUSY})
    await send({"type": "http.response.body", "body": b"Service Unavailable", "more_body": False})
