"""Client lifetimes for connections: one sync client, and one async client per event loop.

An async client's connection pool belongs to the loop that opened it, so a connection used from
several loops (``asyncio.run`` twice, a server with workers) keeps one per loop. A client's sockets
refer to its loop, so a weak reference alone would never let a finished loop go: the clients of
closed loops are dropped whenever a new loop's client is made, and the collector then frees the
loop, the client and its sockets together. ``close()`` closes each async client on its own loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Awaitable, Callable, Optional

from ..._loop import running_loop as _running_loop

__all__ = ["PerLoopClients", "close_on_its_loop"]


def close_on_its_loop(loop: asyncio.AbstractEventLoop, close: Callable[[], Awaitable[Any]]) -> None:
    """Run ``close()`` on ``loop`` from synchronous code (this thread's loop or another's); a closed
    loop can no longer run it, and the client's sockets go when it is collected."""
    if loop.is_closed():
        return
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(close(), loop)  # type: ignore[arg-type]
    else:
        loop.run_until_complete(close())


class PerLoopClients:
    """``make(is_async)`` builds a client on first use; ``close_sync``/``close_async`` release one."""

    def __init__(self, make: Callable[[bool], Any], close_sync: Callable[[Any], None],
                 close_async: Callable[[Any], Awaitable[Any]]):
        self._make = make
        self._close_sync = close_sync
        self._close_async = close_async
        self._lock = threading.Lock()
        self._sync: Optional[Any] = None
        self._async: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
        # the last (loop, client) handed out, both by weak reference (a strong one would keep a finished
        # loop alive): a server asks from one loop on every request, and the weak dict's lookup (a new
        # weak reference each time) cost a pass-through request ~1.5 µs
        self._last: Optional[tuple[Any, Any]] = None

    def sync(self) -> Any:
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._make(False)
                client = self._sync
        return client

    def running_loop(self) -> Any:
        """The async client of the running event loop."""
        loop = _running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            client = last[1]()
            if client is not None:
                return client
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                client = self._async.get(loop)
                if client is None:
                    for closed in [lp for lp in self._async if lp.is_closed()]:
                        del self._async[closed]  # nothing can run on it any more (asyncio.run ended)
                    client = self._async[loop] = self._make(True)
        try:
            self._last = (weakref.ref(loop), weakref.ref(client))
        except TypeError:  # a client without weak references: looked up each time
            pass
        return client

    def close(self) -> None:
        with self._lock:
            sync, self._sync = self._sync, None
            clients = list(self._async.items())
            self._async.clear()
            self._last = None
        if sync is not None:
            self._close_sync(sync)
        for loop, client in clients:
            close_on_its_loop(loop, lambda c=client: self._close_async(c))
