"""A circuit breaker per route target: stop sending calls to a target that keeps failing, then probe it.

closed --(``failures`` failures within ``window`` s)--> open --(``cooldown`` s)--> half-open
half-open: one caller's call is the probe (the others skip the target); its success closes the
breaker, its failure opens it for another cooldown. Configured per route::

    routes:
      chat:
        targets: [openai:main:gpt-4o, anthropic:backup:claude-3-5-sonnet-latest]
        breaker: {failures: 5, window: 30, cooldown: 30}

State lives in the mesh's :class:`~.state.StateStore` (:func:`~.state.store_for`): in-process by
default, shared by every gateway worker when the config names a Redis store. Times are wall-clock
(``time.time``, comparable across processes); the clock is injectable for tests. The failure count
is kept per fixed window (``<target>:<window index>``) rather than as a sliding log: one counter
increment per failure and nothing at all on a success of a closed breaker.

With a shared store (Redis) a call does not read it either: the breaker keeps what it last read of
the shared "open until" and reads it again at most every :data:`SHARED_REFRESH` seconds (and at once
after the cooldown it knows of, when a probe is due). So a breaker that another process opened is
seen here within ``SHARED_REFRESH`` (1 s) — a second more of calls to a failing target, against a
cooldown of tens of seconds — while the common case, a closed breaker, costs no round trip. What
this process does itself (a failure that opens the breaker, a probe that closes it) is known here
at once. The in-process store is read on every call (a dict lookup: nothing to save).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

__all__ = ["Breaker", "CLOSED", "PROBE", "OPEN", "SHARED_REFRESH"]

CLOSED, PROBE, OPEN = "closed", "probe", "open"

#: seconds a breaker on a shared store trusts its last read of the shared state
SHARED_REFRESH = 1.0


class Breaker:
    """``refresh``: seconds the last read of the store's "open until" is trusted (0: read it on every
    call; the default: :data:`SHARED_REFRESH` for a store shared across processes, else 0)."""

    def __init__(self, store: Any, key: str, failures: int = 5, window: float = 30.0, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.time, refresh: Optional[float] = None):
        self.store = store
        self.key = key
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.clock = clock
        # a store that does not say is taken for a shared one (read on the async API, at most every refresh)
        self.shared = getattr(store, "shared", True)
        self.refresh = (SHARED_REFRESH if self.shared else 0.0) if refresh is None else refresh
        self._open = f"brk:{key}:open"  # value: the time the cooldown ends
        self._probe = f"brk:{key}:probe"
        # the last read of the shared state: the cooldown's end (None: closed), trusted until
        # ``_fresh`` (time.monotonic: a wall-clock step must not stretch it)
        self._until: Optional[float] = None
        self._fresh = 0.0

    def _known(self, until: Optional[str]) -> Optional[float]:
        """The store's "open until", as read now (and remembered)."""
        value = None if until is None else float(until)
        self._set_known(value)
        return value

    def _cached(self) -> tuple[bool, Optional[float]]:
        """(whether the last read still holds, its cooldown end)."""
        return self.refresh > 0 and time.monotonic() < self._fresh, self._until

    def _set_known(self, until: Optional[float]) -> None:
        if self.refresh:
            self._until, self._fresh = until, time.monotonic() + self.refresh

    def admit(self) -> str:
        """CLOSED: call the target; PROBE: call it as the half-open probe; OPEN: skip it."""
        fresh, until = self._cached()
        if fresh:
            if until is None:
                return CLOSED
            if self.clock() < until:
                return OPEN
            # the cooldown we know of is over: what does the store say now (another process's probe
            # may have closed it, or a failed one opened it again)?
        until = self._known(self.store.get(self._open))
        if until is None:
            return CLOSED
        if self.clock() < until:
            return OPEN
        # cooldown over: the first caller to take the probe slot probes; the slot expires after a
        # cooldown so that a probe whose caller died does not keep the target out forever
        return PROBE if self.store.incr(self._probe, 1.0, self.cooldown) == 1.0 else OPEN

    def success(self, state: str) -> None:
        if state == PROBE:
            self.store.delete(self._open)
            self.store.delete(self._probe)
            self._set_known(None)

    def failure(self, state: str) -> None:
        now = self.clock()
        if state == PROBE:
            self._trip(now)
            return
        slot = f"brk:{self.key}:fail:{int(now // self.window)}"
        if self.store.incr(slot, 1.0, self.window * 2) >= self.failures:
            self._trip(now)
            self.store.delete(slot)

    def _trip(self, now: float) -> None:
        self.store.set(self._open, repr(now + self.cooldown))
        self.store.delete(self._probe)
        self._set_known(now + self.cooldown)

    def known(self) -> Optional[str]:
        """What :meth:`aadmit` would say, when that needs no wait: the in-process store's answer (it never
        waits), or CLOSED / OPEN from a fresh read of a shared one; None when the store must be asked
        (then call :meth:`aadmit`). Spares the event loop a coroutine per call on the common path."""
        if not self.shared:
            return CLOSED if self.store.get(self._open) is None else self.admit()
        if time.monotonic() < self._fresh:
            until = self._until
            if until is None:
                return CLOSED
            if self.clock() < until:
                return OPEN
        return None

    # the same, on the store's async API (the gateway's event loop must not wait on a Redis round trip)

    async def aadmit(self) -> str:
        fresh, until = self._cached()
        if fresh:
            if until is None:
                return CLOSED
            if self.clock() < until:
                return OPEN
        until = self._known(await self.store.aget(self._open))
        if until is None:
            return CLOSED
        if self.clock() < until:
            return OPEN
        return PROBE if await self.store.aincr(self._probe, 1.0, self.cooldown) == 1.0 else OPEN

    async def asuccess(self, state: str) -> None:
        if state == PROBE:
            await self.store.adelete(self._open)
            await self.store.adelete(self._probe)
            self._set_known(None)

    async def afailure(self, state: str) -> None:
        now = self.clock()
        if state != PROBE:
            slot = f"brk:{self.key}:fail:{int(now // self.window)}"
            if await self.store.aincr(slot, 1.0, self.window * 2) < self.failures:
                return
            await self.store.adelete(slot)
        await self.store.aset(self._open, repr(now + self.cooldown))
        await self.store.adelete(self._probe)
        self._set_known(now + self.cooldown)

    def state(self) -> str:
        """What a call would find now, without taking the probe slot (for listings and tests): read
        from the store, not from this breaker's last read."""
        until: Optional[str] = self.store.get(self._open)
        if until is None:
            return CLOSED
        return OPEN if self.clock() < float(until) else "half-open"
