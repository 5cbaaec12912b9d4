"""Building LangChain ``Document`` objects for search results without re-validating them.

    doc = make_document("text", {"source": "faq"}, "doc-1")   # == Document(page_content=..., metadata=..., id=...)

Why: ``Document(...)`` runs pydantic validation (~2.7 µs each, 10 per search, more than the rest of our
search path together); our stores hand back text and metadata they validated when the document was
added. ``make_document`` fills the model the way pydantic's ``model_construct`` does (which itself costs
as much as validation here, being generic). A self-check on first use compares the result with a
validated ``Document`` (equality, dump, repr) and falls back to the validated constructor if a
langchain-core or pydantic release changes the model's internals.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from langchain_core.documents import Document

__all__ = ["make_document"]

_FIELDS_SET = frozenset({"id", "metadata", "page_content"})


def _unchecked(text: str, metadata: dict[str, Any], doc_id: Optional[str]) -> Document:
    doc = object.__new__(Document)
    object.__setattr__(doc, "__dict__", {"id": doc_id, "metadata": metadata, "page_content": text,
                                         "type": "Document"})
    object.__setattr__(doc, "__pydantic_fields_set__", set(_FIELDS_SET))
    object.__setattr__(doc, "__pydantic_extra__", None)
    object.__setattr__(doc, "__pydantic_private__", None)
    return doc


def _validated(text: str, metadata: dict[str, Any], doc_id: Optional[str]) -> Document:
    return Document(page_content=text, metadata=metadata, id=doc_id)


def _pick() -> Callable[[str, dict[str, Any], Optional[str]], Document]:
    try:
        fast, ref = _unchecked("t", {"a": 1}, "i"), _validated("t", {"a": 1}, "i")
        if (fast == ref and fast.model_dump() == ref.model_dump() and repr(fast) == repr(ref)
                and fast.model_copy() == ref and Document.model_validate(fast.model_dump()) == fast):
            return _unchecked
    except Exception:  # noqa: BLE001 - any surprise means: use the validated constructor
        pass
    return _validated


_make: Optional[Callable[[str, dict[str, Any], Optional[str]], Document]] = None


def make_document(text: str, metadata: dict[str, Any], doc_id: Optional[str]) -> Document:
    """A ``Document`` for trusted, already-validated fields (the caller passes its own metadata copy)."""
    global _make
    if _make is None:
        _make = _pick()
    return _make(text, metadata, doc_id)
