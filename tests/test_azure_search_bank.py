"""AzureSearchBankEngine: versions as indexes, an alias as the atomic current pointer."""

from __future__ import annotations

import pytest

pytest.importorskip("azure.search.documents")

from knowledge_banks.azure_search_bank import AzureSearchBankEngine  # noqa: E402

from test_azure_search_store import BagOfWords  # noqa: E402 - tests/ is on sys.path (rootdir)


@pytest.fixture
def engine(azure_search_server, monkeypatch):
    monkeypatch.setenv("MESH_TEST_AZ_KEY", azure_search_server.api_key)
    return AzureSearchBankEngine("Docs KB", {"endpoint": azure_search_server.url, "key": "{{env:MESH_TEST_AZ_KEY}}",
                                             "index_prefix": "mesh", "vector_algorithm": "exhaustive_knn",
                                             "metric": "cosine"},
                                 BagOfWords(), metadata_schema={"year": "int"})


def _ids(store, q="text", k=20):
    return sorted(d.id for d in store.similarity_search(q, k=k))


def test_commit_switches_readers_atomically(engine, azure_search_server):
    srv = azure_search_server
    reader = engine.open_current()
    assert reader.index_name == "mesh-docs-kb" and _ids(reader) == []
    w1 = engine.stage(clear=False)
    assert w1.index_name == "mesh-docs-kb-v000001"
    w1.add_texts(["first text", "second text"], [{"year": 2020}, {"year": 2021}], ids=["a", "b"])
    assert _ids(reader) == []  # nothing visible before the commit
    engine.commit(w1)
    assert _ids(reader) == ["a", "b"]
    fields = {f["name"]: f["type"] for f in srv.indexes["mesh-docs-kb-v000001"].definition["fields"]}
    assert fields["year"] == "Edm.Int64"

    w2 = engine.stage(clear=False)  # a copy of v1, vectors included
    assert w2.index_name == "mesh-docs-kb-v000002" and _ids(w2) == ["a", "b"]
    w2.add_texts(["third text"], [{"year": 2022}], ids=["c"])
    w2.delete(["a"])
    assert _ids(reader) == ["a", "b"]
    srv.reset()
    engine.commit(w2)
    alias_puts = [r for r in srv.requests if r.method == "PUT" and r.path.startswith("/aliases")]
    assert len(alias_puts) == 1 and alias_puts[0].json["indexes"] == ["mesh-docs-kb-v000002"]
    assert _ids(reader) == ["b", "c"]
    assert reader.similarity_search("third", k=1, filter={"year": {"$gte": 2022}})[0].id == "c"
    versions = engine.versions()
    assert [(v.id, v.documents, v.current) for v in versions] == [("v000001", 2, False), ("v000002", 2, True)]
    assert versions[0].created_at < versions[1].created_at

    # a reader opened before a commit that adds a metadata key can filter on that key
    w3 = engine.stage(clear=False)
    w3.add_texts(["fourth text"], [{"lang": "fr"}], ids=["d"])
    engine.commit(w3)
    assert [d.id for d in reader.similarity_search("text", k=5, filter={"lang": "fr"})] == ["d"]

    engine.rollback("v000001")
    assert _ids(reader) == ["a", "b"]
    assert reader.similarity_search("text", k=5, filter={"lang": "fr"}) == []  # v1 has no "lang" field
    with pytest.raises(ValueError, match="no version"):
        engine.rollback("v000009")


def test_interrupted_writer_leaves_the_old_index_live(engine, azure_search_server, monkeypatch):
    w1 = engine.stage(clear=False)
    w1.add_texts(["old text"], ids=["old"])
    engine.commit(w1)
    reader = engine.open_current()

    crashed = engine.stage(clear=True)  # a writer that dies after writing, before committing
    crashed.add_texts(["new text"], ids=["new"])
    assert _ids(reader) == ["old"]
    assert [v.id for v in engine.versions()] == ["v000001"]  # a staged index is not a version

    broken = engine.stage(clear=False)  # a commit that fails before the alias moves
    broken.add_texts(["other text"], ids=["other"])
    monkeypatch.setattr(engine, "_point_alias", lambda name: (_ for _ in ()).throw(ConnectionError("network down")))
    with pytest.raises(ConnectionError):
        engine.commit(broken)
    assert _ids(reader) == ["old"] and engine.current_index() == "mesh-docs-kb-v000001"
    monkeypatch.undo()

    engine.discard(crashed)
    assert "mesh-docs-kb-v000002" not in azure_search_server.indexes
    w = engine.stage(clear=False)
    assert w.index_name == "mesh-docs-kb-v000004" and _ids(w) == ["old"]


def test_empty_first_commit_and_pruning(azure_search_server):
    engine = AzureSearchBankEngine("kb", {"endpoint": azure_search_server.url, "key": azure_search_server.api_key,
                                          "keep_versions": 2}, BagOfWords())
    engine.commit(engine.stage(clear=True))  # no document, no current version: still a valid empty bank
    assert [(v.id, v.documents, v.current) for v in engine.versions()] == [("v000001", 0, True)]
    for i in range(3):
        w = engine.stage(clear=False)
        w.add_texts([f"text {i}"], ids=[f"d{i}"])
        engine.commit(w)
    versions = engine.versions()
    assert [v.id for v in versions] == ["v000003", "v000004"] and versions[-1].current
    assert _ids(engine.open_current()) == ["d0", "d1", "d2"]


def test_settings_are_validated(azure_search_server):
    with pytest.raises(ValueError, match="endpoint"):
        AzureSearchBankEngine("kb", {}, BagOfWords())
    with pytest.raises(ValueError, match="unknown"):
        AzureSearchBankEngine("kb", {"endpoint": "http://x", "key": "k", "flavour": 1}, BagOfWords())
    from langchain_mesh.errors import MeshError

    with pytest.raises(MeshError, match="MESH_NOT_SET"):
        AzureSearchBankEngine("kb", {"endpoint": "http://x", "key": "{{env:MESH_NOT_SET}}"}, BagOfWords())
