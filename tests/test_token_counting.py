"""get_num_tokens never answers 0: the local model's own tokenizer and chat template, the provider
count-tokens endpoints (Anthropic, Vertex AI / Gemini API, Bedrock) on their local wire servers, the
OpenAI family's encodings offline, and the documented estimate elsewhere; ``trim_messages`` with the
chat model as its token counter."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core")
bpe_openai = pytest.importorskip("bpe_openai")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import CapabilityError  # noqa: E402
from langchain_mesh.langchain import MeshChatModel  # noqa: E402
from langchain_mesh.testing.fakes import count_tokens as server_count  # noqa: E402
from langchain_mesh.tokens import decode_token_arrays, estimate_tokens, openai_encoding  # noqa: E402

HISTORY = [SystemMessage("You answer briefly."),
           HumanMessage("Tell me about the history of the city of Paris, from the Romans onwards."),
           AIMessage("Lutetia was founded by the Parisii; the Romans took it in 52 BC."),
           HumanMessage("And what happened in the Middle Ages?"),
           AIMessage("It became the capital of the Capetian kings and grew into Europe's largest city."),
           HumanMessage("What is its population today?")]


@tool
def population(city: str) -> int:
    """The population of a city."""
    return 2_100_000


def _trimmed_by(chat: MeshChatModel, budget: int) -> list:
    return trim_messages(HISTORY, max_tokens=budget, token_counter=chat, strategy="last",
                         include_system=True, start_on="human")


def _assert_trims(chat: MeshChatModel) -> None:
    full = chat.get_num_tokens_from_messages(HISTORY)
    assert full > 0
    kept = _trimmed_by(chat, full - 1)
    assert 2 <= len(kept) < len(HISTORY)  # something was cut, the system prompt and last question kept
    assert kept[0] == HISTORY[0] and kept[-1] == HISTORY[-1]
    assert chat.get_num_tokens_from_messages(kept) <= full - 1
    assert _trimmed_by(chat, 2 * full) == HISTORY  # (counts of parts need not add up: templates)


# ---- the local model: its tokenizer and chat template -------------------------------------------------


@pytest.mark.local_model
def test_local_model_counts_with_its_tokenizer_and_template():
    chat = MeshChatModel(model="huggingfacelocal:local:SmolLM2-135M-Instruct")
    llm = chat.mesh or Mesh.default()
    tok = llm.connection("local")._chat_model("SmolLM2-135M-Instruct").tokenizer
    assert chat.get_token_ids("hello world") == tok.encode("hello world", add_special_tokens=False)
    assert chat.get_num_tokens("hello world") == len(tok.encode("hello world", add_special_tokens=False))
    two = HISTORY[:2]
    want = len(tok.apply_chat_template([{"role": "system", "content": two[0].content},
                                        {"role": "user", "content": two[1].content}],
                                       add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    assert chat.get_num_tokens_from_messages(two) == want
    # tools add their instructions to the prompt
    assert chat.get_num_tokens_from_messages(two, tools=[population]) > want
    _assert_trims(chat)


# ---- hosted: the providers' count-tokens endpoints ------------------------------------------------------


def test_anthropic_counts_on_its_endpoint_and_trims(anthropic_server):
    mesh = Mesh.from_config({"connections": {"claude": {"type": "anthropic", "api_key": "test-key",
                                                        "base_url": anthropic_server.base_url, "max_retries": 0}}})
    chat = MeshChatModel(model="anthropic:claude:claude-sonnet-4-5", mesh=mesh)
    n = chat.get_num_tokens_from_messages(HISTORY[:2], tools=[population])
    sent = anthropic_server.last_request
    assert sent.path == "/v1/messages/count_tokens"
    body = sent.json
    assert set(body) == {"model", "messages", "system", "tools"} and body["model"] == "claude-sonnet-4-5"
    assert n == server_count(HISTORY[1].content) + server_count(HISTORY[0].content) + server_count(
        json.dumps(body["tools"]))
    assert chat.get_num_tokens("hello there world") == 3  # one user message, counted by the provider
    with pytest.raises(CapabilityError, match="get_num_tokens"):
        chat.get_token_ids("hello")  # Anthropic's tokenizer is not public
    _assert_trims(chat)


async def test_anthropic_async_count(anthropic_server):
    from langchain_mesh.schema import CompletionRequest, Message

    mesh = Mesh.from_config({"connections": {"claude": {"type": "anthropic", "api_key": "test-key",
                                                        "base_url": anthropic_server.base_url, "max_retries": 0}}})
    llm = mesh.get_llm("anthropic:claude:claude-sonnet-4-5")
    n = await mesh.acount_tokens(llm, CompletionRequest(messages=[Message(role="user", content="one two three")]))
    assert n == 3 and anthropic_server.last_request.path == "/v1/messages/count_tokens"


@pytest.mark.parametrize("conn", ["gcp", "gem"])
def test_vertex_and_gemini_count_on_their_endpoint(vertex_server, conn):
    cfg = {"gcp": {"type": "vertex", "service_account_key": json.dumps(vertex_server.service_account_key()),
                   "base_url": vertex_server.url, "max_retries": 0, "timeout": 5},
           "gem": {"type": "vertex", "backend": "gemini", "api_key": vertex_server.api_key,
                   "base_url": vertex_server.url, "max_retries": 0, "timeout": 5}}
    with Mesh.from_config({"connections": {conn: cfg[conn]}}) as mesh:
        chat = MeshChatModel(model=f"vertex:{conn}:gemini-2.5-flash", mesh=mesh)
        n = chat.get_num_tokens_from_messages(HISTORY[:4])
    api = [r for r in vertex_server.requests if r.path != "/token"][-1]
    assert api.path.endswith("/models/gemini-2.5-flash:countTokens")
    texts = [m.content for m in HISTORY[:4]]
    assert n == sum(server_count(t) for t in texts)  # system instruction included, on either API


def test_bedrock_counts_on_its_endpoint(bedrock_server):
    cfg = {"aws": {"type": "bedrock", "endpoint_url": bedrock_server.url, "region": "us-east-1",
                   "access_key_id": "AKIDTESTKEY", "secret_access_key": "test-secret", "max_retries": 0}}
    with Mesh.from_config({"connections": cfg}) as mesh:
        chat = MeshChatModel(model="bedrock:aws:anthropic.claude-3-5-sonnet-20240620-v1:0", mesh=mesh)
        n = chat.get_num_tokens_from_messages(HISTORY[:3])
    sent = bedrock_server.last_request
    assert sent.path.endswith("/count-tokens") and set(sent.json["input"]["converse"]) == {"messages", "system"}
    assert n == sum(server_count(m.content) for m in HISTORY[:3])


# ---- the OpenAI family offline, and the estimate ---------------------------------------------------------


def test_openai_models_count_with_their_encoding_offline_and_need_no_key():
    mesh = Mesh.from_config({"connections": {
        "oai": {"type": "openai", "api_key": "{{env:UNSET_P15_KEY}}", "models": [{"id": "gpt-4o"}, {"id": "gpt-4"}]}}})
    gpt4o = MeshChatModel(model="openai:oai:gpt-4o", mesh=mesh)
    assert gpt4o.get_token_ids("hello world") == [24912, 2375]  # o200k_base
    assert MeshChatModel(model="openai:oai:gpt-4", mesh=mesh).get_token_ids("hello world") == [15339, 1917]
    n = gpt4o.get_num_tokens_from_messages(HISTORY)
    # OpenAI's cookbook rule: 3 per message + role + content, 3 to prime the reply
    enc = openai_encoding("gpt-4o")
    role = {"system": "system", "human": "user", "ai": "assistant"}
    assert n == 3 + sum(3 + len(enc.encode(role[m.type])) + len(enc.encode(m.content)) for m in HISTORY)
    _assert_trims(gpt4o)


def test_other_models_get_the_documented_estimate_never_zero():
    mesh = Mesh.from_config({"connections": {"mis": {"type": "mistral", "api_key": "{{env:UNSET_P15_KEY}}",
                                                     "models": [{"id": "mistral-large-latest"}]}}})
    chat = MeshChatModel(model="mistral:mis:mistral-large-latest", mesh=mesh)
    with pytest.raises(CapabilityError):
        chat.get_token_ids("hello")  # Mistral's tokenizer is not OpenAI's: no ids are made up
    assert chat.get_num_tokens("hello world") == 3 + 3 + estimate_tokens("user") + estimate_tokens("hello world")
    assert chat.get_num_tokens_from_messages(HISTORY) > 0


def test_token_arrays_decode_with_the_named_encoding():
    ids = bpe_openai.get_encoding("cl100k_base").encode("hello world")
    assert decode_token_arrays([ids]) == ["hello world"]
    o200k = bpe_openai.get_encoding("o200k_base").encode("hello world")
    assert decode_token_arrays([o200k], "gpt-4o") == ["hello world"]
    with pytest.raises(ValueError, match="outside the cl100k_base vocabulary"):
        decode_token_arrays([[1, 200_000]])


def test_the_scripted_connection_counts_as_its_usage_reports():
    with Mesh.from_config({"connections": {"fake": {"type": "scripted"}}}) as mesh:
        chat = MeshChatModel(model="scripted:fake:chat", mesh=mesh)
        n = chat.get_num_tokens_from_messages(HISTORY[:2])
        assert n == chat.invoke(HISTORY[:2]).usage_metadata["input_tokens"] > 0
