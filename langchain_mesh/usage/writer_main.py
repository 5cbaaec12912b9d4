"""The program of the ledger's writer process (:mod:`.writer` starts it and says what it does).

    python -m langchain_mesh.usage.writer_main    # frames on stdin; each flush answered on stdout
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import sys
import time
from types import SimpleNamespace
from typing import Any, Optional

from .ledger import Rows, open_sink
from .prices import Pricer
from .writer import HEAD

log = logging.getLogger("langchain_mesh.usage")


class _Frames:
    """Frames read from a file descriptor, waiting at most until a deadline."""

    def __init__(self, fd: int):
        self.fd, self.buf, self.eof = fd, bytearray(), False

    def next(self, deadline: Optional[float]) -> Optional[tuple[str, Any]]:
        """The next frame; None at EOF or when ``deadline`` (monotonic) passes first."""
        while True:
            if len(self.buf) >= 4:
                size = HEAD.unpack_from(self.buf)[0]
                if len(self.buf) >= 4 + size:
                    frame = marshal.loads(bytes(self.buf[4:4 + size]))
                    del self.buf[:4 + size]
                    return frame  # type: ignore[no-any-return]
            if self.eof:
                return None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                    return None
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                self.eof = True
            self.buf += chunk


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="mesh usage writer: %(message)s")
    frames = _Frames(sys.stdin.fileno())
    first = frames.next(None)
    if first is None or first[0] != "config":
        return
    s = first[1]
    overrides = {k: SimpleNamespace(input=i, output=o, cached_input=c) for k, (i, o, c) in s["prices"].items()}
    rows = Rows(Pricer(overrides), s["currency"])
    try:
        sink = open_sink(s["path"], s["url"])
    except Exception as e:  # noqa: BLE001 - said once, loudly; the frames are still read (no broken pipe, no restarts)
        log.error("the usage ledger cannot open its database: %s; calls go on unrecorded", e)
        sink = _Nowhere()
    _warm(rows, s.get("warm", ()))
    pending: list[tuple[Any, ...]] = []
    due: Optional[float] = None
    try:
        while True:
            frame = frames.next(due)
            if frame is not None and frame[0] == "rows":
                pending += frame[1]
                due = due or time.monotonic() + s["flush_interval"]
                if len(pending) < s["batch"]:
                    continue
            _write(sink, rows, pending, s["batch"])
            pending, due = [], None
            if frame is not None and frame[0] == "flush":
                sys.stdout.buffer.write(HEAD.pack(frame[1]))
                sys.stdout.buffer.flush()
            elif frame is None and frames.eof:
                return
    finally:
        sink.close()


def _warm(rows: Any, targets: Any) -> None:
    """Price the gateway's LLMs now, before rows come (Ledger.run_on's ``warm``)."""
    for target in targets:
        try:
            rows.price(target)
        except Exception as e:  # noqa: BLE001 - its rows are priced (or said unpriceable) when they come
            log.warning("could not look up the price of %s at start: %s", target, e)


class _Nowhere:
    """Where rows go when the database cannot be opened (said once by :func:`main`)."""

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        pass

    def close(self) -> None:
        pass


def _write(sink: Any, rows: Any, items: list[tuple[Any, ...]], batch: int) -> None:
    for i in range(0, len(items), batch):
        try:
            sink.write([rows.make(it) for it in items[i:i + batch]])
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the writer
            log.error("could not write %d rows: %s", len(items[i:i + batch]), e)


if __name__ == "__main__":
    main()
