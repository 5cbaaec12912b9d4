"""Bank backends behind one interface: settings checked by each backend's pydantic model when the
config loads (named by key path), a backend registry a plugin can add to, and the banks' own errors
in the MeshError hierarchy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from knowledge_banks import backends
from knowledge_banks.backends import BankBackend, BankEngine, get_backend, register_backend
from langchain_mesh import Mesh
from langchain_mesh.config import load_config
from langchain_mesh.errors import ConfigError, MeshError

EMB = "scripted:fake:emb"
CONNS = {"fake": {"type": "scripted", "models": [{"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}


def _problems(raw: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    return dict(e.value.problems)


def test_backend_settings_are_checked_when_the_config_loads():
    got = _problems({"knowledge_banks": {
        "es": {"backend": "elasticsearch", "settings": {"es_ulr": "http://x"}},
        "es2": {"backend": "elasticsearch", "settings": {"index_prefix": "p"}},
        "az": {"backend": "azure_search", "settings": {"key": "k", "metric": "manhattan"}},
        "fa": {"backend": "faiss", "settings": {"index": "annoy"}},
    }})
    assert got["knowledge_banks.es.settings.es_ulr"] == "unknown key (did you mean 'es_url'?)"
    assert "needs es_url" in got["knowledge_banks.es2.settings"]  # neither es_url nor cloud_id
    assert "knowledge_banks.az.settings.endpoint" in got and "knowledge_banks.az.settings.metric" in got
    assert "knowledge_banks.fa.settings.index" in got
    # valid settings load (references stay references until the bank opens)
    cfg = load_config({"knowledge_banks": {"es": {"backend": "elasticsearch",
                                                  "settings": {"es_url": "{{env:NOPE_ES}}", "retention": 2}}}})
    assert cfg.knowledge_banks["es"].settings == {"es_url": "{{env:NOPE_ES}}", "retention": 2}


def test_unknown_backend_names_the_known_ones():
    got = _problems({"knowledge_banks": {"kb": {"backend": "elasticsearh"}}})
    assert "did you mean 'elasticsearch'" in got["knowledge_banks.kb.backend"]
    assert "faiss" in got["knowledge_banks.kb.backend"]


class _MemorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capacity: int = 10


class _MemoryEngine:
    """A plugin's engine: versions kept in memory, stores are lists of texts."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.current: list[str] = []
        self.history: list[list[str]] = []

    def open_current(self) -> Any:
        return list(self.current)

    def versions(self) -> list[Any]:
        return list(range(len(self.history)))

    def rollback(self, version: str) -> None:
        self.current = list(self.history[int(version)])

    def stage(self, clear: bool = False) -> Any:
        return _Store([] if clear else list(self.current), self.capacity)

    def commit(self, store: Any) -> None:
        self.current = store.texts
        self.history.append(list(store.texts))

    def discard(self, store: Any) -> None:
        pass


class _Store:
    def __init__(self, texts: list[str], capacity: int):
        self.texts, self.capacity = texts, capacity

    def add_texts(self, texts: Any, metadatas: Any = None, **kw: Any) -> list[str]:
        self.texts += list(texts)
        if len(self.texts) > self.capacity:
            raise MeshError("full")
        return [str(i) for i in range(len(self.texts))]


def test_a_plugin_backend_is_validated_and_used(tmp_path, monkeypatch):
    opened: list = []

    def open_engine(kb_id, folder, settings, embeddings, metadata_schema):
        opened.append((kb_id, settings, metadata_schema))
        return _MemoryEngine(**settings)

    monkeypatch.setattr(backends, "_REGISTERED", {})
    register_backend(BankBackend("memory", _MemorySettings, open_engine))
    assert "memory" in backends.backend_names() and get_backend("memory").settings_model is _MemorySettings
    got = _problems({"knowledge_banks": {"m": {"backend": "memory", "settings": {"capacity": "lots"}}}})
    assert list(got) == ["knowledge_banks.m.settings.capacity"]

    mesh = Mesh.from_config({"connections": CONNS, "knowledge_banks": {"m": {
        "backend": "memory", "path": str(tmp_path / "m"), "embedding_llm": EMB, "settings": {"capacity": 3},
        "metadata_schema": {"year": "int"}}}})
    kb = mesh.get_knowledge_bank("m")
    assert isinstance(kb.engine, BankEngine)
    with kb.get_writer() as w:
        w.as_langchain_vectorstore().add_texts(["a", "b"], metadatas=[{"year": 1}, {"year": 2}])
    assert kb.as_langchain_vectorstore() == ["a", "b"]
    with pytest.raises(MeshError, match="full"):  # all or nothing: the failed write is not committed
        with kb.get_writer() as w:
            w.as_langchain_vectorstore().add_texts(["c", "d"], metadatas=[{"year": 3}, {"year": 4}])
    assert kb.as_langchain_vectorstore() == ["a", "b"]
    assert opened == [("m", {"capacity": 3}, {"year": "int"})]


def test_an_entry_point_backend_is_found(monkeypatch):
    backend = BankBackend("fromep", _MemorySettings, lambda *a: _MemoryEngine(1))

    class EP:
        name = "fromep"

        def load(self):
            return backend

    monkeypatch.setattr(backends, "_entry_points", lambda: {"fromep": EP()})
    monkeypatch.setattr(backends, "_REGISTERED", {})
    assert get_backend("fromep") is backend
    load_config({"knowledge_banks": {"x": {"backend": "fromep"}}})


def test_bank_errors_are_mesh_errors_and_still_value_errors():
    from knowledge_banks import FilterError, StoreFormatError, compile_filter

    with pytest.raises(MeshError):
        compile_filter({"year": {"$between": [1, 2]}})
    assert issubclass(FilterError, ValueError) and issubclass(StoreFormatError, MeshError)
    assert issubclass(StoreFormatError, ValueError)
