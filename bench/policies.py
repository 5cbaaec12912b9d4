"""What a route costs on the success path: in-process µs per call, and the gateway's req/s.

Two measures, one run:

1. **in-process**: ``mesh.complete`` / ``mesh.acomplete`` on a route over two targets vs on the target
   directly, both on the scripted connection (no network: what is left is the mesh's own work), best of
   several interleaved rounds; the difference is what the route adds per call. Goal: <= 20 µs.
2. **gateway**: ``mesh serve`` (1 worker) in front of bench/gateway.py's mock upstream, loaded (wrk, or
   the Python load generator) with the same chat request for the plain LLM and for a route over two
   connections to that upstream, alternately; the route's share of the plain LLM's req/s. Goal: >= 0.9.

    python bench/policies.py [--calls 20000] [--seconds 5] [--connections 16] [--skip-gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import gateway as gw  # noqa: E402  (bench/gateway.py: upstreams, load generators, process helpers)


def in_process(calls: int, rounds: int = 5) -> dict[str, float]:
    from langchain_mesh import Mesh
    from langchain_mesh.schema import CompletionRequest

    mesh = Mesh({"connections": {"a": {"type": "scripted"}, "b": {"type": "scripted"}},
                 "routes": {"r": {"targets": ["scripted:a:chat", "scripted:b:chat"]}}})
    direct, route = mesh.get_llm("scripted:a:chat"), mesh.get_llm("route:r")
    request = CompletionRequest.from_prompt("hello there")
    conns = [mesh.connection("a"), mesh.connection("b")]
    for c in conns:
        # the scripted connection's async form runs the sync one on a worker thread: that hop costs
        # both sides alike and only adds noise, so here it answers inline
        async def inline(model, request, _c=c):
            return _c.complete(model, request)
        c.acomplete = inline

    def sync(llm) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            mesh.complete(llm, request)
        return (time.perf_counter() - started) / calls * 1e6

    async def asy(llm) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await mesh.acomplete(llm, request)
        return (time.perf_counter() - started) / calls * 1e6

    best = {"sync direct": 1e9, "sync route": 1e9, "async direct": 1e9, "async route": 1e9}
    for _ in range(rounds):  # interleaved, best of: the machine is shared
        best["sync direct"] = min(best["sync direct"], sync(direct))
        best["sync route"] = min(best["sync route"], sync(route))
        best["async direct"] = min(best["async direct"], asyncio.run(asy(direct)))
        best["async route"] = min(best["async route"], asyncio.run(asy(route)))
        for c in conns:
            c.requests.clear()  # the scripted connection records every request
    mesh.close()
    return best


def gateway(seconds: int, connections: int, python_load: bool) -> dict[str, dict[str, float]]:
    use_wrk = bool(shutil.which("wrk")) and not python_load
    up_port, gw_port = gw.free_port(), gw.free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs: list[subprocess.Popen] = []
    conn = {"type": "openai_compatible", "base_url": f"http://127.0.0.1:{up_port}/v1", "max_retries": 0,
            "models": [{"id": gw.UPSTREAM_MODEL}]}
    plain, route = gw.GATEWAY_MODEL, "route:r"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh.yaml"
        config.write_text(json.dumps({"connections": {"up": conn, "up2": conn}, "routes": {"r": {"targets": [
            plain, f"openai_compatible:up2:{gw.UPSTREAM_MODEL}"]}}}))
        try:
            procs.append(subprocess.Popen([sys.executable, "-c", gw.UPSTREAMS["aiohttp"], str(up_port)], env=env))
            gw.wait_up(f"http://127.0.0.1:{up_port}/v1/chat/completions", procs[-1], "the upstream")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "langchain_mesh", "serve", "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(gw_port), "--workers", "1", "--log-level", "warning"], env=env,
                stderr=subprocess.DEVNULL))
            gw.wait_up(f"http://127.0.0.1:{gw_port}/health", procs[-1], "mesh serve")
            url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            rows: dict[str, list[dict[str, float]]] = {plain: [], route: []}
            for model in (plain, route):
                gw.warm(url, json.dumps({**gw.REQUEST, "model": model}).encode())
            for _ in range(2):  # alternate: a busy machine's drift hits both alike
                for model in (plain, route):
                    body = json.dumps({**gw.REQUEST, "model": model})
                    cpu0 = gw.cpu_seconds(procs[1].pid)
                    r = (gw.run_wrk(url, body, connections, seconds, 1) if use_wrk
                         else gw.run_python(url, body, connections, seconds))
                    cpu1 = gw.cpu_seconds(procs[1].pid)
                    if cpu0 is not None and cpu1 is not None and r["rps"]:
                        r["cpu_us"] = (cpu1 - cpu0) / (r["rps"] * seconds) * 1e6
                    rows[model].append(r)
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    return {m: {k: sum(r.get(k, 0.0) for r in rs) / len(rs) for k in rs[0]} for m, rs in rows.items()}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000, help="in-process calls per round (default 20000)")
    ap.add_argument("--seconds", type=int, default=5, help="gateway load per run (default 5; 4 runs)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--python-load", action="store_true", help="the Python load generator even if wrk is there")
    ap.add_argument("--skip-gateway", action="store_true")
    args = ap.parse_args(argv)

    best = in_process(args.calls)
    print("in-process, µs per call (best of 5 rounds):")
    for mode in ("sync", "async"):
        d, r = best[f"{mode} direct"], best[f"{mode} route"]
        print(f"  {mode:5}  direct {d:7.2f}  route {r:7.2f}  added {r - d:6.2f}  (goal <= 20)")
    if args.skip_gateway:
        return 0
    rows = gateway(args.seconds, args.connections, args.python_load)
    (plain, p), (_, r) = rows.items()
    print(f"gateway, {args.connections} connections, {args.seconds}s x 2 each:")
    for name, row in (("plain LLM", p), ("route:r", r)):
        print(f"  {name:10} {row['rps']:9.0f} req/s  p50 {row['p50']:6.2f} ms  p99 {row['p99']:6.2f} ms"
              + (f"  {row['cpu_us']:6.0f} µs CPU/req" if "cpu_us" in row else ""))
    print(f"  route / plain: {r['rps'] / p['rps']:.2f}  (goal >= 0.90)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
