"""ElasticsearchBankEngine: versions as physical indices behind an alias, swapped atomically."""

from __future__ import annotations

import threading
import uuid

import pytest

pytest.importorskip("elasticsearch")

from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402

from knowledge_banks.elasticsearch_bank import ElasticsearchBankEngine  # noqa: E402


def _engine(server, **settings):
    return ElasticsearchBankEngine(f"kb_{uuid.uuid4().hex[:6]}", {"es_url": server.url, **settings},
                                   DeterministicFakeEmbedding(size=8))


def _write(engine, texts, clear=False):
    staged = engine.stage(clear=clear)
    staged.add_texts(texts, ids=texts)
    return engine.commit(staged)


def test_stage_commit_swaps_the_alias_in_one_request(elasticsearch_server):
    eng = _engine(elasticsearch_server, index_prefix="Team", index_options={"type": "int8_hnsw"})
    assert eng.alias.startswith("team-kb_")
    reader = eng.open_current()
    assert reader.similarity_search("a") == [] and eng.versions() == []
    assert _write(eng, ["a", "b"]) == "v000001"
    assert {d.id for d in reader.similarity_search("a", k=10)} == {"a", "b"}  # the reader follows the alias
    elasticsearch_server.reset()
    staged = eng.stage(clear=False)  # a copy of the current documents
    assert staged.index_name == f"{eng.alias}-v000002"
    assert {d.id for d in staged.get_by_ids(["a", "b"])} == {"a", "b"}
    staged.add_texts(["c"], ids=["c"])
    staged.delete(["a"])
    assert {d.id for d in reader.similarity_search("a", k=10)} == {"a", "b"}  # not visible before the commit
    eng.commit(staged)
    swaps = [r.json for r in elasticsearch_server.requests if r.path == "/_aliases"]
    assert swaps == [{"actions": [{"remove": {"index": f"{eng.alias}-v000001", "alias": eng.alias}},
                                  {"add": {"index": f"{eng.alias}-v000002", "alias": eng.alias,
                                           "is_write_index": True}}]}]
    assert {d.id for d in reader.similarity_search("a", k=10)} == {"b", "c"}
    mapping = elasticsearch_server.indices[staged.index_name].mappings
    assert mapping["properties"]["vector"]["index_options"] == {"type": "int8_hnsw"}
    assert [(v.id, v.documents, v.current) for v in eng.versions()] == [("v000001", 2, False), ("v000002", 2, True)]


def test_interrupted_writer_leaves_the_old_index_live(elasticsearch_server):
    eng = _engine(elasticsearch_server)
    _write(eng, ["a", "b"])
    reader = eng.open_current()
    staged = eng.stage(clear=True)
    try:
        staged.add_texts(["x"], ids=["x"])
        raise RuntimeError("writer crashed mid-write")
    except RuntimeError:
        eng.discard(staged)
    assert {d.id for d in reader.similarity_search("a", k=10)} == {"a", "b"}
    assert staged.index_name not in elasticsearch_server.indices
    # a writer that died without discarding: alias untouched, its index is not a version, and is swept later
    dead = eng.stage(clear=False)
    dead.add_texts(["y"], ids=["y"])
    assert {d.id for d in reader.similarity_search("a", k=10)} == {"a", "b"}
    assert [v.id for v in eng.versions()] == ["v000001"]
    import knowledge_banks.elasticsearch_bank as mod

    old = mod._STALE_STAGING_S
    mod._STALE_STAGING_S = -1.0
    try:
        fresh = eng.stage(clear=False)  # sweeps the dead writer's index first
    finally:
        mod._STALE_STAGING_S = old
    assert fresh.get_by_ids(["y"]) == [] and {d.id for d in fresh.get_by_ids(["a", "b"])} == {"a", "b"}
    assert [n for n in elasticsearch_server.indices if n.startswith(eng.alias)] == \
        [f"{eng.alias}-v000001", fresh.index_name]
    with pytest.raises(ValueError):
        eng.discard(eng.open_current())  # never the live alias


def test_readers_never_see_a_half_written_bank(elasticsearch_server):
    eng = _engine(elasticsearch_server)
    _write(eng, [f"old{i}" for i in range(5)])
    reader = eng.open_current()
    seen, stop = set(), threading.Event()

    def poll():
        while not stop.is_set():
            seen.add(frozenset(d.id for d in reader.similarity_search("q", k=50)))

    t = threading.Thread(target=poll)
    t.start()
    try:
        for n in range(3):
            staged = eng.stage(clear=True)
            for i in range(4):
                staged.add_texts([f"new{n}-{i}"], ids=[f"new{n}-{i}"])
            eng.commit(staged)
    finally:
        stop.set()
        t.join()
    complete = {frozenset(f"old{i}" for i in range(5))} | {frozenset(f"new{n}-{i}" for i in range(4))
                                                           for n in range(3)}
    assert seen <= complete and len(seen) >= 2


def test_retention_and_rollback(elasticsearch_server):
    eng = _engine(elasticsearch_server)
    for n in range(1, 4):
        _write(eng, [f"doc{n}"], clear=True)
    assert [v.id for v in eng.versions()] == ["v000002", "v000003"]  # one previous version kept
    assert sorted(n for n in elasticsearch_server.indices if n.startswith(eng.alias)) == \
        [f"{eng.alias}-v000002", f"{eng.alias}-v000003"]
    eng.rollback("v000002")
    assert [d.id for d in eng.open_current().similarity_search("x", k=5)] == ["doc2"]
    assert [v.id for v in eng.versions() if v.current] == ["v000002"]
    with pytest.raises(ValueError, match="no version"):
        eng.rollback("v000001")
    assert eng.stage(clear=False).index_name == f"{eng.alias}-v000004"  # numbers never reused


def test_settings_secrets_and_validation(elasticsearch_server, monkeypatch):
    monkeypatch.setenv("MESH_TEST_ES_URL", elasticsearch_server.url)
    eng = ElasticsearchBankEngine("docs", {"es_url": "{{env:MESH_TEST_ES_URL}}", "similarity": "l2_norm"},
                                  DeterministicFakeEmbedding(size=8), metadata_schema={"year": "int"})
    assert eng.alias == "mesh-kb-docs"
    staged = eng.stage(clear=True)
    staged.add_texts(["t"], [{"year": 2020}], ids=["t"])
    eng.commit(staged)
    props = elasticsearch_server.indices[staged.index_name].mappings["properties"]
    assert props["metadata"]["properties"]["year"]["type"] == "long"
    assert props["vector"]["similarity"] == "l2_norm"
    from langchain_mesh.errors import MeshError

    with pytest.raises(ValueError, match="unknown elasticsearch settings"):
        ElasticsearchBankEngine("d", {"es_url": "http://x", "shards": 3}, None)
    with pytest.raises(MeshError, match="es_url"):
        ElasticsearchBankEngine("d", {}, None)
    monkeypatch.delenv("MESH_TEST_ES_URL")
    with pytest.raises(Exception, match="MESH_TEST_ES_URL"):
        ElasticsearchBankEngine("d", {"es_url": "{{env:MESH_TEST_ES_URL}}"}, None)
