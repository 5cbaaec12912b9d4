"""A bank's query-embedding cache (knowledge_banks/query_cache.py): a question asked again, even by a
new process (a new Mesh), reads its vector from the bank folder and never reaches the embedding model;
another embedding model, or changed weights of a local one, never reads an old vector."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from langchain_core.documents import Document

from langchain_mesh import Mesh

pytest.importorskip("faiss")

DOCS = [Document(page_content="Paris is the capital of France.", metadata={"source": "geo"}),
        Document(page_content="The mitochondria is the powerhouse of the cell.", metadata={"source": "bio"})]
EMBED_MODELS = [{"id": "embed", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]},
                {"id": "embed-v2", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]


def make_mesh(tmp_path: Path, embedding_llm: str = "scripted:fake:embed", **kb) -> Mesh:
    return Mesh.from_config({
        "connections": {"fake": {"type": "scripted", "models": EMBED_MODELS}},
        "knowledge_banks": {"docs": {"path": str(tmp_path / "bank"), "embedding_llm": embedding_llm, **kb}},
    })


def query_texts(mesh: Mesh) -> list[str]:
    return [t for r in mesh.connection("fake").embedding_requests if r.input_type == "query" for t in r.texts]


def search(mesh: Mesh, q: str) -> list[str]:
    return [d.page_content for d in mesh.get_knowledge_bank("docs").as_langchain_retriever(
        search_kwargs={"k": 1}).invoke(q)]


def fill(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path)
    with mesh.get_knowledge_bank("docs").get_writer() as w:
        w.as_langchain_vectorstore().add_documents(DOCS)


def test_a_repeated_question_skips_the_embedding_model_even_in_a_new_process(tmp_path):
    fill(tmp_path)
    first = make_mesh(tmp_path)
    assert search(first, "capital of France?") == [DOCS[0].page_content]
    assert query_texts(first) == ["capital of France?"]
    assert (tmp_path / "bank" / "query_cache.sqlite").is_file()

    again = make_mesh(tmp_path)  # a rerun: new mesh, new connection, same bank folder
    assert search(again, "capital of France?") == [DOCS[0].page_content]
    assert search(again, "capital of France?") == [DOCS[0].page_content]
    assert query_texts(again) == []  # both answered from the cache
    assert search(again, "what powers the cell?") == [DOCS[1].page_content]
    assert query_texts(again) == ["what powers the cell?"]  # a new question still reaches the model


def test_a_hit_returns_exactly_the_models_vector_and_documents_are_never_cached(tmp_path):
    fill(tmp_path)
    emb = make_mesh(tmp_path).get_knowledge_bank("docs").embeddings()
    fresh = emb.embed_query("capital of France?")
    cached = make_mesh(tmp_path).get_knowledge_bank("docs").embeddings().embed_query("capital of France?")
    assert cached == fresh and all(type(x) is float for x in cached)
    mesh = make_mesh(tmp_path)
    mesh.get_knowledge_bank("docs").embeddings().embed_documents(["capital of France?"])
    mesh.get_knowledge_bank("docs").embeddings().embed_documents(["capital of France?"])
    assert len(mesh.connection("fake").embedding_requests) == 2


async def test_the_async_path_shares_the_cache(tmp_path):
    fill(tmp_path)
    mesh = make_mesh(tmp_path)
    v = await mesh.get_knowledge_bank("docs").embeddings().aembed_query("capital of France?")
    again = make_mesh(tmp_path)
    assert await again.get_knowledge_bank("docs").embeddings().aembed_query("capital of France?") == v
    assert query_texts(mesh) == ["capital of France?"] and query_texts(again) == []


def test_another_embedding_model_never_reads_the_old_vectors_and_replaces_them(tmp_path):
    fill(tmp_path)
    search(make_mesh(tmp_path), "capital of France?")
    other = make_mesh(tmp_path, embedding_llm="scripted:fake:embed-v2")
    other.get_knowledge_bank("docs").embeddings().embed_query("capital of France?")
    assert query_texts(other) == ["capital of France?"]  # a miss: the fingerprint names the model
    with sqlite3.connect(tmp_path / "bank" / "query_cache.sqlite") as db:
        assert db.execute("SELECT COUNT(DISTINCT fingerprint) FROM query_vectors").fetchone() == (1,)
    back = make_mesh(tmp_path)
    back.get_knowledge_bank("docs").embeddings().embed_query("capital of France?")
    assert query_texts(back) == ["capital of France?"]  # the first model's entries are gone


def test_the_cache_is_bounded_and_can_be_turned_off(tmp_path):
    fill(tmp_path)
    mesh = make_mesh(tmp_path, query_cache=2)
    emb = mesh.get_knowledge_bank("docs").embeddings()
    for q in ["one", "two", "three"]:
        emb.embed_query(q)
    with sqlite3.connect(tmp_path / "bank" / "query_cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM query_vectors").fetchone() == (2,)
        # questions are kept as hashes only
        assert not any(b"three" in bytes(row[0], "utf-8") for row in db.execute("SELECT key FROM query_vectors"))

    off = make_mesh(tmp_path / "off", query_cache=0)
    emb = off.get_knowledge_bank("docs").embeddings()
    emb.embed_query("one")
    emb.embed_query("one")
    assert query_texts(off) == ["one", "one"]
    assert not (tmp_path / "off" / "bank" / "query_cache.sqlite").exists()


def test_a_negative_size_is_refused_by_name(tmp_path):
    from langchain_mesh.errors import ConfigError

    with pytest.raises(ConfigError, match="query_cache"):
        make_mesh(tmp_path, query_cache=-1)


def test_local_model_fingerprint_follows_its_files(tmp_path):
    folder = tmp_path / "emb"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    mesh = Mesh.from_config({"connections": {"local": {"type": "huggingfacelocal", "models": [
        {"id": "my-emb", "path": str(folder), "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}})
    from knowledge_banks.query_cache import embedding_fingerprint

    before = embedding_fingerprint(mesh, "huggingfacelocal:local:my-emb")
    assert embedding_fingerprint(mesh, "huggingfacelocal:local:my-emb") == before
    (folder / "model.safetensors").write_bytes(b"y" * 11)  # new weights
    assert embedding_fingerprint(mesh, "huggingfacelocal:local:my-emb") != before
