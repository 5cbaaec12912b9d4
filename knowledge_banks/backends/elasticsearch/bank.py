"""The ``backend: elasticsearch`` engine of a knowledge bank: versions are physical indices behind an alias.

Readers open the alias ``<index_prefix>-<kb_id>``; a writer stages a new physical index
``<alias>-v000007`` (a copy of the current documents via ``_reindex``, or empty), writes there, and
commits with ONE ``POST /_aliases`` request (remove the alias from the old index, add it to the new
one), which the cluster applies atomically: a reader sees the old bank or the new one, never a
half-written one. An exception before the commit (or a crash) leaves the alias on the old index;
``discard`` deletes the staged index, and a later ``stage`` removes staged indices that a dead
writer left behind more than an hour ago.

Committed versions are marked in their mapping's ``_meta`` (``mesh_committed_at``), which is how
``versions()`` tells them from staged ones; the previous ``retention`` versions (default 1) are kept
for ``rollback``, older ones deleted after each commit.

Settings (the bank config's ``settings:``; ``{{env:NAME}}`` / ``{{file:PATH}}`` references allowed
for the connection ones): ``es_url`` | ``cloud_id`` (+ ``api_key``), ``index_prefix`` (default
``mesh-kb``), ``similarity`` (cosine), ``index_options`` (e.g. ``{"type": "int8_hnsw"}``),
``retention`` (1), ``metadata_schema`` (else the bank's, passed by the caller).
"""

from __future__ import annotations

import re
import time
from typing import Any, Optional

from langchain_mesh.config import Secret
from langchain_mesh.errors import MeshError

from .store import ElasticsearchVectorStore
from ...versions import VersionInfo

__all__ = ["ElasticsearchBankEngine", "open_engine"]

_STALE_STAGING_S = 3600.0
_SETTINGS = {"es_url", "cloud_id", "api_key", "index_prefix", "similarity", "index_options", "retention",
             "metadata_schema", "basic_auth", "client_kwargs"}


def _index_safe(name: str) -> str:
    """Index names are lowercase, without \\ / * ? " < > | , # : or spaces, and not starting with - _ +."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-_+.")
    if not cleaned:
        raise ValueError(f"cannot derive an Elasticsearch index name from {name!r}")
    return cleaned


class ElasticsearchBankEngine:
    """Versioned storage of one knowledge bank on Elasticsearch; see the module doc."""

    def __init__(self, kb_id: str, settings: dict[str, Any], embedding: Any,
                 metadata_schema: Optional[dict[str, str]] = None, client: Any = None):
        unknown = set(settings) - _SETTINGS
        if unknown:
            raise ValueError(f"knowledge bank {kb_id!r}: unknown elasticsearch settings {sorted(unknown)}; "
                             f"known: {sorted(_SETTINGS)}")
        self.kb_id = kb_id
        self.embedding = embedding
        where = f"knowledge bank {kb_id!r} settings"
        conn: dict[str, Any] = {}
        for key in ("es_url", "cloud_id", "api_key"):
            if settings.get(key):
                conn[key] = Secret(str(settings[key])).get(f"{where}.{key}")
        if settings.get("basic_auth"):
            user, password = settings["basic_auth"]
            conn["basic_auth"] = (str(user), Secret(str(password)).get(f"{where}.basic_auth"))
        if client is None and not (conn.get("es_url") or conn.get("cloud_id")):
            raise MeshError(f"knowledge bank {kb_id!r}: backend elasticsearch needs settings.es_url or "
                            f"settings.cloud_id (+ api_key)")
        self.alias = _index_safe(f"{settings.get('index_prefix', 'mesh-kb')}-{kb_id}")
        self.similarity = settings.get("similarity", "cosine")
        self.index_options = settings.get("index_options")
        self.retention = int(settings.get("retention", 1))
        self.metadata_schema = dict(metadata_schema or settings.get("metadata_schema") or {})
        self._store_args: dict[str, Any] = {"similarity": self.similarity, "index_options": self.index_options,
                                            "metadata_schema": self.metadata_schema,
                                            "client_kwargs": settings.get("client_kwargs")}
        if client is not None:
            self._store_args["client"] = client
        else:
            self._store_args.update({"es_url": conn.get("es_url"), "cloud_id": conn.get("cloud_id"),
                                     "api_key": conn.get("api_key"), "basic_auth": conn.get("basic_auth")})
        # one admin client for index and alias operations (a store over the alias owns it)
        self._admin = ElasticsearchVectorStore(embedding=embedding, index_name=self.alias, create_index=False,
                                               **self._store_args)
        self.es = self._admin.client

    def __repr__(self) -> str:
        return f"ElasticsearchBankEngine({self.kb_id!r}, alias={self.alias!r})"

    # ---- names ---------------------------------------------------------------------------------------

    def index_for(self, number: int) -> str:
        return f"{self.alias}-v{number:06d}"

    def _number(self, index: str) -> Optional[int]:
        m = re.fullmatch(re.escape(self.alias) + r"-v(\d{6,})", index)
        return int(m.group(1)) if m else None

    def _physical(self) -> dict[str, dict[str, Any]]:
        """{index name: its mapping's _meta} for every version index, committed or staged."""
        found = self.es.indices.get_mapping(index=f"{self.alias}-v*", allow_no_indices=True,
                                            expand_wildcards="open")
        return {name: (body.get("mappings") or {}).get("_meta") or {} for name, body in found.items()
                if self._number(name) is not None}

    def current_index(self) -> Optional[str]:
        from elasticsearch import NotFoundError

        try:
            found = self.es.indices.get_alias(name=self.alias)
        except NotFoundError:
            return None
        names = sorted(found)
        return names[0] if names else None

    # ---- readers -------------------------------------------------------------------------------------

    #: keywords ``kb.as_langchain_vectorstore(...)`` accepts on this backend
    reader_options = ("strategy",)

    def open_current(self, strategy: Any = None) -> ElasticsearchVectorStore:
        """A store reading through the alias: each search sees the version current at that moment.

        ``strategy``: an ``elasticsearch.helpers.vectorstore.DenseVectorStrategy``; with ``hybrid=True``
        the store's similarity search is the hybrid search (RRF, or summed scores with ``rrf=False``)."""
        return ElasticsearchVectorStore(embedding=self.embedding, index_name=self.alias, create_index=False,
                                        strategy=strategy, **self._store_args)

    # ---- writers -------------------------------------------------------------------------------------

    def stage(self, clear: bool) -> ElasticsearchVectorStore:
        """A new physical index holding a copy of the current documents (none if ``clear``)."""
        self._remove_stale_staging()
        physical = self._physical()
        number = max((self._number(n) or 0 for n in physical), default=0) + 1
        name = self.index_for(number)
        current = self.current_index()
        staged = ElasticsearchVectorStore(embedding=self.embedding, index_name=name, **self._store_args)
        mappings: dict[str, Any]
        if current is not None:  # the same mapping as the live version (dims, types of dynamic fields)
            mappings = dict(self.es.indices.get_mapping(index=current)[current]["mappings"])
        else:
            mappings = staged.mapping(None)
        mappings["_meta"] = {"mesh_bank": self.kb_id, "mesh_version": number, "mesh_staged_at": time.time(),
                             **({"mesh_copied_from": current} if current and not clear else {})}
        self.es.indices.create(index=name, mappings=mappings)
        try:
            if current is not None and not clear:
                r = self.es.reindex(source={"index": current}, dest={"index": name}, refresh=True,
                                    wait_for_completion=True)
                if r.get("failures"):
                    raise MeshError(f"knowledge bank {self.kb_id!r}: copying {current} to {name} failed: "
                                    f"{r['failures'][:3]}")
        except BaseException:
            self.es.indices.delete(index=name, ignore_unavailable=True)
            raise
        staged._index_ready = True
        return staged

    def commit(self, staged: ElasticsearchVectorStore) -> str:
        """Make ``staged`` current with one atomic alias swap; prune old versions; returns the version id."""
        name = staged.index_name
        number = self._number(name)
        if number is None:
            raise ValueError(f"{name!r} is not a staged index of knowledge bank {self.kb_id!r}")
        self.es.indices.refresh(index=name)
        count = int(self.es.count(index=name)["count"])
        meta = dict(self._physical().get(name) or {})
        meta.update({"mesh_committed_at": time.time(), "mesh_documents": count})
        self.es.indices.put_mapping(index=name, meta=meta)
        self._swap(name)
        self._prune(name)
        return f"v{number:06d}"

    def _swap(self, target: str) -> None:
        actions: list[dict[str, Any]] = [{"remove": {"index": old, "alias": self.alias}}
                                         for old in self._alias_members() if old != target]
        actions.append({"add": {"index": target, "alias": self.alias, "is_write_index": True}})
        self.es.indices.update_aliases(actions=actions)  # one request: applied all at once

    def _alias_members(self) -> list[str]:
        from elasticsearch import NotFoundError

        try:
            return sorted(self.es.indices.get_alias(name=self.alias))
        except NotFoundError:
            return []

    def discard(self, staged: ElasticsearchVectorStore) -> None:
        """Delete a staged index that was not committed (the live version is untouched)."""
        if self._number(staged.index_name) is None or staged.index_name in self._alias_members():
            raise ValueError(f"refusing to discard {staged.index_name!r}: not a staged index of this bank")
        self.es.indices.delete(index=staged.index_name, ignore_unavailable=True)

    def _prune(self, current: str) -> None:
        committed = sorted((n for n, meta in self._physical().items() if meta.get("mesh_committed_at")),
                           key=lambda n: self._number(n) or 0)
        older = [n for n in committed if (self._number(n) or 0) < (self._number(current) or 0)]
        for name in older[: max(0, len(older) - self.retention)]:
            self.es.indices.delete(index=name, ignore_unavailable=True)

    def _remove_stale_staging(self) -> None:
        now = time.time()
        for name, meta in self._physical().items():
            if not meta.get("mesh_committed_at") and now - float(meta.get("mesh_staged_at", now)) > _STALE_STAGING_S:
                self.es.indices.delete(index=name, ignore_unavailable=True)

    # ---- versions --------------------------------------------------------------------------------------

    def versions(self) -> list[VersionInfo]:
        current = self.current_index()
        out = []
        for name, meta in self._physical().items():
            if not meta.get("mesh_committed_at"):
                continue
            number = self._number(name) or 0
            out.append(VersionInfo(f"v{number:06d}", number, float(meta["mesh_committed_at"]),
                                   int(meta.get("mesh_documents", -1)), name == current))
        return sorted(out, key=lambda v: v.number)

    def rollback(self, version: str) -> None:
        """Make an earlier committed version current again (one atomic alias swap)."""
        m = re.fullmatch(r"v(\d+)", version)
        known = {v.id: v for v in self.versions()}
        if not m or version not in known:
            raise ValueError(f"no version {version!r} in knowledge bank {self.kb_id!r}; versions: "
                             f"{', '.join(known) or 'none'}")
        self._swap(self.index_for(int(m.group(1))))

    def close(self) -> None:
        self._admin.close()


def open_engine(kb_id: str, folder: Any, settings: dict[str, Any], embeddings: Any,
                metadata_schema: dict[str, str]) -> ElasticsearchBankEngine:
    """The ``elasticsearch`` entry of the backend registry (:mod:`knowledge_banks.backends`); typed,
    filterable index fields come from the bank's metadata schema."""
    return ElasticsearchBankEngine(kb_id, settings, embeddings(), metadata_schema=metadata_schema)
