"""langchain-tests' integration suites on the ``openai`` connection, against a local OpenAI server.

The same suites as ``test_langchain_scripted_integration.py``, with the same "ideal model" oracle,
but the oracle sits at the far end of the wire: :class:`OracleOpenAIServer` (a subclass of the local
:class:`~langchain_mesh.testing.openai.OpenAIServer`) computes each unscripted answer from the
OpenAI JSON it received -- a call of the bound tool with arguments taken from the prompt while
``tools`` are bound and no tool result answers it yet (or whenever ``tool_choice`` forces one), JSON
following ``response_format``'s schema (or the keys the prompt quotes under ``json_object``), and
otherwise an echo. So what runs is the whole path: LangChain -> MeshChatModel -> mesh -> the openai
SDK -> HTTP and SSE -> the server, and back through the mesh's own JSON parsing.

A few tests below also pin the exact request JSON the server received (tools, tool_choice,
response_format, the tool-call round trip, streaming options).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

pytest.importorskip("langchain_tests")
pytest.importorskip("openai")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.langchain import MeshChatModel  # noqa: E402
from langchain_mesh.testing.openai import OpenAIServer  # noqa: E402
from langchain_mesh.testing.wire import Reply  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package
from _oracle import EveryFeatureOn, instance, quoted  # noqa: E402
from _oracle import serve_image_fixtures_locally  # noqa: E402,F401  (autouse fixture)

# --------------------------------------------------------------------------------------------------
# an "ideal model" OpenAI server


def _text(content: Any) -> str:
    """A wire message's text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class OracleOpenAIServer(OpenAIServer):
    """Answers like an ideal model when nothing is scripted (scripts still win)."""

    def _planned_output(self, body: dict[str, Any], reply: Optional[Reply]) -> tuple[Optional[str], list]:
        if reply is not None and (reply.text is not None or reply.tool_calls):
            return super()._planned_output(body, reply)
        messages = body["messages"]
        prompt = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        tools = [t["function"] for t in body.get("tools") or []]
        choice = body.get("tool_choice", "auto")
        forced = choice == "required" or isinstance(choice, dict)
        awaiting_tool = messages[-1].get("role") == "user"
        if tools and choice != "none" and (forced or awaiting_tool):
            if isinstance(choice, dict):
                spec = next(t for t in tools if t["name"] == choice["function"]["name"])
            else:
                spec = next((t for t in tools if t["name"] in prompt), tools[0])
            params = spec.get("parameters") or {}
            args = instance(params, prompt, params.get("$defs", {}))
            return None, [(spec["name"], json.dumps(args, ensure_ascii=False))]
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            schema = rf["json_schema"]["schema"]
            return json.dumps(instance(schema, prompt, schema.get("$defs", {}))), []
        if rf.get("type") == "json_object":  # the keys the prompt quotes, as the scripted oracle does
            keys = [q for q in quoted(prompt) if re.fullmatch(r"\w+", q)] or ["answer"]
            schema = {"type": "object", "properties": {k: {"type": "string"} for k in keys}}
            return json.dumps(instance(schema, prompt, {})), []
        if messages[-1].get("role") == "tool":
            return f"The tool said: {_text(messages[-1].get('content'))}", []
        images = sum(1 for m in messages if isinstance(m.get("content"), list)
                     for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")
        if images:
            return f"I see {images} image(s).", []
        return prompt or "Hello!", []


_SERVER: Optional[OracleOpenAIServer] = None


@pytest.fixture(scope="module", autouse=True)
def oracle_server() -> Iterator[OracleOpenAIServer]:
    """One server for the module (the suites build their model from properties, not fixtures)."""
    global _SERVER
    with OracleOpenAIServer() as srv:
        _SERVER = srv
        yield srv
        _SERVER = None


@pytest.fixture
def srv(oracle_server: OracleOpenAIServer) -> OracleOpenAIServer:
    oracle_server.reset()
    return oracle_server


def _config() -> dict[str, Any]:
    assert _SERVER is not None, "the oracle server is not running"
    return {"connections": {"oa": {"type": "openai", "api_key": "test-key", "base_url": _SERVER.base_url,
                                   "max_retries": 0}}}


# --------------------------------------------------------------------------------------------------
# the suites


class TestMeshChatModelOnOpenAIWire(EveryFeatureOn, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[MeshChatModel]:
        return MeshChatModel

    @property
    def chat_model_params(self) -> dict:
        # a fresh mesh (so fresh SDK clients and sessions) per model
        return {"model": "openai:oa:gpt-4o", "mesh": _config()}

    @pytest.fixture
    def model(self, request: Any) -> Iterator[MeshChatModel]:
        """The suite's model fixture, with its mesh closed after the test (no sockets left to the GC)."""
        mesh = Mesh.from_config(_config())
        params = {**self.standard_chat_model_params, **self.chat_model_params, "mesh": mesh,
                  **(getattr(request, "param", None) or {})}
        yield MeshChatModel(**params)
        mesh.close()

    @property
    def model_override_value(self) -> str:
        return "openai:oa:gpt-4o-mini"

    @property
    def supported_usage_metadata_details(self) -> dict:
        # OpenAI reports usage.prompt_tokens_details.cached_tokens and completion_tokens_details.reasoning_tokens
        return {"invoke": ["reasoning_output", "cache_read_input"], "stream": ["reasoning_output", "cache_read_input"]}

    def _invoke_scripted(self, stream: bool, **reply: Any) -> AIMessage:
        assert _SERVER is not None
        _SERVER.script(**reply)
        mesh = Mesh.from_config(_config())
        try:
            model = MeshChatModel(**{**self.standard_chat_model_params, **self.chat_model_params, "mesh": mesh})
            if not stream:
                return model.invoke("Tell me a long story.")  # type: ignore[return-value]
            full: Any = None
            for chunk in model.stream("Tell me a long story."):
                full = chunk if full is None else full + chunk
            return full
        finally:
            mesh.close()

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        return self._invoke_scripted(stream, text="Once upon a time.", usage={"completion_tokens": 40,
                                                                              "reasoning_tokens": 32})

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        return self._invoke_scripted(stream, text="Once upon a time.", usage={"prompt_tokens": 2048,
                                                                              "cached_tokens": 1920})


class TestMeshChatModelOnOpenAIWireFunctionCalling(TestMeshChatModelOnOpenAIWire):
    """The structured-output tests again, through forced tool calls."""

    @property
    def structured_output_kwargs(self) -> dict:
        return {"method": "function_calling"}


# --------------------------------------------------------------------------------------------------
# what went over the wire


@pytest.fixture
def chat(srv: OracleOpenAIServer) -> Iterator[MeshChatModel]:
    mesh = Mesh.from_config(_config())
    yield MeshChatModel(llm_id="openai:oa:gpt-4o", mesh=mesh)
    mesh.close()


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"Sunny in {city}"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class Capital(BaseModel):
    """The capital of a country."""

    country: str = Field(description="the country")
    capital: str


CAPITAL_SCHEMA = {"title": "Capital", "description": "The capital of a country.", "type": "object",
                  "properties": {"country": {"description": "the country", "type": "string"},
                                 "capital": {"type": "string"}},
                  "required": ["country", "capital"]}


def test_bind_tools_request_json(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    msg = chat.bind_tools([get_weather], tool_choice="any").invoke("What is the weather in 'Paris'?")
    assert srv.last_request.path == "/v1/chat/completions"
    assert srv.last_request.headers["authorization"] == "Bearer test-key"
    assert srv.last_request.json == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "What is the weather in 'Paris'?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    }
    assert [(tc["name"], tc["args"]) for tc in msg.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert msg.tool_calls[0]["id"].startswith("call_")
    assert msg.response_metadata["finish_reason"] == "tool_calls"


def test_tool_choice_by_name_and_parallel_calls_off(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    chat.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False).invoke("Weather?")
    body = srv.last_request.json
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["tools"] == [WEATHER_TOOL]
    chat.bind_tools([get_weather], tool_choice="none").invoke("Weather?")
    assert srv.last_request.json["tool_choice"] == "none"
    chat.bind_tools([get_weather]).invoke("Weather?")
    assert "tool_choice" not in srv.last_request.json  # auto: left to the service's default


def test_tool_round_trip_messages_json(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    history = [
        HumanMessage("What is the weather in 'Paris'?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_abc"}]),
        ToolMessage("Sunny in Paris", tool_call_id="call_abc"),
    ]
    msg = chat.bind_tools([get_weather]).invoke(history)
    assert srv.last_request.json["messages"] == [
        {"role": "user", "content": "What is the weather in 'Paris'?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "Sunny in Paris", "tool_call_id": "call_abc"},
    ]
    assert msg.content == "The tool said: Sunny in Paris"
    assert not msg.tool_calls


def test_structured_output_json_schema_request_json(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    out = chat.with_structured_output(Capital).invoke("The capital of 'France'?")
    body = srv.last_request.json
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "Capital", "schema": CAPITAL_SCHEMA}}
    assert "tools" not in body and "tool_choice" not in body
    assert out == Capital(country="France", capital="France")

    chat.with_structured_output(Capital, strict=True).invoke("The capital of 'France'?")
    assert srv.last_request.json["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Capital", "schema": CAPITAL_SCHEMA, "strict": True}}


def test_structured_output_function_calling_request_json(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    out = chat.with_structured_output(Capital, method="function_calling").invoke("The capital of 'France'?")
    body = srv.last_request.json
    assert body["tools"] == [{"type": "function", "function": {
        "name": "Capital", "description": "The capital of a country.",
        "parameters": {"type": "object",
                       "properties": {"country": {"description": "the country", "type": "string"},
                                      "capital": {"type": "string"}},
                       "required": ["country", "capital"]}}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Capital"}}
    assert "response_format" not in body
    assert out == Capital(country="France", capital="France")


def test_structured_output_json_mode_request_json(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    out = chat.with_structured_output(None, method="json_mode").invoke("Answer in JSON with keys 'city', 'country'.")
    assert srv.last_request.json["response_format"] == {"type": "json_object"}
    assert out == {"city": "city", "country": "city"}


def test_stream_request_json_and_usage(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    chunks = list(chat.stream("one two three"))
    body = srv.last_request.json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "".join(c.content for c in chunks) == "one two three"
    last = chunks[-1]
    assert last.usage_metadata == {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6,
                                   "input_token_details": {"cache_read": 0},
                                   "output_token_details": {"reasoning": 0}}
    assert last.response_metadata["finish_reason"] == "stop"


def test_settings_request_json(srv: OracleOpenAIServer) -> None:
    mesh = Mesh.from_config(_config())
    try:
        chat = MeshChatModel(llm_id="openai:oa:gpt-4o", mesh=mesh, temperature=0.2, max_tokens=5,
                             stop=["END"], top_p=0.9, settings={"seed": 7})
        msg = chat.invoke("a b c d e f g h")
    finally:
        mesh.close()
    body = srv.last_request.json
    assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 5, "stop": ["END"], "seed": 7}
    assert msg.content == "a b c d e"
    assert msg.response_metadata["finish_reason"] == "length"


def test_scripted_reply_wins_over_the_oracle(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    srv.script(text="scripted")
    assert chat.bind_tools([get_weather], tool_choice="any").invoke("Weather?").content == "scripted"


def test_usage_details_reach_usage_metadata(srv: OracleOpenAIServer, chat: MeshChatModel) -> None:
    usage = {"prompt_tokens": 2048, "completion_tokens": 40, "cached_tokens": 1920, "reasoning_tokens": 32}
    expected = {"input_tokens": 2048, "output_tokens": 40, "total_tokens": 2088,
                "input_token_details": {"cache_read": 1920}, "output_token_details": {"reasoning": 32}}
    srv.script(text="Once upon a time.", usage=usage)
    assert chat.invoke("Tell me a story.").usage_metadata == expected
    srv.script(text="Once upon a time.", usage=usage)
    full: Any = None
    for chunk in chat.stream("Tell me a story."):
        full = chunk if full is None else full + chunk
    assert full.usage_metadata == expected
