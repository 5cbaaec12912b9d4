"""The Elasticsearch index layout of a knowledge bank: mapping, stored documents, score conversions.

One document per chunk::

    {"text": "...",                      # text, BM25 (standard analyzer)
     "vector": [...],                    # dense_vector: dims, similarity, index_options
     "metadata": {...},                  # the LangChain metadata, exactly as given (round-trips)
     "metadata_keys": [...],             # keys present, and keys holding None: see elasticsearch_filters
     "metadata_nulls": [...]}

Metadata declared in the bank's schema gets typed fields (string -> keyword, int -> long,
float -> double, bool -> boolean, date -> date). Undeclared metadata is mapped dynamically, but not
with ES's defaults: strings become ``keyword`` (exact, filterable, not analysed text), every number
``double`` (ES would map a first ``1`` as ``long`` and then silently truncate a later ``2.5``), and
``date_detection`` is off (a string that looks like a date stays a string, as the filters see it).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional

from .filters import KEYS_FIELD, METADATA_FIELD, NULLS_FIELD, metadata_markers

__all__ = ["TEXT_FIELD", "VECTOR_FIELD", "SIMILARITIES", "index_mapping", "document_source",
           "metadata_types", "relevance_fn", "json_metadata"]

TEXT_FIELD = "text"
VECTOR_FIELD = "vector"
SIMILARITIES = ("cosine", "dot_product", "l2_norm", "max_inner_product")
_SCHEMA_TYPES = {"string": "keyword", "int": "long", "float": "double", "bool": "boolean", "date": "date"}
SOURCE_FIELDS = [TEXT_FIELD, METADATA_FIELD]


def index_mapping(dims: Optional[int], similarity: str = "cosine", index_options: Optional[Mapping[str, Any]] = None,
                  metadata_schema: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The ``mappings`` body of a new index (``dims=None``: set by the first vector, ES 8.11+)."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    vector: dict[str, Any] = {"type": "dense_vector", "index": True, "similarity": similarity}
    if dims is not None:
        vector["dims"] = int(dims)
    if index_options:
        vector["index_options"] = dict(index_options)
    typed = {}
    for key, kind in (metadata_schema or {}).items():
        if kind not in _SCHEMA_TYPES:
            raise ValueError(f"metadata {key!r}: unknown type {kind!r}; use one of {', '.join(_SCHEMA_TYPES)}")
        typed[key] = {"type": _SCHEMA_TYPES[kind]}
    return {
        "date_detection": False,
        "dynamic_templates": [
            {"metadata_strings": {"path_match": f"{METADATA_FIELD}.*", "match_mapping_type": "string",
                                  "mapping": {"type": "keyword"}}},
            {"metadata_integers": {"path_match": f"{METADATA_FIELD}.*", "match_mapping_type": "long",
                                   "mapping": {"type": "double"}}},
        ],
        "properties": {
            TEXT_FIELD: {"type": "text"},
            VECTOR_FIELD: vector,
            METADATA_FIELD: {"type": "object", "properties": typed},
            KEYS_FIELD: {"type": "keyword"},
            NULLS_FIELD: {"type": "keyword"},
        },
    }


def json_metadata(md: Any, i: int) -> dict[str, Any]:
    """A validated, decoupled copy (documents are JSON on the wire)."""
    if md is None:
        return {}
    if not isinstance(md, dict):
        raise TypeError(f"metadata #{i} must be a dict, not {type(md).__name__}")
    try:
        return json.loads(json.dumps(md, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata #{i} is not JSON-serialisable ({e}); store strings, numbers, booleans, "
                        f"None, lists and dicts") from None


def document_source(text: str, vector: list[float], metadata: dict[str, Any]) -> dict[str, Any]:
    return {TEXT_FIELD: text, VECTOR_FIELD: [float(x) for x in vector], METADATA_FIELD: metadata,
            **metadata_markers(metadata)}


def metadata_types(mapping_response: Mapping[str, Any]) -> dict[str, str]:
    """{metadata field: ES type} from a ``GET /{index}/_mapping`` answer (all indices behind an alias)."""
    out: dict[str, str] = {}
    for body in mapping_response.values():
        props = ((body.get("mappings") or {}).get("properties") or {}).get(METADATA_FIELD, {}).get("properties") or {}
        for name, spec in props.items():
            out.setdefault(name, spec.get("type", "object"))
    return out


def relevance_fn(similarity: str) -> Callable[[float], float]:
    """ES ``_score`` of a kNN hit -> LangChain relevance in [0, 1], higher is better.

    cosine and dot_product scores are already ``(1 + s) / 2`` and l2_norm ``1 / (1 + d²)``: both
    in [0, 1], kept. max_inner_product scores are unbounded (``dot + 1`` or ``1 / (1 - dot)``): the
    inner product is recovered and mapped like a cosine, ``(1 + dot) / 2`` clipped (exact for
    unit-length embeddings).
    """
    if similarity == "max_inner_product":
        def mip(score: float) -> float:
            dot = score - 1.0 if score >= 1.0 else 1.0 - 1.0 / max(score, 1e-12)
            return min(1.0, max(0.0, (1.0 + dot) / 2.0))

        return mip
    return lambda score: min(1.0, max(0.0, float(score)))
