"""Where the policies keep state that outlives one call: circuit breakers, rate-limit windows, budgets.

In-process by default (:class:`MemoryStore`: one process, lost on restart; ``mesh serve --workers 4``
then gives each worker its own counters, so a limit of 120 rpm lets up to 4 x 120 through). With
``state: {redis_url: ...}`` in the config every worker and process on that config shares one Redis
(:class:`RedisStore`, the same interface)::

    state:
      redis_url: "{{env:REDIS_URL}}"   # redis://[:password@]host:6379/0
      on_failure: closed               # Redis unreachable: refuse calls that need limits/budgets (503);
                                       # "open": let them through unchecked, logging a warning
      timeout: 0.5                     # seconds per Redis command before Redis counts as down
      lease: true                      # far from a limit, a worker counts calls itself for 50 ms
                                       # on what one trip took (policies/limits.py _Lease)

:func:`store_for` is the one place a policy gets its mesh's store; :func:`health` is what
``mesh serve``'s ``/health`` reports about it.

Both offer the small set of atomic operations the policies need, sync and async (the gateway runs on
an event loop; library calls may not).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Optional, Protocol, TypeVar

from .._loop import running_loop as _running_loop
from ..errors import StateUnavailableError

__all__ = ["StateStore", "MemoryStore", "RedisStore", "store_for", "health", "guarded", "aguarded", "ahealth", "aflush"]

log = logging.getLogger("langchain_mesh.policies.state")
T = TypeVar("T")


class StateStore(Protocol):
    #: whether other processes write it too (then a reader may keep what it read for a while:
    #: the circuit breakers do, see policies/breaker.py)
    shared: bool

    def incr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        """Add ``amount`` to a counter (created at 0, expiring ``ttl`` s after creation); the new value."""

    def get(self, key: str) -> Optional[str]: ...

    def set(self, key: str, value: str, ttl: Optional[float] = None) -> None: ...

    def delete(self, key: str) -> None: ...

    async def aincr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float: ...

    async def aget(self, key: str) -> Optional[str]: ...

    async def aset(self, key: str, value: str, ttl: Optional[float] = None) -> None: ...

    async def adelete(self, key: str) -> None: ...

    async def amget(self, keys: list[str]) -> list[Optional[str]]:
        """Several values in one round trip."""

    def incr_nowait(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> bool:
        """:meth:`incr` from an event loop without waiting for it (an after-call record nobody reads back);
        False when the store cannot (then await :meth:`aincr`)."""

    async def aflush(self) -> None:
        """Send what :meth:`incr_nowait` holds back, and wait until it is counted."""

    def note(self, key: str, value: Optional[str], ttl: Optional[float] = None) -> float:
        """A counter's value as just read, as a float, with this process's additions not yet sent."""

    def seen(self, key: str, max_age: float) -> Optional[float]:
        """A counter as :meth:`note` last had it (plus this process's additions since), if that is recent."""


class MemoryStore:
    """The in-process store: a dict of (value, expiry) under a lock."""

    shared = False  # seen by this process only (the breakers read it on every call: it costs nothing)

    def __init__(self) -> None:
        self._data: dict[str, tuple[object, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> Optional[object]:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] and item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def incr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        now = time.monotonic()
        lock = self._lock
        lock.acquire()  # (not `with`: its __enter__/__exit__ cost twice the two calls; a budget's path)
        try:
            old = self._live(key, now)
            expiry = self._data[key][1] if old is not None else (now + ttl if ttl else 0.0)
            value = float(old or 0.0) + amount  # type: ignore[arg-type]
            self._data[key] = (value, expiry)
            return value
        finally:
            lock.release()

    def get(self, key: str) -> Optional[str]:
        if key not in self._data:  # the common answer (a closed breaker), without the lock: one dict lookup
            return None
        lock = self._lock
        lock.acquire()  # (as in incr)
        try:
            v = self._live(key, time.monotonic())
        finally:
            lock.release()
        return None if v is None else str(v)

    def set(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        with self._lock:
            self._data[key] = (value, time.monotonic() + ttl if ttl else 0.0)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    # in-process work never waits: the async forms are the sync ones
    async def amget(self, keys: list[str]) -> list[Optional[str]]:
        return [self.get(k) for k in keys]

    def incr_nowait(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> bool:
        self.incr(key, amount, ttl)
        return True

    def note(self, key: str, value: Optional[str], ttl: Optional[float] = None) -> float:
        return float(value or 0.0)

    def seen(self, key: str, max_age: float) -> Optional[float]:
        return None  # reading costs nothing here

    async def aflush(self) -> None:
        return None

    async def aincr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        return self.incr(key, amount, ttl)

    async def aget(self, key: str) -> Optional[str]:
        return self.get(key)

    async def aset(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        self.set(key, value, ttl)

    async def adelete(self, key: str) -> None:
        self.delete(key)


# the Redis stores of this process: a forked child forgets their last loop (a child forked inside the
# running loop sees a copy of it "running", and must not write to the parent's connection)
_STORES: "weakref.WeakSet[RedisStore]" = weakref.WeakSet()


def _forget_loops() -> None:
    for store in list(_STORES):
        store._last = (None, None, None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loops)


class RedisStore:
    """The shared store: one Redis for every worker and process on the config (``redis`` package;
    sync client for library calls; in an event loop, one pipelined connection per loop, see
    redis_pipe.py, or ``redis.asyncio`` where ``hiredis`` is missing). Errors reaching
    Redis are raised as they are; :func:`guarded` applies ``state.on_failure`` to them."""

    shared = True  # other processes write it too (a breaker re-reads it every SHARED_REFRESH s)

    def __init__(self, url: str, timeout: float = 0.5, prefix: str = "mesh:"):
        import redis

        self.url, self.timeout, self.prefix = url, timeout, prefix
        self._sync = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._async: Any = None
        self._async_loop: Any = None
        self._pipes: Any = weakref.WeakKeyDictionary()  # event loop -> RedisPipe (False: none possible)
        self._last: tuple[Any, Any, Any] = (None, None, None)  # pipe()'s last (thread, loop, answer)
        _STORES.add(self)
        self._views: dict[str, list[float]] = {}  # key -> [value read + this process's since, when read]

    def __repr__(self) -> str:  # the URL may carry a password
        return "RedisStore(...)"

    def _aclient(self) -> Any:
        import asyncio

        import redis.asyncio

        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:  # a client's connections belong to one loop
            self._async = redis.asyncio.Redis.from_url(self.url, socket_timeout=self.timeout,
                                                       socket_connect_timeout=self.timeout)
            self._async_loop = loop
        return self._async

    def pipe(self) -> Any:
        """The running loop's pipelined connection (see redis_pipe.py), or None without ``hiredis``:
        then the async calls go through ``redis.asyncio``."""
        last = self._last
        # the loop of the last call, running in its thread: the running loop, since a thread runs one loop
        # at a time (no loop lookup, no weak-dict lookup; a gateway asks ~4 times a request)
        if last[0] == threading.get_ident() and last[1].is_running():
            return last[2]
        loop = _running_loop()
        got = self._pipes.get(loop)
        if got is None:
            from .redis_pipe import RedisPipe, available

            got = RedisPipe(self.url, self.timeout) if available() else False
            self._pipes[loop] = got
        self._last = (threading.get_ident(), loop, got or None)
        return got or None

    def incr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        pipe = self._sync.pipeline(transaction=True)
        if ttl:  # created with its expiry: SET NX first, so an existing counter keeps its own
            pipe.set(self.prefix + key, 0, px=max(1, int(ttl * 1000)), nx=True)
        pipe.incrbyfloat(self.prefix + key, amount)
        return float(pipe.execute()[-1])

    def get(self, key: str) -> Optional[str]:
        v = self._sync.get(self.prefix + key)
        return None if v is None else v.decode()

    def set(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        self._sync.set(self.prefix + key, value, px=max(1, int(ttl * 1000)) if ttl else None)

    def delete(self, key: str) -> None:
        self._sync.delete(self.prefix + key)

    async def aincr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        k = self.prefix + key
        pipe = self.pipe()
        if pipe is not None:  # no MULTI needed: SET NX only creates a missing counter, whoever runs between
            cmds = [("SET", k, 0, "PX", max(1, int(ttl * 1000)), "NX")] if ttl else []
            got = float((await pipe.calls(*cmds, ("INCRBYFLOAT", k, repr(float(amount)))))[-1])
        else:
            p = self._aclient().pipeline(transaction=True)
            if ttl:
                p.set(k, 0, px=max(1, int(ttl * 1000)), nx=True)
            p.incrbyfloat(k, amount)
            got = float((await p.execute())[-1])
        if key in self._views:  # what seen() answers: the total just read back
            self.note(key, repr(got), ttl)
        return got

    def incr_nowait(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> bool:
        """Summed with this loop's other additions to ``key`` and sent within ``SUM_GAP`` s (redis_pipe.py)."""
        pipe = self.pipe()
        if pipe is None:
            return False
        pipe.add_later(self._counter(key, ttl), amount)
        view = self._views.get(key)
        if view is not None:
            view[0] += amount
        return True

    def note(self, key: str, value: Optional[str], ttl: Optional[float] = None) -> float:
        """``key``'s value as just read, plus what this process added and has not sent yet; kept as
        :meth:`seen` answers it, with what this process adds from now on."""
        v = float(value or 0.0) + self.pending(key, ttl)
        if len(self._views) >= 10000:  # bounded: a period's budgets are few
            self._views.clear()
        self._views[key] = [v, time.monotonic()]
        return v

    def seen(self, key: str, max_age: float) -> Optional[float]:
        """What :meth:`note` kept of ``key``, if no older than ``max_age`` s (other processes' additions
        since are not in it)."""
        view = self._views.get(key)
        return view[0] if view is not None and time.monotonic() - view[1] < max_age else None

    def pending(self, key: str, ttl: Optional[float] = None) -> float:
        """What :meth:`incr_nowait` added to ``key`` (with that ``ttl``) on this loop that is not sent yet."""
        pipe = self.pipe()
        return pipe.pending(self._counter(key, ttl)) if pipe else 0.0

    def _counter(self, key: str, ttl: Optional[float]) -> tuple[Any, ...]:
        """``key``'s counter as :meth:`RedisPipe.add_later` sums it (equal tuples are one counter)."""
        return (_incr_later, self.prefix + key, max(1, int(ttl * 1000)) if ttl else 0)

    async def aflush(self) -> None:
        """This loop's summed additions sent and answered (``mesh serve`` calls it on shutdown)."""
        pipe = self._pipes.get(_running_loop())
        if pipe:
            await pipe.aflush()

    async def amget(self, keys: list[str]) -> list[Optional[str]]:
        pipe = self.pipe()
        full = [self.prefix + k for k in keys]
        got = await (pipe.call("MGET", *full) if pipe is not None else self._aclient().mget(full))
        return [None if v is None else v.decode() for v in got]

    async def aget(self, key: str) -> Optional[str]:
        pipe = self.pipe()
        v = await (pipe.call("GET", self.prefix + key) if pipe is not None else self._aclient().get(self.prefix + key))
        return None if v is None else v.decode()

    async def aset(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        pipe = self.pipe()
        if pipe is None:
            await self._aclient().set(self.prefix + key, value, px=max(1, int(ttl * 1000)) if ttl else None)
        else:
            await pipe.call("SET", self.prefix + key, value, *(("PX", max(1, int(ttl * 1000))) if ttl else ()))

    async def adelete(self, key: str) -> None:
        pipe = self.pipe()
        await (pipe.call("DEL", self.prefix + key) if pipe is not None else self._aclient().delete(self.prefix + key))

    async def aping(self) -> bool:
        try:
            pipe = self.pipe()
            return bool(await (pipe.call("PING") if pipe is not None else self._aclient().ping()))
        except Exception:  # noqa: BLE001
            return False

    def ping(self) -> bool:
        try:
            return bool(self._sync.ping())
        except Exception:  # noqa: BLE001 - any failure to answer is "down"
            return False

    def close(self) -> None:
        self._sync.close()


def _incr_later(pipe: Any, key: str, px: int, total: float) -> None:
    """An :meth:`RedisStore.incr_nowait` sum sent: created with its expiry (SET NX), then added to."""
    pipe.send_later(*([("SET", key, 0, "PX", px, "NX")] if px else []), ("INCRBYFLOAT", key, repr(float(total))))


def store_for(mesh: Any) -> Any:
    """The mesh's state store, made once: a :class:`RedisStore` with ``state.redis_url``, else an
    in-process :class:`MemoryStore`."""
    store = getattr(mesh, "_state_store", None)
    if store is None:
        with _LOCK:
            store = getattr(mesh, "_state_store", None)
            if store is None:
                url = redis_url(mesh.config)
                cfg = getattr(mesh.config, "state", None)
                store = RedisStore(url, cfg.timeout) if url else MemoryStore()
                mesh._state_store = store
    return store


_LOCK = threading.Lock()


def redis_url(config: Any) -> Optional[str]:
    """The configured Redis URL, resolved (a reference), or None."""
    cfg = getattr(config, "state", None)
    if cfg is None or cfg.redis_url is None:
        return None
    return cfg.redis_url.get("state.redis_url")


# How long a worker counts calls on what it took or read from Redis before asking again: a rate-limit
# lease (policies/limits.py _Lease) and a budget's spend read far from its cap (policies/budgets.py _far).
LEASE_TTL = 0.05


def leases_on(config: Any) -> bool:
    """Whether the policies take leases: on Redis, unless ``state.lease: false``."""
    return redis_url(config) is not None and config.state.lease


def on_failure(config: Any) -> str:
    cfg = getattr(config, "state", None)
    return cfg.on_failure if cfg is not None else "closed"


def is_outage(e: BaseException) -> bool:
    """Whether ``e`` says the store could not be reached (rather than a bug in a caller)."""
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - no redis package: no Redis store either
        return False
    if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError,
                      TimeoutError, OSError)):
        return True
    try:
        from limits.errors import StorageError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, StorageError)


_last_warning = [0.0]


def outage(config: Any, e: BaseException, what: str) -> None:
    """Apply ``state.on_failure`` to a store outage met while checking ``what``: return (open: the call
    goes on unchecked) or raise :class:`StateUnavailableError` (closed)."""
    if on_failure(config) == "closed":
        raise StateUnavailableError(
            f"the shared state store (state.redis_url) is unreachable ({type(e).__name__}), so {what} cannot be "
            "checked and the call is refused (state.on_failure: closed). Bring Redis back, or set "
            "state.on_failure: open to let calls through unchecked while it is down.") from None
    now = time.monotonic()
    if now - _last_warning[0] > 10:  # one line per 10 s, not one per request
        _last_warning[0] = now
        log.warning("state store unreachable (%s): %s not enforced (state.on_failure: open)", type(e).__name__, what)


def guarded(config: Any, what: str, fn: Callable[[], T], default: T) -> T:
    """``fn()``, with a store outage handled per ``state.on_failure`` (open: ``default``)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - only outages are handled; the rest propagates
        if not is_outage(e):
            raise
        outage(config, e, what)
        return default


async def aguarded(config: Any, what: str, fn: Callable[[], Any], default: Any) -> Any:
    try:
        return await fn()
    except Exception as e:  # noqa: BLE001
        if not is_outage(e):
            raise
        outage(config, e, what)
        return default


async def aflush(mesh: Any) -> None:
    """Before ``mesh`` closes in an event loop: the additions its store holds back sent and counted
    (an outage loses them, as it loses any addition; said in the log)."""
    store = getattr(mesh, "_state_store", None)
    if store is None:
        return
    try:
        await store.aflush()
    except Exception as e:  # noqa: BLE001
        if not is_outage(e):
            raise
        log.warning("token corrections and spend of the last calls were not written (%s)", type(e).__name__)


def health(mesh: Any) -> dict[str, Any]:
    """What ``/health`` says of the state store: backend, whether it answers, and the outage policy."""
    if redis_url(mesh.config) is None:
        return {"backend": "memory", "ok": True, "shared": False, "on_failure": on_failure(mesh.config)}
    store = store_for(mesh)
    return {"backend": "redis", "ok": store.ping(), "shared": True, "on_failure": on_failure(mesh.config)}


async def ahealth(mesh: Any) -> dict[str, Any]:
    """:func:`health` for an event loop (the Redis ping does not block it)."""
    if redis_url(mesh.config) is None:
        return health(mesh)
    store = store_for(mesh)
    return {"backend": "redis", "ok": await store.aping(), "shared": True, "on_failure": on_failure(mesh.config)}
