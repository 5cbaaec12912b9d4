"""Where the policies keep state that outlives one call: circuit breakers, rate-limit windows, budgets.

In-process by default (:class:`MemoryStore`: one process, lost on restart). With ``state:
{redis_url: ...}`` in the config every worker and process on that config shares one Redis (see the
Redis store that implements this same interface)::

    state:
      redis_url: redis://localhost:6379/0

Both offer the small set of atomic operations the policies need, sync and async (the gateway runs on
an event loop; library calls may not).
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Protocol

__all__ = ["StateStore", "MemoryStore", "store_for"]


class StateStore(Protocol):
    def incr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        """Add ``amount`` to a counter (created at 0, expiring ``ttl`` s after creation); the new value."""

    def get(self, key: str) -> Optional[str]: ...

    def set(self, key: str, value: str, ttl: Optional[float] = None) -> None: ...

    def delete(self, key: str) -> None: ...

    async def aincr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float: ...

    async def aget(self, key: str) -> Optional[str]: ...

    async def aset(self, key: str, value: str, ttl: Optional[float] = None) -> None: ...

    async def adelete(self, key: str) -> None: ...


class MemoryStore:
    """The in-process store: a dict of (value, expiry) under a lock."""

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
        with self._lock:
            old = self._live(key, now)
            expiry = self._data[key][1] if old is not None else (now + ttl if ttl else 0.0)
            value = float(old or 0.0) + amount  # type: ignore[arg-type]
            self._data[key] = (value, expiry)
            return value

    def get(self, key: str) -> Optional[str]:
        with self._lock:
            v = self._live(key, time.monotonic())
        return None if v is None else str(v)

    def set(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        with self._lock:
            self._data[key] = (value, time.monotonic() + ttl if ttl else 0.0)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    # in-process work never waits: the async forms are the sync ones
    async def aincr(self, key: str, amount: float = 1.0, ttl: Optional[float] = None) -> float:
        return self.incr(key, amount, ttl)

    async def aget(self, key: str) -> Optional[str]:
        return self.get(key)

    async def aset(self, key: str, value: str, ttl: Optional[float] = None) -> None:
        self.set(key, value, ttl)

    async def adelete(self, key: str) -> None:
        self.delete(key)


def store_for(mesh: object) -> "StateStore":
    """The state store of ``mesh``: one per mesh, made on first use and kept on it (in-process here;
    the ``state: {redis_url: ...}`` config makes it the shared Redis store)."""
    store = getattr(mesh, "_state_store", None)
    if store is None:
        lock = getattr(mesh, "_lock", None) or threading.Lock()
        with lock:
            store = getattr(mesh, "_state_store", None)
            if store is None:
                store = MemoryStore()
                setattr(mesh, "_state_store", store)
    return store
