"""The knowledge-bank API on FAISS: settings, the all-or-nothing writer, versions, retrieval content.

Embeddings come from the scripted connection's deterministic hashed vectors, so these run in
seconds; the embedded default's real MiniLM is exercised by the cookbook and main-job tests.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from langchain_core.documents import Document

from langchain_mesh import Mesh
from langchain_mesh.errors import ConfigError, UnknownKnowledgeBankError

pytest.importorskip("faiss")

from knowledge_banks.bank import WriterBusyError  # noqa: E402
from knowledge_banks.metadata import DOCUMENT_KEY, RETRIEVAL_KEY, MetadataSchemaError  # noqa: E402

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5dd1e5a0000000049454e44ae426082")


def make_mesh(tmp_path: Path, **kb) -> Mesh:
    return Mesh.from_config({
        "connections": {"fake": {"type": "scripted"}},
        "knowledge_banks": {"docs": {"backend": "faiss", "path": str(tmp_path / "bank"),
                                     "embedding_llm": "scripted:fake:embed", **kb}},
    })


DOCS = [
    Document(page_content="Paris is the capital of France.", metadata={"source": "geo", "start_index": 0}),
    Document(page_content="The mitochondria is the powerhouse of the cell.", metadata={"source": "bio", "start_index": 10}),
    Document(page_content="Berlin is the capital of Germany.", metadata={"source": "geo", "start_index": 20}),
]


def write(kb, docs, ids=None, clear=False):
    with kb.get_writer() as writer:
        if clear:
            writer.clear()
        return writer.as_langchain_vectorstore().add_documents(docs, ids=ids)


def test_list_and_get(tmp_path):
    mesh = make_mesh(tmp_path)
    assert [(k.id, k.backend) for k in mesh.list_knowledge_banks()] == [("docs", "faiss")]
    with pytest.raises(UnknownKnowledgeBankError, match="docs"):
        mesh.get_knowledge_bank("nope")


def test_config_rejects_unknown_backend_and_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        Mesh.from_config({"knowledge_banks": {"x": {"backend": "chroma", "pth": "a"}}})
    paths = [p for p, _ in e.value.problems]
    assert "knowledge_banks.x.backend" in paths and "knowledge_banks.x.pth" in paths


def test_writer_commits_on_clean_exit_and_readers_see_old_until_then(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    assert kb.versions() == []
    write(kb, DOCS[:2], ids=["a", "b"])
    v1 = kb.versions()
    assert [v.id for v in v1] == ["v000001"] and v1[0].current and v1[0].documents == 2

    with kb.get_writer() as writer:
        writer.as_langchain_vectorstore().add_documents([DOCS[2]], ids=["c"])
        # a reader opened during the write sees the committed bank only
        assert {d.id for d in kb.as_langchain_vectorstore().similarity_search("capital", k=10)} == {"a", "b"}
    assert {d.id for d in kb.as_langchain_vectorstore().similarity_search("capital", k=10)} == {"a", "b", "c"}
    assert [v.id for v in kb.versions()] == ["v000001", "v000002"]


def test_exception_in_writer_leaves_the_old_bank_intact(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    write(kb, DOCS, ids=["a", "b", "c"])
    with pytest.raises(RuntimeError, match="boom"):
        with kb.get_writer() as writer:
            writer.clear()
            writer.as_langchain_vectorstore().add_documents([Document(page_content="half")], ids=["x"])
            raise RuntimeError("boom")
    assert [v.id for v in kb.versions()] == ["v000001"]
    got = kb.as_langchain_vectorstore().get_by_ids(["a", "b", "c", "x"])
    assert [d.id for d in got] == ["a", "b", "c"]
    assert not list((kb.folder.root / "versions").glob(".staging-*"))  # no debris left


def _killed_writer(config: dict, ready: "multiprocessing.synchronize.Event") -> None:  # pragma: no cover - child
    mesh = Mesh.from_config(config)
    kb = mesh.get_knowledge_bank("docs")
    with kb.get_writer() as writer:
        writer.clear()
        writer.as_langchain_vectorstore().add_documents([Document(page_content="never committed")], ids=["z"])
        ready.set()
        time.sleep(60)


def test_a_killed_writer_process_leaves_the_old_bank_readable(tmp_path):
    mesh = make_mesh(tmp_path)
    kb = mesh.get_knowledge_bank("docs")
    write(kb, DOCS, ids=["a", "b", "c"])
    config = mesh.config.model_dump(mode="json")
    ctx = multiprocessing.get_context("spawn")  # fork after OpenMP has started can hang the child
    ready = ctx.Event()
    child = ctx.Process(target=_killed_writer, args=(config, ready))
    child.start()
    assert ready.wait(30)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert [d.id for d in kb.as_langchain_vectorstore().get_by_ids(["a", "b", "c", "z"])] == ["a", "b", "c"]
    # the dead writer's lock died with it: a new writer can commit
    write(kb, [Document(page_content="after the crash")], ids=["d"])
    assert len(kb.as_langchain_vectorstore().get_by_ids(["a", "d"])) == 2


def test_only_one_writer_at_a_time(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    with kb.get_writer():
        with pytest.raises(WriterBusyError):
            with kb.get_writer():
                pass
    with kb.get_writer():  # released on exit
        pass


def test_rollback_to_an_earlier_version(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    write(kb, DOCS[:1], ids=["a"])
    write(kb, [Document(page_content="bad data")], ids=["bad"], clear=True)
    assert [d.id for d in kb.as_langchain_vectorstore().get_by_ids(["a", "bad"])] == ["bad"]
    kb.rollback("v000001")
    assert [d.id for d in kb.as_langchain_vectorstore().get_by_ids(["a", "bad"])] == ["a"]
    assert [v.id for v in kb.versions() if v.current] == ["v000001"]
    with pytest.raises(ValueError, match="v000001"):
        kb.rollback("v000099")


def test_metadata_schema_is_saved_and_enforced(tmp_path):
    mesh = make_mesh(tmp_path)
    kb = mesh.get_knowledge_bank("docs")
    settings = kb.get_settings()
    settings.set_metadata_schema({"source": "string", "start_index": "int"})
    settings.save()
    assert json.loads((kb.folder.root / "settings.json").read_text())["metadata_schema"] == {
        "source": "string", "start_index": "int"}
    # a fresh handle reads the saved settings
    assert mesh.get_knowledge_bank("docs").get_settings().metadata_schema["start_index"] == "int"

    write(kb, [Document(page_content="I can set metadata", metadata={"source": "developer-guide", "start_index": 1})])
    with pytest.raises(MetadataSchemaError, match="start_index"):
        write(kb, [Document(page_content="bad", metadata={"source": "x", "start_index": "one"})])
    assert [v.id for v in kb.versions()] == ["v000001"]  # the failed write committed nothing
    with pytest.raises(MetadataSchemaError):
        settings.set_metadata_schema({"source": "varchar"})


def test_metadata_filters_through_the_bank(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    write(kb, DOCS, ids=["a", "b", "c"])
    retriever = kb.as_langchain_retriever(search_kwargs={"k": 5, "filter": {"source": "geo"}})
    assert {d.id for d in retriever.invoke("capital")} == {"a", "c"}
    retriever = kb.as_langchain_retriever(search_kwargs={"k": 5, "filter": {"start_index": {"$gte": 10}}})
    assert {d.id for d in retriever.invoke("cell")} == {"b", "c"}


def test_retrieval_content_images_and_text(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    shot = tmp_path / "page1.png"
    shot.write_bytes(PNG)
    with kb.get_writer() as writer:
        src = Document(page_content="Summarized text from VLM extraction")
        doc = (writer.get_metadata_formatter()
               .with_original_document_ref("/path/to/file.pdf")
               .with_original_document_page_range(1, 1)
               .with_retrieval_content(image_paths=[str(shot)])
               .format_metadata(src))
        assert src.metadata == {}  # the input document is not mutated
        doc2 = writer.get_metadata_formatter().with_retrieval_content(text="The full original section.") \
            .format_metadata(Document(page_content="short chunk about mitochondria"))
        writer.as_langchain_vectorstore().add_documents([doc, doc2], ids=["img", "txt"])
    assert json.loads(doc.metadata[DOCUMENT_KEY]) == {"ref": "/path/to/file.pdf", "page_start": 1, "page_end": 1}
    assert RETRIEVAL_KEY in doc.metadata

    results = {d.id: d for d in kb.as_langchain_retriever(search_kwargs={"k": 2}).invoke("VLM extraction")}
    img = results["img"].metadata["retrieval_images"][0]
    assert Path(img["path"]).read_bytes() == PNG and img["mime_type"] == "image/png"
    assert Path(img["path"]).parent == kb.images_dir  # copied into the bank's images folder
    assert results["txt"].page_content == "The full original section."
    assert results["txt"].metadata["embedded_text"] == "short chunk about mitochondria"
    with pytest.raises(ValueError):
        writer.get_metadata_formatter().with_original_document_page_range(3, 1)


def test_writer_outside_with_is_refused(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    with pytest.raises(RuntimeError, match="context manager"):
        kb.get_writer().as_langchain_vectorstore()


def test_old_versions_are_pruned(tmp_path):
    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    kb.folder.keep = 3
    for i in range(5):
        write(kb, [Document(page_content=f"doc {i}")], ids=[f"d{i}"])
    assert [v.id for v in kb.versions()] == ["v000003", "v000004", "v000005"]
    assert len(kb.as_langchain_vectorstore().get_by_ids([f"d{i}" for i in range(5)])) == 5


class _Boobytrap:
    """Unpickling this creates a marker file: proof that code from the bank folder ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_loading_a_bank_never_executes_code_from_its_folder(tmp_path):
    import pickle

    kb = make_mesh(tmp_path).get_knowledge_bank("docs")
    write(kb, DOCS, ids=["a", "b", "c"])
    store_dir = kb.folder.current_path() / "store"
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Boobytrap(str(marker)))
    # what langchain-community's FAISS would unpickle, and a Python file a careless loader might import
    for name in ("index.pkl", "docstore.pkl", "index.faiss.pkl", "__init__.py", "loader.py"):
        (store_dir / name).write_bytes(payload if name.endswith(".pkl") else b"open(%r, 'w')\n" % str(marker))
    store = kb.as_langchain_vectorstore()
    assert {d.id for d in store.similarity_search("capital", k=3)} == {"a", "b", "c"}
    kb.as_langchain_retriever().invoke("capital")
    assert not marker.exists()

    # a manifest that points at a pickle instead of the documented files is refused, not loaded
    manifest = json.loads((store_dir / "manifest.json").read_text())
    manifest["files"]["docstore"] = "docstore.pkl"
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError):
        kb.as_langchain_vectorstore()
    assert not marker.exists()
