"""The LangChain face on the scripted connection: standard unit suites, conversion, tools, structured
output, streaming, errors, the native async path, MeshLLM and MeshEmbeddings. No model, no network."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
from typing import Any, AsyncIterator, Iterator

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.connections import register_connection_type  # noqa: E402
from langchain_mesh.connections.base import Connection  # noqa: E402
from langchain_mesh.errors import (  # noqa: E402
    BadRequestError,
    MeshError,
    RateLimitError,
    SettingsError,
    StreamInterruptedError,
    UnknownLLMError,
)
from langchain_mesh.langchain import MeshChatModel, MeshEmbeddings, MeshLLM  # noqa: E402
from langchain_mesh.langchain.convert import (  # noqa: E402
    StreamConverter,
    from_mesh_message,
    to_mesh_message,
    to_mesh_messages,
)
from langchain_mesh.schema import (  # noqa: E402
    CompletionRequest,
    CompletionResponse,
    FunctionCall,
    ImagePart,
    ImageURLPart,
    Message,
    ModelInfo,
    Purpose,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from langchain_mesh.testing.scripted import ScriptedConnection  # noqa: E402

SCRIPTED = {"connections": {"fake": {"type": "scripted"}}}
CHAT = "scripted:fake:chat"
EMBED = "scripted:fake:embed"

# a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_B64 = base64.b64encode(PNG).decode()


# --------------------------------------------------------------------------------------------------
# the standard suites


class TestMeshChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[MeshChatModel]:
        return MeshChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": CHAT, "mesh": SCRIPTED}


class TestMeshEmbeddingsStandard(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[MeshEmbeddings]:
        return MeshEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": EMBED, "mesh": SCRIPTED}


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    m = Mesh.from_config({"connections": {"fake": {"type": "scripted", "models": [
        {"id": "chat"}, {"id": "chat2"}, {"id": "embed", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}})
    yield m
    m.close()


@pytest.fixture
def conn(mesh: Mesh) -> ScriptedConnection:
    return mesh.connection("fake")  # type: ignore[return-value]


@pytest.fixture
def chat(mesh: Mesh) -> MeshChatModel:
    return MeshChatModel(model=CHAT, mesh=mesh)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Person(BaseModel):
    """A person."""

    name: str = Field(description="the name")
    age: int = Field(description="the age in years")


class PersonDict(TypedDict):
    """A person."""

    name: str
    age: int


def _last(conn: ScriptedConnection) -> CompletionRequest:
    return conn.requests[-1]


# --------------------------------------------------------------------------------------------------
# construction, metadata, import weight


def test_import_langchain_mesh_does_not_import_langchain_core():
    code = ("import sys, langchain_mesh; from langchain_mesh import Mesh; "
            "assert 'langchain_core' not in sys.modules, 'langchain_core imported'; "
            "import langchain_mesh.langchain; assert 'langchain_core' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_top_level_lazy_exports():
    import langchain_mesh

    assert langchain_mesh.MeshChatModel is MeshChatModel
    assert langchain_mesh.MeshLLM is MeshLLM
    assert langchain_mesh.MeshEmbeddings is MeshEmbeddings


def test_llm_id_alias_and_fields(mesh):
    a = MeshChatModel(llm_id=CHAT, mesh=mesh)
    b = MeshChatModel(model=CHAT, mesh=mesh)
    assert a.model == b.model == a.llm_id == CHAT
    assert MeshEmbeddings(llm_id=EMBED, mesh=mesh).model == EMBED
    assert MeshLLM(llm_id=CHAT, mesh=mesh).model == CHAT


def test_mesh_param_accepts_config_dict_path_and_mesh(tmp_path, mesh, monkeypatch):
    assert MeshChatModel(model=CHAT, mesh=mesh).mesh is mesh
    from_dict = MeshChatModel(model=CHAT, mesh=SCRIPTED)
    assert isinstance(from_dict.mesh, Mesh)
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text("connections:\n  fake:\n    type: scripted\n")
    from_path = MeshChatModel(model=CHAT, mesh=str(cfg))
    assert from_path.invoke("hello path").content == "hello path"
    with pytest.raises(Exception, match="mesh must be"):
        MeshChatModel(model=CHAT, mesh=42)
    # mesh=None: the process default, which honours MESH_CONFIG
    monkeypatch.setenv("MESH_CONFIG", str(cfg))
    assert MeshChatModel(model=CHAT).invoke("from the default").content == "from the default"


def test_model_dump_carries_the_mesh_as_its_config(chat):
    # the config (plain data with secret references), never the live Mesh: Cls(**dump) rebuilds it
    assert chat.model_dump()["mesh"] == {"connections": {"fake": {"type": "scripted", "models": [
        {"id": "chat"}, {"id": "chat2"}, {"id": "embed", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}}
    assert MeshChatModel(**chat.model_dump()).invoke("again").content == "again"
    assert chat._llm_type == "mesh-chat"
    assert MeshLLM(model=CHAT, mesh=SCRIPTED)._llm_type == "mesh-llm"


def test_named_fields_map_to_seed_settings(mesh, conn):
    chat = MeshChatModel(model=CHAT, mesh=mesh, temperature=0.3, max_tokens=7, top_p=0.9, top_k=40,
                         stop=["END"], settings={"presencePenalty": 0.5, "seed": 11})
    chat.invoke("hi")
    s = _last(conn).settings
    assert (s.temperature, s.maxOutputTokens, s.topP, s.topK, s.stopSequences) == (0.3, 7, 0.9, 40, ["END"])
    assert (s.presencePenalty, s.seed) == (0.5, 11)
    # per-call kwargs in either naming scheme override the instance's
    chat.invoke("hi", temperature=0.0, maxOutputTokens=3, stop=["X"], settings={"frequencyPenalty": 1.0})
    s = _last(conn).settings
    assert (s.temperature, s.maxOutputTokens, s.stopSequences, s.frequencyPenalty) == (0.0, 3, ["X"], 1.0)
    # stop=[] is "no stop sequences"
    MeshChatModel(model=CHAT, mesh=mesh, stop=[]).invoke("hi")
    assert _last(conn).settings.stopSequences is None


def test_bad_settings_fail_at_construction_and_call(mesh):
    with pytest.raises(Exception, match="maxOutputTokens|max_tokens"):
        MeshChatModel(model=CHAT, mesh=mesh, max_tokens=0)
    with pytest.raises(Exception, match="did you mean 'temperature'"):
        MeshChatModel(model=CHAT, mesh=mesh, settings={"temprature": 1})
    chat = MeshChatModel(model=CHAT, mesh=mesh)
    with pytest.raises(SettingsError, match="unknown setting 'bogus'"):
        chat.invoke("hi", bogus=1)


def test_ls_params_and_identifying_params(mesh):
    chat = MeshChatModel(model=CHAT, mesh=mesh, temperature=0.5, max_tokens=12, stop=["s"])
    ls = chat._get_ls_params()
    assert ls["ls_provider"] == "scripted" and ls["ls_model_name"] == CHAT and ls["ls_model_type"] == "chat"
    assert ls["ls_temperature"] == 0.5 and ls["ls_max_tokens"] == 12 and ls["ls_stop"] == ["s"]
    ls = chat._get_ls_params(model="openai:myopenai:gpt-4o")
    assert ls["ls_model_name"] == "openai:myopenai:gpt-4o" and ls["ls_provider"] == "openai"
    ident = chat._identifying_params
    assert ident["model"] == CHAT and ident["temperature"] == 0.5 and ident["maxOutputTokens"] == 12
    llm_ls = MeshLLM(model=CHAT, mesh=mesh)._get_ls_params()
    assert llm_ls["ls_model_type"] == "llm" and llm_ls["ls_provider"] == "scripted"


def test_as_langchain_from_llm_handle(mesh, conn):
    llm = mesh.get_llm(CHAT)
    chat = llm.as_langchain_chat_model(temperature=0)
    assert isinstance(chat, MeshChatModel) and chat.mesh is mesh and chat.model == CHAT
    assert chat.invoke("ping").content == "ping"
    assert isinstance(llm.as_langchain_llm(), MeshLLM)
    emb = mesh.get_llm(EMBED).as_langchain_embeddings(batch_size=4)
    assert isinstance(emb, MeshEmbeddings) and emb.batch_size == 4 and emb.mesh is mesh


def test_model_override_per_call(chat, conn):
    out = chat.invoke("hello", model="scripted:fake:chat2")
    assert out.response_metadata["model_name"] == "scripted:fake:chat2"
    assert out.response_metadata["provider_model_name"] == "chat2"
    with pytest.raises(UnknownLLMError):
        chat.invoke("hello", model="scripted:fake:nope")


# --------------------------------------------------------------------------------------------------
# conversion


def test_convert_roles_and_names():
    msgs = to_mesh_messages([
        SystemMessage("be brief"), HumanMessage("hi", name="ann"), AIMessage("hello"),
        ChatMessage(role="developer", content="dev"), ChatMessage(role="human", content="h"),
    ])
    assert [m.role for m in msgs] == ["system", "user", "assistant", "system", "user"]
    assert msgs[1].name == "ann" and msgs[1].content == "hi"
    with pytest.raises(ValueError, match="FunctionMessage"):
        to_mesh_message(FunctionMessage(content="x", name="f"))
    with pytest.raises(ValueError, match="role"):
        to_mesh_message(ChatMessage(role="narrator", content="x"))


def test_convert_text_blocks_join():
    m = to_mesh_message(HumanMessage([{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                                      "b", {"type": "text", "text": "c"}]))
    assert m.content == "abc"


@pytest.mark.parametrize("block", [
    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    {"type": "image_url", "image_url": f"data:image/png;base64,{PNG_B64}"},
    {"type": "image", "base64": PNG_B64, "mime_type": "image/png"},
    {"type": "image", "base64": PNG_B64},  # mime type sniffed from the bytes
    {"type": "image", "source_type": "base64", "data": PNG_B64, "mime_type": "image/png"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
], ids=["openai-data-url", "openai-data-url-str", "v1-base64", "v1-base64-sniffed", "v0-base64", "anthropic"])
def test_convert_inline_images(block):
    m = to_mesh_message(HumanMessage([{"type": "text", "text": "what is this?"}, block]))
    assert isinstance(m.content, list)
    text, img = m.content
    assert isinstance(text, TextPart) and text.text == "what is this?"
    assert isinstance(img, ImagePart) and img.data == PNG and img.mime_type == "image/png"
    # the converted message is a valid schema message
    Message.model_validate(m.model_dump())


@pytest.mark.parametrize("block", [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
    {"type": "image", "url": "https://example.com/cat.png"},
    {"type": "image", "source_type": "url", "url": "https://example.com/cat.png"},
    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
])
def test_convert_image_urls(block):
    m = to_mesh_message(HumanMessage([block]))
    (part,) = m.content
    assert isinstance(part, ImageURLPart) and part.url == "https://example.com/cat.png"


def test_convert_unsupported_blocks_raise():
    with pytest.raises(ValueError, match="'audio'"):
        to_mesh_message(HumanMessage([{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}]))
    with pytest.raises(ValueError, match="file id"):
        to_mesh_message(HumanMessage([{"type": "image", "file_id": "file-123"}]))


def test_convert_ai_tool_calls_and_tool_messages():
    ai = AIMessage(
        [{"type": "text", "text": "let me check"},
         {"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1, "b": 2}},
         {"type": "thinking", "thinking": "hmm"}],
        tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}])
    m = to_mesh_message(ai)
    assert m.role == "assistant" and m.content == "let me check"
    assert m.tool_calls[0].id == "c1" and m.tool_calls[0].function.name == "add"
    assert json.loads(m.tool_calls[0].function.arguments) == {"a": 1, "b": 2}
    empty = to_mesh_message(AIMessage("", tool_calls=[{"name": "add", "args": {}, "id": "c2", "type": "tool_call"}]))
    assert empty.content is None and empty.tool_calls[0].function.arguments == "{}"
    t = to_mesh_message(ToolMessage('{"result": 3}', tool_call_id="c1", name="add"))
    assert (t.role, t.tool_call_id, t.content, t.name) == ("tool", "c1", '{"result": 3}', "add")
    t2 = to_mesh_message(ToolMessage([{"type": "text", "text": "3"}], tool_call_id="c1"))
    assert t2.content == "3"
    for msg in (m, empty, t, t2):
        Message.model_validate(msg.model_dump())


def test_convert_back_from_mesh():
    ai = from_mesh_message(Message(role="assistant", content="ok", tool_calls=[
        ToolCall(id="c1", function=FunctionCall(name="add", arguments='{"a": 1}')),
        ToolCall(id="c2", function=FunctionCall(name="add", arguments='{"a": '))]))
    assert isinstance(ai, AIMessage)
    assert ai.tool_calls == [{"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]
    assert ai.invalid_tool_calls[0]["id"] == "c2"
    human = from_mesh_message(Message(role="user", content=[TextPart(text="see"), ImagePart(data=PNG, mime_type="image/png"),
                                                            ImageURLPart(url="https://x/y.png")]))
    assert human.content[1] == {"type": "image", "base64": PNG_B64, "mime_type": "image/png"}
    # and round trip again
    back = to_mesh_message(human)
    assert back.content[1].data == PNG and back.content[2].url == "https://x/y.png"
    tm = from_mesh_message(Message(role="tool", content="3", tool_call_id="c1"))
    assert isinstance(tm, ToolMessage) and tm.tool_call_id == "c1"
    assert isinstance(from_mesh_message(Message(role="system", content="s")), SystemMessage)


def test_multimodal_reaches_the_connection(chat, conn):
    chat.invoke([HumanMessage([{"type": "text", "text": "describe"},
                               {"type": "image", "base64": PNG_B64, "mime_type": "image/png"},
                               {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])])
    parts = _last(conn).messages[0].content
    assert [type(p) for p in parts] == [TextPart, ImagePart, ImageURLPart]


def test_tool_message_round_trip_through_the_model(chat, conn):
    conn.script(tool_calls=[("add", {"a": 1, "b": 2})])
    bound = chat.bind_tools([add])
    history: list[Any] = [HumanMessage("1 + 2?")]
    ai = bound.invoke(history)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "add"
    history += [ai, add.invoke(ai.tool_calls[0])]
    conn.script(text="3")
    final = bound.invoke(history)
    assert final.content == "3"
    sent = _last(conn).messages
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls[0].id == ai.tool_calls[0]["id"] == sent[2].tool_call_id
    assert sent[2].content == "3"


# --------------------------------------------------------------------------------------------------
# invoke / stream results


def test_invoke_result_metadata(chat, conn):
    conn.script(text="Paris is the capital")
    out = chat.invoke("capital of France?")
    assert isinstance(out, AIMessage) and out.content == "Paris is the capital"
    md = out.response_metadata
    assert md["model_name"] == CHAT and md["model_provider"] == "scripted" and md["finish_reason"] == "stop"
    um = out.usage_metadata
    assert um["input_tokens"] == 4 and um["output_tokens"] == 4 and um["total_tokens"] == 8  # "capital of France?"


def _collect(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    return full


def _check_stream(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1, "usage_metadata must ride on exactly one chunk"
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].chunk_position == "last"
    assert sum(1 for c in chunks if c.response_metadata.get("model_name")) == 1
    return _collect(chunks)


def test_stream_usage_exactly_once(chat, conn):
    conn.script(text="one two three four")
    chunks = list(chat.stream("count"))
    assert [c.content for c in chunks[:-1]] == ["one ", "two ", "three ", "four"]
    full = _check_stream(chunks)
    assert full.content == "one two three four"
    assert full.usage_metadata["output_tokens"] == 4
    assert full.response_metadata["finish_reason"] == "stop"


async def test_astream_usage_exactly_once(chat, conn):
    conn.script(text="one two three")
    chunks = [c async for c in chat.astream("count")]
    full = _check_stream(chunks)
    assert full.content == "one two three"


def test_streaming_flag_routes_invoke_through_stream(mesh, conn):
    from langchain_core.callbacks import BaseCallbackHandler

    tokens: list[str] = []

    class Tokens(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kw: Any) -> None:
            tokens.append(token)

    chat = MeshChatModel(model=CHAT, mesh=mesh, streaming=True)
    conn.script(text="a b c")
    out = chat.invoke("x", config={"callbacks": [Tokens()]})
    assert out.content == "a b c" and tokens[:3] == ["a ", "b ", "c"]
    assert out.usage_metadata["output_tokens"] == 3


def test_stream_tool_call_chunks_reassembled(chat, conn):
    conn.script(text="Let me compute.", tool_calls=[("add", {"a": 1, "b": 2}), ("multiply", {"a": 3, "b": 4})])
    chunks = list(chat.bind_tools([add, multiply]).stream("go"))
    tcc = [tc for c in chunks for tc in c.tool_call_chunks]
    # partial calls: id and name on the first fragment of each index, argument pieces after
    assert [t["index"] for t in tcc] == [0, 0, 1, 1]
    assert [bool(t["id"]) for t in tcc] == [True, False, True, False]
    assert [t["name"] for t in tcc] == ["add", None, "multiply", None]
    full = _check_stream(chunks)
    assert full.content == "Let me compute."
    assert [(t["name"], t["args"]) for t in full.tool_calls] == [("add", {"a": 1, "b": 2}), ("multiply", {"a": 3, "b": 4})]
    assert all(t["id"] and t["type"] == "tool_call" for t in full.tool_calls)
    assert full.response_metadata["finish_reason"] == "tool_calls"


def test_stream_converter_ids_and_footer_calls():
    conv = StreamConverter("x:y:z", "x")
    # a provider that streams no id: one is generated, once per index
    a = conv.chunk(StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, name="f", arguments='{"q"')]))
    b = conv.chunk(StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, id="late-id", arguments=': 1}')]))
    assert a.tool_call_chunks[0]["id"] and b.tool_call_chunks[0]["id"] is None
    last = conv.footer(StreamFooter(finish_reason="tool_calls", tool_calls=[
        ToolCall(id="late-id", function=FunctionCall(name="f", arguments='{"q": 1}'))]))
    full = a + b + last
    assert full.tool_calls == [{"name": "f", "args": {"q": 1}, "id": a.tool_call_chunks[0]["id"], "type": "tool_call"}]
    # a connection that only completes: calls arrive on the footer alone
    conv2 = StreamConverter("x:y:z", "x")
    last2 = conv2.footer(StreamFooter(finish_reason="tool_calls", tool_calls=[
        ToolCall(id="c9", function=FunctionCall(name="f", arguments='{"q": 2}'))]))
    assert last2.tool_calls == [{"name": "f", "args": {"q": 2}, "id": "c9", "type": "tool_call"}]
    assert conv2.chunk(StreamChunk()) is None  # empty events are dropped


class CompleteOnlyConnection(Connection):
    """A plugin that implements ``complete`` only: streams come from the base class's fallback."""

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="m", purposes=[Purpose.GENERIC_COMPLETION])]

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        return CompletionResponse(text="", tool_calls=[ToolCall(id="c1", function=FunctionCall(name="add", arguments='{"a": 1, "b": 1}'))],
                                  finish_reason="tool_calls", usage=Usage(input_tokens=5, output_tokens=6), model=model)


register_connection_type("lc-complete-only", CompleteOnlyConnection)


def test_stream_from_a_complete_only_connection_carries_tool_calls():
    chat = MeshChatModel(model="lc-complete-only:c:m", mesh={"connections": {"c": {"type": "lc-complete-only"}}})
    chunks = list(chat.bind_tools([add]).stream("1+1"))
    full = _check_stream(chunks)
    assert full.tool_calls == [{"name": "add", "args": {"a": 1, "b": 1}, "id": "c1", "type": "tool_call"}]
    assert full.usage_metadata == {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}


def test_invalid_tool_call_arguments_become_invalid_tool_calls(chat, conn):
    conn.script(tool_calls=[ToolCall(id="c1", function=FunctionCall(name="add", arguments='{"a": 1'))])
    out = chat.bind_tools([add]).invoke("x")
    assert out.tool_calls == [] and out.invalid_tool_calls[0]["id"] == "c1"


def test_batch(chat):
    assert [m.content for m in chat.batch(["one", "two"])] == ["one", "two"]


# --------------------------------------------------------------------------------------------------
# bind_tools


@pytest.mark.parametrize("spelling,expected", [
    ("auto", {"type": "auto", "name": None}),
    ("any", {"type": "required", "name": None}),
    ("required", {"type": "required", "name": None}),
    ("none", {"type": "none", "name": None}),
    ("multiply", {"type": "tool_name", "name": "multiply"}),
    (True, {"type": "required", "name": None}),
    ({"type": "function", "function": {"name": "add"}}, {"type": "tool_name", "name": "add"}),
    ({"type": "tool", "name": "add"}, {"type": "tool_name", "name": "add"}),
    ({"type": "any"}, {"type": "required", "name": None}),
    ({"type": "tool_name", "name": "add"}, {"type": "tool_name", "name": "add"}),
])
def test_bind_tools_tool_choice_spellings(chat, conn, spelling, expected):
    chat.bind_tools([add, multiply], tool_choice=spelling).invoke("x")
    s = _last(conn).settings
    assert s.toolChoice.model_dump() == expected
    assert [t.function.name for t in s.tools] == ["add", "multiply"]


def test_bind_tools_true_with_one_tool_names_it(chat, conn):
    chat.bind_tools([add], tool_choice=True).invoke("x")
    assert _last(conn).settings.toolChoice.model_dump() == {"type": "tool_name", "name": "add"}


def test_bind_tools_no_choice_and_false(chat, conn):
    chat.bind_tools([add]).invoke("x")
    assert _last(conn).settings.toolChoice is None
    chat.bind_tools([add], tool_choice=False).invoke("x")
    assert _last(conn).settings.toolChoice is None


def test_bind_tools_formats(chat, conn):
    def subtract(a: int, b: int) -> int:
        """Subtract b from a."""
        return a - b

    anthropic_tool = {"name": "color_picker", "description": "pick", "input_schema": {
        "type": "object", "properties": {"fav_color": {"type": "string"}}, "required": ["fav_color"]}}
    chat.bind_tools([add, subtract, Person, PersonDict, Person.model_json_schema(), anthropic_tool],
                    strict=True, parallel_tool_calls=False).invoke("x")
    s = _last(conn).settings
    assert [t.function.name for t in s.tools] == ["add", "subtract", "Person", "PersonDict", "Person", "color_picker"]
    sub = s.tools[1].function
    assert sub.description == "Subtract b from a." and sub.parameters["required"] == ["a", "b"]
    assert s.tools[0].function.strict is True
    assert s.extra == {"parallel_tool_calls": False}


def test_tool_choice_and_response_format_passed_directly(chat, conn):
    chat.invoke("x", tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                tool_choice="any")
    assert _last(conn).settings.toolChoice.type == "required"
    chat.bind(response_format={"type": "json_object"}).invoke("x")
    assert _last(conn).settings.responseFormat.model_dump(by_alias=True)["schema"] is None
    chat.bind(response_format={"type": "json_schema", "json_schema": {
        "name": "P", "schema": Person.model_json_schema(), "strict": True}}).invoke("x")
    rf = _last(conn).settings.responseFormat
    assert rf.name == "P" and rf.strict and rf.schema_["title"] == "Person"
    chat.invoke("x", response_format=Person)
    assert _last(conn).settings.responseFormat.name == "Person"


def test_bind_tools_errors(chat):
    with pytest.raises(SettingsError, match="not among the bound tools"):
        chat.bind_tools([add], tool_choice="nope")
    with pytest.raises(SettingsError, match="bad name!"):
        chat.bind_tools([{"type": "function", "function": {"name": "bad name!", "parameters": {"type": "object"}}}])
    with pytest.raises(SettingsError, match="JSON Schema types"):
        chat.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": {"type": "int"}}}}}])
    with pytest.raises(SettingsError, match="built-in"):
        chat.bind_tools([{"type": "file_search"}])


# --------------------------------------------------------------------------------------------------
# structured output


def test_structured_output_json_schema_default(chat, conn):
    conn.script(text='{"name": "Ada", "age": 36}')
    out = chat.with_structured_output(Person).invoke("who?")
    assert out == Person(name="Ada", age=36)
    rf = _last(conn).settings.responseFormat
    assert rf.type == "json" and rf.name == "Person" and rf.schema_["properties"].keys() == {"name", "age"}
    assert _last(conn).settings.tools is None


def test_structured_output_json_schema_typeddict_and_dict(chat, conn):
    conn.script(text='{"name": "Ada", "age": 36}')
    assert chat.with_structured_output(PersonDict).invoke("who?") == {"name": "Ada", "age": 36}
    conn.script(text='{"name": "Bo", "age": 2}')
    schema = Person.model_json_schema()
    assert chat.with_structured_output(schema, strict=True).invoke("who?") == {"name": "Bo", "age": 2}
    rf = _last(conn).settings.responseFormat
    assert rf.strict is True and rf.schema_ == schema


def test_structured_output_function_calling(chat, conn):
    conn.script(tool_calls=[("Person", {"name": "Ada", "age": 36})])
    out = chat.with_structured_output(Person, method="function_calling").invoke("who?")
    assert out == Person(name="Ada", age=36)
    s = _last(conn).settings
    assert s.toolChoice.model_dump() == {"type": "tool_name", "name": "Person"}
    assert [t.function.name for t in s.tools] == ["Person"]
    conn.script(tool_calls=[("PersonDict", {"name": "Bo", "age": 2})])
    assert chat.with_structured_output(PersonDict, method="function_calling").invoke("who?") == {"name": "Bo", "age": 2}


def test_structured_output_function_calling_streams(chat, conn):
    conn.script(tool_calls=[("Person", {"name": "Ada", "age": 36})])
    chunks = list(chat.with_structured_output(Person, method="function_calling").stream("who?"))
    assert chunks[-1] == Person(name="Ada", age=36)


def test_structured_output_json_mode(chat, conn):
    conn.script(text='{"name": "Ada", "age": 36}')
    assert chat.with_structured_output(Person, method="json_mode").invoke("who? JSON") == Person(name="Ada", age=36)
    rf = _last(conn).settings.responseFormat
    assert rf.type == "json" and rf.schema_ is None
    conn.script(text='{"x": 1}')
    assert chat.with_structured_output(method="json_mode").invoke("JSON please") == {"x": 1}


def test_structured_output_streams_partial_dicts(chat, conn):
    conn.script(text='{"name": "Ada Lovelace", "age": 36}')
    chunks = list(chat.with_structured_output(PersonDict).stream("who?"))
    assert len(chunks) > 1 and chunks[-1] == {"name": "Ada Lovelace", "age": 36}


def test_structured_output_include_raw(chat, conn):
    conn.script(text='{"name": "Ada", "age": 36}')
    out = chat.with_structured_output(Person, include_raw=True).invoke("who?")
    assert isinstance(out["raw"], AIMessage) and out["parsed"] == Person(name="Ada", age=36)
    assert out["parsing_error"] is None
    conn.script(text="not json at all")
    bad = chat.with_structured_output(Person, include_raw=True).invoke("who?")
    assert bad["parsed"] is None and bad["parsing_error"] is not None
    assert bad["raw"].content == "not json at all"


def test_structured_output_bad_method(chat):
    with pytest.raises(ValueError, match="method"):
        chat.with_structured_output(Person, method="xml")  # type: ignore[arg-type]


def test_structured_output_reports_ls_format(chat, conn):
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[Any] = []

    class H(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, *, options: Any = None, **kw: Any) -> None:
            seen.append(options)

    conn.script(text='{"name": "Ada", "age": 36}')
    chat.with_structured_output(Person).invoke("who?", config={"callbacks": [H()]})
    assert seen[0]["ls_structured_output_format"]["kwargs"]["method"] == "json_schema"
    assert seen[0]["ls_structured_output_format"]["schema"]["title"] == "Person"


# --------------------------------------------------------------------------------------------------
# errors


def test_mesh_errors_propagate(chat, conn):
    conn.script(error=RateLimitError("slow down", status=429))
    with pytest.raises(RateLimitError, match="slow down"):
        chat.invoke("x")
    conn.script(error=BadRequestError("bad", status=400))
    with pytest.raises(BadRequestError):
        list(chat.stream("x"))


async def test_mesh_errors_propagate_async(chat, conn):
    conn.script(error=RateLimitError("slow down", status=429))
    with pytest.raises(RateLimitError):
        await chat.ainvoke("x")
    conn.script(error=RateLimitError("slow down", status=429))
    with pytest.raises(RateLimitError):
        [c async for c in chat.astream("x")]


def test_interrupted_stream_is_an_error(chat, conn):
    conn.script(text="a b c d", cut_after=2)
    with pytest.raises(StreamInterruptedError):
        list(chat.stream("x"))


def test_max_retries_retries_retryable_errors(mesh, conn):
    chat = MeshChatModel(model=CHAT, mesh=mesh, max_retries=2)
    conn.script(error=RateLimitError("slow", status=429, retry_after=0))
    conn.script(error=RateLimitError("slow", status=429, retry_after=0))
    conn.script(text="finally")
    assert chat.invoke("x").content == "finally"
    conn.script(error=BadRequestError("no", status=400))  # not retryable
    with pytest.raises(BadRequestError):
        chat.invoke("x")
    conn.script(error=RateLimitError("slow", status=429, retry_after=0))
    conn.script(text="streamed")
    assert _collect(list(chat.stream("x"))).content == "streamed"
    no_retry = MeshChatModel(model=CHAT, mesh=mesh)
    conn.script(error=RateLimitError("slow", status=429, retry_after=0))
    with pytest.raises(RateLimitError):
        no_retry.invoke("x")


async def test_max_retries_async(mesh, conn):
    chat = MeshChatModel(model=CHAT, mesh=mesh, max_retries=1)
    conn.script(error=RateLimitError("slow", status=429, retry_after=0))
    conn.script(text="ok")
    assert (await chat.ainvoke("x")).content == "ok"
    conn.script(error=RateLimitError("slow", status=429, retry_after=0))
    conn.script(text="ok2")
    assert _collect([c async for c in chat.astream("x")]).content == "ok2"


def test_unknown_llm_and_wrong_purpose(mesh):
    with pytest.raises(UnknownLLMError):
        MeshChatModel(model="scripted:fake:missing", mesh=mesh).invoke("x")
    with pytest.raises(MeshError, match="not a GENERIC_COMPLETION"):
        MeshChatModel(model=EMBED, mesh=mesh).invoke("x")
    with pytest.raises(MeshError, match="not a GENERIC_COMPLETION"):
        MeshLLM(model=EMBED, mesh=mesh).invoke("x")


# --------------------------------------------------------------------------------------------------
# the native async path


class AsyncOnlyConnection(ScriptedConnection):
    """Records which path each call took; its sync methods refuse to run inside an event loop."""

    def __init__(self, name: str, config: Any):
        super().__init__(name, config)
        self.calls: list[tuple[str, int]] = []

    def _refuse_in_loop(self, what: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.calls.append((what, threading.get_ident()))
            return
        raise AssertionError(f"sync {what} called from the event loop")

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        self._refuse_in_loop("complete")
        if threading.current_thread() is not threading.main_thread():
            raise AssertionError("sync complete ran in a worker thread")
        return super().complete(model, request)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        self._refuse_in_loop("stream")
        if threading.current_thread() is not threading.main_thread():
            raise AssertionError("sync stream ran in a worker thread")
        return super().stream(model, request)

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        self.calls.append(("acomplete", threading.get_ident()))
        await asyncio.sleep(0)
        return super().complete(model, request)

    async def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.calls.append(("astream", threading.get_ident()))
        for ev in super().stream(model, request):
            await asyncio.sleep(0)
            yield ev

    async def aembed(self, model: str, request: Any) -> Any:
        self.calls.append(("aembed", threading.get_ident()))
        return super().embed(model, request)


register_connection_type("lc-async-only", AsyncOnlyConnection)
ASYNC_CFG = {"connections": {"a": {"type": "lc-async-only"}}}


async def test_async_calls_use_the_connection_async_path():
    mesh = Mesh.from_config(ASYNC_CFG)
    conn = mesh.connection("a")
    chat = MeshChatModel(model="lc-async-only:a:chat", mesh=mesh)
    loop_thread = threading.get_ident()
    assert (await chat.ainvoke("hello async")).content == "hello async"
    chunks = [c async for c in chat.astream("stream async")]
    assert _check_stream(chunks).content == "stream async"
    conn.script(tool_calls=[("add", {"a": 1, "b": 2})])
    full = _collect([c async for c in chat.bind_tools([add]).astream("x")])
    assert full.tool_calls[0]["args"] == {"a": 1, "b": 2}
    llm = MeshLLM(model="lc-async-only:a:chat", mesh=mesh)
    assert await llm.ainvoke("llm async") == "llm async"
    assert "".join([c async for c in llm.astream("llm stream")]) == "llm stream"
    emb = MeshEmbeddings(model="lc-async-only:a:embed", mesh=mesh)
    assert len(await emb.aembed_documents(["a", "b"])) == 2
    kinds = [k for k, _ in conn.calls]
    assert kinds == ["acomplete", "astream", "astream", "acomplete", "astream", "aembed"]
    assert all(tid == loop_thread for _, tid in conn.calls), "async calls must run on the event loop, not in threads"


# --------------------------------------------------------------------------------------------------
# MeshLLM


def test_mesh_llm_invoke_stream_batch(mesh, conn):
    llm = MeshLLM(model=CHAT, mesh=mesh, temperature=0.1, max_tokens=5)
    conn.script(text="Once upon a time")
    assert llm.invoke("Tell a story") == "Once upon a time"
    req = _last(conn)
    assert [(m.role, m.content) for m in req.messages] == [("user", "Tell a story")]
    assert (req.settings.temperature, req.settings.maxOutputTokens) == (0.1, 5)
    conn.script(text="a b c")
    assert list(llm.stream("x")) == ["a ", "b ", "c", ""]
    assert llm.batch(["one", "two"]) == ["one", "two"]
    res = llm.generate(["alpha beta", "gamma"], stop=["beta"])
    assert [g[0].text for g in res.generations] == ["alpha ", "gamma"]
    assert _last(conn).settings.stopSequences == ["beta"]
    info = res.generations[0][0].generation_info
    assert info["finish_reason"] == "stop" and info["usage_metadata"]["total_tokens"] > 0
    assert res.llm_output["token_usage"]["total_tokens"] > 0


async def test_mesh_llm_async(mesh, conn):
    llm = MeshLLM(model=CHAT, mesh=mesh)
    assert await llm.ainvoke("async hello") == "async hello"
    assert await llm.abatch(["x", "y"]) == ["x", "y"]
    conn.script(text="p q")
    assert [c async for c in llm.astream("x")] == ["p ", "q", ""]


def test_mesh_llm_streaming_flag_and_errors(mesh, conn):
    llm = MeshLLM(model=CHAT, mesh=mesh, streaming=True)
    conn.script(text="s t")
    assert llm.invoke("x") == "s t"
    conn.script(error=RateLimitError("slow", status=429))
    with pytest.raises(RateLimitError):
        MeshLLM(model=CHAT, mesh=mesh).invoke("x")


# --------------------------------------------------------------------------------------------------
# MeshEmbeddings


def test_embeddings_batching_preserves_order(mesh, conn):
    texts = [f"text number {i} about {w}" for i, w in enumerate("abcdefg")]
    emb = MeshEmbeddings(model=EMBED, mesh=mesh, batch_size=3)
    vecs = emb.embed_documents(texts)
    assert [r.texts for r in conn.embedding_requests] == [texts[0:3], texts[3:6], texts[6:7]]
    assert all(r.input_type == "document" for r in conn.embedding_requests)
    one_by_one = [MeshEmbeddings(model=EMBED, mesh=mesh, batch_size=1).embed_query(t) for t in texts]
    assert vecs == one_by_one
    assert all(type(x) is float for v in vecs for x in v)
    assert conn.embedding_requests[-1].input_type == "query"
    assert emb.embed_documents([]) == []


async def test_embeddings_async_batching_order(mesh, conn):
    texts = [f"t{i} {i * 'x'}" for i in range(10)]
    emb = MeshEmbeddings(model=EMBED, mesh=mesh, batch_size=4, max_concurrency=3)
    vecs = await emb.aembed_documents(texts)
    assert vecs == MeshEmbeddings(model=EMBED, mesh=mesh, batch_size=100).embed_documents(texts)
    assert sorted(len(r.texts) for r in conn.embedding_requests[:3]) == [2, 4, 4]
    q = await emb.aembed_query(texts[1])
    assert q == vecs[1] and type(q[0]) is float


def test_embeddings_numpy_vectors_become_python_floats():
    np = pytest.importorskip("numpy")

    class NumpyConn(ScriptedConnection):
        def embed(self, model: str, request: Any) -> Any:
            resp = super().embed(model, request)
            # a sloppy connection that hands back numpy rows
            object.__setattr__(resp, "embeddings", [np.asarray(v, dtype=np.float32) for v in resp.embeddings])
            return resp

    register_connection_type("lc-numpy", NumpyConn)
    emb = MeshEmbeddings(model="lc-numpy:n:embed", mesh={"connections": {"n": {"type": "lc-numpy"}}})
    v = emb.embed_query("hello")
    assert type(v) is list and type(v[0]) is float


def test_embeddings_validation(mesh):
    with pytest.raises(Exception):
        MeshEmbeddings(model=EMBED, mesh=mesh, batch_size=0)
    with pytest.raises(Exception):
        MeshEmbeddings(model=EMBED, mesh=mesh, bogus=1)
    with pytest.raises(MeshError, match="not a TEXT_EMBEDDING_EXTRACTION"):
        MeshEmbeddings(model=CHAT, mesh=mesh).embed_query("x")
