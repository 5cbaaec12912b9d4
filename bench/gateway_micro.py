"""The plain gateway's Python per pass-through request, without sockets: ``mesh serve``'s HTTP protocol
(:class:`~langchain_mesh.server.protocol.MeshHttpProtocol`), :class:`MeshApp` and the http1
client, driven in one uvloop loop with in-memory transports on both sides (the upstream's answer is
canned bytes fed back to the client's connection on the next loop turn).

bench/gateway.py measures the gateway under wrk, where syscalls and the machine's load blur differences
of a few µs; this measures the Python alone: process CPU µs per request, ``R`` rounds of ``N``
sequential requests (median and min of the rounds). ``PROFILE=tottime`` adds a cProfile listing (``PROFN`` rows, 45; ``PROFOUT=file`` writes it for pstats instead);
``TRIVIAL=1`` serves a fixed answer from a bare ASGI app instead (the floor of the protocol layer;
``TRIVIAL=raw``: the same bytes written by the protocol itself, in a task per request but with no ASGI
scope, ``receive`` or ``send``: what going below ASGI could save at most; ``TRIVIAL=sync``: written at
once, no task either);
``LIMITS=1`` adds issue 19's pair: an API key, rate limits in memory and the SQLite ledger
(``LIMITS=nolog``: the key and the limits without the ledger; ``LIMITS=ledger``: the key and the
ledger without the limits; ``LIMITS=key``: the key alone;
``LIMITS=redis``: the limits in a ``redis-server`` started here; ``STRATEGY=fixed-window`` sets
``limits.strategy``). ``POLICIES=1``: bench/gateway.py's
"every policy" gateway (a weighted route over two targets, rate limits and budgets in Redis, the
ledger, an API key) on a ``redis-server`` started here on a free port; the requests still go one
after another, so each waits for its Redis round trips (the CPU per request is what is measured);
``TRACING=sdk``: tracing with an SDK provider that records every span (a batch processor, an exporter
that drops them; ``TRACING=sdk:0.1`` samples a tenth of the requests; ``TRACING=1``, as bench/gateway.py, has no provider: the spans cannot record).
``DROP=budgets,routes`` leaves those sections out of it (where its microseconds go).
``OPENAI_HEADERS=1``: the upstream answers with the eighteen more header lines api.openai.com sends
(rate-limit counters, request id, Cloudflare's), where the bench's aiohttp upstream sends four.
``CONC=16`` sends 16 at a time on 16 connections (their Redis commands then share writes, as under wrk).
``CALLGRIND=1`` counts instructions per request instead, under valgrind (see :func:`callgrind`:
deterministic, for comparing two versions on a noisy machine; ``CGKEEP=1`` keeps its output file
for ``callgrind_annotate``, which lists the C functions by instructions; with Redis, ``POLICIES=1`` or
``LIMITS=redis``, valgrind's ~50x slowdown makes the leases, which last a fixed time, renew far more
often per request than at full speed, so the count is inflated several-fold (every policy: ~706k
against ~493k with ``DROP=state``): compare Redis configurations by their times). ``LEASE=0`` sets ``state.lease: false`` (with Redis: every limited call asks it). ``OPS=file`` writes the Python bytecodes each function runs per request instead (see :func:`count_ops`). ``CHILDREN=1`` also prints the CPU per request of the child processes (the ledger's writer, redis-server)
over the timed rounds, which bench/gateway.py counts and this process's figure does not.

    PYTHONPATH=. python bench/gateway_micro.py            # N=5000 R=7
    CALLGRIND=1 CONC=16 LIMITS=redis PYTHONPATH=. python bench/gateway_micro.py   # instructions/req (~10 s)
"""
import asyncio
import gc
import json
import os
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from langchain_mesh import Mesh
from langchain_mesh.server.app import GC_THRESHOLDS, MeshApp
from langchain_mesh.server.protocol import MeshHttpProtocol
from langchain_mesh.connections.transport import http1
import uvicorn
from uvicorn.server import ServerState

ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content":
                 "Requests pass through / one hop, then back again / the gateway stays light."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 18, "total_tokens": 42}}).encode()
UP_RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
           b"Date: Sat, 05 Dec 2026 08:00:00 GMT\r\nServer: Python/3.11 aiohttp/3.9\r\n\r\n" % len(ANSWER)) + ANSWER
if os.environ.get("OPENAI_HEADERS"):  # the upstream's answer with the header lines api.openai.com sends
    UP_RESP = UP_RESP.replace(b"\r\n\r\n", b"\r\n" + (
        b"openai-organization: org-abc\r\nopenai-processing-ms: 412\r\nopenai-project: proj_abc\r\n"
        b"openai-version: 2020-10-01\r\nx-ratelimit-limit-requests: 10000\r\nx-ratelimit-limit-tokens: 30000000\r\n"
        b"x-ratelimit-remaining-requests: 9999\r\nx-ratelimit-remaining-tokens: 29999950\r\n"
        b"x-ratelimit-reset-requests: 6ms\r\nx-ratelimit-reset-tokens: 0s\r\n"
        b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
        b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\ncf-cache-status: DYNAMIC\r\n"
        b"set-cookie: __cf_bm=abcdefabcdef; path=/; expires=Sat, 05-Dec-26 08:30:00 GMT; domain=.api.openai.com; "
        b"HttpOnly; Secure; SameSite=None\r\nx-content-type-options: nosniff\r\nserver: cloudflare\r\n"
        b"cf-ray: 8f0123456789abcd-AMS\r\nalt-svc: h3=\":443\"; ma=86400\r\n") + b"\r\n", 1)
POLICIES = bool(os.environ.get("POLICIES"))
CONC = int(os.environ.get("CONC", 1))  # requests in flight at once (one connection each), as wrk's 16
DROP = set(filter(None, os.environ.get("DROP", "").split(",")))  # POLICIES less these sections (attribution)
MODEL = "route:bench" if POLICIES and "routes" not in DROP else "openai_compatible:up:canned"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "Write a haiku about a gateway."}], "max_tokens": 64,
                   "temperature": 0.2}).encode()
REQ = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
       + (b"Authorization: Bearer sk-bench-key\r\n" if os.environ.get("LIMITS") or POLICIES else b"")
       + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY


class UpTransport:
    def __init__(self, loop, conn):
        self.loop, self.conn = loop, conn
    def writelines(self, parts):
        self.loop.call_soon(self.conn.data_received, UP_RESP)
    def write(self, data):
        self.loop.call_soon(self.conn.data_received, UP_RESP)
    def is_closing(self): return False
    def abort(self): pass
    def close(self): pass
    def pause_reading(self): pass
    def resume_reading(self): pass


async def fake_connect(self, origin):  # an in-memory upstream connection
    conn = http1._Connection(origin)
    conn.connection_made(UpTransport(self.loop, conn))
    self._open[origin] = self._open.get(origin, 0) + 1
    return conn


http1.HTTPClient._connect = fake_connect


class SrvTransport:
    def __init__(self):
        self.out = []
        self.waiter = None
        self.closing = False
    def write(self, data):
        self.out.append(data)
        if self.waiter is not None and (b'"chatcmpl' in data or b"error" in data):  # the answer's body
            w, self.waiter = self.waiter, None
            if not w.done():
                w.set_result(b"".join(self.out))
    def writelines(self, parts):
        self.write(b"".join(parts))
    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)
    def is_closing(self): return self.closing
    def close(self): self.closing = True
    def pause_reading(self): pass
    def resume_reading(self): pass
    def can_write_eof(self): return True
    def set_write_buffer_limits(self, *a, **k): pass
    def get_write_buffer_size(self): return 0


def raw_answer(at_once: bool) -> None:
    """TRIVIAL=raw|sync: the protocol answers each request with the canned bytes itself (no ASGI)."""
    body = UP_RESP[UP_RESP.index(b"\r\n\r\n") + 4:]
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body

    def answered(cycle):
        cycle.conn.transport.write(answer)
        cycle.complete = True
        cycle.conn.response_complete()

    async def task(cycle):
        answered(cycle)

    def start(self, cycle):
        self.running = cycle
        if at_once:
            return answered(cycle)
        t = self.loop.create_task(task(cycle))
        t.add_done_callback(self.tasks.discard)
        self.tasks.add(t)

    MeshHttpProtocol._start = start


def redis_server() -> str:
    """A throwaway redis-server on a free port (stopped when this process exits): its URL."""
    import atexit
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def policies_config(up: dict) -> dict:
    """bench/gateway.py's policy_sections (kept in step by hand: that module starts processes)."""
    import tempfile

    os.environ.setdefault("MESH_BENCH_KEY", "sk-bench-key")
    targets = ("openai_compatible:up:canned", "openai_compatible:up2:canned")
    return {
        "connections": {"up": up, "up2": dict(up)},
        "server": {"api_keys": [{"name": "bench", "key": "{{env:MESH_BENCH_KEY}}"}]},
        "routes": {"bench": {"strategy": "weighted", "targets": [{"llm": t} for t in targets]}},
        "state": {"redis_url": redis_server()},
        "limits": {"default": {"rpm": 10 ** 9, "tpm": 10 ** 12}, "llms": {t: {"rpm": 10 ** 9} for t in targets}},
        "prices": {t: {"input": 0.15, "output": 0.6} for t in targets},
        "budgets": {"keys": {"bench": 10.0 ** 9}},
        "usage": {"path": os.path.join(tempfile.mkdtemp(), "usage.db")},
    }


async def main(n, rounds):
    cfg = {"connections": {"up": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                                  "max_retries": 0, "models": [{"id": "canned"}]}}}
    if os.environ.get("LIMITS"):  # issue 19's pair: an API key, rate limits (in memory) and the ledger
        import tempfile
        os.environ.setdefault("MESH_BENCH_KEY", "sk-bench-key")
        cfg["server"] = {"api_keys": [{"name": "bench", "key": "{{env:MESH_BENCH_KEY}}"}]}
        if os.environ.get("LIMITS") not in ("key", "ledger"):
            cfg["limits"] = {"default": {"rpm": 10 ** 9, "tpm": 10 ** 12}}
            if os.environ.get("STRATEGY"):  # limits.strategy (default moving-window)
                cfg["limits"]["strategy"] = os.environ["STRATEGY"]
        if os.environ.get("LIMITS") not in ("nolog", "key"):
            cfg["usage"] = {"path": os.path.join(tempfile.mkdtemp(), "usage.db")}
        if os.environ.get("LIMITS") == "redis":  # bench/gateway.py's "limits+ledger redis"
            cfg["state"] = {"redis_url": redis_server()}
    if POLICIES:
        cfg.update(policies_config(cfg["connections"]["up"]))
        if os.environ.get("PII"):  # bench/gateway.py's "policies+pii"
            cfg["guardrails"] = [{"name": "pii", "type": "pii", "action": "redact"}]
        if os.environ.get("TRACING"):  # bench/gateway.py's "policies+tracing"
            cfg["tracing"] = {"enabled": True}
            if os.environ["TRACING"].startswith("sdk"):  # spans recorded: the SDK's batch processor, an exporter that drops them
                from opentelemetry import trace
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
                from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

                class Drop(SpanExporter):
                    def export(self, spans):
                        return SpanExportResult.SUCCESS

                ratio = float(os.environ["TRACING"][4:] or 1)  # sdk:0.1 samples a tenth of the requests
                provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
                provider.add_span_processor(BatchSpanProcessor(Drop()))
                trace.set_tracer_provider(provider)
        for section in DROP:
            cfg.pop(section)
    if os.environ.get("PROFILE") and "state" in cfg:  # the profiler's slowness is not Redis's
        cfg["state"]["timeout"] = 30
    if os.environ.get("LEASE") == "0" and "state" in cfg:  # state.lease: false (every limited call asks Redis)
        cfg["state"]["lease"] = False
    mesh = Mesh.from_config(cfg)
    app = MeshApp(mesh)
    await app._warm()
    if os.environ.get("TRIVIAL"):
        async def app(scope, receive, send, _b=UP_RESP[UP_RESP.index(b"\r\n\r\n")+4:]):
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_b))]})
            await send({"type": "http.response.body", "body": _b})
        app.limits = mesh.config.server.limits
    if os.environ.get("TRIVIAL") in ("raw", "sync"):
        raw_answer(os.environ["TRIVIAL"] == "sync")
    config = uvicorn.Config(app, http=MeshHttpProtocol, loop="uvloop", lifespan="off", access_log=False, proxy_headers=False)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(CONC):
        proto = MeshHttpProtocol(config=config, server_state=state, app_state={}, _loop=loop)
        tr = SrvTransport()
        proto.connection_made(tr)
        conns.append((proto, tr))

    async def one():  # a request on each connection at once; each round counts CONC requests
        waiters = []
        for proto, tr in conns:
            tr.out.clear()
            w = tr.waiter = loop.create_future()
            waiters.append(w)
            proto.data_received(REQ)
        outs = [await w for w in waiters]
        return outs[0]

    out = await one()
    assert os.environ.get("TRIVIAL") or b"200 OK" in out and b'"model":"%s"' % MODEL.encode() in out, out
    for _ in range(200):
        await one()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # as mesh serve's start-up leaves it
    if os.environ.get("CHILDREN"):
        import psutil

        await asyncio.sleep(1.5)  # the writer process started and warm (its imports are not counted)
        before = {k.pid: sum(k.cpu_times()[:2]) for k in psutil.Process().children(recursive=True)}
    if os.environ.get("OPS"):
        return await count_ops(one, os.environ["OPS"])
    cg = None
    if os.environ.get("CALLGRIND_LIB"):  # under valgrind --tool=callgrind --instr-atstart=no: count the timed rounds
        import ctypes

        cg = ctypes.CDLL(os.environ["CALLGRIND_LIB"])
        cg.cg_start()
    res = []
    for r in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            await one()
        res.append((time.process_time() - t0) / (n * CONC) * 1e6)
    if cg is not None:
        cg.cg_stop()
        print("callgrind: %d requests timed" % (rounds * n * CONC))
        return
    if os.environ.get("PROFILE"):
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for _ in range(n):
            await one()
        pr.disable()
        if os.environ.get("PROFOUT"):  # a file for pstats (two configs' files can be compared call by call)
            pr.dump_stats(os.environ["PROFOUT"])
        else:
            pstats.Stats(pr).sort_stats(os.environ.get("PROFILE")).print_stats(int(os.environ.get("PROFN", 45)))
    res.sort()
    if os.environ.get("CHILDREN"):  # the ledger's writer process (and redis-server): CPU per timed request
        await asyncio.sleep(1.5)  # the writer's last rows written
        print("children: %s us/req (each child's CPU over the timed rounds)" % " ".join(
            "%s %.1f" % (k.name(), (sum(k.cpu_times()[:2]) - before.get(k.pid, 0.0)) / (rounds * n * CONC) * 1e6)
            for k in psutil.Process().children(recursive=True)))
    print("us/req min %.1f med %.1f  all %s" % (res[0], res[len(res) // 2], " ".join("%.1f" % x for x in res)))
    print(out.decode()[:400])


async def count_ops(one, path, n=200):
    """OPS=file: the bytecodes each Python function runs per request, over ``n`` rounds, written to
    ``file`` (bytecodes a request, then file:function; most first). A count, like CALLGRIND=1, but one
    that names the Python functions where callgrind sees only the interpreter's loop: two configs'
    files, subtracted, say which functions a section adds and how much each runs (the tracer slows the
    run ~50x; the counts do not depend on the machine)."""
    import collections

    counts = collections.Counter()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

    def trace(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[frame.f_code] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(n):
            await one()
    finally:
        sys.settrace(None)
    per = n * CONC
    with open(path, "w") as f:
        for code, k in counts.most_common():
            f.write(f"{k / per:.1f}\t{code.co_filename.replace(root, '')}:{code.co_name}\n")
    print("bytecodes/req %.0f (written to %s)" % (sum(counts.values()) / per, path))


_CG_HELPER = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("timed"); }
"""


def callgrind() -> None:
    """CALLGRIND=1: this script again under valgrind's callgrind, counting the instructions of the timed
    rounds only (a helper built here with gcc turns the counting on and off around them). A count, not
    a time: the same code gives the same figure within ~1% on a machine whose timings move by 15%,
    so two versions can be compared by running each once (the syscalls' kernel time is not counted)."""
    import re
    import shutil
    import subprocess
    import tempfile

    if not (shutil.which("valgrind") and shutil.which("gcc") and os.path.exists("/usr/include/valgrind/callgrind.h")):
        raise SystemExit("CALLGRIND=1 needs valgrind (with its headers) and gcc: apt-get install -y valgrind gcc")
    tmp = tempfile.mkdtemp()
    src, lib = os.path.join(tmp, "cg.c"), os.path.join(tmp, "libcg.so")
    with open(src, "w") as f:
        f.write(_CG_HELPER)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", lib, src], check=True)
    env = {**os.environ, "CALLGRIND_LIB": lib, "N": os.environ.get("N", "30"), "R": os.environ.get("R", "2")}
    env.pop("CALLGRIND")
    out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                          "--callgrind-out-file=" + os.path.join(tmp, "out.%p"), sys.executable, __file__],
                         env=env, capture_output=True, text=True)
    requests = re.search(r"callgrind: (\d+) requests timed", out.stdout)
    dumps = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("out.")]
    totals = [re.search(r"^totals: (\d+)", open(d).read(), re.M) for d in dumps
              if "Client Request: timed" in open(d).read()]
    if out.returncode or requests is None or not totals:
        raise SystemExit("the run under callgrind failed:\n" + out.stdout[-2000:] + out.stderr[-2000:])
    print("instructions/req %.1fk  (callgrind, %s requests)" % (int(totals[0].group(1)) / int(requests.group(1)) / 1000,
                                                               requests.group(1)))
    if os.environ.get("CGKEEP"):
        print("kept", [d for d in dumps if "Client Request: timed" in open(d).read()][0])
    else:
        shutil.rmtree(tmp)


if os.environ.get("CALLGRIND"):
    callgrind()
else:
    uvloop.run(main(int(os.environ.get("N", 5000)), int(os.environ.get("R", 7))))
