"""The running event loop, without a system call on the gateway's request path.

On CPython 3.11, ``asyncio.get_running_loop()`` calls ``getpid()`` every time, to notice a forked
child. That is a system call, 0.6-0.75 µs on a 2-core VM (``strace -c`` under wrk: 2 a request on the
plain gateway, 6.3 with every policy). 3.12 dropped it. Callgrind does not see it: it counts no
kernel time.

A loop that serves ``mesh serve``'s connections is declared here by the server's protocol
(:func:`serving`) when a connection is made. :func:`running_loop` answers with it, without asking
asyncio, while it is running in the thread that declared it. That is exact: a thread runs one loop at
a time, mesh serve never moves its loop to another thread, and a forked child forgets the declaration
(what the getpid() was for; 3.12 does the same with ``os.register_at_fork``). Anything else (library
calls in any loop, tests' loops, worker threads) gets ``asyncio.get_running_loop()`` as before::

    loop = running_loop()   # where asyncio.get_running_loop() was called on every request
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from threading import get_ident
from typing import Any, Callable

__all__ = ["running_loop", "serving"]


def _none() -> None:
    return None


# (the loop mesh serve declared, by weak reference: a finished server's loop is not kept; its thread)
_served: tuple[Callable[[], Any], int] = (_none, 0)


def serving(loop: asyncio.AbstractEventLoop) -> None:
    """``loop`` serves mesh serve's connections in this thread (called from within it, by the protocol)."""
    global _served
    _served = (weakref.ref(loop), get_ident())


def _forget() -> None:
    global _served
    _served = (_none, 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _running_loop() -> asyncio.AbstractEventLoop:
    ref, thread = _served
    if thread == get_ident():
        loop = ref()
        if loop is not None and loop.is_running():
            return loop  # type: ignore[no-any-return]
    return asyncio.get_running_loop()


# 3.12 and later: asyncio's own, which makes no system call
running_loop = _running_loop if sys.version_info < (3, 12) else asyncio.get_running_loop
