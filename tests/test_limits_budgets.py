"""Rate limits and budgets: in-process on library calls, and shared by two ``mesh serve`` processes
through a real Redis (``redis-server`` from the system packages, started on a free port).

The issue asks for "a minute of bursts" against 120 rpm; the window here is ``limits.period: 4``
(120 requests per 4 s) and the bursts last two windows, so the test takes seconds while checking the
same thing: across two processes, each window accepts its limit and no more."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import BudgetExceeded, ConfigError, RateLimitExceeded, StateUnavailableError
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.schema import CompletionRequest, Message
from langchain_mesh.testing.redis_server import RedisServer, redis_server_binary
from langchain_mesh.testing.wire import free_port

ROOT = Path(__file__).resolve().parents[1]
CHAT = "scripted:fake:chat"
FAKE = {"fake": {"type": "scripted", "models": [{"id": "chat"}]}}
needs_redis = pytest.mark.skipif(redis_server_binary() is None,
                                 reason="redis-server is not installed (apt-get install -y redis-server; CI has it)")


def _req(text: str = "hello there, how are you today") -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)])



# ---- in-process ------------------------------------------------------------------------------------


def test_rpm_per_key_refuses_with_openai_headers():
    mesh = Mesh({"connections": FAKE, "limits": {"period": 30, "keys": {"alice": {"rpm": 3}}}})
    llm = mesh.get_llm(CHAT)
    with call_scope(key="alice"):
        for _ in range(3):
            assert mesh.complete(llm, _req()).text
        with pytest.raises(RateLimitExceeded) as e:
            mesh.complete(llm, _req())
    headers = dict(e.value.headers)
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert 25 < e.value.retry_after <= 30
    assert "key 'alice'" in str(e.value)
    with call_scope(key="bob"):  # another key has no limit
        assert mesh.complete(llm, _req()).text
    assert len(mesh.connection("fake").requests) == 4  # the refused call was never sent
    mesh.close()


def test_default_user_team_llm_and_connection_limits_apply():
    mesh = Mesh({"connections": FAKE, "limits": {
        "period": 30, "default": {"rpm": 100}, "teams": {"search": {"rpm": 2}},
        "llms": {CHAT: {"rpm": 5}}, "connections": {"fake": {"rpm": 4}}}})
    llm = mesh.get_llm(CHAT)
    with call_scope(key="a", team="search"):
        mesh.complete(llm, _req())
        mesh.complete(llm, _req())
        with pytest.raises(RateLimitExceeded, match="team 'search'"):
            mesh.complete(llm, _req())
    with call_scope(key="b"):
        mesh.complete(llm, _req())
        mesh.complete(llm, _req())
        with pytest.raises(RateLimitExceeded, match="connection 'fake'"):
            mesh.complete(llm, _req())  # 4 sent on the connection: its limit
    # a route's target call (scope.extra["route"]) counts only against the target's own limits
    with call_scope(key="a", team="search", extra={"route": "r"}):
        with pytest.raises(RateLimitExceeded, match="connection 'fake'"):
            mesh.complete(llm, _req())
    mesh.close()


def test_a_refusal_by_one_limit_takes_nothing_from_the_others():
    mesh = Mesh({"connections": FAKE, "limits": {"period": 30, "keys": {"k": {"rpm": 100}},
                                                  "users": {"u": {"rpm": 1}}}})
    llm = mesh.get_llm(CHAT)
    with call_scope(key="k", user="u"):
        mesh.complete(llm, _req())
        for _ in range(5):
            with pytest.raises(RateLimitExceeded):
                mesh.complete(llm, _req())
    lim = mesh._limiter
    checks = [c for c in mesh._chains[CHAT][0].checks(type("C", (), {"scope": type("S", (), {
        "key": "k", "user": "u", "team": None, "extra": {}})()})()) if c.kind == "key"]
    assert lim.requests.get_window_stats(checks[0].item, *checks[0].ids).remaining == 99
    mesh.close()


def test_in_memory_windows_are_taken_all_or_nothing():
    from langchain_mesh.policies.windows import LocalWindows

    w = LocalWindows()
    entries = (("tok", 100, 2), ("req", 5, 1), ("mov", 2, 0))  # tokens counter, requests counter, moving window
    assert w.hit_all(entries, 30, 40) and w.hit_all(entries, 30, 40)
    assert (w.get("tok"), w.get("req"), w.get_moving_window("mov", 2, 30)[1]) == (80, 2, 2)
    assert not w.hit_all(entries, 30, 10)  # the moving window is full: nothing else is taken either
    assert not w.hit_all(entries[:2], 30, 30)  # 80 + 30 tokens > 100
    assert (w.get("tok"), w.get("req"), w.get_moving_window("mov", 2, 30)[1]) == (80, 2, 2)
    assert w.hit_all(entries[:2], 30, 20) and (w.get("tok"), w.get("req")) == (100, 3)


def test_tpm_estimates_before_and_reconciles_with_the_usage_after():
    mesh = Mesh({"connections": FAKE, "limits": {"period": 30, "keys": {"k": {"tpm": 60}}}})
    llm = mesh.get_llm(CHAT)
    sent = 0
    with call_scope(key="k"):
        while True:
            try:
                resp = mesh.complete(llm, _req())
            except RateLimitExceeded as e:
                assert dict(e.headers)["x-ratelimit-limit-tokens"] == "60"
                break
            sent += resp.usage.input_tokens + resp.usage.output_tokens
    layer = mesh._chains[CHAT][0]
    check = layer.checks(type("C", (), {"scope": type("S", (), {"key": "k", "user": None, "team": None,
                                                                 "extra": {}})()})())[0]
    used = 60 - mesh._limiter.tokens.get_window_stats(check.item, *check.ids).remaining
    assert used == sent  # the window holds the provider's counts, not the estimates
    per_call = sent // len(mesh.connection("fake").requests)
    assert sent <= 60 and sent + per_call > 60 - 8  # the next call (estimate ~7) would not fit
    mesh.close()


async def test_async_and_stream_paths_are_limited():
    mesh = Mesh({"connections": FAKE, "limits": {"period": 30, "keys": {"k": {"rpm": 2}}}})
    llm = mesh.get_llm(CHAT)
    with call_scope(key="k"):
        await mesh.acomplete(llm, _req())
        events = [ev async for ev in mesh.astream(llm, _req())]
        assert events[-1].usage.output_tokens > 0
        with pytest.raises(RateLimitExceeded):
            await mesh.acomplete(llm, _req())
        with pytest.raises(RateLimitExceeded):
            list(mesh.stream(llm, _req()))
    mesh.close()


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window"])
async def test_the_pass_through_in_memory_is_limited_with_every_strategy(strategy, openai_server):
    """The gateway's byte pass-through (Mesh.aforward) counts requests and reconciles tokens in memory
    with each strategy: moving and fixed windows take every window in one storage call, a sliding
    window (limits' own MemoryStorage) takes limits' path; a refusal names its window and sends nothing."""
    mesh = Mesh({"connections": {"up": {"type": "openai_compatible", "base_url": openai_server.base_url,
                                        "api_key": "test-key", "max_retries": 0, "models": [{"id": "m"}]}},
                 "limits": {"period": 30, "strategy": strategy, "keys": {"k": {"rpm": 2, "tpm": 10 ** 6}}}})
    llm = mesh.get_llm("openai_compatible:up:m")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()
    used = 0
    with call_scope(key="k"):
        for _ in range(2):
            content, end = await mesh.aforward(llm, "/chat/completions", body)
            usage = json.loads(content)["usage"]
            end.end(usage, True)
            used += usage["prompt_tokens"] + usage["completion_tokens"]
        with pytest.raises(RateLimitExceeded, match="key 'k'") as e:
            await mesh.aforward(llm, "/chat/completions", body)
    assert len(openai_server.requests) == 2  # the refused call was never sent
    headers = dict(e.value.headers)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["x-ratelimit-remaining-tokens"]) == 10 ** 6 - used  # the estimates reconciled
    mesh.close()


def test_budget_refuses_before_sending_once_spent():
    mesh = Mesh({"connections": FAKE, "budgets": {"period": "day", "keys": {"k": 0.0005}},
                 "prices": {CHAT: {"input": 2.0, "output": 8.0}}})
    llm = mesh.get_llm(CHAT)
    spent = 0.0
    with call_scope(key="k"):
        with pytest.raises(BudgetExceeded) as e:
            for _ in range(100):
                u = mesh.complete(llm, _req()).usage
                spent += (u.input_tokens * 2.0 + u.output_tokens * 8.0) / 1e6
    assert 0 < spent <= 0.0005 + 0.0001 and e.value.budget == "key:k" and e.value.currency == "USD"
    assert e.value.spent == pytest.approx(spent) and 0 < e.value.retry_after <= 86400
    assert len(mesh.connection("fake").requests) == round(spent / ((7 * 2.0 + 7 * 8.0) / 1e6))
    with call_scope(key="other"):  # no budget of its own
        mesh.complete(llm, _req())
    mesh.close()


def test_budget_on_an_llm_without_price_is_refused_or_allowed_as_configured():
    mesh = Mesh({"connections": FAKE, "budgets": {"teams": {"t": 1.0}}})
    with call_scope(team="t"), pytest.raises(BudgetExceeded, match="no known price"):
        mesh.complete(mesh.get_llm(CHAT), _req())
    assert mesh.connection("fake").requests == []
    mesh.close()
    mesh = Mesh({"connections": FAKE, "budgets": {"teams": {"t": 1.0}, "unknown_price": "allow"}})
    with call_scope(team="t"):
        assert mesh.complete(mesh.get_llm(CHAT), _req()).text
    mesh.close()


def test_unknown_policy_keys_are_errors():
    with pytest.raises(ConfigError, match="limits.keys.k.rpn"):
        Mesh({"connections": FAKE, "limits": {"keys": {"k": {"rpn": 3}}}})
    with pytest.raises(ConfigError, match="state.on_failur"):
        Mesh({"connections": FAKE, "state": {"redis_url": "redis://x", "on_failur": "open"}})


# ---- Redis: shared, and what happens when it goes ------------------------------------------------------


@needs_redis
def test_two_meshes_share_limits_and_budgets_through_redis(redis_server):
    redis_server.flush()
    cfg = {"connections": FAKE, "state": {"redis_url": redis_server.url},
           "limits": {"period": 30, "keys": {"k": {"rpm": 5}}},
           "budgets": {"keys": {"k": 1.0}}, "prices": {CHAT: {"input": 1000.0, "output": 0.0}}}
    a, b = Mesh(cfg), Mesh(cfg)
    with call_scope(key="k"):
        for m in (a, b, a, b, a):
            m.complete(m.get_llm(CHAT), _req())
        with pytest.raises(RateLimitExceeded):
            b.complete(b.get_llm(CHAT), _req())
    assert float(b.state_store().get(f"budget:key:k:{int(time.time() // (30 * 86400))}")) == pytest.approx(
        5 * 7 * 1000.0 / 1e6)
    a.close()
    b.close()


@needs_redis
def test_spend_this_process_has_not_sent_yet_counts_in_its_own_budget_checks(redis_server, monkeypatch):
    from langchain_mesh.policies import redis_pipe

    monkeypatch.setattr(redis_pipe, "SUM_GAP", 30.0)  # held back for the whole test, unless flushed
    redis_server.flush()
    mesh = Mesh({"connections": FAKE, "state": {"redis_url": redis_server.url},
                 "budgets": {"period": "day", "keys": {"k": 1.0}}, "prices": {CHAT: {"input": 2000.0, "output": 0.0}}})
    llm = mesh.get_llm(CHAT)
    key = f"budget:key:k:{int(time.time() // 86400)}"

    async def run() -> None:
        store = mesh.state_store()
        assert store.incr_nowait(key, 0.99, ttl=2 * 86400)  # a pass-through call's spend: summed, not sent yet
        with call_scope(key="k"), pytest.raises(BudgetExceeded) as e:
            await mesh.acomplete(llm, _req())  # ~7 tokens at 2000/M: 0.014 more than the 0.01 left
        assert e.value.spent == pytest.approx(0.99)
        assert store.get(key) is None  # Redis has not been told
        from langchain_mesh.policies.state import aflush

        await aflush(mesh)  # mesh serve's shutdown
        assert float(store.get(key)) == pytest.approx(0.99)
    asyncio.run(run())
    assert mesh.connection("fake").requests == []
    mesh.close()


@needs_redis
@pytest.mark.parametrize("on_failure", ["open", "closed"])
def test_redis_killed_mid_run_fails_as_configured(on_failure):
    with RedisServer() as redis:
        mesh = Mesh({"connections": FAKE, "state": {"redis_url": redis.url, "on_failure": on_failure, "timeout": 0.3},
                     "limits": {"period": 30, "keys": {"k": {"rpm": 100, "tpm": 10000}}},
                     "budgets": {"keys": {"k": 5.0}, "unknown_price": "allow"}})
        llm = mesh.get_llm(CHAT)
        from langchain_mesh.policies.state import health

        assert health(mesh) == {"backend": "redis", "ok": True, "shared": True, "on_failure": on_failure}
        with call_scope(key="k"):
            assert mesh.complete(llm, _req()).text
            redis.kill()
            assert health(mesh)["ok"] is False
            if on_failure == "open":
                assert mesh.complete(llm, _req()).text  # passes, unchecked
                assert asyncio.run(mesh.acomplete(llm, _req())).text
                assert len(mesh.connection("fake").requests) == 3
            else:
                with pytest.raises(StateUnavailableError, match="on_failure: closed"):
                    mesh.complete(llm, _req())
                with pytest.raises(StateUnavailableError):
                    asyncio.run(mesh.acomplete(llm, _req()))
                assert len(mesh.connection("fake").requests) == 1
        mesh.close()


# ---- two mesh serve processes, one Redis -------------------------------------------------------------

PERIOD = 4


def _start_server(config: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "langchain_mesh", "serve", "--config", str(config), "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mesh serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mesh serve did not start")


def _post(port: int, key: str, text: str = "hello there, how are you today") -> tuple[int, dict, dict]:
    body = json.dumps({"model": CHAT, "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={
        "content-type": "application/json", "authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture(scope="module")
def two_servers(redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-servers")
    config = tmp / "mesh.json"
    config.write_text(json.dumps({
        "connections": FAKE,
        "server": {"api_keys": [{"name": "rpm-key", "key": "sk-rpm-0123456789"},
                                {"name": "tpm-key", "key": "sk-tpm-0123456789"},
                                {"name": "budget-key", "key": "sk-budget-0123456789", "team": "money"}]},
        "state": {"redis_url": redis_server.url},
        "limits": {"period": PERIOD, "keys": {"rpm-key": {"rpm": 120}, "tpm-key": {"tpm": 300}}},
        "budgets": {"period": "day", "teams": {"money": 0.01}},
        "prices": {CHAT: {"input": 100.0, "output": 100.0}},
        "usage": {"path": str(tmp / "usage.db"), "flush_interval": 0.2}}))  # JSON is YAML
    ports = [free_port(), free_port()]
    procs = [_start_server(config, p) for p in ports]
    try:
        for p, proc in zip(ports, procs):
            _wait_up(p, proc)
        yield ports, tmp
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _bursts(ports: list[int], key: str, seconds: float, burst: int = 16, every: float = 0.25) -> list[tuple]:
    """Bursts of ``burst`` concurrent requests, alternating between the two servers, every ``every`` s."""
    from concurrent.futures import ThreadPoolExecutor

    out: list[tuple] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def one(i: int) -> None:
        got = _post(ports[i % 2], key)
        with lock:
            out.append((time.monotonic() - t0,) + got)
    with ThreadPoolExecutor(burst) as pool:
        n = 0
        while time.monotonic() - t0 < seconds:
            list(pool.map(one, range(n, n + burst)))
            n += burst
            time.sleep(max(0.0, every - (time.monotonic() - t0) % every))
    return out


@needs_redis
def test_two_server_processes_share_a_120_rpm_limit(two_servers):
    ports, _tmp = two_servers
    results = _bursts(ports, "sk-rpm-0123456789", seconds=2 * PERIOD - 0.5)
    ok = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 429]
    assert len(ok) + len(refused) == len(results)  # nothing else
    # two windows of 120 each, whichever process served them
    assert abs(len(ok) - 240) <= 240 * 0.02, (len(ok), len(results))
    assert {r[0] < PERIOD for r in ok} == {True, False}  # both windows accepted calls
    assert len(results) > 400  # the limit, not the load, decided
    status, headers, body = refused[-1][1:]
    h = {k.lower(): v for k, v in headers.items()}
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "requests"
    assert h["x-ratelimit-limit-requests"] == "120" and h["x-ratelimit-remaining-requests"] == "0"
    assert int(h["retry-after"]) <= PERIOD and h["x-ratelimit-reset-requests"].endswith("s")


@needs_redis
def test_two_server_processes_share_a_token_limit(two_servers):
    ports, _tmp = two_servers
    results = _bursts(ports, "sk-tpm-0123456789", seconds=PERIOD - 1, burst=4)
    ok = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 429]
    used = sum(r[3]["usage"]["total_tokens"] for r in ok)
    per_call = ok[0][3]["usage"]["total_tokens"]
    # in one window: at most the limit, plus what calls in flight used beyond their estimates
    assert 300 - 2 * per_call <= used <= 300 + 4 * per_call, (used, per_call)
    assert refused and refused[-1][3]["error"]["type"] == "tokens"
    assert {k.lower(): v for k, v in refused[-1][2].items()}["x-ratelimit-limit-tokens"] == "300"


@needs_redis
def test_two_server_processes_share_a_budget(two_servers):
    ports, tmp = two_servers
    results = _bursts(ports, "sk-budget-0123456789", seconds=1.5, burst=4)
    ok = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 429]
    spent = sum(r[3]["usage"]["total_tokens"] * 100.0 / 1e6 for r in ok)
    per_call = ok[0][3]["usage"]["total_tokens"] * 100.0 / 1e6
    assert 0.01 - 2 * per_call <= spent <= 0.01 + 4 * per_call, (spent, per_call)
    assert refused and all(r[3]["error"]["code"] == "insufficient_quota" for r in refused)
    assert "team 'money'" in refused[-1][3]["error"]["message"]
    # the ledger of both processes (one SQLite file) has every call, refusals included
    time.sleep(0.6)
    from langchain_mesh.usage.report import totals

    rows = {r["key"]: r for r in totals(str(tmp / "usage.db"), by=("key",))}
    assert rows["budget-key"]["requests"] == len(results)
    assert rows["budget-key"]["refused"] == len(refused)
    assert rows["budget-key"]["cost"] == pytest.approx(spent)


@needs_redis
@pytest.mark.parametrize("on_failure", ["open", "closed"])
def test_gateway_health_and_answers_when_redis_dies(on_failure):
    pytest.importorskip("uvicorn")
    import httpx
    from test_server_harness import RunningServer

    with RedisServer() as redis:
        mesh = Mesh({"connections": FAKE, "state": {"redis_url": redis.url, "on_failure": on_failure, "timeout": 0.3},
                     "server": {"api_keys": [{"name": "k", "key": "sk-k-0123456789"}]},
                     "limits": {"period": 30, "keys": {"k": {"rpm": 100}}}})
        head = {"authorization": "Bearer sk-k-0123456789"}
        body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
        with RunningServer(mesh) as srv:
            h = httpx.get(srv.url + "/health", timeout=10)
            assert h.status_code == 200 and h.json() == {"status": "ok", "state": {
                "backend": "redis", "ok": True, "shared": True, "on_failure": on_failure}}
            assert httpx.post(srv.url + "/v1/chat/completions", json=body, headers=head, timeout=10).status_code == 200
            redis.kill()
            h = httpx.get(srv.url + "/health", timeout=10)
            r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=head, timeout=10)
            if on_failure == "open":
                assert h.status_code == 200 and h.json()["status"] == "degraded"
                assert r.status_code == 200  # let through, unchecked
            else:
                assert h.status_code == 503 and h.json()["status"] == "unavailable"
                assert r.status_code == 503 and r.json()["error"]["code"] == "state_store_unavailable"
                assert "state.on_failure" in r.json()["error"]["message"]


def test_a_pass_through_calls_spend_is_priced_from_its_wire_usage_as_from_a_usage():
    """The pass-through hands the budgets the OpenAI wire ``usage`` dict; it is priced as read, cached
    input tokens at their own rate, exactly as the same usage made into a Usage."""
    from langchain_mesh.policies.budgets import BudgetsLayer
    from langchain_mesh.policies.usage_of import usage_of_raw
    from langchain_mesh.usage.prices import Price

    mesh = Mesh({"connections": FAKE, "budgets": {"keys": {"k": 1.0}}, "prices": {CHAT: {"input": 2.0, "output": 8.0}}})
    layer = BudgetsLayer(mesh, mesh.get_llm(CHAT))
    price = Price(2.0, 8.0, cached_input=0.5)
    for wire in ({"prompt_tokens": 1000, "completion_tokens": 10},
                 {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 600}},
                 {"prompt_tokens": 1000, "completion_tokens": None, "prompt_tokens_details": None}):
        assert layer._cost(price, wire) == layer._cost(price, usage_of_raw(wire))
    assert layer._cost(price, {"prompt_tokens": 1000, "completion_tokens": 10,
                               "prompt_tokens_details": {"cached_tokens": 600}}) == (400 * 2.0 + 600 * 0.5 + 80) / 1e6
    mesh.close()


def test_a_gateway_pass_through_is_refused_by_an_in_memory_budget_once_its_spend_arrives():
    """mesh serve's pass-through with budgets in this process (no Redis): each answer's wire usage is
    added to the key's spend (BudgetsLayer's forward hooks) and a call that would pass the cap is
    refused before it is sent."""
    pytest.importorskip("uvicorn")
    import httpx
    from test_server_harness import RunningServer

    from langchain_mesh.testing.openai import OpenAIServer

    up = OpenAIServer(flavor="openai").start()
    try:
        llm = "openai_compatible:up:m"
        mesh = Mesh({"connections": {"up": {"type": "openai_compatible", "base_url": up.base_url, "api_key": "test-key",
                                            "max_retries": 0, "models": [{"id": "m"}]}},
                     "server": {"api_keys": [{"name": "k", "key": "sk-k-0123456789"}]},
                     "prices": {llm: {"input": 1000.0, "output": 1000.0}},  # per million tokens
                     "budgets": {"period": "day", "keys": {"k": 0.05}}})
        head = {"authorization": "Bearer sk-k-0123456789"}
        body = {"model": llm, "messages": [{"role": "user", "content": "hello there"}]}
        with RunningServer(mesh) as srv:
            spent, codes = 0.0, []
            for _ in range(20):
                r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=head, timeout=10)
                codes.append(r.status_code)
                if r.status_code != 200:
                    break
                spent += r.json()["usage"]["total_tokens"] * 1000.0 / 1e6
            seen = len(up.requests)
            assert codes[-1] == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
            assert len(up.requests) == seen  # refused before it was sent
            assert 0.05 - 0.02 < spent <= 0.05 + 0.02 and codes.count(200) >= 2  # what each answer cost, added
            day = int(time.time() // 86400)
            assert float(mesh.state_store().get(f"budget:key:k:{day}")) == pytest.approx(spent)
    finally:
        up.stop()
