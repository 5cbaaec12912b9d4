"""FaissVectorStore: LangChain's standard suite (flat and HNSW), persistence, filters, scores, MMR."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from blake3 import blake3

pytest.importorskip("faiss")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from knowledge_banks import FaissVectorStore  # noqa: E402
from knowledge_banks import persistence  # noqa: E402
from knowledge_banks.filters import FilterError, compile_filter  # noqa: E402
from knowledge_banks.persistence import StoreFormatError, UnsupportedFormatError  # noqa: E402


def _embeddings():
    from langchain_mesh import Mesh

    mesh = Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})
    try:
        from langchain_mesh.langchain import MeshEmbeddings
    except ImportError:  # pragma: no cover - before the LangChain adapters land
        from langchain_core.embeddings import DeterministicFakeEmbedding

        return DeterministicFakeEmbedding(size=64)
    return MeshEmbeddings(model="scripted:fake:embed", mesh=mesh)


@pytest.fixture(scope="module")
def emb():
    return _embeddings()


# ---- LangChain's standard suite ----------------------------------------------------------------------


class TestFlatStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        yield FaissVectorStore(embedding=self.get_embeddings())

    @property
    def has_get_by_ids(self) -> bool:
        return True


class TestHnswStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        yield FaissVectorStore(embedding=self.get_embeddings(), index="hnsw", index_params={"M": 16})

    @property
    def has_get_by_ids(self) -> bool:
        return True


class TestL2IvfStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        yield FaissVectorStore(embedding=self.get_embeddings(), distance="l2", index="ivf",
                               index_params={"nlist": 2, "train_size": 4})

    @property
    def has_get_by_ids(self) -> bool:
        return True


# ---- corpus helpers ----------------------------------------------------------------------------------

DOCS = [
    Document(page_content="the cat sat on the mat", metadata={"kind": "pet", "year": 2019, "tags": ["a", "b"]},
             id="cat"),
    Document(page_content="dogs chase cats in the park", metadata={"kind": "pet", "year": 2021}, id="dog"),
    Document(page_content="stock markets fell sharply today", metadata={"kind": "news", "year": 2023}, id="stock"),
    Document(page_content="the central bank raised interest rates", metadata={"kind": "news", "year": 2024,
                                                                              "draft": True}, id="bank"),
    Document(page_content="a recipe for lemon cake", metadata={"kind": "food", "year": 2020, "id": "meta-id"},
             id="cake"),
]


def _store(emb, **kw):
    store = FaissVectorStore(embedding=emb, **kw)
    store.add_documents(DOCS)
    return store


# ---- basics ------------------------------------------------------------------------------------------


def test_ids_metadata_id_and_no_mutation(emb):
    docs = [Document(page_content=d.page_content, metadata=dict(d.metadata), id=d.id) for d in DOCS]
    store = FaissVectorStore(embedding=emb)
    assert store.add_documents(docs) == [d.id for d in DOCS]
    assert docs == DOCS
    got = store.get_by_ids(["cake", "missing", "cat"])
    assert [d.id for d in got] == ["cake", "cat"]
    assert got[0].metadata["id"] == "meta-id" and got[0].id == "cake"
    got[0].metadata["kind"] = "changed"
    got[1].metadata["tags"].append("c")
    assert store.get_by_ids(["cake"])[0].metadata["kind"] == "food"
    assert store.get_by_ids(["cat"])[0].metadata["tags"] == ["a", "b"]


def test_readd_replaces_and_delete_tolerates_missing(emb):
    for index in ("flat", "hnsw", "ivf"):
        store = _store(emb, index=index, index_params={"nlist": 2, "train_size": 3})
        store.add_texts(["lemon tart with cream"], [{"kind": "food"}], ids=["cake"])
        assert len(store) == len(DOCS)
        assert store.similarity_search("lemon tart with cream", k=1)[0].page_content == "lemon tart with cream"
        assert store.delete(["cake", "nope"]) is True
        assert len(store) == len(DOCS) - 1
        assert all(d.id != "cake" for d in store.similarity_search("lemon", k=10))


def test_hnsw_tombstones_compact_and_stay_correct(emb):
    store = FaissVectorStore(embedding=emb, index="hnsw")
    texts = [f"document number {i} about topic{i % 7}" for i in range(300)]
    store.add_texts(texts, ids=[str(i) for i in range(300)])
    store.delete([str(i) for i in range(0, 300, 2)])
    assert len(store) == 150
    assert store._vi.ntotal == 150 and len(store._vi._tombstones) < 150  # compacted at least once
    hits = store.similarity_search("document number 7 about topic0", k=20)
    assert hits[0].id == "7" and all(int(d.id) % 2 == 1 for d in hits)


def test_ivf_trains_when_large_enough(emb, tmp_path):
    store = FaissVectorStore(embedding=emb, index="ivf", index_params={"nlist": 4, "train_size": 40, "nprobe": 4})
    store.add_texts([f"text {i} w{i % 5}" for i in range(20)])
    assert store._vi.active_kind == "flat"
    ids = store.add_texts([f"text {i} w{i % 5}" for i in range(20, 60)])
    assert store._vi.active_kind == "ivf"
    assert store.similarity_search("text 33 w3", k=1)[0].page_content == "text 33 w3"
    store.delete(ids[:5])
    store.save(tmp_path / "ivf")
    loaded = FaissVectorStore.load(tmp_path / "ivf", emb)
    assert loaded._vi.active_kind == "ivf" and len(loaded) == 55
    assert loaded.similarity_search("text 33 w3", k=1)[0].page_content == "text 33 w3"


def test_dimension_mismatch_and_bad_metadata(emb):
    store = _store(emb)
    with pytest.raises(ValueError, match="dimensions"):
        store.add_embeddings(["x"], [[0.1, 0.2]])
    with pytest.raises(TypeError, match="JSON"):
        store.add_texts(["x"], [{"when": object()}])
    with pytest.raises(ValueError):
        FaissVectorStore(embedding=emb, distance="manhattan")


# ---- scores, MMR, retriever --------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["cosine", "l2", "ip"])
def test_relevance_scores_in_unit_interval_and_ordered(emb, distance):
    store = _store(emb, distance=distance)
    results = store.similarity_search_with_relevance_scores("the cat sat on the mat", k=5)
    scores = [s for _, s in results]
    assert results[0][0].id == "cat"
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    raw = [s for _, s in store.similarity_search_with_score("the cat sat on the mat", k=5)]
    assert raw == (sorted(raw) if distance == "l2" else sorted(raw, reverse=True))
    thresholded = store.similarity_search_with_relevance_scores("the cat sat on the mat", k=5, score_threshold=0.99)
    assert [d.id for d, _ in thresholded] == ["cat"]


def test_mmr_prefers_diversity(emb):
    store = FaissVectorStore(embedding=emb)
    store.add_texts(["apple banana cherry", "apple banana cherry", "apple banana cherry date",
                     "apple pie recipe", "banana bread"], ids=["d1", "d2", "d3", "p", "b"])
    plain = [d.id for d in store.similarity_search("apple banana cherry", k=2)]
    mmr = [d.id for d in store.max_marginal_relevance_search("apple banana cherry", k=2, fetch_k=5, lambda_mult=0.3)]
    assert set(plain) <= {"d1", "d2", "d3"}
    assert mmr[0] in {"d1", "d2"} and mmr[1] not in {"d1", "d2"}


def test_retriever_search_types(emb):
    store = _store(emb)
    assert len(store.as_retriever(search_kwargs={"k": 2}).invoke("cat")) == 2
    assert len(store.as_retriever(k=1).invoke("cat")) == 1
    r = store.as_retriever(search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99})
    assert [d.id for d in r.invoke("the cat sat on the mat")] == ["cat"]
    assert len(store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5}).invoke("cat")) == 3
    hyb = store.as_retriever(search_type="hybrid", search_kwargs={"k": 2, "filter": {"kind": "news"}})
    assert {d.id for d in hyb.invoke("interest rates")} == {"bank", "stock"}
    assert store.as_retriever(search_type="keyword", k=1).invoke("lemon")[0].id == "cake"
    with pytest.raises(ValueError):
        store.as_retriever(search_type="bogus")
    with pytest.raises(ValueError, match="semantic_hybrid_search"):  # Azure AI Search's alone
        store.as_retriever(search_type="semantic_hybrid").invoke("cat")


async def test_async_variants(emb):
    store = FaissVectorStore(embedding=emb)
    await store.aadd_documents(DOCS)
    assert (await store.asimilarity_search("the cat sat on the mat", k=1))[0].id == "cat"
    assert (await store.ahybrid_search("lemon cake", k=1))[0].id == "cake"
    assert len(await store.amax_marginal_relevance_search("cat", k=2)) == 2
    rel = await store.asimilarity_search_with_relevance_scores("cat", k=3)
    assert all(0 <= s <= 1 for _, s in rel)
    afrom = await FaissVectorStore.afrom_texts(["x y", "y z"], emb, ids=["1", "2"])
    assert len(afrom) == 2


# ---- filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,expected", [
    ({"kind": "pet"}, {"cat", "dog"}),
    ({"kind": {"$eq": "news"}}, {"stock", "bank"}),
    ({"kind": {"$ne": "pet"}}, {"stock", "bank", "cake"}),
    ({"kind": {"$in": ["food", "news"]}}, {"stock", "bank", "cake"}),
    ({"kind": {"$nin": ["food", "news"]}}, {"cat", "dog"}),
    ({"year": {"$gt": 2021}}, {"stock", "bank"}),
    ({"year": {"$gte": 2021}}, {"dog", "stock", "bank"}),
    ({"year": {"$lt": 2020}}, {"cat"}),
    ({"year": {"$lte": 2020}}, {"cat", "cake"}),
    ({"year": {"$gte": 2020, "$lt": 2023}}, {"dog", "cake"}),
    ({"kind": "news", "year": 2024}, {"bank"}),
    ({"$and": [{"kind": "pet"}, {"year": {"$gt": 2020}}]}, {"dog"}),
    ({"$or": [{"kind": "food"}, {"year": 2019}]}, {"cake", "cat"}),
    ({"$or": [{"kind": "food"}, {"$and": [{"kind": "news"}, {"draft": True}]}]}, {"cake", "bank"}),
    ({"$not": {"kind": "pet"}}, {"stock", "bank", "cake"}),
    ({"draft": {"$exists": True}}, {"bank"}),
    ({"draft": {"$ne": True}}, {"cat", "dog", "stock", "cake"}),
    ({"tags": "a"}, {"cat"}),
    ({"tags": {"$in": ["b", "z"]}}, {"cat"}),
    ({"id": "meta-id"}, {"cake"}),
    ({"year": {"$gt": "2000"}}, set()),
])
def test_filters_in_store(emb, spec, expected):
    store = _store(emb)
    pred = compile_filter(spec)
    assert {d.id for d in DOCS if pred(d.metadata)} == expected
    got = store.similarity_search("anything at all", k=10, filter=spec, fetch_k=1)  # forces widening
    assert {d.id for d in got} == expected
    assert {d.id for d, _ in store.hybrid_search_with_score("cat bank", k=10, filter=spec)} == expected


def test_filter_true_top_k_and_callable(emb):
    store = _store(emb)
    best = store.similarity_search("the central bank raised interest rates", k=1, filter={"kind": "news"}, fetch_k=1)
    assert best[0].id == "bank"
    assert [d.id for d in store.similarity_search("cake", k=5, filter=lambda md: md.get("year") == 2020)] == ["cake"]


@pytest.mark.parametrize("bad", [{"a": {"$regex": "x"}}, {"$xor": []}, {"a": {"$in": "x"}}, {"$and": []},
                                 {"a": {"$gt": None}}, {"a": {"$eq": 1, "b": 2}}, "kind=pet"])
def test_malformed_filters_raise(bad):
    with pytest.raises(FilterError):
        compile_filter(bad)


def test_bool_is_not_int_in_filters():
    assert not compile_filter({"n": 1})({"n": True})
    assert not compile_filter({"n": {"$gt": 0}})({"n": True})
    assert compile_filter({"n": True})({"n": True})


# ---- persistence -------------------------------------------------------------------------------------


def test_round_trip_without_pickle(emb, tmp_path):
    store = _store(emb, index="hnsw", index_params={"M": 8}, bm25_params={"k1": 1.0})
    path = store.save(tmp_path / "bank")
    names = sorted(os.listdir(path))
    assert len(names) == 3 and names[2] == "manifest.json"
    assert names[0].startswith("docstore-") and names[0].endswith(".jsonl")
    assert names[1].startswith("index-") and names[1].endswith(".faiss")
    for name in names:
        assert not (path / name).read_bytes().startswith(b"\x80")  # no pickle protocol header
    lines = (path / names[0]).read_text().splitlines()
    assert json.loads(lines[0]) == {"format": "langchain-mesh.docstore", "format_version": 1, "count": 5}
    assert {json.loads(line)["id"] for line in lines[1:]} == {d.id for d in DOCS}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "langchain-mesh.faiss-store" and manifest["format_version"] == 1
    assert manifest["dimensions"] == 64 and manifest["distance"] == "cosine" and manifest["index"] == "hnsw"
    assert manifest["index_params"] == {"M": 8} and manifest["bm25"] == {"k1": 1.0}

    import faiss

    assert faiss.read_index(str(path / names[1])).ntotal == 5
    loaded = FaissVectorStore.load(path, emb)
    assert loaded.index_type == "hnsw" and loaded.bm25_params == {"k1": 1.0}
    assert sorted(loaded.get_by_ids([d.id for d in DOCS]), key=lambda d: d.id) == sorted(DOCS, key=lambda d: d.id)
    q = "the central bank raised interest rates"
    assert loaded.similarity_search_with_score(q, k=3) == store.similarity_search_with_score(q, k=3)
    assert loaded.hybrid_search(q, k=3) == store.hybrid_search(q, k=3)
    loaded.add_texts(["new text"], ids=["new"])  # keys continue after the loaded ones
    assert len(loaded) == 6 and loaded.get_by_ids(["new"])[0].page_content == "new text"
    # constructing with the path opens it too; conflicting settings are refused
    assert len(FaissVectorStore(embedding=emb, path=str(path))) == 5
    with pytest.raises(ValueError, match="distance"):
        FaissVectorStore(embedding=emb, path=str(path), distance="l2")


def test_empty_store_round_trip(emb, tmp_path):
    FaissVectorStore(embedding=emb).save(tmp_path / "e")
    loaded = FaissVectorStore.load(tmp_path / "e", emb)
    assert len(loaded) == 0 and loaded.similarity_search("x") == []
    loaded.add_texts(["hello"])
    assert loaded.similarity_search("hello", k=1)[0].page_content == "hello"


def test_unknown_format_version_is_refused(emb, tmp_path):
    path = _store(emb).save(tmp_path / "bank")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(UnsupportedFormatError, match="format_version 99 is not supported"):
        FaissVectorStore.load(path, emb)
    (path / "manifest.json").write_text(json.dumps({**manifest, "format": "pickle"}))
    with pytest.raises(UnsupportedFormatError):
        FaissVectorStore.load(path, emb)
    with pytest.raises(StoreFormatError, match="no manifest"):
        FaissVectorStore.load(tmp_path / "nothing", emb)


def test_corrupt_files_are_detected(emb, tmp_path):
    path = _store(emb).save(tmp_path / "bank")
    docstore = next(path.glob("docstore-*.jsonl"))
    docstore.write_text(docstore.read_text().replace("lemon", "lime"))
    with pytest.raises(StoreFormatError, match="BLAKE3 checksum does not match"):
        FaissVectorStore.load(path, emb)
    # a docstore that no longer parses: the checksum (checked while it is parsed) is still what is reported
    docstore.write_bytes(docstore.read_bytes()[:-40] + b"{not json\n")
    with pytest.raises(StoreFormatError, match="BLAKE3 checksum does not match"):
        FaissVectorStore.load(path, emb)
    with pytest.raises(StoreFormatError, match="not valid JSON"):  # unchecked, the parser says what is wrong
        FaissVectorStore.load(path, emb, verify=False)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "files": {**manifest["files"], "index": "../x"}}))
    with pytest.raises(StoreFormatError, match="bad file name"):
        FaissVectorStore.load(path, emb)


@pytest.mark.parametrize("where", ["index", "docstore", "manifest"])
def test_crash_during_save_leaves_previous_version(emb, tmp_path, monkeypatch, where):
    store = _store(emb)
    path = store.save(tmp_path / "bank")
    before = sorted(os.listdir(path))
    store.add_texts(["an unsaved change"], ids=["new"])
    store.delete(["cat"])

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    if where == "index":  # the first data file written is the index: half of it, then the crash
        monkeypatch.setattr(persistence, "_write_blob", lambda p, chunks: (Path(p).write_bytes(b"partial"), boom()))
    elif where == "docstore":
        monkeypatch.setattr(persistence, "_write_docstore", boom)
    else:
        monkeypatch.setattr(persistence.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        store.save()
    monkeypatch.undo()
    assert sorted(os.listdir(path)) == before  # no half-written files left behind
    old = FaissVectorStore.load(path, emb)
    assert len(old) == 5 and old.get_by_ids(["new"]) == [] and old.get_by_ids(["cat"])
    assert store.has_unsaved_changes
    store.save()
    assert len(FaissVectorStore.load(path, emb)) == 5 and sorted(os.listdir(path)) != before


# ---- save: writeback started early, synced before the commit ------------------------------------------


def test_write_blob_hashes_what_it_writes_and_starts_writeback_per_chunk(tmp_path, monkeypatch):

    started = []
    monkeypatch.setattr(persistence, "_SYNC_FILE_RANGE", lambda fd, off, n, flags: started.append((off, n, flags)))
    chunks = [b"a" * 5000, bytearray(b"\x00\xff" * 3000), memoryview(b"tail")]
    digest, fd = persistence._write_blob(tmp_path / "blob", chunks)
    os.close(fd)  # left open for the fdatasync before the commit
    data = (tmp_path / "blob").read_bytes()
    assert data == b"".join(bytes(c) for c in chunks)
    assert digest == blake3(data).hexdigest()
    assert started == [(0, 5000, 2), (5000, 6000, 2), (11000, 4, 2)]  # each chunk's range, WRITE only


def test_index_checksum_is_the_files_blake3_with_and_without_sync_file_range(emb, tmp_path, monkeypatch):
    for name, fn in (("linux", None), ("none", False)):  # None: resolved from libc; False: no such call
        monkeypatch.setattr(persistence, "_SYNC_FILE_RANGE", fn)
        path = _store(emb).save(tmp_path / name)
        manifest = json.loads((path / "manifest.json").read_text())
        assert "sha256" not in manifest
        for role, fname in manifest["files"].items():
            assert manifest["blake3"][role] == blake3((path / fname).read_bytes()).hexdigest(), role
        assert len(FaissVectorStore.load(path, emb)) == 5


def _as_sha256_store(path: Path) -> dict:
    """Rewrite a store's manifest as releases before BLAKE3 wrote it: SHA-256 checksums."""
    import hashlib

    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["blake3"]
    manifest["sha256"] = {role: hashlib.sha256((path / f).read_bytes()).hexdigest() for role, f in manifest["files"].items()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_stores_written_with_sha256_are_checked_with_it_and_saved_again_with_blake3(emb, tmp_path):
    store = _store(emb)
    store.keyword_search("lemon", k=1)  # the BM25 file is written too
    path = store.save(tmp_path / "bank")
    manifest = _as_sha256_store(path)
    assert set(manifest["sha256"]) == {"index", "docstore", "bm25"}
    old = FaissVectorStore.load(path, emb)
    assert sorted(old.document_ids()) == sorted(store.document_ids())
    assert [d.id for d in old.hybrid_search("lemon", k=2)] == [d.id for d in store.hybrid_search("lemon", k=2)]
    old.save()  # saved again: BLAKE3 from now on
    assert set(json.loads((path / "manifest.json").read_text())["blake3"]) == {"index", "docstore", "bm25"}
    path2 = store.save(tmp_path / "bank2")
    _as_sha256_store(path2)
    for role in ("index", "bm25", "docstore"):  # each file's SHA-256 is checked
        fname = json.loads((path2 / "manifest.json").read_text())["files"][role]
        good = (path2 / fname).read_bytes()
        (path2 / fname).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        with pytest.raises(StoreFormatError, match=f"{fname}: SHA-256 checksum does not match"):
            FaissVectorStore.load(path2, emb)
        (path2 / fname).write_bytes(good)
    assert len(FaissVectorStore.load(path2, emb)) == len(store)


def test_without_blake3_stores_are_written_with_sha256_and_blake3_ones_say_what_to_install(emb, tmp_path,
                                                                                         monkeypatch):
    import hashlib

    path = _store(emb).save(tmp_path / "new")
    monkeypatch.setattr(persistence, "_blake3", None)
    old = _store(emb).save(tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    assert "blake3" not in manifest
    for role, fname in manifest["files"].items():
        assert manifest["sha256"][role] == hashlib.sha256((old / fname).read_bytes()).hexdigest(), role
    assert len(FaissVectorStore.load(old, emb)) == 5
    with pytest.raises(StoreFormatError, match="pip install blake3"):
        FaissVectorStore.load(path, emb)
    assert len(FaissVectorStore.load(path, emb, verify=False)) == 5


def test_every_data_file_is_synced_after_every_writeback_and_before_the_commit(emb, tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    sync, replace, fsync_dir = persistence._fdatasync, persistence.os.replace, persistence._fsync_dir

    def name(fd):
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).split("-")[0]

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name a file descriptor")
    monkeypatch.setattr(persistence, "_SYNC_FILE_RANGE",
                        lambda fd, *a: events.append(("writeback", name(fd))))
    monkeypatch.setattr(persistence, "_fdatasync", lambda fd: (events.append(("sync", name(fd))), sync(fd)))
    monkeypatch.setattr(persistence.os, "replace", lambda a, b: (events.append(("commit", "")), replace(a, b)))
    monkeypatch.setattr(persistence, "_fsync_dir", lambda d: (events.append(("dirsync", "")), fsync_dir(d)))
    store = _store(emb)
    store.keyword_search("lemon")  # builds the BM25 index, saved with the version
    store.save(tmp_path / "bank")
    commit = events.index(("commit", ""))
    for role in ("index", "docstore", "bm25"):
        first_writeback = events.index(("writeback", role))
        assert first_writeback < events.index(("sync", role)) < commit, (role, events)
        assert ("writeback", role) not in events[events.index(("sync", role)):], (role, events)
    assert events[commit - 1][0] == "sync" and events[commit + 1] == ("dirsync", "")  # the manifest's own
    # every file is synced after the last write of all of them (one journal commit can carry them all)
    last_writeback = max(i for i, e in enumerate(events) if e[0] == "writeback")
    assert all(e[0] != "sync" for e in events[:last_writeback]), events


def test_failure_mid_write_leaves_the_previous_version_loadable(emb, tmp_path, monkeypatch):
    store = _store(emb)
    path = store.save(tmp_path / "bank")
    before = sorted(os.listdir(path))
    store.add_texts(["an unsaved change"], ids=["new"])
    calls = []

    def fail_on_second(fd, *a):  # the first file's writeback started, then the disk fails
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("I/O error (simulated)")

    monkeypatch.setattr(persistence, "_SYNC_FILE_RANGE", fail_on_second)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(OSError, match="simulated"):
        store.save()
    monkeypatch.undo()
    assert sorted(os.listdir(path)) == before
    if fds is not None:  # the data files left open for their fdatasync were closed
        assert len(os.listdir("/proc/self/fd")) == fds
    old = FaissVectorStore.load(path, emb)
    assert len(old) == 5 and old.get_by_ids(["new"]) == []
    store.save()
    assert FaissVectorStore.load(path, emb).get_by_ids(["new"])


@pytest.mark.parametrize("encoder", ["orjson", "json"])
def test_docstore_encoding_is_one_json_line_per_record(monkeypatch, encoder):
    if encoder == "json":
        monkeypatch.setattr(persistence, "_orjson", None)
    recs = [{"key": i, "id": f"d{i}", "text": 'braces },{ "quoted"\nnewline', "metadata": {"n": [i]}}
            for i in range(3)]
    data = persistence._encode_docstore(iter(recs), 3)
    lines = data.split(b"\n")
    assert len(lines) == 5 and lines[-1] == b""  # header, three records, then the final newline
    assert json.loads(lines[0]) == {"format": "langchain-mesh.docstore", "format_version": 1, "count": 3}
    assert [json.loads(line) for line in lines[1:4]] == recs
    assert list(persistence.parse_docstore(data)) == recs
    assert persistence._encode_docstore(iter(()), 0).count(b"\n") == 1


def test_the_docstore_is_written_in_chunks_with_the_same_bytes(emb, tmp_path, monkeypatch):
    store = _store(emb)
    whole = store.save(tmp_path / "whole")
    monkeypatch.setattr(persistence, "_DOCSTORE_CHUNK", 2)  # 5 documents: chunks of 2, 2 and 1 lines
    recs = [{"key": i, "id": f"d{i}", "text": "t", "metadata": {}} for i in range(5)]
    chunks = list(persistence._docstore_chunks(iter(recs), 5))
    assert [c.count(b"\n") for c in chunks] == [1, 2, 2, 1]  # the header line, then the records
    chunked = store.copy_to(tmp_path / "chunked")  # unsaved changes are none, but a new path: written
    read = lambda p: next(p.glob("docstore-*.jsonl")).read_bytes()  # noqa: E731
    assert read(chunked) == read(whole)
    assert sorted(FaissVectorStore.load(chunked, emb).document_ids()) == sorted(store.document_ids())


def test_a_failure_in_the_middle_of_the_docstore_leaves_the_previous_version(emb, tmp_path, monkeypatch):
    store = _store(emb)
    path = store.save(tmp_path / "bank")
    before = sorted(os.listdir(path))
    store.add_texts(["an unsaved change"], ids=["new"])
    monkeypatch.setattr(persistence, "_DOCSTORE_CHUNK", 2)
    encode = persistence._line_encoder()
    seen = []

    def failing(rec):
        seen.append(rec["id"])
        if len(seen) == 4:  # the header and the first chunk written, the second fails
            raise OSError("disk full (simulated)")
        return encode(rec)

    monkeypatch.setattr(persistence, "_line_encoder", lambda: failing)
    with pytest.raises(OSError, match="simulated"):
        store.save()
    monkeypatch.undo()
    assert sorted(os.listdir(path)) == before  # the half-written docstore and the new index are gone
    assert FaissVectorStore.load(path, emb).get_by_ids(["new"]) == []
    store.save()
    assert FaissVectorStore.load(path, emb).get_by_ids(["new"])


def test_copy_to_stages_a_new_version(emb, tmp_path):
    store = _store(emb)
    v1 = store.save(tmp_path / "v1")
    v2 = store.copy_to(tmp_path / "v2")  # unchanged: hard links
    f1 = next(v1.glob("index-*")); f2 = v2 / f1.name
    assert f2.exists() and os.stat(f1).st_ino == os.stat(f2).st_ino
    staged = FaissVectorStore.load(v2, emb)
    staged.add_texts(["only in v2"], ids=["v2doc"])
    staged.save()
    assert FaissVectorStore.load(v1, emb).get_by_ids(["v2doc"]) == []
    assert FaissVectorStore.load(v2, emb).get_by_ids(["v2doc"])[0].page_content == "only in v2"
    assert f1.exists()  # v1's files untouched by v2's commit
    staged.add_texts(["unsaved"], ids=["u"])
    staged.copy_to(tmp_path / "v3")  # dirty: a real save there, staged keeps its own path
    assert staged.path == v2 and staged.has_unsaved_changes
    assert len(FaissVectorStore.load(tmp_path / "v3", emb)) == 7


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, langchain_mesh, knowledge_banks; "
            "print([m for m in ('faiss', 'numpy', 'bm25s', 'Stemmer') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
