"""The retry policy: retry what the provider says is transient, as soon as it says to.

Every connection raises typed errors (``ProviderError.retryable``, ``retry_after``) and never retries
by itself, so one policy treats every provider alike: rate limits and 5xx are retried with
exponential backoff and jitter, a provider's ``Retry-After`` hint replaces the backoff, and a
400/401/403/404 is never retried. A stream is retried only before its first event: once text has
reached the caller, replaying it would duplicate output.
"""

from __future__ import annotations

import time
from typing import AsyncIterator, Awaitable, Callable, Iterator, Optional, TypeVar

from ..errors import ProviderError, ProviderTimeoutError

# asyncio and random are imported where used: the sync hot path and `import langchain_mesh`
# should not pay for them

__all__ = ["backoff_delay", "call_with_retries", "acall_with_retries", "stream_with_retries",
           "astream_with_retries", "MAX_RETRY_AFTER"]

T = TypeVar("T")

#: the longest provider-requested wait we honour; beyond it the error goes back to the caller,
#: who can route elsewhere instead of holding a request open for minutes
MAX_RETRY_AFTER = 60.0
_BASE = 0.5
_CAP = 8.0


def backoff_delay(attempt: int, err: ProviderError) -> Optional[float]:
    """Seconds to wait before retry ``attempt`` (0-based), or None when waiting is not worth it."""
    if err.retry_after is not None:
        wait = max(0.0, float(err.retry_after))
        return wait if wait <= MAX_RETRY_AFTER else None
    import random

    return min(_CAP, _BASE * (2 ** attempt)) * (0.5 + random.random() / 2)


def _plan(err: BaseException, attempt: int, max_retries: Optional[int]) -> Optional[float]:
    """The wait before retrying ``err``, or None to give up and raise it."""
    if not isinstance(err, ProviderError) or not err.retryable or attempt >= (max_retries or 0):
        return None
    return backoff_delay(attempt, err)


def call_with_retries(fn: Callable[[], T], max_retries: Optional[int]) -> T:
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            wait = _plan(e, attempt, max_retries)
            if wait is None:
                raise
            time.sleep(wait)
            attempt += 1


async def acall_with_retries(fn: Callable[[], Awaitable[T]], max_retries: Optional[int],
                             timeout: Optional[float] = None) -> T:
    import asyncio

    attempt = 0
    while True:
        try:
            if timeout is None:
                return await fn()
            try:
                return await asyncio.wait_for(fn(), timeout)
            except asyncio.TimeoutError:
                raise ProviderTimeoutError(f"no answer within timeout={timeout}s") from None
        except Exception as e:  # noqa: BLE001
            wait = _plan(e, attempt, max_retries)
            if wait is None:
                raise
            await asyncio.sleep(wait)
            attempt += 1


def stream_with_retries(open_stream: Callable[[], Iterator[T]], max_retries: Optional[int],
                        timeout: Optional[float] = None) -> Iterator[T]:
    """Retry a stream that fails before its first event; once anything was yielded, errors propagate.

    ``timeout`` bounds the whole stream; a synchronous stream is checked between events.
    """
    attempt = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        started = False
        it = open_stream()
        try:
            for ev in it:
                started = True
                yield ev
                if deadline is not None and time.monotonic() > deadline:
                    raise ProviderTimeoutError(f"stream not finished within timeout={timeout}s")
            return
        except Exception as e:  # noqa: BLE001
            wait = None if started else _plan(e, attempt, max_retries)
            if wait is None:
                raise
            time.sleep(wait)
            attempt += 1
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a consumer that stops early releases the provider's stream
                close()


async def astream_with_retries(open_stream: Callable[[], AsyncIterator[T]], max_retries: Optional[int],
                               timeout: Optional[float] = None) -> AsyncIterator[T]:
    import asyncio

    attempt = 0
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        started = False
        it = open_stream()
        try:
            while True:
                try:
                    if deadline is None:
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
            wait = None if started else _plan(e, attempt, max_retries)
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
