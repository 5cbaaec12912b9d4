"""The running event loop, without a system call on the gateway's request path.

On CPython 3.11, ``asyncio.get_running_loop()`` calls ``getpid()`` every time, to notice a forked
child. That is a system call, ~0.7 µs on a VM (``strace -c``: 2 a request on the plain gateway, 6 with
every policy). 3.12 dropped it. Callgrind does not see it, since it counts no kernel time.

A loop that serves ``mesh serve``'s connections is declared here by the server's protocol
(:func:`serving`) when a connection is made. :func:`running_loop` answers with it, without asking
asyncio, when it is running in the thread that declared it. That is exact: a thread runs one loop
at a time, and mesh serve never moves its loop to another thread. Anything else (library calls in
any loop, tests' loops, worker threads) gets ``asyncio.get_running_loop()`` as before::

    loop = running_loop()   # where asyncio.get_running_loop() was called once per request
"""

from __future__ import annotations

import asyncio
import os
import sys
from threading import get_ident
from typing import Any

__all__ = ["running_loop", "serving"]

_served: tuple[Any, int] = (None, 0)  # (the loop mesh serve declared, the thread it runs in)


def serving(loop: asyncio.AbstractEventLoop) -> None:
    """``loop`` serves mesh serve's connections in this thread (called from within it, by the protocol)."""
    global _served
    _served = (loop, get_ident())


def _forget() -> None:
    global _served
    _served = (None, 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _running_loop() -> asyncio.AbstractEventLoop:
    loop, thread = _served
    if thread == get_ident() and loop is not None and loop.is_running():
        return loop  # type: ignore[no-any-return]
    return asyncio.get_running_loop()


# 3.12 and later: asyncio's own, which makes no system call
running_loop = _running_loop if sys.version_info < (3, 12) else asyncio.get_running_loop
