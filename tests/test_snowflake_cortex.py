"""The ``snowflake_cortex`` connection against the local Cortex inference REST API server.

Everything goes through ``Mesh.from_config`` and the seed-style builders, and each test checks both
what came back and the exact wire request the server received (path, headers, JSON body).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from _transport_checks import assert_refused, assert_times_out

from langchain_mesh import Mesh
from langchain_mesh.config import load_config
from langchain_mesh.connections import snowflake_cortex_wire as wire
from langchain_mesh.errors import (
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    ConfigError,
    CredentialError,
    NotFoundError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import StreamChunk, StreamFooter
from langchain_mesh.testing.snowflake_cortex import COMPLETE_PATH, EMBED_PATH, SnowflakeCortexServer
from langchain_mesh.testing.wire import free_port

PAT = "pat-s3cret-value-0123456789"
CHAT = "snowflake_cortex:sf:claude-3-5-sonnet"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_SPEC = {"tool_spec": {"type": "generic", "name": "get_weather", "description": "Weather for a city",
                              "input_schema": WEATHER["function"]["parameters"]}}


@pytest.fixture(scope="module")
def srv():
    models = ["claude-3-5-sonnet", "mistral-large2", "llama3.1-70b"]
    with SnowflakeCortexServer(token=PAT, models=models,
                               embedding_models={"snowflake-arctic-embed-l-v2.0": 1024}) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(srv):
    srv.reset()


def _config(srv, **conn):
    sf = {"type": "snowflake_cortex", "base_url": srv.url, "token": PAT, "max_retries": 0, "timeout": 5, **conn}
    return {"connections": {"sf": sf}}


@pytest.fixture
def mesh(srv):
    m = Mesh.from_config(_config(srv))
    yield m
    m.close()


def _llm(mesh, model="claude-3-5-sonnet"):
    return mesh.get_llm(f"snowflake_cortex:sf:{model}")



# --------------------------------------------------------------------------------------------------
# completion


def test_complete_sends_cortex_body_and_reads_answer(srv, mesh):
    srv.script(text="Paris.", usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14})
    q = _llm(mesh).new_completion().with_message("Be brief.", role="system").with_message("Capital of France?")
    q.settings.update(temperature=0.2, topP=0.9, maxOutputTokens=50, logProbs=False)
    resp = q.execute()

    assert (resp.text, resp.finish_reason, resp.model) == ("Paris.", "stop", "claude-3-5-sonnet")
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (12, 2, 14)
    req = srv.last_request
    assert (req.method, req.path) == ("POST", COMPLETE_PATH)
    assert req.headers["Authorization"] == f"Bearer {PAT}"
    assert req.headers["X-Snowflake-Authorization-Token-Type"] == "PROGRAMMATIC_ACCESS_TOKEN"
    assert req.headers["Accept"] == "application/json"
    assert req.headers["Content-Type"] == "application/json"
    assert req.json == {
        "model": "claude-3-5-sonnet", "stream": False,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 50,
    }


def test_complete_unscripted_echoes_and_reports_length(srv, mesh):
    q = _llm(mesh, "mistral-large2").new_completion().with_message("one two three four five")
    q.settings["maxOutputTokens"] = 2
    resp = q.execute()
    assert (resp.text, resp.finish_reason) == ("one two ", "length")


def test_stream_text_chunks_then_one_footer(srv, mesh):
    srv.script(text="Snow is frozen water.")
    events = list(_llm(mesh).new_completion().with_message("What is snow?").execute_streamed())

    chunks, footer = events[:-1], events[-1]
    assert all(isinstance(c, StreamChunk) for c in chunks) and len(chunks) == 4
    assert "".join(c.text for c in chunks) == "Snow is frozen water."
    assert isinstance(footer, StreamFooter)
    assert footer.finish_reason == "stop" and footer.tool_calls == []
    assert footer.usage.output_tokens == 5 and footer.usage.input_tokens == 4  # the last, cumulative usage
    req = srv.last_request
    assert req.json["stream"] is True and req.headers["Accept"] == "text/event-stream"


async def test_async_complete_stream_and_embed(srv):
    with Mesh.from_config(_config(srv)) as mesh:
        await _async_round_trips(srv, mesh)
    await asyncio.sleep(0.01)  # close() hands the async client's aclose to this loop: let it run


async def _async_round_trips(srv, mesh):
    llm = _llm(mesh)
    srv.script(text="async answer")
    resp = await llm.new_completion().with_message("hi").aexecute()
    assert resp.text == "async answer" and srv.last_request.json["stream"] is False

    srv.script(text="streamed async answer")
    events = [ev async for ev in llm.new_completion().with_message("hi").aexecute_streamed()]
    assert "".join(e.text for e in events[:-1]) == "streamed async answer"
    assert isinstance(events[-1], StreamFooter) and events[-1].finish_reason == "stop"

    emb = await mesh.get_llm("snowflake_cortex:sf:snowflake-arctic-embed-l-v2.0").new_embeddings() \
        .add_text("a").aexecute()
    assert len(emb.embeddings[0]) == 1024 and srv.last_request.path == EMBED_PATH


# --------------------------------------------------------------------------------------------------
# tools and structured output


def test_tool_call_round_trip(srv, mesh):
    llm = _llm(mesh)
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    q = llm.new_completion().with_message("Weather in Oslo?")
    q.settings.update(tools=[WEATHER], toolChoice="get_weather")
    resp = q.execute()

    assert resp.finish_reason == "tool_calls" and resp.text == ""
    call = resp.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.parsed_arguments() == {"city": "Oslo"}
    body = srv.last_request.json
    assert body["tools"] == [WEATHER_SPEC]
    assert body["tool_choice"] == {"type": "tool", "name": ["get_weather"]}

    srv.script(text="It is sunny in Oslo.")
    q2 = (llm.new_completion().with_message("Weather in Oslo?").with_tool_calls([call])
          .with_tool_output({"sky": "sunny"}, call.id))
    q2.settings["tools"] = [WEATHER]
    assert q2.execute().text == "It is sunny in Oslo."
    assert srv.last_request.json["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "content_list": [{"type": "tool_use", "tool_use": {
            "tool_use_id": call.id, "name": "get_weather", "input": {"city": "Oslo"}}}]},
        {"role": "user", "content": wire.TOOL_RESULTS_CONTENT, "content_list": [
            {"type": "tool_results", "tool_results": {"tool_use_id": call.id, "name": "get_weather",
                                                      "content": [{"type": "text", "text": '{"sky": "sunny"}'}]}}]},
    ]


def test_streamed_tool_calls_arrive_as_indexed_fragments(srv, mesh):
    srv.script(text="Checking.", tool_calls=[("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})])
    q = _llm(mesh).new_completion().with_message("Weather in Oslo and Bergen?")
    q.settings.update(tools=[WEATHER], toolChoice="required")
    events = list(q.execute_streamed())

    deltas = [d for e in events[:-1] for d in e.tool_call_deltas]
    opening = [d for d in deltas if d.id]
    assert [(d.index, d.name) for d in opening] == [(0, "get_weather"), (1, "get_weather")]
    assert len([d for d in deltas if d.index == 0 and d.arguments]) > 1  # the arguments come in pieces
    assert json.loads("".join(d.arguments for d in deltas if d.index == 1)) == {"city": "Bergen"}
    footer = events[-1]
    assert footer.finish_reason == "tool_calls"
    assert [c.function.parsed_arguments() for c in footer.tool_calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert [c.id for c in footer.tool_calls] == [d.id for d in opening]
    assert "".join(e.text or "" for e in events[:-1]) == "Checking."
    assert srv.last_request.json["tool_choice"] == {"type": "required"}


@pytest.mark.parametrize("choice", ["auto", "none"])
def test_tool_choice_spellings(srv, mesh, choice):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings.update(tools=[WEATHER], toolChoice=choice)
    q.execute()
    assert srv.last_request.json["tool_choice"] == {"type": choice}


def test_structured_output(srv, mesh):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    srv.script(text='{"city": "Paris"}')
    resp = _llm(mesh, "llama3.1-70b").new_completion().with_message("Where?").with_json_output(schema).execute()
    assert resp.json == {"city": "Paris"}
    assert srv.last_request.json["response_format"] == {"type": "json", "schema": schema}

    srv.script(text="{}")
    _llm(mesh, "llama3.1-70b").new_completion().with_message("Any JSON").with_json_output().execute()
    assert srv.last_request.json["response_format"] == {"type": "json", "schema": {"type": "object"}}


def test_extra_keys_pass_through_but_cannot_replace_built_ones(srv, mesh):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings["extra"] = {"guardrails": {"enabled": True}}
    q.execute()
    assert srv.last_request.json["guardrails"] == {"enabled": True}

    q.settings["extra"] = {"max_tokens": 5}
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert ei.value.settings == ["extra"]


# --------------------------------------------------------------------------------------------------
# images, capabilities and unsupported settings


def test_inline_images_become_content_list_items(srv, mesh):
    srv.script(text="A tiny picture.")
    (_llm(mesh).new_completion().new_multipart_message().with_text("Describe:").with_inline_image(PNG)
     .with_image_url("data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff").decode(), detail="low")
     .add().execute())
    assert srv.last_request.json["messages"] == [{"role": "user", "content": "Describe:", "content_list": [
        {"type": "text", "text": "Describe:"},
        {"type": "image", "details": {"type": "base64", "content": base64.b64encode(PNG).decode(),
                                      "content_type": "image/png"}},
        {"type": "image", "details": {"type": "base64", "content": "/9j/", "content_type": "image/jpeg",
                                      "detail": "low"}},
    ]}]


def test_images_refused_where_cortex_cannot_take_them(srv, mesh):
    remote = _llm(mesh).new_completion().new_multipart_message().with_image_url("https://x.test/a.png").add()
    with pytest.raises(CapabilityError, match="inline"):
        remote.execute()
    text_only = _llm(mesh, "mistral-large2").new_completion().new_multipart_message().with_inline_image(PNG).add()
    with pytest.raises(CapabilityError, match="image input"):
        text_only.execute()
    tools_on_llama = _llm(mesh, "llama3.1-70b").new_completion().with_message("hi")
    tools_on_llama.settings["tools"] = [WEATHER]
    with pytest.raises(CapabilityError, match="tool calling"):
        tools_on_llama.execute_streamed()
    assert srv.requests == []  # refused before any network call


def test_unsupported_settings_are_named_not_dropped(srv, mesh):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings.update(topK=5, seed=7, stopSequences=["\n"], presencePenalty=0.5)
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert sorted(ei.value.settings) == ["presencePenalty", "seed", "stopSequences", "topK"]
    assert "topK" in str(ei.value) and srv.requests == []


# --------------------------------------------------------------------------------------------------
# embeddings


def test_embeddings(srv, mesh):
    llm = mesh.get_llm("snowflake_cortex:sf:snowflake-arctic-embed-l-v2.0")
    resp = llm.new_embeddings().add_texts(["snow falls", "snow falls", "rain"]).execute()
    assert len(resp.embeddings) == 3 and len(resp.embeddings[0]) == 1024
    assert resp.embeddings[0] == resp.embeddings[1] != resp.embeddings[2]
    assert resp.usage.input_tokens == 5
    req = srv.last_request
    assert (req.path, req.json) == (EMBED_PATH, {"model": "snowflake-arctic-embed-l-v2.0",
                                                 "text": ["snow falls", "snow falls", "rain"]})

    q = llm.new_embeddings().add_text("x")
    q.settings["dimensions"] = 256
    with pytest.raises(SettingsError, match="1024-dimensional"):
        q.execute()


# --------------------------------------------------------------------------------------------------
# errors


def test_400_from_request_validation(srv):
    cfg = _config(srv, models=[{"id": "claude-9"}])
    with Mesh.from_config(cfg) as mesh:
        with pytest.raises(BadRequestError) as ei:
            mesh.get_llm("snowflake_cortex:sf:claude-9").new_completion().with_message("hi").execute()
    e = ei.value
    assert e.status == 400 and e.provider == "snowflake_cortex" and e.provider_message == 'unknown model "claude-9"'


def test_401_wrong_token_does_not_leak_it(srv):
    with Mesh.from_config(_config(srv, token="wrong-token-value")) as mesh:
        llm = _llm(mesh)
        with pytest.raises(AuthenticationError) as ei:
            llm.new_completion().with_message("hi").execute()
        with pytest.raises(AuthenticationError):
            list(llm.new_completion().with_message("hi").execute_streamed())
        conn = mesh.connection("sf")
        shown = [str(ei.value), repr(ei.value), repr(conn), repr(conn.config), str(conn.config.model_dump())]
    assert ei.value.status == 401
    assert "Programmatic access token is invalid." in str(ei.value) and "390303" in str(ei.value)
    assert not any("wrong-token-value" in s for s in shown)


def test_404_unknown_endpoint(srv):
    with Mesh.from_config(_config(srv, base_url=srv.url + "/not-cortex")) as mesh:
        with pytest.raises(NotFoundError) as ei:
            _llm(mesh).new_completion().with_message("hi").execute()
    assert ei.value.status == 404 and srv.last_request.path == "/not-cortex" + COMPLETE_PATH


def test_429_carries_retry_after_and_the_connection_does_not_retry(srv, mesh):
    srv.script(status=429, error_message="Too many requests", headers={"Retry-After": "2"})
    with pytest.raises(RateLimitError) as ei:
        _llm(mesh).new_completion().with_message("hi").execute()
    assert (ei.value.retry_after, ei.value.retryable, ei.value.provider_message) == (2.0, True, "Too many requests")
    assert len(srv.requests) == 1

    srv.script(status=429, error_message="Too many requests", headers={"Retry-After": "1"})
    with pytest.raises(RateLimitError) as ei:
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert ei.value.retry_after == 1.0


def test_mesh_policy_retries_the_typed_error(srv):
    srv.script(status=429, error_message="Too many requests", headers={"Retry-After": "0"})
    srv.script(text="second time lucky")
    with Mesh.from_config(_config(srv, max_retries=1)) as mesh:
        assert _llm(mesh).new_completion().with_message("hi").execute().text == "second time lucky"
    assert len(srv.requests) == 2


def test_500_is_a_server_error(srv, mesh):
    srv.script(status=500, error_message="internal failure", error_code="000603")
    with pytest.raises(ServerError) as ei:
        _llm(mesh).new_completion().with_message("hi").execute()
    assert ei.value.status == 500 and ei.value.provider_message == "internal failure (code 000603)"


async def test_timeout(srv):
    with Mesh.from_config(_config(srv, timeout=0.3)) as mesh:
        await assert_times_out(srv, _llm(mesh), 1.0, within=2.0)


def test_refused_connection(srv):
    with Mesh.from_config(_config(srv, base_url=f"http://127.0.0.1:{free_port()}")) as mesh:
        assert_refused(_llm(mesh))


async def test_cut_stream_is_interrupted_with_partial_text(srv, mesh):
    srv.script(text="one two three four five", cut_after=2)
    seen = []
    with pytest.raises(StreamInterruptedError) as ei:
        for ev in _llm(mesh).new_completion().with_message("count").execute_streamed():
            seen.append(ev)
    assert ei.value.partial_text == "one two " and ei.value.retryable
    assert not any(isinstance(e, StreamFooter) for e in seen)

    srv.script(text="one two three four five", cut_after=3)
    with pytest.raises(StreamInterruptedError) as ei:
        async for _ in _llm(mesh).new_completion().with_message("count").aexecute_streamed():
            pass
    assert ei.value.partial_text == "one two three "


def test_empty_stream_is_interrupted(srv, mesh):
    srv.script(text="never sent", cut_after=0)
    with pytest.raises(StreamInterruptedError):
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())


# --------------------------------------------------------------------------------------------------
# authentication and configuration


@pytest.fixture(scope="module")
def rsa_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"open sesame")).decode()
    return encrypted, public


def _keypair_config(url, key_file, **extra):
    return {"connections": {"kp": {
        "type": "snowflake_cortex", "base_url": url, "account": "myorg-myaccount.us-east-1", "user": "mesh_svc",
        "private_key": "{{file:" + str(key_file) + "}}", "private_key_passphrase": "{{env:SF_KEY_PASS}}",
        "max_retries": 0, **extra}}}


def test_keypair_jwt_auth(rsa_key, tmp_path, monkeypatch):
    pem, public = rsa_key
    key_file = tmp_path / "rsa_key.p8"
    key_file.write_text(pem)
    monkeypatch.setenv("SF_KEY_PASS", "open sesame")
    signed = []
    real = wire.keypair_jwt
    monkeypatch.setattr(wire, "keypair_jwt", lambda *a, **k: signed.append(1) or real(*a, **k))

    with SnowflakeCortexServer(account="MYORG-MYACCOUNT", user="mesh_svc", public_key_pem=public) as s, \
            Mesh.from_config(_keypair_config(s.url, key_file, jwt_lifetime=600)) as mesh:
        llm = mesh.get_llm("snowflake_cortex:kp:claude-3-5-sonnet")
        s.script(text="signed in")
        assert llm.new_completion().with_message("hi").execute().text == "signed in"
        llm.new_completion().with_message("again").execute()
        assert len(signed) == 1  # the JWT is reused while fresh

        headers = s.last_request.headers
        assert headers["X-Snowflake-Authorization-Token-Type"] == "KEYPAIR_JWT"
        claims = json.loads(base64.urlsafe_b64decode(headers["Authorization"].split(".")[1] + "=="))
        assert claims["sub"] == "MYORG-MYACCOUNT.MESH_SVC"
        assert claims["iss"].startswith("MYORG-MYACCOUNT.MESH_SVC.SHA256:")
        assert claims["exp"] - claims["iat"] == 600

        creds = mesh.connection("kp")._credentials
        monkeypatch.setattr(creds, "_expires", time.time() + 30)  # nearly expired: signed again
        llm.new_completion().with_message("later").execute()
        assert len(signed) == 2


def test_keypair_jwt_rejected_for_another_key(rsa_key, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem, _ = rsa_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    key_file = tmp_path / "rsa_key.p8"
    key_file.write_text(pem)
    monkeypatch.setenv("SF_KEY_PASS", "open sesame")
    with SnowflakeCortexServer(account="MYORG-MYACCOUNT", user="MESH_SVC", public_key_pem=other) as s, \
            Mesh.from_config(_keypair_config(s.url, key_file)) as mesh:
        with pytest.raises(AuthenticationError) as ei:
            mesh.get_llm("snowflake_cortex:kp:claude-3-5-sonnet").new_completion().with_message("hi").execute()
    assert "JWT token is invalid" in str(ei.value) and "fingerprint" in str(ei.value)
    assert "PRIVATE KEY" not in str(ei.value)


def test_jwt_made_elsewhere_is_checked_by_the_server(srv):
    with Mesh.from_config(_config(srv, token="not.a-valid.jwt", token_type="KEYPAIR_JWT")) as mesh:
        with pytest.raises(AuthenticationError, match=r"JWT token is invalid\. \[header or claims") as ei:
            _llm(mesh).new_completion().with_message("hi").execute()
    assert "390144" in str(ei.value)
    assert srv.last_request.headers["X-Snowflake-Authorization-Token-Type"] == "KEYPAIR_JWT"


def test_keypair_bad_passphrase_is_a_credential_error(rsa_key, tmp_path, monkeypatch, srv):
    key_file = tmp_path / "rsa_key.p8"
    key_file.write_text(rsa_key[0])
    monkeypatch.setenv("SF_KEY_PASS", "wrong passphrase")
    with Mesh.from_config(_keypair_config(srv.url, key_file)) as mesh:
        with pytest.raises(CredentialError) as ei:
            mesh.get_llm("snowflake_cortex:kp:claude-3-5-sonnet").new_completion().with_message("hi").execute()
    assert "connections.kp" in str(ei.value) and "wrong passphrase" not in str(ei.value)
    assert srv.requests == []


def test_token_from_env_resolved_at_first_use(srv, monkeypatch):
    monkeypatch.delenv("SF_TEST_PAT", raising=False)
    cfg = _config(srv, token="{{env:SF_TEST_PAT}}", token_type="OAUTH")
    with Mesh.from_config(cfg) as mesh:  # building the mesh needs no secret
        llm = _llm(mesh)
        with pytest.raises(CredentialError, match="SF_TEST_PAT"):
            llm.new_completion().with_message("hi").execute()
        monkeypatch.setenv("SF_TEST_PAT", "oauth-token-xyz")
        with pytest.raises(AuthenticationError, match="Invalid OAuth access token"):  # the server wants the PAT
            llm.new_completion().with_message("hi").execute()
        assert "oauth-token-xyz" not in repr(mesh.connection("sf").config)
    assert srv.last_request.headers["X-Snowflake-Authorization-Token-Type"] == "OAUTH"
    assert srv.last_request.headers["Authorization"] == "Bearer oauth-token-xyz"


def test_account_builds_the_url_and_defaults_list_the_seed_models():
    with Mesh.from_config({"connections": {"sf": {"type": "snowflake_cortex", "account": "MyOrg-My_Account",
                                                  "token": "x"}}}) as mesh:
        conn = mesh.connection("sf")
        assert conn.base_url == "https://myorg-my-account.snowflakecomputing.com"
        ids = [i.id for i in mesh.list_llms()]
    for model in ("gemma-7b", "llama2-70b-chat", "mistral-7b", "mixtral-8x7b", "mistral-large", "snowflake-arctic",
                  "llama3.1-70b", "mistral-large2", "claude-3-5-sonnet"):
        assert f"snowflake_cortex:sf:{model}" in ids
    assert "snowflake_cortex:sf:snowflake-arctic-embed-l-v2.0" in ids


@pytest.mark.parametrize("conn, problem", [
    ({"account": "a"}, "either 'token'"),
    ({"account": "a", "token": "t", "private_key": "k", "user": "u"}, "either 'token'"),
    ({"base_url": "http://x", "private_key": "k", "user": "u"}, "needs 'user' and 'account'"),
    ({"token": "t"}, "give 'account'"),
    ({"account": "a", "token": "t", "token_type": "PASSWORD"}, "token_type"),
])
def test_config_problems(conn, problem):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"sf": {"type": "snowflake_cortex", **conn}}})
    assert problem in str(ei.value) and "connections.sf" in str(ei.value)


# --------------------------------------------------------------------------------------------------
# the LangChain face


def test_langchain_chat_model_invoke_stream_and_tools(srv, mesh):
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from langchain_mesh.langchain import MeshChatModel

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    chat = MeshChatModel(model=CHAT, mesh=mesh, temperature=0.1)
    srv.script(text="Hello from Cortex.")
    assert chat.invoke("Say hello").content == "Hello from Cortex."
    assert srv.last_request.json["temperature"] == 0.1

    srv.script(text="Streaming from Cortex.")
    chunks = list(chat.stream("Stream please"))
    assert "".join(c.content for c in chunks) == "Streaming from Cortex."

    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    msg = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Oslo?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Oslo"}
    body = srv.last_request.json
    assert body["tools"][0]["tool_spec"]["name"] == "get_weather"
    assert body["tool_choice"] == {"type": "tool", "name": ["get_weather"]}
