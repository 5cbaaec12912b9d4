"""The response cache: hit/miss accounting, TTL, bypasses, what is never stored, streamed answers
replayed identically, and two gateway workers sharing one Redis."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import RateLimitError, SettingsError
from langchain_mesh.policies import cache as cache_mod
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.schema import CompletionRequest, CompletionSettings, EmbeddingRequest, Message, validate_settings

CHAT = "scripted:fake:chat"


def _mesh(**cache):
    return Mesh.from_config({"connections": {"fake": {"type": "scripted", "models": [
        {"id": "chat"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}},
        "cache": {"ttl": 60, **cache}})


def _req(text="hi", **settings):
    return CompletionRequest(messages=[Message(role="user", content=text)],
                             settings=CompletionSettings(**{"temperature": 0, **settings}))


def test_hit_and_miss_on_the_normalised_request():
    mesh = _mesh()
    llm, conn = mesh.get_llm(CHAT), mesh.connection("fake")
    conn.script(text="first").script(text="second").script(text="third")
    a = mesh.complete(llm, _req("q"))
    b = mesh.complete(llm, _req("q"))
    assert (a.text, a.meta.cache, b.text, b.meta.cache) == ("first", "miss", "first", "hit")
    assert b.usage == a.usage and len(conn.requests) == 1
    c = mesh.complete(llm, _req("q", maxOutputTokens=50))  # other settings: another entry
    assert (c.text, c.meta.cache) == ("second", "miss")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert mesh.complete(llm, _req("q", tools=tools)).meta.cache == "miss"  # tools are part of the key
    assert len(conn.requests) == 3


def test_ttl_with_an_injected_clock(monkeypatch):
    mesh = _mesh(ttl=10)
    now = [1000.0]
    mesh._response_cache = cache_mod.MemoryCache(clock=lambda: now[0])
    llm = mesh.get_llm(CHAT)
    assert mesh.complete(llm, _req("t")).meta.cache == "miss"
    now[0] += 9
    assert mesh.complete(llm, _req("t")).meta.cache == "hit"
    now[0] += 2
    assert mesh.complete(llm, _req("t")).meta.cache == "miss"


def test_lru_keeps_the_most_recent():
    store = cache_mod.MemoryCache(max_entries=2)
    store.set("a", "1", 60)
    store.set("b", "2", 60)
    store.get("a")
    store.set("c", "3", 60)
    assert (store.get("a"), store.get("b"), store.get("c")) == ("1", None, "3")


def test_bypasses_and_what_is_never_cached():
    mesh = _mesh()
    llm, conn = mesh.get_llm(CHAT), mesh.connection("fake")
    mesh.complete(llm, _req("b"))
    resp = mesh.complete(llm, _req("b", cache=False))
    assert resp.meta.cache == "bypass" and conn.requests[-1].settings.cache is None  # never sent on
    with call_scope(cache=False):
        assert mesh.complete(llm, _req("b")).meta.cache == "bypass"
    # not deterministic: not cached unless asked
    hot = CompletionRequest(messages=[Message(role="user", content="b")], settings=CompletionSettings(temperature=0.7))
    assert mesh.complete(llm, hot).meta.cache == "bypass" and mesh.complete(llm, hot).meta.cache == "bypass"
    asked = hot.model_copy(update={"settings": CompletionSettings(temperature=0.7, cache=True)})
    assert [mesh.complete(llm, asked).meta.cache for _ in range(2)] == ["miss", "hit"]
    # errors and failed answers are never stored
    conn.script(error=RateLimitError("slow down", status=429))
    with pytest.raises(RateLimitError):
        mesh.complete(llm, _req("e"))
    conn.script(text="ok now")
    assert mesh.complete(llm, _req("e")).text == "ok now"
    conn.script(text="cut", finish_reason="content_filter")
    mesh.complete(llm, _req("f"))
    assert mesh.complete(llm, _req("f")).meta.cache == "miss"
    with pytest.raises(SettingsError, match="cache"):
        validate_settings({"cache": "sometimes"})


def test_a_cached_stream_replays_identically_sync_and_async():
    mesh = _mesh()
    llm, conn = mesh.get_llm(CHAT), mesh.connection("fake")
    conn.script(text="Streams of words, one by one.", tool_calls=[("f", {"x": 1})])
    first = list(mesh.stream(llm, _req("s")))
    second = list(mesh.stream(llm, _req("s")))
    strip = lambda evs: [e.model_copy(update={"meta": None}) if hasattr(e, "finish_reason") else e for e in evs]  # noqa: E731
    assert strip(first) == strip(second) and len(second) > 3
    assert (first[-1].meta.cache, second[-1].meta.cache) == ("miss", "hit") and len(conn.requests) == 1

    async def go():
        return [e async for e in mesh.astream(llm, _req("s"))]

    assert strip(asyncio.run(go())) == strip(first)
    conn.script(text="never finished", cut_after=1)  # a stream that breaks is not stored
    with pytest.raises(Exception):
        list(mesh.stream(llm, _req("cut")))
    assert list(mesh.stream(llm, _req("cut")))[-1].meta.cache == "miss"


def test_embeddings_are_cached():
    mesh = _mesh()
    emb = mesh.get_llm("scripted:fake:emb")
    a = mesh.embed(emb, EmbeddingRequest(texts=["x y"]))
    b = mesh.embed(emb, EmbeddingRequest(texts=["x y"]))
    assert a.embeddings == b.embeddings and b.meta.cache == "hit"
    assert len(mesh.connection("fake").embedding_requests) == 1


# ---- Redis, shared by two gateway workers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_two_gateway_workers_share_the_redis_cache(redis_url, openai_server):
    pytest.importorskip("uvicorn")
    import openai
    from test_server_harness import RunningServer

    namespace = f"t{time.time_ns()}:"

    def worker_mesh():  # each worker builds its own Mesh from the same config, as `mesh serve --workers 2`
        return Mesh.from_config({
            "connections": {"oa": {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url,
                                   "max_retries": 0, "models": [{"id": "gpt-4o"}]}},
            "cache": {"ttl": 60, "redis_url": redis_url, "namespace": namespace}})

    def client(srv, **kw):
        return openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, **kw)

    with RunningServer(worker_mesh()) as one, RunningServer(worker_mesh()) as two:
        ask = dict(model="openai:oa:gpt-4o", temperature=0, messages=[{"role": "user", "content": "shared?"}])
        openai_server.script(text="from the provider")
        a = client(one).chat.completions.create(**ask)
        b = client(two).chat.completions.create(**ask)
        assert a.choices[0].message.content == b.choices[0].message.content == "from the provider"
        assert len(openai_server.requests) == 1  # the second worker answered from Redis
        openai_server.script(text="streamed once")
        texts = []
        for srv in (one, two):
            chunks = client(srv).chat.completions.create(
                stream=True, **{**ask, "messages": [{"role": "user", "content": "stream?"}]})
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        assert texts == ["streamed once", "streamed once"] and len(openai_server.requests) == 2
        # Cache-Control: no-cache goes to the provider
        openai_server.script(text="fresh")
        c = client(two, default_headers={"Cache-Control": "no-cache"}).chat.completions.create(**ask)
        assert c.choices[0].message.content == "fresh" and len(openai_server.requests) == 3


def test_the_cache_setting_without_a_cache_is_an_error_not_ignored():
    mesh = Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})
    llm = mesh.get_llm(CHAT)
    with pytest.raises(SettingsError, match="cache: section"):
        mesh.complete(llm, _req("x", cache=False))
    with pytest.raises(SettingsError, match="has none"):
        mesh.stream(llm, _req("x", cache=True))
    other = _mesh(llms=["scripted:fake:emb"])  # a cache, but not for this LLM
    with pytest.raises(SettingsError):
        other.complete(other.get_llm(CHAT), _req("x", cache=False))


def test_semantic_cache_over_a_knowledge_bank(tmp_path):
    pytest.importorskip("faiss")
    mesh = Mesh.from_config({
        "connections": {"fake": {"type": "scripted"}},
        "knowledge_banks": {"answers": {"backend": "faiss", "path": str(tmp_path / "answers"),
                                        "embedding_llm": "scripted:fake:embed"}},
        "cache": {"ttl": 60, "llms": ["scripted:fake:chat"], "semantic": {"knowledge_bank": "answers", "threshold": 0.9}}})
    llm, conn = mesh.get_llm(CHAT), mesh.connection("fake")
    conn.script(text="Paris.").script(text="Meow.").script(text="Paris, hot.")
    assert mesh.complete(llm, _req("What is the capital of France?")).meta.cache == "miss"
    near = mesh.complete(llm, _req("what is the capital of France, please?"))  # close in meaning (scores ~0.97)
    assert (near.text, near.meta.cache) == ("Paris.", "hit")
    far = mesh.complete(llm, _req("tell me a joke about cats"))
    assert (far.text, far.meta.cache) == ("Meow.", "miss")
    other = mesh.complete(llm, _req("what is the capital of France, please?", temperature=0, maxOutputTokens=9))
    assert (other.text, other.meta.cache) == ("Paris, hot.", "miss")  # other settings: never a near match
    chats = [r for r in conn.requests if r.messages[0].role == "user" and len(r.messages) == 1]
    assert len(chats) == 3
    from langchain_mesh.errors import UnknownKnowledgeBankError

    bad = Mesh.from_config({"connections": {"fake": {"type": "scripted"}},
                            "cache": {"semantic": {"knowledge_bank": "nope"}}})
    with pytest.raises(UnknownKnowledgeBankError, match="nope"):
        bad.complete(bad.get_llm(CHAT), _req("x"))
