"""A local Azure AI Search service: the REST API that ``azure-search-documents`` (12.x) and the
knowledge-bank store speak, with honest BM25, vector, RRF-hybrid and OData filter semantics.

    python -m langchain_mesh.testing.azure_search --port 8765 [--api-key test-key] [--query-key q]
    with AzureSearchServer() as srv: SearchClient(srv.url, "idx", AzureKeyCredential(srv.api_key))

or the ``azure_search_server`` pytest fixture. What it serves:

* Auth: the ``api-key`` header (admin key: everything; query key: search, lookup and count only) or
  ``Authorization: Bearer`` (any token, for token credentials). Missing: 401; wrong or too weak: 403.
  Every request needs ``?api-version=`` (400 otherwise).
* Indexes: ``GET/POST /indexes``, ``GET/PUT/DELETE /indexes('name')`` (also ``/indexes/name``),
  ``/indexes('name')/search.stats``. Definitions are validated as the service does: one ``Edm.String``
  key, unique valid field names, known types, vector fields (``Collection(Edm.Single)``, searchable,
  ``dimensions`` 2-4096, ``vectorSearchProfile`` naming a profile whose ``algorithm`` exists),
  algorithms ``hnsw``/``exhaustiveKnn`` with metric cosine/euclidean/dotProduct, semantic configurations
  naming string fields; an update may add fields but not change or drop existing ones.
* Aliases: ``GET/POST /aliases``, ``GET/PUT/DELETE /aliases('name')``; document operations accept an
  alias in place of an index name; an index an alias points at cannot be deleted.
* Documents: ``POST .../docs/search.index`` (and ``/docs/index``) with upload / merge / mergeOrUpload /
  delete actions, at most 1,000 per request and 16 MB per body (413 beyond), per-item results and 207
  on partial failure; ``GET .../docs('key')``, ``GET .../docs/$count``.
* Search: ``POST .../docs/search.post.search`` (and ``/docs/search``), ``GET .../docs?search=...``:
  ``search`` (BM25), ``searchFields``, ``searchMode``, ``filter`` (:mod:`.azure_search_odata`),
  ``orderby``, ``top`` (default 50, pages of at most 1,000 with ``@odata.nextPageParameters``),
  ``skip``, ``select``, ``count``, ``vectorQueries`` (kind ``vector``; ``fields``, ``k``,
  ``exhaustive``, ``weight``), ``vectorFilterMode`` (preFilter default, postFilter), hybrid fused with
  RRF, ``queryType: semantic`` with ``semanticConfiguration`` and ``captions`` (``extractive``,
  ``|highlight-true/false``). Scoring: :mod:`.azure_search_ranking`.
* Errors: ``{"error": {"code", "message"}}``. A scripted :class:`~.wire.Reply` with a status answers
  the next request instead (throttling, outages); :meth:`AzureSearchServer.fail_item` makes one
  document key fail inside an otherwise successful batch.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import unquote

from .azure_search_odata import ODataError, compile_filter, parse_datetime
from .azure_search_ranking import SEMANTIC_WINDOW, bm25_scores, rrf, semantic_rerank, vector_score
from .wire import RecordedRequest, Responder, WireServer, serve_main

__all__ = ["AzureSearchServer"]

MAX_ACTIONS = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PAGE = 1000
DEFAULT_TOP = 50
_INDEX_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,126}[a-z0-9])?$")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_KEY_VALUE = re.compile(r"^[A-Za-z0-9_\-=]{1,1024}$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$", re.IGNORECASE)
_SIMPLE_TYPES = {"Edm.String", "Edm.Int32", "Edm.Int64", "Edm.Double", "Edm.Boolean", "Edm.DateTimeOffset",
                 "Edm.Single", "Edm.GeographyPoint"}
_VECTOR_TYPES = {"Collection(Edm.Single)", "Collection(Edm.Half)", "Collection(Edm.Int16)",
                 "Collection(Edm.SByte)", "Collection(Edm.Byte)"}
_METRICS = {"cosine", "euclidean", "dotProduct", "hamming"}
_SEARCH_KEYS = {"search", "searchFields", "searchMode", "queryType", "filter", "orderby", "top", "skip", "select",
                "count", "vectorQueries", "vectorFilterMode", "semanticConfiguration", "captions", "answers",
                "highlight", "highlightPreTag", "highlightPostTag", "minimumCoverage", "scoringProfile",
                "scoringParameters", "scoringStatistics", "sessionId", "semanticErrorHandling",
                "semanticMaxWaitInMilliseconds", "semanticQuery", "debug", "facets", "hybridSearch",
                "queryLanguage", "speller", "semanticFields", "queryRewrites"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = ""):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class _Index:
    definition: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: f'"0x{uuid.uuid4().hex[:15].upper()}"')

    @property
    def name(self) -> str:
        return self.definition["name"]

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in self.definition["fields"]}

    @property
    def key_field(self) -> str:
        return next(f["name"] for f in self.definition["fields"] if f.get("key"))


class AzureSearchServer(WireServer):
    """A search service on ``127.0.0.1`` (state in memory); ``url`` is the endpoint."""

    provider = "azure-search"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str = "test-key",
                 query_key: Optional[str] = "test-query-key", accept_tokens: bool = True,
                 service_name: str = "mesh-local", max_body_bytes: int = MAX_BODY_BYTES, **options: Any):
        super().__init__(host, port, **options)
        self.api_key = api_key
        self.query_key = query_key
        self.accept_tokens = accept_tokens
        self.service_name = service_name
        self.max_body_bytes = max_body_bytes
        self.indexes: dict[str, _Index] = {}
        self.aliases: dict[str, str] = {}
        self._failures: dict[str, tuple[int, str]] = {}
        self._state = threading.RLock()

    # ---- test helpers ----------------------------------------------------------------------------------

    def fail_item(self, key: str, status: int = 503, message: str = "Service unavailable, retry later.") -> None:
        """Make every indexing action on document ``key`` fail with ``status`` until :meth:`clear_state`."""
        with self._state:
            self._failures[key] = (status, message)

    def clear_state(self) -> None:
        """Drop every index, alias and injected failure (the recorded requests stay; ``reset`` clears them)."""
        with self._state:
            self.indexes.clear()
            self.aliases.clear()
            self._failures.clear()

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        """The stored documents of an index (or alias), for assertions."""
        with self._state:
            return copy.deepcopy(self._resolve(index).docs)

    def banner(self) -> str:
        return (f"Azure AI Search test server on {self.url} (api-key {self.api_key!r}, query key "
                f"{self.query_key!r}; inspect: GET {self.url}/__mesh__/requests)")

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api-key", default="test-key", help="the admin key (api-key header)")
        parser.add_argument("--query-key", default="test-query-key", help="a read-only query key")

    @classmethod
    def cli_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"api_key": args.api_key, "query_key": args.query_key}

    # ---- dispatch --------------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        reply = self.next_reply()
        if reply is not None:
            body = reply.json_body if reply.json_body is not None else {"error": {
                "code": reply.error_code or "", "message": reply.error_message or "Scripted failure."}}
            respond.json(reply.status, body, reply.headers)
            return
        try:
            self._authorize(request)
            if not request.query.get("api-version"):
                raise ApiError(400, "The api-version query parameter (?api-version=) is required for all requests")
            if not _API_VERSION.match(request.query["api-version"]):
                raise ApiError(400, "Invalid or missing api-version query string parameter.",
                               "InvalidApiVersionParameter")
            if len(request.body) > self.max_body_bytes:
                raise ApiError(413, "The request is too large. The maximum request size is 16 MB.", "RequestEntityTooLarge")
            with self._state:
                status, body, headers = self._route(request)
        except ApiError as e:
            respond.json(e.status, {"error": {"code": e.code, "message": e.message}})
            return
        if body is None:
            respond.bytes(status, b"", "application/json", headers)
        elif isinstance(body, str):
            respond.bytes(status, body.encode("utf-8-sig"), "text/plain; charset=utf-8", headers)
        else:
            respond.json(status, body, {"OData-Version": "4.0", **headers})

    def _authorize(self, request: RecordedRequest) -> None:
        key = request.headers.get("api-key")
        auth = request.headers.get("authorization") or ""
        if key is None and not auth:
            raise ApiError(401, "Authentication failed: no api-key header or bearer token was provided.",
                           "Unauthorized")
        if key is not None:
            if key == self.api_key:
                return
            if self.query_key and key == self.query_key:
                if _is_query(request):
                    return
                raise ApiError(403, "Authorization failed: a query key can only search, look up and count "
                                    "documents; use an admin key.", "Forbidden")
            raise ApiError(403, "Authorization failed: the api-key is invalid.", "Forbidden")
        if not (self.accept_tokens and auth.lower().startswith("bearer ") and auth[7:].strip()):
            raise ApiError(401, "Authentication failed: the bearer token is missing or malformed.", "Unauthorized")

    def _route(self, req: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        m = _PATH.match(req.path)
        if m is None:
            raise ApiError(404, f"Resource '{req.path}' was not found.", "ResourceNotFound")
        collection, name1, name2, rest = m.group("coll"), m.group("q"), m.group("p"), m.group("rest") or ""
        name = _name(name1, name2)
        if collection == "aliases":
            if rest:
                raise ApiError(404, f"Resource '{req.path}' was not found.", "ResourceNotFound")
            return self._aliases(req, name)
        if name is None:
            if rest:
                raise ApiError(404, f"Resource '{req.path}' was not found.", "ResourceNotFound")
            return self._index_collection(req)
        if not rest:
            return self._index_resource(req, name)
        if rest in ("/search.stats", "/stats") and req.method == "GET":
            idx = self._index(name)
            return 200, {"documentCount": len(idx.docs), "storageSize": len(json.dumps(idx.docs)),
                         "vectorIndexSize": 0}, {}
        return self._docs(req, self._resolve(name), rest)

    # ---- indexes ---------------------------------------------------------------------------------------

    def _index(self, name: str) -> _Index:
        idx = self.indexes.get(name)
        if idx is None:
            raise ApiError(404, f"No index with the name '{name}' was found in the service '{self.service_name}'.",
                           "ResourceNotFound")
        return idx

    def _resolve(self, name: str) -> _Index:
        """An index by its name or by an alias (document operations accept both)."""
        if name in self.indexes:
            return self.indexes[name]
        if name in self.aliases:
            return self.indexes[self.aliases[name]]
        raise ApiError(404, f"The index '{name}' for service '{self.service_name}' was not found.", "ResourceNotFound")

    def _index_body(self, idx: _Index, req: RecordedRequest) -> dict[str, Any]:
        return {"@odata.context": f"{self.url}/$metadata#indexes/$entity", "@odata.etag": idx.etag,
                **copy.deepcopy(idx.definition)}

    def _index_collection(self, req: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        if req.method == "GET":
            select = req.query.get("$select")
            items = [self._index_body(i, req) for i in self.indexes.values()]
            if select:
                keep = set(select.split(","))
                items = [{k: v for k, v in it.items() if k in keep} for it in items]
            return 200, {"@odata.context": f"{self.url}/$metadata#indexes", "value": items}, {}
        if req.method == "POST":
            body = _json(req)
            name = body.get("name")
            if name in self.indexes:
                raise ApiError(409, f"Cannot create index '{name}' because it already exists.", "ResourceNameAlreadyInUse")
            return self._put_index(req, str(name), body)
        raise ApiError(405, f"The HTTP method '{req.method}' is not supported for /indexes.", "MethodNotAllowed")

    def _index_resource(self, req: RecordedRequest, name: str) -> tuple[int, Any, dict[str, str]]:
        if req.method == "GET":
            return 200, self._index_body(self._index(name), req), {}
        if req.method == "PUT":
            return self._put_index(req, name, _json(req))
        if req.method == "DELETE":
            if name not in self.indexes:
                raise ApiError(404, f"No index with the name '{name}' was found.", "ResourceNotFound")
            users = [a for a, i in self.aliases.items() if i == name]
            if users:
                raise ApiError(400, f"Index '{name}' cannot be deleted because it is referenced by the alias(es) "
                                    f"{', '.join(users)}. Remove or update the aliases first.", "OperationNotAllowed")
            del self.indexes[name]
            return 204, None, {}
        raise ApiError(405, f"The HTTP method '{req.method}' is not supported here.", "MethodNotAllowed")

    def _put_index(self, req: RecordedRequest, name: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if body.get("name") != name:
            raise ApiError(400, f"The index name '{body.get('name')}' in the request body does not match the name "
                                f"'{name}' in the URL.", "InvalidRequestParameter")
        if name in self.aliases:
            raise ApiError(400, f"The name '{name}' is already used by an alias.", "InvalidRequestParameter")
        definition = _validate_index(body)
        existing = self.indexes.get(name)
        if existing is not None:
            _check_update(existing.definition, definition)
            existing.definition = definition
            existing.etag = f'"0x{uuid.uuid4().hex[:15].upper()}"'
            idx, status = existing, 200
        else:
            idx, status = _Index(definition), 201
            self.indexes[name] = idx
        if "return=minimal" in (req.headers.get("prefer") or ""):
            return 204, None, {}
        return status, self._index_body(idx, req), {"ETag": idx.etag}

    # ---- aliases ---------------------------------------------------------------------------------------

    def _aliases(self, req: RecordedRequest, name: Optional[str]) -> tuple[int, Any, dict[str, str]]:
        def body(n: str) -> dict[str, Any]:
            return {"@odata.etag": f'"{n}-{self.aliases[n]}"', "name": n, "indexes": [self.aliases[n]]}

        if name is None:
            if req.method == "GET":
                return 200, {"value": [body(n) for n in self.aliases]}, {}
            if req.method == "POST":
                data = _json(req)
                if data.get("name") in self.aliases:
                    raise ApiError(409, f"Alias '{data.get('name')}' already exists.", "ResourceNameAlreadyInUse")
                return self._put_alias(str(data.get("name")), data, body)
            raise ApiError(405, f"The HTTP method '{req.method}' is not supported for /aliases.", "MethodNotAllowed")
        if req.method == "GET":
            if name not in self.aliases:
                raise ApiError(404, f"Alias '{name}' was not found.", "ResourceNotFound")
            return 200, body(name), {}
        if req.method == "PUT":
            return self._put_alias(name, _json(req), body)
        if req.method == "DELETE":
            if self.aliases.pop(name, None) is None:
                raise ApiError(404, f"Alias '{name}' was not found.", "ResourceNotFound")
            return 204, None, {}
        raise ApiError(405, f"The HTTP method '{req.method}' is not supported here.", "MethodNotAllowed")

    def _put_alias(self, name: str, data: dict[str, Any], body: Any) -> tuple[int, Any, dict[str, str]]:
        if data.get("name") != name:
            raise ApiError(400, "The alias name in the request body does not match the URL.", "InvalidRequestParameter")
        if not _INDEX_NAME.match(name):
            raise ApiError(400, f"Invalid alias name '{name}'.", "InvalidName")
        if name in self.indexes:
            raise ApiError(400, f"The name '{name}' is already used by an index.", "InvalidRequestParameter")
        targets = data.get("indexes")
        if not isinstance(targets, list) or len(targets) != 1:
            raise ApiError(400, "An alias must map to exactly one index.", "InvalidRequestParameter")
        if targets[0] not in self.indexes:
            raise ApiError(400, f"The index '{targets[0]}' mapped by alias '{name}' does not exist.",
                           "InvalidRequestParameter")
        created = name not in self.aliases
        self.aliases[name] = targets[0]  # one assignment: readers see the old or the new index, never neither
        return (201 if created else 200), body(name), {}

    # ---- documents -------------------------------------------------------------------------------------

    def _docs(self, req: RecordedRequest, idx: _Index, rest: str) -> tuple[int, Any, dict[str, str]]:
        m = re.match(r"^/docs(?:\('(?P<q>(?:[^']|'')*)'\)|/(?P<p>[^/]+))?$", rest)
        if m is None:
            raise ApiError(404, f"Resource '{req.path}' was not found.", "ResourceNotFound")
        sub = m.group("p")
        key = m.group("q")
        if key is not None:
            return self._lookup(req, idx, unquote(key).replace("''", "'"))
        if sub is None and req.method == "GET":
            return self._search(idx, _query_to_body(req.query))
        if sub == "$count" and req.method == "GET":
            return 200, str(len(idx.docs)), {}
        if sub in ("search.index", "index") and req.method == "POST":
            return self._index_documents(idx, _json(req))
        if sub in ("search.post.search", "search") and req.method == "POST":
            return self._search(idx, _json(req))
        if sub is not None and req.method == "GET":
            return self._lookup(req, idx, unquote(sub))
        raise ApiError(404, f"Resource '{req.path}' was not found.", "ResourceNotFound")

    def _lookup(self, req: RecordedRequest, idx: _Index, key: str) -> tuple[int, Any, dict[str, str]]:
        doc = idx.docs.get(key)
        if doc is None:
            raise ApiError(404, "Document not found.", "DocumentNotFound")
        return 200, _project(idx, doc, _select(idx, req.query.get("$select"))), {}

    def _index_documents(self, idx: _Index, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        actions = body.get("value")
        if not isinstance(actions, list):
            raise ApiError(400, "The request is invalid. Details: actions : the request body must have a 'value' "
                                "array of indexing actions.", "InvalidRequestParameter")
        if len(actions) > MAX_ACTIONS:
            raise ApiError(400, f"The request is invalid. Details: actions : Batch size limit exceeded. The "
                                f"maximum number of documents in a batch is {MAX_ACTIONS}; this one has "
                                f"{len(actions)}.", "InvalidRequestParameter")
        fields = idx.fields
        key_field = idx.key_field
        prepared = []
        for i, action in enumerate(actions):  # request-level validation first: nothing is written on a 400
            if not isinstance(action, dict):
                raise ApiError(400, f"The request is invalid. Details: actions[{i}] is not an object.")
            kind = action.get("@search.action", "upload")
            if kind not in ("upload", "merge", "mergeOrUpload", "delete"):
                raise ApiError(400, f"The request is invalid. Details: unknown @search.action '{kind}'.")
            if action.get(key_field) is None:
                raise ApiError(400, f"The request is invalid. Details: The key field '{key_field}' is missing "
                                    f"from document {i}.", "InvalidDocument")
            doc = {k: v for k, v in action.items() if k != "@search.action"}
            if kind != "delete":
                for fname, value in doc.items():
                    if fname not in fields:
                        raise ApiError(400, f"The request is invalid. Details: The property '{fname}' does not "
                                            f"exist on type 'search.documentFields'. Make sure to only use property "
                                            f"names that are defined by the type.", "InvalidDocument")
                    problem = _value_problem(fields[fname], value)
                    if problem:
                        raise ApiError(400, f"The request is invalid. Details: {problem}", "InvalidDocument")
            prepared.append((kind, str(doc[key_field]), doc))
        results = []
        for kind, key, doc in prepared:
            results.append(self._apply(idx, kind, key, doc, key_field))
        status = 200 if all(r["status"] for r in results) else 207
        return status, {"value": results}, {}

    def _apply(self, idx: _Index, kind: str, key: str, doc: dict[str, Any], key_field: str) -> dict[str, Any]:
        def result(ok: bool, code: int, message: Optional[str] = None) -> dict[str, Any]:
            return {"key": key, "status": ok, "errorMessage": message, "statusCode": code}

        if not _KEY_VALUE.match(key) or key.startswith("_"):
            return result(False, 400, f"Invalid document key: '{key}'. Keys can only contain letters, digits, "
                                      f"underscore (_), dash (-), or equal sign (=), and cannot start with '_'.")
        if key in self._failures:
            return result(False, *self._failures[key])
        exists = key in idx.docs
        if kind == "delete":
            idx.docs.pop(key, None)
            return result(True, 200)
        if kind == "merge" and not exists:
            return result(False, 404, "Document not found.")
        if kind in ("merge", "mergeOrUpload") and exists:
            idx.docs[key].update(copy.deepcopy(doc))
            return result(True, 200)
        idx.docs[key] = copy.deepcopy(doc)
        return result(True, 200 if exists else 201)

    # ---- search ----------------------------------------------------------------------------------------

    def _search(self, idx: _Index, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        unknown = set(body) - _SEARCH_KEYS
        if unknown:
            raise ApiError(400, f"The request is invalid. Details: parameters : The parameter '{sorted(unknown)[0]}' "
                                f"in the request payload is not a valid parameter for the operation 'search'.")
        fields = idx.fields
        try:
            pred = compile_filter(body.get("filter"), fields)
        except ODataError as e:
            raise ApiError(400, str(e), "InvalidRequestParameter") from None
        dt_fields = [n for n, f in fields.items() if "DateTimeOffset" in f["type"]]

        def matches(doc: dict[str, Any]) -> bool:
            view = doc if not dt_fields else {**doc, **{n: _dt_value(doc.get(n)) for n in dt_fields}}
            return pred(view)

        top = _int(body, "top", None)
        skip = _int(body, "skip", 0) or 0
        select = _select(idx, body.get("select"))
        semantic = body.get("queryType") == "semantic"
        text = body.get("search")
        vqs = body.get("vectorQueries") or []
        filtered = {k: d for k, d in idx.docs.items() if matches(d)}

        rankings: list[list[tuple[str, float]]] = []
        has_text = text is not None and text.strip() not in ("", "*")
        if has_text:
            search_fields = self._search_fields(idx, body.get("searchFields"))
            # collection statistics come from the whole index (as Lucene's), the filter only removes hits
            scores = bm25_scores(text, idx.docs, search_fields, body.get("searchMode") or "any")
            rankings.append(sorted(((k, s) for k, s in scores.items() if k in filtered), key=lambda kv: -kv[1]))
        for vq in vqs:
            rankings.extend(self._vector_rankings(idx, vq, filtered, body.get("vectorFilterMode") or "preFilter",
                                                  matches))
        if not rankings:
            ranked = [(k, 1.0) for k in filtered]  # "*" or no query: every match, score 1
        elif len(rankings) == 1:
            ranked = rankings[0]
        else:
            ranked = rrf([[k for k, _ in r] for r in rankings])

        extras: dict[str, dict[str, Any]] = {}
        if semantic:
            ranked, extras = self._semantic(idx, body, ranked)
        elif body.get("orderby"):
            ranked = _order(idx, ranked, body["orderby"])
        total = len(ranked)
        want = DEFAULT_TOP if top is None else top
        page_top = min(want, MAX_PAGE)
        page = ranked[skip:skip + page_top]
        out: dict[str, Any] = {}
        if body.get("count"):
            out["@odata.count"] = total
        if semantic and body.get("answers"):
            out["@search.answers"] = []
        value = []
        for key, score in page:
            item: dict[str, Any] = {"@search.score": score}
            item.update(extras.get(key, {}))
            item.update(_project(idx, idx.docs[key], select))
            value.append(item)
        out["value"] = value
        if want > MAX_PAGE and skip + page_top < total:
            out["@odata.nextPageParameters"] = {**body, "skip": skip + page_top, "top": want - page_top}
        return 200, out, {}

    def _search_fields(self, idx: _Index, spec: Optional[str]) -> list[str]:
        fields = idx.fields
        if spec:
            names = [s.strip() for s in spec.split(",") if s.strip()]
            for n in names:
                f = fields.get(n)
                if f is None or not f.get("searchable") or f["type"] in _VECTOR_TYPES:
                    raise ApiError(400, f"Invalid searchFields: the field '{n}' is not a searchable text field.",
                                   "InvalidRequestParameter")
            return names
        return [n for n, f in fields.items()
                if f.get("searchable") and f["type"] in ("Edm.String", "Collection(Edm.String)")]

    def _vector_rankings(self, idx: _Index, vq: dict[str, Any], filtered: dict[str, dict], mode: str,
                         matches: Any) -> list[list[tuple[str, float]]]:
        if vq.get("kind") != "vector":
            raise ApiError(400, f"Vector query kind '{vq.get('kind')}' is not supported here: this service has no "
                                f"vectorizer; send kind 'vector' with the embedding.", "InvalidRequestParameter")
        if mode not in ("preFilter", "postFilter", "strictPostFilter"):
            raise ApiError(400, f"Invalid vectorFilterMode '{mode}'.", "InvalidRequestParameter")
        vector = vq.get("vector")
        if not isinstance(vector, list) or not vector:
            raise ApiError(400, "A vector query needs a non-empty 'vector'.", "InvalidRequestParameter")
        k = int(vq.get("k") or vq.get("kNearestNeighborsCount") or DEFAULT_TOP)
        weight = float(vq.get("weight") or 1.0)
        out = []
        for name in [s.strip() for s in str(vq.get("fields") or "").split(",") if s.strip()]:
            f = idx.fields.get(name)
            if f is None or f["type"] not in _VECTOR_TYPES:
                raise ApiError(400, f"The field '{name}' in the vector query is not a vector field.",
                               "InvalidRequestParameter")
            if len(vector) != f["dimensions"]:
                raise ApiError(400, f"The vector query's vector has {len(vector)} dimensions, but the field '{name}' "
                                    f"has {f['dimensions']}.", "InvalidRequestParameter")
            metric = _metric(idx, f)
            pool = filtered if mode == "preFilter" else idx.docs
            scored = sorted(((key, vector_score(metric, vector, d[name])) for key, d in pool.items()
                             if d.get(name) is not None), key=lambda kv: -kv[1])[:k]
            if mode != "preFilter":  # filter the k nearest: may return fewer than k
                scored = [(key, s) for key, s in scored if key in filtered]
            out.append([(key, s * weight if weight != 1.0 else s) for key, s in scored])
        if not out:
            raise ApiError(400, "A vector query needs 'fields'.", "InvalidRequestParameter")
        return out

    def _semantic(self, idx: _Index, body: dict[str, Any], ranked: list[tuple[str, float]]
                  ) -> tuple[list[tuple[str, float]], dict[str, dict[str, Any]]]:
        sem = idx.definition.get("semantic") or {}
        configs = {c["name"]: c for c in sem.get("configurations") or []}
        name = body.get("semanticConfiguration") or sem.get("defaultConfiguration")
        if not name or name not in configs:
            raise ApiError(400, f"The semantic configuration '{name}' was not found in index '{idx.name}'. Set "
                                f"'semanticConfiguration' or a default configuration.", "InvalidRequestParameter")
        query = body.get("semanticQuery") or body.get("search")
        if not query or query.strip() == "*":
            raise ApiError(400, "A semantic query needs search text (or semanticQuery).", "InvalidRequestParameter")
        pf = configs[name].get("prioritizedFields") or {}
        fields = ([pf["titleField"]["fieldName"]] if pf.get("titleField") else []) + \
                 [f["fieldName"] for f in pf.get("prioritizedContentFields") or []] + \
                 [f["fieldName"] for f in pf.get("prioritizedKeywordsFields") or []]
        captions = str(body.get("captions") or "")
        want_captions = captions.startswith("extractive")
        highlight = "highlight-false" not in captions
        window = ranked[:SEMANTIC_WINDOW]
        extras, scored = {}, []
        for pos, (key, score) in enumerate(window):
            rerank, caption = semantic_rerank(query, idx.docs[key], fields, highlight)
            extras[key] = {"@search.rerankerScore": rerank,
                           "@search.captions": [caption] if (want_captions and caption) else ([] if want_captions else None)}
            if not want_captions:
                del extras[key]["@search.captions"]
            scored.append((-rerank, pos, key, score))
        scored.sort()
        return [(key, score) for _, _, key, score in scored], extras


# ---- helpers ---------------------------------------------------------------------------------------------

_PATH = re.compile(r"^/(?P<coll>indexes|aliases)(?:\('(?P<q>(?:[^']|'')*)'\)|/(?P<p>[^/()]+))?(?P<rest>/.*)?$")


def _name(quoted: Optional[str], plain: Optional[str]) -> Optional[str]:
    if quoted is not None:
        return unquote(quoted).replace("''", "'")
    return unquote(plain) if plain is not None else None


def _is_query(req: RecordedRequest) -> bool:
    if "/docs" not in req.path:
        return False
    if req.method == "GET":
        return True
    return req.method == "POST" and (req.path.endswith("/docs/search.post.search") or req.path.endswith("/docs/search"))


def _json(req: RecordedRequest) -> dict[str, Any]:
    try:
        body = json.loads(req.body or b"{}")
    except ValueError as e:
        raise ApiError(400, f"The request is invalid. Details: the body is not valid JSON ({e}).") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request is invalid. Details: the body must be a JSON object.")
    return body


def _int(body: dict[str, Any], key: str, default: Optional[int]) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApiError(400, f"The request is invalid. Details: '{key}' must be a non-negative integer.")
    if key == "skip" and value > 100_000:
        raise ApiError(400, "The request is invalid. Details: '$skip' cannot exceed 100000.")
    return value


def _query_to_body(q: dict[str, str]) -> dict[str, Any]:
    """A GET search's query string as a POST body."""
    body: dict[str, Any] = {}
    for src, dst in (("search", "search"), ("$filter", "filter"), ("$select", "select"), ("$orderby", "orderby"),
                     ("searchFields", "searchFields"), ("searchMode", "searchMode"), ("queryType", "queryType"),
                     ("semanticConfiguration", "semanticConfiguration"), ("captions", "captions"),
                     ("answers", "answers")):
        if src in q:
            body[dst] = q[src]
    for src, dst in (("$top", "top"), ("$skip", "skip")):
        if src in q:
            try:
                body[dst] = int(q[src])
            except ValueError:
                raise ApiError(400, f"Invalid value for {src}: '{q[src]}'.") from None
    if "$count" in q:
        body["count"] = q["$count"].lower() == "true"
    return body


def _select(idx: _Index, spec: Any) -> list[str]:
    fields = idx.fields
    if not spec or spec == "*":
        return [n for n, f in fields.items() if f.get("retrievable", True) and f.get("stored", True)]
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    for n in names:
        f = fields.get(n)
        if f is None:
            raise ApiError(400, f"Invalid expression: Could not find a property named '{n}' on type 'search.document'.",
                           "InvalidRequestParameter")
        if not f.get("retrievable", True) or not f.get("stored", True):
            raise ApiError(400, f"The field '{n}' is not retrievable and cannot be selected.", "InvalidRequestParameter")
    return names


def _project(idx: _Index, doc: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {n: copy.deepcopy(doc.get(n)) for n in names}


def _dt_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [parse_datetime(v) for v in value]
    return parse_datetime(value)


def _metric(idx: _Index, f: dict[str, Any]) -> str:
    vs = idx.definition.get("vectorSearch") or {}
    profile = next(p for p in vs.get("profiles") or [] if p["name"] == f["vectorSearchProfile"])
    algo = next(a for a in vs.get("algorithms") or [] if a["name"] == profile["algorithm"])
    params = algo.get("hnswParameters") or algo.get("exhaustiveKnnParameters") or {}
    return params.get("metric") or "cosine"


def _order(idx: _Index, ranked: list[tuple[str, float]], spec: str) -> list[tuple[str, float]]:
    out = list(ranked)
    clauses = [c.strip() for c in spec.split(",") if c.strip()]
    if len(clauses) > 32:
        raise ApiError(400, "There can be at most 32 $orderby clauses.", "InvalidRequestParameter")
    for clause in reversed(clauses):  # stable sorts, last clause first
        parts = clause.split()
        target, desc = parts[0], len(parts) > 1 and parts[1].lower() == "desc"
        if target == "search.score()":
            out.sort(key=lambda kv: kv[1], reverse=desc)
            continue
        f = idx.fields.get(target)
        if f is None or not f.get("sortable") or f["type"].startswith("Collection("):
            raise ApiError(400, f"Invalid expression: '{target}' is not a sortable field.", "InvalidRequestParameter")
        present = [kv for kv in out if idx.docs[kv[0]].get(target) is not None]
        missing = [kv for kv in out if idx.docs[kv[0]].get(target) is None]
        present.sort(key=lambda kv: idx.docs[kv[0]][target], reverse=desc)
        out = (missing + present) if not desc else (present + missing)  # nulls sort first ascending
    return out


def _value_problem(f: dict[str, Any], value: Any) -> Optional[str]:
    if value is None:
        return None
    t = f["type"]
    name = f["name"]
    if t in _VECTOR_TYPES:
        if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            return f"The vector field '{name}' must be an array of numbers."
        if len(value) != f["dimensions"]:
            return (f"The vector field '{name}' dimensionality must match the field definition's 'dimensions' "
                    f"property. Expected: '{f['dimensions']}'. Actual: '{len(value)}'.")
        return None
    if t.startswith("Collection("):
        if not isinstance(value, list):
            return f"Cannot convert a non-array value to the collection field '{name}' of type '{t}'."
        inner = {**f, "type": t[len("Collection("):-1]}
        return next((p for p in (_value_problem(inner, v) for v in value) if p), None)
    ok = {"Edm.String": lambda v: isinstance(v, str),
          "Edm.Boolean": lambda v: isinstance(v, bool),
          "Edm.Int32": lambda v: isinstance(v, int) and not isinstance(v, bool) and -2**31 <= v < 2**31,
          "Edm.Int64": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "Edm.Double": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)) or v in ("NaN", "INF", "-INF"),
          "Edm.Single": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "Edm.DateTimeOffset": _is_datetime,
          "Edm.GeographyPoint": lambda v: isinstance(v, dict)}.get(t, lambda v: False)
    if not ok(value):
        return f"Cannot convert the literal '{value}' to the expected type '{t}' of field '{name}'."
    return None


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_datetime(value)
        return True
    except ValueError:
        return False


_DEFAULTS = ("searchable", "filterable", "retrievable", "stored", "sortable", "facetable")


def _validate_index(body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not _INDEX_NAME.match(name):
        raise ApiError(400, f"Invalid index name '{name}'. Index names must be lowercase letters, digits or dashes, "
                            f"start and end with a letter or digit, and be at most 128 characters.", "InvalidName")
    raw_fields = body.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise ApiError(400, "The request is invalid. Details: index : The index must have at least one field.")
    vs = body.get("vectorSearch") or {}
    algorithms = {}
    for a in vs.get("algorithms") or []:
        kind = a.get("kind")
        if kind not in ("hnsw", "exhaustiveKnn"):
            raise ApiError(400, f"Unknown vector search algorithm kind '{kind}'.", "InvalidRequestParameter")
        params = a.get("hnswParameters" if kind == "hnsw" else "exhaustiveKnnParameters") or {}
        if params.get("metric", "cosine") not in _METRICS:
            raise ApiError(400, f"Unknown vector similarity metric '{params.get('metric')}'.", "InvalidRequestParameter")
        if kind == "hnsw":
            for p, lo, hi in (("m", 4, 10), ("efConstruction", 100, 1000), ("efSearch", 100, 1000)):
                if p in params and not lo <= int(params[p]) <= hi:
                    raise ApiError(400, f"HNSW parameter '{p}' must be between {lo} and {hi}.", "InvalidRequestParameter")
        algorithms[a.get("name")] = a
    profiles = {}
    for p in vs.get("profiles") or []:
        if p.get("algorithm") not in algorithms:
            raise ApiError(400, f"The vector profile '{p.get('name')}' references the algorithm configuration "
                                f"'{p.get('algorithm')}', which does not exist.", "InvalidRequestParameter")
        profiles[p.get("name")] = p
    fields, seen = [], set()
    for f in raw_fields:
        fname, t = f.get("name"), f.get("type")
        if not isinstance(fname, str) or not _FIELD_NAME.match(fname) or fname.lower().startswith("azuresearch"):
            raise ApiError(400, f"Invalid field name '{fname}'. Field names must start with a letter and contain only "
                                f"letters, digits and underscores.", "InvalidName")
        if fname in seen:
            raise ApiError(400, f"The field '{fname}' is defined more than once.", "InvalidRequestParameter")
        seen.add(fname)
        inner = t[len("Collection("):-1] if isinstance(t, str) and t.startswith("Collection(") else t
        is_vector = t in _VECTOR_TYPES or f.get("vectorSearchProfile") is not None
        if inner not in _SIMPLE_TYPES and t not in _VECTOR_TYPES:
            raise ApiError(400, f"The field '{fname}' has an unsupported type '{t}'.", "InvalidRequestParameter")
        nf = dict(f)
        if is_vector:
            dims = f.get("dimensions")
            if t not in _VECTOR_TYPES or not isinstance(dims, int) or not 2 <= dims <= 4096:
                raise ApiError(400, f"The vector field '{fname}' must be a Collection(Edm.Single) with 'dimensions' "
                                    f"between 2 and 4096.", "InvalidRequestParameter")
            if f.get("vectorSearchProfile") not in profiles:
                raise ApiError(400, f"The vector field '{fname}' references the vector search profile "
                                    f"'{f.get('vectorSearchProfile')}', which does not exist.", "InvalidRequestParameter")
            if f.get("searchable") is False:
                raise ApiError(400, f"The vector field '{fname}' must be searchable.", "InvalidRequestParameter")
            for attr in ("filterable", "sortable", "facetable", "key"):
                if f.get(attr):
                    raise ApiError(400, f"The vector field '{fname}' cannot be {attr}.", "InvalidRequestParameter")
            nf.update(searchable=True, filterable=False, sortable=False, facetable=False, key=False)
            nf.setdefault("retrievable", True)
            nf.setdefault("stored", True)
        else:
            text = inner == "Edm.String"
            if f.get("searchable") and not text:
                raise ApiError(400, f"The field '{fname}' of type '{t}' cannot be searchable; only string fields can.",
                               "InvalidRequestParameter")
            collection = t.startswith("Collection(")
            if f.get("sortable") and collection:
                raise ApiError(400, f"The collection field '{fname}' cannot be sortable.", "InvalidRequestParameter")
            defaults = {"searchable": text, "filterable": True, "retrievable": True, "stored": True,
                        "sortable": not collection, "facetable": True, "key": False}
            for attr, d in defaults.items():
                if nf.get(attr) is None:
                    nf[attr] = d
        fields.append(nf)
    keys = [f for f in fields if f.get("key")]
    if len(keys) != 1:
        raise ApiError(400, f"The index must have exactly one key field; found {len(keys)}.", "InvalidRequestParameter")
    if keys[0]["type"] != "Edm.String":
        raise ApiError(400, f"The key field '{keys[0]['name']}' must be of type Edm.String.", "InvalidRequestParameter")
    by_name = {f["name"]: f for f in fields}
    sem = body.get("semantic") or {}
    for c in sem.get("configurations") or []:
        pf = c.get("prioritizedFields") or {}
        named = ([pf["titleField"]] if pf.get("titleField") else []) + list(pf.get("prioritizedContentFields") or []) \
            + list(pf.get("prioritizedKeywordsFields") or [])
        if not named:
            raise ApiError(400, f"The semantic configuration '{c.get('name')}' must name at least one field.",
                           "InvalidRequestParameter")
        for sf in named:
            target = by_name.get(sf.get("fieldName"))
            if target is None or target["type"] not in ("Edm.String", "Collection(Edm.String)"):
                raise ApiError(400, f"The semantic configuration '{c.get('name')}' references '{sf.get('fieldName')}', "
                                    f"which is not a string field of the index.", "InvalidRequestParameter")
    config_names = {c.get("name") for c in sem.get("configurations") or []}
    if sem.get("defaultConfiguration") and sem["defaultConfiguration"] not in config_names:
        raise ApiError(400, f"The default semantic configuration '{sem['defaultConfiguration']}' does not exist.",
                       "InvalidRequestParameter")
    out = {k: v for k, v in body.items() if not k.startswith("@odata.")}
    out["fields"] = fields
    return out


def _check_update(old: dict[str, Any], new: dict[str, Any]) -> None:
    new_fields = {f["name"]: f for f in new["fields"]}
    for f in old["fields"]:
        nf = new_fields.get(f["name"])
        if nf is None:
            raise ApiError(400, f"Existing field '{f['name']}' cannot be removed from the index. Rebuild the index "
                                f"to remove fields.", "CannotChangeExistingField")
        for attr in ("type", "key", "searchable", "filterable", "sortable", "facetable", "dimensions",
                     "vectorSearchProfile"):
            if f.get(attr) != nf.get(attr):
                raise ApiError(400, f"Existing field '{f['name']}' cannot be changed ('{attr}').",
                               "CannotChangeExistingField")


def main(argv: Optional[list[str]] = None) -> None:
    serve_main(AzureSearchServer, argv)


if __name__ == "__main__":
    main()
