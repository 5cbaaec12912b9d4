"""The ledger's writer: rows queued by the request path, priced and written in batches by one thread.

A call only appends a tuple to a deque (no I/O, no pricing, no thread woken on the request path). A
background thread takes the rows every ``usage.flush_interval`` seconds (``usage.batch`` at most per
transaction), prices them (:mod:`.prices`) and writes them in one transaction: SQLite by default (one file, WAL mode:
readers such as ``mesh usage`` never block the writer; several worker processes may write to one
file, SQLite serialises them), or any SQLAlchemy URL. :meth:`Ledger.close` (``Mesh.close()``, which
``mesh serve`` calls at shutdown) writes what is queued before returning. A process that dies
without closing loses at most the rows not yet written (those of the last ``flush_interval``); a
committed transaction is never half-written, so the file stays readable.

Under ``mesh serve`` the rows are written by a writer process instead (:mod:`.writer`), to which the
event loop hands them every few tens of milliseconds: pricing a row and SQLite's work on it (~5 µs)
then cost the serving process nothing. Not a thread: a second Python thread that wants the GIL while
the loop is busy is woken at every turn of the loop (the loop lets the GIL go around each poll) and
mostly fails to take it, a futex storm that cost the serving thread ~90 µs per request in
bench/gateway_micro.py (LIMITS=1).

    ledger = ledger_for(mesh)         # one per mesh, started on its first row
    ledger.flush()                    # write now and wait (tests, reports in the same process)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from itertools import repeat, starmap
from typing import Any, Optional, Sequence

__all__ = ["Ledger", "ledger_for", "COLUMNS", "TABLE"]

log = logging.getLogger("langchain_mesh.usage")

TABLE = "mesh_usage"
#: the row, in order; ``cost`` is NULL when the price is unknown
COLUMNS = ("ts", "day", "api_key", "user_name", "team", "llm_id", "target", "op", "input_tokens", "output_tokens",
           "cached_tokens", "reasoning_tokens", "latency_ms", "status", "error", "cost", "currency")
_TYPES = ("REAL", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "INTEGER", "INTEGER", "INTEGER",
          "INTEGER", "REAL", "TEXT", "TEXT", "REAL", "TEXT")
_SQLITE_SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                  + ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, _TYPES)) + ")")
_LATER = ...  # a row's cost, to be worked out by the writer (Ellipsis: marshal carries it to the writer process)
#: rows per INSERT statement: 50 x 17 parameters stays under SQLite's oldest limit (999 per statement)
_PER_STATEMENT = 50
_ON_LOOP = object()  # Ledger._thread when a writer process writes: record() starts no thread


class Ledger:
    """Queue rows with :meth:`record`; a daemon thread writes them (see the module docstring)."""

    def __init__(self, config: Any, pricer: Any):
        self.config = config  # UsageConfig
        self.pricer = pricer
        # a deque, not a queue.Queue: an append wakes no one (a wake-up per row cost the serving thread
        # a GIL hand-off per request); the writer looks every flush_interval, or when flushed
        self._rows: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._waiters: list[threading.Event] = []
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._closed = False
        self._stop = False
        self.written = 0  # rows written, or under mesh serve handed to the writer process
        self.failed: Optional[BaseException] = None
        self._rows_of = Rows(pricer, config.currency)
        self._loop: Any = None  # the event loop that hands rows to the writer process (run_on), and its timer
        self._proc: Any = None
        self._timer: Any = None

    # ---- the request path: one append ------------------------------------------------------------

    def record(self, ts: float, key: Optional[str], user: Optional[str], team: Optional[str], llm_id: str,
               target: Optional[str], op: str, usage: Any, latency: float, status: str,
               error: Optional[str], cost: Any = _LATER) -> None:
        """Queue one row; ``cost`` when the caller priced it already (None: unknown), else the writer does.
        ``usage``: a :class:`Usage`, the OpenAI wire ``usage`` dict (the pass-through's) or None; a
        Usage is queued as the plain tuple :meth:`Rows.make` reads, so that the rows go to a writer
        process as they are (marshal takes only plain values)."""
        if self._thread is None:
            self._start()
        if usage is not None and type(usage) is not dict:
            usage = (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens)
        self._rows.append((ts, key, user, team, llm_id, target or llm_id, op, usage, latency, status, error, cost))

    def cost(self, target: str, usage: Any) -> Optional[float]:
        """What ``usage`` (a :class:`Usage`) on the LLM ``target`` cost; None when its price is unknown."""
        return self.pricer.cost(*_price_args(target), usage.input_tokens or 0, usage.output_tokens or 0,
                                usage.cached_input_tokens)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="mesh-usage-ledger", daemon=True)
                self._thread.start()

    def flush(self, timeout: float = 30.0) -> None:
        """Write every queued row now; returns when they are committed."""
        if self._thread is _ON_LOOP:
            self._on_loop(lambda: self._flush_process(timeout), timeout)
            return
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        with self._lock:
            self._waiters.append(done)
        self._wake.set()
        done.wait(timeout)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is _ON_LOOP:
            self._on_loop(self._close_on_loop, 60)
        elif thread is not None:
            self._stop = True
            self._wake.set()
            thread.join(60)

    # ---- mesh serve: a writer process writes ------------------------------------------------------

    def run_on(self, loop: Any, warm: Sequence[str] = ()) -> bool:
        """Hand the rows to a writer process from ``loop`` (see :mod:`.writer`) instead of writing them
        from a thread of this process. False when it cannot start (the thread writes then). ``warm``:
        the LLM ids the writer prices as it starts, before rows come (the first lookup imports the price
        dataset, ~0.1 s of CPU that would otherwise fall on the first seconds of serving)."""
        from .writer import WriterProcess

        with self._lock:
            if self._thread is not None or self._closed:
                return False
            cfg = self.config
            try:  # an URL that does not resolve falls to the thread, which says why (as before)
                path, url = sink_args(cfg)
                self._proc = WriterProcess({"path": path, "url": url, "flush_interval": cfg.flush_interval,
                                            "batch": cfg.batch, "currency": cfg.currency,
                                            "prices": self.pricer.overrides_wire(), "warm": list(warm)})
            except Exception as e:  # noqa: BLE001 - the thread writes instead, and says so
                log.warning("the usage ledger's writer process could not start (%s): writing from a thread", e)
                return False
            self._loop, self._thread = loop, _ON_LOOP
        self._timer = loop.call_later(cfg.flush_interval, self._tick)
        return True

    def _tick(self) -> None:
        """Hand the queued rows over; back :data:`.writer.SEND_GAP` later while rows come in."""
        from .writer import SEND_GAP

        self._timer = None
        if self._closed:
            return
        busy = bool(self._rows)
        try:
            busy = self._send() or busy  # rows came in, or bytes wait for the pipe: look again soon
        finally:  # a row that cannot be sent (the loop logs why) must not stop the rows after it
            self._timer = self._loop.call_later(SEND_GAP if busy else self.config.flush_interval, self._tick)

    def _send(self) -> bool:
        """The queued rows to the writer process; True while some bytes wait for the pipe."""
        if self._rows:
            items = _popped(self._rows, len(self._rows))
            self._proc.send(items)
            self.written += len(items)
        return not self._proc.push()

    def _flush_process(self, timeout: float = 30.0) -> None:
        if self._proc is not None:
            self._send()
            self._proc.flush(timeout)

    def _close_on_loop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._proc is not None:
            self._send()
            self._proc.close(60)
            self._proc = None  # a flush after close has nothing to hand over (and starts no writer)

    def _on_loop(self, fn: Any, timeout: float) -> None:
        """Run ``fn`` on the writing loop's thread and wait for it: at once when called there (or when
        the loop has stopped: nothing else writes then), else handed to the loop."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or loop.is_closed() or not loop.is_running():
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()
        loop.call_soon_threadsafe(run)
        done.wait(timeout)

    # ---- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            sink = open_sink(*sink_args(self.config))
        except Exception as e:  # noqa: BLE001 - said once, loudly; calls go on unrecorded
            self.failed = e
            log.error("the usage ledger cannot open its database: %s", e)
            self._rows.clear()
            return
        try:
            while True:
                self._wake.wait(self.config.flush_interval)
                self._wake.clear()
                with self._lock:
                    waiters, self._waiters = self._waiters, []
                stop = self._stop
                self._drain(sink)
                for w in waiters:
                    w.set()
                if stop:
                    return
        finally:
            sink.close()

    def _drain(self, sink: Any) -> None:
        while self._rows:
            self._write(sink, self._take(self.config.batch))

    def _take(self, n: int) -> list[tuple[Any, ...]]:
        """Up to ``n`` queued rows, made ready to write (only the writer takes rows: the count holds)."""
        return list(map(self._rows_of.make, _popped(self._rows, min(len(self._rows), n))))

    def _write(self, sink: Any, rows: list[tuple[Any, ...]]) -> None:
        try:
            sink.write(rows)
            self.written += len(rows)
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the gateway
            self.failed = e
            log.error("the usage ledger could not write %d rows: %s", len(rows), e)


class Rows:
    """Queued items made into table rows: each target priced once, the day's name worked out once a day."""

    def __init__(self, pricer: Any, currency: str):
        self.pricer, self.currency = pricer, currency
        self._day: tuple[int, str] = (-1, "")
        self._prices: dict[str, Any] = {}  # target -> its Price (None: unknown)

    def make(self, item: tuple[Any, ...]) -> tuple[Any, ...]:
        ts, key, user, team, llm_id, target, op, usage, latency, status, error, cost = item
        i = o = c = r = None
        if type(usage) is dict:  # the pass-through's wire usage (OpenAI's names), read without a model
            i, o = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
            pd, cd = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
            c = pd.get("cached_tokens") if type(pd) is dict else None
            r = cd.get("reasoning_tokens") if type(cd) is dict else None
        elif usage is not None:  # a Usage, as Ledger.record queues it: (input, output, cached, reasoning)
            i, o, c, r = usage
        if cost is _LATER:
            cost = None
            if i is not None:
                price = self.price(target)
                if price is not None:
                    cost = price.cost(i or 0, o or 0, c)
        d = int(ts // 86400)
        if d != self._day[0]:
            self._day = (d, time.strftime("%Y-%m-%d", time.gmtime(ts)))
        day = self._day[1]
        # the latency in ms to the µs: round(x * 1000, 3) is a decimal rounding, ~3 times as slow
        return (ts, day, key, user, team, llm_id, target, op, i, o, c, r, round(latency * 1e6) / 1000, status, error,
                cost, self.currency)

    def price(self, target: str) -> Any:
        """The price of the LLM ``target`` (None: unknown), looked up once: the writer prices every row."""
        price = self._prices.get(target, _LATER)
        if price is _LATER:
            price = self._prices[target] = self.pricer.price(*_price_args(target))
        return price


def _price_args(target: str) -> tuple[str, str, str]:
    """(LLM id, model, connection type) of an LLM id as a row names it, as :meth:`Pricer.price` takes them."""
    ctype, _, rest = target.partition(":")
    return target, rest.partition(":")[2] or rest, ctype


def _popped(rows: deque[tuple[Any, ...]], n: int) -> list[tuple[Any, ...]]:
    """The ``n`` oldest of ``rows``, taken off it: popleft called ``n`` times by C (starmap), not by a
    Python loop (~7 bytecodes a row less), and safe while another thread appends (a record() from a
    thread of the library's) as taking a snapshot and clearing would not be."""
    return list(starmap(rows.popleft, repeat((), n)))


class _SQLite:
    def __init__(self, path: str):
        import sqlite3

        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses no commit
        # no index: the reports group the whole table and filter by day, which an index on ts did not
        # serve, and keeping one took half of each row's insert (~3.5 of ~7 µs a row in the writer
        # process, which shares the gateway's cores). A file made by an older release keeps its own.
        self.db.execute(_SQLITE_SCHEMA)
        self.db.commit()

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        # multi-row INSERTs rather than executemany: the sqlite3 module lets go of the GIL around each
        # statement it steps, and the event loop holds it most of the time, so a statement per row
        # made the writer wait for the GIL once per row (and forced the loop to hand it over as often).
        # Runs of rows whose values have the same types go together, their NULLs written into the
        # statement: sqlite3 binds a None through its adapter lookup, which was half of a row's insert
        # (~3 µs of ~6; a row has five or six: user, team, cached and reasoning tokens, error...).
        runs: list[tuple[tuple[type, ...], list[tuple[Any, ...]]]] = []
        last: Any = None
        for row in rows:
            kinds = tuple(map(type, row))
            if kinds != last:
                runs.append((kinds, []))
                last = kinds
            runs[-1][1].append(row)
        with self.db as db:
            for kinds, run in runs:
                keep = [i for i, k in enumerate(kinds) if k is not _NONE]
                for i in range(0, len(run), _PER_STATEMENT):
                    part = run[i:i + _PER_STATEMENT]
                    db.execute(_values(len(part), kinds), [row[j] for row in part for j in keep])

    def close(self) -> None:
        self.db.close()


_NONE = type(None)


def _values(n: int, kinds: tuple[type, ...], _made: dict[tuple[int, tuple[type, ...]], str] = {}) -> str:  # noqa: B006 - the cache, by design
    """The INSERT of ``n`` rows whose values have these types, NULL where a value is None (made once per
    shape; sqlite3 caches the statements it compiles)."""
    sql = _made.get((n, kinds))
    if sql is None:
        one = "(" + ", ".join("NULL" if k is _NONE else "?" for k in kinds) + ")"
        sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * n)
        if len(_made) < 1000:  # bounded: rows have a handful of shapes
            _made[(n, kinds)] = sql
    return sql


class _SQLAlchemy:
    def __init__(self, url: str):
        import sqlalchemy as sa

        self.engine = sa.create_engine(url)
        self.table = table(sa.MetaData())
        self.table.metadata.create_all(self.engine)

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), [dict(zip(COLUMNS, r)) for r in rows])

    def close(self) -> None:
        self.engine.dispose()


def table(metadata: Any) -> Any:
    import sqlalchemy as sa

    kinds = {"REAL": sa.Float, "TEXT": sa.Text, "INTEGER": sa.Integer}
    return sa.Table(TABLE, metadata, *(sa.Column(c, kinds[t]()) for c, t in zip(COLUMNS, _TYPES)),
                    sa.Index(f"{TABLE}_ts", "ts"))


def open_sink(path: str, url: Optional[str]) -> Any:
    """Where rows are written: the SQLAlchemy ``url`` (resolved) when there is one, else the SQLite ``path``."""
    return _SQLAlchemy(url) if url is not None else _SQLite(path)


def sink_args(config: Any) -> tuple[str, Optional[str]]:
    """:func:`open_sink`'s arguments from a ``UsageConfig``, its URL resolved."""
    return config.path, config.url.get("usage.url") if config.url is not None else None


def ledger_for(mesh: Any) -> Ledger:
    """The mesh's one :class:`Ledger` (made on first use; closed by ``Mesh.close()``)."""
    led = getattr(mesh, "_ledger", None)
    if led is None:
        from .prices import pricer_for

        led = mesh._ledger = Ledger(mesh.config.usage, pricer_for(mesh))
    return led
