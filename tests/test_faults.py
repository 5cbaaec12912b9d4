"""Fault injection in the local wire-format servers, and a route that survives them.

The resilience check of issue 18: a route over two OpenAI-wire servers where the first fails 30% of
requests in mixed ways (429 + Retry-After, 500, 503, hangs past the timeout, refused connections, streams
cut before their first event) serves every one of 500 calls, sync, async and streamed, each within the
route's deadline."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import StreamInterruptedError
from langchain_mesh.schema import CompletionRequest, StreamFooter
from langchain_mesh.testing.anthropic import AnthropicServer
from langchain_mesh.testing.faults import FaultPlan, parse_fault
from langchain_mesh.testing.openai import OpenAIServer

DEADLINE = 2.0


@pytest.fixture(scope="module")
def servers():
    a, b = OpenAIServer(flavor="openai").start(), OpenAIServer(flavor="openai").start()
    yield a, b
    a.stop()
    b.stop()


def _conn(srv, timeout: float) -> dict:
    return {"type": "openai_compatible", "base_url": srv.base_url, "api_key": "test-key", "max_retries": 0,
            "timeout": timeout, "models": [{"id": "m"}]}


def route_mesh(a, b) -> Mesh:
    # the failing target's timeout cuts its hangs short; the healthy one's leaves room for a busy machine
    return Mesh({"connections": {"a": _conn(a, 0.08), "b": _conn(b, 1.5)},
                 "routes": {"r": {"targets": ["openai_compatible:a:m", "openai_compatible:b:m"],
                                  "timeout": DEADLINE, "retry": {"target_retries": 0},
                                  # the breaker would take `a` out after a few failures: here every call
                                  # must go through the fallback path itself
                                  "breaker": {"enabled": False}}}})


def chat(srv, headers=None, stream=False):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(srv.base_url + "/chat/completions", json=body, timeout=5,
                      headers={"authorization": "Bearer test-key", **(headers or {})})


# ---- the faults themselves ------------------------------------------------------------------------------


def test_header_faults_on_two_providers(servers):
    a, _ = servers
    r = chat(a, {"x-mesh-fault": "429; retry_after=3"})
    assert r.status_code == 429 and r.headers["retry-after"] == "3" and r.json()["error"]["message"]
    assert chat(a, {"x-mesh-fault": "503"}).status_code == 503
    assert chat(a, {"x-mesh-fault": "500"}).status_code == 500
    with pytest.raises(httpx.TransportError):
        chat(a, {"x-mesh-fault": "refuse"})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(a.base_url + "/chat/completions", json={"model": "m", "messages": []}, timeout=0.1,
                   headers={"authorization": "Bearer test-key", "x-mesh-fault": "hang; seconds=0.3"})
    assert chat(a).status_code == 200  # no header, no plan: a normal answer
    # the shared base: another provider's server fails in its own error shape
    with AnthropicServer() as anth:
        r = httpx.post(anth.url + "/v1/messages", json={"model": "claude-3-5-sonnet-latest", "max_tokens": 5,
                                                        "messages": [{"role": "user", "content": "hi"}]},
                       headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01", "x-mesh-fault": "429"})
        assert r.status_code == 429 and r.json()["type"] == "error" and "retry-after" in r.headers


def test_cut_stream_midway_and_schedule(servers):
    a, _ = servers
    a.faults = FaultPlan(schedule=["cut; cut_after=3", None, "503"])
    try:
        with pytest.raises(httpx.TransportError):
            with httpx.stream("POST", a.base_url + "/chat/completions", timeout=5,
                              json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
                              headers={"authorization": "Bearer test-key"}) as r:
                assert r.status_code == 200
                for _ in r.iter_lines():
                    pass
        assert chat(a).status_code == 200
        assert chat(a).status_code == 503
        assert chat(a).status_code == 200  # the schedule is spent
        assert a.faults.injected == ["cut", "503"]
    finally:
        a.faults = None


def test_rate_is_seeded_and_reproducible():
    draws = []
    for _ in range(2):
        plan = FaultPlan(rate=0.3, seed=11)
        draws.append([getattr(plan.next(), "kind", None) for _ in range(1000)])
    assert draws[0] == draws[1]
    failed = sum(d is not None for d in draws[0])
    assert 250 <= failed <= 350 and set(draws[0]) - {None} == {"429", "500", "503", "hang", "cut", "refuse"}
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("teapot")


def test_control_endpoint_sets_and_clears_faults(servers):
    a, _ = servers
    httpx.post(a.url + "/__mesh__/faults", json={"schedule": ["429"]})
    try:
        assert chat(a).status_code == 429
    finally:
        httpx.post(a.url + "/__mesh__/faults", json={})
    assert a.faults is None and chat(a).status_code == 200


# ---- a route that survives 30% mixed failures -----------------------------------------------------------


KINDS = ("429", "500", "503", "hang", "refuse", "cut")


def _plan(seed: int) -> FaultPlan:
    # cut_after=0: the stream breaks before its first event (a cut after it cannot be saved without
    # mixing two models' output: see test_cut_midway_is_never_mixed)
    return FaultPlan(rate=0.3, kinds=KINDS, seed=seed, retry_after=0.05, hang=0.2, cut_after=0)


def test_sync_calls_all_served(servers):
    a, b = servers
    a.faults = _plan(1)
    mesh = route_mesh(a, b)
    llm = mesh.get_llm("route:r")
    try:
        slowest = 0.0
        for i in range(500):
            started = time.monotonic()
            resp = mesh.complete(llm, CompletionRequest.from_prompt(f"n{i}"))
            slowest = max(slowest, time.monotonic() - started)
            assert resp.text and resp.meta.llm_id
        injected = len(a.faults.injected)
    finally:
        a.faults = None
        mesh.close()
    assert 100 <= injected <= 200  # ~30% of 500 failed on the first target
    assert slowest < DEADLINE


def test_async_calls_all_served(servers):
    a, b = servers
    a.faults = _plan(2)
    mesh = route_mesh(a, b)
    llm = mesh.get_llm("route:r")

    async def one(i: int) -> float:
        started = time.monotonic()
        resp = await mesh.acomplete(llm, CompletionRequest.from_prompt(f"n{i}"))
        assert resp.text
        return time.monotonic() - started

    async def run() -> list[float]:
        out: list[float] = []
        for start in range(0, 500, 25):
            out += await asyncio.gather(*(one(i) for i in range(start, start + 25)))
        return out

    try:
        times = asyncio.run(run())
        injected = len(a.faults.injected)
    finally:
        a.faults = None
        mesh.close()
    assert len(times) == 500 and max(times) < DEADLINE and 100 <= injected <= 200


def test_streamed_calls_all_served(servers):
    a, b = servers
    a.faults = _plan(3)
    mesh = route_mesh(a, b)
    llm = mesh.get_llm("route:r")
    try:
        slowest = 0.0
        for i in range(500):
            started = time.monotonic()
            events = list(mesh.stream(llm, CompletionRequest.from_prompt(f"stream {i}")))
            slowest = max(slowest, time.monotonic() - started)
            assert isinstance(events[-1], StreamFooter) and events[-1].meta.llm_id
            # one model's output only: the text is the (echoed) prompt once
            assert "".join(e.text or "" for e in events[:-1]).count(f"stream {i}") <= 1
        injected = len(a.faults.injected)
    finally:
        a.faults = None
        mesh.close()
    assert slowest < DEADLINE and 100 <= injected <= 200


def test_cut_midway_is_never_mixed(servers):
    a, b = servers
    a.faults = FaultPlan(schedule=["cut; cut_after=3"])
    mesh = route_mesh(a, b)
    before = len(b.requests)
    got = []
    try:
        with pytest.raises(StreamInterruptedError):
            for ev in mesh.stream(mesh.get_llm("route:r"), CompletionRequest.from_prompt("x")):
                got.append(ev)
    finally:
        a.faults = None
        mesh.close()
    assert got and len(b.requests) == before  # events reached the caller: no fallback to b
