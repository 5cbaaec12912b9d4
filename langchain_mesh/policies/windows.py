"""The in-process storage of the rate-limit windows: a ``limits`` storage backend for one process.

The algorithms stay the ``limits`` library's (its moving- and fixed-window strategies call this
storage as they call Redis); only where the counts live is ours. Why not ``limits``' own
``MemoryStorage``: it expires entries on a timer thread started every 10 ms while there is traffic,
which copies each moving window's list of entries (one per request in the window) each time; at
gateway rates that thread and its contention for the GIL cost the serving thread more than the rest
of the limits layer (measured with bench/gateway.py: ~250 µs of gateway CPU per request, against the
~155 µs of the whole plain request). Here entries expire lazily when their key is touched, a window is
a deque (oldest entries dropped from the left), and one lock guards all keys.

Sliding windows (``limits.strategy: sliding-window``) keep ``limits``' ``MemoryStorage``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from limits.storage import MovingWindowSupport, Storage

__all__ = ["LocalWindows"]


class LocalWindows(Storage, MovingWindowSupport):
    STORAGE_SCHEME = ["mesh+memory"]

    def __init__(self, uri: Any = None, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._counters: dict[str, list[float]] = {}  # key -> [count, expiry time]
        self._windows: dict[str, deque[float]] = {}  # key -> acquisition times, oldest first
        self._lock = threading.Lock()

    @property
    def base_exceptions(self) -> Any:
        return ValueError

    # ---- counters (fixed windows) ------------------------------------------------------------------

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.add(key, expiry, amount)

    def add(self, key: str, expiry: int, amount: int = 1) -> int:
        """:meth:`incr` without ``limits``' error-wrapping decorator (nothing here raises): the
        limits layer calls it directly on its hot path."""
        now = time.time()
        with self._lock:
            c = self._counter(key, now, expiry)
            c[0] += amount
            return int(c[0])

    def add_all(self, keys: tuple[str, ...], expiry: int, amount: int) -> None:
        """:meth:`add` of ``amount`` to every counter of ``keys``, under one lock and one clock reading
        (a call's token reconciliation: ``Limiter.reconcile`` in limits.py)."""
        now = time.time()
        lock = self._lock
        lock.acquire()  # (not `with`: see hit_all)
        try:
            for key in keys:
                self._counter(key, now, expiry)[0] += amount
        finally:
            lock.release()

    def _counter(self, key: str, now: float, expiry: int) -> list[float]:
        """``key``'s live counter, a new one when it has none or it expired (the caller holds the lock)."""
        c = self._counters.get(key)
        if c is None or c[1] <= now:
            c = self._counters[key] = [0, now + expiry]
        return c

    def get(self, key: str) -> int:
        c = self._counters.get(key)
        return int(c[0]) if c is not None and c[1] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        c = self._counters.get(key)
        now = time.time()
        return c[1] if c is not None and c[1] > now else now

    # ---- moving windows ------------------------------------------------------------------------------

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        with self._lock:
            w = self._window(key, now - expiry)
            if len(w) + amount > limit:
                return False
            w.extend([now] * amount) if amount > 1 else w.append(now)
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        with self._lock:
            if not self._windows.get(key):  # read, not made
                return now, 0
            w = self._window(key, now - expiry)
            return (w[0], len(w)) if w else (now, 0)

    def _window(self, key: str, edge: float) -> deque[float]:
        """``key``'s moving window without its entries from ``edge`` or before, made when it has none
        (the caller holds the lock)."""
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = deque()
        while w and w[0] <= edge:
            w.popleft()
        return w

    # ---- every window of one call at once -------------------------------------------------------------

    def hit_all(self, entries: tuple[tuple[str, int, int], ...], expiry: int, cost: int) -> bool:
        """Test every window of one call, then take them all, under one lock and one clock reading; or
        take nothing and return False (the limits layer then names the window that refused).

        ``entries``: ``(key, limit, mode)``, mode 0 a moving window (what :meth:`acquire_entry` does
        with amount 1), 1 a counter of requests (:meth:`incr` by 1), 2 a counter of tokens (by
        ``cost``): the same primitives the limits strategies call one by one, each with its own
        lock and clock; one call of this is the in-memory limits layer's whole acquire (issue 19)."""
        now = time.time()
        edge = now - expiry
        counters = self._counters
        # the lock's acquire and release called rather than `with`: its __enter__/__exit__ cost ~2k
        # instructions, the two calls ~1k (callgrind, Python 3.11); this and add_all run once each per
        # limited call
        lock = self._lock
        lock.acquire()
        try:
            for key, limit, mode in entries:
                if mode == 0:
                    if len(self._window(key, edge)) >= limit:
                        return False
                else:  # read, not made: a refused call must not start a new counter's period
                    c = counters.get(key)
                    if (c[0] if c is not None and c[1] > now else 0) + (cost if mode == 2 else 1) > limit:
                        return False
            for key, _limit, mode in entries:
                if mode == 0:
                    self._windows[key].append(now)  # made by the test above
                else:
                    self._counter(key, now, expiry)[0] += cost if mode == 2 else 1
        finally:
            lock.release()
        return True

    # ---- housekeeping ---------------------------------------------------------------------------------

    def check(self) -> bool:
        return True

    def reset(self) -> int:
        with self._lock:
            n = len(self._counters) + len(self._windows)
            self._counters.clear()
            self._windows.clear()
        return n

    def clear(self, key: str) -> None:
        with self._lock:
            self._counters.pop(key, None)
            self._windows.pop(key, None)
