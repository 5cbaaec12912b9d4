"""`mesh kb ...` and the ingest pipeline, on a FAISS bank with the scripted connection's embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("langchain_text_splitters")

from langchain_mesh.cli import main  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "cookbook" / "docs"


@pytest.fixture()
def config(tmp_path: Path) -> str:
    f = tmp_path / "mesh.yaml"
    f.write_text(f"""
connections:
  fake: {{type: scripted}}
knowledge_banks:
  docs:
    backend: faiss
    path: {tmp_path / 'bank'}
    embedding_llm: scripted:fake:embed
""")
    return str(f)


def test_ingest_then_search(config, capsys):
    assert main(["kb", "ingest", "--kb", "docs", str(DOCS), "--config", config, "--chunk-size", "300"]) == 0
    out = capsys.readouterr().out
    n_files = len(list(DOCS.glob("*.md")))
    assert f"from {n_files} files into docs (version v000001)" in out

    assert main(["kb", "search", "--kb", "docs", "BM25 keyword scores", "--type", "hybrid", "--json",
                 "--config", config]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4 and hits[0]["metadata"]["source"].endswith("knowledge-banks.md")
    assert all("start_index" in h["metadata"] for h in hits)

    # ingesting the same files again embeds nothing and makes no new version
    assert main(["kb", "ingest", "--kb", "docs", str(DOCS), "--config", config, "--chunk-size", "300"]) == 0
    assert "nothing embedded, no new version" in capsys.readouterr().out
    # --clear embeds everything again, into a new version with the same chunks
    assert main(["kb", "ingest", "--kb", "docs", str(DOCS), "--config", config, "--chunk-size", "300",
                 "--clear"]) == 0
    capsys.readouterr()
    assert main(["kb", "versions", "--kb", "docs", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("* v000002")
    assert lines[0].split()[-2] == lines[1].split()[-2]  # same number of documents in both versions

    assert main(["kb", "rollback", "--kb", "docs", "v000001", "--config", config]) == 0
    assert main(["kb", "rollback", "--kb", "docs", "v000042", "--config", config]) == 2
    assert "v000042" in capsys.readouterr().err


def _embedded_texts(mesh) -> list[str]:
    return [t for r in mesh.connection("fake").embedding_requests for t in r.texts]


def test_ingest_syncs_only_what_changed(config, tmp_path):
    from knowledge_banks.ingest import ingest
    from langchain_mesh import Mesh

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpha\n\n" + "alpha words here. " * 40)
    (docs / "b.md").write_text("# Beta\n\nbeta is short.")
    (docs / "c.md").write_text("# Gamma\n\ngamma is short too.")
    mesh = Mesh.from_config(config)
    kb = mesh.get_knowledge_bank("docs")
    first = ingest(kb, [str(docs)], chunk_size=200, chunk_overlap=0, progress=False)
    assert first["added"] == first["chunks"] > 3 and first["unchanged"] == first["deleted"] == 0
    n_embedded = len(_embedded_texts(mesh))
    assert n_embedded == first["chunks"]

    again = ingest(kb, [str(docs)], chunk_size=200, chunk_overlap=0, progress=False)
    assert (again["added"], again["unchanged"], again["deleted"]) == (0, first["chunks"], 0)
    assert len(_embedded_texts(mesh)) == n_embedded  # no vector computed
    assert [v.id for v in kb.versions()] == ["v000001"]  # and no new version

    (docs / "b.md").write_text("# Beta\n\nbeta changed.")
    (docs / "c.md").unlink()
    synced = ingest(kb, [str(docs)], chunk_size=200, chunk_overlap=0, progress=False, mirror=True)
    assert (synced["added"], synced["deleted"]) == (1, 1)
    assert _embedded_texts(mesh)[n_embedded:] == ["# Beta\n\nbeta changed."]  # only the changed chunk
    texts = {d.page_content for d in kb.as_langchain_vectorstore().similarity_search("beta gamma alpha", k=50)}
    assert "# Beta\n\nbeta changed." in texts and not any("gamma" in t for t in texts)
    assert [v.id for v in kb.versions() if v.current] == ["v000002"]


def test_sync_refuses_a_bad_cleanup(config):
    from langchain_core.documents import Document

    from langchain_mesh import Mesh

    kb = Mesh.from_config(config).get_knowledge_bank("docs")
    with pytest.raises(ValueError, match="cleanup must be None or 'full'"):
        with kb.get_writer() as w:
            w.sync_documents([Document(page_content="x")], ["1"], cleanup="sources")
    assert kb.versions() == []


def test_ingest_errors_are_one_line(config, tmp_path, capsys):
    assert main(["kb", "ingest", "--kb", "docs", str(tmp_path / "missing"), "--config", config]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "data.bin"
    bad.write_bytes(b"\x00")
    assert main(["kb", "ingest", "--kb", "docs", str(bad), "--config", config]) == 2
    assert "supported files" in capsys.readouterr().err
    assert main(["kb", "search", "--kb", "nope", "x", "--config", config]) == 2
    assert "unknown knowledge bank" in capsys.readouterr().err


def test_pdf_ingest(config, tmp_path, capsys):
    pypdf = pytest.importorskip("pypdf")
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    # a one-page PDF with real text, built with pypdf itself
    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(width=300, height=300)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 20 150 Td (Zebras graze on the savanna) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    pdf = tmp_path / "zebra.pdf"
    with open(pdf, "wb") as f:
        writer.write(f)
    assert main(["kb", "ingest", "--kb", "docs", str(pdf), "--config", config]) == 0
    capsys.readouterr()
    assert main(["kb", "search", "--kb", "docs", "zebras savanna", "--json", "--config", config]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["metadata"]["page"] == 1 and "Zebras" in hits[0]["text"]


def test_ingest_progress_bar_shows_texts_embedded_per_second(config, tmp_path, capsys):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)

    def ingest() -> tuple[str, str]:
        assert main(["kb", "ingest", "--kb", "docs", str(docs), "--config", config, "--chunk-size", "300"]) == 0
        out = capsys.readouterr()
        return out.out, out.err

    def bar_total(err: str) -> int:  # "... | 37/37 [00:00<00:00, 812.3text/s]"
        return int(err.rsplit("|", 1)[-1].split("/", 1)[1].split()[0])

    # the bar counts texts embedded: its rate reads "text/s" (or "s/text" when slower than one a second)
    _, err = ingest()
    assert "Embedding into docs" in err and ("text/s" in err or "s/text" in err)
    everything = bar_total(err)
    assert everything > 1
    # a second run embeds nothing: every chunk is compared first, so no bar is drawn at all
    out, err = ingest()
    assert "Embedding into" not in err and "nothing embedded" in out
    # one file changed: the bar's total is that file's chunks, not every chunk
    changed = sorted(docs.glob("*.md"))[0]
    changed.write_text(changed.read_text() + "\n\nOne more sentence, added for this test.\n")
    out, err = ingest()
    assert 0 < bar_total(err) < everything and f"{bar_total(err)} embedded" in out
