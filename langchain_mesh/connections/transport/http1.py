"""A lean async HTTP/1.1 client for the request hot path: keep-alive connections per origin on asyncio
protocols, answers parsed by httptools (llhttp, the parser uvicorn uses).

Why not aiohttp or httpx: behind ``mesh serve`` the upstream call is most of the gateway's own cost,
and a general client spends it on what a JSON POST to a known endpoint does not need (cookie jars,
tracing hooks, header multidicts rebuilt per request, redirects, a request object per call). Here a
:class:`Target` (method, URL and headers) is encoded to bytes once; a request is one ``writelines``
of that head, the body's length and the body; the answer is fed to llhttp as it arrives.

What it does: TLS (the SDK's CA bundle: certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), chunked and
length-delimited bodies, a connect timeout and a read timeout between arrivals (httpx's and aiohttp's
``sock_read``), a per-origin connection limit, one retry on a fresh connection when a reused keep-alive
connection turns out closed before any answer byte, flow control for streamed bodies, and closing the
connection whenever an answer is abandoned before its end (so an upstream stops generating).
What it leaves out, by design: proxies (the caller falls back to the SDK when the environment names
one), redirects, cookies, compression (no ``Accept-Encoding`` is sent) and HTTP/2.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from typing import Any, Optional
from urllib.parse import urlsplit

try:
    import httptools
except ImportError:  # then nothing uses this client (openai_base.lean_transport)
    httptools = None

__all__ = ["HTTPClient", "Target", "Response", "HTTPError", "ConnectError", "ConnectionClosed", "ReadTimeout",
           "ProtocolError"]


class HTTPError(Exception):
    """A transport failure (no HTTP status to report)."""


class ConnectError(HTTPError):
    pass


class ConnectionClosed(HTTPError):
    pass


class ProtocolError(HTTPError):
    pass


class ReadTimeout(HTTPError, TimeoutError):
    pass


_DELIMITING = (b"content-length", b"transfer-encoding")  # headers that say where a body ends
_MAX_HEAD = 1 << 20  # bytes of an answer's status line and headers (llhttp sets no bound)
_STREAM_HIGH_WATER = 1 << 20  # buffered bytes of a streamed answer before the socket stops being read


class Target:
    """``method url`` with fixed headers, encoded once: what a connection sends before each body."""

    __slots__ = ("origin", "head", "url")

    def __init__(self, method: str, url: str, headers: Any = ()):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            from ...redact import redact_url  # the URL may carry a password or a token

            raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname
        default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
        host_header = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
        items = headers.items() if hasattr(headers, "items") else headers
        for k, v in items:
            if k.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                continue  # this client's own: the body's length is added per request
            if any(c in f"{k}{v}" for c in "\r\n\0"):
                raise ValueError(f"header {k!r} contains a line break")
            lines.append(f"{k}: {v}")
        self.origin = (scheme, host, port)
        self.url = url
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the answer being received is ``response``."""

    def __init__(self, origin: tuple[str, str, int]):
        self.origin = origin
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Optional[Response] = None
        self.closed = False
        self.paused = False
        self.read_timer: Any = None  # the read timeout's timer, armed lazily (see Response._wait)
        self.interim = False  # parsing an interim answer (100 Continue, 103 Early Hints): the answer follows

    # asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None:  # bytes nobody asked for: the connection can no longer be trusted
            self.close()
            return
        if not resp.status:  # the head is not whole yet: its bytes are kept (see Response.raw_headers)
            resp.head.append(data)
            resp.head_size += len(data)
            if resp.head_size > _MAX_HEAD and len(resp.head) > 1:  # (one piece may hold a body too)
                resp._fail(ProtocolError(f"the server's answer headers are larger than {_MAX_HEAD} bytes"))
                self.close()
                return
        resp.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            resp._fail(ProtocolError(f"the server sent an invalid HTTP answer ({e})"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self._disarm()
        resp = self.response
        if resp is not None and not resp.done:
            if resp.status and not resp.length_known():  # a body delimited by the close: it has ended
                resp._complete()
            else:
                why = f": {exc}" if exc else ""
                resp._fail(ConnectionClosed(f"the server closed the connection before the answer ended{why}"))

    # httptools callbacks (no on_header: the headers are read from the head's bytes when asked for; a
    # callback per header line cost ~0.2 µs each, ~3.5 µs a request with the eighteen more lines
    # api.openai.com sends than the bench's upstream, though only a failed answer's are read)

    def on_headers_complete(self) -> None:
        resp = self.response
        p = self.parser
        status = p.get_status_code()
        if status < 200:  # an interim answer, parsed by llhttp as a message of its own: the answer follows
            self.interim = True
            return
        resp.status = status  # type: ignore[union-attr]
        resp.keep_alive = p.should_keep_alive()  # type: ignore[union-attr]
        resp._wake()  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        resp = self.response
        resp.chunks.append(body)  # type: ignore[union-attr]
        resp.buffered += len(body)  # type: ignore[union-attr]
        if resp.streaming and resp.buffered > _STREAM_HIGH_WATER and not self.paused:  # type: ignore[union-attr]
            self.paused = True
            self.transport.pause_reading()
        resp._wake()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.response._complete()  # type: ignore[union-attr]

    def _read_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """The read timer fired: the waiting answer (if any) fails once its own deadline has passed, else
        the timer waits out the rest."""
        self.read_timer = None
        resp = self.response
        if resp is None or resp._waiter is None or self.closed:
            return  # nobody waits: the next wait arms it again
        left = resp._deadline - loop.time()
        if left > 0:
            self.read_timer = loop.call_later(left, self._read_due, loop)
        else:
            _expire(resp._waiter)

    def _disarm(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def close(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An answer: ``status`` and ``headers`` when returned; its body by :meth:`read` (whole) or
    :meth:`readany` (the next pieces, ``b""`` at the end). :meth:`release` must follow: it returns
    the connection to the pool after a complete answer, and closes it otherwise."""

    __slots__ = ("status", "head", "head_size", "keep_alive", "chunks", "buffered", "done", "exc",
                 "received", "streaming", "_conn", "_client", "_waiter", "_deadline", "_headers", "_released")

    def __init__(self, conn: _Connection, client: "HTTPClient"):
        self.status = 0
        self.head: list[bytes] = []  # the bytes received until the headers were whole (llhttp checked them)
        self.head_size = 0
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.done = False
        self.exc: Optional[BaseException] = None
        self.received = False
        self.streaming = False
        self._conn = conn
        self._client = client
        self._waiter: Optional[asyncio.Future[None]] = None
        self._deadline = 0.0  # (loop time) when the current wait fails with ReadTimeout
        self._headers: Optional[dict[str, str]] = None
        self._released = False

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The header lines, as (name, value): read from the head, which llhttp has parsed (so its lines
        end with CRLF, with no folded lines)."""
        raw = b"".join(self.head)
        start, end = 0, raw.find(b"\r\n\r\n")
        while end >= 0 and raw[start + 9:start + 10] == b"1":  # an interim answer's (103 Early Hints): skipped
            start, end = end + 4, raw.find(b"\r\n\r\n", end + 4)
        lines = raw[start:end].split(b"\r\n")[1:] if end >= 0 else []
        return [(name.strip(b" \t"), value.strip(b" \t")) for name, _, value in (ln.partition(b":") for ln in lines)]

    def length_known(self) -> bool:
        """Whether a header says where the body ends (else the connection's close ends it)."""
        return any(name.lower() in _DELIMITING for name, _ in self.raw_headers)

    @property
    def headers(self) -> dict[str, str]:
        """Header names in lower case; repeated headers joined with ", "."""
        h = self._headers
        if h is None:
            h = self._headers = {}
            for k, v in self.raw_headers:
                name, value = k.decode("latin-1").lower(), v.decode("latin-1")
                h[name] = f"{h[name]}, {value}" if name in h else value
        return h

    # fed by the connection

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _complete(self) -> None:
        self.done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        self.done = True
        self._wake()

    async def _wait(self) -> None:
        """Until the connection has news, or the read timeout passes without any."""
        client = self._client
        loop = client.loop
        w = self._waiter = loop.create_future()
        self._deadline = loop.time() + client.read_timeout
        # one timer per connection, armed when none is and checking this deadline when it fires (a timer
        # armed and cancelled per wait cost a pass-through request ~2.5 µs on uvloop)
        conn = self._conn
        if conn.read_timer is None:
            conn.read_timer = loop.call_later(client.read_timeout, conn._read_due, loop)
        try:
            await w
        finally:
            self._waiter = None

    async def _headers_ready(self) -> None:
        while not self.status and not self.done:
            await self._wait()
        if self.exc is not None and not self.status:
            raise self.exc

    # the body

    async def read(self) -> bytes:
        while not self.done:
            await self._wait()
        if self.exc is not None:
            raise self.exc
        chunks, self.chunks, self.buffered = self.chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def readany(self) -> bytes:
        """What has arrived since the last call (waiting for something), or ``b""`` at the end."""
        while not self.chunks and not self.done:
            await self._wait()
        if self.chunks:
            chunks, self.chunks, self.buffered = self.chunks, [], 0
            conn = self._conn
            if conn.paused and not conn.closed:
                conn.paused = False
                conn.transport.resume_reading()
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.exc is not None:
            raise self.exc
        return b""

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.response = None
        if self.done and self.exc is None and self.keep_alive and not conn.closed and not conn.paused:
            self._client._put(conn)
        else:
            conn.close()
            self._client._drop(conn)


def _expire(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("no answer within the read timeout"))


def _ssl_context() -> ssl.SSLContext:
    """The CA bundle the provider SDKs (httpx) trust: ``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not (cafile or capath):
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    ctx = ssl.create_default_context(cafile=cafile, capath=capath)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HTTPClient:
    """Keep-alive connections of one event loop, at most ``limit`` per origin.

    ``await client.request(target, body)`` sends ``body`` (bytes) to ``target`` and returns the
    :class:`Response` once its status and headers have arrived.
    """

    def __init__(self, connect_timeout: float = 60.0, read_timeout: float = 60.0, limit: int = 100):
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.limit = limit
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: dict[tuple[str, str, int], int] = {}
        self._waiters: dict[tuple[str, str, int], deque[asyncio.Future[None]]] = {}
        self._ssl: Optional[ssl.SSLContext] = None
        self.closed = False

    async def request(self, target: Target, body: bytes, stream: bool = False) -> Response:
        if self.closed:
            raise HTTPError("the HTTP client is closed")
        for attempt in (0, 1):
            conn = self._take(target.origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(target.origin)
            resp = Response(conn, self)
            resp.streaming = stream
            conn.response = resp
            try:
                if conn.transport.is_closing():  # reset by the server between connect/idle and now
                    raise ConnectionClosed("the server closed the connection before the request was sent")
                conn.transport.writelines((target.head, b"%d\r\n\r\n" % len(body), body))
                await resp._headers_ready()
            except ConnectionClosed:
                resp.release()
                if reused and attempt == 0 and not resp.received:
                    continue  # the server had dropped the idle connection: once more on a fresh one
                raise
            except BaseException:  # a timeout, a cancellation: the request is abandoned, so is its connection
                resp.release()
                raise
            return resp
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closed = True
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
        for waiters in self._waiters.values():
            for w in waiters:
                if not w.done():
                    w.set_exception(HTTPError("the HTTP client is closed"))

    # the pool

    def _take(self, origin: tuple[str, str, int]) -> Optional[_Connection]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been dropped
            if not conn.closed and not conn.transport.is_closing():
                return conn
            self._drop(conn)
        return None

    def _put(self, conn: _Connection) -> None:
        if self.closed:
            conn.close()
            self._drop(conn)
            return
        self._idle.setdefault(conn.origin, []).append(conn)
        self._wake_one(conn.origin)

    def _drop(self, conn: _Connection) -> None:
        n = self._open.get(conn.origin, 0)
        if n:
            self._open[conn.origin] = n - 1
        self._wake_one(conn.origin)

    def _wake_one(self, origin: tuple[str, str, int]) -> None:
        waiters = self._waiters.get(origin)
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        while self._open.get(origin, 0) >= self.limit:
            w = self.loop.create_future()
            self._waiters.setdefault(origin, deque()).append(w)
            await w
            conn = self._take(origin)
            if conn is not None:
                return conn
        self._open[origin] = self._open.get(origin, 0) + 1
        scheme, host, port = origin
        ctx = None
        if scheme == "https":
            ctx = self._ssl = self._ssl or _ssl_context()
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(origin), host, port, ssl=ctx,
                                            server_hostname=host if ctx else None),
                self.connect_timeout)
        except asyncio.TimeoutError:
            self._open[origin] -= 1
            self._wake_one(origin)
            raise ReadTimeout(f"could not connect to {host}:{port} within {self.connect_timeout}s") from None
        except OSError as e:
            self._open[origin] -= 1
            self._wake_one(origin)
            raise ConnectError(f"could not connect to {host}:{port} ({e.strerror or e})") from None
        except BaseException:
            self._open[origin] -= 1
            self._wake_one(origin)
            raise
        return conn  # type: ignore[return-value]
