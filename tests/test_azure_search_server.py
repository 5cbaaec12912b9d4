"""The local Azure AI Search server: azure-search-documents used directly against it, auth, index
validation, indexing results, OData, BM25, vector scores, RRF and the semantic ranker."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.request

import pytest

pytest.importorskip("azure.search.documents")

from azure.core.credentials import AzureKeyCredential  # noqa: E402
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError  # noqa: E402
from azure.search.documents import SearchClient  # noqa: E402
from azure.search.documents.indexes import SearchIndexClient  # noqa: E402
from azure.search.documents.indexes import models as m  # noqa: E402
from azure.search.documents.models import VectorizedQuery  # noqa: E402

from langchain_mesh.testing.azure_search_odata import ODataError, compile_filter  # noqa: E402
from langchain_mesh.testing.azure_search_ranking import bm25_scores, rrf, vector_score  # noqa: E402

HOTELS = [
    {"id": "1", "name": "Fancy Stay", "description": "Luxury hotel with a pool and ocean view.", "rating": 5,
     "tags": ["pool", "view"], "parking": True, "opened": "2010-06-01T00:00:00Z", "vec": [1.0, 0.0, 0.0]},
    {"id": "2", "name": "Budget Inn", "description": "Cheap rooms near the airport. Free parking.", "rating": 2,
     "tags": ["parking"], "parking": True, "opened": "2019-01-15T00:00:00Z", "vec": [0.0, 1.0, 0.0]},
    {"id": "3", "name": "Ocean Breeze", "description": "Ocean front rooms, ocean view, breakfast.", "rating": 4,
     "tags": ["view", "breakfast"], "parking": False, "opened": None, "vec": [0.7, 0.7, 0.0]},
    {"id": "4", "name": "O'Hare Lodge", "description": "Quiet lodge by the lake.", "rating": 3,
     "tags": [], "parking": None, "opened": "2021-03-01T12:00:00Z", "vec": [0.0, 0.0, 1.0]},
]


def _index(name: str = "hotels", metric: str = "cosine") -> m.SearchIndex:
    return m.SearchIndex(
        name=name,
        fields=[
            m.SimpleField(name="id", type="Edm.String", key=True, filterable=True, sortable=True),
            m.SearchableField(name="name", type="Edm.String", filterable=True),
            m.SearchableField(name="description", type="Edm.String"),
            m.SimpleField(name="rating", type="Edm.Int32", filterable=True, sortable=True),
            m.SearchField(name="tags", type="Collection(Edm.String)", filterable=True, searchable=False),
            m.SimpleField(name="parking", type="Edm.Boolean", filterable=True),
            m.SimpleField(name="opened", type="Edm.DateTimeOffset", filterable=True, sortable=True),
            m.SearchField(name="vec", type="Collection(Edm.Single)", searchable=True, vector_search_dimensions=3,
                          vector_search_profile_name="p"),
        ],
        vector_search=m.VectorSearch(
            algorithms=[m.ExhaustiveKnnAlgorithmConfiguration(name="knn", parameters=m.ExhaustiveKnnParameters(metric=metric))],
            profiles=[m.VectorSearchProfile(name="p", algorithm_configuration_name="knn")]),
        semantic_search=m.SemanticSearch(configurations=[m.SemanticConfiguration(
            name="sem", prioritized_fields=m.SemanticPrioritizedFields(
                title_field=m.SemanticField(field_name="name"),
                content_fields=[m.SemanticField(field_name="description")]))]),
    )


@pytest.fixture
def srv(azure_search_server):
    return azure_search_server


@pytest.fixture
def clients(srv):
    cred = AzureKeyCredential(srv.api_key)
    ic = SearchIndexClient(srv.url, cred)
    ic.create_index(_index())
    sc = SearchClient(srv.url, "hotels", cred)
    results = sc.upload_documents(documents=HOTELS)
    assert all(r.succeeded for r in results) and [r.status_code for r in results] == [201] * 4
    return ic, sc


# ---- the SDK used directly ---------------------------------------------------------------------------


def test_sdk_index_lifecycle_and_documents(srv, clients):
    ic, sc = clients
    assert [i.name for i in ic.list_indexes()] == ["hotels"]
    got = ic.get_index("hotels")
    assert {f.name for f in got.fields} >= {"id", "vec"} and got.fields[-1].vector_search_dimensions == 3
    assert sc.get_document_count() == 4
    assert sc.get_document("4")["name"] == "O'Hare Lodge"
    with pytest.raises(ResourceNotFoundError):
        sc.get_document("99")
    res = sc.merge_documents(documents=[{"id": "2", "rating": 3}, {"id": "99", "rating": 1}])
    assert [(r.succeeded, r.status_code) for r in res] == [(True, 200), (False, 404)]
    assert sc.get_document("2")["rating"] == 3 and sc.get_document("2")["name"] == "Budget Inn"
    sc.delete_documents(documents=[{"id": "2"}])
    assert sc.get_document_count() == 3
    ic.delete_index("hotels")
    assert list(ic.list_indexes()) == []


def test_sdk_search_text_filter_select_order_count(clients):
    _, sc = clients
    results = sc.search(search_text="ocean", select=["id", "name"], include_total_count=True)
    rows = list(results)
    assert [r["id"] for r in rows] == ["3", "1"]  # "ocean" three times beats once
    assert set(rows[0]) >= {"id", "name", "@search.score"} and "description" not in rows[0]
    assert results.get_count() == 2
    rows = list(sc.search(search_text="*", filter="rating ge 3 and parking ne false", order_by=["rating desc"]))
    assert [r["id"] for r in rows] == ["1", "4"]
    rows = list(sc.search(search_text="*", filter="tags/any(t: t eq 'view') and not (name eq 'Fancy Stay')"))
    assert [r["id"] for r in rows] == ["3"]
    rows = list(sc.search(search_text="*", filter="opened gt 2015-01-01T00:00:00Z", order_by=["opened asc"]))
    assert [r["id"] for r in rows] == ["2", "4"]
    rows = list(sc.search(search_text="*", filter="search.in(name, 'O''Hare Lodge|Budget Inn', '|')"))
    assert sorted(r["id"] for r in rows) == ["2", "4"]
    assert [r["id"] for r in sc.search(search_text="*", top=2, skip=1, order_by=["id asc"])] == ["2", "3"]


def test_sdk_vector_hybrid_and_semantic(clients):
    _, sc = clients
    vq = VectorizedQuery(vector=[1.0, 0.1, 0.0], k_nearest_neighbors=2, fields="vec")
    rows = list(sc.search(search_text=None, vector_queries=[vq]))
    assert [r["id"] for r in rows] == ["1", "3"]
    cos = (1.0) / math.sqrt(1.01)
    assert rows[0]["@search.score"] == pytest.approx(1 / (1 + (1 - cos)))
    # pre-filter (default) finds the best matching documents; post-filter filters the k nearest
    pre = list(sc.search(search_text=None, vector_queries=[vq], filter="rating le 2"))
    post = list(sc.search(search_text=None, vector_queries=[vq], filter="rating le 2", vector_filter_mode="postFilter"))
    assert [r["id"] for r in pre] == ["2"] and post == []
    hybrid = list(sc.search(search_text="airport", vector_queries=[vq], top=5))
    assert {r["id"] for r in hybrid} == {"1", "2", "3"}
    by_id = {r["id"]: r["@search.score"] for r in hybrid}
    assert by_id["1"] == pytest.approx(1 / 61) and by_id["2"] == pytest.approx(1 / 61)
    sem = list(sc.search(search_text="ocean view breakfast", vector_queries=[vq], query_type="semantic",
                         semantic_configuration_name="sem", query_caption="extractive",
                         query_caption_highlight_enabled=True))
    assert sem[0]["id"] == "3" and sem[0]["@search.reranker_score"] == pytest.approx(4.0)
    assert [r["@search.reranker_score"] for r in sem] == sorted((r["@search.reranker_score"] for r in sem), reverse=True)
    cap = sem[0]["@search.captions"][0]
    assert "<em>ocean</em>" in cap.highlights and cap.text.startswith("Ocean")
    with pytest.raises(HttpResponseError, match="semantic configuration"):
        list(sc.search(search_text="x", query_type="semantic"))


async def test_async_sdk(srv, clients):
    from azure.search.documents.aio import SearchClient as AsyncSearchClient

    async with AsyncSearchClient(srv.url, "hotels", AzureKeyCredential(srv.api_key)) as ac:
        rows = [r async for r in await ac.search(search_text="lodge")]
        assert [r["id"] for r in rows] == ["4"]
        assert await ac.get_document_count() == 4


def test_aliases_resolve_for_documents_and_protect_their_index(srv, clients):
    ic, _ = clients
    ic.create_or_update_alias(m.SearchAlias(name="live", indexes=["hotels"]))
    via_alias = SearchClient(srv.url, "live", AzureKeyCredential(srv.api_key))
    assert via_alias.get_document_count() == 4
    assert [a.name for a in ic.list_aliases()] == ["live"]
    with pytest.raises(HttpResponseError, match="referenced by the alias"):
        ic.delete_index("hotels")
    with pytest.raises(ResourceNotFoundError):
        ic.get_index("live")  # index management does not resolve aliases
    ic.delete_alias("live")
    ic.delete_index("hotels")


# ---- auth, api-version, errors --------------------------------------------------------------------------


def _raw(srv, method: str, path: str, body=None, headers=None):
    req = urllib.request.Request(srv.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_auth_and_api_version(srv, clients):
    status, body = _raw(srv, "GET", "/indexes?api-version=2026-04-01")
    assert status == 401 and "error" in json.loads(body)
    status, body = _raw(srv, "GET", "/indexes?api-version=2026-04-01", headers={"api-key": "nope"})
    assert status == 403 and json.loads(body)["error"]["code"] == "Forbidden"
    status, _ = _raw(srv, "GET", "/indexes", headers={"api-key": srv.api_key})
    assert status == 400
    q = SearchClient(srv.url, "hotels", AzureKeyCredential(srv.query_key))
    assert q.get_document_count() == 4 and list(q.search(search_text="lodge"))
    with pytest.raises(HttpResponseError) as e:
        q.upload_documents(documents=[{"id": "9"}])
    assert e.value.status_code == 403
    # the REST reference's path forms
    status, body = _raw(srv, "POST", "/indexes/hotels/docs/search?api-version=2024-07-01",
                        {"search": "lodge", "select": "id"}, {"api-key": srv.api_key})
    assert status == 200 and json.loads(body)["value"][0]["id"] == "4"
    status, body = _raw(srv, "POST", "/indexes/hotels/docs/index?api-version=2024-07-01",
                        {"value": [{"@search.action": "upload", "id": "bad key!"}, {"@search.action": "upload", "id": "5"}]},
                        {"api-key": srv.api_key})
    items = json.loads(body)["value"]
    assert status == 207 and [i["status"] for i in items] == [False, True] and "Invalid document key" in items[0]["errorMessage"]


def test_index_validation(srv):
    ic = SearchIndexClient(srv.url, AzureKeyCredential(srv.api_key))
    bad_dims = _index("bad")
    bad_dims.fields[-1].vector_search_dimensions = 5000
    no_profile = _index("bad")
    no_profile.fields[-1].vector_search_profile_name = "missing"
    no_key = _index("bad")
    no_key.fields[0].key = False
    for index, message in ((bad_dims, "dimensions"), (no_profile, "profile"), (no_key, "key field")):
        with pytest.raises(HttpResponseError, match=message):
            ic.create_index(index)
    ic.create_index(_index("ok"))
    changed = _index("ok")
    changed.fields[3].type = "Edm.Double"
    with pytest.raises(HttpResponseError, match="cannot be changed"):
        ic.create_or_update_index(changed)
    grown = ic.get_index("ok")
    grown.fields.append(m.SimpleField(name="city", type="Edm.String", filterable=True))
    ic.create_or_update_index(grown)
    assert "city" in {f.name for f in ic.get_index("ok").fields}


def test_indexing_limits(srv, clients):
    _, sc = clients
    with pytest.raises(HttpResponseError, match="1000"):
        sc.upload_documents(documents=[{"id": str(i)} for i in range(1001)])
    with pytest.raises(HttpResponseError, match="does not exist"):
        sc.upload_documents(documents=[{"id": "x", "nope": 1}])
    with pytest.raises(HttpResponseError, match="dimensionality"):
        sc.upload_documents(documents=[{"id": "x", "vec": [1.0, 2.0]}])
    srv.max_body_bytes = 2000
    try:
        # the SDK splits a batch the service answers 413 to: both halves then fit
        results = sc.upload_documents(documents=[{"id": f"b{i}", "description": "y" * 300} for i in range(8)])
        assert len(results) == 8 and all(r.succeeded for r in results)
        assert any(r.path.endswith("search.index") for r in srv.requests)
    finally:
        srv.max_body_bytes = 16 * 1024 * 1024


def test_scripted_failure_and_bad_filter(srv, clients):
    _, sc = clients
    srv.script(status=400, error_message="Service busy")  # (503 would be retried by the SDK)
    with pytest.raises(HttpResponseError, match="Service busy"):
        sc.get_document_count()
    with pytest.raises(HttpResponseError, match="Could not find a property"):
        list(sc.search(search_text="*", filter="nope eq 1"))
    with pytest.raises(HttpResponseError, match="Cannot compare"):
        list(sc.search(search_text="*", filter="rating eq 'high'"))


def test_python_m_serves(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "langchain_mesh.testing.azure_search", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "Azure AI Search test server" in proc.stdout.readline()
        ic = SearchIndexClient(f"http://127.0.0.1:{port}", AzureKeyCredential("test-key"))
        ic.create_index(_index())
        assert [i.name for i in ic.list_indexes()] == ["hotels"]
    finally:
        proc.terminate()
        proc.wait(5)


# ---- OData and ranking units --------------------------------------------------------------------------

FIELDS = {"s": {"type": "Edm.String"}, "n": {"type": "Edm.Double"}, "b": {"type": "Edm.Boolean"},
          "c": {"type": "Collection(Edm.String)"}, "nc": {"type": "Collection(Edm.Int32)"},
          "x": {"type": "Edm.String", "filterable": False}}


@pytest.mark.parametrize("expr,doc,want", [
    ("s eq 'a'", {"s": "a"}, True),
    ("s eq 'A'", {"s": "a"}, False),  # case-sensitive
    ("s ne 'a'", {}, True),  # null ne 'a'
    ("s eq null", {}, True),
    ("n gt 1", {}, False),
    ("n gt 1.5 and n le 2e0", {"n": 2}, True),
    ("1 lt n", {"n": 2}, True),
    ("not (b eq true) or s eq 'it''s'", {"b": True, "s": "it's"}, True),
    ("b", {"b": True}, True),
    ("c/any()", {"c": []}, False),
    ("c/any(v: v eq 'x' or search.in(v, 'y z'))", {"c": ["z"]}, True),
    ("c/all(v: v ne 'x')", {"c": ["y"]}, True),
    ("nc/any(v: v gt 3 and v lt 5)", {"nc": [1, 4]}, True),
    ("search.in(s, 'a,b', ',')", {"s": "b"}, True),
    ("search.in(s, 'a b')", {"s": None}, False),
    ("true", {}, True),
    ("((s eq 'a'))", {"s": "a"}, True),
])
def test_odata_evaluator(expr, doc, want):
    assert compile_filter(expr, FIELDS)(doc) is want


@pytest.mark.parametrize("expr", ["s eq", "s eq 1", "zz eq 1", "x eq 'a'", "c eq 'a'", "c/any(v: v gt 'a')",
                                  "n gt null", "s eq 'a' and", "search.in(n, '1')", "n"])
def test_odata_errors(expr):
    with pytest.raises(ODataError):
        compile_filter(expr, FIELDS)


def test_bm25_matches_the_formula():
    docs = {"a": {"t": "cat cat dog"}, "b": {"t": "dog"}, "c": {"t": "bird"}}
    got = bm25_scores("cat", docs, ["t"])
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    avgdl = 5 / 3
    want = idf * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 3 / avgdl))
    assert set(got) == {"a"} and got["a"] == pytest.approx(want)
    assert set(bm25_scores("cat dog", docs, ["t"], mode="all")) == {"a"}


def test_vector_scores_and_rrf():
    assert vector_score("cosine", [1, 0], [1, 0]) == pytest.approx(1.0)
    assert vector_score("cosine", [1, 0], [-1, 0]) == pytest.approx(1 / 3)
    assert vector_score("euclidean", [0, 0], [3, 4]) == pytest.approx(1 / 6)
    assert vector_score("dotProduct", [1, 1], [1, 1]) == pytest.approx(3.0)
    assert vector_score("dotProduct", [1, 1], [-1, -1]) == pytest.approx(1 / 3)
    assert rrf([["a", "b"], ["b", "c"]]) == [("b", pytest.approx(1 / 62 + 1 / 61)), ("a", pytest.approx(1 / 61)),
                                             ("c", pytest.approx(1 / 62))]
