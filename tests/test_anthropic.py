"""The ``anthropic`` connection end to end: mesh -> connection -> the real ``anthropic`` SDK -> HTTP ->
the local Anthropic Messages API server, with assertions on the exact request the server received.
The last section checks the server itself (auth, validation, SSE framing) with a plain HTTP client.
"""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import pytest

pytest.importorskip("anthropic")

import httpx  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    NotFoundError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import StreamChunk, StreamFooter  # noqa: E402
from langchain_mesh.testing.anthropic import AnthropicServer  # noqa: E402
from langchain_mesh.testing.openai import make_png  # noqa: E402

MODEL = "claude-sonnet-4-5"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_WIRE = {"name": "get_weather", "description": "Weather in a city",
                "input_schema": WEATHER["function"]["parameters"]}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def conn(srv: AnthropicServer, **over: Any) -> dict[str, Any]:
    return {"type": "anthropic", "api_key": "test-key", "base_url": srv.base_url, "max_retries": 0, **over}


@pytest.fixture
def mesh(anthropic_server):
    m = Mesh.from_config({"connections": {"claude": conn(anthropic_server)}})
    yield m
    m.close()


def llm(mesh: Mesh, model: str = MODEL):
    return mesh.get_llm(f"anthropic:claude:{model}")


def sent(srv: AnthropicServer) -> dict[str, Any]:
    return srv.last_request.json


# --------------------------------------------------------------------------------------------------
# completion


def test_completion_sends_the_exact_request(anthropic_server, mesh):
    anthropic_server.script(text="Paris is the capital.")
    q = llm(mesh).new_completion().with_message("Be brief.", role="system").with_message("Capital of France?")
    q.settings.update(temperature=0.3, topK=40, topP=0.9, maxOutputTokens=64, stopSequences=["\n\n"])
    r = q.execute()
    assert (r.text, r.finish_reason, r.model) == ("Paris is the capital.", "stop", MODEL)
    assert r.usage.input_tokens == 7 and r.usage.output_tokens == 5 and r.usage.total_tokens == 12
    req = anthropic_server.last_request
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "test-key" in (req.headers.get("x-api-key"), req.headers.get("authorization", "").removeprefix("Bearer "))
    assert req.json == {"model": MODEL, "system": "Be brief.",
                        "messages": [{"role": "user", "content": "Capital of France?"}],
                        "max_tokens": 64, "temperature": 0.3, "top_k": 40, "top_p": 0.9, "stop_sequences": ["\n\n"]}


def test_max_tokens_defaults_per_model_and_from_the_config(anthropic_server):
    mesh = Mesh.from_config({"connections": {
        "claude": conn(anthropic_server, models=[{"id": "claude-3-haiku-20240307"}, {"id": MODEL},
                                                 {"id": "claude-next-preview"}]),
        "capped": conn(anthropic_server, default_max_tokens=256)}})
    for model, expected in (("claude-3-haiku-20240307", 4096), (MODEL, 8192), ("claude-next-preview", 4096)):
        llm(mesh, model).new_completion().with_message("hi").execute()
        assert sent(anthropic_server)["max_tokens"] == expected, model
    mesh.get_llm(f"anthropic:capped:{MODEL}").new_completion().with_message("hi").execute()
    assert sent(anthropic_server)["max_tokens"] == 256


def test_turns_are_merged_and_system_messages_hoisted(anthropic_server, mesh):
    q = (llm(mesh).new_completion().with_message("Rule one.", role="system").with_message("Hello")
         .with_message("Are you there?").with_message("Yes.", role="assistant").with_message("Rule two.", role="system")
         .with_message("Good."))
    assert q.execute().text == "Good."
    body = sent(anthropic_server)
    assert body["system"] == "Rule one.\n\nRule two."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "Are you there?"}]},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Good."},
    ]


def test_stop_reasons_map_to_finish_reasons(anthropic_server, mesh):
    q = llm(mesh).new_completion().with_message("alpha beta STOP gamma")
    q.settings["stopSequences"] = ["STOP"]
    r = q.execute()
    assert (r.text, r.finish_reason) == ("alpha beta ", "stop")
    q = llm(mesh).new_completion().with_message("one two three four")
    q.settings["maxOutputTokens"] = 2
    r = q.execute()
    assert (r.text, r.finish_reason) == ("one two", "length")
    anthropic_server.script(text="I can't help with that.", finish_reason="refusal")
    assert llm(mesh).new_completion().with_message("something bad").execute().finish_reason == "content_filter"


def test_usage_counts_cached_prompt_tokens(anthropic_server, mesh):
    cache = {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
    anthropic_server.script(text="cached answer", usage=cache)
    u = llm(mesh).new_completion().with_message("hi").execute().usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (130, 100, 20, 2)
    anthropic_server.script(text="cached answer", usage=cache)
    u = list(llm(mesh).new_completion().with_message("hi").execute_streamed())[-1].usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_creation_input_tokens, u.output_tokens) == (130, 100, 20, 2)


# --------------------------------------------------------------------------------------------------
# streaming


def test_streaming_text_chunks_then_one_footer(anthropic_server, mesh):
    anthropic_server.script(text="One two three four five.")
    events = list(llm(mesh).new_completion().with_message("Count").execute_streamed())
    chunks, footer = events[:-1], events[-1]
    assert all(isinstance(c, StreamChunk) for c in chunks) and len(chunks) == 5
    assert "".join(c.text for c in chunks) == "One two three four five."
    assert isinstance(footer, StreamFooter) and (footer.finish_reason, footer.model) == ("stop", MODEL)
    assert footer.usage.input_tokens == 1 and footer.usage.output_tokens == 6
    assert sent(anthropic_server)["stream"] is True


async def test_async_completion_and_stream(anthropic_server, mesh):
    anthropic_server.script(text="async answer")
    assert (await llm(mesh).new_completion().with_message("hi").aexecute()).text == "async answer"
    anthropic_server.script(tool_calls=[("get_weather", {"city": "Rome"})])
    q = llm(mesh).new_completion().with_message("Weather in Rome?")
    q.settings["tools"] = [WEATHER]
    events = [e async for e in q.aexecute_streamed()]
    assert events[-1].tool_calls[0].function.parsed_arguments() == {"city": "Rome"}
    assert events[-1].finish_reason == "tool_calls"


# --------------------------------------------------------------------------------------------------
# tools


def test_tool_call_round_trip_and_tool_choice(anthropic_server, mesh):
    anthropic_server.script(text="Let me check.", tool_calls=[("get_weather", {"city": "Paris"})])
    q = llm(mesh).new_completion().with_message("Weather in Paris?")
    q.settings.update(tools=[WEATHER], toolChoice="required")
    r = q.execute()
    assert (r.text, r.finish_reason) == ("Let me check.", "tool_calls")
    call = r.tool_calls[0]
    assert call.id.startswith("toolu_") and call.function.name == "get_weather"
    assert call.function.parsed_arguments() == {"city": "Paris"}
    assert sent(anthropic_server)["tools"] == [WEATHER_WIRE]
    assert sent(anthropic_server)["tool_choice"] == {"type": "any"}

    q = llm(mesh).new_completion().with_message("Weather in Paris?").with_tool_calls(r.tool_calls)
    q.with_tool_output({"temp_c": 21}, tool_call_id=call.id)
    q.settings.update(tools=[WEATHER], toolChoice="get_weather")
    anthropic_server.script(text="21 degrees.")
    assert q.execute().text == "21 degrees."
    body = sent(anthropic_server)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 21}'}]},
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    for choice, wire in (("auto", {"type": "auto"}), ("none", {"type": "none"})):
        q = llm(mesh).new_completion().with_message("hi")
        q.settings.update(tools=[WEATHER], toolChoice=choice)
        q.execute()
        assert sent(anthropic_server)["tool_choice"] == wire


def test_parallel_tool_results_go_back_in_one_user_turn(anthropic_server, mesh):
    anthropic_server.script(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})])
    q = llm(mesh).new_completion().with_message("Weather in Paris and Oslo?")
    q.settings["tools"] = [WEATHER]
    calls = q.execute().tool_calls
    assert [c.function.parsed_arguments()["city"] for c in calls] == ["Paris", "Oslo"]
    q = llm(mesh).new_completion().with_message("Weather in Paris and Oslo?").with_tool_calls(calls)
    q.with_tool_output("sunny", tool_call_id=calls[0].id).with_tool_output("rain", tool_call_id=calls[1].id)
    q.with_message("Which is warmer?")
    q.settings["tools"] = [WEATHER]
    q.execute()
    assert sent(anthropic_server)["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"},
        {"type": "tool_result", "tool_use_id": calls[1].id, "content": "rain"},
        {"type": "text", "text": "Which is warmer?"}]}


def test_streamed_partial_and_parallel_tool_calls(anthropic_server, mesh):
    anthropic_server.script(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo, Norway"})])
    q = llm(mesh).new_completion().with_message("Weather in Paris and Oslo?")
    q.settings["tools"] = [WEATHER]
    events = list(q.execute_streamed())
    deltas = [d for e in events if isinstance(e, StreamChunk) for d in e.tool_call_deltas]
    for i in (0, 1):
        frags = [d for d in deltas if d.index == i]
        assert len(frags) >= 3, "a call opens, then its input arrives in several fragments"
        assert frags[0].name == "get_weather" and frags[0].id
        assert all(f.name is None and f.id is None for f in frags[1:])
        assert json.loads("".join(f.arguments for f in frags))["city"] in ("Paris", "Oslo, Norway")
    footer = events[-1]
    assert footer.finish_reason == "tool_calls"
    assert [tc.function.parsed_arguments() for tc in footer.tool_calls] == [{"city": "Paris"}, {"city": "Oslo, Norway"}]


def test_a_dotted_tool_name_is_refused_before_sending(anthropic_server, mesh):
    from langchain_mesh.errors import ToolSchemaError

    q = llm(mesh).new_completion().with_message("hi")
    q.settings["tools"] = [{"type": "function", "function": {"name": "weather.get", "parameters": {"type": "object"}}}]
    with pytest.raises(ToolSchemaError, match="weather.get"):
        q.execute()
    assert anthropic_server.requests == []


# --------------------------------------------------------------------------------------------------
# JSON output, images


def test_json_output_is_a_forced_answer_tool(anthropic_server, mesh):
    anthropic_server.script(tool_calls=[("person", {"name": "Ada", "age": 36})])
    r = llm(mesh).new_completion().with_message("Who wrote the first program?").with_json_output(
        SCHEMA, strict=True, name="person").execute()
    assert (r.json, r.finish_reason, r.tool_calls) == ({"name": "Ada", "age": 36}, "stop", [])
    body = sent(anthropic_server)
    assert body["tools"][0]["name"] == "person" and body["tools"][0]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "person"}

    # unscripted, the server calls the forced tool with an instance of its schema; streamed as text
    events = list(llm(mesh).new_completion().with_message("json please").with_json_output().execute_streamed())
    assert json.loads("".join(e.text or "" for e in events[:-1])) == {}
    assert events[-1].finish_reason == "stop" and events[-1].tool_calls == []
    assert sent(anthropic_server)["tools"][0]["name"] == "json_answer"
    assert sent(anthropic_server)["tools"][0]["input_schema"] == {"type": "object"}

    q = llm(mesh).new_completion().with_message("hi").with_json_output(SCHEMA)
    q.settings["tools"] = [WEATHER]
    with pytest.raises(SettingsError, match="tools"):
        q.execute()


def test_images_inline_and_by_url(anthropic_server, mesh):
    png = make_png(4, 4)
    q = llm(mesh).new_completion()
    q.new_multipart_message().with_text("What is in these?").with_inline_image(png).with_image_url(
        "https://example.com/cat.jpg").add()
    anthropic_server.script(text="A square and a cat.")
    assert q.execute().text == "A square and a cat."
    assert sent(anthropic_server)["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(png).decode()}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


# --------------------------------------------------------------------------------------------------
# settings and capabilities refused before any request


@pytest.mark.parametrize("setting,value", [("presencePenalty", 0.5), ("frequencyPenalty", 0.5),
                                           ("logitBias", {42: 5.0}), ("logProbs", True), ("seed", 7)])
def test_unsupported_settings_are_refused_by_name(anthropic_server, mesh, setting, value):
    q = llm(mesh).new_completion().with_message("hi")
    q.settings[setting] = value
    with pytest.raises(SettingsError, match=setting) as e:
        q.execute()
    assert e.value.settings == [setting] and anthropic_server.requests == []


def test_drop_unsupported_settings_and_temperature_range(anthropic_server):
    mesh = Mesh.from_config({"connections": {"claude": conn(anthropic_server, drop_unsupported_settings=True)}})
    q = llm(mesh).new_completion().with_message("hi")
    q.settings.update(seed=7, presencePenalty=0.1, temperature=0.5)
    q.execute()
    assert set(sent(anthropic_server)) == {"model", "messages", "max_tokens", "temperature"}
    q = llm(mesh).new_completion().with_message("hi")
    q.settings["temperature"] = 1.5
    with pytest.raises(SettingsError, match="between 0 and 1"):
        q.execute()


def test_models_and_capabilities(anthropic_server):
    mesh = Mesh.from_config({"connections": {"claude": conn(anthropic_server)}})
    info = {i.id: i for i in mesh.list_llms()}
    for model in ("anthropic:claude:claude-sonnet-4-5", "anthropic:claude:claude-3-5-haiku-20241022",
                  "anthropic:claude:claude-opus-4-1-20250805", "anthropic:claude:claude-3-7-sonnet-20250219"):
        caps = info[model].capabilities
        assert caps.tools and caps.image_input and caps.json_output and caps.context_window == 200_000
    legacy = Mesh.from_config({"connections": {"claude": conn(anthropic_server, models=[{"id": "claude-2.1"}])}})
    q = llm(legacy, "claude-2.1").new_completion().with_message("hi")
    q.settings["tools"] = [WEATHER]
    with pytest.raises(CapabilityError, match="tool calling"):
        q.execute()
    assert anthropic_server.requests == []


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("status,cls,kind", [(400, BadRequestError, "invalid_request_error"),
                                             (404, NotFoundError, "not_found_error"),
                                             (429, RateLimitError, "rate_limit_error"),
                                             (500, ServerError, "api_error"), (529, ServerError, "overloaded_error")])
def test_each_status_maps_to_its_error(anthropic_server, mesh, status, cls, kind):
    anthropic_server.script(status=status, error_message=f"scripted {status}", headers={"retry-after": "7"})
    with pytest.raises(cls) as e:
        llm(mesh).new_completion().with_message("hi").execute()
    err = e.value
    assert err.status == status and err.provider == "anthropic" and err.retryable == (status >= 429)
    assert err.provider_message == f"scripted {status} ({kind})" and err.retry_after == 7.0


def test_a_wrong_key_is_an_authentication_error_that_does_not_leak_it(anthropic_server):
    mesh = Mesh.from_config({"connections": {"claude": conn(anthropic_server, api_key="sk-ant-wrong-secret")}})
    with pytest.raises(AuthenticationError) as e:
        llm(mesh).new_completion().with_message("hi").execute()
    assert e.value.status == 401 and not e.value.retryable and "authentication_error" in e.value.provider_message
    assert "sk-ant-wrong-secret" not in str(e.value) + repr(e.value) + e.value.provider_message


def test_the_key_comes_from_the_environment_by_default(anthropic_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    cfg = conn(anthropic_server)
    del cfg["api_key"]
    mesh = Mesh.from_config({"connections": {"claude": cfg}})
    assert llm(mesh).new_completion().with_message("from env").execute().text == "from env"
    assert "test-key" not in repr(mesh.connection("claude").config)


def test_retry_policy_honours_retry_after(anthropic_server):
    anthropic_server.script(status=429, error_message="slow down", headers={"retry-after": "0.01"})
    anthropic_server.script(status=529, error_message="Overloaded", headers={"retry-after": "0"})
    anthropic_server.script(text="third time lucky")
    mesh = Mesh.from_config({"connections": {"claude": conn(anthropic_server, max_retries=2)}})
    assert llm(mesh).new_completion().with_message("hi").execute().text == "third time lucky"
    assert len(anthropic_server.requests) == 3


def test_timeout(anthropic_server):
    anthropic_server.script(text="late", delay=1.0)
    mesh = Mesh.from_config({"connections": {"claude": conn(anthropic_server, timeout=0.2)}})
    with pytest.raises(ProviderTimeoutError) as e:
        llm(mesh).new_completion().with_message("hi").execute()
    assert e.value.retryable and "0.2" in str(e.value)


def test_a_cut_stream_raises_instead_of_returning_partial_text(anthropic_server, mesh):
    anthropic_server.script(text="This answer will be cut off in the middle of it.", cut_after=6)
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as e:
        for ev in llm(mesh).new_completion().with_message("hi").execute_streamed():
            got.append(ev.text or "")
    assert got and e.value.partial_text == "".join(got) == "This answer will"


async def test_a_cut_async_stream_raises_too(anthropic_server, mesh):
    anthropic_server.script(text="This answer will be cut off in the middle of it.", cut_after=5)
    with pytest.raises(StreamInterruptedError) as e:
        async for _ in llm(mesh).new_completion().with_message("hi").aexecute_streamed():
            pass
    assert e.value.partial_text == "This answer"


def test_an_error_event_mid_stream(anthropic_server, mesh):
    anthropic_server.script(text="Half an answer", error_type="overloaded_error", error_message="Overloaded")
    with pytest.raises(StreamInterruptedError) as e:
        list(llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert e.value.partial_text == "Half an answer" and e.value.status == 529
    assert e.value.provider_message == "Overloaded (overloaded_error)"
    # before any content it is the plain error, which the retry policy may retry
    anthropic_server.script(text="", error_type="overloaded_error", error_message="Overloaded")
    with pytest.raises(ServerError) as s:
        list(llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert s.value.status == 529 and s.value.retryable


def test_unreachable_server_is_a_connection_error(anthropic_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    mesh = Mesh.from_config({"connections": {"claude": {**conn(anthropic_server),
                                                        "base_url": f"http://127.0.0.1:{dead}"}}})
    with pytest.raises(ProviderConnectionError) as e:
        llm(mesh).new_completion().with_message("hi").execute()
    assert e.value.retryable and str(dead) in str(e.value)


# --------------------------------------------------------------------------------------------------
# LangChain


def test_langchain_chat_model_invoke_stream_and_tools(anthropic_server, mesh):
    pytest.importorskip("langchain_core")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    from langchain_mesh.langchain import MeshChatModel

    @tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    chat = MeshChatModel(model=f"anthropic:claude:{MODEL}", mesh=mesh, temperature=0.1)
    anthropic_server.script(text="Hello from Claude.")
    assert chat.invoke("Say hello").content == "Hello from Claude."
    assert sent(anthropic_server)["temperature"] == 0.1

    anthropic_server.script(text="Streaming from Claude.")
    assert "".join(c.content for c in chat.stream("Stream please")) == "Streaming from Claude."

    anthropic_server.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    bound = chat.bind_tools([get_weather], tool_choice="get_weather")
    ai = bound.invoke("Weather in Oslo?")
    assert ai.tool_calls[0]["name"] == "get_weather" and ai.tool_calls[0]["args"] == {"city": "Oslo"}
    assert sent(anthropic_server)["tool_choice"] == {"type": "tool", "name": "get_weather"}
    anthropic_server.script(text="Sunny in Oslo.")
    history = [HumanMessage("Weather in Oslo?"), ai, ToolMessage("sunny", tool_call_id=ai.tool_calls[0]["id"])]
    assert bound.invoke(history).content == "Sunny in Oslo."
    assert sent(anthropic_server)["messages"][2]["content"][0]["tool_use_id"] == ai.tool_calls[0]["id"]


# --------------------------------------------------------------------------------------------------
# the server itself, with a plain HTTP client


def _post(srv: AnthropicServer, body: Any, **headers: str) -> httpx.Response:
    h = {"x-api-key": "test-key", "anthropic-version": "2023-06-01", **headers}
    return httpx.post(srv.url + "/v1/messages", json=body, headers={k: v for k, v in h.items() if v})


MINIMAL = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("body,headers,status,message", [
    (MINIMAL, {"x-api-key": "nope"}, 401, "invalid x-api-key"),
    (MINIMAL, {"x-api-key": ""}, 401, "x-api-key header is required"),
    (MINIMAL, {"anthropic-version": ""}, 400, "anthropic-version: header is required"),
    ({k: v for k, v in MINIMAL.items() if k != "max_tokens"}, {}, 400, "max_tokens: Field required"),
    ({**MINIMAL, "max_tokens": 9000, "model": "claude-3-5-haiku-20241022"}, {}, 400, "maximum allowed number"),
    ({**MINIMAL, "frequency_penalty": 1}, {}, 400, "frequency_penalty: Extra inputs are not permitted"),
    ({**MINIMAL, "temperature": 1.5}, {}, 400, "temperature"),
    ({**MINIMAL, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]}, {}, 400,
     "top-level `system` parameter"),
    ({**MINIMAL, "messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "hi"}]}, {}, 400,
     'first message must use the "user" role'),
    ({**MINIMAL, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                            "content": "x"}]}]}, {}, 400,
     "unexpected `tool_use_id`"),
    ({**MINIMAL, "messages": [{"role": "user", "content": "hi"},
                              {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f",
                                                                 "input": {}}]},
                              {"role": "user", "content": "and?"}]}, {}, 400, "without `tool_result` blocks"),
    ({**MINIMAL, "tool_choice": {"type": "any"}}, {}, 400, "tool_choice may only be specified while providing tools"),
    ({**MINIMAL, "tools": [{"name": "a.b", "input_schema": {"type": "object"}}]}, {}, 400, "String should match"),
    ({**MINIMAL, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}]}, {}, 400, "media_type"),
])
def test_server_validates_like_the_api(anthropic_server, body, headers, status, message):
    anthropic_server.script(text="never sent")
    r = _post(anthropic_server, body, **headers)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == ("authentication_error" if status == 401
                                                               else "invalid_request_error")
    assert message in err["error"]["message"] and err["request_id"] == r.headers["request-id"]
    assert anthropic_server.pending() == 1, "an invalid request does not consume the script"


def test_server_error_bodies_and_sse_framing(anthropic_server):
    anthropic_server.script(status=429, error_message="slow down", headers={"retry-after": "3"})
    r = _post(anthropic_server, MINIMAL)
    assert (r.status_code, r.headers["retry-after"]) == (429, "3")
    assert r.json()["error"] == {"type": "rate_limit_error", "message": "slow down"}
    anthropic_server.script(status=529)
    assert _post(anthropic_server, MINIMAL).json()["error"]["type"] == "overloaded_error"

    anthropic_server.script(text="Hi there", tool_calls=[("f", {"x": 1})])
    r = _post(anthropic_server, {**MINIMAL, "stream": True,
                                 "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    for frame, name in zip(frames, names):
        event, data = frame.split("\n")
        assert event == f"event: {name}" and json.loads(data.removeprefix("data: "))["type"] == name
    start = json.loads(frames[6].split("data: ")[1])["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "f" and start["input"] == {}
    delta = json.loads(frames[-2].split("data: ")[1])
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None} and delta["usage"]["output_tokens"] > 0
