"""`mesh kb ...` and the ingest pipeline, on a FAISS bank with the scripted connection's embeddings."""

from __future__ import annotations

import json
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

    # ingesting the same files again replaces their chunks instead of duplicating them
    assert main(["kb", "ingest", "--kb", "docs", str(DOCS), "--config", config, "--chunk-size", "300"]) == 0
    capsys.readouterr()
    assert main(["kb", "versions", "--kb", "docs", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("* v000002")
    assert lines[0].split()[-2] == lines[1].split()[-2]  # same number of documents in both versions

    assert main(["kb", "rollback", "--kb", "docs", "v000001", "--config", config]) == 0
    assert main(["kb", "rollback", "--kb", "docs", "v000042", "--config", config]) == 2
    assert "v000042" in capsys.readouterr().err


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
