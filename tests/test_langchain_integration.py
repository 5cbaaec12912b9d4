"""langchain-tests' integration suites against the REAL local models of the embedded default:
``huggingfacelocal:local:SmolLM2-135M-Instruct`` (chat) and ``huggingfacelocal:local:all-MiniLM-L6-v2``
(embeddings), through ``Mesh()``.

Feature flags are set to what the local connection does: tool calling and tool choice (forced calls
under schema-constrained decoding), structured output and JSON mode (``responseFormat``), usage
metadata; no image, audio or PDF input. A test is marked xfail only where the 135M model's answer
quality is the cause, with that reason; the same suites pass in full on the scripted connection
(``test_langchain_scripted_integration.py``), which isolates the adapter from answer quality.
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("langchain_tests")
if importlib.util.find_spec("langchain_mesh.connections.huggingface_local") is None:
    pytest.skip("the huggingfacelocal connection is not available", allow_module_level=True)
for _mod in ("torch", "transformers", "llguidance"):
    pytest.importorskip(_mod)

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.langchain import MeshChatModel, MeshEmbeddings  # noqa: E402

pytestmark = pytest.mark.local_model

CHAT = "huggingfacelocal:local:SmolLM2-135M-Instruct"
EMBED = "huggingfacelocal:local:all-MiniLM-L6-v2"
# One mesh for the module: the models load once, not once per test.
MESH = Mesh()

QUALITY = "SmolLM2-135M answer quality: "


class TestMeshChatModelLocal(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[MeshChatModel]:
        return MeshChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": CHAT, "mesh": MESH, "temperature": 0}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False  # SmolLM2 is text-only (the connection raises CapabilityError on images)

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True  # Anthropic-format tools and message blocks are converted by the adapter

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    # ---- expected failures: answer quality of a 135M model, never a missing feature --------------------
    # Each has a companion test below that checks everything in it that does not depend on quality.

    @pytest.mark.xfail(reason=QUALITY + "the forced call to magic_function is schema-valid, but the model "
                       "fills input with a number of its own (e.g. 100) instead of the 3 in the question",
                       strict=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=QUALITY + "the forced call to magic_function is schema-valid, but the model "
                       "fills input with a number of its own (e.g. 100) instead of the 3 in the question",
                       strict=False)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=QUALITY + "JSON mode guarantees a JSON object, not its fields; asked in prose "
                       "for string 'setup' and 'punchline' values, the model writes number arrays",
                       strict=False)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(reason=QUALITY + "with tool_choice left to the model, it answers the weather question "
                       "in prose (inventing a forecast) instead of calling get_weather",
                       strict=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)


class TestMeshEmbeddingsLocal(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[MeshEmbeddings]:
        return MeshEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": EMBED, "mesh": MESH}


# --------------------------------------------------------------------------------------------------
# companions of the xfails: what in them does not depend on answer quality holds on the local model


class _MagicFunctionSchema(BaseModel):
    input: int = Field(..., gt=-1000, lt=1000)


@tool(args_schema=_MagicFunctionSchema)
def magic_function(_input: int) -> int:
    """Apply a magic function to an input."""
    return _input + 2


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


@pytest.fixture(scope="module")
def chat() -> MeshChatModel:
    return MeshChatModel(model=CHAT, mesh=MESH, temperature=0)


def _one_valid_call(msg: AIMessage, name: str, schema: type[BaseModel]) -> dict:
    assert isinstance(msg, AIMessage)
    assert len(msg.tool_calls) == 1 and not msg.invalid_tool_calls
    call = msg.tool_calls[0]
    assert call["name"] == name and call["id"] and call.get("type") == "tool_call"
    schema.model_validate(call["args"])  # constrained decoding: the arguments follow the schema
    blocks = [b for b in msg.content_blocks if b["type"] == "tool_call"]
    assert len(blocks) == 1 and blocks[0]["args"] == call["args"]
    return call


def test_forced_tool_call_is_schema_valid_invoke_and_stream(chat):
    bound = chat.bind_tools([magic_function], tool_choice="any")
    query = "What is the value of magic_function(3)? Use the tool."
    call = _one_valid_call(bound.invoke(query), "magic_function", _MagicFunctionSchema)
    full = None
    chunks = []
    for chunk in bound.stream(query):
        chunks.append(chunk)
        full = chunk if full is None else full + chunk
    streamed = _one_valid_call(full, "magic_function", _MagicFunctionSchema)
    assert streamed["args"] == call["args"]  # greedy decoding: the stream reassembles the same call
    assert sum(1 for c in chunks if c.usage_metadata) == 1 and chunks[-1].chunk_position == "last"
    assert full.response_metadata["finish_reason"] == "tool_calls"


async def test_forced_tool_call_is_schema_valid_async(chat):
    bound = chat.bind_tools([magic_function], tool_choice="magic_function")
    query = "What is the value of magic_function(3)? Use the tool."
    call = _one_valid_call(await bound.ainvoke(query), "magic_function", _MagicFunctionSchema)
    full = None
    async for chunk in bound.astream(query):
        full = chunk if full is None else full + chunk
    assert _one_valid_call(full, "magic_function", _MagicFunctionSchema)["args"] == call["args"]


def test_json_mode_returns_a_json_object():
    """JSON mode's guarantee: the output is a JSON object (complete, or cut only by the token budget)."""
    import json

    from langchain_core.utils.json import parse_partial_json

    msg = ("Tell me a joke about cats. Return the result as a JSON with 'setup' and 'punchline' keys. "
           "Return nothing other than JSON.")
    # the 135M model tends to count forever inside an array; cap it so the test stays short
    capped = MeshChatModel(model=CHAT, mesh=MESH, temperature=0, max_tokens=200)
    raw = capped.bind(response_format={"type": "json"}).invoke(msg)
    text = raw.content
    if raw.response_metadata["finish_reason"] == "length":
        assert isinstance(parse_partial_json(text), dict), text  # a prefix of a JSON object
    else:
        assert isinstance(json.loads(text), dict), text
    chunks = list(capped.with_structured_output(method="json_mode").stream(msg))
    assert chunks and all(isinstance(c, dict) for c in chunks)


def test_agent_loop_with_a_required_first_call(chat):
    """The standard agent loop, with the first call required instead of left to the model."""
    question = HumanMessage("What is the weather in San Francisco, CA?")
    ai = chat.bind_tools([get_weather], tool_choice="any").invoke([question])
    assert any(b["type"] == "tool_call" for b in ai.content_blocks)
    assert len(ai.tool_calls) == 1
    result = get_weather.invoke(ai.tool_calls[0])
    assert isinstance(result, ToolMessage) and result.tool_call_id == ai.tool_calls[0]["id"]
    final = chat.bind_tools([get_weather]).invoke([question, ai, result])
    assert isinstance(final, AIMessage) and (final.text or final.tool_calls)
