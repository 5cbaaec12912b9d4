"""``mesh serve`` takes what OpenAI takes, driven by the real clients that send it: instructor's
re-ask (a ``name`` on the tool message) and ``langchain_openai.OpenAIEmbeddings`` with its default
settings (token-id arrays), on the translated path (scripted) and the pass-through path (openai)."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
instructor = pytest.importorskip("instructor")
langchain_openai = pytest.importorskip("langchain_openai")
pytest.importorskip("bpe_openai")

from pydantic import BaseModel  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.langchain import MeshEmbeddings  # noqa: E402
from langchain_mesh.tokens import openai_encoding, seed_tiktoken_cache  # noqa: E402

KEY = "sk-test-clients"
FAKE, FAKE_EMBED, OA_EMBED = "scripted:fake:chat", "scripted:fake:embed", "openai:oa:text-embedding-3-small"


@pytest.fixture(scope="module")
def gateway(_mesh_openai_server_session):
    mesh = Mesh.from_config({
        "connections": {
            "fake": {"type": "scripted"},
            "oa": {"type": "openai", "api_key": "test-key", "base_url": _mesh_openai_server_session.base_url,
                   "max_retries": 0, "models": [{"id": "gpt-4o"},
                                                {"id": "text-embedding-3-small", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]},
        },
        "server": {"api_keys": [{"key": KEY}]},
    })
    with RunningServer(mesh) as srv:
        yield srv


@pytest.fixture
def fake(gateway):
    conn = gateway.app.mesh.connection("fake")
    conn._replies.clear()
    conn.requests.clear()
    return conn


@pytest.fixture
def tiktoken_offline(tmp_path, monkeypatch):
    """tiktoken's cache seeded from bpe-openai's files: OpenAIEmbeddings tokenizes with tiktoken."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    seed_tiktoken_cache()


class User(BaseModel):
    name: str
    age: int


def test_instructor_reask_sends_a_named_tool_message(gateway, fake):
    fake.script(tool_calls=[("User", {"name": "Ada"})])          # age missing: instructor re-asks
    fake.script(tool_calls=[("User", {"name": "Ada", "age": 36})])
    client = instructor.from_openai(openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0),
                                    mode=instructor.Mode.TOOLS)
    user = client.chat.completions.create(model=FAKE, response_model=User, max_retries=2,
                                          messages=[{"role": "user", "content": "Ada is 36"}])
    assert (user.name, user.age) == ("Ada", 36)
    reask = fake.requests[-1].messages
    tool = next(m for m in reask if m.role == "tool")
    assert tool.name == "User" and "age" in tool.text  # the validation error went back to the model


def test_a_named_tool_message_passes_through_to_openai(gateway, openai_server):
    body = {"model": "openai:oa:gpt-4o", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "w", "content": "sunny"}]}
    r = httpx.post(gateway.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    assert openai_server.last_request.json["messages"][2]["name"] == "w"


def test_openai_embeddings_with_default_settings_on_a_mesh_model(gateway, tiktoken_offline, fake):
    texts = ["hello world", "the cat sat on the mat"]
    emb = langchain_openai.OpenAIEmbeddings(model=FAKE_EMBED, base_url=gateway.base_url, api_key=KEY)
    assert emb.check_embedding_ctx_length  # the default: token ids go on the wire
    got = emb.embed_documents(texts)
    # the ids were read back as the text they stand for, and embedded as that text
    assert [r.texts for r in fake.embedding_requests] == [texts]
    want = MeshEmbeddings(model=FAKE_EMBED, mesh=gateway.app.mesh).embed_documents(texts)
    assert len(got) == len(want) and all(g == pytest.approx(w, abs=1e-6) for g, w in zip(got, want))


def test_token_arrays_are_forwarded_to_openai_as_sent(gateway, openai_server):
    ids = openai_encoding("cl100k_base").encode("hello world")
    r = httpx.post(gateway.base_url + "/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": OA_EMBED, "input": [ids]})
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    assert openai_server.last_request.json["input"] == [ids]


def test_a_single_token_array_and_a_bad_id(gateway, fake):
    ids = openai_encoding("cl100k_base").encode("hello")
    r = httpx.post(gateway.base_url + "/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": FAKE_EMBED, "input": ids})
    assert r.status_code == 200 and fake.embedding_requests[-1].texts == ["hello"]
    r = httpx.post(gateway.base_url + "/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": FAKE_EMBED, "input": [[5, -1]]})
    assert r.status_code == 400 and "outside the cl100k_base vocabulary" in r.json()["error"]["message"]


def test_newer_openai_request_fields_are_taken_and_passed_on(gateway, fake, openai_server):
    fields = {"store": False, "service_tier": "auto", "prompt_cache_key": "k1", "safety_identifier": "u-hash",
              "verbosity": "low"}
    r = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0).chat.completions.create(
        model=FAKE, messages=[{"role": "user", "content": "hi"}], **fields)
    assert r.choices[0].message.content == "hi"
    assert fake.requests[-1].settings.extra == fields  # for the provider, which takes them or says so
    httpx.post(gateway.base_url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
               json={"model": "openai:oa:gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields})
    assert {k: openai_server.last_request.json.get(k) for k in fields} == fields
