"""A local Elasticsearch: the REST API subset that vector stores use, with honest search semantics.

    with ElasticsearchServer() as es:                    # license="trial": RRF allowed
        client = Elasticsearch(es.url)
    ElasticsearchServer(license="basic")                 # the RRF retriever answers 403 like a Basic cluster
    python -m langchain_mesh.testing.elasticsearch --port 9200 [--license basic] [--api-key KEY]

What is served (everything answers with ``X-Elastic-Product: Elasticsearch``; requests that ask for
``application/vnd.elasticsearch+json; compatible-with=N`` get that media type back, N being this
server's major version or the one before, as a real cluster's REST compatibility allows):

- ``GET /`` (info), ``GET /_license``; ``HEAD/PUT/GET/DELETE /{index}``, ``GET/PUT /{index}/_mapping``;
- ``POST [/{index}]/_bulk`` (NDJSON index/create/update/delete, per-item statuses, ``errors``),
  ``GET/PUT/POST/DELETE /{index}/_doc/{id}``, ``POST /{index}/_mget``, ``POST /{index}/_refresh``;
- ``GET|POST /{index}/_search`` with ``query`` (match, multi_match, bool, term, terms, range, exists,
  ids, match_all, match_none, constant_score), top-level ``knn`` (alone or with ``query``: summed),
  ``retriever`` (``standard``, ``knn``, ``rrf``), ``size``/``from``, ``min_score``, ``_source``
  filtering (body or ``_source_includes``/``_source_excludes`` parameters);
- ``GET|POST /{index}/_count``, ``POST /{index}/_delete_by_query``, ``POST /_reindex``;
- ``POST /_aliases`` (add/remove/remove_index, applied atomically), ``GET|HEAD /_alias/{name}``,
  ``GET /{index}/_alias``, ``PUT|DELETE /{index}/_alias/{name}``.

Semantics kept honest, because tests that pass here should pass against a cluster:

- BM25 as Elasticsearch computes it: Lucene's ``idf = ln(1 + (N - n + 0.5) / (n + 0.5))`` times
  ``(k1 + 1)·tf / (tf + k1·(1 - b + b·dl/avgdl))`` (k1=1.2, b=0.75, or the index's ``similarity``
  settings), with Lucene's lossy one-byte document-length norms; the standard analyzer approximated
  as lowercase + Unicode word segmentation. Scores of several query terms add up, as a Lucene
  boolean query's do.
- kNN is exact (brute force, so ``num_candidates`` only gets validated), with ES's score transforms:
  cosine ``(1+cos)/2``, dot_product ``(1+dot)/2`` (unit-length vectors required), l2_norm
  ``1/(1+d²)``, max_inner_product ``dot<0 ? 1/(1-dot) : dot+1``. Quantised ``index_options``
  (int8_hnsw...) are accepted and stored; scores stay exact.
- RRF: ``Σ 1/(rank_constant + rank)`` over each child's top ``rank_window_size``; an Enterprise
  feature: ``license="basic"`` answers 403 ``security_exception`` as a Basic cluster does.
- Near-real-time: search, count and delete-by-query see documents as of the last refresh (an
  explicit ``refresh``, or the 1 s ``refresh_interval``); get and mget are real-time.
- Mappings: explicit and dynamic (``dynamic_templates``, ``date_detection``, ``dynamic: strict``),
  with type checks that reject documents as a cluster would (``document_parsing_exception``).
- Errors carry ES's body: ``{"error": {"root_cause": [...], "type", "reason"}, "status"}``.

Not served: aggregations, sorting, scroll/PIT, highlighting, ingest pipelines, inference (a
``query_vector_builder`` is refused), scripts.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import fnmatch
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from .wire import RecordedRequest, Responder, WireServer, serve_main

__all__ = ["ElasticsearchServer", "EsError", "analyze"]

JSON_TYPE = "application/json"
MAX_RESULT_WINDOW = 10_000
MAX_NUM_CANDIDATES = 10_000
RRF_LICENSES = ("trial", "enterprise")
_NUMERIC = ("long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long")
_INTEGER = ("long", "integer", "short", "byte", "unsigned_long")
_TEXT = ("text", "match_only_text")
_VECTOR_INDEX_TYPES = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat")
_SIMILARITIES = ("cosine", "dot_product", "l2_norm", "max_inner_product")


class EsError(Exception):
    """An error answered with Elasticsearch's error body."""

    def __init__(self, status: int, type_: str, reason: str, **extra: Any):
        super().__init__(reason)
        self.status, self.type, self.reason, self.extra = status, type_, reason, extra

    def cause(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, **self.extra}

    def body(self) -> dict[str, Any]:
        return {"error": {"root_cause": [self.cause()], **self.cause()}, "status": self.status}


def _bad(reason: str, type_: str = "illegal_argument_exception") -> EsError:
    return EsError(400, type_, reason)


def _index_missing(name: str) -> EsError:
    return EsError(404, "index_not_found_exception", f"no such index [{name}]", **{
        "resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name})


# ---- analysis -----------------------------------------------------------------------------------------

# The standard tokenizer follows Unicode word boundaries (UAX #29): letters and digits joined by
# '.', apostrophes or '_' stay one token ("u.s.a", "don't", "foo_bar"); hyphens and spaces split.
_WORD = re.compile(r"\w+(?:[.'’]\w+)*", re.UNICODE)


def analyze(text: str) -> list[str]:
    """The standard analyzer, approximately: Unicode word segmentation, then lowercase."""
    return [t.lower() for t in _WORD.findall(text) if len(t) <= 255]


def _int4(i: int) -> int:  # Lucene SmallFloat.longToInt4
    bits = i.bit_length()
    if bits < 4:
        return i
    shift = bits - 4
    return ((i >> shift) & 0x07) | ((shift + 1) << 3)


def _from_int4(i: int) -> int:  # SmallFloat.int4ToLong
    bits, shift = i & 0x07, (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_FREE = 255 - _int4(2**31 - 1)  # 24: lengths below this are stored exactly


def lucene_length(n: int) -> int:
    """A document length as Lucene's one-byte norm stores it (exact below 24, then lossy)."""
    if n < _FREE:
        return n
    return _FREE + _from_int4(_int4(n - _FREE))


# ---- values -------------------------------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_SLASH_DATE = re.compile(r"^\d{4}/\d{2}/\d{2}( \d{2}:\d{2}:\d{2})?( [+-]\d{4})?$")


def parse_date(value: Any, where: str) -> float:
    """Epoch milliseconds from ISO-8601 text or epoch millis (``strict_date_optional_time||epoch_millis``)."""
    if isinstance(value, bool):
        raise _bad(f"failed to parse date field [{value}] for [{where}]", "document_parsing_exception")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"-?\d+", s):
            return float(s)
        if _DATE.match(s) or _SLASH_DATE.match(s):
            s2 = s.replace("/", "-").replace("Z", "+00:00")
            if len(s2) == 10:
                s2 += "T00:00:00"
            try:
                d = _dt.datetime.fromisoformat(s2)
            except ValueError:
                d = None
            if d is not None:
                if d.tzinfo is None:
                    d = d.replace(tzinfo=_dt.timezone.utc)
                return d.timestamp() * 1000.0
    raise _bad(f"failed to parse date field [{value}] with format [strict_date_optional_time||epoch_millis]",
               "document_parsing_exception")


def _number(value: Any, ftype: str, where: str) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise _bad(f"failed to parse field [{where}] of type [{ftype}]", "document_parsing_exception")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _bad(f"failed to parse field [{where}] of type [{ftype}]",
                       "document_parsing_exception") from None
    x = float(value)
    if math.isnan(x) or math.isinf(x):
        raise _bad(f"[{ftype}] supports only finite values, but got [{value}]", "document_parsing_exception")
    return float(math.trunc(x)) if ftype in _INTEGER else x


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _bad(f"failed to parse field [{where}] of type [boolean]", "document_parsing_exception")


# ---- mappings -----------------------------------------------------------------------------------------


def _flat_fields(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """{"metadata.year": {"type": "long"}, "text.keyword": {...}, "metadata": {"type": "object"}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in (props or {}).items():
        path = prefix + name
        if "properties" in spec or spec.get("type") in (None, "object", "nested"):
            out[path] = {**{k: v for k, v in spec.items() if k != "properties"}, "type": spec.get("type", "object")}
            out.update(_flat_fields(spec.get("properties") or {}, path + "."))
        else:
            out[path] = spec
            for sub, sub_spec in (spec.get("fields") or {}).items():
                out[f"{path}.{sub}"] = {**sub_spec, "_multi": True}
    return out


def _check_field(path: str, spec: dict[str, Any]) -> None:
    t = spec.get("type", "object")
    known = (*_TEXT, "keyword", "boolean", "date", "dense_vector", "object", "nested", "flattened", "constant_keyword",
             "rank_features", "sparse_vector", "wildcard", *_NUMERIC)
    if t not in known:
        raise EsError(400, "mapper_parsing_exception", f"No handler for type [{t}] declared on field [{path}]")
    if t == "dense_vector":
        dims = spec.get("dims")
        if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= 4096):
            raise EsError(400, "mapper_parsing_exception",
                          f"The number of dimensions should be in the range [1, 4096] but was [{dims}]")
        sim = spec.get("similarity", "cosine")
        if sim not in _SIMILARITIES:
            raise EsError(400, "mapper_parsing_exception", f"Unknown value [{sim}] for field [similarity] - "
                                                           f"accepted values are {list(_SIMILARITIES)}")
        opts = spec.get("index_options")
        if opts is not None:
            if spec.get("index") is False:
                raise EsError(400, "mapper_parsing_exception",
                              "Field [index_options] can only be set when [index] is set to [true]")
            if opts.get("type") not in _VECTOR_INDEX_TYPES:
                raise EsError(400, "mapper_parsing_exception",
                              f"Unknown vector index options type [{opts.get('type')}] for field [{path}]")


def _set_path(props: dict[str, Any], path: str, spec: dict[str, Any]) -> None:
    parts = path.split(".")
    node = props
    for p in parts[:-1]:
        node = node.setdefault(p, {"properties": {}}).setdefault("properties", {})
    if spec.get("type", "object") == "object":  # an object merges; ES shows it without "type"
        obj = node.setdefault(parts[-1], {})
        obj.update({k: v for k, v in spec.items() if k not in ("type", "properties")})
        obj.setdefault("properties", {})
    else:
        node[parts[-1]] = spec


def _dynamic_type(value: Any, date_detection: bool) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str) and date_detection and (_DATE.match(value) or _SLASH_DATE.match(value)):
        return "date"
    return "string"


_DEFAULT_DYNAMIC = {"long": {"type": "long"}, "double": {"type": "float"}, "boolean": {"type": "boolean"},
                    "date": {"type": "date"}, "object": {"type": "object"},
                    "string": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}}


def _dynamic_mapping(mappings: dict[str, Any], path: str, kind: str) -> dict[str, Any]:
    """The mapping a new field gets: the first matching dynamic template, else ES's defaults."""
    name = path.rsplit(".", 1)[-1]
    for tpl in mappings.get("dynamic_templates") or []:
        (_, t), = tpl.items()
        mmt = t.get("match_mapping_type")
        if mmt not in (None, "*") and mmt != kind and not (isinstance(mmt, list) and kind in mmt):
            continue
        if "match" in t and not fnmatch.fnmatchcase(name, t["match"]):
            continue
        if "unmatch" in t and fnmatch.fnmatchcase(name, t["unmatch"]):
            continue
        if "path_match" in t and not fnmatch.fnmatchcase(path, t["path_match"]):
            continue
        if "path_unmatch" in t and fnmatch.fnmatchcase(path, t["path_unmatch"]):
            continue
        spec = json.loads(json.dumps(t.get("mapping") or {}).replace("{dynamic_type}", kind))
        if kind == "object" and "type" not in spec:
            spec["type"] = "object"
        return spec
    return json.loads(json.dumps(_DEFAULT_DYNAMIC[kind]))


# ---- documents ----------------------------------------------------------------------------------------


@dataclass
class Doc:
    id: str
    source: dict[str, Any]
    seq_no: int
    version: int
    values: dict[str, list[Any]]  # field path -> indexed values (tokens for text, floats for numbers...)
    lengths: dict[str, int]  # text field -> token count


@dataclass
class Index:
    name: str
    mappings: dict[str, Any]
    settings: dict[str, Any]
    created: float = field(default_factory=time.time)
    uuid: str = field(default_factory=lambda: base64.urlsafe_b64encode(uuid.uuid4().bytes)[:22].decode())
    docs: dict[str, Doc] = field(default_factory=dict)
    searchable: dict[str, Doc] = field(default_factory=dict)
    dirty_since: Optional[float] = None
    generation: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, dict[str, Any]]:
        return _flat_fields(self.mappings.get("properties") or {})

    def refresh(self) -> None:
        self.searchable = dict(self.docs)
        self.dirty_since = None
        self.generation += 1
        self.stats.clear()

    def view(self) -> dict[str, Doc]:
        """What search sees: the last refresh, or now if the refresh interval has passed."""
        interval = _interval_s(self.settings.get("refresh_interval", "1s"))
        if self.dirty_since is not None and interval >= 0 and time.time() - self.dirty_since >= interval:
            self.refresh()
        return self.searchable

    def bm25(self, path: str) -> tuple[float, float]:
        spec = self.fields().get(path, {})
        sim = spec.get("similarity")
        params = (self.settings.get("similarity") or {}).get(sim, {}) if sim else {}
        return float(params.get("k1", 1.2)), float(params.get("b", 0.75))

    def field_stats(self, path: str) -> tuple[int, float, dict[str, int]]:
        """(docCount, avgdl, doc freq per term) over the searchable view."""
        cached = self.stats.get(path)
        if cached is None:
            count, total, df = 0, 0, {}
            for d in self.view().values():
                toks = d.values.get(path)
                if not toks:
                    continue
                count += 1
                total += d.lengths.get(path, len(toks))
                for t in set(toks):
                    df[t] = df.get(t, 0) + 1
            cached = self.stats[path] = (count, total / count if count else 0.0, df)
        return cached


def _interval_s(value: Any) -> float:
    s = str(value)
    if s in ("-1", "-1s"):
        return -1.0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", s)
    if not m:
        return 1.0
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "ms" else n * 60 if m.group(2) == "m" else n


def _normalise_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """{"index": {"number_of_shards": 1}} and {"index.number_of_shards": 1} -> {"number_of_shards": 1}."""
    out: dict[str, Any] = {}
    for k, v in (settings or {}).items():
        if k == "index" and isinstance(v, dict):
            out.update(_normalise_settings(v))
        elif k.startswith("index."):
            out[k[6:]] = v
        else:
            out[k] = v
    return out


class _Parser:
    """Turns a source document into indexed values, growing the mapping dynamically (or refusing)."""

    def __init__(self, index: Index):
        self.index = index
        self.fields = index.fields()
        self.new: dict[str, dict[str, Any]] = {}
        self.values: dict[str, list[Any]] = {}
        self.lengths: dict[str, int] = {}

    def parse(self, source: Any) -> tuple[dict[str, list[Any]], dict[str, int], dict[str, dict[str, Any]]]:
        if not isinstance(source, dict):
            raise _bad("failed to parse, document is empty" if not source else "failed to parse",
                       "document_parsing_exception")
        self._object(source, "")
        return self.values, self.lengths, self.new

    def _dynamic(self, parent: str) -> Any:
        node = self.index.mappings
        setting = node.get("dynamic", True)
        for part in (parent.split(".") if parent else []):
            node = (node.get("properties") or {}).get(part) or {}
            if "dynamic" in node:
                setting = node["dynamic"]
        return setting

    def _spec(self, path: str, sample: Any) -> Optional[dict[str, Any]]:
        spec = self.fields.get(path) or self.new.get(path)
        if spec is not None:
            return spec
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        dyn = self._dynamic(parent)
        if dyn in (False, "false"):
            return None
        if dyn == "strict":
            raise EsError(400, "strict_dynamic_mapping_exception",
                          f"[{path}] dynamic introduction of [{path.rsplit('.', 1)[-1]}] within "
                          f"[{parent or '_doc'}] is not allowed")
        kind = _dynamic_type(sample, self.index.mappings.get("date_detection", True))
        spec = _dynamic_mapping(self.index.mappings, path, kind)
        self.new[path] = spec
        for sub, sub_spec in (spec.get("fields") or {}).items():
            self.new[f"{path}.{sub}"] = {**sub_spec, "_multi": True}
        return spec

    def _object(self, obj: dict[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            if not isinstance(key, str) or not key or key.startswith("_") and not prefix:
                raise _bad(f"Field [{key}] is a metadata field and cannot be added inside a document. "
                           f"Use the index API request parameters.", "document_parsing_exception")
            self._value(prefix + key, value)

    def _value(self, path: str, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        spec_probe = self.fields.get(path) or self.new.get(path)
        if spec_probe is not None and spec_probe.get("type") == "dense_vector":
            self._vector(path, spec_probe, value)
            return
        for item in items:
            if item is None:
                continue
            spec = self._spec(path, item)
            if spec is None:
                continue
            t = spec.get("type", "object")
            if isinstance(item, list):
                self._value(path, item)
            elif t in ("object", "nested"):
                if not isinstance(item, dict):
                    raise _bad(f"object mapping for [{path}] tried to parse field [{path}] as object, but found a "
                               f"concrete value", "document_parsing_exception")
                self._object(item, path + ".")
            elif isinstance(item, dict):
                raise _bad(f"failed to parse field [{path}] of type [{t}]. Preview of field's value: '{item}'",
                           "document_parsing_exception")
            else:
                self._leaf(path, spec, item)

    def _leaf(self, path: str, spec: dict[str, Any], item: Any) -> None:
        t = spec.get("type")
        if t in _TEXT:
            toks = analyze(item if isinstance(item, str) else json.dumps(item))
            self.values.setdefault(path, []).extend(toks)
            self.lengths[path] = self.lengths.get(path, 0) + len(toks)
        elif t in ("keyword", "constant_keyword", "wildcard", "flattened"):
            s = item if isinstance(item, str) else json.dumps(item)
            if len(s) <= int(spec.get("ignore_above", 2**31)):
                self.values.setdefault(path, []).append(s)
        elif t in _NUMERIC:
            self.values.setdefault(path, []).append(_number(item, t, path))
        elif t == "boolean":
            self.values.setdefault(path, []).append(_boolean(item, path))
        elif t == "date":
            self.values.setdefault(path, []).append(parse_date(item, path))
        elif t == "dense_vector":
            self._vector(path, spec, item)
        for sub, sub_spec in (spec.get("fields") or {}).items():
            self._leaf(f"{path}.{sub}", sub_spec, item)

    def _vector(self, path: str, spec: dict[str, Any], value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  for x in value):
            raise _bad(f"failed to parse field [{path}] of type [dense_vector]", "document_parsing_exception")
        dims = spec.get("dims")
        if dims is None:  # dims are set by the first document indexed (8.11+)
            spec = self.new[path] = {**spec, "dims": len(value)}
            dims = len(value)
        if len(value) != dims:
            raise _bad(f"The [dense_vector] field [{path}] in doc [document with id '_id'] has a different number "
                       f"of dimensions [{len(value)}] than defined in the mapping [{dims}]",
                       "document_parsing_exception")
        sim = spec.get("similarity", "cosine")
        norm = math.sqrt(sum(x * x for x in value))
        if sim == "cosine" and norm == 0:
            raise _bad(f"The [cosine] similarity does not support vectors with zero magnitude. Preview of "
                       f"invalid vector: {value[:5]}", "document_parsing_exception")
        if sim == "dot_product" and abs(norm - 1.0) > 1e-4:
            raise _bad("The [dot_product] similarity can only be used with unit-length vectors. Preview of "
                       f"invalid vector: {value[:5]}", "document_parsing_exception")
        self.values[path] = [float(x) for x in value]


# ---- queries ------------------------------------------------------------------------------------------

Scorer = Callable[[Doc], Optional[float]]  # None: no match


def _one(q: Any, where: str) -> tuple[str, Any]:
    if not isinstance(q, dict) or len(q) != 1:
        if isinstance(q, dict) and len(q) > 1:
            raise EsError(400, "parsing_exception", f"[{where}] malformed query, expected [END_OBJECT] but found "
                                                    f"[FIELD_NAME]")
        raise EsError(400, "parsing_exception", f"[{where}] query malformed, no start_object after query name")
    (name, body), = q.items()
    return name, body


def _field_body(body: Any, name: str, value_key: str) -> tuple[str, dict[str, Any]]:
    """``{"f": v}`` or ``{"f": {value_key: v, ...}}`` -> (field, options)."""
    if not isinstance(body, dict):
        raise EsError(400, "parsing_exception", f"[{name}] query malformed, no start_object after query name")
    items = {k: v for k, v in body.items() if k not in ("boost", "_name")}
    if len(items) != 1:
        raise EsError(400, "parsing_exception", f"[{name}] query doesn't support multiple fields, found "
                                                f"[{', '.join(items)}]")
    (fname, opts), = items.items()
    if not isinstance(opts, dict):
        opts = {value_key: opts}
    return fname, {**opts, "boost": opts.get("boost", body.get("boost", 1.0))}


class Searcher:
    """Compiles query DSL against one index's searchable view."""

    def __init__(self, index: Index):
        self.index = index
        self.fields = index.fields()

    def _ftype(self, path: str) -> Optional[str]:
        spec = self.fields.get(path)
        return spec.get("type", "object") if spec else None

    def _coerce(self, path: str, value: Any, name: str) -> Any:
        t = self._ftype(path)
        try:
            if t in _NUMERIC:
                return _number(value, t, path)
            if t == "boolean":
                return _boolean(value if not isinstance(value, str) or value in ("true", "false") else value, path)
            if t == "date":
                return parse_date(value, path)
        except EsError:
            raise EsError(400, "query_shard_exception", f"failed to create query: [{name}] cannot parse "
                                                        f"[{value}] for field [{path}] of type [{t}]",
                          index=self.index.name) from None
        if t in _TEXT:
            return value if isinstance(value, str) else json.dumps(value)
        return value if isinstance(value, str) else (json.dumps(value) if isinstance(value, bool) else
                                                     (str(value) if not isinstance(value, float) or not
                                                      value.is_integer() else str(int(value))))

    def compile(self, q: Any) -> Scorer:
        name, body = _one(q, "query")
        fn = getattr(self, "_q_" + name, None)
        if fn is None:
            raise EsError(400, "parsing_exception", f"unknown query [{name}]", line=1, col=1)
        return fn(body)

    def compile_all(self, qs: Any) -> list[Scorer]:
        if qs is None:
            return []
        return [self.compile(q) for q in (qs if isinstance(qs, list) else [qs])]

    # -- leaf queries

    def _q_match_all(self, body: Any) -> Scorer:
        boost = float((body or {}).get("boost", 1.0))
        return lambda d: boost

    def _q_match_none(self, body: Any) -> Scorer:
        return lambda d: None

    def _q_ids(self, body: Any) -> Scorer:
        ids = {str(v) for v in body.get("values", [])}
        boost = float(body.get("boost", 1.0))
        return lambda d: boost if d.id in ids else None

    def _q_exists(self, body: Any) -> Scorer:
        path = body["field"]
        boost = float(body.get("boost", 1.0))
        prefix = path + "."
        return lambda d: boost if any(k == path or k.startswith(prefix) for k, v in d.values.items() if v) else None

    def _term_weight(self, path: str, term: str, boost: float) -> Scorer:
        """BM25 for one term on a text/keyword field, Elasticsearch style."""
        t = self._ftype(path)
        count, avgdl, df = self.index.field_stats(path)
        n = df.get(term, 0)
        idf = math.log(1 + (count - n + 0.5) / (n + 0.5))
        k1, b = self.index.bm25(path)
        norms = t in _TEXT and self.fields.get(path, {}).get("norms", True)

        def score(d: Doc) -> Optional[float]:
            vals = d.values.get(path)
            if not vals:
                return None
            tf = vals.count(term)
            if tf == 0:
                return None
            if norms:
                dl = lucene_length(d.lengths.get(path, len(vals)))
                denom = tf + k1 * (1 - b + b * dl / avgdl) if avgdl else tf + k1
            else:
                denom = tf + k1
            return boost * idf * (k1 + 1) * tf / denom

        return score

    def _q_match(self, body: Any) -> Scorer:
        path, opts = _field_body(body, "match", "query")
        boost = float(opts.get("boost", 1.0))
        text = opts.get("query")
        t = self._ftype(path)
        if t is None:
            return lambda d: None
        if t not in _TEXT:
            if opts.get("lenient"):
                try:
                    return self._q_term({path: {"value": text, "boost": boost}})
                except EsError:
                    return lambda d: None
            return self._q_term({path: {"value": text, "boost": boost}})
        terms = analyze(str(text))
        if not terms:
            return (lambda d: 0.0) if opts.get("zero_terms_query") == "all" else (lambda d: None)
        clauses = [self._term_weight(path, term, boost) for term in terms]
        need = 1
        if str(opts.get("operator", "or")).lower() == "and":
            need = len(clauses)
        elif "minimum_should_match" in opts:
            need = _msm(opts["minimum_should_match"], len(clauses))
        return _disjunction(clauses, need)

    def _q_multi_match(self, body: Any) -> Scorer:
        text = body["query"]
        kind = body.get("type", "best_fields")
        tie = float(body.get("tie_breaker", 0.0 if kind == "best_fields" else 1.0))
        scorers = []
        for f in body.get("fields") or [p for p, s in self.fields.items() if s.get("type") in _TEXT]:
            path, _, boost = f.partition("^")
            opts = {k: body[k] for k in ("operator", "minimum_should_match", "lenient") if k in body}
            scorers.append(self._q_match({path: {"query": text, "boost": float(boost or 1.0), **opts}}))
        outer = float(body.get("boost", 1.0))

        def score(d: Doc) -> Optional[float]:
            got = [s for s in (sc(d) for sc in scorers) if s is not None]
            if not got:
                return None
            best = max(got)
            return outer * (best + tie * (sum(got) - best))

        return score

    def _q_term(self, body: Any) -> Scorer:
        path, opts = _field_body(body, "term", "value")
        boost = float(opts.get("boost", 1.0))
        t = self._ftype(path)
        if t is None:
            return lambda d: None
        value = self._coerce(path, opts.get("value"), "term")
        if t in _TEXT or t == "keyword":
            if opts.get("case_insensitive"):
                low = str(value).lower()
                return lambda d: boost if any(str(v).lower() == low for v in d.values.get(path, ())) else None
            return self._term_weight(path, value, boost)
        return lambda d: boost if value in d.values.get(path, ()) else None

    def _q_terms(self, body: Any) -> Scorer:
        boost = float(body.get("boost", 1.0))
        items = {k: v for k, v in body.items() if k not in ("boost", "_name")}
        if len(items) != 1:
            raise EsError(400, "parsing_exception", "[terms] query does not support multiple fields")
        (path, values), = items.items()
        if not isinstance(values, list):
            raise EsError(400, "parsing_exception", "[terms] query does not support [" + path + "]")
        if self._ftype(path) is None:
            return lambda d: None
        wanted = {self._coerce(path, v, "terms") for v in values}
        return lambda d: boost if any(v in wanted for v in d.values.get(path, ())) else None

    def _q_range(self, body: Any) -> Scorer:
        path, opts = _field_body(body, "range", "gte")
        boost = float(opts.get("boost", 1.0))
        t = self._ftype(path)
        if t is None:
            return lambda d: None
        bounds = []
        for op in ("gt", "gte", "lt", "lte", "from", "to"):
            if opts.get(op) is not None:
                real = {"from": "gte", "to": "lte"}.get(op, op)
                bounds.append((real, self._coerce(path, opts[op], "range")))

        def ok(v: Any) -> bool:
            for op, bound in bounds:
                if op == "gt" and not v > bound or op == "gte" and not v >= bound \
                        or op == "lt" and not v < bound or op == "lte" and not v <= bound:
                    return False
            return True

        def score(d: Doc) -> Optional[float]:
            vals = d.values.get(path, ())
            if t == "keyword":  # byte order of UTF-8 = code point order: Python's str order
                return boost if any(ok(v) for v in vals) else None
            return boost if any(ok(v) for v in vals if not isinstance(v, str)) else None

        return score

    # -- compound queries

    def _q_bool(self, body: Any) -> Scorer:
        must = self.compile_all(body.get("must"))
        filt = self.compile_all(body.get("filter"))
        should = self.compile_all(body.get("should"))
        must_not = self.compile_all(body.get("must_not"))
        boost = float(body.get("boost", 1.0))
        if "minimum_should_match" in body:
            need = _msm(body["minimum_should_match"], len(should))
        else:
            need = 1 if should and not must and not filt else 0

        def score(d: Doc) -> Optional[float]:
            total = 0.0
            for q in must:
                s = q(d)
                if s is None:
                    return None
                total += s
            for q in filt:
                if q(d) is None:
                    return None
            for q in must_not:
                if q(d) is not None:
                    return None
            hits = 0
            for q in should:
                s = q(d)
                if s is not None:
                    hits += 1
                    total += s
            if hits < need:
                return None
            return total * boost

        return score

    def _q_constant_score(self, body: Any) -> Scorer:
        inner = self.compile(body["filter"])
        boost = float(body.get("boost", 1.0))
        return lambda d: boost if inner(d) is not None else None

    # -- kNN

    def knn(self, spec: dict[str, Any], size: int) -> list[tuple[Doc, float]]:
        path = spec.get("field")
        fspec = self.fields.get(path or "")
        if "query_vector_builder" in spec:
            raise _bad("[query_vector_builder] needs an inference model; this test server has none")
        if fspec is None or fspec.get("type") != "dense_vector":
            raise _bad(f"failed to create query: field [{path}] does not exist in the mapping" if fspec is None
                       else f"[knn] queries are only supported on [dense_vector] fields, not [{path}]")
        if fspec.get("index") is False:
            raise _bad(f"to perform knn search on field [{path}], its mapping must have [index] set to [true]")
        qv = spec.get("query_vector")
        if not isinstance(qv, list):
            raise _bad("[knn] requires a query vector or a query vector builder")
        dims = fspec.get("dims")
        if dims is not None and len(qv) != dims:
            raise _bad(f"The query vector has a different number of dimensions [{len(qv)}] than the document "
                       f"vectors [{dims}].")
        k = int(spec.get("k", size))
        num_candidates = int(spec.get("num_candidates", min(max(int(1.5 * k), k), MAX_NUM_CANDIDATES)))
        if k < 1:
            raise _bad("[k] must be greater than 0")
        if num_candidates < k:
            raise _bad("[num_candidates] cannot be less than [k]")
        if num_candidates > MAX_NUM_CANDIDATES:
            raise _bad(f"[num_candidates] cannot exceed [{MAX_NUM_CANDIDATES}]")
        sim = fspec.get("similarity", "cosine")
        filters = self.compile_all(spec.get("filter"))
        boost = float(spec.get("boost", 1.0))
        threshold = spec.get("similarity")
        qnorm = math.sqrt(sum(x * x for x in qv))
        if sim == "cosine" and qnorm == 0:
            raise _bad("The [cosine] similarity does not support vectors with zero magnitude.")
        out = []
        for d in self.index.view().values():
            v = d.values.get(path)
            if not v or any(f(d) is None for f in filters):
                continue
            raw, score = _similarity(sim, qv, qnorm, v)
            if threshold is not None and (raw > float(threshold) if sim == "l2_norm" else raw < float(threshold)):
                continue
            out.append((d, score * boost))
        out.sort(key=lambda ds: (-ds[1], ds[0].seq_no))
        return out[:k]


def _similarity(sim: str, q: list[float], qnorm: float, v: list[float]) -> tuple[float, float]:
    """(raw similarity, Elasticsearch _score)."""
    if sim == "l2_norm":
        d2 = sum((a - b) ** 2 for a, b in zip(q, v))
        return math.sqrt(d2), 1.0 / (1.0 + d2)
    dot = sum(a * b for a, b in zip(q, v))
    if sim == "cosine":
        vnorm = math.sqrt(sum(x * x for x in v))
        cos = dot / (qnorm * vnorm)
        return cos, (1.0 + cos) / 2.0
    if sim == "dot_product":
        return dot, (1.0 + dot) / 2.0
    return dot, (1.0 / (1.0 - dot) if dot < 0 else dot + 1.0)  # max_inner_product


def _msm(spec: Any, n: int) -> int:
    s = str(spec).strip()
    if s.endswith("%"):
        pct = int(s[:-1])
        k = int(n * abs(pct) / 100)
        return k if pct >= 0 else n - k
    k = int(s)
    return k if k >= 0 else max(0, n + k)


def _disjunction(clauses: list[Scorer], need: int) -> Scorer:
    def score(d: Doc) -> Optional[float]:
        total, hits = 0.0, 0
        for c in clauses:
            s = c(d)
            if s is not None:
                total += s
                hits += 1
        return total if hits >= max(need, 1) else None

    return score


# ---- _source filtering ------------------------------------------------------------------------------


def _split(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [p for p in v.split(",") if p]
    return list(v)


def filter_source(src: dict[str, Any], includes: list[str], excludes: list[str], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in src.items():
        path = prefix + key
        if any(fnmatch.fnmatchcase(path, e) or path.startswith(e + ".") for e in excludes):
            continue
        whole = not includes or any(fnmatch.fnmatchcase(path, i) or path.startswith(i + ".") for i in includes)
        if whole and not (isinstance(value, dict) and excludes):
            out[key] = value
        elif isinstance(value, dict) and (whole or any(i.startswith(path + ".") or "*" in i for i in includes)):
            sub = filter_source(value, [] if whole else includes, excludes, path + ".")
            if sub or whole:
                out[key] = sub
    return out


# ---- the server -----------------------------------------------------------------------------------------


_INDEX_NAME = re.compile(r"^[^A-Z\\/*?\"<>| ,#:_\-+][^A-Z\\/*?\"<>| ,#:]*$")


class ElasticsearchServer(WireServer):
    """Elasticsearch's REST API in-process; see the module doc. ``license``: basic | trial | enterprise."""

    provider = "elasticsearch"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, license: str = "trial",
                 version: str = "9.1.5", api_key: Optional[str] = None, **options: Any):
        super().__init__(host, port, **options)
        if license not in ("basic", "trial", "enterprise", "platinum", "gold"):
            raise ValueError(f"unknown license {license!r}")
        self.license = license
        self.version = version
        self.api_key = api_key
        self.indices: dict[str, Index] = {}
        self.aliases: dict[str, dict[str, dict[str, Any]]] = {}  # alias -> {index: properties}
        self._state = threading.RLock()
        self._seq = 0

    # ---- lifecycle: HEAD requests -----------------------------------------------------------------

    def start(self) -> "ElasticsearchServer":
        started = self._httpd is None
        super().start()
        if started and self._httpd is not None:
            handler = self._httpd.RequestHandlerClass
            handler.do_HEAD = handler.do_GET  # type: ignore[attr-defined]  # the wire base has no HEAD
        return self

    def clear(self) -> None:
        """Drop every index and alias (the fixture does this between tests)."""
        with self._state:
            self.indices.clear()
            self.aliases.clear()

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--license", default="trial", choices=["basic", "trial", "enterprise"])
        parser.add_argument("--es-version", default="9.1.5", help="the version number the server reports")
        parser.add_argument("--api-key", default=None, help="require 'Authorization: ApiKey <this>'")

    @classmethod
    def cli_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"license": args.license, "version": args.es_version, "api_key": args.api_key}

    def banner(self) -> str:
        return f"Elasticsearch {self.version} test server ({self.license} licence) on {self.url}"

    # ---- HTTP ----------------------------------------------------------------------------------------

    def _media(self, req: RecordedRequest) -> str:
        """Check the compatible-with media types; return the response Content-Type."""
        major = int(self.version.split(".")[0])
        versions = {}
        for header in ("Accept", "Content-Type"):
            value = req.headers.get(header) or ""
            m = re.search(r"compatible-with\s*=\s*(\d+)", value)
            if header == "Content-Type" and not req.body:
                continue
            versions[header] = int(m.group(1)) if m else None
        wanted = {v for v in versions.values() if v is not None}
        if wanted:
            accept = req.headers.get("Accept")
            ctype = req.headers.get("Content-Type")
            problem = (len(wanted) > 1 or None in versions.values() or not wanted <= {major, major - 1})
            if problem:
                err = EsError(400, "media_type_header_exception",
                              "Invalid media-type value on headers [Accept, Content-Type]",
                              caused_by={"type": "status_exception",
                                         "reason": "A compatible version is required on both Content-Type and "
                                                   "Accept headers if either one has requested a compatible "
                                                   f"version and the compatible versions must match. "
                                                   f"Accept={accept}, Content-Type={ctype}"})
                raise err
            return f"application/vnd.elasticsearch+json;compatible-with={wanted.pop()}"
        return JSON_TYPE

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        headers = {"X-Elastic-Product": "Elasticsearch"}
        if request.headers.get("X-Opaque-Id"):
            headers["X-Opaque-Id"] = request.headers["X-Opaque-Id"]
        ctype = JSON_TYPE
        try:
            ctype = self._media(request)
            self._auth(request)
            with self._state:
                status, body = self._route(request)
        except EsError as e:
            status, body = e.status, e.body()
        if request.method == "HEAD":
            respond.bytes(status, b"", ctype, headers)
        else:
            respond.bytes(status, json.dumps(body, separators=(",", ":")).encode(), ctype, headers)

    def _auth(self, req: RecordedRequest) -> None:
        if self.api_key is None:
            return
        if req.headers.get("Authorization") != f"ApiKey {self.api_key}":
            raise EsError(401, "security_exception", "missing authentication credentials for REST request [" +
                          req.path + "]", header={"WWW-Authenticate": ["ApiKey", 'Basic realm="security"']})

    def _json(self, req: RecordedRequest) -> Any:
        if not req.body:
            return {}
        try:
            return json.loads(req.body)
        except ValueError as e:
            raise EsError(400, "x_content_parse_exception", f"[1:1] Unexpected character: {e}") from None

    def _route(self, req: RecordedRequest) -> tuple[int, Any]:
        parts = [p for p in req.path.split("/") if p]
        m, q = req.method, req.query
        if not parts:
            if m in ("GET", "HEAD"):
                return 200, self._info()
        elif parts[0] == "_license" and m == "GET":
            return 200, {"license": {"status": "active", "uid": "mesh-test", "type": self.license,
                                     "issued_to": "langchain-mesh", "issuer": "test server"}}
        elif parts[0] == "_bulk" and m in ("POST", "PUT"):
            return self._bulk(req, None)
        elif parts[0] == "_aliases" and m == "POST":
            return self._update_aliases(self._json(req))
        elif parts[0] == "_alias" and m in ("GET", "HEAD"):
            return self._get_alias(None, parts[1] if len(parts) > 1 else None)
        elif parts[0] == "_reindex" and m == "POST":
            return self._reindex(self._json(req), q)
        elif parts[0] in ("_search", "_count", "_mget", "_refresh"):
            return self._route_index(req, "_all", parts[0:])
        elif parts[0].startswith("_"):
            pass
        else:
            return self._route_index(req, parts[0], parts[1:])
        raise EsError(400, "illegal_argument_exception", f"no handler found for uri [{req.path}] and method [{m}]")

    def _route_index(self, req: RecordedRequest, target: str, rest: list[str]) -> tuple[int, Any]:
        m, q = req.method, req.query
        if not rest:
            if m == "HEAD":
                self._resolve(target)
                return 200, None
            if m == "PUT":
                return self._create_index(target, self._json(req))
            if m == "DELETE":
                return self._delete_index(target)
            if m == "GET":
                return 200, {n: self._describe(self.indices[n]) for n in self._resolve(target)}
        op = rest[0]
        if op == "_search" and m in ("GET", "POST"):
            return 200, self._search(target, self._json(req), q)
        if op == "_count" and m in ("GET", "POST"):
            return 200, self._count(target, self._json(req))
        if op == "_bulk" and m in ("POST", "PUT"):
            return self._bulk(req, target)
        if op == "_doc" and len(rest) == 2:
            return self._doc(m, target, rest[1], req)
        if op == "_doc" and len(rest) == 1 and m == "POST":
            return self._doc("PUT", target, None, req)
        if op == "_mget" and m in ("GET", "POST"):
            return 200, self._mget(target, self._json(req), q)
        if op == "_refresh" and m in ("GET", "POST"):
            names = self._resolve(target)
            for n in names:
                self.indices[n].refresh()
            return 200, {"_shards": {"total": len(names), "successful": len(names), "failed": 0}}
        if op == "_delete_by_query" and m == "POST":
            return 200, self._delete_by_query(target, self._json(req), q)
        if op == "_mapping" and m == "GET":
            return 200, {n: {"mappings": self.indices[n].mappings} for n in self._resolve(target)}
        if op == "_mapping" and m in ("PUT", "POST"):
            return self._put_mapping(target, self._json(req))
        if op == "_alias" and m in ("GET", "HEAD"):
            return self._get_alias(target, rest[1] if len(rest) > 1 else None)
        if op in ("_alias", "_aliases") and len(rest) == 2 and m in ("PUT", "POST", "DELETE"):
            action = "remove" if m == "DELETE" else "add"
            return self._update_aliases({"actions": [{action: {"index": target, "alias": rest[1],
                                                               **(self._json(req) if m != "DELETE" else {})}}]})
        raise EsError(400, "illegal_argument_exception",
                      f"no handler found for uri [{req.path}] and method [{m}]")

    def _info(self) -> dict[str, Any]:
        return {"name": "mesh-es-test", "cluster_name": "langchain-mesh-test", "cluster_uuid": "mesh-test-cluster",
                "version": {"number": self.version, "build_flavor": "default", "build_type": "tar",
                            "build_hash": "0" * 40, "build_date": "2025-01-01T00:00:00.000Z", "build_snapshot": False,
                            "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "8.19.0",
                            "minimum_index_compatibility_version": "8.0.0"},
                "tagline": "You Know, for Search"}

    # ---- names ---------------------------------------------------------------------------------------

    def _resolve(self, expr: str, *, ignore_missing: bool = False) -> list[str]:
        """Concrete index names for ``a,b*,alias``; a missing plain name is a 404."""
        out: list[str] = []
        for part in expr.split(","):
            if part in ("_all", "*"):
                out.extend(sorted(self.indices))
            elif any(c in part for c in "*?"):
                out.extend(n for n in sorted(self.indices) if fnmatch.fnmatchcase(n, part))
                for a in sorted(self.aliases):
                    if fnmatch.fnmatchcase(a, part):
                        out.extend(sorted(self.aliases[a]))
            elif part in self.indices:
                out.append(part)
            elif part in self.aliases:
                out.extend(sorted(self.aliases[part]))
            elif not ignore_missing:
                raise _index_missing(part)
        return list(dict.fromkeys(out))

    def _write_target(self, name: str, auto_create: bool = True) -> Index:
        if name in self.indices:
            return self.indices[name]
        if name in self.aliases:
            members = self.aliases[name]
            writers = [i for i, p in members.items() if p.get("is_write_index")]
            if len(members) == 1 and not any(p.get("is_write_index") is False for p in members.values()):
                writers = list(members)
            if len(writers) != 1:
                raise _bad(f"no write index is defined for alias [{name}]. The write index may be explicitly "
                           f"disabled using is_write_index=false or the alias points to multiple indices without "
                           f"one being designated as a write index")
            return self.indices[writers[0]]
        if not auto_create:
            raise _index_missing(name)
        self._create_index(name, {})
        return self.indices[name]

    # ---- indices -------------------------------------------------------------------------------------

    def _create_index(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        if name in self.indices:
            raise EsError(400, "resource_already_exists_exception", f"index [{name}/{self.indices[name].uuid}] "
                                                                    f"already exists", index=name)
        if name in self.aliases:
            raise _bad(f"Invalid index name [{name}], already exists as alias", "invalid_index_name_exception")
        if not _INDEX_NAME.match(name) or name in (".", ".."):
            raise EsError(400, "invalid_index_name_exception",
                          f"Invalid index name [{name}], must be lowercase and must not start with '_', '-', or "
                          f"'+' or contain '\\', '/', '*', '?', '\"', '<', '>', '|', ' ', ',', '#', ':'",
                          index=name)
        unknown = set(body) - {"mappings", "settings", "aliases"}
        if unknown:
            raise EsError(400, "parse_exception", f"unknown key [{sorted(unknown)[0]}] for create index")
        mappings = json.loads(json.dumps(body.get("mappings") or {}))
        mappings.setdefault("properties", {})
        for path, spec in _flat_fields(mappings["properties"]).items():
            _check_field(path, spec)
        settings = _normalise_settings(body.get("settings") or {})
        self.indices[name] = Index(name, mappings, settings)
        for alias, props in (body.get("aliases") or {}).items():
            self.aliases.setdefault(alias, {})[name] = dict(props or {})
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def _delete_index(self, expr: str) -> tuple[int, Any]:
        for part in expr.split(","):
            if part in self.aliases and part not in self.indices:
                raise _bad(f"The provided expression [{part}] matches an alias, specify the corresponding concrete "
                           f"indices instead.")
        for name in self._resolve(expr):
            del self.indices[name]
            for alias in list(self.aliases):
                self.aliases[alias].pop(name, None)
                if not self.aliases[alias]:
                    del self.aliases[alias]
        return 200, {"acknowledged": True}

    def _describe(self, ix: Index) -> dict[str, Any]:
        aliases = {a: p for a, members in self.aliases.items() for n, p in members.items() if n == ix.name}
        settings = {"index": {"number_of_shards": "1", "number_of_replicas": "1", "uuid": ix.uuid,
                              "creation_date": str(int(ix.created * 1000)), "provided_name": ix.name,
                              **{k: v for k, v in ix.settings.items()}}}
        return {"aliases": aliases, "mappings": ix.mappings, "settings": settings}

    def _put_mapping(self, expr: str, body: dict[str, Any]) -> tuple[int, Any]:
        for name in self._resolve(expr):
            ix = self.indices[name]
            props = body.get("properties") or {}
            for path, spec in _flat_fields(props).items():
                _check_field(path, spec)
                old = ix.fields().get(path)
                if old is not None and old.get("type", "object") != spec.get("type", "object"):
                    raise _bad(f"mapper [{path}] cannot be changed from type [{old.get('type')}] to "
                               f"[{spec.get('type')}]")
            merged = {**ix.mappings.get("properties", {})}
            for path, spec in _flat_fields(props).items():
                if spec.get("type") not in ("object",) and not spec.get("_multi"):
                    _set_path(merged, path, spec)
            ix.mappings["properties"] = merged
            for key in ("_meta", "dynamic", "dynamic_templates", "date_detection"):
                if key in body:
                    ix.mappings[key] = body[key]
        return 200, {"acknowledged": True}

    # ---- documents -----------------------------------------------------------------------------------

    def _put(self, ix: Index, doc_id: Optional[str], source: Any, op: str) -> tuple[int, dict[str, Any]]:
        """Index one document; returns (status, item) as a bulk item or the index API answers."""
        doc_id = doc_id if doc_id is not None else base64.urlsafe_b64encode(uuid.uuid4().bytes)[:20].decode()
        if len(doc_id.encode()) > 512:
            raise _bad(f"id [{doc_id[:10]}...] is too long, must be no longer than 512 bytes but was: "
                       f"{len(doc_id.encode())}", "illegal_argument_exception")
        old = ix.docs.get(doc_id)
        if op == "create" and old is not None:
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, document already exists (current version [{old.version}])",
                          index_uuid=ix.uuid, shard="0", index=ix.name)
        parser = _Parser(ix)
        try:
            values, lengths, new = parser.parse(source)
        except EsError as e:
            e.reason = e.reason.replace("document with id '_id'", f"document with id '{doc_id}'")
            raise
        for path, spec in new.items():
            if not spec.get("_multi"):
                _set_path(ix.mappings.setdefault("properties", {}), path, spec)
        self._seq += 1
        version = old.version + 1 if old else 1
        ix.docs[doc_id] = Doc(doc_id, source, self._seq, version, values, lengths)
        ix.dirty_since = ix.dirty_since or time.time()
        result = "updated" if old else "created"
        return (200 if old else 201), {"_index": ix.name, "_id": doc_id, "_version": version, "result": result,
                                       "_shards": {"total": 2, "successful": 1, "failed": 0},
                                       "_seq_no": self._seq, "_primary_term": 1}

    def _remove(self, ix: Index, doc_id: str) -> tuple[int, dict[str, Any]]:
        old = ix.docs.pop(doc_id, None)
        self._seq += 1
        if old is not None:
            ix.dirty_since = ix.dirty_since or time.time()
        return (200 if old else 404), {"_index": ix.name, "_id": doc_id, "_version": (old.version + 1) if old else 1,
                                       "result": "deleted" if old else "not_found",
                                       "_shards": {"total": 2, "successful": 1, "failed": 0},
                                       "_seq_no": self._seq, "_primary_term": 1}

    def _refresh_param(self, q: dict[str, str], touched: Iterable[Index]) -> None:
        if q.get("refresh") in ("", "true", "wait_for"):
            for ix in touched:
                ix.refresh()

    def _bulk(self, req: RecordedRequest, default_index: Optional[str]) -> tuple[int, Any]:
        started = time.time()
        text = req.body.decode("utf-8")
        if text and not text.endswith("\n"):
            raise _bad("The bulk request must be terminated by a newline [\\n]")
        lines = [ln for ln in text.split("\n") if ln.strip()]
        ops: list[tuple[str, dict[str, Any], Any]] = []
        i = 0
        while i < len(lines):
            try:
                action = json.loads(lines[i])
            except ValueError:
                raise EsError(400, "x_content_parse_exception", f"[{i + 1}:1] Malformed action/metadata line") from None
            if not isinstance(action, dict) or len(action) != 1 or \
                    next(iter(action)) not in ("index", "create", "update", "delete"):
                found = next(iter(action)) if isinstance(action, dict) and action else ""
                raise _bad(f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, index, "
                           f"update] but found [{found}]")
            (kind, meta), = action.items()
            source = None
            if kind != "delete":
                i += 1
                if i >= len(lines):
                    raise _bad("Validation Failed: 1: no requests added;" if not ops else
                               f"Malformed action/metadata line [{i}], expected a document")
                try:
                    source = json.loads(lines[i])
                except ValueError as e:
                    source = e  # reported on the item, as ES reports a bad document
            ops.append((kind, meta or {}, source))
            i += 1
        if not ops:
            raise _bad("Validation Failed: 1: no requests added;", "action_request_validation_exception")
        items, touched = [], {}
        for kind, meta, source in ops:
            name = meta.get("_index") or default_index
            doc_id = meta.get("_id")
            doc_id = str(doc_id) if doc_id is not None else None
            try:
                if name is None:
                    raise _bad("index is missing", "action_request_validation_exception")
                ix = self._write_target(name, auto_create=kind in ("index", "create") or
                                        (kind == "update" and isinstance(source, dict) and
                                         bool(source.get("doc_as_upsert") or source.get("upsert"))))
                touched[ix.name] = ix
                if isinstance(source, Exception):
                    raise EsError(400, "document_parsing_exception", f"[1:1] failed to parse: {source}")
                if kind == "delete":
                    if doc_id is None:
                        raise _bad("Validation Failed: 1: id is missing;", "action_request_validation_exception")
                    status, item = self._remove(ix, doc_id)
                elif kind == "update":
                    status, item = self._update(ix, doc_id, source)
                else:
                    status, item = self._put(ix, doc_id, source, kind)
                items.append({kind: {**item, "status": status}})
            except EsError as e:
                items.append({kind: {"_index": name, "_id": doc_id, "status": e.status, "error": e.cause()}})
        self._refresh_param(req.query, touched.values())
        errors = any("error" in next(iter(it.values())) for it in items)
        return 200, {"errors": errors, "took": int((time.time() - started) * 1000), "items": items}

    def _update(self, ix: Index, doc_id: Optional[str], body: Any) -> tuple[int, dict[str, Any]]:
        if doc_id is None:
            raise _bad("Validation Failed: 1: id is missing;", "action_request_validation_exception")
        if not isinstance(body, dict) or not ("doc" in body or "upsert" in body):
            raise _bad("Validation Failed: 1: script or doc is missing;", "action_request_validation_exception")
        old = ix.docs.get(doc_id)
        if old is None:
            if body.get("doc_as_upsert"):
                return self._put(ix, doc_id, body["doc"], "index")
            if "upsert" in body:
                return self._put(ix, doc_id, body["upsert"], "index")
            raise EsError(404, "document_missing_exception", f"[{doc_id}]: document missing",
                          index_uuid=ix.uuid, shard="0", index=ix.name)
        merged = _deep_merge(json.loads(json.dumps(old.source)), body.get("doc") or {})
        if merged == old.source and body.get("detect_noop", True):
            return 200, {"_index": ix.name, "_id": doc_id, "_version": old.version, "result": "noop",
                         "_shards": {"total": 0, "successful": 0, "failed": 0}, "_seq_no": old.seq_no,
                         "_primary_term": 1}
        return self._put(ix, doc_id, merged, "index")

    def _doc(self, method: str, target: str, doc_id: Optional[str], req: RecordedRequest) -> tuple[int, Any]:
        if method in ("GET", "HEAD"):
            names = self._resolve(target)
            for n in names:
                d = self.indices[n].docs.get(doc_id or "")
                if d is not None:
                    src = self._source_of(d, req.query.get("_source_includes"), req.query.get("_source_excludes"),
                                          req.query.get("_source"))
                    return 200, {"_index": n, "_id": d.id, "_version": d.version, "_seq_no": d.seq_no,
                                 "_primary_term": 1, "found": True, **({"_source": src} if src is not None else {})}
            return 404, {"_index": names[0] if names else target, "_id": doc_id, "found": False}
        ix = self._write_target(target, auto_create=method in ("PUT", "POST"))
        if method == "DELETE":
            status, item = self._remove(ix, doc_id or "")
        else:
            op = req.query.get("op_type", "index")
            status, item = self._put(ix, doc_id, self._json(req), op)
        self._refresh_param(req.query, [ix])
        return status, item

    def _mget(self, target: str, body: dict[str, Any], q: dict[str, str]) -> dict[str, Any]:
        specs = [{"_id": i} for i in body.get("ids", [])] + list(body.get("docs", []))
        out = []
        for spec in specs:
            index = spec.get("_index") or target
            doc_id = str(spec.get("_id"))
            try:
                names = self._resolve(index)
            except EsError as e:
                out.append({"_index": index, "_id": doc_id, "error": e.cause()})
                continue
            found = None
            for n in names:
                d = self.indices[n].docs.get(doc_id)
                if d is not None:
                    found = (n, d)
                    break
            if found is None:
                out.append({"_index": names[0] if names else index, "_id": doc_id, "found": False})
                continue
            n, d = found
            src = self._source_of(d, spec.get("_source_includes", q.get("_source_includes")),
                                  spec.get("_source_excludes", q.get("_source_excludes")),
                                  spec.get("_source", q.get("_source")))
            out.append({"_index": n, "_id": d.id, "_version": d.version, "_seq_no": d.seq_no, "_primary_term": 1,
                        "found": True, **({"_source": src} if src is not None else {})})
        return {"docs": out}

    def _source_of(self, d: Doc, includes: Any, excludes: Any, source: Any) -> Optional[dict[str, Any]]:
        if source in (False, "false"):
            return None
        inc, exc = _split(includes), _split(excludes)
        if isinstance(source, dict):
            inc += _split(source.get("includes") or source.get("include"))
            exc += _split(source.get("excludes") or source.get("exclude"))
        elif isinstance(source, (list, str)) and source not in ("true", True, ""):
            inc += _split(source)
        if not inc and not exc:
            return d.source
        return filter_source(d.source, inc, exc)

    # ---- search ----------------------------------------------------------------------------------------

    _SEARCH_KEYS = {"query", "knn", "retriever", "size", "from", "_source", "min_score", "track_total_hits",
                    "timeout", "explain", "version", "seq_no_primary_term", "stored_fields", "rank"}

    def _search(self, target: str, body: dict[str, Any], q: dict[str, str]) -> dict[str, Any]:
        started = time.time()
        unknown = set(body) - self._SEARCH_KEYS
        if unknown:
            raise EsError(400, "parsing_exception", f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].")
        if "rank" in body:
            raise _bad("[rank] is not supported by this test server; use the [rrf] retriever")
        size = int(q.get("size", body.get("size", 10)))
        frm = int(q.get("from", body.get("from", 0)))
        if size < 0 or frm < 0:
            raise _bad("[size] parameter cannot be negative" if size < 0 else "[from] parameter cannot be negative")
        if size + frm > MAX_RESULT_WINDOW:
            raise _bad(f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] "
                       f"but was [{size + frm}].")
        names = self._resolve(target)
        if "retriever" in body:
            for key in ("query", "knn"):
                if key in body:
                    raise _bad(f"cannot specify [retriever] and [{key}]")
            hits = self._retrieve(names, body["retriever"], max(size + frm, 1), top=size + frm)
        else:
            hits = self._query_and_knn(names, body.get("query"), body.get("knn"), size + frm)
        if "min_score" in body:
            hits = [h for h in hits if h[2] >= float(body["min_score"])]
        total = len(hits)
        page = hits[frm:frm + size]
        source_spec = body.get("_source", q.get("_source"))
        out_hits = []
        for name, d, score in page:
            hit: dict[str, Any] = {"_index": name, "_id": d.id, "_score": score}
            src = self._source_of(d, q.get("_source_includes"), q.get("_source_excludes"), source_spec)
            if src is not None:
                hit["_source"] = src
            out_hits.append(hit)
        return {"took": int((time.time() - started) * 1000), "timed_out": False,
                "_shards": {"total": len(names), "successful": len(names), "skipped": 0, "failed": 0},
                "hits": {"total": {"value": min(total, 10_000), "relation": "eq" if total <= 10_000 else "gte"},
                         "max_score": max((h[2] for h in page), default=None), "hits": out_hits}}

    def _query_hits(self, names: list[str], query: Any, extra_filter: Any = None) -> list[tuple[str, Doc, float]]:
        out = []
        for n in names:
            ix = self.indices[n]
            s = Searcher(ix)
            scorer = s.compile(query if query is not None else {"match_all": {}})
            filters = s.compile_all(extra_filter)
            for d in ix.view().values():
                score = scorer(d)
                if score is not None and all(f(d) is not None for f in filters):
                    out.append((n, d, score))
        return _ranked(out)

    def _knn_hits(self, names: list[str], spec: dict[str, Any], size: int,
                  extra_filter: Any = None) -> list[tuple[str, Doc, float]]:
        if extra_filter:
            spec = {**spec, "filter": _as_list(spec.get("filter")) + _as_list(extra_filter)}
        out = []
        for n in names:
            out.extend((n, d, s) for d, s in Searcher(self.indices[n]).knn(spec, size))
        return _ranked(out)[:int(spec.get("k", size))]

    def _query_and_knn(self, names: list[str], query: Any, knn: Any, size: int) -> list[tuple[str, Doc, float]]:
        if knn is None:
            return self._query_hits(names, query)
        scores: dict[tuple[str, str], tuple[str, Doc, float]] = {}
        for spec in (knn if isinstance(knn, list) else [knn]):
            for n, d, s in self._knn_hits(names, spec, max(size, 1)):
                key = (n, d.id)
                prev = scores.get(key)
                scores[key] = (n, d, s + (prev[2] if prev else 0.0))
        if query is not None:  # a query beside knn: a disjunction, scores summed
            for n, d, s in self._query_hits(names, query):
                key = (n, d.id)
                prev = scores.get(key)
                scores[key] = (n, d, s + (prev[2] if prev else 0.0))
        return _ranked(list(scores.values()))

    def _retrieve(self, names: list[str], retriever: Any, window: int, top: int,
                  extra_filter: Any = None) -> list[tuple[str, Doc, float]]:
        kind, spec = _one(retriever, "retriever")
        if kind == "standard":
            query = spec.get("query")
            hits = self._query_hits(names, query, _as_list(spec.get("filter")) + _as_list(extra_filter))
            if "min_score" in spec:
                hits = [h for h in hits if h[2] >= float(spec["min_score"])]
            return hits
        if kind == "knn":
            return self._knn_hits(names, spec, window, extra_filter)
        if kind == "rrf":
            return self._rrf(names, spec, top, extra_filter)
        raise EsError(400, "x_content_parse_exception", f"[1:14] unknown retriever [{kind}]")

    def _rrf(self, names: list[str], spec: dict[str, Any], top: int, extra_filter: Any) -> list[tuple[str, Doc, float]]:
        if self.license not in RRF_LICENSES:
            feature = "Reciprocal Rank Fusion (RRF)"
            raise EsError(403, "security_exception", f"current license is non-compliant for [{feature}]",
                          **{"license.expired.feature": feature})
        rank_constant = int(spec.get("rank_constant", 60))
        window = int(spec.get("rank_window_size", 10))
        if rank_constant < 1:
            raise _bad("[rank_constant] must be greater or equal to [1] for [rrf]")
        if window < top:
            raise _bad(f"[rank_window_size] must be greater than or equal to [size], got [{window}] < [{top}]")
        children = spec.get("retrievers") or []
        if len(children) < 2:
            raise _bad("[rrf] requires at least 2 retrievers")
        filt = _as_list(spec.get("filter")) + _as_list(extra_filter)
        fused: dict[tuple[str, str], list[Any]] = {}
        for child in children:
            weight = 1.0
            if isinstance(child, dict) and "retriever" in child:  # {"retriever": {...}, "weight": w} (8.19/9.1)
                weight = float(child.get("weight", 1.0))
                child = child["retriever"]
            ranking = self._retrieve(names, child, window, window, filt or None)[:window]
            for rank, (n, d, _) in enumerate(ranking, start=1):
                entry = fused.setdefault((n, d.id), [n, d, 0.0])
                entry[2] += weight / (rank_constant + rank)
        # ties keep first-seen order (first retriever first), like knowledge_banks.fusion
        return [tuple(e) for e in sorted(fused.values(), key=lambda e: -e[2])]  # type: ignore[misc]

    def _count(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        names = self._resolve(target)
        return {"count": len(self._query_hits(names, body.get("query"))),
                "_shards": {"total": len(names), "successful": len(names), "skipped": 0, "failed": 0}}

    def _delete_by_query(self, target: str, body: dict[str, Any], q: dict[str, str]) -> dict[str, Any]:
        started = time.time()
        if "query" not in body:
            raise _bad("Validation Failed: 1: query is missing;", "action_request_validation_exception")
        names = self._resolve(target)
        hits = self._query_hits(names, body["query"])  # the refreshed view, as a scroll sees it
        deleted = 0
        for n, d, _ in hits:
            ix = self.indices[n]
            if ix.docs.get(d.id) is d:
                self._remove(ix, d.id)
                deleted += 1
        self._refresh_param(q, [self.indices[n] for n in names])
        return {"took": int((time.time() - started) * 1000), "timed_out": False, "total": len(hits),
                "deleted": deleted, "batches": 1 if hits else 0, "version_conflicts": len(hits) - deleted,
                "noops": 0, "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}

    def _reindex(self, body: dict[str, Any], q: dict[str, str]) -> tuple[int, Any]:
        started = time.time()
        src, dest = body.get("source") or {}, body.get("dest") or {}
        if not src.get("index") or not dest.get("index"):
            raise _bad("Validation Failed: 1: use _all if you really want to copy from all existing indexes;" if not
                       src.get("index") else "Validation Failed: 1: index must be specified;",
                       "action_request_validation_exception")
        names = self._resolve(",".join(_as_list(src["index"])))
        hits = self._query_hits(names, src.get("query"))
        target = self._write_target(dest["index"])
        created = updated = 0
        failures = []
        for _, d, _ in hits:
            try:
                status, _ = self._put(target, d.id, json.loads(json.dumps(d.source)), dest.get("op_type", "index"))
                created += status == 201
                updated += status == 200
            except EsError as e:
                failures.append({"index": target.name, "id": d.id, "cause": e.cause(), "status": e.status})
        self._refresh_param(q, [target])
        return 200, {"took": int((time.time() - started) * 1000), "timed_out": False, "total": len(hits),
                     "updated": updated, "created": created, "deleted": 0, "batches": 1 if hits else 0,
                     "version_conflicts": 0, "noops": 0, "retries": {"bulk": 0, "search": 0},
                     "throttled_millis": 0, "requests_per_second": -1.0, "throttled_until_millis": 0,
                     "failures": failures}

    # ---- aliases ---------------------------------------------------------------------------------------

    def _update_aliases(self, body: dict[str, Any]) -> tuple[int, Any]:
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions:
            raise _bad("Validation Failed: 1: no alias actions specified;", "action_request_validation_exception")
        # validate everything against a copy, then swap it in: all actions apply or none does
        aliases = {a: dict(m) for a, m in self.aliases.items()}
        indices = set(self.indices)
        for action in actions:
            kind, spec = _one(action, "actions")
            targets = _as_list(spec.get("index")) + _as_list(spec.get("indices"))
            if kind == "remove_index":
                for t in targets:
                    for name in self._resolve(t):
                        indices.discard(name)
                        for members in aliases.values():
                            members.pop(name, None)
                continue
            names: list[str] = []
            for t in targets:
                got = [n for n in self._resolve(t, ignore_missing=True) if n in indices]
                if not got and not any(c in t for c in "*?"):
                    raise _index_missing(t)
                names.extend(got)
            alias_names = _as_list(spec.get("alias")) + _as_list(spec.get("aliases"))
            if not alias_names:
                raise _bad("Validation Failed: 1: [alias] or [aliases] is required;",
                           "action_request_validation_exception")
            if kind == "add":
                for a in alias_names:
                    if a in indices:
                        raise EsError(400, "invalid_alias_name_exception",
                                      f"Invalid alias name [{a}]: an index or data stream exists with the same name "
                                      f"as the alias")
                    props = {k: v for k, v in spec.items() if k in ("is_write_index", "filter", "routing")}
                    for n in names:
                        aliases.setdefault(a, {})[n] = props
            elif kind == "remove":
                for a in alias_names:
                    removed = False
                    for alias in [x for x in aliases if fnmatch.fnmatchcase(x, a)]:
                        for n in names:
                            removed |= aliases[alias].pop(n, None) is not None
                    if not removed and spec.get("must_exist", True) is not False:
                        raise EsError(404, "aliases_not_found_exception", f"aliases [{a}] missing",
                                      **{"resource.type": "aliases", "resource.id": a})
            else:
                raise _bad(f"[alias_action] unknown field [{kind}]", "x_content_parse_exception")
        for name in set(self.indices) - indices:
            del self.indices[name]
        self.aliases = {a: m for a, m in aliases.items() if m}
        return 200, {"acknowledged": True, "errors": False}

    def _get_alias(self, target: Optional[str], name: Optional[str]) -> tuple[int, Any]:
        names = self._resolve(target) if target else sorted(self.indices)
        out: dict[str, Any] = {n: {"aliases": {}} for n in names} if name is None else {}
        matched = False
        for alias, members in self.aliases.items():
            if name is not None and not any(fnmatch.fnmatchcase(alias, p) for p in name.split(",")):
                continue
            for n, props in members.items():
                if n in names:
                    out.setdefault(n, {"aliases": {}})["aliases"][alias] = props
                    matched = True
        if name is not None and not matched:
            return 404, {"error": f"alias [{name}] missing", "status": 404}
        return 200, out


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def _ranked(hits: list[Any]) -> list[Any]:
    """Best score first; ties in index order (Lucene's doc id order: the latest write last)."""
    return sorted(hits, key=lambda h: (-h[2], h[0], h[1].seq_no))


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


if __name__ == "__main__":  # pragma: no cover
    serve_main(ElasticsearchServer)
