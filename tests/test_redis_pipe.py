"""The gateway's pipelined Redis connection (policies/redis_pipe.py) against a real redis-server:
replies matched to their commands when many coroutines share it, errors as redis-py raises them,
AUTH and SELECT from the URL, a silent server and a killed one read as outages, and a new
connection once Redis is back; and the acquire-all script's windows as the limits library reads them."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

pytest.importorskip("hiredis")
redis = pytest.importorskip("redis")

from langchain_mesh.policies.redis_pipe import RedisPipe, Script  # noqa: E402
from langchain_mesh.policies.state import RedisStore, is_outage  # noqa: E402
from langchain_mesh.testing.redis_server import RedisServer, redis_server_binary  # noqa: E402

pytestmark = pytest.mark.skipif(redis_server_binary() is None,
                                reason="redis-server is not installed (apt-get install -y redis-server; CI has it)")


@pytest.fixture(scope="module")
def server():
    with RedisServer() as r:
        yield r


async def test_many_coroutines_share_one_connection_and_get_their_own_replies(server):
    pipe = RedisPipe(server.url, timeout=2)

    async def one(i: int) -> tuple[bytes, int]:
        await pipe.call("SET", f"pipe:k{i}", f"v{i}")
        got = await pipe.call("GET", f"pipe:k{i}")
        n = (await pipe.calls(("INCRBY", "pipe:n", i), ("GET", f"pipe:k{i}")))
        return got, n[1]

    out = await asyncio.gather(*(one(i) for i in range(200)))
    assert [g for g, _ in out] == [f"v{i}".encode() for i in range(200)]
    assert all(v == f"v{i}".encode() for i, (_, v) in enumerate(out))
    assert int(await pipe.call("GET", "pipe:n")) == sum(range(200))
    assert pipe.conn is not None and len(pipe.conn.waiting) == 0


async def test_reply_errors_are_redis_py_errors_and_the_connection_survives(server):
    pipe = RedisPipe(server.url, timeout=2)
    await pipe.call("SET", "pipe:text", "abc")
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        await pipe.call("INCR", "pipe:text")
    with pytest.raises(redis.exceptions.ResponseError):
        await pipe.calls(("INCR", "pipe:text"), ("PING",))
    assert await pipe.call("PING") == b"PONG"


async def test_scripts_run_by_sha_and_are_sent_whole_when_redis_lacks_them(server):
    pipe = RedisPipe(server.url, timeout=2)
    await pipe.call("SCRIPT", "FLUSH")
    s = Script("return tonumber(ARGV[1]) + 1")
    assert await pipe.script(s, [], [41]) == 42  # NOSCRIPT, then EVAL
    assert await pipe.call("SCRIPT", "EXISTS", s.sha) == [1]
    assert await pipe.script(s, [], [1]) == 2


async def test_auth_and_database_come_from_the_url():
    with RedisServer() as r:
        admin = redis.Redis(port=r.port)
        admin.config_set("requirepass", "s3cret")
        pipe = RedisPipe(f"redis://:s3cret@127.0.0.1:{r.port}/3", timeout=2)
        await pipe.call("SET", "where", "db3")
        authed = redis.Redis(port=r.port, password="s3cret", db=3)
        assert authed.get("where") == b"db3"
        wrong = RedisPipe(f"redis://:nope@127.0.0.1:{r.port}/0", timeout=2)
        with pytest.raises(redis.exceptions.ResponseError):
            await wrong.call("PING")


async def test_a_silent_server_is_a_timeout_outage():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    held = []
    t = threading.Thread(target=lambda: held.append(lsock.accept()), daemon=True)
    t.start()
    try:
        pipe = RedisPipe(f"redis://127.0.0.1:{lsock.getsockname()[1]}/0", timeout=0.2)
        with pytest.raises(redis.exceptions.TimeoutError) as err:
            await pipe.call("PING")
        assert is_outage(err.value)
    finally:
        lsock.close()
        for conn, _ in held:
            conn.close()


async def test_killed_redis_is_an_outage_and_a_restarted_one_is_used_again():
    r = RedisServer().start()
    pipe = RedisPipe(r.url, timeout=0.5)
    assert await pipe.call("PING") == b"PONG"
    r.kill()
    with pytest.raises(Exception) as err:
        await pipe.call("PING")
    assert is_outage(err.value)
    r.start()  # same port
    try:
        assert await pipe.call("PING") == b"PONG"
    finally:
        r.stop()


async def test_store_counters_and_nowait_increments_on_the_pipe(server):
    store = RedisStore(server.url, timeout=2)
    assert store.pipe() is not None
    assert await store.aincr("pipe:c", 2.5, ttl=30) == 2.5
    assert store.incr_nowait("pipe:c", 1.5, ttl=30)
    await store.aset("pipe:s", "x", ttl=30)
    assert await store.aget("pipe:s") == "x"
    # held back for redis_pipe.SUM_GAP, and counted as this process's own meanwhile
    assert store.get("pipe:c") == "2.5" and store.pending("pipe:c", ttl=30) == 1.5
    await store.aflush()
    assert store.pending("pipe:c", ttl=30) == 0
    assert store.get("pipe:c") == "4"  # the sync client reads what the pipe wrote
    assert 0 < redis.Redis.from_url(server.url).pttl("mesh:pipe:c") <= 30000
    assert await store.amget(["pipe:s", "pipe:none", "pipe:c"]) == ["x", None, "4"]
    await store.adelete("pipe:s")
    assert await store.aget("pipe:s") is None


def test_the_store_gives_each_loop_its_own_pipe_and_a_forked_child_none_of_its_parents(server):
    store = RedisStore(server.url, timeout=2)

    async def mine():
        return store.pipe(), store.pipe()

    a1, a2 = asyncio.run(mine())
    b1, b2 = asyncio.run(mine())  # a second loop in the same thread, the first one closed
    assert a1 is a2 and b1 is b2 and a1 is not b1
    box = []
    t = threading.Thread(target=lambda: box.append(asyncio.run(mine())))
    t.start()
    t.join()
    assert box[0][0] is box[0][1] and box[0][0] not in (a1, b1)

    async def fork_inside_the_loop() -> int:
        parent = store.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the loop's copy says it runs, yet it is not the child's to use
            try:
                code = 1 if store.pipe() is parent else 0
            except RuntimeError:  # "no running event loop", as asyncio says in a forked child
                code = 0
            os._exit(code)
        return os.waitpid(pid, 0)[1]

    assert asyncio.run(fork_inside_the_loop()) == 0


async def test_acquire_all_counts_nothing_when_one_window_refuses(server):
    from langchain_mesh.policies.limits import limiter_for

    mesh = _limited(server)
    lim = limiter_for(mesh)
    layer_checks = [c for c in _checks(mesh, lim)]
    await lim.aacquire(layer_checks, 60)
    from langchain_mesh.errors import RateLimitExceeded

    with pytest.raises(RateLimitExceeded, match="tokens"):
        await lim.aacquire(layer_checks, 60)  # 120 tokens > 100: refused, and the request not counted
    sync = lim.requests.get_window_stats(layer_checks[-1].item, *layer_checks[-1].ids)
    assert sync.remaining == 4  # limits' own reader sees one request taken, not two
    assert lim.tokens.get_window_stats(layer_checks[0].item, *layer_checks[0].ids).remaining == 40


def _limited(server):
    """A mesh whose key "k" has 5 requests and 100 tokens per 30 s, on ``server`` (emptied first)."""
    from langchain_mesh import Mesh

    server.flush()
    return Mesh({"connections": {"fake": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                                          "models": [{"id": "m"}]}},
                 "state": {"redis_url": server.url},
                 "limits": {"period": 30, "keys": {"k": {"rpm": 5, "tpm": 100}}}})


def _checks(mesh, lim):
    from langchain_mesh.policies.limits import _Check

    return lim.order([_Check("requests", "key", "k", lim.item("requests", 5)),
                      _Check("tokens", "key", "k", lim.item("tokens", 100))])[0]


async def test_a_command_nobody_waits_for_goes_out_on_its_own_when_no_other_write_comes(server):
    store = RedisStore(server.url, timeout=2)
    await store.aset("pipe:first", "connect")  # the connection exists: the next command is queued lazily
    assert store.incr_nowait("pipe:lazy", 3.0, ttl=30)
    await asyncio.sleep(0.05)  # no other command: its own timer writes it
    assert store.get("pipe:lazy") == "3"


async def test_additions_nobody_reads_at_once_are_summed_into_one_command_per_counter(server):
    from langchain_mesh.policies import redis_pipe

    store = RedisStore(server.url, timeout=2)
    sync = redis.Redis.from_url(server.url)
    await store.aset("pipe:warm", "1")
    sync.config_resetstat()
    for i in range(100):
        assert store.incr_nowait("pipe:sum-a", 1.0, ttl=30)
        assert store.incr_nowait("pipe:sum-b", 0.5, ttl=30)
    assert store.pending("pipe:sum-a", ttl=30) == 100.0
    assert store.pending("pipe:sum-a", ttl=60) == 0.0  # another expiry is another counter
    await asyncio.sleep(redis_pipe.SUM_GAP * 4)  # the gap's timer sends them
    assert store.get("pipe:sum-a") == "100" and store.get("pipe:sum-b") == "50"
    assert store.pending("pipe:sum-a", ttl=30) == 0
    stats = sync.info("commandstats")
    assert stats["cmdstat_incrbyfloat"]["calls"] == 2  # one per counter, not 200
    assert 0 < sync.pttl("mesh:pipe:sum-a") <= 30000


async def test_summed_additions_lost_with_redis_are_an_outage_said_once(caplog):
    from langchain_mesh.policies.state import aflush

    r = RedisServer()
    r.start()
    store = RedisStore(r.url, timeout=0.5)
    await store.aset("pipe:x", "1")
    store.incr_nowait("pipe:gone", 1.0, ttl=30)
    r.stop()

    class _Mesh:
        _state_store = store
    await aflush(_Mesh())  # the PING fails: logged, not raised
    assert "were not written" in caplog.text


def test_mesh_serve_sends_what_it_holds_back_before_it_shuts_down(server, monkeypatch):
    pytest.importorskip("uvicorn")
    from langchain_mesh import Mesh
    from langchain_mesh.policies import redis_pipe
    from langchain_mesh.server.app import MeshApp

    monkeypatch.setattr(redis_pipe, "SUM_GAP", 30.0)  # only the shutdown can send it in time
    mesh = Mesh({"connections": {"fake": {"type": "scripted", "models": [{"id": "chat"}]}},
                 "state": {"redis_url": server.url}})
    app = MeshApp(mesh)
    messages = [{"type": "lifespan.shutdown"}]

    async def receive():
        store = mesh.state_store()
        await store.aset("pipe:up", "1")
        assert store.incr_nowait("pipe:at-exit", 2.0, ttl=30)
        return messages.pop(0)

    async def send(message):
        pass

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert redis.Redis.from_url(server.url).get("mesh:pipe:at-exit") == b"2"


async def test_token_corrections_of_many_calls_reach_the_window_as_one_script_call(server):
    from langchain_mesh.policies import redis_pipe
    from langchain_mesh.policies.limits import limiter_for

    mesh = _limited(server)
    lim = limiter_for(mesh)
    checks = _checks(mesh, lim)
    await lim.aacquire(checks, 60)  # the estimate: 60 tokens
    sync = redis.Redis.from_url(server.url)
    sync.config_resetstat()
    for actual in (70, 50, 65):  # three calls' corrections (+10, -10, +5) against the same estimate
        assert lim.reconcile_nowait(checks, 60, actual)
    await asyncio.sleep(redis_pipe.SUM_GAP * 4)
    assert lim.tokens.get_window_stats(checks[0].item, *checks[0].ids).remaining == 100 - 65
    assert sync.info("commandstats")["cmdstat_evalsha"]["calls"] == 1
