"""The gateway's pass-through path: OpenAI-wire requests to ``openai`` / ``openai_compatible``
connections are forwarded with minimal edits (model, token-limit key, ``stream_options``) over the
connection's pooled HTTP/1.1 client (connections/http1.py), and the upstream's answer bytes come back with only ``model`` set
to the mesh id; other connections keep the translated path. Real uvicorn stack, real upstream fixture."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("openai")

import httpx  # noqa: E402
import openai  # noqa: E402
import orjson  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.server.forward import SSEPass, forward_plan  # noqa: E402

COMPAT, RETRYING, OA, OA_EMBED, FAKE = ("openai_compatible:vllm:qwen", "openai_compatible:again:qwen",
                                        "openai:oa:gpt-4o", "openai:oa:text-embedding-3-small", "scripted:fake:chat")
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(_mesh_openai_server_session):
    url = _mesh_openai_server_session.base_url
    mesh = Mesh.from_config({"connections": {
        "vllm": {"type": "openai_compatible", "base_url": url, "api_key": "test-key", "max_retries": 0, "timeout": 2, "models": [{"id": "qwen"}]},
        "again": {"type": "openai_compatible", "base_url": url, "api_key": "test-key", "max_retries": 2, "timeout": 2, "models": [{"id": "qwen"}]},
        "oa": {"type": "openai", "api_key": "test-key", "base_url": url, "max_retries": 0, "timeout": 2,
               "models": [{"id": "gpt-4o"}, {"id": "text-embedding-3-small"}]},
        "fake": {"type": "scripted"},
    }})
    records: list = []
    with RunningServer(mesh, on_usage=records.append) as srv:
        srv.records = records
        yield srv


@pytest.fixture
def srv(gateway, openai_server):
    gateway.upstream = openai_server
    gateway.fake = gateway.app.mesh.connection("fake")
    gateway.fake._replies.clear()
    gateway.records.clear()
    return gateway


def post(srv, body, path: str = "/v1/chat/completions", **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    kw.setdefault("headers", {"content-type": "application/json"})  # the keyless server refuses other types
    return httpx.post(srv.url + path, content=content, timeout=10, **kw)


def test_the_path_is_chosen_once_per_llm(srv):
    plans = srv.app._forward
    # built at startup: the first request does not pay for the SDK client, its URL and headers
    assert ("", "/chat/completions", "qwen") in plans[COMPAT].connection._targets
    assert ("", "/embeddings", "text-embedding-3-small") in plans[OA_EMBED].connection._targets
    assert {COMPAT, RETRYING, OA, OA_EMBED} <= set(plans) and FAKE not in plans
    assert plans[OA].rename == ("max_tokens", "max_completion_tokens")
    assert plans[COMPAT].rename == ("max_completion_tokens", "max_tokens")
    assert forward_plan(srv.app.mesh.get_llm(FAKE)) is None


def test_the_forwarded_body_is_the_clients_with_the_model_rewritten(srv):
    srv.upstream.script(text="forwarded")
    sent = {"model": COMPAT, "messages": [{"role": "system", "content": "Sé breve. \u2603"},
                                          {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "temperature": 0.7, "top_p": 0.95, "top_k": 20, "seed": 3, "stop": ["\n"], "user": "u-1",
            "guided_json": {"type": "object"}, "repetition_penalty": 1.05}  # vLLM's own, unknown to the mesh
    r = post(srv, sent)
    assert r.status_code == 200, r.text
    raw = srv.upstream.last_request.body
    assert raw == orjson.dumps({**sent, "model": "qwen"}), "field for field, in the client's order"
    answer = r.json()
    assert answer["model"] == COMPAT and answer["choices"][0]["message"]["content"] == "forwarded"
    assert answer["choices"][0]["message"]["annotations"] == [], "the upstream's own answer, not a rebuilt one"
    rec = srv.records[-1]
    assert (rec.llm_id, rec.status) == (COMPAT, 200) and rec.usage.input_tokens > 0 and rec.usage.output_tokens > 0


def test_token_limit_keys_follow_the_dialect(srv):
    srv.upstream.script(text="a")
    assert post(srv, {"model": OA, "messages": USER, "max_tokens": 9}).status_code == 200
    sent = srv.upstream.last_request.json
    assert sent["max_completion_tokens"] == 9 and "max_tokens" not in sent and sent["model"] == "gpt-4o"
    srv.upstream.script(text="b")
    assert post(srv, {"model": COMPAT, "messages": USER, "max_completion_tokens": 7}).status_code == 200
    sent = srv.upstream.last_request.json
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent


def test_the_translated_path_is_kept_for_other_connections(srv):
    srv.fake.script(text="scripted")
    r = post(srv, {"model": FAKE, "messages": USER})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "scripted"
    assert srv.records[-1].usage is not None and srv.records[-1].llm_id == FAKE
    r = post(srv, {"model": FAKE, "messages": USER, "guided_json": {}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter"
    assert srv.upstream.requests == []


def test_validation_is_the_translated_paths(srv):
    for body, param in [({"model": COMPAT, "messages": USER, "temperature": 5}, "temperature"),
                        ({"model": COMPAT, "messages": []}, "messages"),
                        ({"model": OA, "messages": USER, "top_k": 3}, "top_k"),
                        ({"model": COMPAT, "messages": USER, "stream_options": {"include_usage": True}}, "stream_options")]:
        r = post(srv, body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    assert srv.upstream.requests == []


def test_a_shape_validated_before_is_not_validated_again_and_nothing_else_passes(srv, monkeypatch):
    from langchain_mesh.server import app as app_module
    from langchain_mesh.server.validated import KnownShapes

    monkeypatch.setattr(srv.app, "_shapes", KnownShapes())  # nothing remembered yet
    parsed = []
    real = app_module._parse
    monkeypatch.setattr(app_module, "_parse", lambda model, body: parsed.append(body) or real(model, body))
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again", "name": "ann"}]
    sent = {"model": COMPAT, "messages": history, "temperature": 0.5, "max_tokens": 9, "user": "u-1"}
    bad = [{**sent, "temperature": 5}, {**sent, "max_tokens": "9"}, {**sent, "stream_options": {"include_usage": True}},
           {**sent, "messages": [{"role": "user", "content": "hi", "foo": 1}]},
           {**sent, "messages": [{"role": "user", "content": "hi", "name": 3}]},
           {**sent, "messages": [{"role": ["user"], "content": "hi"}]},
           {**sent, "messages": [{"role": "tool", "content": "hi"}]}, {**sent, "messages": []}]

    def refusals():
        out = [post(srv, body) for body in bad]
        assert all(r.status_code == 400 for r in out), [r.text for r in out]
        return [r.json()["error"] for r in out]
    before = refusals()
    for user in ("u-1", "u-2", "u-3"):
        srv.upstream.script(text="ok")
        r = post(srv, {**sent, "user": user})
        assert r.status_code == 200, r.text
        assert srv.upstream.last_request.json == {**sent, "user": user, "model": "qwen"}
    parsed.clear()
    srv.upstream.script(text="ok")
    assert post(srv, {**sent, "user": "u-4"}).status_code == 200
    assert parsed == []  # a new user's request had the shape of the first: not validated again
    n = len(srv.upstream.requests)
    assert refusals() == before  # the same 400s, the same fields named, once the valid shape is known
    assert len(srv.upstream.requests) == n


@pytest.mark.parametrize("include_usage", [False, True])
def test_streams_pass_through_with_usage_recorded(srv, include_usage):
    srv.upstream.script(text="one two three four")
    c = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(c.chat.completions.create(model=COMPAT, messages=USER, stream=True, **extra))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "one two three four"
    assert all(ch.model == COMPAT for ch in chunks)
    assert srv.upstream.last_request.json["stream_options"] == {"include_usage": True}
    if include_usage:
        assert not chunks[-1].choices and chunks[-1].usage.completion_tokens > 0
    else:  # the usage chunk the gateway asked for is not passed on
        assert chunks[-1].choices[0].finish_reason == "stop" and all(ch.usage is None for ch in chunks)
    # the record is written once the response has ended, which the client may see first
    deadline = time.monotonic() + 5
    while not srv.records and time.monotonic() < deadline:
        time.sleep(0.01)
    rec = srv.records[-1]
    assert (rec.llm_id, rec.status) == (COMPAT, 200) and rec.usage.output_tokens > 0


def test_sse_pieces_are_reassembled_into_whole_events():
    up = (b'data: {"id":"c","model":"m","choices":[{"delta":{"content":"a"}}],"usage":null}\r\n\r\n'
          b'data: {"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
          b"data: [DONE]\n\n")
    for strip in (False, True):
        p = SSEPass("x:y:z", strip)
        out = b"".join(p.feed(up[i:i + 7]) for i in range(0, len(up), 7)) + p.flush()
        assert out.count(b'"model":"x:y:z"') == (1 if strip else 2) and b'"model":"m"' not in out
        assert out.endswith(b"data: [DONE]\n\n") and p.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_upstream_errors_map_as_on_the_translated_path(srv):
    srv.upstream.script(status=429, error_message="slow down", headers={"retry-after": "7"})
    r = post(srv, {"model": COMPAT, "messages": USER})
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and "slow down" in r.json()["error"]["message"]
    srv.upstream.script(status=500, error_message="boom")
    r = post(srv, {"model": COMPAT, "messages": USER, "stream": True})
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    srv.upstream.script(text="late", delay=3.0)
    r = post(srv, {"model": COMPAT, "messages": USER})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert srv.records[-1].status == 504


def test_refused_connection_is_a_502():
    mesh = Mesh.from_config({"connections": {"dead": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                                                      "max_retries": 0, "models": [{"id": "m"}]}}})
    with RunningServer(mesh) as srv:
        assert "openai_compatible:dead:m" in srv.app._forward
        for stream in (False, True):
            r = httpx.post(srv.url + "/v1/chat/completions",
                           json={"model": "openai_compatible:dead:m", "messages": USER, "stream": stream})
            assert r.status_code == 502 and "cannot reach" in r.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_retried_before_the_first_byte(srv, stream):
    srv.upstream.script(status=503, error_message="overloaded", headers={"retry-after": "0"})
    srv.upstream.script(status=429, error_message="busy", headers={"retry-after": "0"})
    srv.upstream.script(text="third time lucky")
    t = time.monotonic()
    r = post(srv, {"model": RETRYING, "messages": USER, "stream": stream})
    assert r.status_code == 200 and "lucky" in (r.text if stream else r.json()["choices"][0]["message"]["content"])
    assert len(srv.upstream.requests) == 3 and time.monotonic() - t < 2, "Retry-After: 0 honoured"
    srv.upstream.script(status=400, error_message="no")  # not retryable
    r = post(srv, {"model": RETRYING, "messages": USER, "stream": stream})
    assert r.status_code == 400 and len(srv.upstream.requests) == 4


def test_embeddings_are_forwarded(srv):
    r = post(srv, {"model": OA_EMBED, "input": ["alpha", "beta"], "encoding_format": "float", "dimensions": 8},
             "/v1/embeddings")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == OA_EMBED and [len(d["embedding"]) for d in out["data"]] == [8, 8]
    assert srv.upstream.last_request.json == {"model": "text-embedding-3-small", "input": ["alpha", "beta"],
                                              "encoding_format": "float", "dimensions": 8}
    assert srv.records[-1].usage.input_tokens > 0


class SilentUpstream:
    """An upstream that reads a request, never answers, and notes when the gateway hangs up on it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.hung_up = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):  # b"" when the gateway closes the connection
                    if b"\r\n\r\n" in data:
                        self.requests += 1
                self.hung_up.set()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_hanging_up_closes_the_forwarded_request(stream):
    up = SilentUpstream()
    mesh = Mesh.from_config({"connections": {"up": {
        "type": "openai_compatible", "base_url": f"http://127.0.0.1:{up.port}/v1", "max_retries": 0, "timeout": 30,
        "models": [{"id": "m"}]}}})
    records: list = []
    try:
        with RunningServer(mesh, on_usage=records.append) as srv:
            assert "openai_compatible:up:m" in srv.app._forward
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(srv.url + "/v1/chat/completions", timeout=0.5,
                           json={"model": "openai_compatible:up:m", "messages": USER, "stream": stream})
            assert up.hung_up.wait(5), "the upstream request outlived its client"
            assert up.requests == 1
            deadline = time.monotonic() + 5
            while not records and time.monotonic() < deadline:
                time.sleep(0.02)
            assert records[-1].status == 499
    finally:
        up.sock.close()


def test_an_llm_that_cannot_be_prepared_at_startup_is_named_and_the_rest_serve(srv, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    mesh = Mesh.from_config({"connections": {
        "nokey": {"type": "openai", "max_retries": 0, "models": [{"id": "gpt-4o"}]},
        "vllm": {"type": "openai_compatible", "base_url": srv.upstream.base_url, "api_key": "test-key",
                 "max_retries": 0, "models": [{"id": "qwen"}]}}})
    with caplog.at_level("WARNING", logger="langchain_mesh.server"):
        with RunningServer(mesh) as gw:
            srv.upstream.script(text="still here")
            ok = httpx.post(gw.url + "/v1/chat/completions", json={"model": COMPAT, "messages": USER})
            bad = httpx.post(gw.url + "/v1/chat/completions", json={"model": "openai:nokey:gpt-4o", "messages": USER})
    assert "openai:nokey:gpt-4o is not ready" in caplog.text and "api_key" in caplog.text
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "still here"
    # the gateway's own setup is at fault: a 503 that sends the operator to the log, which names it
    assert bad.status_code == 503 and bad.json()["error"]["code"] == "model_unavailable"
    assert "OPENAI_API_KEY" not in bad.text and "server log" in bad.json()["error"]["message"]
    assert "environment variable OPENAI_API_KEY is not set" in caplog.text


def test_serving_raises_the_young_collection_threshold_after_freezing_start_up(tmp_path):
    """A request in flight holds coroutines, frames and futures; at Python's 700 a young collection ran
    every few dozen requests just to walk them (issue 19). The lifespan freezes what start-up built, then
    sets the thresholds the server runs with."""
    import asyncio
    import gc

    from langchain_mesh.server.app import GC_THRESHOLDS, MeshApp

    app = MeshApp(Mesh({"connections": {"fake": {"type": "scripted", "models": [{"id": "chat"}]}}}))
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    seen = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        seen.append((message["type"], gc.get_threshold(), gc.get_freeze_count() > 0))

    before = gc.get_threshold()
    try:
        asyncio.run(app({"type": "lifespan"}, receive, send))
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
    assert GC_THRESHOLDS[0] > 700 and seen[0] == ("lifespan.startup.complete", GC_THRESHOLDS, True)
