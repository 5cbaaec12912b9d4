"""A route's rate limits and budgets on Redis in ``mesh serve`` (the pass-through path): the route's
windows, its first target's and the budgets' spend are read and taken in one round trip before the
call (policies/limits.py ``_route_enter``). What each window holds is read back with the ``limits``
library's own strategies: the windows keep its layout, and count each target only for the calls it
got (a fallback's target by its own layer, a skipped target not at all)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("uvicorn")

import httpx  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.policies.breaker import CLOSED, OPEN  # noqa: E402
from langchain_mesh.policies.limits import limiter_for  # noqa: E402
from langchain_mesh.testing.faults import FaultPlan  # noqa: E402
from langchain_mesh.testing.openai import OpenAIServer  # noqa: E402
from langchain_mesh.testing.redis_server import RedisServer  # noqa: E402

A, B = "openai_compatible:a:m", "openai_compatible:b:m"
KEY = "sk-route-0123456789"
HEAD = {"authorization": f"Bearer {KEY}"}
RPM, TPM = 1000, 10 ** 6
PRICE_IN, PRICE_OUT = 1.0, 2.0  # both targets' prices, a million tokens



@pytest.fixture(scope="module")
def upstreams():
    a, b = OpenAIServer(flavor="openai").start(), OpenAIServer(flavor="openai").start()
    yield a, b
    a.stop()
    b.stop()


def config(redis_url: str, a: OpenAIServer, b: OpenAIServer, a_rpm: int = RPM, **extra: object) -> dict:
    conn = lambda s: {"type": "openai_compatible", "base_url": s.base_url, "api_key": "test-key",  # noqa: E731
                      "max_retries": 0, "timeout": 2, "models": [{"id": "m"}]}
    return {"connections": {"a": conn(a), "b": conn(b)},
            "routes": {"chat": {"targets": [A, B], "breaker": {"failures": 5, "window": 60, "cooldown": 60}}},
            # every call asks Redis: these tests count each window exactly (leases: test_limit_leases.py)
            "state": {"redis_url": redis_url, "timeout": 0.3, "lease": False},
            "server": {"api_keys": [{"name": "k", "key": KEY}]},
            "limits": {"period": 60, "default": {"rpm": RPM, "tpm": TPM},
                       "llms": {A: {"rpm": a_rpm, "tpm": TPM}, B: {"rpm": RPM}}},
            "prices": {t: {"input": PRICE_IN, "output": PRICE_OUT} for t in (A, B)},
            "budgets": {"period": "day", "keys": {"k": 10.0 ** 6}},
            **extra}


def post(srv, text: str = "hello there"):
    body = {"model": "route:chat", "messages": [{"role": "user", "content": text}]}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers=HEAD, timeout=10)


def direct(srv, model: str = A):
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers=HEAD, timeout=10)


def answered_by_a(srv, n: int) -> int:
    """``n`` route calls, each answered by target A: the tokens they used."""
    return spent_at_a(srv, n)[0]


def spent_at_a(srv, n: int) -> tuple[int, float]:
    """``n`` route calls, each answered by target A: the tokens they used, and what they cost at its prices."""
    tokens, cost = 0, 0.0
    for _ in range(n):
        r = post(srv)
        assert r.status_code == 200 and r.headers["x-mesh-llm"] == A, r.text
        u = r.json()["usage"]
        tokens += u["total_tokens"]
        cost += (u["prompt_tokens"] * PRICE_IN + u["completion_tokens"] * PRICE_OUT) / 1e6
    return tokens, cost


def used(mesh: Mesh, kind: str, name: str, dim: str = "requests", amount: int = RPM) -> int:
    """What the window holds, as the limits library reads it."""
    lim = limiter_for(mesh)
    strategy = lim.requests if dim == "requests" else lim.tokens
    _reset, remaining = strategy.get_window_stats(lim.item(dim, amount), dim, kind, name)
    return amount - remaining


def settled(check, timeout: float = 3.0):  # the after-call writes are not waited for: poll
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.02)
    return True


def test_one_round_trip_counts_the_key_once_and_the_target_that_answered(redis_server, upstreams):
    redis_server.flush()
    a, b = upstreams
    mesh = Mesh(config(redis_server.url, a, b))
    with RunningServer(mesh) as srv:
        tokens, cost = spent_at_a(srv, 3)
        assert used(mesh, "key", "k") == 3
        assert used(mesh, "llm", A) == 3 and used(mesh, "llm", B) == 0
        # the estimates were replaced by the provider's counts, on the route's window and the target's
        assert settled(lambda: used(mesh, "key", "k", "tokens", TPM) == tokens)
        assert settled(lambda: used(mesh, "llm", A, "tokens", TPM) == tokens)
        # (approx, not ==: the spend is summed in batches, whose float rounding varies)
        assert settled(lambda: float(mesh.state_store().get("budget:key:k:%d" % int(time.time() // 86400)) or 0)
                       == pytest.approx(cost, rel=1e-9))


def test_a_fallback_target_is_counted_by_its_own_layer(redis_server, upstreams):
    redis_server.flush()
    a, b = upstreams
    mesh = Mesh(config(redis_server.url, a, b))
    with RunningServer(mesh) as srv:
        a.faults = FaultPlan(schedule=["503"])
        try:
            r = post(srv)
        finally:
            a.faults = None
        assert r.status_code == 200 and r.headers["x-mesh-llm"] == B and r.headers["x-mesh-attempts"] == "2"
        assert used(mesh, "key", "k") == 1
        assert used(mesh, "llm", A) == 1 and used(mesh, "llm", B) == 1  # both were called
        # the failed attempt used no tokens: its estimate was given back
        assert settled(lambda: used(mesh, "llm", A, "tokens", TPM) == 0)


def test_a_full_first_target_is_not_counted_and_the_route_falls_back(redis_server, upstreams):
    redis_server.flush()
    a, b = upstreams
    mesh = Mesh(config(redis_server.url, a, b, a_rpm=2))
    with RunningServer(mesh) as srv:
        seen = len(a.requests)
        got = [post(srv).headers["x-mesh-llm"] for _ in range(4)]
        assert got == [A, A, B, B]
        assert len(a.requests) - seen == 2  # refused by its limit before sending
        assert used(mesh, "key", "k") == 4
        assert used(mesh, "llm", A, amount=2) == 2 and used(mesh, "llm", B) == 2


def test_a_first_target_the_route_then_skips_gets_its_windows_back(redis_server, upstreams, monkeypatch):
    redis_server.flush()
    a, b = upstreams
    mesh = Mesh(config(redis_server.url, a, b))
    breaker = mesh.get_llm("route:chat").route.breakers[0]
    # closed when the limits layer looks (it takes A's windows), open when the route looks a moment
    # later (another request's failure tripped it in between)
    answers = iter([CLOSED, OPEN])
    monkeypatch.setattr(breaker, "known", lambda: next(answers, OPEN))
    with RunningServer(mesh) as srv:
        seen = len(a.requests)
        r = post(srv)
        assert r.status_code == 200 and r.headers["x-mesh-llm"] == B, r.text
        assert len(a.requests) == seen
        assert used(mesh, "key", "k") == 1 and used(mesh, "llm", B) == 1
        assert settled(lambda: used(mesh, "llm", A) == 0)
        assert settled(lambda: used(mesh, "llm", A, "tokens", TPM) == 0)


def test_a_spent_budget_refuses_a_route_call_before_sending(redis_server, upstreams):
    redis_server.flush()
    a, b = upstreams
    cfg = config(redis_server.url, a, b)
    cfg["budgets"] = {"period": "day", "keys": {"k": 0.5}}
    mesh = Mesh(cfg)
    mesh.state_store().incr("budget:key:k:%d" % int(time.time() // 86400), 0.5, ttl=86400)
    with RunningServer(mesh) as srv:
        seen = len(a.requests) + len(b.requests)
        r = post(srv)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        assert len(a.requests) + len(b.requests) == seen


@pytest.mark.parametrize("model", ["route:chat", A])
@pytest.mark.parametrize("on_failure", ["open", "closed"])
def test_a_call_when_redis_is_down_fails_as_configured(upstreams, on_failure, model):
    """A route's call, and an LLM's called directly (no route)."""
    a, b = upstreams
    with RedisServer() as redis:
        cfg = config(redis.url, a, b)
        cfg["state"]["on_failure"] = on_failure
        mesh = Mesh(cfg)
        send = post if model.startswith("route:") else direct
        with RunningServer(mesh) as srv:
            assert send(srv).status_code == 200
            redis.kill()
            r = send(srv)
            if on_failure == "open":
                assert r.status_code == 200, r.text  # let through, unchecked
            else:
                assert r.status_code == 503 and r.json()["error"]["code"] == "state_store_unavailable"



@pytest.mark.parametrize("lease", [True, False])
def test_a_pass_through_llm_on_redis_is_counted_by_its_forward_hooks(redis_server, upstreams, lease):
    """An LLM called directly (no route): its limits layer on Redis counts the call from its lease or in
    a round trip (LimitsLayer.forward_enter, chain.Await), exactly at the limit; the tokens are
    reconciled with the answer's usage; a failed call gives its estimate back."""
    redis_server.flush()
    a, b = upstreams
    cfg = config(redis_server.url, a, b, a_rpm=3)
    cfg["state"]["lease"] = lease
    mesh = Mesh(cfg)
    with RunningServer(mesh) as srv:
        tokens = 0
        for _ in range(2):
            r = direct(srv)
            assert r.status_code == 200, r.text
            tokens += r.json()["usage"]["total_tokens"]
        a.faults = FaultPlan(schedule=["503"])
        try:
            assert direct(srv).status_code == 503  # the third call, counted, used no tokens
        finally:
            a.faults = None
        seen = len(a.requests)
        r = direct(srv)
        assert r.status_code == 429 and r.headers["x-ratelimit-limit-requests"] == "3", r.text
        assert len(a.requests) == seen  # refused before it was sent
        # (near A's limit a lease covers one call: the key's windows, taken with A's, are exact too)
        assert used(mesh, "llm", A, amount=3) == 3 and used(mesh, "key", "k") == 3
        assert settled(lambda: used(mesh, "llm", A, "tokens", TPM) == tokens)
        assert settled(lambda: used(mesh, "key", "k", "tokens", TPM) == tokens)
