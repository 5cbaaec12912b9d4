"""The ``cohere`` connection: the real ``cohere`` SDK (ClientV2 / AsyncClientV2) against the local Cohere v2
server, with assertions on the exact request the server received."""

from __future__ import annotations

import base64
import json

import pytest

pytest.importorskip("cohere")

from _transport_checks import assert_refused, assert_times_out  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    CredentialError,
    NotFoundError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import EmbeddingRequest, Message, StreamChunk, StreamFooter  # noqa: E402
from langchain_mesh.testing.cohere import CHAT_PATH, EMBED_PATH, CohereServer  # noqa: E402
from langchain_mesh.testing.wire import free_port  # noqa: E402

KEY = "co-s3cret-key-0123456789"
CHAT = "command-a-03-2025"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Time in a city",
                                         "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def srv():
    with CohereServer(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(srv):
    srv.reset()


def _config(srv, **conn):
    return {"connections": {"co": {"type": "cohere", "api_key": KEY, "base_url": srv.url, "max_retries": 0,
                                   "timeout": 5, **conn}}}


@pytest.fixture
def mesh(srv):
    m = Mesh.from_config(_config(srv))
    yield m
    m.close()


def _llm(mesh, model=CHAT):
    return mesh.get_llm(f"cohere:co:{model}")



# --------------------------------------------------------------------------------------------------
# chat


def test_complete_sends_v2_body_and_reads_answer(srv, mesh):
    srv.script(text="Paris.", usage={"input_tokens": 12, "output_tokens": 2})
    q = _llm(mesh).new_completion().with_message("Be brief.", role="system").with_message("Capital of France?")
    q.settings.update(temperature=0.2, topP=0.9, topK=40, maxOutputTokens=50, stopSequences=["\n\n"], seed=7,
                      frequencyPenalty=0.1, presencePenalty=0.2)
    resp = q.execute()

    assert (resp.text, resp.finish_reason, resp.model) == ("Paris.", "stop", CHAT)
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (12, 2)  # the billed units
    req = srv.last_request
    assert (req.method, req.path) == ("POST", CHAT_PATH)
    assert req.headers["Authorization"] == f"Bearer {KEY}" and req.headers["X-Client-Name"] == "langchain-mesh"
    assert req.json == {
        "model": CHAT, "stream": False,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        "temperature": 0.2, "p": 0.9, "k": 40, "max_tokens": 50, "stop_sequences": ["\n\n"], "seed": 7,
        "frequency_penalty": 0.1, "presence_penalty": 0.2}


def test_unscripted_echo_and_length(srv, mesh):
    q = _llm(mesh).new_completion().with_message("one two three four")
    q.settings["maxOutputTokens"] = 2
    resp = q.execute()
    assert (resp.text, resp.finish_reason) == ("one two ", "length")


def test_stream_text_then_footer_with_usage(srv, mesh):
    srv.script(text="Snow is frozen water.")
    events = list(_llm(mesh).new_completion().with_message("What is snow?").execute_streamed())
    chunks, footer = events[:-1], events[-1]
    assert all(isinstance(c, StreamChunk) for c in chunks) and len(chunks) == 4
    assert "".join(c.text for c in chunks) == "Snow is frozen water."
    assert isinstance(footer, StreamFooter) and footer.finish_reason == "stop" and footer.usage.output_tokens == 5
    assert srv.last_request.json["stream"] is True


def test_logprobs(srv, mesh):
    srv.script(text="a b")
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings["logProbs"] = True
    resp = q.execute()
    assert [(lp.token, lp.logprob) for lp in resp.log_probs] == [("a ", -0.25), ("b", -0.25)]
    assert srv.last_request.json["logprobs"] is True
    srv.script(text="a b")
    chunks = list(q.execute_streamed())[:-1]
    assert [c.log_probs[0].token for c in chunks] == ["a ", "b"]


async def test_async_complete_stream_and_embed(srv):
    with Mesh.from_config(_config(srv)) as mesh:
        srv.script(text="async answer")
        assert (await _llm(mesh).new_completion().with_message("hi").aexecute()).text == "async answer"
        srv.script(text="async stream")
        events = [e async for e in _llm(mesh).new_completion().with_message("hi").aexecute_streamed()]
        assert "".join(e.text for e in events[:-1]) == "async stream" and isinstance(events[-1], StreamFooter)
        emb = await _llm(mesh, "embed-english-v3.0").new_embeddings().add_text("a").aexecute()
        assert len(emb.embeddings[0]) == 1024 and srv.last_request.path == EMBED_PATH


# --------------------------------------------------------------------------------------------------
# tools and JSON


def test_tool_call_round_trip_keeps_ids_plan_and_results(srv, mesh):
    llm = _llm(mesh)
    srv.script(text="I will look it up.", tool_calls=[("get_weather", {"city": "Oslo"})])
    q = llm.new_completion().with_message("Weather in Oslo?")
    q.settings.update(tools=[WEATHER, TIME], toolChoice="required")
    resp = q.execute()
    assert resp.finish_reason == "tool_calls" and resp.text == "I will look it up."
    call = resp.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.parsed_arguments() == {"city": "Oslo"}
    body = srv.last_request.json
    assert body["tools"] == [WEATHER, {"type": "function", "function": {
        "name": "get_time", "description": "Time in a city", "parameters": {"type": "object", "properties": {}}}}]
    assert body["tool_choice"] == "REQUIRED"

    srv.script(text="It is sunny in Oslo.")
    q2 = llm.new_completion().with_message("Weather in Oslo?")
    # the assistant turn with its text: Cohere's tool plan goes back with the calls
    q2.messages.append(Message(role="assistant", content=resp.text, tool_calls=resp.tool_calls))
    q2.with_tool_output({"sky": "sunny"}, call.id)
    q2.settings["tools"] = [WEATHER]
    assert q2.execute().text == "It is sunny in Oslo."
    assert srv.last_request.json["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "tool_plan": "I will look it up.", "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
    ]


def test_streamed_tool_calls_arrive_as_indexed_fragments(srv, mesh):
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})])
    q = _llm(mesh).new_completion().with_message("Weather in Oslo and Bergen?")
    q.settings.update(tools=[WEATHER])
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
    assert "tool_choice" not in srv.last_request.json  # auto is Cohere's default


def test_tool_choice_none_and_named_tool(srv, mesh):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings.update(tools=[WEATHER, TIME], toolChoice="none")
    q.execute()
    assert srv.last_request.json["tool_choice"] == "NONE"
    q.settings["toolChoice"] = "get_time"  # no named choice on Cohere: the only tool, required
    q.execute()
    body = srv.last_request.json
    assert body["tool_choice"] == "REQUIRED" and [t["function"]["name"] for t in body["tools"]] == ["get_time"]


def test_json_output(srv, mesh):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    srv.script(text='{"city": "Paris"}')
    resp = _llm(mesh).new_completion().with_message("Where?").with_json_output(schema).execute()
    assert resp.json == {"city": "Paris"}
    assert srv.last_request.json["response_format"] == {"type": "json_object", "json_schema": schema}
    _llm(mesh).new_completion().with_message("Any JSON").with_json_output().execute()
    assert srv.last_request.json["response_format"] == {"type": "json_object"}


def test_extra_keys_pass_through(srv, mesh):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings["extra"] = {"safety_mode": "STRICT"}
    q.execute()
    assert srv.last_request.json["safety_mode"] == "STRICT"
    q.settings["extra"] = {"temperature": 1}
    q.settings["temperature"] = 0.5
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert ei.value.settings == ["extra"]


# --------------------------------------------------------------------------------------------------
# images, capabilities, settings


def test_images_for_vision_models(srv, mesh):
    srv.script(text="A tiny picture.")
    (_llm(mesh, "command-a-vision-07-2025").new_completion().new_multipart_message().with_text("Describe:")
     .with_inline_image(PNG).with_image_url("https://img.test/cat.jpg", detail="low").add().execute())
    assert srv.last_request.json["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Describe:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
        {"type": "image_url", "image_url": {"url": "https://img.test/cat.jpg", "detail": "low"}}]}]


def test_capabilities_and_unsupported_settings_refused_before_sending(srv, mesh):
    with pytest.raises(CapabilityError, match="image input"):
        _llm(mesh).new_completion().new_multipart_message().with_inline_image(PNG).add().execute()
    legacy = _llm(mesh, "command").new_completion().with_message("hi")
    legacy.settings["tools"] = [WEATHER]
    with pytest.raises(CapabilityError, match="tool calling"):
        legacy.execute_streamed()
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings.update(logitBias={"12": 5.0}, logProbs=True, topLogProbs=3)
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert sorted(ei.value.settings) == ["logitBias", "topLogProbs"]
    assert srv.requests == []


# --------------------------------------------------------------------------------------------------
# embeddings


def test_embeddings_input_types_and_batches_of_96(srv, mesh):
    llm = _llm(mesh, "embed-english-v3.0")
    texts = [f"text {i}" for i in range(100)]
    resp = llm.new_embeddings().add_texts(texts).execute()
    assert len(resp.embeddings) == 100 and len(resp.embeddings[0]) == 1024
    assert [len(r.json["texts"]) for r in srv.requests] == [96, 4]
    assert srv.requests[0].json == {"model": "embed-english-v3.0", "texts": texts[:96],
                                    "input_type": "search_document", "embedding_types": ["float"]}
    assert resp.usage.input_tokens == 200

    q = llm.new_embeddings().add_text("where is snow")
    q.settings["input_type"] = "query"
    q.execute()
    assert srv.last_request.json["input_type"] == "search_query"


def test_embed_dimensions_only_on_v4_and_connection_default_input_type(srv):
    with Mesh.from_config(_config(srv, embedding_input_type="clustering")) as mesh:
        conn = mesh.connection("co")
        resp = conn.embed("embed-v4.0", EmbeddingRequest(texts=["a"], dimensions=256))
        assert len(resp.embeddings[0]) == 256
        assert srv.last_request.json == {"model": "embed-v4.0", "texts": ["a"], "input_type": "clustering",
                                         "embedding_types": ["float"], "output_dimension": 256}
        with pytest.raises(SettingsError, match="embed-v4"):
            conn.embed("embed-english-v3.0", EmbeddingRequest(texts=["a"], dimensions=256))


# --------------------------------------------------------------------------------------------------
# errors


def test_401_wrong_key_does_not_leak_it(srv):
    with Mesh.from_config(_config(srv, api_key="wrong-key-value")) as mesh:
        with pytest.raises(AuthenticationError) as ei:
            _llm(mesh).new_completion().with_message("hi").execute()
        with pytest.raises(AuthenticationError):
            list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
        shown = [str(ei.value), repr(ei.value), repr(mesh.connection("co").config)]
    assert ei.value.status == 401 and ei.value.provider_message == "invalid api token"
    assert not any("wrong-key-value" in s for s in shown)


def test_default_key_is_co_api_key_resolved_at_first_use(srv, monkeypatch):
    monkeypatch.delenv("CO_API_KEY", raising=False)
    cfg = _config(srv)
    del cfg["connections"]["co"]["api_key"]
    with Mesh.from_config(cfg) as mesh:
        with pytest.raises(CredentialError, match="CO_API_KEY"):
            _llm(mesh).new_completion().with_message("hi").execute()
        monkeypatch.setenv("CO_API_KEY", KEY)
        assert _llm(mesh).new_completion().with_message("hi").execute().text == "hi"


def test_400_and_404(srv):
    cfg = _config(srv, models=[{"id": "embed-nope", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}])
    with Mesh.from_config(cfg) as mesh, pytest.raises(BadRequestError) as ei:
        _llm(mesh, "embed-nope").new_embeddings().add_text("a").execute()
    assert ei.value.status == 400 and "model 'embed-nope' not found" in ei.value.provider_message
    with Mesh.from_config(_config(srv, base_url=srv.url + "/elsewhere")) as other:
        with pytest.raises(NotFoundError):
            _llm(other).new_completion().with_message("hi").execute()


@pytest.mark.parametrize("status, cls", [(429, RateLimitError), (500, ServerError), (503, ServerError)])
def test_status_errors_carry_message_and_retry_after(srv, mesh, status, cls):
    srv.script(status=status, error_message="slow down", headers={"Retry-After": "2"})
    with pytest.raises(cls) as ei:
        _llm(mesh).new_completion().with_message("hi").execute()
    assert (ei.value.status, ei.value.provider_message, ei.value.retry_after) == (status, "slow down", 2.0)
    srv.script(status=status, error_message="slow down")
    with pytest.raises(cls):
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert len(srv.requests) == 2  # the SDK did not retry


def test_mesh_policy_retries_the_typed_error(srv):
    srv.script(status=429, error_message="slow down", headers={"Retry-After": "0"})
    srv.script(text="second time lucky")
    with Mesh.from_config(_config(srv, max_retries=1)) as mesh:
        assert _llm(mesh).new_completion().with_message("hi").execute().text == "second time lucky"
    assert len(srv.requests) == 2


async def test_timeout_and_refused_connection(srv):
    with Mesh.from_config(_config(srv, timeout=0.3)) as mesh:
        await assert_times_out(srv, _llm(mesh), 1.0, within=2.0)
    with Mesh.from_config(_config(srv, base_url=f"http://127.0.0.1:{free_port()}")) as mesh:
        assert_refused(_llm(mesh))


async def test_cut_stream_is_interrupted_with_partial_text(srv, mesh):
    srv.script(text="one two three four five", cut_after=4)  # message-start, content-start, 2 deltas
    seen = []
    with pytest.raises(StreamInterruptedError) as ei:
        for ev in _llm(mesh).new_completion().with_message("count").execute_streamed():
            seen.append(ev)
    assert ei.value.partial_text == "one two " and ei.value.retryable
    assert not any(isinstance(e, StreamFooter) for e in seen)
    srv.script(text="one two three four five", cut_after=5)
    with pytest.raises(StreamInterruptedError) as ei:
        async for _ in _llm(mesh).new_completion().with_message("count").aexecute_streamed():
            pass
    assert ei.value.partial_text == "one two three "


# --------------------------------------------------------------------------------------------------
# fixture and LangChain


def test_cohere_server_fixture(cohere_server):
    with Mesh.from_config({"connections": {"co": {"type": "cohere", "api_key": "test-key",
                                                  "base_url": cohere_server.url}}}) as mesh:
        cohere_server.script(text="from the fixture")
        assert _llm(mesh).new_completion().with_message("hi").execute().text == "from the fixture"


def test_langchain_chat_model_invoke_stream_and_tools(srv, mesh):
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from langchain_mesh.langchain import MeshChatModel

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    chat = MeshChatModel(model=f"cohere:co:{CHAT}", mesh=mesh, temperature=0.1)
    srv.script(text="Hello from Cohere.")
    assert chat.invoke("Say hello").content == "Hello from Cohere."
    assert srv.last_request.json["temperature"] == 0.1
    srv.script(text="Streaming from Cohere.")
    assert "".join(c.content for c in chat.stream("Stream please")) == "Streaming from Cohere."
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    msg = chat.bind_tools([get_weather]).invoke("Weather in Oslo?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Oslo"}
    assert srv.last_request.json["tools"][0]["function"]["name"] == "get_weather"
