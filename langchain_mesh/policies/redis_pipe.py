"""One pipelined Redis connection per event loop, for the gateway's per-request policy state.

    state:
      redis_url: redis://:{{env:REDIS_PASSWORD}}@redis:6379/0   # redis://, rediss:// (TLS), unix://
      timeout: 0.5     # seconds a command may wait for its reply before Redis counts as unreachable

Why not ``redis.asyncio``: measured in ``mesh serve`` under load, each of its commands cost ~70-110 µs
of the gateway's CPU (a pool checkout and release, a retry wrapper and a lock per command), and
limits, budgets and breakers send several per request, which made the policy path an order of
magnitude slower than the plain one. Here every coroutine of the loop writes its commands to one
connection without waiting for another's reply (RESP answers in order, so each command's future
waits in a FIFO) and the replies are parsed by ``hiredis``, Redis' own C parser: a few µs a command.
This is what ioredis and coredis call auto-pipelining. The sync paths (library calls) and the
rarely used commands stay on ``redis-py``.

Errors: a reply error is raised as ``redis.exceptions.ResponseError``; a lost, refused or silent
connection (no reply within ``timeout``) fails every command in flight with
``redis.exceptions.ConnectionError`` / ``TimeoutError``, which :func:`.state.is_outage` reads as an
outage (``state.on_failure`` applies), and the next command connects again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
import time
from typing import Any, Optional

from .._loop import running_loop

__all__ = ["RedisPipe", "available"]


def available() -> bool:
    """Whether the fast client can run here (``hiredis`` is installed: the ``usage``/``redis`` extras)."""
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


# How long a command nobody waits for (a token correction, a budget's spend) may wait for a write
# another coroutine makes anyway: under load there is one every fraction of a millisecond.
LAZY = 0.001

# Additions to counters that nobody reads back at once (a call's token correction, its spend on each
# budget) are summed per counter for SUM_GAP s and written as one command each (RedisPipe.add_later).
# A worker's calls share a handful of counters, so under load some three commands a call become some
# three a gap. Each had cost the gateway ~8-12 µs of CPU (packed, queued for its reply, the reply
# parsed) besides Redis' own (bench/gateway_micro.py POLICIES=1 CONC=16: ~150 -> ~130 µs a request). The price:
# other workers see these additions up to SUM_GAP s late, as if the calls had ended that much later;
# this worker's budget checks add its own pending sums (RedisPipe.pending).
SUM_GAP = 0.005


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP: an array of bulk strings. hiredis' C packer where it takes the arguments (str,
    bytes, int, float: every command here): a limits script's call has some twenty, which cost ~5 µs
    in Python (~2 in C), several times per gateway request."""
    try:
        return _c_pack(args)
    except TypeError:  # another type (a bool...): its str(), as redis-py writes it
        return _py_pack(args)


def _py_pack(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _c_pack(args: tuple[Any, ...]) -> bytes:
    from hiredis import pack_command  # bound here on first use (hiredis is optional: see available())

    globals()["_c_pack"] = pack_command
    return pack_command(args)


class _Later:
    """The place in the reply queue of a command nobody waits for: ``on_error(message)`` is called
    with an error reply (None: errors are dropped, as an outage drops the command)."""

    __slots__ = ("on_error",)

    def __init__(self, on_error: Any = None):
        self.on_error = on_error


_DROP = _Later()


class _Conn(asyncio.Protocol):
    """The socket, its parser and the FIFO of commands waiting for their replies."""

    def __init__(self, timeout: float):
        import hiredis

        self.reader = hiredis.Reader()
        self.error_type = hiredis.ReplyError
        self.waiting: collections.deque[tuple[asyncio.Future, float]] = collections.deque()
        self.transport: Any = None
        self.timeout = timeout
        self.timer: Any = None
        self.closed = False
        self.out: list[bytes] = []  # written once per loop step: see send()
        self.flush: Any = None  # the pending flush: at this step's end, or after LAZY s (self.lazy)
        self.lazy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # small writes back to back: Nagle's algorithm would hold each until the last one's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting, error_type = self.waiting, self.error_type
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            fut = waiting.popleft()[0]
            if fut.__class__ is _Later:  # nobody waits for this reply: only an error is looked at
                if fut.on_error is not None and isinstance(reply, error_type):
                    fut.on_error(str(reply))
            elif not fut.done():
                if isinstance(reply, error_type):
                    fut.set_exception(_response_error(str(reply)))
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.fail(f"connection to Redis lost ({exc or 'closed by the server'})")

    def fail(self, why: str, timeout: bool = False) -> None:
        import redis.exceptions

        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        cls = redis.exceptions.TimeoutError if timeout else redis.exceptions.ConnectionError
        while self.waiting:
            fut = self.waiting.popleft()[0]
            if fut.__class__ is not _Later and not fut.done():  # a command nobody waits for is lost
                fut.set_exception(cls(why))
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, n: int, loop: asyncio.AbstractEventLoop, lazy: bool = False) -> list[asyncio.Future]:
        """Queue commands; every coroutine's commands of this loop step go out in one write at its end
        (a socket write is a system call, the dearest part of a command on a busy gateway). ``lazy``
        commands (nobody waits for them) wait up to :data:`LAZY` s for another write to ride on."""
        now = time.monotonic()
        futs = [loop.create_future() for _ in range(n)]
        self.waiting.extend((f, now) for f in futs)
        self._queue(data, loop, lazy)
        return futs

    def send_nowait(self, data: bytes, n: int, loop: asyncio.AbstractEventLoop, later: "_Later") -> None:
        """:meth:`send` of ``n`` lazy commands nobody waits for: their replies are matched to ``later``
        instead of futures (a future, its done callback and that callback's loop turn, per command,
        were a good part of what the after-call corrections cost)."""
        now = time.monotonic()
        self.waiting.extend([(later, now)] * n)
        self._queue(data, loop, True)

    def _queue(self, data: bytes, loop: asyncio.AbstractEventLoop, lazy: bool) -> None:
        self.out.append(data)
        if self.flush is None or (self.lazy and not lazy):
            if self.flush is not None:  # a lazy timer: this step's write takes its commands along
                self.flush.cancel()
            self.flush = loop.call_later(LAZY, self._flush) if lazy else loop.call_soon(self._flush)
            self.lazy = lazy
        if self.timer is None:
            self.timer = loop.call_later(self.timeout, self._check)

    def _flush(self) -> None:
        out, self.out, self.flush = self.out, [], None
        if out and not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _check(self) -> None:
        """One timer for the connection, not one per command: fails everything when the oldest
        command has waited past the timeout (the server is stuck or gone)."""
        self.timer = None
        if self.closed or not self.waiting:
            return
        age = time.monotonic() - self.waiting[0][1]
        if age >= self.timeout:
            self.fail(f"Redis did not answer within {self.timeout} s (state.timeout)", timeout=True)
            return
        self.timer = running_loop().call_later(self.timeout - age, self._check)


def _response_error(message: str) -> Exception:
    import redis.exceptions

    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    return redis.exceptions.ResponseError(message)


class RedisPipe:
    """Commands for one event loop on one pipelined connection (made on first use, remade after a
    failure). ``call`` sends one command, ``calls`` several written at once (one round trip), and
    ``script`` runs a Lua script by its SHA, loading it the first time Redis does not know it."""

    def __init__(self, url: str, timeout: float = 0.5):
        from redis.connection import parse_url

        self.opts = parse_url(url)
        self.timeout = timeout
        self.loop: Any = None
        self.conn: Optional[_Conn] = None
        self._connecting: Optional[asyncio.Future] = None
        self.sums: dict[tuple[Any, ...], float] = {}  # see add_later

    async def _connection(self) -> _Conn:
        conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is not None:  # another coroutine is connecting: wait for the same one
            return await asyncio.shield(self._connecting)
        loop = running_loop()
        self._connecting = loop.create_future()
        try:
            conn = await asyncio.wait_for(self._open(loop), self.timeout)
        except BaseException as e:
            self._connecting.set_exception(_as_outage(e))
            self._connecting.exception()  # read here: it is raised to the waiters, if any
            self._connecting = None
            raise _as_outage(e) from None
        self.conn = conn
        self._connecting.set_result(conn)
        self._connecting = None
        return conn

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Conn:
        o = self.opts
        cls = getattr(o.get("connection_class"), "__name__", "")

        def factory() -> _Conn:
            return _Conn(self.timeout)
        if o.get("path"):
            _t, conn = await loop.create_unix_connection(factory, o["path"])
        else:
            ssl = None
            if cls == "SSLConnection":
                import ssl as _ssl

                ssl = _ssl.create_default_context()
            _t, conn = await loop.create_connection(factory, o.get("host", "localhost"), o.get("port", 6379), ssl=ssl)
        hello = []
        if o.get("password") is not None:
            hello.append(("AUTH", o["username"], o["password"]) if o.get("username") else ("AUTH", o["password"]))
        if o.get("db"):
            hello.append(("SELECT", o["db"]))
        try:
            for fut in conn.send(b"".join(_pack(c) for c in hello), len(hello), loop) if hello else ():
                await fut
        except BaseException:  # a refused password or database: this connection is of no use
            conn.fail("the connection's AUTH or SELECT was refused")
            raise
        return conn

    async def calls(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Several commands written at once; their replies in order (the first error raised)."""
        conn = await self._connection()
        futs = conn.send(b"".join(_pack(c) for c in commands), len(commands), running_loop())
        for f in futs:  # every reply read, even after one raised (no "exception never retrieved")
            f.add_done_callback(_drop)
        return [await f for f in futs]

    async def call(self, *command: Any) -> Any:
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return await conn.send(_pack(command), 1, running_loop())[0]

    def send_later(self, *commands: tuple[Any, ...]) -> None:
        """Write commands whose replies nobody waits for (a counter's after-call correction): errors are
        read and dropped here (an outage loses that correction, as it would on any client)."""
        conn = self.conn
        if conn is None or conn.closed:
            task = running_loop().create_task(self.calls(*commands))
            task.add_done_callback(_drop)
            return
        conn.send_nowait(b"".join(_pack(c) for c in commands), len(commands), running_loop(), _DROP)

    async def script(self, source: "Script", keys: list[str], args: list[Any]) -> Any:
        import redis.exceptions

        try:
            return await self.call("EVALSHA", source.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # first use on this server (or after SCRIPT FLUSH)
            return await self.call("EVAL", source.text, len(keys), *keys, *args)


    def script_later(self, source: "Script", keys: list[str], args: list[Any]) -> None:
        """:meth:`script` whose reply nobody waits for (sent again as EVAL if Redis lacks the script)."""
        def on_error(message: str) -> None:
            if message.startswith("NOSCRIPT"):
                self.send_later(("EVAL", source.text, len(keys), *keys, *args))
        conn = self.conn
        if conn is None or conn.closed:
            self.send_later(("EVAL", source.text, len(keys), *keys, *args))
            return
        conn.send_nowait(_pack(("EVALSHA", source.sha, len(keys), *keys, *args)), 1, running_loop(),
                         _Later(on_error))

    def add_later(self, counter: tuple[Any, ...], amount: float) -> None:
        """Add ``amount`` to ``counter`` within :data:`SUM_GAP` s, summed with whatever else is added to it
        meanwhile. ``counter`` is ``(write, *args)``, equal tuples one counter: ``write(pipe, *args,
        total)`` sends the sum without waiting (:meth:`send_later`, :meth:`script_later`)."""
        sums = self.sums
        if not sums:
            running_loop().call_later(SUM_GAP, self.write_sums)
        sums[counter] = sums.get(counter, 0) + amount

    def pending(self, counter: tuple[Any, ...]) -> float:
        """What :meth:`add_later` holds for ``counter`` that Redis has not been sent yet."""
        return self.sums.get(counter, 0) if self.sums else 0

    def write_sums(self) -> None:
        sums, self.sums = self.sums, {}
        for (write, *args), total in sums.items():
            if total:
                write(self, *args, total)

    async def aflush(self) -> None:
        """The sums sent now, and every command sent so far answered (``mesh serve``'s shutdown)."""
        held = bool(self.sums)
        self.write_sums()
        if held or (self.conn is not None and not self.conn.closed):  # PING answers after all of them
            await self.call("PING")


class Script:
    """A Lua script and its SHA1 (the name Redis knows it by)."""

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1


def _drop(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


def _as_outage(e: BaseException) -> BaseException:
    import redis.exceptions

    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return redis.exceptions.TimeoutError(f"could not connect to Redis within the state timeout ({e})")
    if isinstance(e, OSError):
        return redis.exceptions.ConnectionError(f"could not connect to Redis ({e})")
    return e
