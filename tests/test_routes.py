"""Routes (``route:<name>``): selection, fallbacks per trigger, streams, breakers, retries, meta.

In-process tests use the scripted connection (errors scripted per call); the resilience test runs two
real OpenAI-wire test servers with fault injection (langchain_mesh.testing.faults)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ProviderConnectionError,
    RateLimitError,
    RouteUnavailableError,
    ServerError,
    UnknownLLMError,
)
from langchain_mesh.ids import parse_llm_id
from langchain_mesh.policies.breaker import CLOSED, OPEN, PROBE, Breaker
from langchain_mesh.policies.retry import RetryBudget, RetryPolicy
from langchain_mesh.policies.routes import pick_weighted, sticky_point, trigger_of
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.policies.state import MemoryStore, store_for
from langchain_mesh.schema import CompletionRequest, StreamChunk, StreamFooter

A, B, C = "scripted:a:chat", "scripted:b:chat", "scripted:c:chat"


def mesh_with(**route) -> Mesh:
    route.setdefault("targets", [A, B])
    return Mesh({"connections": {n: {"type": "scripted"} for n in "abc"}, "routes": {"r": route}})


def req(text: str = "hi") -> CompletionRequest:
    return CompletionRequest.from_prompt(text)


# ---- ids, config, listing ------------------------------------------------------------------------------


def test_route_ids_parse_and_format():
    assert parse_llm_id("route:chat") == ("route", "chat", "")
    assert str(parse_llm_id("route:chat")) == "route:chat"
    assert parse_llm_id("openai:x:gpt-4o").model == "gpt-4o"


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"routes\.r\.targets\.0\.llm"):
        Mesh({"connections": {"a": {"type": "scripted"}}, "routes": {"r": {"targets": ["scripted:zz:chat"]}}})
    with pytest.raises(ConfigError, match="sum to 100"):
        mesh_with(targets=[{"llm": A, "traffic_percentage": 50}, {"llm": B, "traffic_percentage": 40}])
    with pytest.raises(ConfigError, match="fallback_on"):
        mesh_with(fallback_on=["teapot"])
    with pytest.raises(ConfigError, match="strategie"):
        mesh_with(strategie="weighted")
    with pytest.raises(ConfigError, match="is a route"):
        mesh_with(targets=["route:other"])


def test_listed_with_common_purposes_and_usable_from_builders_and_langchain():
    mesh = mesh_with()
    item = next(i for i in mesh.list_llms() if i.id == "route:r")
    assert item.purposes == ["GENERIC_COMPLETION"] and item.type == "route"
    assert "route:r" in [i.id for i in mesh.list_llms("GENERIC_COMPLETION")]
    assert "route:r" not in [i.id for i in mesh.list_llms("TEXT_EMBEDDING_EXTRACTION")]
    mesh.connection("a").script(text="from a")
    resp = mesh.get_llm("route:r").new_completion().with_message("hi").execute()
    assert resp.text == "from a"
    chat = mesh.get_llm("route:r").as_langchain_chat_model()
    mesh.connection("a").script(error=ServerError("down", status=503))
    mesh.connection("b").script(text="from b")
    assert chat.invoke("hi").content == "from b"
    with pytest.raises(UnknownLLMError, match="no route 'nope'"):
        mesh.get_llm("route:nope")


# ---- selection ----------------------------------------------------------------------------------------


def test_weighted_selection_within_two_percent_of_the_weights():
    import random

    rng = random.Random(5)
    weights = [70.0, 20.0, 10.0]
    cumulative = [70.0, 90.0, 100.0]
    counts = Counter(pick_weighted(cumulative, rng.random()) for _ in range(10_000))
    for i, w in enumerate(weights):
        assert abs(counts[i] / 10_000 - w / 100) <= 0.02, counts


def test_weighted_route_splits_traffic_and_sticky_keys_stay():
    mesh = mesh_with(strategy="weighted", fallbacks=False,
                     targets=[{"llm": A, "traffic_percentage": 75}, {"llm": B, "traffic_percentage": 25}])
    route = mesh.get_llm("route:r").route
    picks = Counter(route.order()[0] for _ in range(10_000))
    assert abs(picks[0] / 10_000 - 0.75) <= 0.02 and route.order()[1:] == []
    # a sticky key always lands on the same target; many keys still split by the weights
    for key in ("user-1", "user-2", "user-3"):
        first = route.order(key)[0]
        assert all(route.order(key)[0] == first for _ in range(50))
    keys = Counter(route.order(f"user-{i}")[0] for i in range(10_000))
    assert abs(keys[0] / 10_000 - 0.75) <= 0.02
    assert sticky_point("k", "r") == sticky_point("k", "r") != sticky_point("k", "other")
    # and through the scope, end to end
    with call_scope(sticky_key="user-9"):
        ids = {mesh.complete(mesh.get_llm("route:r"), req()).meta.llm_id for _ in range(20)}
    assert len(ids) == 1


def test_least_busy_and_lowest_latency_order():
    mesh = mesh_with(strategy="least_busy")
    route = mesh.get_llm("route:r").route
    route.inflight[:] = [3, 1]
    assert route.order() == [1, 0]
    mesh = mesh_with(strategy="lowest_latency")
    route = mesh.get_llm("route:r").route
    route.latency[:] = [0.5, 0.1]
    assert route.order() == [1, 0]
    route._observe(1, 2.0)  # EWMA: one slow answer moves it, not all the way
    assert route.latency[1] == pytest.approx(0.8 * 0.1 + 0.2 * 2.0)
    assert route.order() == [1, 0]


# ---- fallbacks per trigger ----------------------------------------------------------------------------


@pytest.mark.parametrize("error, trigger", [
    (RateLimitError("slow", status=429, retry_after=1), "rate_limit"),
    (ServerError("boom", status=500), "server_error"),
    (ServerError("unavailable", status=503), "server_error"),
    (ProviderConnectionError("refused"), "connection"),
    (BadRequestError("x", status=400, provider_message="This model's maximum context length is 8192 tokens"),
     "context_window"),
])
def test_each_trigger_falls_back_and_meta_says_why(error, trigger):
    assert trigger_of(error) == trigger
    mesh = mesh_with()
    mesh.connection("a").script(error=error)
    mesh.connection("b").script(text="from b")
    resp = mesh.complete(mesh.get_llm("route:r"), req())
    assert resp.text == "from b"
    assert resp.meta.llm_id == B
    assert [a.llm_id for a in resp.meta.attempts] == [A, B]
    assert type(error).__name__ in resp.meta.attempts[0].error and resp.meta.attempts[1].error is None


def test_a_trigger_not_configured_is_raised():
    mesh = mesh_with(fallback_on=["rate_limit"])
    mesh.connection("a").script(error=ServerError("boom", status=500))
    with pytest.raises(ServerError) as info:
        mesh.complete(mesh.get_llm("route:r"), req())
    assert [a.llm_id for a in info.value.route_attempts] == [A]
    assert len(mesh.connection("b").requests) == 0
    # a bad request is the caller's: never a fallback unless `any`
    mesh = mesh_with()
    mesh.connection("a").script(error=AuthenticationError("no", status=401))
    with pytest.raises(AuthenticationError):
        mesh.complete(mesh.get_llm("route:r"), req())
    mesh = mesh_with(fallback_on=["any"])
    mesh.connection("a").script(error=AuthenticationError("no", status=401))
    assert mesh.complete(mesh.get_llm("route:r"), req("ok")).meta.llm_id == B


def test_content_filter_falls_back_only_when_configured():
    mesh = mesh_with(fallback_on=["retryable", "content_filter"])
    mesh.connection("a").script(text="", finish_reason="content_filter")
    mesh.connection("b").script(text="fine")
    resp = mesh.complete(mesh.get_llm("route:r"), req())
    assert resp.text == "fine" and resp.meta.attempts[0].error == "content_filter"
    mesh = mesh_with()
    mesh.connection("a").script(text="", finish_reason="content_filter")
    assert mesh.complete(mesh.get_llm("route:r"), req()).finish_reason == "content_filter"
    # every target refuses: the last refusal is the answer
    mesh = mesh_with(fallback_on=["content_filter"])
    for n in "ab":
        mesh.connection(n).script(text="", finish_reason="content_filter")
    resp = mesh.complete(mesh.get_llm("route:r"), req())
    assert resp.finish_reason == "content_filter" and len(resp.meta.attempts) == 2


def test_streams_fall_back_before_the_first_event_only():
    mesh = mesh_with()
    llm = mesh.get_llm("route:r")
    mesh.connection("a").script(error=RateLimitError("slow", status=429))
    mesh.connection("b").script(text="one two three")
    events = list(mesh.stream(llm, req()))
    assert "".join(e.text or "" for e in events if isinstance(e, StreamChunk)) == "one two three"
    assert events[-1].meta.llm_id == B
    # cut after the first chunk reached the caller: the error ends the stream, no second model
    mesh.connection("a").script(text="alpha beta gamma", cut_after=1)
    got = []
    with pytest.raises(Exception, match="cut"):
        for ev in mesh.stream(llm, req()):
            got.append(ev)
    assert [e.text for e in got] == ["alpha "]
    assert len(mesh.connection("b").requests) == 1  # only the first stream's fallback


def test_async_stream_and_call_fall_back():
    mesh = mesh_with()
    llm = mesh.get_llm("route:r")

    async def go():
        mesh.connection("a").script(error=ServerError("x", status=502))
        resp = await mesh.acomplete(llm, req("async"))
        mesh.connection("a").script(error=ServerError("x", status=502))
        events = [ev async for ev in mesh.astream(llm, req("streamed"))]
        return resp, events

    resp, events = asyncio.run(go())
    assert resp.meta.llm_id == B and resp.text == "async"
    assert isinstance(events[-1], StreamFooter) and events[-1].meta.llm_id == B


def test_embeddings_through_a_route():
    mesh = Mesh({"connections": {"a": {"type": "scripted"}, "b": {"type": "scripted"}},
                 "routes": {"e": {"targets": ["scripted:a:embed", "scripted:b:embed"]}}})
    resp = mesh.get_llm("route:e").new_embeddings().add_text("hello").execute()
    assert len(resp.get_embeddings()) == 1


# ---- retries and deadline -----------------------------------------------------------------------------


def test_route_retries_passes_with_retry_after_and_deadline():
    mesh = mesh_with(retry={"max_retries": 1, "target_retries": 0, "base": 0.01, "cap": 0.02})
    for n in "ab":
        mesh.connection(n).script(error=RateLimitError("slow", status=429, retry_after=0.01))
    resp = mesh.complete(mesh.get_llm("route:r"), req("second pass"))
    assert resp.text == "second pass" and len(resp.meta.attempts) == 3
    # a Retry-After beyond the cap is not waited: the error comes back at once
    mesh = mesh_with(retry={"max_retries": 3, "target_retries": 0, "max_retry_after": 1})
    for n in "ab":
        mesh.connection(n).script(error=RateLimitError("slow", status=429, retry_after=30))
    started = time.monotonic()
    with pytest.raises(RateLimitError):
        mesh.complete(mesh.get_llm("route:r"), req())
    assert time.monotonic() - started < 1
    # the deadline bounds the whole chain: no wait past it
    mesh = mesh_with(timeout=0.2, retry={"max_retries": 5, "target_retries": 0, "base": 0.5, "cap": 0.5})
    for _ in range(6):
        for n in "ab":
            mesh.connection(n).script(error=ServerError("x", status=500, retry_after=0.15))
    started = time.monotonic()
    with pytest.raises(ServerError):
        mesh.complete(mesh.get_llm("route:r"), req())
    assert time.monotonic() - started < 0.2


def test_full_jitter_and_budget():
    policy = RetryPolicy(base=1.0, cap=4.0)
    waits = [policy.delay(3, ServerError("x")) for _ in range(2000)]
    assert 0 <= min(waits) < 0.2 and 3.8 < max(waits) <= 4.0  # uniform over [0, min(cap, base*2^n)]
    assert RetryPolicy(max_retry_after=5).delay(0, RateLimitError("x", retry_after=9)) is None
    assert RetryPolicy(max_retry_after=5).delay(0, RateLimitError("x", retry_after=2)) == 2
    now = [100.0]
    budget = RetryBudget(MemoryStore(), "k", ratio=0.1, min_retries=1, window=10, clock=lambda: now[0])
    for _ in range(20):
        budget.record_call()
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]  # 1 + 0.1 * 20
    now[0] += 10  # the next window
    assert budget.try_retry() is True


def test_connection_retry_config_is_used():
    mesh = Mesh({"connections": {"a": {"type": "scripted", "max_retries": 2,
                                       "retry": {"base": 0.001, "cap": 0.001,
                                                 "budget": {"ratio": 0.0, "min_retries": 1}}}}})
    conn = mesh.connection("a")
    llm = mesh.get_llm(A)
    conn.script(error=ServerError("x", status=500)).script(error=ServerError("x", status=500)).script(text="ok")
    # the budget allows one retry in the window: the second failure is returned
    with pytest.raises(ServerError):
        mesh.complete(llm, req())
    with pytest.raises(ConfigError, match="retry.bsae"):
        Mesh({"connections": {"a": {"type": "scripted", "retry": {"bsae": 1}}}})


# ---- circuit breaker ------------------------------------------------------------------------------------


def test_breaker_opens_skips_probes_and_recovers():
    now = [1000.0]
    b = Breaker(MemoryStore(), "t", failures=3, window=10, cooldown=30, clock=lambda: now[0])
    for _ in range(2):
        b.failure(b.admit())
    assert b.admit() == CLOSED
    b.failure(CLOSED)
    assert b.admit() == OPEN and b.state() == OPEN
    now[0] += 31
    assert b.admit() == PROBE and b.admit() == OPEN  # one probe at a time
    b.failure(PROBE)  # the probe failed: another cooldown
    assert b.admit() == OPEN
    now[0] += 31
    assert b.admit() == PROBE
    b.success(PROBE)
    assert b.admit() == CLOSED and b.state() == CLOSED


def test_route_skips_an_open_target_and_says_so():
    mesh = mesh_with(breaker={"failures": 2, "window": 60, "cooldown": 60})
    llm = mesh.get_llm("route:r")
    for _ in range(2):
        mesh.connection("a").script(error=ServerError("x", status=500))
        mesh.complete(llm, req())
    calls_a = len(mesh.connection("a").requests)
    resp = mesh.complete(llm, req())
    assert len(mesh.connection("a").requests) == calls_a  # skipped
    assert resp.meta.attempts[0].error == "skipped: circuit breaker open" and resp.meta.llm_id == B
    assert mesh.get_llm("route:r").route.breakers[0].store is store_for(mesh)


def test_all_open_is_a_503_with_retry_after():
    mesh = mesh_with(targets=[A], breaker={"failures": 1, "cooldown": 45})
    llm = mesh.get_llm("route:r")
    mesh.connection("a").script(error=ServerError("x", status=500))
    with pytest.raises(ServerError):
        mesh.complete(llm, req())
    with pytest.raises(RouteUnavailableError) as info:
        mesh.complete(llm, req())
    assert info.value.status == 503 and info.value.retry_after == 45


# ---- the scope the targets see ---------------------------------------------------------------------------


def test_targets_run_under_the_route_scope():
    from langchain_mesh.policies.scope import current_scope

    seen = []
    mesh = mesh_with()
    conn = mesh.connection("a")
    original = conn.complete

    def spy(model, request):
        seen.append(current_scope().extra.get("route"))
        return original(model, request)

    conn.complete = spy
    mesh.complete(mesh.get_llm("route:r"), req())
    assert seen == ["r"] and current_scope().extra.get("route") is None


def test_breaker_async_api_matches_the_sync_one():
    now = [0.0]
    b = Breaker(MemoryStore(), "t", failures=2, window=10, cooldown=5, clock=lambda: now[0])

    async def go():
        for _ in range(2):
            await b.afailure(await b.aadmit())
        assert await b.aadmit() == OPEN
        now[0] += 6
        assert await b.aadmit() == PROBE and await b.aadmit() == OPEN
        await b.asuccess(PROBE)
        assert await b.aadmit() == CLOSED

    asyncio.run(go())


def test_async_route_skips_an_open_target():
    mesh = mesh_with(breaker={"failures": 1, "window": 60, "cooldown": 60})
    llm = mesh.get_llm("route:r")

    async def go():
        mesh.connection("a").script(error=ServerError("x", status=500))
        await mesh.acomplete(llm, req())
        return await mesh.acomplete(llm, req())

    resp = asyncio.run(go())
    assert resp.meta.attempts[0].error == "skipped: circuit breaker open" and resp.meta.llm_id == B



def _redis_gets(url: str) -> int:
    import redis

    return redis.Redis.from_url(url).info("commandstats").get("cmdstat_get", {}).get("calls", 0)


def test_breakers_on_redis_are_shared_and_read_at_most_every_refresh(redis_server, monkeypatch):
    """Two meshes on one Redis (two gateway workers): a breaker one of them opens is seen by the other
    once its last read is older than the refresh interval; until then a closed breaker costs no read."""
    from langchain_mesh.policies import breaker

    redis_server.flush()
    monkeypatch.setattr(breaker, "SHARED_REFRESH", 0.5)
    cfg = {"connections": {n: {"type": "scripted"} for n in "ab"}, "state": {"redis_url": redis_server.url},
           "routes": {"r": {"targets": [A, B], "breaker": {"failures": 1, "window": 60, "cooldown": 60}}}}
    one, two = Mesh(cfg), Mesh(cfg)
    assert two.get_llm("route:r").route.breakers[0].refresh == 0.5
    gets = _redis_gets(redis_server.url)
    for _ in range(10):
        assert two.complete(two.get_llm("route:r"), req()).meta.llm_id == A
    assert _redis_gets(redis_server.url) - gets <= 2  # one read per target and refresh interval, not per call

    one.connection("a").script(error=ServerError("x", status=500))
    assert one.complete(one.get_llm("route:r"), req()).meta.llm_id == B  # a failed: its breaker opens
    resp = one.complete(one.get_llm("route:r"), req())  # the process that opened it knows at once
    assert resp.meta.attempts[0].error == "skipped: circuit breaker open"
    assert two.get_llm("route:r").route.breakers[0].state() == OPEN  # in the shared store

    time.sleep(0.6)  # past the other worker's refresh interval
    resp = two.complete(two.get_llm("route:r"), req())
    assert resp.meta.attempts[0].error == "skipped: circuit breaker open" and resp.meta.llm_id == B
    one.close()
    two.close()


def test_a_probe_in_one_process_closes_the_breaker_for_the_others(redis_server):
    """Shared breakers on Redis: one probe across processes, and its success closes the breaker everywhere."""
    from langchain_mesh.policies.state import RedisStore

    redis_server.flush()
    now = [1000.0]
    one, two = RedisStore(redis_server.url), RedisStore(redis_server.url)
    b1 = Breaker(one, "t", failures=1, window=10, cooldown=30, clock=lambda: now[0])
    b2 = Breaker(two, "t", failures=1, window=10, cooldown=30, clock=lambda: now[0], refresh=0)
    assert b1.admit() == CLOSED and b2.admit() == CLOSED
    b1.failure(CLOSED)
    assert b1.admit() == OPEN and b2.admit() == OPEN
    now[0] += 31
    assert b2.admit() == PROBE and b1.admit() == OPEN  # one probe for both
    b2.success(PROBE)
    assert b1.admit() == CLOSED and b2.admit() == CLOSED
    one.close()
    two.close()
