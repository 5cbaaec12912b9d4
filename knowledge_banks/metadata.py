"""Typed metadata and retrieval content.

The metadata schema names the metadata a bank keeps and its type (``string``, ``int``, ``float``,
``bool``, ``date``); a writer refuses a document whose declared metadata has the wrong type, before
anything is staged. Retrieval content lets a chunk be *found* by its text but *returned* as
something else: the page image(s) it came from, or a longer text.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import mimetypes
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from langchain_mesh.errors import MeshError

__all__ = ["MetadataSchemaError", "validate_metadata", "MetadataFormatter", "DOCUMENT_KEY",
           "RETRIEVAL_KEY", "apply_retrieval_content", "METADATA_TYPES", "FolderDocumentRef",
           "ManagedFolderDocumentRef"]

METADATA_TYPES = ("string", "int", "float", "bool", "date")
# Reserved keys; stored as JSON text so every engine can keep them in a plain string field.
DOCUMENT_KEY = "mesh_document"
RETRIEVAL_KEY = "mesh_retrieval_content"


class MetadataSchemaError(MeshError, ValueError):
    """A document's metadata does not match the bank's metadata schema."""


def _type_ok(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "date":
        if isinstance(value, (_dt.date, _dt.datetime)):
            return True
        if isinstance(value, str):
            try:
                _dt.datetime.fromisoformat(value)
                return True
            except ValueError:
                return False
    return False


def check_schema(schema: Mapping[str, str]) -> dict[str, str]:
    bad = {k: v for k, v in schema.items() if v not in METADATA_TYPES}
    if bad:
        raise MetadataSchemaError(f"unknown metadata types {bad}; use one of {', '.join(METADATA_TYPES)}")
    return dict(schema)


def validate_metadata(schema: Mapping[str, str], docs: Iterable[Any]) -> None:
    """Raise naming every document and key whose value does not have the declared type."""
    problems = []
    for i, doc in enumerate(docs):
        meta = getattr(doc, "metadata", doc) or {}
        for key, kind in schema.items():
            if key in meta and not _type_ok(kind, meta[key]):
                problems.append(f"document {i}: metadata {key!r} should be {kind}, got {meta[key]!r}")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise MetadataSchemaError(f"metadata does not match the bank's schema: {shown}. Nothing was written.")


@dataclass(frozen=True)
class FolderDocumentRef:
    """A document (a PDF, a page image) kept in a folder: the seed's ``ManagedFolderDocumentRef``.

        ref = FolderDocumentRef("/reports/q3.pdf", "/data/originals")   # path inside the folder, folder
        formatter.with_original_document_ref(ref)

    ``folder_id`` is a local folder (a bank's images folder, a shared drive); ``None`` means ``path``
    stands alone. :meth:`resolve` gives the file on disk.
    """

    path: str
    folder_id: Optional[str] = None

    def resolve(self) -> Path:
        if self.folder_id is None:
            return Path(self.path)
        return Path(self.folder_id).expanduser() / self.path.lstrip("/")


#: the seed's name for it
ManagedFolderDocumentRef = FolderDocumentRef


class MetadataFormatter:
    """Builds the reserved metadata of one document (the seed's ``writer.get_metadata_formatter()``)."""

    def __init__(self, images_dir: Optional[Path]):
        self._images_dir = images_dir
        self._document: dict[str, Any] = {}
        self._retrieval: Optional[dict[str, Any]] = None

    def with_original_document_ref(self, ref: Any) -> "MetadataFormatter":
        # A path, a URL, or an object with a path (the seed's ManagedFolderDocumentRef)
        self._document["ref"] = str(getattr(ref, "path", None) or getattr(ref, "file_path", None) or ref)
        folder = getattr(ref, "folder_id", None)
        if folder:
            self._document["folder"] = str(folder)
        return self

    def with_original_document_page_range(self, start: int, end: int) -> "MetadataFormatter":
        if not (isinstance(start, int) and isinstance(end, int)) or start < 1 or end < start:
            raise ValueError(f"page range must satisfy 1 <= start <= end, got {start}..{end}")
        self._document["page_start"], self._document["page_end"] = start, end
        return self

    def with_retrieval_content(self, image_paths: Optional[Sequence[str]] = None,
                               text: Optional[str] = None) -> "MetadataFormatter":
        if (image_paths is None) == (text is None):
            raise ValueError("give retrieval content as image_paths=[...] or text=..., not both or neither")
        if text is not None:
            self._retrieval = {"type": "text", "text": text}
        else:
            self._retrieval = {"type": "images", "images": [self._store_image(p) for p in image_paths or []]}
        return self

    def _store_image(self, path: Any) -> str:
        """Copy an image into the bank's images folder under its content hash; return that name.

        An image already in the images folder (the seed's ``"/path/to/screenshot/in/image/folder.jpg"``,
        a path inside that folder) is kept where it is; a :class:`FolderDocumentRef` is read from its folder.
        """
        if isinstance(path, FolderDocumentRef):
            path = path.resolve()
        path = Path(path)
        if self._images_dir is None:
            return str(path.resolve())
        inside = self._images_dir / str(path).lstrip("/")
        if not path.is_file() and inside.is_file():
            return str(inside.relative_to(self._images_dir))
        if not path.is_file():
            raise FileNotFoundError(f"retrieval image {path} does not exist (neither as a file nor inside the "
                                    f"bank's images folder {self._images_dir})")
        data = path.read_bytes()
        name = hashlib.sha256(data).hexdigest()[:32] + path.suffix.lower()
        target = self._images_dir / name
        if not target.exists():
            self._images_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name("." + name + ".tmp")
            shutil.copyfile(path, tmp)
            tmp.replace(target)
        return name

    def format_metadata(self, doc: Any) -> Any:
        """A copy of ``doc`` with the reserved metadata set (the input is not mutated)."""
        meta = dict(doc.metadata or {})
        if self._document:
            meta[DOCUMENT_KEY] = json.dumps(self._document)
        if self._retrieval is not None:
            meta[RETRIEVAL_KEY] = json.dumps(self._retrieval)
        return type(doc)(page_content=doc.page_content, metadata=meta, id=getattr(doc, "id", None))


def apply_retrieval_content(doc: Any, images_dir: Optional[Path]) -> Any:
    """What a retriever returns: the retrieval content in place of the embedded chunk, if set."""
    raw = (doc.metadata or {}).get(RETRIEVAL_KEY)
    if not raw:
        return doc
    content = json.loads(raw)
    meta = dict(doc.metadata)
    meta["embedded_text"] = doc.page_content
    if content["type"] == "text":
        return type(doc)(page_content=content["text"], metadata=meta, id=doc.id)
    images = []
    for name in content["images"]:
        p = Path(name) if Path(name).is_absolute() or images_dir is None else images_dir / name
        images.append({"path": str(p), "mime_type": mimetypes.guess_type(p.name)[0] or "application/octet-stream"})
    meta["retrieval_images"] = images
    return type(doc)(page_content=doc.page_content, metadata=meta, id=doc.id)
