"""Throughput and added latency of ``mesh serve`` (1 worker) in front of a fast local upstream.

Starts, each in its own process:

* the *upstream*: a mock OpenAI server answering every ``POST /v1/chat/completions`` with one canned
  chat completion (``--upstream aiohttp``, the default: parses each request as a real server would;
  ``--upstream asgi``: raw ASGI on uvicorn with the answer's bytes prebuilt, the least possible work);
* the *gateway*: ``mesh serve`` with one worker, its mesh one ``openai_compatible`` connection to
  that upstream;

then loads each with the same chat request at 16 connections for ``--seconds`` (direct first, then
through the gateway) and prints one table: req/s, median and p99 latency, the CPU time the serving
process spent per request (upstream for "direct", the gateway for the others; the number that holds on
a busy machine), the gateway's share of the direct throughput and the median latency it adds. The issue's goal: share >= 0.50 and added
median <= 1 ms.

    python bench/gateway.py [--seconds 10] [--connections 16] [--upstream aiohttp|asgi]
    python bench/gateway.py --install-wrk     # apt-get install -y wrk (Debian/Ubuntu, as root), then run
    python bench/gateway.py --litellm /path/to/venv/bin/python   # adds LiteLLM's proxy, same upstream
    python bench/gateway.py --no-policies     # skip the "+ limits + ledger" target

By default a third target runs in the same pass: ``mesh serve`` on the same config plus a rate limit
(requests and tokens per minute for every key, set far above the load: every call is counted, none
refused; in-process state) and the usage ledger (SQLite in the run's temp dir). Its share of the
plain gateway's throughput is the cost of those layers (issue 19's goal: >= 0.85).

``--litellm`` names a Python that has ``litellm[proxy]`` installed (a separate virtualenv: its
dependencies are not ours). Its proxy then runs as a third target with one worker, its config one
model routed to the same upstream, and is loaded exactly like the other two.

The load generator is wrk (``apt-get install -y wrk``). Without it the script falls back to a small
asyncio + aiohttp load generator in its own process, and says so: that one costs the machine more
CPU per request than wrk, so its absolute numbers are lower (the ratio still compares like with like).
Every address is on the loopback; every loop is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
import json, sys
ANSWER = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content":
                 "Requests pass through / one hop, then back again / the gateway stays light."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 18, "total_tokens": 42}}
port = int(sys.argv[1])
"""

UPSTREAMS = {
    "aiohttp": CANNED + r"""
import itertools
from aiohttp import web
ids = itertools.count()

async def chat(request):
    body = json.loads(await request.read())
    answer = dict(ANSWER, model=body["model"], id=f"chatcmpl-{next(ids)}")
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

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

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
LITELLM_KEY = "sk-bench-gateway-0123456789abcdef"
POLICIES = "+limits+ledger"  # its proxy refuses to start without a master key


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU time of a process (Linux), or None: the gateway's cost per request, which
    stays meaningful on a busy machine where req/s does not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="load duration per target (default 10)")
    ap.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)")
    ap.add_argument("--upstream", choices=sorted(UPSTREAMS), default="aiohttp",
                    help="aiohttp: a mock that parses each request (default); asgi: prebuilt bytes, no parsing")
    ap.add_argument("--install-wrk", action="store_true", help="apt-get install -y wrk first (root, Debian/Ubuntu)")
    ap.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk is there")
    ap.add_argument("--no-policies", action="store_true", help="skip the mesh serve + limits + ledger target")
    ap.add_argument("--litellm", metavar="PYTHON", help="a Python with litellm[proxy] installed: adds LiteLLM's "
                                                         "proxy (1 worker) as a third target")
    args = ap.parse_args(argv)

    if args.install_wrk and not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update"], check=False)
            subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    use_wrk = bool(shutil.which("wrk")) and not args.python_load
    if not use_wrk and not args.python_load:
        print("wrk not found (apt-get install -y wrk, or run with --install-wrk): using the Python load generator",
              file=sys.stderr)

    up_port, gw_port, ll_port, pol_port = free_port(), free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh.yaml"
        plain = {"connections": {"up": {
            "type": "openai_compatible", "base_url": f"http://127.0.0.1:{up_port}/v1", "max_retries": 0,
            "models": [{"id": UPSTREAM_MODEL}]}}}
        config.write_text(json.dumps(plain))  # JSON is YAML
        policies = Path(tmp) / "mesh-policies.yaml"
        policies.write_text(json.dumps({**plain, "limits": {"default": {"rpm": 10**9, "tpm": 10**12}},
                                        "usage": {"path": str(Path(tmp) / "usage.db")}}))
        try:
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAMS[args.upstream], str(up_port)], env=env))
            direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
            wait_up(direct_url, procs[-1], "the upstream")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "langchain_mesh", "serve", "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(gw_port), "--workers", "1", "--log-level", "warning"],
                env=env, stderr=subprocess.DEVNULL))
            wait_up(f"http://127.0.0.1:{gw_port}/health", procs[-1], "mesh serve")
            gw_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            targets = [("direct", direct_url, UPSTREAM_MODEL, procs[0], None),
                       ("mesh serve", gw_url, GATEWAY_MODEL, procs[1], None)]
            if not args.no_policies:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "langchain_mesh", "serve", "--config", str(policies), "--host",
                     "127.0.0.1", "--port", str(pol_port), "--workers", "1", "--log-level", "warning"],
                    env=env, stderr=subprocess.DEVNULL))
                wait_up(f"http://127.0.0.1:{pol_port}/health", procs[-1], "mesh serve (limits + ledger)")
                targets.append((POLICIES, f"http://127.0.0.1:{pol_port}/v1/chat/completions", GATEWAY_MODEL,
                                procs[-1], None))
            if args.litellm:
                procs.append(start_litellm(args.litellm, up_port, ll_port, tmp, env))
                wait_up(f"http://127.0.0.1:{ll_port}/health/liveliness", procs[-1], "LiteLLM's proxy", timeout=120)
                targets.append(("litellm proxy", f"http://127.0.0.1:{ll_port}/v1/chat/completions", UPSTREAM_MODEL,
                                procs[-1], LITELLM_KEY))

            rows = {}
            for name, url, model, proc, key in targets:
                body = json.dumps({**REQUEST, "model": model})
                warm(url, body.encode(), key=key)
                pid = proc.pid
                cpu0 = cpu_seconds(pid)
                rows[name] = (run_wrk(url, body, args.connections, args.seconds, args.threads, key) if use_wrk
                              else run_python(url, body, args.connections, args.seconds, key))
                cpu1 = cpu_seconds(pid)
                if cpu0 is not None and cpu1 is not None and rows[name]["rps"]:
                    rows[name]["cpu_us"] = (cpu1 - cpu0) / (rows[name]["rps"] * args.seconds) * 1e6
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    d, g = rows["direct"], rows["mesh serve"]
    gen = f"wrk -t{args.threads}" if use_wrk else "python (aiohttp)"
    print(f"\n{gen}, {args.connections} connections, {args.seconds} s per target, POST /v1/chat/completions, "
          f"upstream: {args.upstream}\n")
    print(f"| {'target':<15} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'server CPU us/req':>17} |")
    print(f"|{'-' * 17}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 19}|")
    for name, r in rows.items():
        cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else "-"
        print(f"| {name:<15} | {r['rps']:>9.0f} | {r['p50']:>7.2f} | {r['p99']:>7.2f} | {cpu:>17} |")
    share = g["rps"] / d["rps"] if d["rps"] else float("nan")
    added = g["p50"] - d["p50"]
    print(f"\nthroughput through mesh serve: {share:.2f} of direct (goal >= 0.50); "
          f"added median latency: {added:.2f} ms (goal <= 1 ms)")
    if POLICIES in rows:
        p = rows[POLICIES]
        cpu = (f", gateway CPU {p['cpu_us']:.0f} vs {g['cpu_us']:.0f} us/request"
               if "cpu_us" in p and "cpu_us" in g else "")
        print(f"with limits + ledger: {p['rps'] / g['rps']:.2f} of the plain gateway's throughput (goal >= 0.85), "
              f"added median {p['p50'] - g['p50']:.2f} ms{cpu}")
    if "litellm proxy" in rows:
        ll = rows["litellm proxy"]
        print(f"LiteLLM's proxy: {ll['rps'] / d['rps']:.3f} of direct, added median {ll['p50'] - d['p50']:.2f} ms; "
              f"mesh serve does {g['rps'] / ll['rps']:.1f}x its requests/s at {ll['p50'] / g['p50']:.1f}x lower median latency")
    elif not args.litellm:
        print("(add LiteLLM's proxy to the same run: --litellm /path/to/a/venv/with/litellm[proxy]/bin/python)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
