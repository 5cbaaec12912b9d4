"""The retry policy: retry what the provider says is transient, as soon as it says to, within a deadline.

Every connection raises typed errors (``ProviderError.retryable``, ``retry_after``) and never retries
by itself, so one policy, run by :class:`~langchain_mesh.mesh.Mesh` dispatch and nowhere else, treats
every provider alike: rate limits and 5xx are retried with exponential backoff and jitter, a
provider's ``Retry-After`` hint replaces the backoff, and a 400/401/403/404 is never retried. A stream
is retried only before its first event: once text has reached the caller, replaying it would
duplicate output.

The ``timeout`` bounds the whole call, retries and waits included (a deadline), not each attempt: a
wait that would end past the deadline is not waited, the caller gets the provider's error at once
(with its ``Retry-After``, which the gateway passes on). An attempt the transport does not already
bound by the time left is cut at the deadline (``asyncio.wait_for``; a synchronous call waits for it
on a worker thread, see :func:`_run_bounded`).

The backoff is exponential with *full* jitter (a uniform wait in ``[0, min(cap, base * 2**n)]``,
AWS's "Exponential Backoff and Jitter": it spreads the retries of many clients hit by one outage best),
a ``Retry-After`` beyond ``max_retry_after`` is not waited (the error goes back, so a route falls back
instead), and a retry *budget* keeps a failing provider from being hammered: retries may be at most
``ratio`` of the calls of the last ``window`` seconds (plus ``min_retries``), counted in the mesh's
state store. Configurable per connection and per route::

    connections:
      openai:
        type: openai
        max_retries: 2
        retry: {base: 0.5, cap: 8, max_retry_after: 30, budget: {ratio: 0.2, min_retries: 5, window: 10}}

Example, as the mesh calls it::

    call_with_retries(lambda: conn.complete(model, request), max_retries=2, timeout=30.0,
                      first_bounded=True)   # the connection's own timeout already bounds attempt one
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from contextvars import ContextVar
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional, TypeVar

from ..errors import ProviderError, ProviderTimeoutError

# asyncio, random and threading are imported where used: the sync hot path and `import langchain_mesh`
# should not pay for them

__all__ = ["ATTEMPTS", "backoff_delay", "call_with_retries", "acall_with_retries", "stream_with_retries",
           "astream_with_retries", "MAX_RETRY_AFTER", "RetryPolicy", "RetryBudget", "DEFAULT_POLICY"]

T = TypeVar("T")

#: set by the tracing layer (policies/tracing.py) for the call it traces: each attempt runs wrapped by
#: its ``wrap`` / ``awrap`` / ``wrap_stream`` / ``awrap_stream`` (a span per attempt); None: untraced
ATTEMPTS: ContextVar[Optional[Any]] = ContextVar("langchain_mesh_attempts", default=None)

#: the longest provider-requested wait we honour; beyond it the error goes back to the caller,
#: who can route elsewhere instead of holding a request open for minutes
MAX_RETRY_AFTER = 60.0
_BASE = 0.5
_CAP = 8.0


class RetryBudget:
    """At most ``ratio`` retries per call (plus ``min_retries``) over a ``window`` of seconds, per key
    (a connection or a route target), in a :class:`~.state.StateStore` so gateway workers share it.

    The counters live in fixed windows (``<key>:<window index>``): a sliding log would cost a write
    per call for little gain. ``clock`` is injectable for tests."""

    __slots__ = ("store", "key", "ratio", "min_retries", "window", "clock")

    def __init__(self, store: Any, key: str, ratio: float = 0.2, min_retries: int = 3, window: float = 10.0,
                 clock: Callable[[], float] = time.time):
        self.store, self.key, self.ratio = store, key, ratio
        self.min_retries, self.window, self.clock = min_retries, window, clock

    def _slot(self) -> str:
        return f"{self.key}:{int(self.clock() // self.window)}"

    def record_call(self) -> None:
        self.store.incr(f"rbc:{self._slot()}", 1.0, self.window * 2)

    def try_retry(self) -> bool:
        """Whether one more retry fits the budget (and if so, count it)."""
        slot = self._slot()
        calls = float(self.store.get(f"rbc:{slot}") or 0.0)
        allowed = self.min_retries + self.ratio * calls
        if self.store.incr(f"rbr:{slot}", 1.0, self.window * 2) > allowed:
            self.store.incr(f"rbr:{slot}", -1.0)
            return False
        return True


@dataclass(frozen=True)
class RetryPolicy:
    """How to wait between retries (see the module docstring); ``budget`` None: no budget."""

    base: float = _BASE
    cap: float = _CAP
    max_retry_after: float = MAX_RETRY_AFTER
    budget: Optional[RetryBudget] = None

    def delay(self, attempt: int, err: ProviderError) -> Optional[float]:
        """Seconds to wait before retry ``attempt`` (0-based), or None when waiting is not worth it."""
        if err.retry_after is not None:
            wait = max(0.0, float(err.retry_after))
            return wait if wait <= self.max_retry_after else None
        import random

        # full jitter: uniform over [0, the exponential step]
        return random.uniform(0.0, min(self.cap, self.base * (2 ** attempt)))


DEFAULT_POLICY = RetryPolicy()


def backoff_delay(attempt: int, err: ProviderError, policy: RetryPolicy = DEFAULT_POLICY) -> Optional[float]:
    """Seconds to wait before retry ``attempt`` (0-based), or None when waiting is not worth it."""
    return policy.delay(attempt, err)


def _plan(err: BaseException, attempt: int, max_retries: Optional[int],
          deadline: Optional[float] = None, policy: Optional[RetryPolicy] = None) -> Optional[float]:
    """The wait before retrying ``err``, or None to give up and raise it (also when the wait would
    end past the deadline: the caller then has the provider's error and its Retry-After at once, and
    when the retry budget is spent)."""
    if not isinstance(err, ProviderError) or not err.retryable or attempt >= (max_retries or 0):
        return None
    policy = policy or DEFAULT_POLICY
    wait = policy.delay(attempt, err)
    if wait is not None and deadline is not None and time.monotonic() + wait >= deadline:
        return None
    if wait is not None and policy.budget is not None and not policy.budget.try_retry():
        return None
    return wait


def _count(policy: Optional[RetryPolicy]) -> None:
    """One more call in the retry budget's window (what its retries are a share of)."""
    if policy is not None and policy.budget is not None:
        policy.budget.record_call()


def _late(timeout: Optional[float], attempts: int) -> ProviderTimeoutError:
    return ProviderTimeoutError(f"no answer within timeout={timeout}s (the whole call: {attempts} attempt(s), "
                                "waits included)")


def _run_bounded(fn: Callable[[], T], seconds: float, timeout: Optional[float], attempts: int) -> T:
    """``fn()`` given at most ``seconds``. A blocking call cannot be interrupted, so it runs on a worker
    thread and is abandoned at the deadline (it ends by the connection's own per-attempt timeout; its
    answer is dropped). Only retries and callers' timeouts shorter than the connection's take this
    path, so the common call pays no thread hop."""
    import contextvars
    import threading

    box: list = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box.append((False, e))

    # the caller's context variables (tracing, callbacks) go with the attempt
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="mesh-attempt", daemon=True)
    worker.start()
    worker.join(max(0.0, seconds))
    if not box:
        raise _late(timeout, attempts)
    ok, value = box[0]
    if ok:
        return value
    raise value


def call_with_retries(fn: Callable[[], T], max_retries: Optional[int], timeout: Optional[float] = None,
                      first_bounded: bool = False, policy: Optional[RetryPolicy] = None) -> T:
    """``fn()`` retried per the policy. ``timeout`` bounds the whole call; ``first_bounded``: the
    transport already bounds the first attempt by ``timeout`` (the connection's own timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 0
    _count(policy)
    observer = ATTEMPTS.get()
    if observer is not None:
        fn = observer.wrap(fn)
    while True:
        try:
            if deadline is None or (attempt == 0 and first_bounded):
                return fn()
            return _run_bounded(fn, deadline - time.monotonic(), timeout, attempt + 1)
        except Exception as e:  # noqa: BLE001
            wait = _plan(e, attempt, max_retries, deadline, policy)
            if wait is None:
                raise
            time.sleep(wait)
            attempt += 1


async def acall_with_retries(fn: Callable[[], Awaitable[T]], max_retries: Optional[int],
                             timeout: Optional[float] = None, first_bounded: bool = False,
                             policy: Optional[RetryPolicy] = None) -> T:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    attempt = 0
    _count(policy)
    observer = ATTEMPTS.get()
    if observer is not None:
        fn = observer.awrap(fn)
    while True:
        try:
            if deadline is None or (attempt == 0 and first_bounded):
                return await fn()
            try:
                return await asyncio.wait_for(fn(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise _late(timeout, attempt + 1) from None
        except Exception as e:  # noqa: BLE001
            wait = _plan(e, attempt, max_retries, None if deadline is None else
                         time.monotonic() + deadline - loop.time(), policy)
            if wait is None:
                raise
            await asyncio.sleep(wait)
            attempt += 1


def stream_with_retries(open_stream: Callable[[], Iterator[T]], max_retries: Optional[int],
                        timeout: Optional[float] = None, whole: bool = True,
                        policy: Optional[RetryPolicy] = None) -> Iterator[T]:
    """Retry a stream that fails before its first event; once anything was yielded, errors propagate.

    ``timeout`` is a deadline for the retries (no wait past it); with ``whole`` it bounds the whole
    stream too, checked between events (a synchronous read cannot be interrupted). The mesh passes
    ``whole=False`` for the connection's own timeout, which bounds each read, not a long generation.
    """
    attempt = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    check = deadline if whole else None
    _count(policy)
    observer = ATTEMPTS.get()
    if observer is not None:
        open_stream = observer.wrap_stream(open_stream)
    while True:
        started = False
        it = open_stream()
        try:
            for ev in it:
                started = True
                yield ev
                if check is not None and time.monotonic() > check:
                    raise ProviderTimeoutError(f"stream not finished within timeout={timeout}s")
            return
        except Exception as e:  # noqa: BLE001
            wait = None if started else _plan(e, attempt, max_retries, deadline, policy)
            if wait is None:
                raise
            time.sleep(wait)
            attempt += 1
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a consumer that stops early releases the provider's stream
                close()


async def astream_with_retries(open_stream: Callable[[], AsyncIterator[T]], max_retries: Optional[int],
                               timeout: Optional[float] = None, whole: bool = True,
                               policy: Optional[RetryPolicy] = None) -> AsyncIterator[T]:
    """As :func:`stream_with_retries`; each wait for an event is cut at the deadline when ``whole``,
    and so is a retried attempt's wait for its first event."""
    import asyncio

    attempt = 0
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    _count(policy)
    observer = ATTEMPTS.get()
    if observer is not None:
        open_stream = observer.awrap_stream(open_stream)
    while True:
        started = False
        it = open_stream()
        try:
            while True:
                try:
                    if deadline is None or not (whole or (attempt and not started)):
                        ev = await it.__anext__()
                    else:
                        ev = await asyncio.wait_for(it.__anext__(), max(0.0, deadline - loop.time()))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise ProviderTimeoutError(f"stream not finished within timeout={timeout}s") from None
                started = True
                yield ev
        except Exception as e:  # noqa: BLE001
            wait = None if started else _plan(e, attempt, max_retries, None if deadline is None else
                                              time.monotonic() + deadline - loop.time(), policy)
            if wait is None:
                raise
            await asyncio.sleep(wait)
            attempt += 1
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001
                    pass
