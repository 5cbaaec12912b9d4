"""Files -> chunks -> a knowledge bank, in one all-or-nothing write (``mesh kb ingest``).

Text and Markdown are read as UTF-8; PDFs page by page when ``pypdf`` is installed. Chunks are cut
with LangChain's recursive splitter (Markdown-aware for ``.md``) and keep ``source``, ``start_index``
and, for PDFs, ``page``. Chunk ids derive from the source path and offset, so ingesting the same
file again replaces its chunks instead of duplicating them; chunks whose text and metadata did not
change keep their vectors (only what changed is embedded again).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from langchain_mesh.errors import MeshError

__all__ = ["find_files", "load_documents", "split_documents", "ingest", "describe_counts", "TEXT_SUFFIXES"]

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
PDF_SUFFIXES = {".pdf"}


def find_files(paths: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES | PDF_SUFFIXES)
        elif p.is_file():
            if p.suffix.lower() not in TEXT_SUFFIXES | PDF_SUFFIXES:
                raise MeshError(f"cannot ingest {p}: supported files are {', '.join(sorted(TEXT_SUFFIXES | PDF_SUFFIXES))}")
            out.append(p)
        else:
            raise MeshError(f"cannot ingest {p}: no such file or folder")
    return out


def load_documents(files: Sequence[Path]) -> Iterator[Any]:
    from langchain_core.documents import Document

    for f in files:
        if f.suffix.lower() in PDF_SUFFIXES:
            try:
                from pypdf import PdfReader
            except ImportError:
                raise MeshError(f"cannot ingest {f}: PDF needs the pypdf package (pip install pypdf)") from None
            yield from _pdf_pages(f, PdfReader, Document)
        else:
            yield Document(page_content=f.read_text(encoding="utf-8", errors="replace"), metadata={"source": str(f)})


def _pdf_pages(f: Path, reader_cls: Any, document_cls: Any) -> Iterator[Any]:
    from pypdf.errors import PyPdfError

    try:
        pages = [page.extract_text() or "" for page in reader_cls(str(f)).pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as e:  # pypdf raises all of these on junk
        raise MeshError(f"cannot ingest {f}: not a readable PDF ({type(e).__name__}: {e})") from None
    for i, text in enumerate(pages, start=1):
        if text.strip():
            yield document_cls(page_content=text, metadata={"source": str(f), "page": i})


def split_documents(docs: Iterable[Any], chunk_size: int = 1000, chunk_overlap: int = 150) -> list[Any]:
    from langchain_text_splitters import MarkdownTextSplitter, RecursiveCharacterTextSplitter

    plain = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True)
    md = MarkdownTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True)
    chunks = []
    for d in docs:
        splitter = md if str(d.metadata.get("source", "")).lower().endswith((".md", ".markdown")) else plain
        chunks += splitter.split_documents([d])
    return chunks


def chunk_id(doc: Any) -> str:
    m = doc.metadata
    key = f"{m.get('source')}|{m.get('page', '')}|{m.get('start_index', '')}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def ingest(kb: Any, paths: Iterable[str], chunk_size: int = 1000, chunk_overlap: int = 150,
           clear: bool = False, batch_size: int = 64, progress: bool = True,
           mirror: bool = False) -> dict[str, int]:
    """Read, split and sync; returns counts. Nothing is committed unless every chunk was written.

    Chunks already in the bank with the same text and metadata keep their vectors: only new or changed
    chunks are embedded (``added``), and a run that changes nothing makes no new version. ``mirror``
    also removes every stored chunk not produced by this run (the bank then mirrors ``paths``);
    ``clear`` starts from an empty bank and embeds everything again.
    """
    from tqdm.auto import tqdm

    files = find_files(paths)
    if not files:
        raise MeshError("no files to ingest")
    chunks = split_documents(load_documents(files), chunk_size, chunk_overlap)
    with kb.get_writer() as writer:
        if clear:
            writer.clear()
        # the bar counts texts EMBEDDED (one chunk's text each), so its rate is texts embedded per second;
        # the writer compares every chunk first and says how many are unchanged, so the bar's total is the
        # embedding work, and a run with nothing to embed draws no bar at all
        bars: list[Any] = []

        def advance(embedded: int, unchanged: int) -> None:
            if not bars and len(chunks) > unchanged:
                bars.append(tqdm(total=len(chunks) - unchanged, desc=f"Embedding into {kb.id}", unit="text",
                                 disable=not progress))
            if embedded:
                bars[0].update(embedded)
        try:
            result = writer.sync_documents(chunks, [chunk_id(c) for c in chunks], cleanup="full" if mirror else None,
                                           batch_size=batch_size, on_progress=advance)
        finally:
            for bar in bars:
                bar.close()
    return {"files": len(files), "chunks": len(chunks), "added": result.added, "unchanged": result.unchanged,
            "deleted": result.deleted}


def describe_counts(counts: dict[str, int]) -> str:
    """'3 embedded, 4 unchanged, 0 removed' — or that nothing had to be written."""
    if not counts["added"] and not counts["deleted"]:
        return f"all {counts['unchanged']} unchanged, nothing embedded, no new version"
    return f"{counts['added']} embedded, {counts['unchanged']} unchanged, {counts['deleted']} removed"
