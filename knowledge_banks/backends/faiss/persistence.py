"""On-disk format of a FAISS knowledge-bank store: no pickle, nothing executable, atomic commits.

A store directory holds::

    manifest.json                 the commit point (below)
    index-<token>.faiss           FAISS's own index file (faiss.write_index); absent for an empty store
    docstore-<token>.jsonl        documents, one JSON object per line

``manifest.json`` (format_version 1)::

    {"format": "langchain-mesh.faiss-store", "format_version": 1,
     "dimensions": 384, "distance": "cosine", "index": "hnsw", "index_params": {...},
     "count": 5183, "next_key": 5183, "bm25": {"k1": 1.2, "b": 0.75, "tokenizer": {...}},
     "files": {"index": "index-<token>.faiss", "docstore": "docstore-<token>.jsonl"},
     "sha256": {"index": "...", "docstore": "..."}, "written_by": "langchain-mesh 0.1.0"}

``docstore-<token>.jsonl``: line 1 is a header
``{"format": "langchain-mesh.docstore", "format_version": 1, "count": N}``; each next line is
``{"key": <int64 FAISS id>, "id": "<document id>", "text": "...", "metadata": {...}}``.

Commit protocol (``write_store``): data files are written under fresh names and fsynced, then
``manifest.json`` is replaced atomically (``os.replace``) and the directory fsynced; only then are files
no longer named by the manifest removed. A crash at any point leaves either the old manifest with its
intact files or the new one with its complete files. Readers refuse unknown formats and versions with
:class:`UnsupportedFormatError`, and check the files' SHA-256 against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from langchain_mesh.errors import KnowledgeBankError

__all__ = ["FORMAT", "FORMAT_VERSION", "DOCSTORE_FORMAT", "StoreFormatError", "UnsupportedFormatError",
           "read_manifest", "read_docstore", "write_store", "copy_store", "is_store"]

FORMAT = "langchain-mesh.faiss-store"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DOCSTORE_FORMAT = "langchain-mesh.docstore"
MANIFEST = "manifest.json"

PathLike = Union[str, "os.PathLike[str]"]


class StoreFormatError(KnowledgeBankError, ValueError):
    """A store directory that is missing, corrupt or inconsistent."""


class UnsupportedFormatError(StoreFormatError):
    """A store written in a format or format version this version cannot read."""


def is_store(path: PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---- reading -----------------------------------------------------------------------------------------


def read_manifest(path: PathLike) -> dict[str, Any]:
    mpath = Path(path) / MANIFEST
    if not mpath.is_file():
        raise StoreFormatError(f"{path} is not a FAISS store: no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreFormatError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UnsupportedFormatError(
            f"{mpath}: format {manifest.get('format') if isinstance(manifest, dict) else None!r} "
            f"is not {FORMAT!r}")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedFormatError(
            f"{mpath}: format_version {version!r} is not supported by this langchain-mesh "
            f"(it reads versions {', '.join(map(str, SUPPORTED_VERSIONS))}); "
            f"upgrade langchain-mesh to open this store")
    for key in ("distance", "index", "files", "count", "next_key"):
        if key not in manifest:
            raise StoreFormatError(f"{mpath}: missing key {key!r}")
    for role, name in manifest["files"].items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise StoreFormatError(f"{mpath}: bad file name for {role!r}: {name!r}")
    return manifest


def data_file(path: PathLike, manifest: dict[str, Any], role: str, verify: bool = True) -> Optional[Path]:
    name = manifest["files"].get(role)
    if not name:
        return None
    fpath = Path(path) / name
    if not fpath.is_file():
        raise StoreFormatError(f"{path}: {role} file {name} named by the manifest is missing")
    expected = (manifest.get("sha256") or {}).get(role)
    if verify and expected and _sha256(fpath) != expected:
        raise StoreFormatError(f"{fpath}: SHA-256 does not match the manifest (corrupt or modified)")
    return fpath


def read_docstore(fpath: Path) -> Iterator[dict[str, Any]]:
    """Yield the document records of a docstore file (after checking its header)."""
    with open(fpath, encoding="utf-8") as f:
        try:
            header = json.loads(f.readline())
        except ValueError:
            raise StoreFormatError(f"{fpath}: bad header line") from None
        if not isinstance(header, dict) or header.get("format") != DOCSTORE_FORMAT:
            raise UnsupportedFormatError(f"{fpath}: not a {DOCSTORE_FORMAT} file")
        if header.get("format_version") not in SUPPORTED_VERSIONS:
            raise UnsupportedFormatError(
                f"{fpath}: docstore format_version {header.get('format_version')!r} is not supported")
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise StoreFormatError(f"{fpath}:{lineno}: not valid JSON") from None
            if not (isinstance(rec, dict) and isinstance(rec.get("key"), int) and isinstance(rec.get("id"), str)
                    and isinstance(rec.get("text"), str) and isinstance(rec.get("metadata"), dict)):
                raise StoreFormatError(f"{fpath}:{lineno}: expected key, id, text and metadata")
            yield rec


# ---- writing -----------------------------------------------------------------------------------------


def _write_docstore(fpath: Path, records: Iterable[dict[str, Any]], count: int) -> None:
    with open(fpath, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps({"format": DOCSTORE_FORMAT, "format_version": FORMAT_VERSION, "count": count}) + "\n")
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    tmp = directory / f".{MANIFEST}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)  # the commit point
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(directory)


def _cleanup(directory: Path, keep: set[str]) -> None:
    for p in directory.iterdir():
        if p.name == MANIFEST or p.name in keep or not p.is_file():
            continue
        if p.name.startswith(("index-", "docstore-", f".{MANIFEST}.")):
            try:
                p.unlink()
            except OSError:  # pragma: no cover - best effort: an orphan file is harmless
                pass


def write_store(path: PathLike, manifest: dict[str, Any], write_index: Optional[Callable[[str], None]],
                records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Write a store at ``path`` atomically; returns the manifest written (with files and checksums)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    files: dict[str, str] = {}
    written: list[Path] = []
    try:
        if write_index is not None:
            files["index"] = f"index-{token}.faiss"
            written.append(directory / files["index"])
            write_index(str(written[-1]))
            with open(written[-1], "rb") as f:
                os.fsync(f.fileno())
        files["docstore"] = f"docstore-{token}.jsonl"
        written.append(directory / files["docstore"])
        _write_docstore(written[-1], records, int(manifest["count"]))
        manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files,
                    "sha256": {role: _sha256(directory / name) for role, name in files.items()}}
        _write_manifest(directory, manifest)
    except BaseException:
        for p in written:  # the old manifest and its files are untouched
            if p.exists():
                p.unlink()
        raise
    _cleanup(directory, set(files.values()))
    return manifest


def copy_store(src: PathLike, dst: PathLike) -> dict[str, Any]:
    """Copy the committed store at ``src`` to ``dst`` (hard links where possible: data files are never
    modified in place, so sharing them between versions is safe). ``dst`` gets the same commit protocol."""
    manifest = read_manifest(src)
    directory = Path(dst)
    directory.mkdir(parents=True, exist_ok=True)
    copied: list[Path] = []
    try:
        for name in manifest["files"].values():
            target = directory / name
            if target.exists():
                continue
            try:
                os.link(Path(src) / name, target)
            except OSError:
                shutil.copy2(Path(src) / name, target)
            copied.append(target)
        _write_manifest(directory, manifest)
    except BaseException:
        for p in copied:
            if p.exists():
                p.unlink()
        raise
    _cleanup(directory, set(manifest["files"].values()))
    return manifest
