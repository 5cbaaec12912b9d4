"""Soak test of ``mesh serve``: many connections for a long while, then errors, latency and memory.

Starts, each in its own process, a fast mock OpenAI upstream (aiohttp: plain chat completions, and
streams of a few chunks ending in a usage chunk and ``[DONE]``) and ``mesh serve`` (1 worker, an API
key, its mesh one ``openai_compatible`` connection to the upstream). Then, from a third process, it
keeps ``--connections`` clients busy for ``--seconds`` with chat requests, first plain, then streamed,
and prints for each phase: requests, errors (a status other than 200, a broken connection, a stream
without its ``[DONE]``), p50/p99 latency, and the gateway's resident memory (RSS) at the start of the
phase (after a warm-up) and at its end. The goal: 0 errors and RSS growth below 10%.

    python bench/soak.py [--seconds 60] [--connections 64] [--phases plain,stream]

Every address is on the loopback; every loop is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-soak-0123456789abcdef"
MODEL = "openai_compatible:up:canned"

UPSTREAM = r"""
import asyncio, itertools, json, sys
from aiohttp import web
ids = itertools.count()
TEXT = "Requests pass through / one hop, then back again / the gateway stays light."
USAGE = {"prompt_tokens": 24, "completion_tokens": 18, "total_tokens": 42}

def chunk(i, delta, finish=None, usage=None, model="canned"):
    c = {"id": f"chatcmpl-{i}", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
         "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        c["usage"] = usage
    return b"data: " + json.dumps(c).encode() + b"\n\n"

async def chat(request):
    body = json.loads(await request.read())
    i = next(ids)
    if not body.get("stream"):
        answer = {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1700000000, "model": body["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT},
                               "finish_reason": "stop"}], "usage": USAGE}
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(chunk(i, {"role": "assistant", "content": ""}))
    for word in TEXT.split(" "):
        await resp.write(chunk(i, {"content": word + " "}))
    await resp.write(chunk(i, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(chunk(i, None, usage=USAGE))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp

app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

LOAD = r'''
import asyncio, json, sys, time, aiohttp
url, key, conns, seconds, stream = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
body = json.dumps({"model": sys.argv[6], "messages": [{"role": "user", "content": "Write a haiku about a gateway."}],
                   "max_tokens": 64, "stream": stream}).encode()
headers = {"content-type": "application/json", "authorization": "Bearer " + key}
errors = {}

async def worker(session, stop, lat):
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    errors[f"HTTP {r.status}"] = errors.get(f"HTTP {r.status}", 0) + 1
                    continue
                if stream and not data.rstrip().endswith(b"data: [DONE]"):
                    errors["stream without [DONE]"] = errors.get("stream without [DONE]", 0) + 1
                    continue
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            continue
        lat.append(time.perf_counter() - t)

async def main():
    lat = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns), timeout=timeout) as s:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(s, t0 + seconds, lat) for _ in range(conns)))
        wall = time.perf_counter() - t0
    lat.sort()
    n = len(lat)
    print(json.dumps({"requests": n + sum(errors.values()), "ok": n, "errors": errors, "rps": n / wall,
                      "p50": lat[n // 2] * 1000 if n else None, "p99": lat[min(n - 1, int(n * 0.99))] * 1000 if n else None}))
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_up(url: str, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP error status: it is up
                return
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {timeout}s")


def phase(url: str, connections: int, seconds: float, stream: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD, url, KEY, str(connections), str(seconds),
                          "1" if stream else "0", MODEL], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise SystemExit(f"the load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each phase (default 60)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--phases", default="plain,stream", help="plain, stream or both (comma-separated)")
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "mesh.yaml"
        cfg.write_text(json.dumps({
            "connections": {"up": {"type": "openai_compatible", "base_url": f"http://127.0.0.1:{up_port}/v1",
                                   "api_key": "upstream-key", "max_retries": 0, "models": [{"id": "canned"}]}},
            "server": {"api_keys": [{"key": KEY, "name": "soak"}]}}))
        os.chmod(cfg, 0o600)
        try:
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)], env=env))
            wait_up(f"http://127.0.0.1:{up_port}/", procs[-1], "the upstream")
            gw = subprocess.Popen([sys.executable, "-m", "langchain_mesh", "serve", "--config", str(cfg),
                                   "--port", str(gw_port), "--log-level", "warning"], env=env)
            procs.append(gw)
            url = f"http://127.0.0.1:{gw_port}"
            wait_up(url + "/health", gw, "mesh serve")
            print(f"mesh serve (1 worker) in front of a local upstream; {args.connections} connections, "
                  f"{args.seconds:g} s per phase")
            print(f"{'phase':<8} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'RSS start MB':>13} {'RSS end MB':>11} {'growth':>7}")
            worst = 0
            for name in [p.strip() for p in args.phases.split(",") if p.strip()]:
                stream = name == "stream"
                phase(url + "/v1/chat/completions", args.connections, min(3.0, args.seconds), stream)  # warm-up
                start = rss_mb(gw.pid)
                r = phase(url + "/v1/chat/completions", args.connections, args.seconds, stream)
                end = rss_mb(gw.pid)
                growth = (end / start - 1) * 100 if start and end else float("nan")
                n_err = sum(r["errors"].values())
                worst = max(worst, n_err)
                print(f"{name:<8} {r['requests']:>9} {n_err:>7} {r['rps']:>8.0f} {r['p50'] or 0:>8.2f} "
                      f"{r['p99'] or 0:>8.2f} {start or 0:>13.1f} {end or 0:>11.1f} {growth:>6.1f}%")
                if r["errors"]:
                    print(f"         errors: {r['errors']}")
            return 1 if worst else 0
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    sys.exit(main())
