"""``mesh serve``'s OpenAI-compatible API, driven by real clients: the ``openai`` SDK (sync, async,
streaming, tools, JSON schema, embeddings, images), ``langchain_openai.ChatOpenAI``, and plain HTTP
for every error case. The server is the real uvicorn stack on a loopback port, over a mesh whose
connections are ``openai`` (pointed at the local OpenAI server fixture) and ``scripted``.
"""

from __future__ import annotations

import base64
import json
import struct
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("openai")

import httpx  # noqa: E402
import openai  # noqa: E402
from test_server_harness import RunningServer, SlowConnection  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import ConfigError, RateLimitError  # noqa: E402
from langchain_mesh.testing.openai import make_png  # noqa: E402

KEY, LIMITED = "sk-test-alice", "sk-test-bob"
CHAT, EMBED, IMAGE = "openai:oa:gpt-4o", "openai:oa:text-embedding-3-small", "openai:oa:dall-e-3"
FAKE, FAKE_EMBED, SLOW = "scripted:fake:chat", "scripted:fake:embed", "slowtest:slow:chat"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(_mesh_openai_server_session):
    upstream = _mesh_openai_server_session
    mesh = Mesh.from_config({
        "connections": {
            "oa": {"type": "openai", "api_key": "test-key", "base_url": upstream.base_url, "max_retries": 0,
                   "timeout": 2, "models": [{"id": "gpt-4o"}, {"id": "text-embedding-3-small"}, {"id": "dall-e-3"}]},
            "fake": {"type": "scripted"},
            "slow": {"type": "slowtest"},
        },
        "server": {"api_keys": [{"key": KEY, "name": "alice"},
                                {"key": LIMITED, "name": "bob", "allowed_llms": [FAKE]}]},
    })
    records: list = []
    with RunningServer(mesh, on_usage=records.append) as srv:
        srv.records = records
        yield srv


@pytest.fixture
def srv(gateway, openai_server):
    """The gateway, with the upstream reset and the scripted connection's queue empty."""
    gateway.upstream = openai_server
    gateway.fake = gateway.app.mesh.connection("fake")
    gateway.fake._replies.clear()
    return gateway


def client(srv, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)


def post(srv, path: str, body, key: str = KEY, **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(srv.url + path, content=content, headers={"Authorization": f"Bearer {key}"}, timeout=10, **kw)


def error_of(r: httpx.Response) -> dict:
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# --------------------------------------------------------------------------------------------------
# models, health, docs


def test_models_health_and_openapi(srv):
    ids = [m.id for m in client(srv).models.list()]
    assert {CHAT, EMBED, IMAGE, FAKE, FAKE_EMBED} <= set(ids)
    assert [m.id for m in client(srv, LIMITED).models.list()] == [FAKE]
    assert client(srv).models.retrieve(FAKE).id == FAKE
    assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
    doc = httpx.get(srv.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and "/v1/chat/completions" in doc["paths"]
    assert "ChatCompletionRequest" in doc["components"]["schemas"]


# --------------------------------------------------------------------------------------------------
# chat through the openai SDK


def test_sync_chat_through_the_openai_connection(srv):
    srv.upstream.script(text="Paris is the capital.")
    r = client(srv).chat.completions.create(
        model=CHAT, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}],
        max_tokens=40, temperature=0.3, stop=["\n\n"], seed=7)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == CHAT
    assert r.choices[0].message.content == "Paris is the capital." and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    sent = srv.upstream.last_request.json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]
    # the seed's settings, sent under the openai connection's own names
    assert sent["max_completion_tokens"] == 40 and sent["temperature"] == 0.3 and sent["stop"] == ["\n\n"]
    assert sent["seed"] == 7 and sent["model"] == "gpt-4o"
    rec = srv.records[-1]
    assert (rec.key_name, rec.llm_id, rec.status) == ("alice", CHAT, 200) and rec.usage.output_tokens > 0


async def test_async_chat_and_stream_with_usage(srv):
    aclient = openai.AsyncOpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0)
    srv.fake.script(text="async answer")
    r = await aclient.chat.completions.create(model=FAKE, messages=USER)
    assert r.choices[0].message.content == "async answer"
    srv.fake.script(text="One two three four.")
    stream = await aclient.chat.completions.create(model=FAKE, messages=USER, stream=True,
                                                   stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "One two three four."
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    await aclient.close()


def test_stream_without_usage_through_the_openai_connection(srv):
    srv.upstream.script(text="streamed from upstream")
    chunks = list(client(srv).chat.completions.create(model=CHAT, messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed from upstream"
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_and_tool_choice(srv):
    srv.upstream.script(tool_calls=[("get_weather", {"city": "Paris"})])
    r = client(srv).chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Weather?"}],
                                            tools=[TOOL], tool_choice="required")
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    sent = srv.upstream.last_request.json
    assert sent["tools"] == [TOOL] and sent["tool_choice"] == "required"

    # the call and its output go back as history, with a named tool choice
    srv.upstream.script(text="21 degrees.")
    r2 = client(srv).chat.completions.create(model=CHAT, tools=[TOOL],
                                             tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                             messages=[{"role": "user", "content": "Weather?"}, msg.model_dump(exclude_none=True),
                                                       {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "21C"}])
    assert r2.choices[0].message.content == "21 degrees."
    sent = srv.upstream.last_request.json
    assert sent["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert sent["messages"][2] == {"role": "tool", "content": "21C", "tool_call_id": msg.tool_calls[0].id}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("llm", [CHAT, FAKE])
def test_streamed_tool_call_deltas_in_openai_layout(srv, llm):
    calls = [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo, Norway"})]
    (srv.upstream if llm == CHAT else srv.fake).script(tool_calls=calls)
    chunks = list(client(srv).chat.completions.create(model=llm, messages=USER, tools=[TOOL], stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    by_index: dict[int, list] = {}
    for d in deltas:
        by_index.setdefault(d.index, []).append(d)
    assert sorted(by_index) == [0, 1]
    for i, frags in by_index.items():
        first, rest = frags[0], frags[1:]
        assert first.id and first.type == "function" and first.function.name == "get_weather"
        assert rest and all(f.id is None and f.function.name is None for f in rest), "arguments come in pieces"
        assert json.loads("".join(f.function.arguments or "" for f in frags)) == calls[i][1]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_and_json_object_output(srv):
    srv.upstream.script(text='{"name": "Ada", "age": 36}')
    r = client(srv).chat.completions.create(
        model=CHAT, messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}})
    assert json.loads(r.choices[0].message.content) == {"name": "Ada", "age": 36}
    assert srv.upstream.last_request.json["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    srv.upstream.script(text='{"ok": true}')
    client(srv).chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "json please"}],
                                        response_format={"type": "json_object"})
    assert srv.upstream.last_request.json["response_format"] == {"type": "json_object"}


def test_image_parts_and_logprobs(srv):
    png = make_png(4, 4)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    srv.upstream.script(text="A small square")
    r = client(srv).chat.completions.create(model=CHAT, logprobs=True, top_logprobs=2, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}]}])
    content = srv.upstream.last_request.json["messages"][0]["content"]
    assert content == [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}},
                       {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}]
    lp = r.choices[0].logprobs.content
    assert [t.token.strip() for t in lp] == ["A", "small", "square"]
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in lp)


# --------------------------------------------------------------------------------------------------
# embeddings and images


@pytest.mark.parametrize("llm", [EMBED, FAKE_EMBED])
def test_embeddings_float_and_base64(srv, llm):
    c = client(srv)
    texts = ["alpha one", "beta two", "alpha one"]
    as_float = c.embeddings.create(model=llm, input=texts, encoding_format="float")
    vectors = [d.embedding for d in as_float.data]
    assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1]
    assert as_float.usage.prompt_tokens > 0 and as_float.model == llm
    raw = post(srv, "/v1/embeddings", {"model": llm, "input": texts, "encoding_format": "base64"}).json()
    decoded = [list(struct.unpack(f"<{len(v)}f", base64.b64decode(d["embedding"])))
               for d, v in zip(raw["data"], vectors)]
    for got, want in zip(decoded, vectors):
        assert got == pytest.approx(want, abs=1e-6)
    # the SDK's default asks for base64 and decodes it itself
    assert c.embeddings.create(model=llm, input="alpha one").data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert len(c.embeddings.create(model=llm, input="x", dimensions=16).data[0].embedding) == 16


def test_image_generation(srv):
    r = client(srv).images.generate(model=IMAGE, prompt="a red square", size="1024x1024", response_format="b64_json")
    assert base64.b64decode(r.data[0].b64_json).startswith(b"\x89PNG")
    assert srv.upstream.last_request.json == {"model": "dall-e-3", "prompt": "a red square", "n": 1,
                                              "size": "1024x1024", "response_format": "b64_json"}


# --------------------------------------------------------------------------------------------------
# LangChain's ChatOpenAI pointed at the gateway


def test_langchain_chat_openai(srv):
    lc = pytest.importorskip("langchain_openai")
    model = lc.ChatOpenAI(model=FAKE, base_url=srv.base_url, api_key=KEY, max_retries=0, stream_usage=True)
    srv.fake.script(text="hello there")
    assert model.invoke("hi").content == "hello there"
    srv.fake.script(tool_calls=[("get_weather", {"city": "Rome"})])
    msg = model.bind_tools([TOOL], tool_choice="get_weather").invoke("weather in Rome?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Rome"}
    srv.fake.script(text="streamed reply here")
    chunks = list(model.stream("hi"))
    total = chunks[0]
    for ch in chunks[1:]:
        total = total + ch
    assert total.content == "streamed reply here"
    assert total.usage_metadata and total.usage_metadata["output_tokens"] > 0
    srv.fake.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    streamed = None
    for ch in model.bind_tools([TOOL]).stream("weather in Oslo?"):
        streamed = ch if streamed is None else streamed + ch
    assert streamed.tool_calls[0]["args"] == {"city": "Oslo"}
    srv.fake.script(text='{"name": "Ada", "age": 36}')
    out = model.with_structured_output(SCHEMA | {"title": "person"}, method="json_schema").invoke("who?")
    assert out == {"name": "Ada", "age": 36}


# --------------------------------------------------------------------------------------------------
# errors, over plain HTTP


def test_authentication(srv):
    r = httpx.post(srv.url + "/v1/chat/completions", json={"model": FAKE, "messages": USER})
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    r = post(srv, "/v1/chat/completions", {"model": FAKE, "messages": USER}, key="sk-wrong")
    assert r.status_code == 401 and "sk-wrong" not in r.text
    assert httpx.get(srv.url + "/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(srv, "sk-wrong").models.list()


def test_per_key_allow_list(srv):
    r = post(srv, "/v1/chat/completions", {"model": CHAT, "messages": USER}, key=LIMITED)
    assert r.status_code == 404 and error_of(r)["code"] == "model_not_found"
    assert srv.upstream.requests == []
    srv.fake.script(text="allowed")
    r = post(srv, "/v1/chat/completions", {"model": FAKE, "messages": USER}, key=LIMITED)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "allowed"
    assert srv.records[-1].key_name == "bob"


@pytest.mark.parametrize("body,status,param,code", [
    ({"model": "openai:oa:gpt-9", "messages": USER}, 404, "model", "model_not_found"),
    ({"model": "not-an-id", "messages": USER}, 404, "model", "model_not_found"),
    ({"model": FAKE_EMBED, "messages": USER}, 400, "model", "unsupported_model"),
    ({"messages": USER}, 400, "model", "missing_required_parameter"),
    ({"model": FAKE, "messages": []}, 400, "messages", "invalid_value"),
    ({"model": FAKE, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "invalid_value"),
    ({"model": FAKE, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0]", "invalid_value"),
    ({"model": FAKE, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].tool_call_id",
     "missing_required_parameter"),
    ({"model": FAKE, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64"}}]}]}, 400, "messages[0].content[0].image_url.url", "invalid_image_url"),
    ({"model": FAKE, "messages": USER, "temperature": 5}, 400, "temperature", "invalid_value"),
    ({"model": FAKE, "messages": USER, "temperature": "hot"}, 400, "temperature", "invalid_value"),
    ({"model": FAKE, "messages": USER, "max_completion_tokens": 0}, 400, "max_completion_tokens", "invalid_value"),
    ({"model": FAKE, "messages": USER, "top_logprobs": 3}, 400, "top_logprobs", "invalid_value"),
    ({"model": FAKE, "messages": USER, "tool_choice": "required"}, 400, "tool_choice", "invalid_value"),
    ({"model": FAKE, "messages": USER, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     400, "tools", "invalid_value"),
    ({"model": FAKE, "messages": USER, "n": 2}, 400, "n", "invalid_value"),
    ({"model": FAKE, "messages": USER, "stream_options": {"include_usage": True}}, 400, "stream_options", None),
    ({"model": FAKE, "messages": USER, "frobnicate": 1}, 400, "frobnicate", "unknown_parameter"),
    ({"model": CHAT, "messages": USER, "top_k": 5}, 400, "top_k", "invalid_value"),  # openai has no top-k
])
def test_bad_requests_name_the_field(srv, body, status, param, code):
    r = post(srv, "/v1/chat/completions", body)
    err = error_of(r)
    assert (r.status_code, err["param"], err["code"]) == (status, param, code), err
    assert err["type"] == "invalid_request_error"
    assert srv.upstream.requests == [], "a bad request never reaches the provider"


@pytest.mark.parametrize("path,body,param", [
    ("/v1/embeddings", {"model": FAKE_EMBED, "input": []}, "input"),
    ("/v1/embeddings", {"model": FAKE_EMBED, "input": [1, 10_000_000]}, "input"),  # outside cl100k_base
    ("/v1/embeddings", {"model": FAKE_EMBED, "input": [[1], []]}, "input"),
    ("/v1/embeddings", {"model": FAKE_EMBED, "input": [1, "x"]}, "input"),
    ("/v1/embeddings", {"model": FAKE_EMBED, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ("/v1/embeddings", {"model": FAKE_EMBED, "input": "x", "dimensions": 0}, "dimensions"),
    ("/v1/embeddings", {"model": FAKE, "input": "x"}, "model"),
    ("/v1/images/generations", {"model": IMAGE, "prompt": "x", "size": "big"}, "size"),
    ("/v1/images/generations", {"model": IMAGE, "prompt": "x", "response_format": "url"}, "response_format"),
    ("/v1/images/generations", {"model": FAKE, "prompt": "x"}, "model"),
])
def test_bad_embedding_and_image_requests(srv, path, body, param):
    r = post(srv, path, body)
    assert r.status_code == 400 and error_of(r)["param"] == param


@pytest.mark.parametrize("raw", [b"{", b"", b"[1, 2]", b"null", "{\"model\": \"\u00e9\"".encode()])
def test_bad_json_is_a_400(srv, raw):
    r = post(srv, "/v1/chat/completions", raw)
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"


def test_unknown_route_and_method(srv):
    assert httpx.get(srv.url + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
    assert httpx.get(srv.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}).status_code == 405


def test_upstream_429_is_passed_on_with_retry_after(srv):
    srv.upstream.script(status=429, error_message="slow down", headers={"retry-after": "7"})
    r = post(srv, "/v1/chat/completions", {"model": CHAT, "messages": USER})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert error_of(r)["code"] == "rate_limit_exceeded" and "slow down" in error_of(r)["message"]
    srv.upstream.script(status=429, error_message="slow down", headers={"retry-after": "2"})
    r = post(srv, "/v1/chat/completions", {"model": CHAT, "messages": USER, "stream": True})
    assert r.status_code == 429 and r.headers["retry-after"] == "2", "a stream that fails first keeps its status"
    srv.fake.script(error=RateLimitError("busy", status=429, retry_after=0.2))
    r = post(srv, "/v1/chat/completions", {"model": FAKE, "messages": USER})
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


@pytest.mark.parametrize("script,status,code", [
    ({"status": 500, "error_message": "boom"}, 502, "upstream_error"),
    ({"status": 503, "error_message": "overloaded"}, 502, "upstream_error"),
    ({"status": 401, "error_message": "bad key"}, 502, "upstream_authentication_failed"),
    ({"text": "late", "delay": 3.0}, 504, "upstream_timeout"),
])
def test_upstream_failures_are_gateway_errors(srv, script, status, code):
    srv.upstream.script(**script)
    r = post(srv, "/v1/chat/completions", {"model": CHAT, "messages": USER})
    assert r.status_code == status and error_of(r)["code"] == code and error_of(r)["type"] == "server_error"


def test_unreachable_upstream_is_a_502():
    mesh = Mesh.from_config({"connections": {"dead": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                                                      "max_retries": 0, "models": [{"id": "m"}]}}})
    with RunningServer(mesh) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "openai_compatible:dead:m", "messages": USER})
    assert r.status_code == 502 and "cannot reach" in error_of(r)["message"]


def test_an_error_after_the_stream_started_is_an_error_event(srv):
    srv.fake.script(text="one two three four five", cut_after=2)
    with pytest.raises(openai.APIError, match="cut"):
        for _ in client(srv).chat.completions.create(model=FAKE, messages=USER, stream=True):
            pass


def _wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_cancels_the_upstream_call(srv, stream):
    tag = f"disconnect-{stream}"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=0.5,
                   json={"model": SLOW, "messages": [{"role": "user", "content": tag}], "stream": stream})
    _wait_for(lambda: tag in SlowConnection.cancelled)
    assert tag in SlowConnection.started
    _wait_for(lambda: any(r.llm_id == SLOW and r.status == 499 for r in srv.records))


def test_client_disconnect_closes_the_upstream_stream(srv):
    srv.upstream.script(text=" ".join(["word"] * 200), chunk_delay=0.05)
    with httpx.stream("POST", srv.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": CHAT, "messages": USER, "stream": True}, timeout=5) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    # the gateway let go of the upstream: it sees the reader gone long before the 10 s answer ends
    _wait_for(lambda: any(x.status == 499 and x.llm_id == CHAT for x in srv.records))


# --------------------------------------------------------------------------------------------------
# startup rules, and the package stays light


def test_no_keys_means_loopback_only(caplog):
    from langchain_mesh.config import ServerConfig
    from langchain_mesh.server.auth import KeyRing, check_bind

    open_ring = KeyRing(ServerConfig())
    with pytest.raises(ConfigError, match="without API keys"):
        check_bind("0.0.0.0", open_ring)
    with caplog.at_level("WARNING", logger="langchain_mesh.server"):
        check_bind("127.0.0.1", open_ring)
        check_bind("::1", open_ring)
    assert "UNAUTHENTICATED" in caplog.text
    check_bind("0.0.0.0", KeyRing(ServerConfig(api_keys=[{"key": "k"}])))  # keys: any address


def test_keys_may_be_secret_references_and_are_kept_hashed(monkeypatch):
    from langchain_mesh.config import ServerConfig
    from langchain_mesh.server.auth import KeyRing
    from langchain_mesh.server.errors import APIError

    monkeypatch.setenv("MESH_TEST_KEY", "sk-from-env")
    ring = KeyRing(ServerConfig(api_keys=[{"key": "{{env:MESH_TEST_KEY}}", "name": "ci", "allowed_llms": [FAKE]}]))
    assert "sk-from-env" not in repr(vars(ring))
    who = ring.authenticate(b"Bearer sk-from-env")
    assert who.name == "ci" and who.allows(FAKE) and not who.allows(CHAT)
    with pytest.raises(APIError):
        ring.authenticate(b"Bearer sk-from-env-not")


def test_cli_serve_refuses_a_public_address_without_keys(tmp_path, capsys):
    from langchain_mesh.cli import main

    cfg = tmp_path / "mesh.yaml"
    cfg.write_text("connections: {fake: {type: scripted}}\n")
    assert main(["serve", "--config", str(cfg), "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "without API keys" in capsys.readouterr().err


def test_import_langchain_mesh_does_not_load_the_server():
    import subprocess
    import sys

    code = "import sys, langchain_mesh; print(any(m.startswith(('langchain_mesh.server', 'uvicorn', 'aiohttp')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# the embedded default: local SmolLM2 + MiniLM through the SDK


@pytest.mark.local_model
def test_serves_the_embedded_default_local_models():
    with RunningServer(Mesh()) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=300)
        ids = [m.id for m in c.models.list()]
        chat_id = next(i for i in ids if "SmolLM2" in i)
        emb_id = next(i for i in ids if "MiniLM" in i)
        r = c.chat.completions.create(model=chat_id, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
        assert r.choices[0].message.content and r.usage.completion_tokens > 0
        e = c.embeddings.create(model=emb_id, input=["The quick brown fox"], encoding_format="float")
        assert len(e.data[0].embedding) == 384
