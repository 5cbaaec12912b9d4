"""The registry: listing, lookup errors that say what exists, caching, and the connection plugin path."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from langchain_mesh import LLMListItem, Mesh, Purpose
from langchain_mesh.config import ConnectionConfig
from langchain_mesh.connections import connection_types, get_connection_class, register_connection_type
from langchain_mesh.connections.base import Connection
from langchain_mesh.errors import (
    CapabilityError,
    ConfigError,
    InvalidLLMIdError,
    StreamInterruptedError,
    UnknownLLMError,
)
from langchain_mesh.schema import (
    CompletionRequest,
    CompletionResponse,
    ModelCapabilities,
    ModelInfo,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    ToolCallDelta,
    Usage,
)
from langchain_mesh.testing.scripted import ScriptedConnection

CONFIG = {
    "connections": {
        "fake": {"type": "scripted", "models": [
            {"id": "chat", "description": "the chat one"},
            {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]},
            {"id": "emb2", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]},
            {"id": "img", "purposes": ["IMAGE_GENERATION"]},
            {"id": "anthropic.claude-3-sonnet-20240229-v1:0"},
        ]},
        "other": {"type": "scripted"},  # no models listed: the type's defaults
    }
}


@pytest.fixture
def mesh():
    m = Mesh.from_config(CONFIG)
    yield m
    m.close()


# --------------------------------------------------------------------------------------------------
# listing


def test_list_all(mesh):
    items = mesh.list_llms()
    assert all(isinstance(i, LLMListItem) for i in items)
    assert [i.id for i in items] == [
        "scripted:fake:chat", "scripted:fake:emb", "scripted:fake:emb2", "scripted:fake:img",
        "scripted:fake:anthropic.claude-3-sonnet-20240229-v1:0",
        "scripted:other:chat", "scripted:other:embed",
    ]
    chat = items[0]
    assert chat.type == "scripted" and chat.connection == "fake"
    assert chat.description == "the chat one"
    assert chat.purposes == ["GENERIC_COMPLETION"]
    assert chat.capabilities.tools is True  # from the connection's capabilities_for
    # a model without description gets one naming it and its connection
    assert "emb" in items[1].description and "fake" in items[1].description
    # defaults of a connection with no model list
    assert items[5].description == "scripted chat model"


@pytest.mark.parametrize("purpose", ["TEXT_EMBEDDING_EXTRACTION", Purpose.TEXT_EMBEDDING_EXTRACTION])
def test_list_by_purpose_str_or_enum(mesh, purpose):
    ids = [i.id for i in mesh.list_llms(purpose=purpose)]
    assert ids == ["scripted:fake:emb", "scripted:fake:emb2", "scripted:other:embed"]


def test_list_by_other_purposes(mesh):
    assert [i.id for i in mesh.list_llms(Purpose.IMAGE_GENERATION)] == ["scripted:fake:img"]
    completion = [i.id for i in mesh.list_llms("GENERIC_COMPLETION")]
    assert "scripted:fake:chat" in completion and "scripted:fake:emb" not in completion


def test_list_bad_purpose(mesh):
    with pytest.raises(ValueError):
        mesh.list_llms(purpose="CHAT")


def test_list_empty_mesh():
    assert Mesh.from_config({}).list_llms() == []


def test_listed_ids_are_gettable(mesh):
    for item in mesh.list_llms():
        llm = mesh.get_llm(item.id)
        assert llm.id == item.id
        assert [p.value for p in llm.info.purposes] == item.purposes


# --------------------------------------------------------------------------------------------------
# lookup


def test_get_llm_handle(mesh):
    llm = mesh.get_llm("scripted:fake:anthropic.claude-3-sonnet-20240229-v1:0")
    assert llm.model == "anthropic.claude-3-sonnet-20240229-v1:0"
    assert llm.connection is mesh.connection("fake")
    assert llm.mesh is mesh
    assert llm.capabilities.tools is True
    assert repr(llm) == "LLM('scripted:fake:anthropic.claude-3-sonnet-20240229-v1:0')"


def test_get_llm_unknown_connection(mesh):
    with pytest.raises(UnknownLLMError) as ei:
        mesh.get_llm("scripted:nope:chat")
    e = ei.value
    assert e.llm_id == "scripted:nope:chat"
    assert "scripted:fake:chat" in e.available and "scripted:other:embed" in e.available
    msg = str(e)
    assert "'nope'" in msg
    assert "scripted:fake" in msg and "scripted:other" in msg  # what exists
    assert isinstance(e, LookupError)


def test_get_llm_wrong_type(mesh):
    with pytest.raises(UnknownLLMError) as ei:
        mesh.get_llm("openai:fake:chat")
    msg = str(ei.value)
    assert "'fake' is of type 'scripted', not 'openai'" in msg
    assert "scripted:fake:chat" in ei.value.available


def test_get_llm_unknown_model(mesh):
    with pytest.raises(UnknownLLMError) as ei:
        mesh.get_llm("scripted:fake:gpt-4o")
    e = ei.value
    assert e.available == [
        "scripted:fake:chat", "scripted:fake:emb", "scripted:fake:emb2", "scripted:fake:img",
        "scripted:fake:anthropic.claude-3-sonnet-20240229-v1:0",
    ]
    assert "'gpt-4o'" in str(e)
    assert "scripted:fake:chat" in str(e)


def test_get_llm_in_empty_mesh():
    with pytest.raises(UnknownLLMError) as ei:
        Mesh.from_config({}).get_llm("scripted:fake:chat")
    assert "none" in str(ei.value)
    assert ei.value.available == []


def test_get_llm_malformed_id(mesh):
    with pytest.raises(InvalidLLMIdError):
        mesh.get_llm("gpt-4o")


def test_unknown_connection_name(mesh):
    with pytest.raises(UnknownLLMError) as ei:
        mesh.connection("nope")
    assert "fake" in str(ei.value) and "other" in str(ei.value)


def test_handles_and_connections_cached(mesh):
    a = mesh.get_llm("scripted:fake:chat")
    assert mesh.get_llm("scripted:fake:chat") is a
    assert mesh.get_llm("scripted:fake:emb").connection is a.connection
    assert mesh.connection("fake") is mesh.connection("fake")
    assert mesh.connection("fake") is not mesh.connection("other")
    assert isinstance(mesh.connection("fake"), ScriptedConnection)


def test_close_releases_and_rebuilds():
    closed = []

    class Closing(ScriptedConnection):
        def close(self) -> None:
            closed.append(self.name)

    register_connection_type("closingtest", Closing)
    with Mesh.from_config({"connections": {"c": {"type": "closingtest"}}}) as mesh:
        first = mesh.connection("c")
        llm = mesh.get_llm("closingtest:c:chat")
    assert closed == ["c"]
    # a closed mesh builds fresh connections on next use
    assert mesh.connection("c") is not first
    assert mesh.get_llm("closingtest:c:chat") is not llm
    mesh.close()


def test_repr(mesh):
    assert repr(mesh) == "Mesh(connections=['fake', 'other'])"


def test_new_embeddings_on_chat_model_lists_embedding_models(mesh):
    with pytest.raises(CapabilityError) as ei:
        mesh.get_llm("scripted:fake:chat").new_embeddings()
    msg = str(ei.value)
    assert "scripted:fake:chat is not a TEXT_EMBEDDING_EXTRACTION model" in msg
    assert "GENERIC_COMPLETION" in msg
    for emb in ("scripted:fake:emb", "scripted:fake:emb2", "scripted:other:embed"):
        assert emb in msg


def test_completion_on_embedding_model_refused(mesh):
    with pytest.raises(CapabilityError) as ei:
        mesh.get_llm("scripted:fake:emb").new_completion()
    assert "scripted:fake:chat" in str(ei.value)
    with pytest.raises(CapabilityError):
        mesh.get_llm("scripted:fake:emb").new_completions()


def test_image_generation_on_chat_model_refused(mesh):
    with pytest.raises(CapabilityError) as ei:
        mesh.get_llm("scripted:fake:chat").new_images_generation()
    assert "scripted:fake:img" in str(ei.value)


def test_connection_without_images_says_so(mesh):
    # the model is declared an image model, but the scripted type has no image generation
    q = mesh.get_llm("scripted:fake:img").new_images_generation().with_prompt("a cat")
    with pytest.raises(CapabilityError, match="does not generate images"):
        q.execute()


# --------------------------------------------------------------------------------------------------
# plugins


class EchoStreamOnly(Connection):
    """The smallest plugin: it implements only ``stream``."""

    def default_models(self) -> list[ModelInfo]:
        from langchain_mesh.schema import Purpose as P

        return [ModelInfo(id="echo", purposes=[P.GENERIC_COMPLETION], capabilities=ModelCapabilities(tools=True))]

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        text = request.messages[-1].text
        for word in text.split(" "):
            yield StreamChunk(text=word.upper() + " ")
        yield StreamFooter(finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=2), model=model)


@pytest.fixture
def plugin_mesh():
    register_connection_type("echoplugin", EchoStreamOnly)
    m = Mesh.from_config({"connections": {"mine": {"type": "echoplugin"}}})
    yield m
    m.close()


def test_register_connection_type(plugin_mesh):
    assert "echoplugin" in connection_types()
    assert get_connection_class("echoplugin") is EchoStreamOnly
    assert EchoStreamOnly.type_name == "echoplugin"
    assert [i.id for i in plugin_mesh.list_llms()] == ["echoplugin:mine:echo"]


def test_plugin_complete_derived_from_stream(plugin_mesh):
    llm = plugin_mesh.get_llm("echoplugin:mine:echo")
    resp = llm.new_completion().with_message("hello there").execute()
    assert isinstance(resp, CompletionResponse)
    assert resp.text == "HELLO THERE "
    assert resp.finish_reason == "stop"
    assert resp.usage.total_tokens == 3
    assert resp.model == "echo"


def test_plugin_stream(plugin_mesh):
    events = list(plugin_mesh.get_llm("echoplugin:mine:echo").new_completion()
                  .with_message("a b").execute_streamed())
    assert [e.text for e in events[:-1]] == ["A ", "B "]
    assert isinstance(events[-1], StreamFooter)


async def test_plugin_async_paths(plugin_mesh):
    llm = plugin_mesh.get_llm("echoplugin:mine:echo")
    resp = await llm.new_completion().with_message("x y z").aexecute()
    assert resp.text == "X Y Z "
    events = [ev async for ev in llm.new_completion().with_message("p q").aexecute_streamed()]
    assert [e.text for e in events if isinstance(e, StreamChunk)] == ["P ", "Q "]
    assert isinstance(events[-1], StreamFooter) and events[-1].finish_reason == "stop"


def test_plugin_without_embeddings_says_so(plugin_mesh):
    from langchain_mesh.schema import EmbeddingRequest

    llm = plugin_mesh.get_llm("echoplugin:mine:echo")
    with pytest.raises(CapabilityError, match="does not offer embeddings"):
        llm.connection.embed("echo", EmbeddingRequest(texts=["x"]))


class CompleteOnly(Connection):
    def default_models(self) -> list[ModelInfo]:
        from langchain_mesh.schema import Purpose as P

        return [ModelInfo(id="m", purposes=[P.GENERIC_COMPLETION])]

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        return CompletionResponse(text="whole answer", finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=2))


def test_plugin_stream_derived_from_complete():
    register_connection_type("completeonly", CompleteOnly)
    with Mesh.from_config({"connections": {"c": {"type": "completeonly"}}}) as mesh:
        events = list(mesh.get_llm("completeonly:c:m").new_completion().with_message("q").execute_streamed())
    assert [type(e) for e in events] == [StreamChunk, StreamFooter]
    assert events[0].text == "whole answer"
    assert events[1].usage.total_tokens == 3


def test_plugin_with_nothing_implemented():
    class Nothing(Connection):
        def default_models(self) -> list[ModelInfo]:
            from langchain_mesh.schema import Purpose as P

            return [ModelInfo(id="m", purposes=[P.GENERIC_COMPLETION])]

    register_connection_type("nothingtest", Nothing)
    with Mesh.from_config({"connections": {"c": {"type": "nothingtest"}}}) as mesh:
        q = mesh.get_llm("nothingtest:c:m").new_completion().with_message("q")
        with pytest.raises(CapabilityError, match="does not offer completions"):
            q.execute()
        with pytest.raises(CapabilityError, match="does not offer completions"):
            list(q.execute_streamed())


class DeltasOnly(Connection):
    """Streams tool calls as fragments and a footer that does not repeat them."""

    def default_models(self) -> list[ModelInfo]:
        from langchain_mesh.schema import Purpose as P

        return [ModelInfo(id="m", purposes=[P.GENERIC_COMPLETION])]

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, id="call_a", name="multiply", arguments='{"a":')])
        yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=1, id="call_b", name="add", arguments='{"x":1')])
        yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, arguments='3,"b":6}')])
        yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=1, arguments=',"y":2}')])
        yield StreamFooter(finish_reason="tool_calls")


def test_plugin_tool_call_fragments_reassembled():
    register_connection_type("deltastest", DeltasOnly)
    with Mesh.from_config({"connections": {"c": {"type": "deltastest"}}}) as mesh:
        llm = mesh.get_llm("deltastest:c:m")
        resp = llm.new_completion().with_message("q").execute()
        assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in resp.tool_calls] == [
            ("call_a", "multiply", {"a": 3, "b": 6}), ("call_b", "add", {"x": 1, "y": 2})]
        events = list(llm.new_completion().with_message("q").execute_streamed())
        footer = events[-1]
        assert isinstance(footer, StreamFooter)
        # the footer carries the reassembled calls even when the connection left them out
        assert [c.function.arguments for c in footer.tool_calls] == ['{"a":3,"b":6}', '{"x":1,"y":2}']
        assert footer.data["toolCalls"][0]["function"]["name"] == "multiply"


def test_plugin_stream_without_footer_is_interrupted():
    class NoFooter(Connection):
        def default_models(self) -> list[ModelInfo]:
            from langchain_mesh.schema import Purpose as P

            return [ModelInfo(id="m", purposes=[P.GENERIC_COMPLETION])]

        def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
            yield StreamChunk(text="half ")
            yield StreamChunk(text="an answer")

    register_connection_type("nofootertest", NoFooter)
    with Mesh.from_config({"connections": {"c": {"type": "nofootertest"}}}) as mesh:
        q = mesh.get_llm("nofootertest:c:m").new_completion().with_message("q")
        seen = []
        with pytest.raises(StreamInterruptedError) as ei:
            for ev in q.execute_streamed():
                seen.append(ev)
        assert [e.text for e in seen] == ["half ", "an answer"]
        assert ei.value.partial_text == "half an answer"
        assert "nofootertest:c:m" in str(ei.value)
        with pytest.raises(StreamInterruptedError):
            q.execute()


def test_plugin_own_config_model():
    from langchain_mesh.config import Secret

    class WithUrlConfig(ConnectionConfig):
        base_url: str = "http://localhost:1"
        api_key: Secret | None = None

    class WithUrl(EchoStreamOnly):
        config_model = WithUrlConfig

    register_connection_type("urltest", WithUrl)
    with Mesh.from_config({"connections": {"u": {"type": "urltest", "base_url": "http://proxy:8080"}}}) as mesh:
        assert mesh.connection("u").config.base_url == "http://proxy:8080"
    with pytest.raises(ConfigError) as ei:
        Mesh.from_config({"connections": {"u": {"type": "urltest", "base_ulr": "x"}}})
    assert ei.value.problems == [("connections.u.base_ulr", "unknown key (did you mean 'base_url'?)")]


@pytest.mark.parametrize("bad", ["", "a:b"])
def test_register_rejects_bad_type_names(bad):
    with pytest.raises(ValueError):
        register_connection_type(bad, EchoStreamOnly)


def test_unknown_type_without_entry_point():
    with pytest.raises(LookupError) as ei:
        get_connection_class("no-such-connection-type-anywhere")
    msg = str(ei.value)
    assert "unknown connection type 'no-such-connection-type-anywhere'" in msg
    assert "known types:" in msg and "scripted" in msg
    with pytest.raises(ConfigError) as ei2:
        Mesh.from_config({"connections": {"x": {"type": "no-such-connection-type-anywhere"}}})
    assert ei2.value.problems[0][0] == "connections.x.type"


def test_unknown_type_did_you_mean_a_registered_plugin(plugin_mesh):
    with pytest.raises(LookupError, match="did you mean 'echoplugin'"):
        get_connection_class("echoplugn")


def test_entry_point_types_are_loaded(monkeypatch):
    import langchain_mesh.connections as conns

    class FakeEP:
        name = "eptest"

        def load(self):
            return EchoStreamOnly

    monkeypatch.setattr(conns, "_entry_points", lambda: {"eptest": FakeEP()})
    monkeypatch.delitem(conns._REGISTERED, "eptest", raising=False)
    assert "eptest" in connection_types()
    with Mesh.from_config({"connections": {"e": {"type": "eptest"}}}) as mesh:
        assert mesh.get_llm("eptest:e:echo").new_completion().with_message("hi").execute().text == "HI "
    conns._REGISTERED.pop("eptest", None)


def test_default_mesh_follows_mesh_config(tmp_path, monkeypatch):
    f = tmp_path / "mesh.yaml"
    f.write_text("connections:\n  fake:\n    type: scripted\n")
    monkeypatch.setenv("MESH_CONFIG", str(f))
    monkeypatch.setattr(Mesh, "_default", None)
    monkeypatch.setattr(Mesh, "_default_key", None)
    m = Mesh.default()
    assert Mesh.default() is m
    assert [i.id for i in m.list_llms()] == ["scripted:fake:chat", "scripted:fake:embed"]


def test_a_request_of_the_wrong_type_is_named(mesh):
    """Every dispatch entry point says which request type it takes, instead of the AttributeError that
    reading the first attribute of a list or a dict would raise."""
    import asyncio

    chat, img = mesh.get_llm("scripted:fake:chat"), mesh.get_llm("scripted:fake:img")
    for call in (lambda: mesh.complete(chat, ["hi"]), lambda: mesh.stream(chat, {"messages": []}),
                 lambda: mesh.count_tokens(chat, "hi"), lambda: asyncio.run(mesh.acomplete(chat, ["hi"])),
                 lambda: mesh.astream(chat, ["hi"]), lambda: asyncio.run(mesh.acount_tokens(chat, ["hi"]))):
        with pytest.raises(TypeError, match=r"takes a CompletionRequest\(messages=\[\.\.\.\]\), not (list|dict|str)"):
            call()
    for call in (lambda: mesh.generate_images(img, "a cat"), lambda: asyncio.run(mesh.agenerate_images(img, {}))):
        with pytest.raises(TypeError, match=r"generate_images\(\) takes an ImageGenerationRequest\(prompts=\[\.\.\.\]\), not (str|dict)"):
            call()
