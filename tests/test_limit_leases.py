"""Leases on Redis (policies/limits.py ``_Lease``, policies/budgets.py ``_far``): far from its limits a
worker takes several calls' worth of its windows in one round trip and counts them itself for
LEASE_TTL; near a limit every call asks Redis, so a limit shared by workers is never passed. Budgets
read far from their caps are not read again for LEASE_TTL. Round trips are counted by Redis itself
(INFO commandstats); windows are read back with the ``limits`` library's own strategies."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("hiredis")
redis = pytest.importorskip("redis")

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import BudgetExceeded, RateLimitExceeded  # noqa: E402
from langchain_mesh.policies.limits import LEASE_MAX, LEASE_ROOM, _Check, limiter_for  # noqa: E402
from langchain_mesh.policies.scope import call_scope  # noqa: E402
from langchain_mesh.schema import CompletionRequest, Message  # noqa: E402
from langchain_mesh.testing.redis_server import redis_server_binary  # noqa: E402

pytestmark = pytest.mark.skipif(redis_server_binary() is None,
                                reason="redis-server is not installed (apt-get install -y redis-server; CI has it)")

FAKE = {"fake": {"type": "scripted", "models": [{"id": "chat"}]}}
CHAT = "scripted:fake:chat"


def _mesh(url: str, rpm: int, tpm: int = 10 ** 9, **state: object) -> Mesh:
    return Mesh({"connections": FAKE, "state": {"redis_url": url, **state},
                 "limits": {"period": 60, "keys": {"k": {"rpm": rpm, "tpm": tpm}}}})


def _windows(mesh: Mesh, rpm: int, tpm: int = 10 ** 9):
    lim = limiter_for(mesh)
    return lim, lim.order([_Check("requests", "key", "k", lim.item("requests", rpm)),
                           _Check("tokens", "key", "k", lim.item("tokens", tpm))])[0]


def _used(lim, c) -> int:
    strategy = lim.requests if c.dim == "requests" else lim.tokens
    _reset, remaining = strategy.get_window_stats(c.item, *c.ids)
    return c.item.amount - remaining


def _trips(sync) -> int:
    stats = sync.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


async def _calls(lim, checks, n: int, cost: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            await lim.aacquire(checks, cost)
            ok += 1
        except RateLimitExceeded:
            pass
        await asyncio.sleep(0)  # the call itself: the loop runs the others meanwhile
    return ok


def test_far_from_its_limits_a_worker_asks_redis_once_for_many_calls(redis_server):
    redis_server.flush()
    mesh = _mesh(redis_server.url, rpm=10 ** 6)
    lim, checks = _windows(mesh, 10 ** 6)
    sync = redis.Redis.from_url(redis_server.url)
    sync.config_resetstat()
    assert asyncio.run(_calls(lim, checks, 300, 10)) == 300
    trips = _trips(sync)
    assert trips < 100, trips  # a few dozen calls a trip once the leases have grown (1, 2, 4 ... 64)
    # every call is in the windows (and what the last lease took for calls not made yet, no more)
    requests, tokens = [c for c in checks if c.dim == "requests"][0], [c for c in checks if c.dim == "tokens"][0]
    assert 300 <= _used(lim, requests) <= 300 + LEASE_MAX
    assert 3000 <= _used(lim, tokens) <= 3000 + 10 * LEASE_MAX
    mesh.close()


def test_near_a_limit_every_call_asks_redis_and_the_limit_is_exact(redis_server):
    redis_server.flush()
    rpm = LEASE_ROOM * 2 - 1  # too little room for a lease of two calls
    mesh = _mesh(redis_server.url, rpm=rpm)
    lim, checks = _windows(mesh, rpm)
    sync = redis.Redis.from_url(redis_server.url)
    sync.config_resetstat()
    assert asyncio.run(_calls(lim, checks, rpm + 20, 1)) == rpm
    assert _trips(sync) >= rpm + 20  # (and a refusal reads its window's state for the 429's headers)
    mesh.close()


def test_two_workers_with_leases_never_pass_a_shared_limit(redis_server):
    redis_server.flush()
    rpm = 5000
    a, b = _mesh(redis_server.url, rpm=rpm), _mesh(redis_server.url, rpm=rpm)
    (la, ca), (lb, cb) = _windows(a, rpm), _windows(b, rpm)
    sync = redis.Redis.from_url(redis_server.url)
    sync.config_resetstat()

    async def both(rounds: int) -> int:  # 600 calls a round over both workers, 24 at a time
        got = 0
        for _ in range(rounds):
            got += sum(await asyncio.gather(*(_calls(lim, checks, 25, 1) for _ in range(12)
                                              for lim, checks in ((la, ca), (lb, cb)))))
        return got

    async def run() -> int:
        got = await both(7)  # 4,200 calls: the limit not reached yet
        assert got == 4200 and _trips(sync) < 4200 / 4  # leases were taken
        return got + await both(3)
    accepted = asyncio.run(run())
    assert rpm - 2 * LEASE_MAX <= accepted <= rpm, accepted  # never more; less only by what leases left unused
    assert _used(la, [c for c in ca if c.dim == "requests"][0]) == rpm
    a.close()
    b.close()


def test_leases_can_be_turned_off(redis_server):
    redis_server.flush()
    mesh = _mesh(redis_server.url, rpm=10 ** 6, lease=False)
    lim, checks = _windows(mesh, 10 ** 6)
    sync = redis.Redis.from_url(redis_server.url)
    sync.config_resetstat()
    asyncio.run(_calls(lim, checks, 50, 1))
    assert _trips(sync) == 50
    assert _used(lim, [c for c in checks if c.dim == "requests"][0]) == 50
    mesh.close()


def test_budgets_far_from_their_caps_are_not_read_again_for_a_moment(redis_server):
    redis_server.flush()
    mesh = Mesh({"connections": FAKE, "state": {"redis_url": redis_server.url},
                 "budgets": {"period": "day", "keys": {"k": 1.0}}, "prices": {CHAT: {"input": 100.0, "output": 100.0}}})
    llm = mesh.get_llm(CHAT)
    key = f"budget:key:k:{int(time.time() // 86400)}"
    sync = redis.Redis.from_url(redis_server.url)
    req = CompletionRequest(messages=[Message(role="user", content="hello there, how are you today")])

    async def run() -> None:
        with call_scope(key="k"):
            sync.config_resetstat()
            for _ in range(20):
                await mesh.acomplete(llm, req)  # ~14 tokens at 100/M: far from the cap
            assert sync.info("commandstats")["cmdstat_mget"]["calls"] < 20
            sync.set("mesh:" + key, "0.6")  # another worker spent past half the cap
            await asyncio.sleep(0.06)  # what was read is stale: read again, and from now on every time
            sync.config_resetstat()
            for _ in range(5):
                await mesh.acomplete(llm, req)
            assert sync.info("commandstats")["cmdstat_mget"]["calls"] == 5
            sync.set("mesh:" + key, "0.99995")
            with pytest.raises(BudgetExceeded):
                await mesh.acomplete(llm, req)
    asyncio.run(run())
    mesh.close()


def test_a_routes_calls_through_mesh_serve_take_leases_of_the_route_and_its_target(redis_server, monkeypatch):
    pytest.importorskip("uvicorn")
    from langchain_mesh.policies import limits

    monkeypatch.setattr(limits, "LEASE_TTL", 10.0)  # one request after another, however slow the machine
    # and the route's breakers read once: each re-read (every SHARED_REFRESH) leaves one call whose
    # first target is not known to be closed, whose target's windows then take two trips of their own
    from langchain_mesh.policies import breaker
    monkeypatch.setattr(breaker, "SHARED_REFRESH", 10.0)
    from test_route_limits_redis import A, B, RPM, TPM, config, settled, spent_at_a, used
    from test_server_harness import RunningServer

    from langchain_mesh.testing.openai import OpenAIServer

    redis_server.flush()
    a, b = OpenAIServer(flavor="openai").start(), OpenAIServer(flavor="openai").start()
    try:
        cfg = config(redis_server.url, a, b)
        cfg["state"]["lease"] = True
        mesh = Mesh(cfg)
        trips = []
        real = limiter_for(mesh)._atrip

        async def counted(*args, **kwargs):
            trips.append(args[6])  # n: how many calls' worth it asked for
            return await real(*args, **kwargs)
        limiter_for(mesh)._atrip = counted
        with RunningServer(mesh) as srv:
            tokens, cost = spent_at_a(srv, 30)
            # (the first call, before the route's breaker of its target is known, takes the target's
            # windows by its own layer: two more trips of one call's worth)
            assert len(trips) <= 8 and max(trips) >= 8, trips  # (asked: 1000 rpm grants at most 8 a trip)
            assert 30 <= used(mesh, "key", "k") <= 30 + LEASE_MAX
            assert 30 <= used(mesh, "llm", A) <= 30 + LEASE_MAX and used(mesh, "llm", B) == 0
            # estimates replaced by the provider's counts; leases' unused estimates stay counted
            assert settled(lambda: used(mesh, "key", "k", "tokens", TPM) >= tokens)
            # (approx, not ==: the spend is summed in batches, whose float rounding varies)
            assert settled(lambda: float(mesh.state_store().get("budget:key:k:%d" % int(time.time() // 86400)) or 0)
                           == pytest.approx(cost, rel=1e-9))
        assert RPM > 30 * 2
    finally:
        a.stop()
        b.stop()


def test_a_leased_target_the_route_did_not_call_gives_one_call_back(redis_server):
    redis_server.flush()
    mesh = _mesh(redis_server.url, rpm=10 ** 6)
    lim, checks = _windows(mesh, 10 ** 6)
    target = lim.order([_Check("requests", "llm", "t", lim.item("requests", 10 ** 6))])[0]

    async def run() -> None:
        pipe = lim.pipes.pipe()
        for _ in range(8):  # the lease grows: 1, 2, 4 ...
            stamp, taken, _values = await lim.aacquire_with_target(pipe, checks, 1, target, 0, [])
            assert taken
        before = _used(lim, target[0])
        lim.give_back_nowait(pipe, target, 0, stamp)  # by the stamp its lease's entries carry
        await asyncio.sleep(0.1)  # (not waited for: sent again whole when Redis lacks the script)
        assert _used(lim, target[0]) == before - 1
    asyncio.run(run())
    mesh.close()
