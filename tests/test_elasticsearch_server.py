"""The local Elasticsearch server: wire format, honest BM25 / kNN / RRF, NRT refresh, aliases, bulk, and
third-party clients (the official client directly, langchain-elasticsearch's ElasticsearchStore)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytest.importorskip("elasticsearch")

from elasticsearch import ApiError, AuthorizationException, BadRequestError, Elasticsearch, NotFoundError  # noqa: E402

from langchain_mesh.testing.elasticsearch import analyze, lucene_length  # noqa: E402

COMPAT8 = "application/vnd.elasticsearch+json; compatible-with=8"


@pytest.fixture
def es(elasticsearch_server):
    client = Elasticsearch(elasticsearch_server.url)
    yield client
    client.close()


def _raw(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# ---- wire format -------------------------------------------------------------------------------------


def test_product_header_media_types_and_error_bodies(elasticsearch_server):
    url = elasticsearch_server.url
    status, headers, body = _raw(url + "/", headers={"Accept": COMPAT8})
    assert status == 200 and headers["X-Elastic-Product"] == "Elasticsearch"
    assert headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=8"
    assert json.loads(body)["tagline"] == "You Know, for Search"
    status, headers, body = _raw(url + "/nope/_search", "POST", {})
    assert status == 404 and headers["X-Elastic-Product"] == "Elasticsearch"
    assert headers["Content-Type"] == "application/json"
    err = json.loads(body)
    assert err["status"] == 404 and err["error"]["type"] == "index_not_found_exception"
    assert err["error"]["root_cause"][0]["reason"] == "no such index [nope]"
    status, headers, body = _raw(url + "/nope", "HEAD")
    assert status == 404 and body == b"" and headers["X-Elastic-Product"] == "Elasticsearch"
    # compatible-with must be this major or the one before, and match on Accept and Content-Type
    status, _, body = _raw(url + "/x/_search", "POST", {}, {"Accept": COMPAT8.replace("8", "7"),
                                                            "Content-Type": COMPAT8.replace("8", "7")})
    assert status == 400 and json.loads(body)["error"]["type"] == "media_type_header_exception"
    status, _, body = _raw(url + "/x/_search", "POST", {}, {"Accept": COMPAT8})
    assert status == 400 and json.loads(body)["error"]["type"] == "media_type_header_exception"


def test_python_module_starts_a_server(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "langchain_mesh.testing.elasticsearch", "--port", str(port),
                             "--license", "basic"], stdout=subprocess.PIPE, text=True)
    try:
        assert "Elasticsearch" in proc.stdout.readline()
        client = Elasticsearch(f"http://127.0.0.1:{port}")
        assert client.info()["version"]["number"].startswith("9.")
        assert client.license.get()["license"]["type"] == "basic"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


# ---- indices, documents, bulk ------------------------------------------------------------------------


def test_bulk_items_statuses_and_errors(es):
    es.indices.create(index="b", mappings={"properties": {"n": {"type": "long"}}})
    r = es.bulk(operations=[{"index": {"_index": "b", "_id": "1"}}, {"n": 1},
                            {"create": {"_index": "b", "_id": "1"}}, {"n": 2},
                            {"index": {"_index": "b", "_id": "2"}}, {"n": "abc"},
                            {"update": {"_index": "b", "_id": "9"}}, {"doc": {"n": 3}},
                            {"update": {"_index": "b", "_id": "1"}}, {"doc": {"m": "x"}},
                            {"delete": {"_index": "b", "_id": "nope"}}], refresh=True)
    statuses = [(k, v["status"], v.get("error", {}).get("type")) for it in r["items"] for k, v in it.items()]
    assert statuses == [("index", 201, None), ("create", 409, "version_conflict_engine_exception"),
                        ("index", 400, "document_parsing_exception"), ("update", 404, "document_missing_exception"),
                        ("update", 200, None), ("delete", 404, None)]
    assert r["errors"] is True
    assert es.get(index="b", id="1")["_source"] == {"n": 1, "m": "x"}
    with pytest.raises(BadRequestError):
        es.perform_request("POST", "/_bulk", body='{"index":{"_index":"b"}}\n{"n":1}',
                           headers={"content-type": "application/json"})  # no final newline


def test_near_real_time_refresh(es):
    es.indices.create(index="nrt", settings={"refresh_interval": "30s"})
    es.index(index="nrt", id="1", document={"t": "hello"})
    assert es.get(index="nrt", id="1")["found"]  # get is real-time
    assert es.search(index="nrt")["hits"]["total"]["value"] == 0  # search sees the last refresh
    es.indices.refresh(index="nrt")
    assert es.search(index="nrt")["hits"]["total"]["value"] == 1
    assert es.count(index="nrt")["count"] == 1


def test_dynamic_mapping_defaults_and_strict(es):
    es.index(index="dyn", id="1", document={"s": "Hello World", "n": 1, "f": 1.5, "b": True, "d": "2020-01-01",
                                            "o": {"x": "y"}}, refresh=True)
    props = es.indices.get_mapping(index="dyn")["dyn"]["mappings"]["properties"]
    assert props["s"] == {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    assert [props[k]["type"] for k in ("n", "f", "b", "d")] == ["long", "float", "boolean", "date"]
    assert props["o"] == {"properties": {"x": {"type": "text", "fields": {"keyword": {"type": "keyword",
                                                                                      "ignore_above": 256}}}}}
    assert es.search(index="dyn", query={"term": {"s.keyword": "Hello World"}})["hits"]["total"]["value"] == 1
    assert es.search(index="dyn", query={"term": {"s": "hello"}})["hits"]["total"]["value"] == 1
    es.indices.create(index="strict", mappings={"dynamic": "strict", "properties": {"a": {"type": "keyword"}}})
    with pytest.raises(ApiError) as info:
        es.index(index="strict", document={"b": 1})
    assert info.value.error == "strict_dynamic_mapping_exception"


def test_aliases_are_atomic(es):
    for name in ("v1", "v2"):
        es.indices.create(index=name)
    es.indices.update_aliases(actions=[{"add": {"index": "v1", "alias": "live"}}])
    with pytest.raises(NotFoundError):  # the second action fails: the first is not applied either
        es.indices.update_aliases(actions=[{"remove": {"index": "v1", "alias": "live"}},
                                           {"add": {"index": "missing", "alias": "live"}}])
    assert list(es.indices.get_alias(name="live")) == ["v1"]
    es.indices.update_aliases(actions=[{"remove": {"index": "v1", "alias": "live"}},
                                       {"add": {"index": "v2", "alias": "live"}}])
    assert list(es.indices.get_alias(name="live")) == ["v2"]
    with pytest.raises(BadRequestError):
        es.indices.delete(index="live")  # an alias is not deleted as an index
    with pytest.raises(BadRequestError):
        es.indices.update_aliases(actions=[{"add": {"index": "v1", "alias": "v2"}}])  # name taken by an index
    es.index(index="live", id="a", document={"x": 1}, refresh=True)  # writes go to the alias's index
    assert es.get(index="v2", id="a")["found"]
    r = es.reindex(source={"index": "live"}, dest={"index": "copy"}, refresh=True)
    assert r["created"] == 1 and es.count(index="copy")["count"] == 1
    assert es.delete_by_query(index="copy", query={"match_all": {}}, refresh=True)["deleted"] == 1


# ---- honest scoring ----------------------------------------------------------------------------------


def test_bm25_is_lucenes(es):
    docs = {"a": "the quick brown fox", "b": "the fox and the other fox jumped", "c": "lazy dog", "d": "fox"}
    es.bulk(operations=[x for i, t in docs.items() for x in ({"index": {"_index": "bm", "_id": i}}, {"t": t})],
            refresh=True)
    hits = {h["_id"]: h["_score"] for h in es.search(index="bm", query={"match": {"t": "fox dog"}})["hits"]["hits"]}
    n = len(docs)
    lengths = {i: len(analyze(t)) for i, t in docs.items()}
    avgdl = sum(lengths.values()) / n

    def term(t, i):
        tf = analyze(docs[i]).count(t)
        df = sum(t in analyze(x) for x in docs.values())
        if not tf:
            return 0.0
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * 2.2 * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * lengths[i] / avgdl))

    assert set(hits) == {"a", "b", "c", "d"}
    for i in hits:
        assert hits[i] == pytest.approx(term("fox", i) + term("dog", i), rel=1e-9)
    # the same scores as knowledge_banks' own BM25 with the same analysis
    from knowledge_banks.lexical import BM25Index, Tokenizer

    ours = BM25Index(Tokenizer(stemmer=None, stopwords=None), k1=1.2, b=0.75)
    ours.add_many(docs.items())
    assert dict(ours.search("fox dog", k=10)) == pytest.approx(hits, rel=1e-5)
    assert analyze("Don't STOP: U.S.A. wi-fi foo_bar") == ["don't", "stop", "u.s.a", "wi", "fi", "foo_bar"]
    assert [lucene_length(n) for n in (1, 23, 24, 30, 40, 41, 100)] == [1, 23, 24, 30, 40, 40, 96]


def test_bm25_operator_and_custom_similarity(es):
    es.indices.create(index="sim", settings={"similarity": {"my": {"type": "BM25", "k1": 2.0, "b": 0.0}}},
                      mappings={"properties": {"t": {"type": "text", "similarity": "my"}}})
    es.bulk(operations=[{"index": {"_index": "sim", "_id": "1"}}, {"t": "a b"},
                        {"index": {"_index": "sim", "_id": "2"}}, {"t": "a a a a c"}], refresh=True)
    r = es.search(index="sim", query={"match": {"t": {"query": "a b", "operator": "and"}}})
    assert [h["_id"] for h in r["hits"]["hits"]] == ["1"]
    s2 = es.search(index="sim", query={"match": {"t": "c"}})["hits"]["hits"][0]["_score"]
    assert s2 == pytest.approx(math.log(1 + 1.5 / 1.5) * 3.0 * 1 / (1 + 2.0))  # b=0: length ignored


@pytest.mark.parametrize("similarity,vector,expected", [
    ("cosine", [0.6, 0.8], (1 + 0.6) / 2),
    ("dot_product", [0.6, 0.8], (1 + 0.6) / 2),
    ("l2_norm", [3.0, 4.0], 1 / (1 + (2.0**2 + 4.0**2))),
    ("max_inner_product", [-2.0, 0.0], 1 / (1 + 2.0)),
    ("max_inner_product", [3.0, 1.0], 3.0 + 1),
])
def test_knn_score_transforms(es, similarity, vector, expected):
    es.indices.create(index="v", mappings={"properties": {"v": {"type": "dense_vector", "dims": 2,
                                                                "similarity": similarity}}})
    es.index(index="v", id="1", document={"v": vector}, refresh=True)
    hit = es.search(index="v", knn={"field": "v", "query_vector": [1.0, 0.0], "k": 1, "num_candidates": 5})
    assert hit["hits"]["hits"][0]["_score"] == pytest.approx(expected)


def test_knn_validation_and_filters(es):
    es.indices.create(index="kv", mappings={"properties": {"v": {"type": "dense_vector", "dims": 2,
                                                                 "similarity": "dot_product"},
                                                           "k": {"type": "keyword"}}})
    with pytest.raises(BadRequestError, match="unit-length"):
        es.index(index="kv", id="x", document={"v": [3.0, 4.0]})
    es.bulk(operations=[{"index": {"_index": "kv", "_id": "1"}}, {"v": [1.0, 0.0], "k": "a"},
                        {"index": {"_index": "kv", "_id": "2"}}, {"v": [0.0, 1.0], "k": "b"}], refresh=True)
    r = es.search(index="kv", knn={"field": "v", "query_vector": [1.0, 0.0], "k": 2, "num_candidates": 2,
                                   "filter": {"term": {"k": "b"}}})
    assert [h["_id"] for h in r["hits"]["hits"]] == ["2"]
    for bad in ({"k": 5, "num_candidates": 2}, {"k": 1, "num_candidates": 10_001}):
        with pytest.raises(BadRequestError):
            es.search(index="kv", knn={"field": "v", "query_vector": [1.0, 0.0], **bad})
    with pytest.raises(BadRequestError, match="dimensions"):
        es.search(index="kv", knn={"field": "v", "query_vector": [1.0, 0.0, 0.0], "k": 1, "num_candidates": 2})


def test_rrf_retriever_math_and_licence(elasticsearch_server, es):
    es.indices.create(index="r", mappings={"properties": {"v": {"type": "dense_vector", "dims": 2,
                                                                "similarity": "cosine"}, "t": {"type": "text"}}})
    es.bulk(operations=[x for i, (t, v) in {"1": ("apple", [1, 0]), "2": ("apple apple pear", [0, 1]),
                                            "3": ("pear", [1, 1])}.items()
                        for x in ({"index": {"_index": "r", "_id": i}}, {"t": t, "v": v})], refresh=True)
    retriever = {"rrf": {"retrievers": [{"standard": {"query": {"match": {"t": "apple"}}}},
                                        {"knn": {"field": "v", "query_vector": [1, 0], "k": 3, "num_candidates": 3}}],
                         "rank_constant": 10, "rank_window_size": 3}}
    r = es.search(index="r", retriever=retriever, size=3)
    # BM25 ranks 1 ("apple", short) before 2 (tf 2 but longer); kNN ranks 1, 3, 2
    expected = {"1": 1 / 11 + 1 / 11, "2": 1 / 12 + 1 / 13, "3": 1 / 12}
    assert [(h["_id"], h["_score"]) for h in r["hits"]["hits"]] == \
        [(i, pytest.approx(s)) for i, s in sorted(expected.items(), key=lambda kv: -kv[1])]
    with pytest.raises(BadRequestError, match="rank_window_size"):
        es.search(index="r", retriever=retriever, size=5)
    elasticsearch_server.license = "basic"
    with pytest.raises(AuthorizationException) as info:
        es.search(index="r", retriever=retriever, size=3)
    assert info.value.meta.status == 403 and info.value.error == "security_exception"
    assert "Reciprocal Rank Fusion" in str(info.value)


# ---- third-party client: langchain-elasticsearch -------------------------------------------------------


def test_langchain_elasticsearch_strategies(elasticsearch_server):
    lces = pytest.importorskip("langchain_elasticsearch")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    emb = DeterministicFakeEmbedding(size=16)
    texts = ["the cat sat on the mat", "dogs bark loudly", "a cat and a dog", "stock markets fell"]
    metas = [{"kind": "pet"}, {"kind": "dog"}, {"kind": "pet"}, {"kind": "news"}]
    ids = ["1", "2", "3", "4"]
    vec = {t: emb.embed_query(t) for t in texts}
    q = "cat"
    qv = emb.embed_query(q)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    dense_order = sorted(ids, key=lambda i: -cos(qv, vec[texts[int(i) - 1]]))

    dense = lces.ElasticsearchStore(index_name="lc-dense", embedding=emb, es_url=elasticsearch_server.url,
                                    strategy=lces.DenseVectorStrategy())
    dense.add_texts(texts, metadatas=metas, ids=ids)
    got = dense.similarity_search_with_score(q, k=4)
    assert [d.page_content for d, _ in got] == [texts[int(i) - 1] for i in dense_order]
    assert [s for _, s in got] == pytest.approx([(1 + cos(qv, vec[texts[int(i) - 1]])) / 2 for i in dense_order])
    filtered = dense.similarity_search(q, k=4, filter=[{"term": {"metadata.kind.keyword": "pet"}}])
    assert {d.metadata["kind"] for d in filtered} == {"pet"} and len(filtered) == 2
    dense.delete(ids=["1"])
    assert len(dense.similarity_search(q, k=4)) == 3

    bm25 = lces.ElasticsearchStore(index_name="lc-bm25", es_url=elasticsearch_server.url,
                                   strategy=lces.BM25Strategy(k1=1.2, b=0.75))
    bm25.add_texts(texts, metadatas=metas, ids=ids)
    assert {d.page_content for d in bm25.similarity_search(q, k=4)} == {texts[0], texts[2]}

    hybrid = lces.ElasticsearchStore(index_name="lc-hybrid", embedding=emb, es_url=elasticsearch_server.url,
                                     strategy=lces.DenseVectorStrategy(hybrid=True))
    hybrid.add_texts(texts, metadatas=metas, ids=ids)
    got = [d.page_content for d in hybrid.similarity_search(q, k=4)]
    lexical = sorted(["1", "3"], key=lambda i: len(analyze(texts[int(i) - 1])))  # same tf: shorter first
    from knowledge_banks.fusion import reciprocal_rank_fusion

    expected = [i for i, _ in reciprocal_rank_fusion([lexical, dense_order])]
    assert got == [texts[int(i) - 1] for i in expected]
    search = [r.json for r in elasticsearch_server.requests if r.path.endswith("/_search")][-1]
    assert "rrf" in search["retriever"]

    elasticsearch_server.license = "basic"  # as on a real Basic cluster, the library's RRF hybrid is refused
    with pytest.raises(AuthorizationException):
        hybrid.similarity_search(q, k=2)
    linear = lces.ElasticsearchStore(index_name="lc-hybrid", embedding=emb, es_url=elasticsearch_server.url,
                                     strategy=lces.DenseVectorStrategy(hybrid=True, rrf=False))
    got = linear.similarity_search(q, k=4)  # knn + query: scores summed, no licence needed
    assert {d.page_content for d in got} == set(texts)
