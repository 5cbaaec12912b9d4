"""Issue 16, the library, the CLI and the knowledge banks: typed errors instead of raw ones, bank ids
that cannot escape their folder, one redaction place, and a warning for an exposed config."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from blake3 import blake3

from langchain_mesh import Mesh
from langchain_mesh.errors import ConfigError, KnowledgeBankError, SettingsError
from langchain_mesh.redact import redact, redact_url, remember_secret

from .conftest import ROOT


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "langchain_mesh", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _bank_mesh(tmp_path, kb_id="docs"):
    return Mesh.from_config({"connections": {"fake": {"type": "scripted"}},
                             "knowledge_banks": {kb_id: {"backend": "faiss", "path": str(tmp_path / "bank"),
                                                         "embedding_llm": "scripted:fake:embed"}}})


# ---- the one redaction place ----------------------------------------------------------------------------

@pytest.mark.parametrize("url,secret", [
    ("http://user:pa55word@host:9/v1", "pa55word"),
    ("https://tok3n-only@host/v1", "tok3n-only"),
    ("https://host/v1?api-key=QUERYSECRET&x=1", "QUERYSECRET"),
    ("https://acct.blob/x.png?sv=1&sig=SIGNATURE123", "SIGNATURE123"),
    ("https://host/v1?token=abcdef123#frag", "abcdef123"),
])
def test_redact_url_removes_credentials_and_keeps_the_rest(url, secret):
    out = redact_url(url)
    assert secret not in out and "***" in out and "host" in out or "acct.blob" in out
    assert redact(f"cannot reach openai at {url}: refused") == f"cannot reach openai at {out}: refused"


def test_redact_masks_remembered_and_key_shaped_secrets():
    remember_secret("my-very-own-provider-key")
    text = redact("Incorrect API key provided: my-very-own-provider-key; sk-abcdefgh12345678; "
                  "Authorization: Bearer eyJhbGciOi.payload.sig; AKIAABCDEFGHIJKLMNOP")
    for s in ("my-very-own-provider-key", "sk-abcdefgh12345678", "eyJhbGciOi.payload.sig", "AKIAABCDEFGHIJKLMNOP"):
        assert s not in text
    assert redact("an ordinary message: temperature=0.2 at https://api.openai.com/v1") == \
        "an ordinary message: temperature=0.2 at https://api.openai.com/v1"


# ---- 64-bit integers in settings ----------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [("seed", 2**64), ("seed", -(2**63) - 1), ("maxOutputTokens", 2**64),
                                        ("topK", 2**40)])
async def test_settings_beyond_64_bits_are_a_settings_error_sync_and_async(openai_server, name, value):
    mesh = Mesh.from_config({"connections": {"c": {"type": "openai_compatible", "base_url": openai_server.base_url,
                                                   "api_key": "test-key", "max_retries": 0,
                                                   "models": [{"id": "qwen"}]}}})
    completion = mesh.get_llm("openai_compatible:c:qwen").new_completion().with_message("hi")
    completion.settings[name] = value
    with pytest.raises(SettingsError) as e:
        await completion.aexecute()
    assert name in e.value.settings
    with pytest.raises(SettingsError):
        completion.execute()
    assert openai_server.requests == []


# ---- knowledge banks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kb_id", ["../escape", "a/b", "..", ".hidden", "", "x" * 200, "a\\b"])
def test_a_bank_id_that_is_not_a_folder_name_is_refused(tmp_path, kb_id):
    with pytest.raises(ConfigError, match="invalid knowledge bank id"):
        Mesh.from_config({"connections": {"fake": {"type": "scripted"}},
                          "knowledge_banks": {kb_id: {"backend": "faiss", "embedding_llm": "scripted:fake:embed"}}})
    from knowledge_banks.bank import KnowledgeBank

    mesh = _bank_mesh(tmp_path)
    with pytest.raises(KnowledgeBankError):
        KnowledgeBank(mesh, kb_id, mesh.config.knowledge_banks["docs"])


def test_the_cli_cannot_write_a_bank_outside_the_banks_folder(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "m.yaml").write_text(json.dumps({
        "connections": {"fake": {"type": "scripted"}},
        "knowledge_banks": {"../escape": {"backend": "faiss", "embedding_llm": "scripted:fake:embed"}}}))
    r = _cli("kb", "ingest", "--config", "m.yaml", "--kb", "../escape", "a.txt", cwd=tmp_path)
    assert r.returncode == 2 and "invalid knowledge bank id" in r.stderr
    assert not (tmp_path / "escape").exists()


def test_a_corrupt_settings_json_is_a_typed_error_and_save_repairs_it(tmp_path):
    kb = _bank_mesh(tmp_path).get_knowledge_bank("docs")
    kb.folder.root.mkdir(parents=True)
    (kb.folder.root / "settings.json").write_text('{"metadata_schema": {"a": "str')  # cut mid-write
    with pytest.raises(KnowledgeBankError, match="settings.json is corrupt"):
        _ = kb.images_dir
    with pytest.warns(UserWarning, match="corrupt"):
        settings = kb.get_settings()
    settings.set_metadata_schema({"year": "int"}).save()
    assert json.loads((kb.folder.root / "settings.json").read_text())["metadata_schema"] == {"year": "int"}
    assert kb.get_settings().metadata_schema == {"year": "int"}


def test_a_junk_faiss_index_is_a_typed_error(tmp_path):
    from langchain_core.documents import Document

    kb = _bank_mesh(tmp_path).get_knowledge_bank("docs")
    with kb.get_writer() as w:
        w.as_langchain_vectorstore().add_documents([Document(page_content="hello world")])
    version = kb.folder.current_path() / "store"
    manifest = json.loads((version / "manifest.json").read_text())
    index = version / manifest["files"]["index"]
    index.write_bytes(b"\x00junk" * 100)
    # the checksum updated too, as a careless copy or a bad tool would leave it: faiss reads the junk
    manifest["blake3"]["index"] = blake3(index.read_bytes()).hexdigest()
    (version / "manifest.json").write_text(json.dumps(manifest))
    fresh = _bank_mesh(tmp_path).get_knowledge_bank("docs")
    with pytest.raises(KnowledgeBankError, match="not a readable FAISS index"):
        fresh.as_langchain_retriever().invoke("hello")


def test_mesh_kb_ingest_of_a_junk_pdf_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "junk.pdf").write_bytes(b"this is not a PDF at all")
    (tmp_path / "m.yaml").write_text(json.dumps({
        "connections": {"fake": {"type": "scripted"}},
        "knowledge_banks": {"docs": {"backend": "faiss", "embedding_llm": "scripted:fake:embed"}}}))
    r = _cli("kb", "ingest", "--config", "m.yaml", "--kb", "docs", "junk.pdf", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mesh: error: cannot ingest junk.pdf: not a readable PDF"), r.stderr


# ---- careless configs ---------------------------------------------------------------------------------

def test_a_world_readable_config_with_a_literal_key_warns(tmp_path, caplog):
    from langchain_mesh.config import load_config

    path = tmp_path / "mesh.yaml"
    path.write_text(json.dumps({"connections": {"o": {"type": "openai", "api_key": "sk-literal-0123456789"}}}))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="langchain_mesh.config"):
        load_config(path)
    assert any("readable by every user" in r.getMessage() and "connections.o.api_key" in r.getMessage()
               for r in caplog.records)
    assert "sk-literal-0123456789" not in caplog.text
    caplog.clear()
    os.chmod(path, 0o600)  # private: no warning
    with caplog.at_level(logging.WARNING, logger="langchain_mesh.config"):
        load_config(path)
    assert not caplog.records
    os.chmod(path, 0o644)  # references are not secrets: no warning either
    path.write_text(json.dumps({"connections": {"o": {"type": "openai", "api_key": "{{env:OPENAI_API_KEY}}"}}}))
    with caplog.at_level(logging.WARNING, logger="langchain_mesh.config"):
        load_config(path)
    assert not caplog.records


# ---- hostile answers in the library -------------------------------------------------------------------

@pytest.mark.parametrize("body", ["a JSON string", [1, 2], 42])
@pytest.mark.parametrize("kind", ["openai_compatible", "anthropic"])
async def test_a_200_whose_body_is_not_an_object_is_a_provider_error(openai_server, anthropic_server, kind, body):
    from langchain_mesh.errors import ProviderError

    srv, model = (openai_server, "qwen") if kind == "openai_compatible" else (anthropic_server, "claude-3-5-haiku-latest")
    mesh = Mesh.from_config({"connections": {"c": {"type": kind, "base_url": srv.base_url, "api_key": "test-key",
                                                   "max_retries": 0, "models": [{"id": model}]}}})
    llm = mesh.get_llm(f"{kind}:c:{model}")
    srv.script(json_body=body)
    with pytest.raises(ProviderError, match="not an object"):
        llm.new_completion().with_message("hi").execute()
    srv.script(json_body=body)
    with pytest.raises(ProviderError, match="not an object"):
        await llm.new_completion().with_message("hi").aexecute()


async def test_fewer_vectors_than_inputs_is_a_provider_error_in_the_library(openai_server):
    from langchain_mesh.errors import ProviderError

    mesh = Mesh.from_config({"connections": {"c": {"type": "openai_compatible", "base_url": openai_server.base_url,
                                                   "api_key": "test-key", "max_retries": 0,
                                                   "models": [{"id": "bge", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}})
    emb = mesh.get_llm("openai_compatible:c:bge")
    short = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}], "model": "bge"}
    openai_server.script(json_body=short)
    with pytest.raises(ProviderError, match="1 embeddings for 3 inputs"):
        emb.new_embeddings().add_text("a").add_text("b").add_text("c").execute()
    openai_server.script(json_body=short)
    with pytest.raises(ProviderError, match="1 embeddings for 3 inputs"):
        await emb.new_embeddings().add_text("a").add_text("b").add_text("c").aexecute()


def test_a_literal_secret_in_a_banks_engine_settings_counts_too(tmp_path, caplog):
    from langchain_mesh.config import load_config

    path = tmp_path / "mesh.yaml"
    path.write_text(json.dumps({"knowledge_banks": {"es": {
        "backend": "elasticsearch", "settings": {"es_url": "http://es:9200", "api_key": "literal-es-key-123"}}}}))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="langchain_mesh.config"):
        load_config(path)
    assert "knowledge_banks.es.settings.api_key" in caplog.text and "literal-es-key-123" not in caplog.text
