"""Routes: virtual LLMs (``route:<name>``) that send each call to one of their target LLMs.

A route is an LLM like any other (``mesh.get_llm("route:chat")``, listed by ``list_llms()``, usable
by the builders, the LangChain classes and ``mesh serve``) whose connection is a
:class:`~.route_connection.RouteConnection`: each operation picks targets per the strategy and calls them through the
*target's* own ``Mesh`` methods (its layers, its retry policy), under ``call_scope(extra={"route":
name})`` so that the ledger counts the route call once and tracing shows target calls as children::

    routes:
      chat:
        strategy: weighted            # fallback (config order) | weighted | least_busy | lowest_latency
        targets:
          - {llm: openai:main:gpt-4o, traffic_percentage: 80}
          - {llm: anthropic:backup:claude-3-5-sonnet-latest, traffic_percentage: 20}
        fallback_on: [retryable, context_window]   # + content_filter, any
        timeout: 30                   # the whole call: every target, retry and wait
        retry: {max_retries: 1, target_retries: 0}
        breaker: {failures: 5, window: 30, cooldown: 30}

The chosen target comes first, then (``fallbacks: true``) the others in config order; a target whose
circuit breaker is open is skipped. A streamed call falls back only while nothing has reached the
caller (the first event is pulled from the target before anything is yielded); once an event was
yielded, an error ends the stream: two models' output are never mixed.

Hand-written selection (a bisect over cumulative weights, a hash of the sticky key): the routing
libraries (LiteLLM's Router) come with a whole client stack; this is twenty lines.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from random import random as _random
from contextvars import ContextVar
from typing import Any, AsyncIterator, Iterator, Optional, Sequence

from ..errors import (
    BadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    RouteUnavailableError,
    ServerError,
    StreamInterruptedError,
)
from ..schema import AttemptInfo, CallMeta, StreamFooter, built
from .breaker import CLOSED, OPEN, PROBE, Breaker
from .retry import RetryBudget, RetryPolicy
from .scope import current_scope, reset_scope, set_scope

__all__ = ["Route", "pick_weighted", "sticky_point", "trigger_of", "route_meta",
           "RETRYABLE_TRIGGERS"]

RETRYABLE_TRIGGERS = frozenset({"rate_limit", "server_error", "timeout", "connection", "stream_interrupted"})

_CONTEXT_WINDOW = ("context_length_exceeded", "context window", "context_window", "maximum context length",
                   "prompt is too long", "input is too long", "too many tokens", "exceeds the context")

#: the meta of the last route call in this context: how the gateway's pass-through path (which gets
#: bytes, not an answer object) learns the target and attempts for its headers and usage log
_LAST_META: ContextVar[Optional[CallMeta]] = ContextVar("langchain_mesh_route_meta", default=None)


#: the first pass's target order a layer around the route chose before the call (the limits layer:
#: it takes the first target's rate-limit windows together with the route's, in one Redis round
#: trip, so the route must call that target first): (the route, the order); see Route.preset
_PICKED: ContextVar[Optional[tuple["Route", list[int]]]] = ContextVar("langchain_mesh_route_pick", default=None)


def route_meta() -> Optional[CallMeta]:
    return _LAST_META.get()


# ---- selection: pure functions ---------------------------------------------------------------------


def pick_weighted(cumulative: Sequence[float], point: float) -> int:
    """The index whose share of ``cumulative`` (running sums of the weights) holds ``point`` in [0, 1)."""
    return min(bisect_right(cumulative, point * cumulative[-1]), len(cumulative) - 1)


def sticky_point(key: str, salt: str = "") -> float:
    """A point in [0, 1) fixed by ``key``: the same caller lands on the same target while the weights
    stay the same (blake2b: stable across processes, unlike ``hash()``)."""
    import hashlib

    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def trigger_of(err: BaseException) -> Optional[str]:
    """Which ``fallback_on`` trigger ``err`` is, or None (an error that no target change can fix
    unless ``any`` is configured)."""
    if isinstance(err, RateLimitError):
        return "rate_limit"
    if isinstance(err, ProviderTimeoutError):
        return "timeout"
    if isinstance(err, ProviderConnectionError):
        return "connection"
    if isinstance(err, StreamInterruptedError):
        return "stream_interrupted"
    if isinstance(err, ServerError):
        return "server_error"
    if isinstance(err, BadRequestError) or (isinstance(err, ProviderError) and err.status in (400, 413)):
        text = f"{err} {err.provider_message or ''}".lower()
        if any(m in text for m in _CONTEXT_WINDOW):
            return "context_window"
    if isinstance(err, ProviderError) and err.retryable:
        return "server_error"
    return None


def _counts_for_breaker(err: BaseException) -> bool:
    # the target's fault (down, slow, throttling), not the caller's (a bad request, a long prompt)
    return isinstance(err, ProviderError) and err.retryable


def _attempt(llm_id: str, error: Optional[str], status: Optional[int], seconds: float) -> AttemptInfo:
    return built(AttemptInfo, {"llm_id": llm_id, "error": error, "status": status, "seconds": seconds})


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:300]


# ---- the route ------------------------------------------------------------------------------------


class _Attempts:
    """What a call tried: each attempt's target, error and time."""

    __slots__ = ("items", "last_error", "filtered")

    def __init__(self) -> None:
        self.items: list[AttemptInfo] = []
        self.last_error: Optional[BaseException] = None
        self.filtered: Any = None  # the last content-filtered answer (returned if nothing better comes)

    def add(self, llm_id: str, started: Optional[float], err: Optional[BaseException] = None,
            note: Optional[str] = None) -> None:
        self.items.append(_attempt(llm_id, note or (None if err is None else _describe(err)),
                                   getattr(err, "status", None),
                                   0.0 if started is None else time.perf_counter() - started))


class Route:
    """The dispatch of one ``routes.<name>`` entry (made once per mesh and route)."""

    def __init__(self, mesh: Any, name: str, cfg: Any, targets: list[Any], clock: Any = time.time):
        from .state import store_for

        self.mesh = mesh
        self.name = name
        self.id = f"route:{name}"
        self.cfg = cfg
        self.targets = targets
        self.ids = [t.id for t in targets]
        shares = [t.share for t in cfg.targets]
        self.cumulative = [sum(shares[:i + 1]) for i in range(len(shares))]
        self.timeouts = [t.timeout for t in cfg.targets]
        triggers = set(cfg.fallback_on)
        if "retryable" in triggers:
            triggers |= RETRYABLE_TRIGGERS
        self.any_error = "any" in triggers
        self.triggers = frozenset(triggers)
        self.content_filter = "content_filter" in triggers
        store = store_for(mesh)
        b = cfg.breaker
        self.breakers: Optional[list[Breaker]] = [
            Breaker(store, f"{self.id}>{t}", b.failures, b.window, b.cooldown, clock) for t in self.ids
        ] if b.enabled else None
        r = cfg.retry
        self.rounds = r.max_retries if r is not None else 0
        self.target_retries = r.target_retries if r is not None else None
        self.policy = RetryPolicy(r.base, r.cap, r.max_retry_after, None if r.budget is None else RetryBudget(
            store, self.id, r.budget.ratio, r.budget.min_retries, r.budget.window)) if r is not None else None
        self._scopes: tuple[Any, Any] = (None, None)
        # the order of a fallback route never changes: one list for every call (never mutated)
        self._fixed: Optional[list[int]] = (list(range(len(targets))) if cfg.fallbacks else [0]) \
            if cfg.strategy == "fallback" or len(targets) == 1 else None
        self._timed = cfg.strategy == "lowest_latency"
        # each pick's whole order (the pick, then the others in config order), made once: order() only
        # picks (callers never mutate these lists)
        n = len(targets)
        self._orders: list[list[int]] = [[f] + [i for i in range(n) if i != f] if cfg.fallbacks else [f]
                                         for f in range(n)]
        self.inflight = [0] * len(targets)
        #: (the placeholder model's bytes, each target's model bytes): set with the route's pass-through
        self.wire: tuple[bytes, list[bytes]] = (b"", [])
        self.latency: list[float] = [0.0] * len(targets)  # EWMA seconds; 0 = untried, so tried first

    @staticmethod
    def last_meta() -> Optional[CallMeta]:
        """:func:`route_meta`: the meta of the last route call in this context."""
        return _LAST_META.get()

    # ---- order --------------------------------------------------------------------------------------

    def order(self, sticky_key: Optional[str] = None) -> list[int]:
        """Target indices in the order this call tries them: the strategy's pick, then the others."""
        if self._fixed is not None:
            return self._fixed
        n = len(self.targets)
        strategy = self.cfg.strategy
        if strategy == "fallback" or n == 1:
            first = 0
        elif strategy == "weighted":
            point = sticky_point(sticky_key, self.name) if sticky_key is not None and self.cfg.sticky else _random()
            first = pick_weighted(self.cumulative, point)
        elif strategy == "least_busy":
            first = min(range(n), key=self.inflight.__getitem__)
        else:  # lowest_latency
            first = min(range(n), key=self.latency.__getitem__)
        return self._orders[first]

    def preset(self, order: list[int]) -> Any:
        """Make ``order`` (an :meth:`order` result) this context's first pass over the targets; the token
        for :meth:`unset`. For a layer that needs to know the first target before the call starts."""
        return _PICKED.set((self, order))

    @staticmethod
    def unset(token: Any) -> None:
        _PICKED.reset(token)

    def _first_pass(self, sticky_key: Optional[str]) -> list[int]:
        picked = _PICKED.get()
        return picked[1] if picked is not None and picked[0] is self else self.order(sticky_key)

    def _observe(self, i: int, seconds: float) -> None:
        old = self.latency[i]
        self.latency[i] = seconds if old == 0.0 else 0.8 * old + 0.2 * seconds

    # ---- shared steps of every dispatch -------------------------------------------------------------

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        t = timeout if timeout is not None else self.cfg.timeout
        return None if t is None else time.monotonic() + t

    def _budget(self, i: int, deadline: Optional[float]) -> tuple[bool, Optional[float]]:
        """(whether there is time left, the timeout for target ``i``'s call)."""
        own = self.timeouts[i]
        if deadline is None:
            return True, own
        left = deadline - time.monotonic()
        if left <= 0:
            return False, None
        return True, left if own is None else min(own, left)

    def _admit(self, i: int, tried: _Attempts) -> Optional[str]:
        if self.breakers is None:
            return "closed"
        state = self.breakers[i].admit()
        if state == OPEN:
            tried.add(self.ids[i], None, note="skipped: circuit breaker open")
            return None
        return state

    async def _aadmit(self, i: int, tried: _Attempts) -> Optional[str]:
        if self.breakers is None:
            return "closed"
        b = self.breakers[i]
        state = b.known() or await b.aadmit()
        if state == OPEN:
            tried.add(self.ids[i], None, note="skipped: circuit breaker open")
            return None
        return state

    async def _afailed(self, i: int, state: str, err: BaseException, started: float, tried: _Attempts) -> bool:
        if self.breakers is not None and (state == PROBE or _counts_for_breaker(err)):
            await self.breakers[i].afailure(state)
        return self._failed(i, state, err, started, tried, breaker=False)

    async def _asucceeded(self, i: int, state: str, started: float, tried: _Attempts) -> None:
        if state == PROBE and self.breakers is not None:
            await self.breakers[i].asuccess(state)
        self._succeeded(i, "closed", started, tried)

    def _failed(self, i: int, state: str, err: BaseException, started: float, tried: _Attempts,
                breaker: bool = True) -> bool:
        """Record ``err``; whether the route may go on to its next target."""
        tried.add(self.ids[i], started, err)
        tried.last_error = err
        if breaker and self.breakers is not None and (state == PROBE or _counts_for_breaker(err)):
            self.breakers[i].failure(state)
        if not isinstance(err, ProviderError):
            return False
        return self.any_error or trigger_of(err) in self.triggers

    def _succeeded(self, i: int, state: str, started: float, tried: _Attempts) -> None:
        seconds = time.perf_counter() - started
        if state == PROBE and self.breakers is not None:
            self.breakers[i].success(state)
        if self._timed:
            self._observe(i, seconds)
        tried.items.append(_attempt(self.ids[i], None, None, seconds))

    def _meta(self, llm_id: Optional[str], tried: _Attempts, inner: Optional[CallMeta] = None) -> CallMeta:
        if inner is None:
            meta = built(CallMeta, {"llm_id": llm_id, "attempts": tried.items, "guardrails": [], "cache": None,
                                     "cost": None, "currency": None})
        else:
            meta = inner.model_copy(update={"llm_id": llm_id, "attempts": [*inner.attempts, *tried.items]})
        _LAST_META.set(meta)
        return meta

    def _answer(self, result: Any, i: int, tried: _Attempts) -> Any:
        if not hasattr(result, "meta"):  # a token count
            self._meta(self.ids[i], tried)
            return result
        if result.meta is None:
            result.meta = self._meta(self.ids[i], tried)
            return result
        # an answer a target's layer made (a cache hit) may be shared: a copy carries the route's meta
        return result.model_copy(update={"meta": self._meta(self.ids[i], tried, result.meta)})

    def _refused(self, result: Any) -> bool:
        return self.content_filter and getattr(result, "finish_reason", None) == "content_filter"

    def _give_up(self, tried: _Attempts, deadline: Optional[float], timeout: Optional[float]) -> BaseException:
        self._meta(None, tried)
        if deadline is not None and time.monotonic() >= deadline:
            err: BaseException = ProviderTimeoutError(
                f"{self.id}: no target answered within timeout={timeout or self.cfg.timeout}s "
                f"({len(tried.items)} attempt(s): {_summary(tried)})")
        elif tried.last_error is not None:
            err = tried.last_error
        else:
            err = RouteUnavailableError(
                f"{self.id}: every target is skipped (circuit breakers open: {', '.join(self.ids)}); "
                f"retry after the cooldown ({self.cfg.breaker.cooldown}s)", retry_after=self.cfg.breaker.cooldown)
        err.route_attempts = tried.items  # type: ignore[attr-defined]
        return err

    def _wait(self, round_: int, tried: _Attempts, deadline: Optional[float]) -> Optional[float]:
        """Seconds to wait before pass ``round_ + 1`` over the targets, or None to stop."""
        if round_ >= self.rounds or self.policy is None:
            return None
        err = tried.last_error
        if not isinstance(err, ProviderError) or not err.retryable:
            return None
        wait = self.policy.delay(round_, err)
        if wait is None or (deadline is not None and time.monotonic() + wait >= deadline):
            return None
        if self.policy.budget is not None and not self.policy.budget.try_retry():
            return None
        return wait

    def _scope(self):  # type: ignore[no-untyped-def]
        """(the caller's scope, the token of the targets' scope: the caller's marked with the route)."""
        scope = current_scope()
        cached = self._scopes
        if cached[0] is not scope:  # one slot: the same caller scope (library default, a gateway key) repeats
            from dataclasses import replace

            cached = self._scopes = (scope, replace(scope, extra={**scope.extra, "route": self.name}))
        return scope, set_scope(cached[1])

    # ---- dispatch: one-shot operations --------------------------------------------------------------

    def call(self, op: str, request: Any, timeout: Optional[float] = None, max_retries: Optional[int] = None) -> Any:
        """One operation (``complete``, ``embed``...): ``timeout`` bounds the whole call, ``max_retries``
        (the caller's) replaces ``retry.target_retries`` for each target."""
        retries = self.target_retries if max_retries is None else max_retries
        deadline = self._deadline(timeout)
        tried = _Attempts()
        scope, token = self._scope()
        if self.policy is not None and self.policy.budget is not None:
            self.policy.budget.record_call()
        try:
            round_ = 0
            while True:
                for i in self.order(scope.sticky_key):
                    state = self._admit(i, tried)
                    if state is None:
                        continue
                    ok, t = self._budget(i, deadline)
                    if not ok:
                        break
                    started = time.perf_counter()
                    self.inflight[i] += 1
                    try:
                        result = _call_target(self.mesh, op, self.targets[i], request, t, retries)
                    except Exception as e:  # noqa: BLE001
                        if not self._failed(i, state, e, started, tried):
                            raise self._give_up(tried, deadline, timeout) from None
                        continue
                    finally:
                        self.inflight[i] -= 1
                    if self._refused(result):
                        self._succeeded(i, state, started, tried)
                        tried.items[-1].error = "content_filter"
                        tried.filtered = (i, result)
                        continue
                    self._succeeded(i, state, started, tried)
                    return self._answer(result, i, tried)
                if tried.filtered is not None:
                    return self._answer(tried.filtered[1], tried.filtered[0], tried)
                wait = self._wait(round_, tried, deadline)
                if wait is None:
                    raise self._give_up(tried, deadline, timeout)
                time.sleep(wait)
                round_ += 1
        finally:
            reset_scope(token)

    async def acall(self, op: str, request: Any, timeout: Optional[float] = None,
                    max_retries: Optional[int] = None) -> Any:
        retries = self.target_retries if max_retries is None else max_retries
        deadline = self._deadline(timeout)
        tried = _Attempts()
        scope, token = self._scope()
        if self.policy is not None and self.policy.budget is not None:
            self.policy.budget.record_call()
        try:
            round_ = 0
            while True:
                for i in self._first_pass(scope.sticky_key) if round_ == 0 else self.order(scope.sticky_key):
                    state = await self._aadmit(i, tried)
                    if state is None:
                        continue
                    ok, t = self._budget(i, deadline)
                    if not ok:
                        break
                    started = time.perf_counter()
                    self.inflight[i] += 1
                    try:
                        result = await _acall_target(self.mesh, op, self.targets[i], request, t, retries)
                    except Exception as e:  # noqa: BLE001
                        if not await self._afailed(i, state, e, started, tried):
                            raise self._give_up(tried, deadline, timeout) from None
                        continue
                    finally:
                        self.inflight[i] -= 1
                    if self._refused(result):
                        await self._asucceeded(i, state, started, tried)
                        tried.items[-1].error = "content_filter"
                        tried.filtered = (i, result)
                        continue
                    await self._asucceeded(i, state, started, tried)
                    return self._answer(result, i, tried)
                if tried.filtered is not None:
                    return self._answer(tried.filtered[1], tried.filtered[0], tried)
                wait = self._wait(round_, tried, deadline)
                if wait is None:
                    raise self._give_up(tried, deadline, timeout)
                import asyncio

                await asyncio.sleep(wait)
                round_ += 1
        finally:
            reset_scope(token)

    # ---- dispatch: streams (fall back only before the first event reached the caller) -------------

    def stream(self, request: Any, timeout: Optional[float] = None, max_retries: Optional[int] = None) -> Iterator[Any]:
        retries = self.target_retries if max_retries is None else max_retries
        deadline = self._deadline(timeout)
        tried = _Attempts()
        scope = current_scope()
        round_ = 0
        while True:
            for i in self.order(scope.sticky_key):
                state = self._admit(i, tried)
                if state is None:
                    continue
                ok, t = self._budget(i, deadline)
                if not ok:
                    break
                started = time.perf_counter()
                _, token = self._scope()
                try:
                    it = self.mesh.stream(self.targets[i], request, timeout=t, max_retries=retries)
                    first = next(it, None)
                    if first is None:
                        raise StreamInterruptedError(f"the stream from {self.ids[i]} ended without any event")
                except Exception as e:  # noqa: BLE001
                    if not self._failed(i, state, e, started, tried):
                        raise self._give_up(tried, deadline, timeout) from None
                    continue
                finally:
                    reset_scope(token)
                if isinstance(first, StreamFooter) and self._refused(first):
                    self._succeeded(i, state, started, tried)
                    tried.items[-1].error = "content_filter"
                    tried.filtered = (i, first)
                    _close(it)
                    continue
                self._succeeded(i, state, started, tried)
                self._meta(self.ids[i], tried)  # known before the first event: for the gateway's headers
                yield from self._rest(first, it, i, tried)
                return
            if tried.filtered is not None:
                yield self._answer(tried.filtered[1], tried.filtered[0], tried)
                return
            wait = self._wait(round_, tried, deadline)
            if wait is None:
                raise self._give_up(tried, deadline, timeout)
            time.sleep(wait)
            round_ += 1

    def _rest(self, first: Any, it: Iterator[Any], i: int, tried: _Attempts) -> Iterator[Any]:
        try:
            ev = first
            while True:
                yield self._answer(ev, i, tried) if isinstance(ev, StreamFooter) else ev
                ev = next(it, None)
                if ev is None:
                    return
        finally:
            _close(it)

    async def astream(self, request: Any, timeout: Optional[float] = None,
                      max_retries: Optional[int] = None) -> AsyncIterator[Any]:
        retries = self.target_retries if max_retries is None else max_retries
        deadline = self._deadline(timeout)
        tried = _Attempts()
        scope = current_scope()
        round_ = 0
        while True:
            for i in self.order(scope.sticky_key):
                state = await self._aadmit(i, tried)
                if state is None:
                    continue
                ok, t = self._budget(i, deadline)
                if not ok:
                    break
                started = time.perf_counter()
                _, token = self._scope()
                it = None
                try:
                    it = self.mesh.astream(self.targets[i], request, timeout=t, max_retries=retries)
                    try:
                        first = await it.__anext__()
                    except StopAsyncIteration:
                        raise StreamInterruptedError(f"the stream from {self.ids[i]} ended without any event") from None
                except Exception as e:  # noqa: BLE001
                    if it is not None:
                        await _aclose(it)
                    if not await self._afailed(i, state, e, started, tried):
                        raise self._give_up(tried, deadline, timeout) from None
                    continue
                finally:
                    reset_scope(token)
                if isinstance(first, StreamFooter) and self._refused(first):
                    await self._asucceeded(i, state, started, tried)
                    tried.items[-1].error = "content_filter"
                    tried.filtered = (i, first)
                    await _aclose(it)
                    continue
                await self._asucceeded(i, state, started, tried)
                self._meta(self.ids[i], tried)  # known before the first event: for the gateway's headers
                try:
                    ev = first
                    while True:
                        yield self._answer(ev, i, tried) if isinstance(ev, StreamFooter) else ev
                        try:
                            ev = await it.__anext__()
                        except StopAsyncIteration:
                            return
                finally:
                    await _aclose(it)
            if tried.filtered is not None:
                yield self._answer(tried.filtered[1], tried.filtered[0], tried)
                return
            wait = self._wait(round_, tried, deadline)
            if wait is None:
                raise self._give_up(tried, deadline, timeout)
            import asyncio

            await asyncio.sleep(wait)
            round_ += 1

    # ---- dispatch: the gateway's byte pass-through --------------------------------------------------

    async def forward(self, path: str, body: bytes, stream: bool, timeout: Optional[float] = None,
                      max_retries: Optional[int] = None) -> tuple[Any, Optional[bytes]]:
        """``body`` (the gateway's request with the route's placeholder model) to a target's
        pass-through: (the answer's bytes, None) or (a stream's open body, its first piece)."""
        sentinel, wire_models = self.wire
        breakers = self.breakers
        retries = self.target_retries if max_retries is None else max_retries
        deadline = self._deadline(timeout)
        tried = _Attempts()
        scope, token = self._scope()
        try:
            round_ = 0
            while True:
                for i in self._first_pass(scope.sticky_key) if round_ == 0 else self.order(scope.sticky_key):
                    # the breaker's state without a coroutine when it is known (Breaker.known): this
                    # is every gateway request's path
                    if breakers is None:
                        state: Optional[str] = CLOSED
                    else:
                        state = breakers[i].known() or await breakers[i].aadmit()
                        if state == OPEN:
                            tried.add(self.ids[i], None, note="skipped: circuit breaker open")
                            continue
                    ok, t = self._budget(i, deadline)
                    if not ok:
                        break
                    started = time.perf_counter()
                    out = body.replace(sentinel, wire_models[i], 1)
                    self.inflight[i] += 1
                    try:
                        content, first = await self.mesh.aforward(self.targets[i], path, out, stream, timeout=t,
                                                                  max_retries=retries)
                    except Exception as e:  # noqa: BLE001
                        if not await self._afailed(i, state, e, started, tried):
                            raise self._give_up(tried, deadline, None) from None
                        continue
                    finally:
                        self.inflight[i] -= 1
                    if state == PROBE:
                        await breakers[i].asuccess(state)  # type: ignore[index]
                    self._succeeded(i, CLOSED, started, tried)
                    if self.content_filter and not stream and content.find(b'"finish_reason":"content_filter"') >= 0:
                        tried.items[-1].error = "content_filter"
                        tried.filtered = (i, content)
                        continue
                    self._meta(self.ids[i], tried)
                    return content, first
                if tried.filtered is not None:
                    self._meta(self.ids[tried.filtered[0]], tried)
                    return tried.filtered[1], None
                wait = self._wait(round_, tried, deadline)
                if wait is None:
                    raise self._give_up(tried, deadline, None)
                import asyncio

                await asyncio.sleep(wait)
                round_ += 1
        finally:
            reset_scope(token)


def _summary(tried: _Attempts) -> str:
    return "; ".join(f"{a.llm_id}: {a.error}" for a in tried.items if a.error) or "none"


class _Replay:
    """A target's open stream whose first piece the route already read: read() gives it back first."""

    __slots__ = ("content", "first")

    def __init__(self, content: Any, first: Optional[bytes]):
        self.content, self.first = content, first

    async def read(self) -> bytes:
        if self.first is not None:
            piece, self.first = self.first, None
            return piece
        return await self.content.read()

    def close(self) -> None:
        self.content.close()


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


async def _aclose(it: Any) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - closing must not mask what ended the stream
            pass


def _call_target(mesh: Any, op: str, llm: Any, request: Any, timeout: Optional[float],
                 retries: Optional[int]) -> Any:
    if op in ("count_tokens",):
        return mesh.count_tokens(llm, request)
    return getattr(mesh, op)(llm, request, timeout=timeout, max_retries=retries)


async def _acall_target(mesh: Any, op: str, llm: Any, request: Any, timeout: Optional[float],
                        retries: Optional[int]) -> Any:
    if op == "acount_tokens":
        return await mesh.acount_tokens(llm, request)
    return await getattr(mesh, op)(llm, request, timeout=timeout, max_retries=retries)
