"""The Azure AI Search index layout of a knowledge bank: fields, vector profile, semantic configuration,
document keys, and the conversion of LangChain documents to index documents and back.

Layout (the names langchain-community's AzureSearch uses, so existing indexes look familiar)::

    id              Edm.String  key, filterable          the document id, encoded (see encode_key)
    content         Edm.String  searchable               page_content (BM25; semantic prioritized content)
    content_vector  Collection(Edm.Single)               the embedding (dimensions, vectorSearchProfile)
    metadata        Edm.String                           the full metadata as JSON: exact round trip
    <key>           Edm.String|Int64|Double|Boolean|DateTimeOffset or Collection(...), filterable
                                                         one typed field per metadata key, for $filter

The JSON copy gives back exactly what was stored (nested dicts, int vs float, None); the typed fields
exist so filters run in the service. Typed fields come from the bank's metadata schema, and keys
outside it are typed from their first values (numbers as Edm.Double, so 3 then 2.5 both fit) and
added to the index as they appear (Azure allows adding fields to an existing index). A key that is
not a valid field name, or whose values are nested dicts, stays in the JSON only.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
from typing import Any, Iterable, Mapping, Optional

from .odata import EDM_TYPES

__all__ = ["KEY_FIELD", "CONTENT_FIELD", "VECTOR_FIELD", "METADATA_FIELD", "encode_key", "decode_key",
           "field_name", "infer_edm", "build_index", "metadata_fields", "to_index_document", "METRICS"]

KEY_FIELD, CONTENT_FIELD, VECTOR_FIELD, METADATA_FIELD = "id", "content", "content_vector", "metadata"
RESERVED = {KEY_FIELD, CONTENT_FIELD, VECTOR_FIELD, METADATA_FIELD}
VECTOR_PROFILE = "mesh-vector-profile"
METRICS = ("cosine", "euclidean", "dotProduct")
ALGORITHMS = ("hnsw", "exhaustive_knn")

# ---- document keys ----------------------------------------------------------------------------------
# Azure keys allow letters, digits, "_", "-" and "=", and may not start with "_". Other ids (paths,
# URLs, non-ASCII) are stored as "b64=" + urlsafe base64 without padding; ids that already start with
# "b64=" are encoded too, so decoding is unambiguous.

_SAFE_KEY = re.compile(r"^[A-Za-z0-9\-=][A-Za-z0-9_\-=]{0,1023}$")
_B64 = "b64="


def encode_key(doc_id: str) -> str:
    if _SAFE_KEY.match(doc_id) and not doc_id.startswith(_B64):
        return doc_id
    return _B64 + base64.urlsafe_b64encode(doc_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_key(key: str) -> str:
    if not key.startswith(_B64):
        return key
    raw = key[len(_B64):]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")


# ---- metadata fields ----------------------------------------------------------------------------------

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")


def field_name(key: str) -> Optional[str]:
    """The typed field of metadata ``key``: the key itself; ``meta_<key>`` when it collides with a
    layout field (a metadata ``"id"`` stays separate from the document id); None when the key is not
    a valid Azure field name."""
    if not isinstance(key, str) or not _FIELD_NAME.match(key) or key.lower().startswith("azuresearch"):
        return None
    return f"meta_{key}" if key in RESERVED or key.startswith("meta_") else key


def infer_edm(value: Any) -> Optional[str]:
    """The Edm type a first-seen metadata value gets; None when it cannot be a typed field."""
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, (int, float)):
        return "Edm.Double"
    if isinstance(value, str):
        return "Edm.String"
    if isinstance(value, (_dt.datetime, _dt.date)):
        return "Edm.DateTimeOffset"
    if isinstance(value, (list, tuple)) and value:
        inner = {infer_edm(v) for v in value}
        if len(inner) == 1 and None not in inner and "Edm.DateTimeOffset" not in inner:
            return f"Collection({inner.pop()})"
    return None


def schema_fields(schema: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """metadata key -> (field name, Edm type) for a bank's metadata schema."""
    out = {}
    for key, kind in schema.items():
        name = field_name(key)
        if name is None:
            raise ValueError(f"metadata schema key {key!r} is not a valid Azure AI Search field name "
                             f"(letters, digits and '_', starting with a letter)")
        out[key] = (name, EDM_TYPES[kind])
    return out


def _typed_value(value: Any, edm: str) -> tuple[bool, Any]:
    """(fits, value as sent) for a metadata value in a field of type ``edm``."""
    if value is None:
        return True, None
    if edm.startswith("Collection("):
        if not isinstance(value, (list, tuple)):
            value = [value]  # a scalar in a collection field: a one-element list, as filters.py sees it
        inner = edm[len("Collection("):-1]
        out = []
        for v in value:
            ok, tv = _typed_value(v, inner)
            if not ok or tv is None:
                return False, None
            out.append(tv)
        return True, out
    if edm == "Edm.String":
        return isinstance(value, str), value
    if edm == "Edm.Boolean":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, None
    if edm == "Edm.Int64":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return isinstance(value, int), value
    if edm == "Edm.Double":
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else None
    if edm == "Edm.DateTimeOffset":
        from .odata import _datetime_literal

        lit = _datetime_literal(value)
        return lit is not None, lit
    return False, None


def to_index_document(doc_id: str, text: str, vector: list[float], metadata: Mapping[str, Any],
                      fields: dict[str, str], names: dict[str, str]) -> dict[str, Any]:
    """The document as uploaded; ``fields``/``names`` are the index's typed fields (updated in place
    with new keys' fields: the caller adds them to the index before uploading)."""
    doc: dict[str, Any] = {KEY_FIELD: encode_key(doc_id), CONTENT_FIELD: text,
                           VECTOR_FIELD: [float(x) for x in vector],
                           METADATA_FIELD: json.dumps(metadata, default=_json_default, allow_nan=False)}
    for key, value in metadata.items():
        name = names.get(key) or field_name(key)
        if name is None:
            continue
        edm = fields.get(name)
        if edm is None:
            edm = infer_edm(value)
            if edm is None:
                continue  # JSON only (None, nested dicts, mixed lists): not filterable in the service
            fields[name], names[key] = edm, name
        names.setdefault(key, name)
        ok, typed = _typed_value(value, edm)
        if not ok:
            raise TypeError(f"metadata {key!r}={value!r} does not fit the index field {name!r} of type {edm}; "
                            f"keep one type per metadata key (or declare it in the bank's metadata schema)")
        doc[name] = typed
    return doc


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    raise TypeError(f"metadata value {value!r} is not JSON-serialisable")


def metadata_fields(index_fields: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Typed metadata fields (name -> Edm type) of an index definition (REST JSON field dicts)."""
    return {f["name"]: f["type"] for f in index_fields if f["name"] not in RESERVED}


# ---- index definition -------------------------------------------------------------------------------


def build_index(name: str, dimensions: int, fields: Mapping[str, str], *, algorithm: str = "hnsw",
                metric: str = "cosine", semantic_configuration: Optional[str] = "default",
                description: Optional[str] = None) -> Any:
    """The ``SearchIndex`` model (azure-search-documents) of a bank index."""
    from azure.search.documents.indexes import models as m

    if algorithm not in ALGORITHMS:
        raise ValueError(f"vector_algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    index_fields = [
        m.SearchField(name=KEY_FIELD, type="Edm.String", key=True, filterable=True, sortable=True, retrievable=True),
        m.SearchField(name=CONTENT_FIELD, type="Edm.String", searchable=True, filterable=False, sortable=False,
                      facetable=False, retrievable=True),
        m.SearchField(name=VECTOR_FIELD, type="Collection(Edm.Single)", searchable=True, retrievable=True,
                      stored=True, vector_search_dimensions=dimensions, vector_search_profile_name=VECTOR_PROFILE),
        # the JSON copy is neither searched nor filtered: BM25 and filters use content and the typed fields
        m.SearchField(name=METADATA_FIELD, type="Edm.String", searchable=False, filterable=False, sortable=False,
                      facetable=False, retrievable=True),
    ]
    for fname, edm in fields.items():
        # not searchable: metadata strings must not take part in BM25 (they would skew hybrid ranking)
        index_fields.append(m.SearchField(name=fname, type=edm, searchable=False, filterable=True, retrievable=True,
                                          sortable=not edm.startswith("Collection("), facetable=True))
    if algorithm == "hnsw":
        algo = m.HnswAlgorithmConfiguration(name="mesh-hnsw", parameters=m.HnswParameters(
            m=4, ef_construction=400, ef_search=500, metric=metric))
    else:
        algo = m.ExhaustiveKnnAlgorithmConfiguration(name="mesh-exhaustive-knn",
                                                     parameters=m.ExhaustiveKnnParameters(metric=metric))
    profile = m.VectorSearchProfile(name=VECTOR_PROFILE, algorithm_configuration_name=algo.name)
    vector_search = m.VectorSearch(algorithms=[algo], profiles=[profile])
    semantic = None
    if semantic_configuration:
        semantic = m.SemanticSearch(default_configuration_name=semantic_configuration, configurations=[
            m.SemanticConfiguration(name=semantic_configuration, prioritized_fields=m.SemanticPrioritizedFields(
                content_fields=[m.SemanticField(field_name=CONTENT_FIELD)]))])
    kwargs: dict[str, Any] = {"name": name, "fields": index_fields, "vector_search": vector_search,
                              "semantic_search": semantic}
    if description is not None:
        kwargs["description"] = description
    return m.SearchIndex(**kwargs)


def index_settings(index: Any) -> dict[str, Any]:
    """(dimensions, algorithm, metric, semantic configuration) read back from a ``SearchIndex``."""
    out: dict[str, Any] = {"dimensions": None, "algorithm": "hnsw", "metric": "cosine", "semantic_configuration": None}
    for f in index.fields or []:
        if f.name == VECTOR_FIELD:
            out["dimensions"] = f.vector_search_dimensions
    vs = index.vector_search
    if vs is not None and vs.algorithms:
        algo = vs.algorithms[0]
        out["algorithm"] = "hnsw" if str(getattr(algo.kind, "value", algo.kind)) == "hnsw" else "exhaustive_knn"
        params = getattr(algo, "parameters", None)
        if params is not None and getattr(params, "metric", None):
            out["metric"] = str(getattr(params.metric, "value", params.metric))
    sem = index.semantic_search
    if sem is not None and sem.configurations:
        out["semantic_configuration"] = sem.default_configuration_name or sem.configurations[0].name
    return out
