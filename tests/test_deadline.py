"""One retry policy, run by Mesh dispatch, whose ``timeout`` bounds the whole call (retries and waits
included), and a gateway that passes an upstream's Retry-After on (issue 16, "Timeouts are per
attempt"; issue 17, "Retries in three layers").

Real sockets: the library and ``mesh serve`` against the local OpenAI-wire server, which answers late
(``delay``) or with 503/429 and a Retry-After."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("openai")

import httpx  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import ProviderTimeoutError, RateLimitError, ServerError  # noqa: E402
from langchain_mesh.schema import CompletionRequest, Message  # noqa: E402

LLM = "openai_compatible:up:m"
REQ = CompletionRequest(messages=[Message(role="user", content="hi")])


def _mesh(url: str, timeout: float = 1.0, max_retries: int = 2) -> Mesh:
    return Mesh.from_config({"connections": {
        "up": {"type": "openai_compatible", "base_url": url, "api_key": "test-key", "timeout": timeout,
               "max_retries": max_retries, "models": [{"id": "m"}]},
        "fake": {"type": "scripted"}}})


@pytest.fixture
def upstream(openai_server):
    yield openai_server
    openai_server.reset()


def _hang(upstream, n: int = 4) -> None:
    for _ in range(n):
        upstream.script(text="late", delay=5.0)


# ---- the library -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_hanging_upstream_costs_one_timeout_not_one_per_attempt(upstream, mode):
    _hang(upstream)
    with _mesh(upstream.base_url) as mesh:
        llm = mesh.get_llm(LLM)
        t = time.monotonic()
        with pytest.raises(ProviderTimeoutError):
            if mode == "sync":
                mesh.complete(llm, REQ)
            else:
                asyncio.run(mesh.acomplete(llm, REQ))
        took = time.monotonic() - t
    # before: 3 attempts of 1 s plus backoffs (at least 3.75 s); now the deadline ends the call after its 1 s
    assert took < 2.5, took
    assert len(upstream.requests) == 1, "no retry started past the deadline"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retry_is_cut_at_the_deadline(upstream, mode):
    upstream.script(status=503, error_message="overloaded", headers={"retry-after": "0"})
    _hang(upstream)
    with _mesh(upstream.base_url) as mesh:
        llm = mesh.get_llm(LLM)
        t = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="whole call"):
            if mode == "sync":
                mesh.complete(llm, REQ)
            else:
                asyncio.run(mesh.acomplete(llm, REQ))
        took = time.monotonic() - t
    # before: two more attempts of 1 s each (at least 2.25 s)
    assert took < 1.9, f"the retried attempt ran past the 1 s deadline: {took:.2f}s"
    assert len(upstream.requests) == 2


def test_a_retry_after_beyond_the_deadline_is_not_waited(upstream):
    upstream.script(status=503, error_message="overloaded", headers={"retry-after": "5"})
    upstream.script(text="too late to matter")
    with _mesh(upstream.base_url, timeout=2.0) as mesh:
        t = time.monotonic()
        with pytest.raises(ServerError) as info:
            mesh.complete(mesh.get_llm(LLM), REQ)
    assert time.monotonic() - t < 2.5 and info.value.retry_after == 5  # not the 5 s wait
    assert len(upstream.requests) == 1


def test_retries_within_the_deadline_still_happen(upstream):
    upstream.script(status=429, error_message="busy", headers={"retry-after": "0"})
    upstream.script(status=503, error_message="overloaded", headers={"retry-after": "0"})
    upstream.script(text="third time lucky")
    with _mesh(upstream.base_url, timeout=2.0) as mesh:
        assert mesh.complete(mesh.get_llm(LLM), REQ).text == "third time lucky"
    assert len(upstream.requests) == 3


def test_a_caller_timeout_bounds_the_call(upstream):
    _hang(upstream)
    with _mesh(upstream.base_url, timeout=30.0, max_retries=0) as mesh:
        t = time.monotonic()
        with pytest.raises(ProviderTimeoutError):
            mesh.complete(mesh.get_llm(LLM), REQ, timeout=0.5)
    assert time.monotonic() - t < 2.0, "the caller's 0.5 s, not the connection's 30 s"


def test_adapter_retries_replace_the_connections_instead_of_multiplying(upstream):
    from langchain_mesh import MeshChatModel

    for _ in range(6):
        upstream.script(status=429, error_message="busy", headers={"retry-after": "0"})
    with _mesh(upstream.base_url, timeout=5.0, max_retries=2) as mesh:
        chat = MeshChatModel(model=LLM, mesh=mesh, max_retries=1)
        with pytest.raises(RateLimitError):
            chat.invoke("hi")
        # before: the adapter's loop around the mesh's made (1 + 1) * (1 + 2) = 6 attempts
        assert len(upstream.requests) == 2
        upstream.reset()
        for _ in range(6):
            upstream.script(status=429, error_message="busy", headers={"retry-after": "0"})
        with pytest.raises(RateLimitError):
            MeshChatModel(model=LLM, mesh=mesh).invoke("hi")
        assert len(upstream.requests) == 3, "no adapter override: the connection's max_retries"


# ---- the gateway -------------------------------------------------------------------------------------


@pytest.fixture
def gateway(upstream):
    pytest.importorskip("uvicorn")
    from test_server_harness import RunningServer

    with RunningServer(_mesh(upstream.base_url)) as srv:
        srv.upstream = upstream
        yield srv


@pytest.mark.parametrize("stream", [False, True])
def test_gateway_answers_504_at_the_connections_timeout(gateway, stream):
    assert gateway.app._forward, "the pass-through path is the one under test"
    _hang(gateway.upstream)
    t = time.monotonic()
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                   json={"model": LLM, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    took = time.monotonic() - t
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert took < 2.5, f"504 after {took:.2f}s with timeout: 1 (it was 3 attempts: at least 3.75 s)"


@pytest.mark.parametrize("stream", [False, True])
def test_gateway_passes_an_upstream_retry_after_on(gateway, stream):
    gateway.upstream.script(status=503, error_message="overloaded", headers={"retry-after": "120"})
    t = time.monotonic()
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                   json={"model": LLM, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    assert r.status_code == 503 and r.headers["retry-after"] == "120", (r.status_code, r.headers)
    assert r.json()["error"]["code"] == "upstream_unavailable" and time.monotonic() - t < 2.5
    gateway.upstream.script(status=429, error_message="busy", headers={"retry-after": "90"})
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                   json={"model": LLM, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    assert r.status_code == 429 and r.headers["retry-after"] == "90"


def test_gateway_translated_path_passes_retry_after_on(gateway):
    gateway.app.mesh.connection("fake").script(error=ServerError("down", status=503, retry_after=30))
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                   json={"model": "scripted:fake:chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
