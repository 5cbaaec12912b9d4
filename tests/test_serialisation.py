"""MeshChatModel, MeshLLM, MeshEmbeddings and the bank retriever cross process boundaries: LangChain's
``dumpd``/``load`` and pickle into a *spawned* process (what multiprocessing spawn, Ray and Dask do),
with the mesh carried as its config with secret references, never a resolved value."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.load import dumpd, dumps, load, loads  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import CredentialError  # noqa: E402
from langchain_mesh.langchain import MeshChatModel, MeshEmbeddings, MeshLLM  # noqa: E402

SECRET = "sk-resolved-value-must-never-travel"


def _mesh(tmp_path: Path, openai_url: str = "http://127.0.0.1:9/v1") -> Mesh:
    return Mesh.from_config({
        "connections": {
            "fake": {"type": "scripted"},
            "oai": {"type": "openai", "api_key": "{{env:P15_OPENAI_KEY}}", "base_url": openai_url,
                    "models": [{"id": "gpt-4o"}]},
        },
        "knowledge_banks": {"docs": {"backend": "faiss", "path": str(tmp_path / "bank"),
                                     "embedding_llm": "scripted:fake:embed"}},
    })


def _bank_retriever(mesh: Mesh) -> Any:
    kb = mesh.get_knowledge_bank("docs")
    with kb.get_writer() as writer:
        writer.as_langchain_vectorstore().add_documents([
            Document(page_content="the cat sat on the mat"), Document(page_content="stock prices fell sharply")])
    return kb.as_langchain_retriever(k=1)


def _objects(mesh: Mesh) -> dict[str, Any]:
    return {"chat": MeshChatModel(model="scripted:fake:chat", mesh=mesh, temperature=0.2, max_retries=1),
            "llm": MeshLLM(model="scripted:fake:chat", mesh=mesh),
            "embeddings": MeshEmbeddings(model="scripted:fake:embed", mesh=mesh, batch_size=8),
            "retriever": _bank_retriever(mesh),
            "hosted": MeshChatModel(model="openai:oai:gpt-4o", mesh=mesh)}


def _use(name: str, obj: Any) -> Any:
    """What each object answers, in whichever process it is in."""
    if name in ("chat", "hosted"):
        return obj.invoke("echo me").content
    if name == "llm":
        return obj.invoke("echo me too")
    if name == "embeddings":
        return obj.embed_query("a cat")
    return [d.page_content for d in obj.invoke("cat on a mat")]


def _child(blob: bytes) -> dict[str, Any]:  # pragma: no cover - runs in the spawned process
    objs = pickle.loads(blob)
    return {name: _use(name, obj) for name, obj in objs.items()}


@pytest.fixture
def env_key(monkeypatch):
    monkeypatch.setenv("P15_OPENAI_KEY", "test-key")


def test_dumpd_and_load_round_trip_each_class(tmp_path, env_key, monkeypatch):
    monkeypatch.setenv("P15_OPENAI_KEY", SECRET)
    mesh = _mesh(tmp_path)
    for name, obj in _objects(mesh).items():
        data = dumpd(obj)
        text = json.dumps(data)
        assert data["type"] == "constructor", name
        assert SECRET not in text and "{{env:P15_OPENAI_KEY}}" in text, name
        back = load(data, valid_namespaces=["langchain_mesh", "knowledge_banks"], allowed_objects="all")
        assert type(back) is type(obj)
        assert back.mesh is not mesh and back.mesh.config.connections.keys() == mesh.config.connections.keys()
        if name != "hosted":
            assert _use(name, back) == _use(name, obj), name
    # dumps/loads (strings), and an explicit allow-list instead of "all"
    chat = _objects(mesh)["chat"]
    back = loads(dumps(chat), valid_namespaces=["langchain_mesh"], allowed_objects=[MeshChatModel])
    assert (back.model, back.temperature, back.max_retries) == ("scripted:fake:chat", 0.2, 1)


def test_pickle_into_a_spawned_process(tmp_path, env_key, openai_server):
    openai_server.script(text="from the hosted model")
    mesh = _mesh(tmp_path, openai_server.base_url)
    objs = _objects(mesh)
    blob = pickle.dumps(objs)
    assert b"test-key" not in blob  # the reference travels; the child resolves it from its environment
    want = {name: _use(name, obj) for name, obj in objs.items() if name != "hosted"}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_child, (blob,))
    assert got["hosted"] == "from the hosted model"
    assert openai_server.last_request.headers["authorization"] == "Bearer test-key"
    del got["hosted"]
    assert got == want
    assert want["chat"] == "echo me" and want["retriever"] == ["the cat sat on the mat"]


def test_a_literal_secret_is_refused_clearly_and_never_shown(tmp_path):
    mesh = Mesh.from_config({"connections": {"oai": {"type": "openai", "api_key": SECRET,
                                                      "models": [{"id": "gpt-4o"}]}}})
    chat = MeshChatModel(model="openai:oai:gpt-4o", mesh=mesh)
    for attempt in (lambda: pickle.dumps(chat), lambda: dumpd(chat), lambda: pickle.dumps(mesh)):
        with pytest.raises(CredentialError) as e:
            attempt()
        assert "connections.oai.api_key" in str(e.value) and "{{env:" in str(e.value)
        assert SECRET not in str(e.value)
    # what LangChain hands its callbacks and traces leaves the mesh out: it never fails a call
    assert "mesh" not in chat._serialized["kwargs"]


def test_a_literal_knowledge_bank_secret_is_refused(tmp_path):
    mesh = Mesh.from_config({"knowledge_banks": {"es": {"backend": "elasticsearch", "settings": {
        "es_url": "http://127.0.0.1:9200", "api_key": SECRET}}}})
    with pytest.raises(CredentialError, match=r"knowledge_banks\.es\.settings\.api_key"):
        mesh.portable_config()


def test_model_dump_rebuilds_the_model_with_its_mesh(tmp_path, env_key):
    mesh = _mesh(tmp_path)
    chat = MeshChatModel(model="scripted:fake:chat", mesh=mesh, temperature=0.5)
    again = MeshChatModel(**chat.model_dump())
    assert again.mesh.config.connections.keys() == mesh.config.connections.keys()
    assert again.invoke("round trip").content == "round trip"
    emb = MeshEmbeddings(model="scripted:fake:embed", mesh=mesh)
    assert MeshEmbeddings(**emb.model_dump()).embed_query("x") == emb.embed_query("x")


def test_a_model_on_the_default_mesh_carries_no_config():
    chat = MeshChatModel(model="huggingfacelocal:local:SmolLM2-135M-Instruct")
    data = dumpd(chat)
    assert "mesh" not in data["kwargs"]
    assert load(data, valid_namespaces=["langchain_mesh"], allowed_objects="all").mesh is None


def test_a_retriever_without_a_bank_says_why_it_cannot_travel(tmp_path, env_key):
    from knowledge_banks.retriever import KnowledgeBankRetriever

    store = _mesh(tmp_path).get_knowledge_bank("docs").as_langchain_vectorstore()
    retriever = KnowledgeBankRetriever(vectorstore=store)
    assert dumpd(retriever)["type"] == "not_implemented"
    with pytest.raises(TypeError, match="as_langchain_retriever"):
        pickle.dumps(retriever)


def test_relative_bank_paths_travel_as_absolute_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mesh = Mesh.from_config({"knowledge_banks": {"docs": {"path": "banks/docs"}}})
    assert mesh.portable_config()["knowledge_banks"]["docs"]["path"] == str(tmp_path / "banks" / "docs")
