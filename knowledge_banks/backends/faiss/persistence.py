"""On-disk format of a FAISS knowledge-bank store: no pickle, nothing executable, atomic commits.

A store directory holds::

    manifest.json                 the commit point (below)
    index-<token>.faiss           FAISS's own index file (faiss.write_index); absent for an empty store
    docstore-<token>.jsonl        documents, one JSON object per line
    bm25-<token>.npz              the BM25 keyword index, when it has been built (numpy arrays, no pickle)

``manifest.json`` (format_version 1)::

    {"format": "langchain-mesh.faiss-store", "format_version": 1,
     "dimensions": 384, "distance": "cosine", "index": "hnsw", "index_params": {...},
     "count": 5183, "next_key": 5183, "bm25": {"k1": 1.2, "b": 0.75, "tokenizer": {...}},
     "files": {"index": "index-<token>.faiss", "docstore": "docstore-<token>.jsonl", "bm25": "bm25-<token>.npz"},
     "blake3": {"index": "...", "docstore": "..."}, "written_by": "langchain-mesh 0.1.0"}

``docstore-<token>.jsonl``: line 1 is a header
``{"format": "langchain-mesh.docstore", "format_version": 1, "count": N}``; each next line is
``{"key": <int64 FAISS id>, "id": "<document id>", "text": "...", "metadata": {...}}``.

Commit protocol (``write_store``): data files are written under fresh names (their writeback started as
they are written, so the disk works while they are hashed), then all of them and the new manifest are
fdatasynced, then ``manifest.json`` is replaced atomically (``os.replace``) and the directory fsynced;
only then are files no longer named by the manifest removed. A crash at any point leaves either the old manifest with its
intact files or the new one with its complete files. Readers refuse unknown formats and versions with
:class:`UnsupportedFormatError`, and check the files' checksums against the manifest.

Checksums: BLAKE3 (the ``blake3`` package, in the faiss extra), a cryptographic hash like the SHA-256
of stores written before it, ~4x faster here (16 MiB: 2.4 ms against 10 ms with SHA-NI), which is
most of what verifying costs on load and a tenth of a save. Stores that name ``sha256`` are checked
with SHA-256, as written; without ``blake3`` installed new stores are written with SHA-256 too. A
non-cryptographic hash (xxh3, faster still) was not taken: a manifest kept or signed elsewhere must
pin its files against deliberate changes, not only against corruption. An older release reads a
BLAKE3 store unchecked (it only knows ``sha256``); the format version stays 1.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import secrets
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from langchain_mesh.errors import KnowledgeBankError

try:  # orjson (the faiss extra) encodes and decodes the docstore ~5x faster; the format is the same JSON
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

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


try:  # BLAKE3 checksums (see the module docstring); SHA-256 without it
    from blake3 import blake3 as _blake3
except ImportError:  # pragma: no cover - depends on the environment
    _blake3 = None

#: the manifest key of each checksum algorithm this version reads, and its name in errors
_ALGORITHMS = {"blake3": "BLAKE3", "sha256": "SHA-256"}


def _written_with() -> str:
    """The manifest key of the checksums new stores are written with."""
    return "blake3" if _blake3 is not None else "sha256"


def _new_hash(algorithm: Optional[str] = None) -> Any:
    """A hasher for ``algorithm`` (a manifest key); None: the one new stores are written with."""
    algorithm = algorithm or _written_with()
    if algorithm == "sha256":
        return hashlib.sha256()
    if _blake3 is None:
        raise StoreFormatError("this store's files are checked with BLAKE3: pip install blake3 "
                               "(or pip install 'langchain-mesh[faiss]'), or open it with verify=False")
    return _blake3()


def _expected(manifest: dict[str, Any], role: str) -> tuple[Optional[str], Optional[str]]:
    """(manifest key of the algorithm, the checksum ``role``'s file must have), or (None, None)."""
    for algorithm in _ALGORITHMS:
        sums = manifest.get(algorithm)
        if isinstance(sums, dict) and sums.get(role):
            return algorithm, sums[role]
    return None, None


def _mismatch(fpath: Path, algorithm: str) -> StoreFormatError:
    return StoreFormatError(f"{fpath}: {_ALGORITHMS[algorithm]} checksum does not match the manifest "
                            f"(corrupt or modified)")


def _file_digest(path: Path, algorithm: str) -> str:
    h = _new_hash(algorithm)
    if hasattr(h, "update_mmap"):  # BLAKE3: one call over a memory map, without the GIL or a buffer
        h.update_mmap(str(path))
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _dumps_line(rec: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(rec)
    return _ENCODER.encode(rec).encode("utf-8")


def _loads(line: bytes) -> Any:
    return _orjson.loads(line) if _orjson is not None else json.loads(line)


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
    algorithm, expected = _expected(manifest, role)
    if verify and algorithm and _file_digest(fpath, algorithm) != expected:
        raise _mismatch(fpath, algorithm)
    return fpath


def data_bytes(path: PathLike, manifest: dict[str, Any], role: str, verify: bool = True) -> Optional[bytes]:
    """The bytes of a data file, read once and checked against the manifest's checksum in memory."""
    name = manifest["files"].get(role)
    if not name:
        return None
    fpath = Path(path) / name
    try:
        with open(fpath, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise StoreFormatError(f"{path}: {role} file {name} named by the manifest is missing") from None
    algorithm, expected = _expected(manifest, role)
    if verify and algorithm:
        h = _new_hash(algorithm)
        h.update(data)
        if h.hexdigest() != expected:
            raise _mismatch(fpath, algorithm)
    return data


class BackgroundRead(threading.Thread):
    """Files checked (and read) in a thread: reading and hashing release the GIL, so the big files
    (the index, BM25) are checked while the caller parses the docstore. ``roles``: those to read
    (``data_bytes``); ``check``: ``{role: open}`` for those only checked, streamed through the hash
    without keeping the bytes (``data_file``), then opened by ``open(path)`` here too (the index: FAISS
    reads the checked file itself, without the GIL). ``result()`` returns ``{role: bytes, what open
    returned, or None}`` or raises what the read raised."""

    def __init__(self, path: PathLike, manifest: dict[str, Any], roles: Iterable[str], verify: bool = True,
                 check: Optional[dict[str, Callable[[Path], Any]]] = None):
        super().__init__(daemon=True)
        self.args = (path, manifest, tuple(roles), verify)
        self.check = dict(check or {})
        self.out: dict[str, Any] = {}
        self.error: Optional[BaseException] = None
        self.start()

    def run(self) -> None:
        path, manifest, roles, verify = self.args
        try:
            for role, open_ in self.check.items():
                fpath = data_file(path, manifest, role, verify)
                self.out[role] = open_(fpath) if fpath is not None else None
            for role in roles:
                self.out[role] = data_bytes(path, manifest, role, verify)
        except BaseException as e:  # noqa: BLE001 - re-raised by result() in the caller's thread
            self.error = e

    def result(self) -> dict[str, Any]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.out


def read_docstore(fpath: Path) -> Iterator[dict[str, Any]]:
    """Yield the document records of a docstore file (after checking its header)."""
    with open(fpath, "rb") as f:
        yield from parse_docstore(f.read(), str(fpath))


def docstore_records(data: bytes, where: str = "docstore") -> list[tuple[int, str, str, dict[str, Any]]]:
    """Every document of a docstore file's bytes as ``(key, id, text, metadata)``, in file order.

    (Parsing the lines as one JSON array with a single orjson call was measured: no faster than one
    call per line, ~1.7 µs a document either way, so the line parser, which names a bad line, is it.)
    """
    return [(r["key"], r["id"], r["text"], r["metadata"]) for r in parse_docstore(data, where)]


def parse_docstore(data: bytes, where: str = "docstore") -> Iterator[dict[str, Any]]:
    """Yield the document records of a docstore file's bytes (after checking its header)."""
    lines = data.split(b"\n")
    try:
        header = _loads(lines[0])
    except ValueError:
        raise StoreFormatError(f"{where}: bad header line") from None
    if not isinstance(header, dict) or header.get("format") != DOCSTORE_FORMAT:
        raise UnsupportedFormatError(f"{where}: not a {DOCSTORE_FORMAT} file")
    if header.get("format_version") not in SUPPORTED_VERSIONS:
        raise UnsupportedFormatError(
            f"{where}: docstore format_version {header.get('format_version')!r} is not supported")
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rec = _loads(line)
        except ValueError:
            raise StoreFormatError(f"{where}:{lineno}: not valid JSON") from None
        if not (type(rec) is dict and type(rec.get("key")) is int and type(rec.get("id")) is str
                and type(rec.get("text")) is str and type(rec.get("metadata")) is dict):
            raise StoreFormatError(f"{where}:{lineno}: expected key, id, text and metadata")
        yield rec


# ---- writing -----------------------------------------------------------------------------------------


def _write_blob(fpath: Path, chunks: Iterable[Any]) -> tuple[str, int]:
    """Write byte chunks and return their checksum (hashed in memory, not read back) and the file's
    still open descriptor: the caller fdatasyncs it before the commit (``_write_manifest``) and closes it.

    Each chunk is written first and its writeback started (``_start_writeback``) before it is hashed, so
    the disk writes it while this thread hashes; the fdatasync before the commit then mostly waits for
    nothing.
    """
    h = _new_hash()
    fd = os.open(fpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        offset = 0
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            _write_all(fd, view)
            _start_writeback(fd, offset, len(view))
            offset += len(view)
            h.update(view)  # the bytes just written (they are in memory and do not change)
    except BaseException:
        os.close(fd)
        raise
    return h.hexdigest(), fd


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


_SYNC_FILE_RANGE: Any = None  # resolved on the first save: the libc function, or False where there is none


def _start_writeback(fd: int, offset: int = 0, nbytes: int = 0) -> None:
    """Start writing a file's dirty pages to disk now, without waiting (Linux ``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE``; ``nbytes`` 0: to the end). Durability still comes from the fdatasync
    every data file gets before the manifest is committed: this only moves the disk writes earlier, to
    overlap with hashing and encoding (measured: an 11 MB fdatasync waits ~4.5 ms for the writes, ~0.2 ms
    once they were started early). Elsewhere (or if the call fails) it does nothing and the final
    fdatasync writes everything, as before. Nothing here is needed for crash safety."""
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is None:
        _SYNC_FILE_RANGE = _load_sync_file_range()
    if _SYNC_FILE_RANGE:
        _SYNC_FILE_RANGE(fd, offset, nbytes, 2)  # 2 = SYNC_FILE_RANGE_WRITE; the result is only advisory


def _load_sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a libc without it
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _fdatasync(fd: int) -> None:
    # fdatasync flushes the data and the metadata needed to read it back (size), not timestamps
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


#: records per chunk of the docstore file (SciFact: ~800 KB of JSON lines): see _docstore_chunks. Each
#: chunk is written and its writeback started: 128 records a chunk spent 1.8 ms of SciFact's save in
#: sync_file_range, 512 0.8 ms
_DOCSTORE_CHUNK = 512


def _line_encoder() -> Any:
    """One record -> its JSON line, newline included."""
    if _orjson is not None:
        return functools.partial(_orjson.dumps, option=_orjson.OPT_APPEND_NEWLINE)
    return lambda rec: _dumps_line(rec) + b"\n"


def _docstore_chunks(records: Iterable[dict[str, Any]], count: int) -> Iterator[bytes]:
    """The docstore file's bytes in chunks of :data:`_DOCSTORE_CHUNK` lines: the header line, then one
    JSON line per record, each ending in a newline.

    Why chunks: encoding the whole file at once allocated its size twice over in fresh memory (each
    line, then their join). In a process whose heap had been given back to the system (a long-running
    one, or after other large work), the page faults alone cost more than the encoding: SciFact's 8 MB
    took 10-22 ms in bench/kb_throughput.py, against 4-5 ms once the memory was warm. Chunks reuse the
    same few hundred KB: 3.5-5 ms and a few faults. Each chunk is ``join`` over ``map`` of the
    encoder (C iteration, no Python frame per record). One ``orjson.dumps`` of the whole list would need
    another file format: a document's text may contain ``},{``.
    """
    header = json.dumps({"format": DOCSTORE_FORMAT, "format_version": FORMAT_VERSION, "count": count})
    yield header.encode("utf-8") + b"\n"
    line = _line_encoder()
    it = iter(records)
    while chunk := b"".join(map(line, itertools.islice(it, _DOCSTORE_CHUNK))):
        yield chunk


def _encode_docstore(records: Iterable[dict[str, Any]], count: int) -> bytes:
    """The whole docstore file's bytes (tests, small stores)."""
    return b"".join(_docstore_chunks(records, count))


def _write_docstore(fpath: Path, records: Iterable[dict[str, Any]], count: int, fds: list[int]) -> str:
    """Encode, write and hash the docstore chunk by chunk (each written, its writeback started and
    hashed before the next is encoded); returns its checksum (see ``_write_file``)."""
    return _write_file(fpath, _docstore_chunks(records, count), fds)


def _write_manifest(directory: Path, manifest: dict[str, Any], data_fds: Iterable[int] = ()) -> None:
    """Commit ``manifest``: write it under a temporary name, fdatasync the data files (``data_fds``) and
    it, rename it over ``manifest.json``, fsync the directory.

    Why the data files are synced here, not each by its writer as it finishes: every sync comes after the
    last write of every file, so the first fdatasync commits the filesystem journal once for all of them
    (ext4: one commit carries every file's new blocks; each later fdatasync finds its metadata already
    committed and only waits for its data, whose writeback was started as it was written). Synced by its
    writer, each file could cost a journal commit of its own, which waits for whatever else the system
    is writing. It is as safe: the rename, the commit point, still comes after every fdatasync returned.
    """
    tmp = directory / f".{MANIFEST}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            _start_writeback(f.fileno())  # in the journal transaction the first fdatasync below commits
            for fd in data_fds:
                _fdatasync(fd)
            _fdatasync(f.fileno())
        os.replace(tmp, directory / MANIFEST)  # the commit point
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(directory)


def _cleanup(directory: Path, keep: set[str]) -> None:
    for p in directory.iterdir():
        if p.name == MANIFEST or p.name in keep or not p.is_file():
            continue
        if p.name.startswith(("index-", "docstore-", "bm25-", f".{MANIFEST}.")):
            try:
                p.unlink()
            except OSError:  # pragma: no cover - best effort: an orphan file is harmless
                pass


def _hash_file(fpath: Path) -> tuple[str, int]:
    """The checksum of a file a library has just written, read back (from the page cache), and a descriptor
    of it to fdatasync before the commit (the caller closes it). Its writeback is started first, so the
    disk writes the file while it is hashed (BLAKE3 maps the file: 1.2 ms for 7.7 MB, against 1.9 ms
    read through a fresh 4 MB buffer). (Hashing FAISS's output as it writes, through
    ``faiss.PyCallbackIOWriter``, was measured: no faster, as the callback copies each chunk too.)"""
    fd = os.open(fpath, os.O_RDONLY)  # fdatasync syncs the file, whatever the descriptor's access mode
    try:
        _start_writeback(fd)
        digest = _file_digest(fpath, _written_with())
    except BaseException:
        os.close(fd)
        raise
    return digest, fd


def _write_file(fpath: Path, data: Any, fds: list[int]) -> str:
    """Write one data file and return its checksum; its descriptor is appended to ``fds``, left open for
    the fdatasync before the commit (the caller closes it).

    ``data``: the bytes, a callable returning them, an iterator of chunks (the docstore), or
    ``("file", write)`` where ``write(path)`` writes the file itself (FAISS's ``write_index``: no
    in-memory copy of the index; hashed by reading it back).
    """
    if isinstance(data, tuple) and len(data) == 2 and data[0] == "file":
        data[1](str(fpath))
        digest, fd = _hash_file(fpath)
    else:
        data = data() if callable(data) else data
        digest, fd = _write_blob(fpath, data if isinstance(data, Iterator) else [data])
    fds.append(fd)
    return digest


def write_store(path: PathLike, manifest: dict[str, Any], index_bytes: Optional[Any],
                records: Iterable[dict[str, Any]], extra: Optional[dict[str, tuple[str, Any]]] = None
                ) -> dict[str, Any]:
    """Write a store at ``path`` atomically; returns the manifest written (with files and checksums).

    ``index_bytes``: the serialised FAISS index (bytes or a uint8 array, or ``("file", write)`` with
    ``write(path)`` writing it) or None for an empty store; ``extra``: more data files,
    ``{role: (file extension, bytes or a callable returning them)}`` (the BM25 index). Every data file is
    synced before the manifest that names them replaces the old one: one fdatasync per file, all after
    the last write (see ``_write_manifest``), one fsync of the directory after the manifest's rename.

    The files are written one after the other in this thread, the index first: the disk writes each
    while the next is encoded (``_start_writeback``). Why no writer threads: the BM25 file and the
    docstore are encoded by Python and numpy, which hold the GIL, and the index's writer needs the GIL
    between FAISS's calls, so each waited on the others for up to a switch interval (5 ms) at a time.
    With the index in a thread, a 5k-document save took 11 or 21 ms (bimodal, 13 ms for theirs) and
    SciFact's 22-23 ms; in one thread, 12.3-12.7 and 22.8-23.4 ms.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    files: dict[str, str] = {}
    sums: dict[str, str] = {}
    written: list[Path] = []
    blobs: dict[str, tuple[str, Any]] = {}
    if index_bytes is not None:
        blobs["index"] = ("faiss", index_bytes)
    blobs.update(extra or {})
    fds: list[int] = []
    try:
        for role, (ext, data) in blobs.items():
            files[role] = f"{role}-{token}.{ext}"
            written.append(directory / files[role])
            sums[role] = _write_file(written[-1], data, fds)
        files["docstore"] = f"docstore-{token}.jsonl"
        written.append(directory / files["docstore"])
        sums["docstore"] = _write_docstore(written[-1], records, int(manifest["count"]), fds)
        manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files,
                    _written_with(): sums}
        _write_manifest(directory, manifest, fds)
    except BaseException:
        _close(fds)
        for p in written:  # the old manifest and its files are untouched
            if p.exists():
                p.unlink()
        raise
    _close(fds)
    _cleanup(directory, set(files.values()))
    return manifest


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)


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
