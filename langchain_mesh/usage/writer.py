"""The ledger's writer process under ``mesh serve``: the rows are priced and written in another process.

    usage: {path: ./mesh-usage.db, flush_interval: 1.0, batch: 500}   # as for the library; nothing to add

Each gateway worker starts one (``python -m langchain_mesh.usage.writer_main``, its program) and
hands it the rows its event loop queued, every :data:`SEND_GAP` seconds while there are some: one
``marshal`` frame and one non-blocking ``write`` to a pipe (~0.5 µs a row). The process prices them
and writes them to SQLite (or the SQLAlchemy URL) in transactions of up to ``usage.batch`` rows, at
the latest ``flush_interval`` after the first of them arrived. Why a process: the ~5 µs a row of
pricing and SQLite's own work were the ledger's whole cost to the serving loop (bench/gateway.py,
issue 19), and a thread in the same process costs more than it saves (see :mod:`.ledger`).

What this means for a crash: rows already handed over are written even when the gateway dies (the
writer sees the pipe close, writes what it has, and exits); at most the rows of the last
:data:`SEND_GAP` are lost. A writer that dies is started again by the next send, and the log says how
many rows were lost with it.

Frames on the pipe: a 4-byte little-endian length, then ``marshal`` of ``(kind, value)``: ``("config",
{...})`` first, then ``("rows", [item, ...])`` (items as :meth:`.ledger.Ledger.record` queued them,
a :class:`~langchain_mesh.schema.Usage` as a tuple) and ``("flush", n)``, answered with ``n`` (4
bytes) on the writer's stdout once every row before it is committed.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import time
from typing import Any

__all__ = ["WriterProcess", "SEND_GAP", "HEAD"]

log = logging.getLogger("langchain_mesh.usage")

#: seconds between two hand-overs of the queued rows while requests come in
SEND_GAP = 0.05
HEAD = struct.Struct("<I")


def _frame(kind: str, value: Any) -> bytes:
    body = marshal.dumps((kind, value))
    return HEAD.pack(len(body)) + body


class WriterProcess:
    """The gateway's end: frames queued in :attr:`_out`, written without blocking by :meth:`push`."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._out = bytearray()
        self._frames: list[list[int]] = []  # [bytes not yet written, rows] of each frame in _out
        self._acks = 0
        self._start()

    def _start(self) -> None:
        # the URL travels in the pipe, not in argv or the environment (other users may list those)
        self.proc = subprocess.Popen([sys.executable, "-m", "langchain_mesh.usage.writer_main"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self._fd = self.proc.stdin.fileno()  # type: ignore[union-attr]
        os.set_blocking(self._fd, False)
        self._out, self._frames = bytearray(), []
        self._queue(_frame("config", self.settings), 0)

    def _queue(self, frame: bytes, rows: int) -> None:
        self._out += frame
        self._frames.append([len(frame), rows])

    def send(self, items: list[tuple[Any, ...]]) -> None:
        try:
            frame = _frame("rows", items)
        except ValueError:  # a value marshal does not take (a str subclass...): as its base type
            frame = _frame("rows", [tuple(_plain(v) for v in it) for it in items])
        self._queue(frame, len(items))
        self.push()

    def push(self) -> bool:
        """Write what the pipe takes now; True when nothing is left to write."""
        out, frames = self._out, self._frames
        try:
            while out:
                n = os.write(self._fd, out)
                del out[:n]
                while n and frames:  # the frames now written whole
                    done = min(n, frames[0][0])
                    frames[0][0] -= done
                    n -= done
                    if not frames[0][0]:
                        del frames[0]
        except BlockingIOError:
            return False
        except OSError as e:  # the writer died (EPIPE): start another, saying what was lost
            self._restart(e)
        return not out

    def _push_all(self, deadline: float) -> bool:
        """:meth:`push` until nothing is left, waiting for the pipe; False when ``deadline`` passes first."""
        while not self.push():
            if not select.select([], [self._fd], [], max(0.0, deadline - time.monotonic()))[1]:
                return False
        return True

    def _restart(self, error: BaseException) -> None:
        lost = sum(rows for _left, rows in self._frames)
        code = self.proc.poll()
        log.error("the usage ledger's writer process ended (%s, exit code %s): %d queued rows lost; "
                  "starting a new one", type(error).__name__, code, lost)
        self._close_pipes()
        self._start()

    def flush(self, timeout: float) -> None:
        """Hand over everything queued and wait until the writer has committed it."""
        self._acks += 1
        self._queue(_frame("flush", self._acks), 0)
        deadline = time.monotonic() + timeout
        if not self._push_all(deadline):
            return
        reply = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while time.monotonic() < deadline:
            if not select.select([reply], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return
            got = os.read(reply, 4)  # each answer is one 4-byte write: whole in a pipe
            if len(got) < 4:
                return  # the writer ended
            if HEAD.unpack(got)[0] >= self._acks:
                return

    def close(self, timeout: float) -> None:
        """Hand over what is queued, close the pipe and wait for the writer to write it and exit."""
        deadline = time.monotonic() + timeout
        self._push_all(deadline)
        self._close_pipes()
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("the usage ledger's writer process did not finish in %.0f s", timeout)

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()  # type: ignore[union-attr]
            except OSError:
                pass


def _plain(v: Any) -> Any:
    """``v`` as marshal takes it: an instance of a subclass of str, bool, int or float as the base type."""
    for t in (str, bool, int, float):
        if isinstance(v, t):
            return t(v)
    return v
