"""Throughput, added latency and streaming delays of ``mesh serve`` in front of a fast local upstream.

Starts, each in its own process (every address on the loopback, every loop bounded by ``--seconds``):

* the *upstream*: a mock OpenAI server answering ``POST /v1/chat/completions`` with one canned chat
  completion, or with ``"stream": true`` a server-sent event stream of ``--chunks`` chunks
  ``--chunk-ms`` apart (``--upstream aiohttp``, the default: parses each request as a real server
  would; ``--upstream asgi``: raw ASGI on uvicorn with the answers' bytes prebuilt, the least work);
* the *gateways*: ``mesh serve`` whose mesh is one ``openai_compatible`` connection to that upstream
  ("plain"); with ``--policies``, the same behind every policy this checkout's config knows (a route
  over two targets, rate limits and budgets kept in Redis, the usage ledger, an API key; then with
  PII redaction on, then with tracing on: see :func:`policy_configs`, which turns a section on only
  when ``MeshConfig`` has that field, and prints which were on); with ``--workers 1,2,4``, each at
  those worker counts (with policies, the workers share one Redis);
* the *floors* (``--no-floor`` skips them): a TCP relay and an HTTP relay in Python on uvloop, the
  least a Python proxy, and a Python HTTP gateway, can cost here (see :data:`RELAY`, :data:`HTTP_RELAY`);
* ``redis-server`` on a free port, with ``--policies`` when the config has ``state.redis_url``;
* with ``--litellm PYTHON``, LiteLLM's proxy (1 worker) routed to the same upstream: PYTHON is a
  Python with ``litellm[proxy]`` installed (a separate virtualenv: its dependencies are not ours).

Non-streamed: wrk (``apt-get install -y wrk``; else a slower Python load generator, said so) loads
each target with the same chat request at ``--connections`` for ``--seconds``, after ``--warmup``
seconds of the same load that are not measured: req/s, median and p99
latency, the CPU time the serving processes spent per request (the upstream's for "direct", the
gateway's, all its workers, for the others: the number that holds on a busy machine), the share of
the direct throughput and the median latency added. "direct" is measured first and last; the ratios
use the mean of the two (the machine's load drifts). For the same reason, with ``--policies`` the plain
gateway is measured again after the limits + ledger gateways, and those are read against the mean of
its two runs (issue 19's ratio); ``--pairs N`` adds N rounds of the two, loaded back to back, and
prints the median ratio and each round's (a 4 s run moves by ±20% on a shared 2-core machine).
``--rounds N`` does the same for every target at once: direct and each 1-worker gateway, all up, each
loaded once a round in an order that rotates; each goal is then read as the median of its per-round
ratios (on a noisy VM, direct alone was seen to move between 4,800 and 12,000 req/s from one 3 s run
to the next). The rounds also print each target's *all CPU*, the µs a request of every process the
run needs (wrk, the upstream, Redis and the target's own tree), and its *ceiling*: the most req/s that
CPU allows on this machine's cores (shared perfectly, no process past one core), as a share of
direct's req/s in the same round. A goal above a target's ceiling cannot be met here at that CPU a
request, however the processes are scheduled; it says how much CPU must go first. (The ceiling moves
with the gateway: the slower it is, the fewer requests wrk and the upstream handle per wake-up, and
the more CPU a request they spend.)

Streamed: a small asyncio client in its own process keeps N connections streaming back to back (at
each of ``--stream-connections``) and measures the time to the first event (TTFB) and the gaps between
events as they arrive, direct and through each gateway: the gateway's added TTFB and inter-chunk delay.

    python bench/gateway.py --seconds 4 --policies --workers 1,2,4
    python bench/gateway.py --seconds 4 --policies --no-stream --pairs 8     # issue 19's ratio, as a median
    python bench/gateway.py --seconds 4 --policies --pairs 8 --rounds 5      # every goal, as medians too
    python bench/gateway.py --install-wrk     # apt-get install -y wrk (Debian/Ubuntu, as root), then run
    python bench/gateway.py --litellm /path/to/venv/bin/python

The issue's goals (16 connections, 1 worker): plain gateway >= 0.85 of direct with <= 0.5 ms added
median; every policy on >= 0.75.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]

REQUEST = {"model": "MODEL", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                          {"role": "user", "content": "Write a haiku about a gateway."}],
           "max_tokens": 64, "temperature": 0.2}
UPSTREAM_MODEL = "canned"
GATEWAY_MODEL = f"openai_compatible:up:{UPSTREAM_MODEL}"

# The upstreams, each run with `python -c` in its own process. Both answer one canned completion.
# "aiohttp" (the default) does what a mock OpenAI server does per request: read and parse the JSON
# body, answer with its model and a fresh id. "asgi" is the least an upstream can do: raw ASGI on
# uvicorn, the answer's bytes prebuilt, the body not even parsed. Both serve far more requests per
# second than a real model, so the share through the gateway is a worst case for it.
CANNED = r"""
import asyncio, json, sys
ANSWER = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content":
                 "Requests pass through / one hop, then back again / the gateway stays light."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 18, "total_tokens": 42}}
port, CHUNKS, GAP = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000

def events(cid, model, usage):
    # the stream's server-sent events: CHUNKS content deltas, the finish, the usage if asked, [DONE]
    words = ANSWER["choices"][0]["message"]["content"].split()
    base = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    out = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": words[i % len(words)] + " "},
                                "logprobs": None, "finish_reason": None}]) for i in range(CHUNKS)]
    out.append(dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    if usage:
        out.append(dict(base, choices=[], usage=ANSWER["usage"]))
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in out] + [b"data: [DONE]\n\n"]
"""

UPSTREAMS = {
    "aiohttp": CANNED + r"""
import itertools
from aiohttp import web
ids = itertools.count()

async def chat(request):
    body = json.loads(await request.read())
    cid = f"chatcmpl-{next(ids)}"
    if body.get("stream"):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i, event in enumerate(events(cid, body["model"], (body.get("stream_options") or {}).get("include_usage"))):
            if 0 < i < CHUNKS and GAP:
                await asyncio.sleep(GAP)
            await resp.write(event)
        await resp.write_eof()
        return resp
    answer = dict(ANSWER, model=body["model"], id=cid)
    return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
""",
    "asgi": CANNED + r"""
import uvicorn
BODY = json.dumps(ANSWER).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

STREAM = events("chatcmpl-bench", "canned", True)  # with its usage: the gateway asks for it
SSE_HEADERS = [(b"content-type", b"text/event-stream")]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:  # the request body: only looked at for "stream": true
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if b'"stream":true' not in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
        return
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for i, event in enumerate(STREAM):
        if 0 < i < CHUNKS and GAP:
            await asyncio.sleep(GAP)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
            access_log=False, lifespan="off")
""",
}

# The fallback load generator, also in its own process: N connections, each sending back to back.
PYLOAD_SRC = r'''
import asyncio, json, sys, time, aiohttp
url, body, conns, seconds = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), float(sys.argv[4])
headers = {"content-type": "application/json", **({"authorization": "Bearer " + sys.argv[5]} if sys.argv[5] else {})}
async def worker(session, stop, lat):
    while time.perf_counter() < stop:
        t = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise SystemExit(f"HTTP {r.status}")
        lat.append(time.perf_counter() - t)
async def main():
    lat = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s, t0 + seconds, lat) for _ in range(conns)))
        wall = time.perf_counter() - t0
    lat.sort()
    print(json.dumps({"rps": len(lat) / wall, "p50": lat[len(lat) // 2] * 1000, "p99": lat[int(len(lat) * 0.99)] * 1000}))
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
asyncio.run(main())
'''

WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}wrk.body = [[{body}]]
"""
# The floor: a TCP relay in Python (uvloop), each client connection spliced to its own upstream
# connection, bytes forwarded as they arrive: no HTTP parsing, no JSON, no policy. Whatever a Python
# gateway does costs at least this on the machine; the rows above it are read against it.
_RELAY_START = r"""
import asyncio, socket, sys
import httptools, orjson, uvloop
port, up_port = int(sys.argv[1]), int(sys.argv[2])

def nodelay(t):
    s = t.get_extra_info("socket")
    if s is not None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""
_RELAY_END = r"""
async def main():
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
    await server.serve_forever()

uvloop.run(main())
"""
RELAY = _RELAY_START + r"""
class Up(asyncio.Protocol):
    def __init__(self, client):
        self.client = client
    def connection_made(self, t):
        nodelay(t)
    def data_received(self, data):
        self.client.write(data)
    def connection_lost(self, exc):
        self.client.close()

class Client(asyncio.Protocol):
    def connection_made(self, t):
        nodelay(t)
        self.t, self.up, self.early = t, None, []
        asyncio.ensure_future(self.connect())
    async def connect(self):
        up, _ = await asyncio.get_running_loop().create_connection(lambda: Up(self.t), "127.0.0.1", up_port)
        self.up = up
        up.write(b"".join(self.early))
    def data_received(self, data):
        if self.up is None:
            self.early.append(data)
        else:
            self.up.write(data)
    def connection_lost(self, exc):
        if self.up is not None:
            self.up.close()
""" + _RELAY_END

# The second floor: an HTTP relay in Python (uvloop), the least any HTTP gateway does: each request
# parsed (httptools) and its JSON read (orjson), sent upstream on the client's own upstream connection,
# the answer parsed and its JSON read, a fresh head written back. No ASGI, no validation, no policy: what
# mesh serve spends above this is its own structure (the ASGI server and app, the upstream client).
HTTP_RELAY = _RELAY_START + r"""
class Up(asyncio.Protocol):
    # the upstream side: each answer parsed (head and body) and handed to the client's side
    def __init__(self, client):
        self.client, self.parser, self.body = client, httptools.HttpResponseParser(self), []
    def connection_made(self, t):
        nodelay(t)
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_begin(self):
        self.body = []
    def on_body(self, b):
        self.body.append(b)
    def on_message_complete(self):
        self.client.answer(self.parser.get_status_code(), b"".join(self.body))
    def connection_lost(self, exc):
        self.client.t.close()

class Client(asyncio.Protocol):
    # the client side: each request parsed, its JSON read, sent upstream on this client's connection
    def connection_made(self, t):
        nodelay(t)
        self.t, self.up, self.early = t, None, []
        self.parser = httptools.HttpRequestParser(self)
        asyncio.ensure_future(self.connect())
    async def connect(self):
        self.up, _ = await asyncio.get_running_loop().create_connection(lambda: Up(self), "127.0.0.1", up_port)
        self.up.write(b"".join(self.early))
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_begin(self):
        self.headers, self.body = [], []
    def on_header(self, name, value):
        self.headers.append((name.lower(), value))
    def on_body(self, b):
        self.body.append(b)
    def on_message_complete(self):
        body = b"".join(self.body)
        if not isinstance(orjson.loads(body).get("model"), str):
            self.t.close()
            return
        out = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n" % len(body)) + body
        if self.up is None:
            self.early.append(out)
        else:
            self.up.write(out)
    def answer(self, status, body):
        orjson.loads(body)  # as a gateway reads the answer's usage
        self.t.write(b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                     % (status, len(body)) + body)
    def connection_lost(self, exc):
        if self.up is not None:
            self.up.close()
""" + _RELAY_END

LITELLM_KEY = "sk-bench-gateway-0123456789abcdef"  # its proxy refuses to start without a master key


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU time of a process (Linux), or None: the gateway's cost per request, which
    stays meaningful on a busy machine where req/s does not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpus(pids: list[int]) -> list[Optional[float]]:
    """CPU seconds of ``pids[0]``'s tree, of ``pids[0]`` alone, of each other pid, and of this process's
    waited-for children (the load generator: each run is one, waited for)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [tree_cpu_seconds(pids[0])] + [cpu_seconds(p) or 0.0 for p in pids] + [kids.ru_utime + kids.ru_stime]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP error is an answer: the server is up
                return
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {timeout:.0f}s")


def warm(url: str, body: bytes, n: int = 200, key: Optional[str] = None) -> None:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    for _ in range(n):
        urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10).read()


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, body: str, connections: int, seconds: int, threads: int,
            key: Optional[str] = None) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        auth = f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""
        f.write(WRK_LUA.format(body=body, auth=auth))
        script = f.name
    try:
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers under load:\n{out}")
    lat = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if set(lat) != {"50", "99"}:
        raise SystemExit(f"could not read the latency percentiles from wrk:\n{out}")
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"]}


def run_python(url: str, body: str, connections: int, seconds: int, key: Optional[str] = None) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PYLOAD_SRC, url, body, str(connections), str(seconds), key or ""],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def start_litellm(python: str, up_port: int, port: int, tmp: str, env: dict[str, str]) -> subprocess.Popen:
    """LiteLLM's proxy, one worker, one model routed to the upstream (its CLI, from ``python``'s env)."""
    cfg = Path(tmp) / "litellm.yaml"
    cfg.write_text(json.dumps({"model_list": [{"model_name": UPSTREAM_MODEL, "litellm_params": {
        "model": f"openai/{UPSTREAM_MODEL}", "api_base": f"http://127.0.0.1:{up_port}/v1", "api_key": "sk-none"}}]}))
    cli = "from litellm.proxy.proxy_cli import run_server; run_server()"
    return subprocess.Popen([python, "-c", cli, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                             "--num_workers", "1"],
                            env={**env, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)




# The streaming client, in its own process: N connections, each streaming back to back on one
# keep-alive connection, timing the first event (TTFB, from the request's write) and the gaps between
# reads that carry events. Raw asyncio streams: an HTTP client library's own cost would blur the gaps.
STREAM_SRC = r'''
import asyncio, json, sys, time
host, port, path, body, conns, seconds, key = (sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode(),
                                                int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        + (f"Authorization: Bearer {key}\r\n" if key else "") + f"Content-Length: {len(body)}\r\n\r\n").encode()
REQ = head + body

async def worker(stop, ttfb, gaps, done):
    r, w = await asyncio.open_connection(host, port)
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        w.write(REQ)
        status = await r.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 200"):
            raise SystemExit("not a 200: " + status[:300].decode("latin-1") + (await r.read(300)).decode("latin-1"))
        chunked = b"transfer-encoding: chunked" in status.lower()
        first, last, ended, tail = True, 0.0, False, b""
        while True:
            data = await r.read(65536)
            if not data:
                raise SystemExit("the server closed the connection mid-stream")
            now = time.perf_counter()
            if b"data:" in data:
                if first:
                    ttfb.append(now - t0)
                    first = False
                else:
                    gaps.append(now - last)
                last = now
            tail = (tail + data)[-64:]
            ended = ended or b"[DONE]" in tail
            if ended and (not chunked or tail.endswith(b"0\r\n\r\n")):
                break
        done.append(1)
    w.close()

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000 if xs else float("nan")

async def main():
    ttfb, gaps, done = [], [], []
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t0 + seconds, ttfb, gaps, done) for _ in range(conns)))
    wall = time.perf_counter() - t0
    print(json.dumps({"sps": len(done) / wall, "ttfb50": pct(ttfb, 0.5), "ttfb99": pct(ttfb, 0.99),
                      "gap50": pct(gaps, 0.5), "gap99": pct(gaps, 0.99)}))
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
asyncio.run(main())
'''


def run_stream(url: str, body: str, connections: int, seconds: float, key: Optional[str] = None) -> dict[str, float]:
    parts = urllib.parse.urlsplit(url)
    out = subprocess.run([sys.executable, "-c", STREAM_SRC, parts.hostname, str(parts.port), parts.path, body,
                          str(connections), str(seconds), key or ""], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the streaming client failed: {(out.stderr or out.stdout).strip()[-500:]}")
    return json.loads(out.stdout)


def tree_cpu_seconds(pid: int) -> Optional[float]:
    """CPU seconds of a process and all its descendants (a multi-worker gateway: uvicorn's parent and
    its workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        cpu = cpu_seconds(p)
        if cpu is None:
            if p == pid:
                return None
            continue
        total += cpu
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (t / "children").read_text().split())
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------------------------------
# the gateways' configs

BENCH_KEY = "sk-mesh-bench-0123456789abcdef"  # the policies gateway's API key (from $MESH_BENCH_KEY)
TARGETS = (GATEWAY_MODEL, f"openai_compatible:up2:{UPSTREAM_MODEL}")


def plain_config(up_port: int) -> dict:
    return {"connections": {"up": {"type": "openai_compatible", "base_url": f"http://127.0.0.1:{up_port}/v1",
                                   "max_retries": 0, "models": [{"id": UPSTREAM_MODEL}]}}}


def policy_sections(redis_url: Optional[str], tmp: str) -> dict[str, object]:
    """Every policy section the issues before this one define (the shapes of their configs), by
    ``MeshConfig`` field name. Generous limits and budgets: they are checked and counted on every
    request, and never refuse one."""
    return {
        "routes": {"bench": {"strategy": "weighted", "targets": [{"llm": t} for t in TARGETS]}},
        "state": {"redis_url": redis_url} if redis_url else None,
        "limits": {"default": {"rpm": 10 ** 9, "tpm": 10 ** 12}, "llms": {t: {"rpm": 10 ** 9} for t in TARGETS}},
        "prices": {t: {"input": 0.15, "output": 0.6} for t in TARGETS},
        "budgets": {"keys": {"bench": 10.0 ** 9}},
        "usage": {"path": str(Path(tmp) / "usage.db")},
    }


PII = [{"name": "pii", "type": "pii", "action": "redact"}]
TRACING = {"enabled": True}


def policy_configs(up_port: int, redis_url: Optional[str], tmp: str) -> tuple[list[tuple[str, dict, str]], list[str],
                                                                              list[str]]:
    """The "every policy" gateways: (label, config, model) for policies, +PII, +tracing; which sections
    were on; and which were left out, and why (a field this checkout's ``MeshConfig`` lacks, or a config
    it refuses). Each section is validated on its own, so one changed shape costs only that section."""
    sys.path.insert(0, str(ROOT))
    from langchain_mesh.config import MeshConfig, load_config

    fields = MeshConfig.model_fields
    base = plain_config(up_port)
    base["connections"]["up2"] = {**base["connections"]["up"]}  # the route's second target: same upstream
    base["server"] = {"api_keys": [{"name": "bench", "key": "{{env:MESH_BENCH_KEY}}"}]}
    on, off = ["server.api_keys"], []

    def accepted(section: str, value: object) -> bool:
        if section not in fields:
            off.append(f"{section} (MeshConfig has no such field)")
            return False
        if value is None:
            off.append(f"{section} (needs redis-server)")
            return False
        try:
            load_config({**base, section: value})  # what `mesh serve` will read (connections typed, links checked)
        except Exception as e:  # noqa: BLE001 - pydantic's error, or a config check's
            off.append(f"{section} (refused: {str(e).splitlines()[0][:100]})")
            return False
        return True

    for section, value in policy_sections(redis_url, tmp).items():
        if accepted(section, value):
            base[section] = value
            on.append(section)
    model = "route:bench" if "routes" in base else GATEWAY_MODEL
    out = [("policies", base, model)]
    for label, section, value in (("policies+pii", "guardrails", PII), ("policies+tracing", "tracing", TRACING)):
        if accepted(section, value):
            out.append((label, {**base, section: value}, model))
            on.append(f"{section} ({label})")
    # issue 19's pair: the plain gateway with only an API key, rate limits and the ledger, the limits in
    # this process's memory (no state: the default) and then in Redis
    if "limits" in base and "usage" in base:
        lim = {k: base[k] for k in ("connections", "server", "limits", "usage")}
        out.append(("limits+ledger", lim, GATEWAY_MODEL))
        if "state" in base:
            out.append(("limits+ledger redis", {**lim, "state": base["state"]}, GATEWAY_MODEL))
    return out, on, off


# --------------------------------------------------------------------------------------------------
# the run


class Run:
    """The processes of one run, and how to load them."""

    def __init__(self, args: argparse.Namespace, tmp: str, env: dict[str, str], use_wrk: bool):
        self.args, self.tmp, self.env, self.use_wrk = args, tmp, env, use_wrk
        self.procs: list[subprocess.Popen] = []
        self.shared: list[int] = []  # the upstream's and Redis's pids: their CPU is every target's (load)

    def start(self, cmd: list[str], what: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        log = open(Path(self.tmp) / f"{what.replace(' ', '_')}.log", "wb")
        proc = subprocess.Popen(cmd, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log_of(self, what: str) -> str:
        try:
            return (Path(self.tmp) / f"{what.replace(' ', '_')}.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def stop(self, proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)

    def gateway(self, label: str, config: dict, workers: int) -> tuple[subprocess.Popen, int]:
        port = free_port()
        path = Path(self.tmp) / f"{label}-{workers}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        proc = self.start([sys.executable, "-m", "langchain_mesh", "serve", "--config", str(path), "--host",
                           "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
                          f"{label}-{workers}", env={**self.env, "MESH_BENCH_KEY": BENCH_KEY})
        wait_up(f"http://127.0.0.1:{port}/health", proc, f"mesh serve ({label}, {workers} workers)", timeout=60)
        return proc, port

    def load(self, url: str, model: str, pid: int, key: Optional[str]) -> dict[str, float]:
        a = self.args
        body = json.dumps({**REQUEST, "model": model})
        warm(url, body.encode(), key=key)
        if a.warmup:  # a short load first, not measured: what a start leaves running (a gateway's ledger
            # writer importing its price data...) is over, and every target is read in its steady state
            (run_wrk(url, body, a.connections, a.warmup, a.threads, key) if self.use_wrk
             else run_python(url, body, a.connections, a.warmup, key))
        procs = [pid] + [p for p in self.shared if p != pid]
        before = _cpus(procs)
        row = (run_wrk(url, body, a.connections, a.seconds, a.threads, key) if self.use_wrk
               else run_python(url, body, a.connections, a.seconds, key))
        after = _cpus(procs)
        if before[0] is not None and after[0] is not None and row["rps"]:
            n = row["rps"] * a.seconds
            row["cpu_us"] = (after[0] - before[0]) / n * 1e6
            # µs a request of the target's own process and of each shared one; then the load generator's
            each = [(y - x) / n * 1e6 for x, y in zip(before[1:], after[1:])]
            load = each.pop()
            row["load_us"], row["shared_us"] = load, sum(each[1:])
            row["all_us"] = row["cpu_us"] + row["shared_us"] + load
            # the most req/s this CPU a request allows here: the cores shared perfectly, and no process
            # past one core (the upstream, Redis, a 1-worker gateway's serving process, a wrk thread)
            lanes = a.threads if self.use_wrk else 1
            row["ceiling"] = min((os.cpu_count() or 1) / row["all_us"], 1 / max(*each, load / lanes)) * 1e6
        return row

    def pairs(self, plain: dict, lim: dict) -> list[tuple[dict[str, float], dict[str, float]]]:
        """``--pairs`` rounds: both gateways up at once (the idle one costs nothing), loaded one after the
        other, plain first in even rounds and last in odd ones (a drift within a round then cancels)."""
        gates = [("plain", plain, None), ("limits+ledger", lim, BENCH_KEY)]
        got = self.rounds(gates, self.args.pairs)
        return list(zip(got["plain"], got["limits+ledger"]))

    def rounds(self, gates: list[tuple[str, dict, Optional[str]]], n: int,
               direct: Optional[tuple[str, int]] = None) -> dict[str, list[dict[str, float]]]:
        """``n`` rounds over ``gates`` ((label, config, key), each a 1-worker gateway, all up at once: an
        idle one costs nothing) and ``direct`` ((url, pid) of the upstream, first): every target loaded
        once a round, the order rotated from round to round (the machine's drift within a round falls
        on each target in turn). Each target's runs, in round order."""
        targets: list[tuple[str, str, int, Optional[str], str]] = []
        if direct is not None:
            targets.append(("direct", direct[0], direct[1], None, UPSTREAM_MODEL))
        procs = []
        try:
            for label, cfg, key in gates:
                proc, port = self.gateway(f"round-{label}", cfg, 1)
                procs.append(proc)
                targets.append((label, f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid, key, GATEWAY_MODEL))
            out: dict[str, list[dict[str, float]]] = {t[0]: [] for t in targets}
            for i in range(n):
                k = i % len(targets)
                for label, url, pid, key, model in targets[k:] + targets[:k]:
                    out[label].append(self.load(url, model, pid, key))
            return out
        finally:
            for proc in procs:
                self.stop(proc)

    def streams(self, url: str, model: str, key: Optional[str]) -> dict[int, dict[str, float]]:
        body = json.dumps({**REQUEST, "model": model, "stream": True})
        seconds = max(2.0, self.args.seconds / 2)
        return {c: run_stream(url, body, c, seconds, key) for c in self.args.stream_connections}


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=4, help="load duration per target (default 4)")
    ap.add_argument("--warmup", type=int, default=1, metavar="SECONDS",
                    help="seconds of unmeasured load before each measured run (default 1; 0: none)")
    ap.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)")
    ap.add_argument("--upstream", choices=sorted(UPSTREAMS), default="aiohttp",
                    help="aiohttp: a mock that parses each request (default); asgi: prebuilt bytes, no parsing")
    ap.add_argument("--policies", action="store_true",
                    help="add the gateway with every policy this checkout's config has (route, limits and "
                         "budgets in Redis, ledger, API key; then +PII redaction, then +tracing)")
    ap.add_argument("--workers", type=_ints, default=[1], help="gateway worker counts, e.g. 1,2,4 (default 1)")
    ap.add_argument("--stream-connections", type=_ints, default=[16, 64],
                    help="connections of the streaming runs (default 16,64)")
    ap.add_argument("--no-stream", action="store_true", help="skip the streaming runs")
    ap.add_argument("--no-floor", action="store_true", help="skip the TCP and HTTP relay rows (the floors of a Python proxy)")
    ap.add_argument("--pairs", type=int, default=0, metavar="N",
                    help="with --policies: N more rounds of the plain and the limits + ledger gateways, loaded "
                         "one after the other (the order alternating), for issue 19's ratio as a median")
    ap.add_argument("--rounds", type=int, default=0, metavar="N",
                    help="N more rounds of direct and every 1-worker gateway, all up at once, each loaded once a "
                         "round in a rotating order: the goals read as medians of per-round ratios (a noisy "
                         "machine's drift moves single runs by tens of percent)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer (default 20)")
    ap.add_argument("--chunk-ms", type=float, default=2.0, help="the upstream's gap between chunks (default 2 ms)")
    ap.add_argument("--install-wrk", action="store_true", help="apt-get install -y wrk first (root, Debian/Ubuntu)")
    ap.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk is there")
    ap.add_argument("--litellm", metavar="PYTHON", help="a Python with litellm[proxy] installed: adds LiteLLM's "
                                                         "proxy (1 worker) as a target")
    args = ap.parse_args(argv)
    if args.rounds < 0 or args.pairs < 0:  # (a negative count ran no round, then failed reporting them)
        ap.error("--rounds and --pairs take 0 or more")

    if args.install_wrk and not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update"], check=False)
            subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    use_wrk = bool(shutil.which("wrk")) and not args.python_load
    if not use_wrk and not args.python_load:
        print("wrk not found (apt-get install -y wrk, or run with --install-wrk): using the Python load generator",
              file=sys.stderr)

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows: list[tuple[str, int, dict[str, float]]] = []      # (target, workers, wrk numbers)
    pairs: list[tuple[dict[str, float], dict[str, float]]] = []  # --pairs: (plain, limits + ledger) per round
    rounds: dict[str, list[dict[str, float]]] = {}          # --rounds: each target's runs, in round order
    srows: list[tuple[str, int, dict[str, float]]] = []     # (target, connections, stream numbers)
    failed: list[str] = []
    on: list[str] = []
    off: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(args, tmp, env, use_wrk)
        try:
            up_port = free_port()
            up = run.start([sys.executable, "-c", UPSTREAMS[args.upstream], str(up_port), str(args.chunks),
                            str(args.chunk_ms)], "upstream")
            direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
            wait_up(direct_url, up, "the upstream")
            run.shared.append(up.pid)
            rows.append(("direct", 0, run.load(direct_url, UPSTREAM_MODEL, up.pid, None)))
            if not args.no_stream:
                srows += [("direct", c, r) for c, r in run.streams(direct_url, UPSTREAM_MODEL, None).items()]

            for label, script in () if args.no_floor else (("tcp relay (floor)", RELAY),
                                                            ("http relay (floor)", HTTP_RELAY)):
                r_port = free_port()
                relay = run.start([sys.executable, "-c", script, str(r_port), str(up_port)], label)
                _wait_port(r_port)
                rows.append((label, 1, run.load(f"http://127.0.0.1:{r_port}/v1/chat/completions",
                                                UPSTREAM_MODEL, relay.pid, None)))
                run.stop(relay)

            gateways: list[tuple[str, dict, str, Optional[str]]] = [
                ("mesh serve", plain_config(up_port), GATEWAY_MODEL, None)]
            if args.policies:
                redis_url = None
                if shutil.which("redis-server"):
                    rport = free_port()
                    run.shared.append(run.start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                                 "--save", "", "--appendonly", "no"], "redis").pid)
                    redis_url = f"redis://127.0.0.1:{rport}/0"
                    _wait_port(rport)
                configs, on, off = policy_configs(up_port, redis_url, tmp)
                gateways += [(label, cfg, model, BENCH_KEY) for label, cfg, model in configs]
                if any(label.startswith("limits+ledger") for label, _, _ in configs):
                    # issue 19's pair is read against the mean of the plain gateway's runs before and
                    # after it, as the shares are against the two direct runs: the machine drifts over a run
                    gateways.append(("mesh serve (again)", plain_config(up_port), GATEWAY_MODEL, None))

            for label, cfg, model, key in gateways:
                for workers in args.workers if label in ("mesh serve", "policies") else [1]:
                    name = label if workers == 1 else f"{label} x{workers}"
                    try:
                        proc, port = run.gateway(label, cfg, workers)
                    except SystemExit as e:
                        failed.append(f"{name}: {e}\n{run.log_of(f'{label}-{workers}')}")
                        continue
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    try:
                        rows.append((label, workers, run.load(url, model, proc.pid, key)))
                        if workers == 1 and label in ("mesh serve", "policies") and not args.no_stream:
                            srows += [(label, c, r) for c, r in run.streams(url, model, key).items()]
                    except (OSError, RuntimeError, SystemExit) as e:
                        failed.append(f"{name}: {e}\n{run.log_of(f'{label}-{workers}')}")
                    run.stop(proc)

            if args.pairs and args.policies:
                lim = next((cfg for label, cfg, _, _ in gateways if label == "limits+ledger"), None)
                if lim is not None:
                    pairs = run.pairs(plain_config(up_port), lim)
            if args.rounds:
                gates = [(label, cfg, key) for label, cfg, _, key in gateways if label != "mesh serve (again)"]
                rounds = run.rounds(gates, args.rounds, (direct_url, up.pid))
            if args.litellm:
                ll_port = free_port()
                ll = start_litellm(args.litellm, up_port, ll_port, tmp, env)
                run.procs.append(ll)
                wait_up(f"http://127.0.0.1:{ll_port}/health/liveliness", ll, "LiteLLM's proxy", timeout=120)
                ll_url = f"http://127.0.0.1:{ll_port}/v1/chat/completions"
                rows.append(("litellm proxy", 1, run.load(ll_url, UPSTREAM_MODEL, ll.pid, LITELLM_KEY)))
                if not args.no_stream:
                    srows += [("litellm proxy", c, r)
                              for c, r in run.streams(ll_url, UPSTREAM_MODEL, LITELLM_KEY).items()]
                run.stop(ll)
            rows.append(("direct (again)", 0, run.load(direct_url, UPSTREAM_MODEL, up.pid, None)))
        finally:
            run.stop_all()

    report(args, use_wrk, rows, srows, on, off, failed)
    report_pairs(pairs)
    report_rounds(rounds)
    return 1 if failed else 0


def report_pairs(pairs: list[tuple[dict[str, float], dict[str, float]]]) -> None:
    if not pairs:
        return
    ratios = sorted(b["rps"] / a["rps"] for a, b in pairs)
    cpu = sorted(b.get("cpu_us", 0) - a.get("cpu_us", 0) for a, b in pairs)
    print(f"\nlimits+ledger over {len(pairs)} more rounds (plain then limits + ledger, alternating order): "
          f"{statistics.median(ratios):.2f} of the plain gateway, median (issue 19's goal >= 0.85); each round: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; added CPU per request, median +{statistics.median(cpu):.0f} us "
          f"(each: {', '.join(f'{c:+.0f}' for c in cpu)})")


def report_rounds(rounds: dict[str, list[dict[str, float]]]) -> None:
    """Each target's medians over the rounds: its req/s, CPU per request, and its ratio to direct (and to
    the plain gateway) and added p50, each taken within a round, then the median of those."""
    if not rounds:
        return
    direct, plain = rounds["direct"], rounds.get("mesh serve")
    n = len(direct)
    print(f"\nover {n} more rounds (direct and each gateway loaded once a round, the order rotated; medians of "
          "the per-round figures)\n")
    print(f"| {'target':<19} | {'req/s':>7} | {'CPU us/req':>10} | {'all CPU':>7} | {'ceiling':>7} | {'of direct':>9} | "
          f"{'of plain':>8} | {'added p50 ms':>12} | of direct, each round")
    print(f"|{'-' * 21}|{'-' * 9}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 14}|{'-' * 22}")
    med = statistics.median
    for label, runs in rounds.items():
        share = [r["rps"] / d["rps"] for r, d in zip(runs, direct)]
        of_plain = f"{med(r['rps'] / p['rps'] for r, p in zip(runs, plain)):.2f}" if plain and label != "direct" else ""
        added = f"{med(r['p50'] - d['p50'] for r, d in zip(runs, direct)):+.2f}" if label != "direct" else ""
        each = "" if label == "direct" else ", ".join(f"{x:.2f}" for x in sorted(share))
        print(f"| {label:<19} | {med(r['rps'] for r in runs):>7.0f} | {med(r.get('cpu_us', 0) for r in runs):>10.0f} | "
              f"{med(r.get('all_us', 0) for r in runs):>7.0f} | {_ceiling(runs, direct):>7} | "
              f"{'' if label == 'direct' else f'{med(share):.2f}':>9} | {of_plain:>8} | {added:>12} | {each}")
    print(f"\n(all CPU: µs a request of every process, the load generator, the upstream and Redis included; "
          f"ceiling: the most req/s that allows on {os.cpu_count()} cores, no process past one core, as a "
          "share of direct's measured req/s in the same round: a goal above it is past this machine's CPU)")
    goals = [("mesh serve", "plain gateway", "of direct", 0.85), ("policies", "every policy on", "of direct", 0.75),
             ("limits+ledger", "limits+ledger", "of the plain gateway", 0.85),
             ("limits+ledger redis", "limits+ledger redis", "of the plain gateway", 0.85)]
    for label, name, of, goal in goals:
        runs = rounds.get(label)
        base = direct if of == "of direct" else plain
        if runs and base:
            ratio = med(r["rps"] / b["rps"] for r, b in zip(runs, base))
            added = med(r["p50"] - d["p50"] for r, d in zip(runs, direct))
            # of direct: against what direct did (the upstream alone, at its one core); of plain: the two
            # ceilings, what the CPU each used would allow
            allows = _ceiling(runs, base, "rps" if of == "of direct" else "ceiling")
            print(f"{name}, median of {n} rounds: {ratio:.2f} {of} (goal >= {goal}; the CPU it used allows at most "
                  f"{allows}), added median {added:.2f} ms" + (" (goal <= 0.5 ms)" if of == "of direct" else ""))


def _ceiling(runs: list[dict[str, float]], base: list[dict[str, float]], of: str = "rps") -> str:
    """The median over the rounds of a target's ceiling (Run.load) as a share of ``base``'s ``of``
    (its measured req/s, or its own ceiling), each within its round."""
    got = [r["ceiling"] / b[of] for r, b in zip(runs, base) if "ceiling" in r and of in b]
    return f"{statistics.median(got):.2f}" if got else "-"


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:.0f}s")


def report(args: argparse.Namespace, use_wrk: bool, rows: list, srows: list, on: list[str], off: list[str],
           failed: list[str]) -> None:
    gen = f"wrk -t{args.threads}" if use_wrk else "python (aiohttp)"
    directs = [r for name, _, r in rows if name.startswith("direct")]
    d_rps = sum(r["rps"] for r in directs) / len(directs)
    d_p50 = sum(r["p50"] for r in directs) / len(directs)
    print(f"\nnon-streamed: {gen}, {args.connections} connections, {args.seconds} s per target, POST "
          f"/v1/chat/completions, upstream: {args.upstream}; share and added p50 against the mean of the two "
          f"direct runs ({d_rps:.0f} req/s, p50 {d_p50:.2f} ms)\n")
    print(f"| {'target':<18} | {'workers':>7} | {'req/s':>7} | {'p50 ms':>6} | {'p99 ms':>6} | "
          f"{'CPU us/req':>10} | {'share':>5} | {'added p50 ms':>12} |")
    print(f"|{'-' * 20}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 12}|{'-' * 7}|{'-' * 14}|")
    for name, workers, r in rows:
        cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else "-"
        direct = name.startswith("direct")
        share = "" if direct else f"{r['rps'] / d_rps:.2f}"
        added = "" if direct else f"{r['p50'] - d_p50:+.2f}"
        print(f"| {name:<18} | {workers or '-':>7} | {r['rps']:>7.0f} | {r['p50']:>6.2f} | {r['p99']:>6.2f} | "
              f"{cpu:>10} | {share:>5} | {added:>12} |")
    print("\n(CPU us/req: the upstream's own for direct; the gateway's, every worker, for the others)")
    if srows:
        print(f"\nstreamed: {args.chunks} chunks {args.chunk_ms:g} ms apart at the upstream, "
              f"{max(2.0, args.seconds / 2):g} s per run; added = through the gateway minus direct, same "
              "connections\n")
        print(f"| {'target':<18} | {'conns':>5} | {'streams/s':>9} | {'TTFB p50':>8} | {'TTFB p99':>8} | "
              f"{'gap p50':>7} | {'gap p99':>7} | {'added TTFB':>10} | {'added gap':>9} |")
        print(f"|{'-' * 20}|{'-' * 7}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 11}|")
        base = {c: r for name, c, r in srows if name == "direct"}
        for name, c, r in srows:
            d = base.get(c)
            at = f"{r['ttfb50'] - d['ttfb50']:+.2f}" if d and name != "direct" else ""
            ag = f"{r['gap50'] - d['gap50']:+.2f}" if d and name != "direct" else ""
            print(f"| {name:<18} | {c:>5} | {r['sps']:>9.0f} | {r['ttfb50']:>8.2f} | {r['ttfb99']:>8.2f} | "
                  f"{r['gap50']:>7.2f} | {r['gap99']:>7.2f} | {at:>10} | {ag:>9} |")
        print("\n(ms; TTFB from the request's write to the first event; a gap is the time between two reads "
              "that carry events)")
    if args.policies:
        print(f"\npolicy sections on: {', '.join(on) or 'none'}")
        if off:
            print(f"policy sections off: {'; '.join(off)}")
    g = next((r for name, w, r in rows if name == "mesh serve" and w == 1), None)
    f = next((r for name, w, r in rows if name == "tcp relay (floor)"), None)
    if f:
        print(f"\ntcp relay (floor): {f['rps'] / d_rps:.2f} of direct at {f.get('cpu_us', 0):.0f} us of CPU per request: "
              "what a Python proxy keeps here with no HTTP, JSON or policy work at all")
    h = next((r for name, w, r in rows if name == "http relay (floor)"), None)
    if h:
        print(f"http relay (floor): {h['rps'] / d_rps:.2f} of direct at {h.get('cpu_us', 0):.0f} us of CPU per request: "
              "a Python proxy that parses both sides' HTTP (httptools) and JSON (orjson) on uvloop, no ASGI, "
              "no validation or policy")
    p = next((r for name, w, r in rows if name == "policies" and w == 1), None)
    if g:
        print(f"\nplain gateway: {g['rps'] / d_rps:.2f} of direct (goal >= 0.85), added median "
              f"{g['p50'] - d_p50:.2f} ms (goal <= 0.5 ms)")
    if p:
        print(f"every policy on: {p['rps'] / d_rps:.2f} of direct (goal >= 0.75), added median "
              f"{p['p50'] - d_p50:.2f} ms (goal <= 0.5 ms)")
    plains = [r for name, w, r in rows if name.startswith("mesh serve") and w == 1]
    for label in ("limits+ledger", "limits+ledger redis"):
        r = next((r for name, w, r in rows if name == label and w == 1), None)
        if r and plains:
            rps = sum(x["rps"] for x in plains) / len(plains)
            cpu = sum(x.get("cpu_us", 0) for x in plains) / len(plains)
            runs = " and ".join(f"{x['rps']:.0f}" for x in plains)
            print(f"{label}: {r['rps'] / rps:.2f} of the plain gateway (issue 19's goal >= 0.85; plain: the mean "
                  f"of {runs} req/s), +{r.get('cpu_us', 0) - cpu:.0f} us of CPU per request")
    ll = next((r for name, _, r in rows if name == "litellm proxy"), None)
    if ll and g:
        print(f"LiteLLM's proxy: {ll['rps'] / d_rps:.3f} of direct, added median {ll['p50'] - d_p50:.2f} ms; "
              f"mesh serve does {g['rps'] / ll['rps']:.1f}x its requests/s")
    elif not args.litellm:
        print("(add LiteLLM's proxy to the same run: --litellm /path/to/a/venv/with/litellm[proxy]/bin/python)")
    for f in failed:
        print(f"\nFAILED: {f}")


if __name__ == "__main__":
    sys.exit(main())
