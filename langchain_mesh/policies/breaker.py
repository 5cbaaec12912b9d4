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
increment per failure and nothing at all on a success of a closed breaker (the hot path reads one key).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

__all__ = ["Breaker", "CLOSED", "PROBE", "OPEN"]

CLOSED, PROBE, OPEN = "closed", "probe", "open"


class Breaker:
    def __init__(self, store: Any, key: str, failures: int = 5, window: float = 30.0, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.key = key
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.clock = clock
        self._open = f"brk:{key}:open"  # value: the time the cooldown ends
        self._probe = f"brk:{key}:probe"

    def admit(self) -> str:
        """CLOSED: call the target; PROBE: call it as the half-open probe; OPEN: skip it."""
        until = self.store.get(self._open)
        if until is None:
            return CLOSED
        if self.clock() < float(until):
            return OPEN
        # cooldown over: the first caller to take the probe slot probes; the slot expires after a
        # cooldown so that a probe whose caller died does not keep the target out forever
        return PROBE if self.store.incr(self._probe, 1.0, self.cooldown) == 1.0 else OPEN

    def success(self, state: str) -> None:
        if state == PROBE:
            self.store.delete(self._open)
            self.store.delete(self._probe)

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

    # the same, on the store's async API (the gateway's event loop must not wait on a Redis round trip)

    async def aadmit(self) -> str:
        until = await self.store.aget(self._open)
        if until is None:
            return CLOSED
        if self.clock() < float(until):
            return OPEN
        return PROBE if await self.store.aincr(self._probe, 1.0, self.cooldown) == 1.0 else OPEN

    async def asuccess(self, state: str) -> None:
        if state == PROBE:
            await self.store.adelete(self._open)
            await self.store.adelete(self._probe)

    async def afailure(self, state: str) -> None:
        now = self.clock()
        if state != PROBE:
            slot = f"brk:{self.key}:fail:{int(now // self.window)}"
            if await self.store.aincr(slot, 1.0, self.window * 2) < self.failures:
                return
            await self.store.adelete(slot)
        await self.store.aset(self._open, repr(now + self.cooldown))
        await self.store.adelete(self._probe)

    def state(self) -> str:
        """What a call would find now, without taking the probe slot (for listings and tests)."""
        until: Optional[str] = self.store.get(self._open)
        if until is None:
            return CLOSED
        return OPEN if self.clock() < float(until) else "half-open"
