"""The ``backend: azure_search`` engine of a knowledge bank: versions as physical indexes, an index alias
as the current-version pointer.

    <prefix>-<kb>             an index alias: what readers query; it names exactly one index
    <prefix>-<kb>-v000001     one physical index per version (fields, vector profile, semantic config)
    <prefix>-<kb>-v000002     ...; the index description records {kb, version, created_at, state}

A writer ``stage()``s a new index (a copy of the current documents, vectors included, unless
``clear``), writes into it, and ``commit()`` repoints the alias with one ``PUT /aliases('<prefix>-<kb>')``.
The service swaps an alias atomically, so readers see the old version or the new one, never a
half-written index; a writer that dies before the PUT leaves the alias, and so every reader, on the
old index (its staged index is left marked ``staged`` and never listed as a version).

Why aliases rather than a pointer document in a ``<prefix>-meta`` index: azure-search-documents 12.x
(API 2026-04-01) manages aliases (``SearchIndexClient.create_or_update_alias``) and the service
resolves them on every document operation, so a reader needs no extra lookup and cannot race one;
a pointer document would need a read before each query and leaves readers of an older pointer on a
stale index. (Aliases are not available on the Free tier; use Basic or above.)

Settings (the bank config's ``settings:``; ``{{env:...}}``/``{{file:...}}`` references allowed):
``endpoint`` (required), ``key`` (an admin key; without one, azure-identity's DefaultAzureCredential),
``index_prefix`` (default ``mesh-kb``), ``vector_algorithm`` (``hnsw`` | ``exhaustive_knn``), ``metric``
(``cosine`` | ``euclidean`` | ``dotProduct``), ``semantic_configuration`` (default ``default``),
``keep_versions`` (committed versions kept, default 5), ``api_version``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Mapping, Optional

from langchain_mesh.config import Secret

from .store import AzureSearchVectorStore
from ...versions import VersionInfo

__all__ = ["AzureSearchBankEngine", "open_engine"]

_SETTINGS = {"endpoint", "key", "index_prefix", "vector_algorithm", "metric", "semantic_configuration",
             "keep_versions", "api_version", "metadata_schema"}


def _slug(text: str) -> str:
    """A string as a piece of an index name (lowercase letters, digits, single dashes)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug:
        raise ValueError(f"{text!r} has no letter or digit to build an Azure index name from")
    return slug


class AzureSearchBankEngine:
    """One knowledge bank on Azure AI Search; see the module doc."""

    def __init__(self, kb_id: str, settings: Mapping[str, Any], embedding: Any,
                 metadata_schema: Optional[Mapping[str, str]] = None):
        unknown = set(settings) - _SETTINGS
        if unknown:
            raise ValueError(f"knowledge bank {kb_id!r}: unknown azure_search settings {sorted(unknown)}; "
                             f"known: {sorted(_SETTINGS)}")
        if not settings.get("endpoint"):
            raise ValueError(f"knowledge bank {kb_id!r}: azure_search needs settings.endpoint "
                             f"(https://<service>.search.windows.net)")
        where = f"knowledge bank {kb_id!r}"
        self.kb_id = kb_id
        self.embedding = embedding
        self.endpoint = Secret(str(settings["endpoint"]), masked=False).get(f"{where} settings.endpoint")
        key = settings.get("key")
        self._key = Secret(str(key)).get(f"{where} settings.key") if key else None
        self._credential: Any = None
        self.prefix = _slug(str(settings.get("index_prefix") or "mesh-kb"))
        self.alias = f"{self.prefix}-{_slug(kb_id)}"
        if len(self.alias) > 120:  # room for "-v000001" within the 128-character limit
            raise ValueError(f"{where}: index prefix and bank id make a name longer than 120 characters")
        self.metadata_schema = dict(metadata_schema if metadata_schema is not None
                                    else settings.get("metadata_schema") or {})
        self.store_options = {
            "vector_algorithm": settings.get("vector_algorithm") or "hnsw",
            "metric": settings.get("metric") or "cosine",
            "semantic_configuration": settings.get("semantic_configuration", "default"),
            "api_version": settings.get("api_version"),
        }
        self.keep_versions = int(settings.get("keep_versions") or 5)
        self._index_client: Any = None

    def __repr__(self) -> str:
        return f"AzureSearchBankEngine({self.kb_id!r}, alias={self.alias!r}, endpoint={self.endpoint!r})"

    # ---- clients -----------------------------------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        if self._key is not None:
            return {"key": self._key}
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return {"credential": self._credential}

    @property
    def index_client(self) -> Any:
        if self._index_client is None:
            from azure.core.credentials import AzureKeyCredential
            from azure.search.documents.indexes import SearchIndexClient

            auth = self._auth()
            cred = AzureKeyCredential(auth["key"]) if "key" in auth else auth["credential"]
            kw = {"api_version": self.store_options["api_version"]} if self.store_options["api_version"] else {}
            self._index_client = SearchIndexClient(self.endpoint, cred, **kw)
        return self._index_client

    def _store(self, index_name: str, description: Optional[str] = None) -> AzureSearchVectorStore:
        return AzureSearchVectorStore(embedding=self.embedding, index_name=index_name, endpoint=self.endpoint,
                                      metadata_schema=self.metadata_schema, index_description=description,
                                      **self._auth(), **self.store_options)

    # ---- versions ----------------------------------------------------------------------------------

    def _version_name(self, number: int) -> str:
        return f"{self.alias}-v{number:06d}"

    def _physical(self) -> dict[int, Any]:
        """version number -> SearchIndex of this bank's physical indexes (staged ones included)."""
        pattern = re.compile(re.escape(self.alias) + r"-v(\d{6})$")
        out = {}
        for index in self.index_client.list_indexes():
            m = pattern.match(index.name)
            if m:
                out[int(m.group(1))] = index
        return out

    def current_index(self) -> Optional[str]:
        """The physical index the alias names (None before the first commit)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            alias = self.index_client.get_alias(self.alias)
        except ResourceNotFoundError:
            return None
        return alias.indexes[0] if alias.indexes else None

    def versions(self) -> list[VersionInfo]:
        """Committed versions, oldest first; ``current`` marks the one the alias names."""
        current = self.current_index()
        out = []
        for number, index in sorted(self._physical().items()):
            info = _description(index)
            if info.get("state") != "committed" and index.name != current:
                continue  # a staged index of a writer that never committed
            count = self._store(index.name).search_client.get_document_count()
            out.append(VersionInfo(f"v{number:06d}", number, float(info.get("created_at", 0.0)), int(count),
                                   index.name == current))
        return out

    def rollback(self, version: str) -> None:
        """Point the alias at an earlier committed version (readers switch at once)."""
        have = {v.id: v for v in self.versions()}
        if version not in have:
            raise ValueError(f"no version {version!r} in knowledge bank {self.kb_id!r}; versions: "
                             f"{', '.join(have) or 'none'}")
        self._point_alias(self._version_name(have[version].number))

    def _point_alias(self, index_name: str) -> None:
        from azure.search.documents.indexes.models import SearchAlias

        # one PUT: the service swaps the alias atomically
        self.index_client.create_or_update_alias(SearchAlias(name=self.alias, indexes=[index_name]))

    # ---- reading and writing -------------------------------------------------------------------------

    def open_current(self) -> AzureSearchVectorStore:
        """A store on the alias: it follows commits and rollbacks (empty before the first commit)."""
        return self._store(self.alias)

    def stage(self, clear: bool) -> AzureSearchVectorStore:
        """A new physical index for a writer: a copy of the current version unless ``clear``."""
        existing = self._physical()
        number = max(existing, default=0) + 1
        name = self._version_name(number)
        description = json.dumps({"kb": self.kb_id, "version": number, "created_at": time.time(), "state": "staged"})
        staged = self._store(name, description)
        current = self.current_index()
        if current is not None:
            index = self.index_client.get_index(current)
            index.name, index.description, index.e_tag = name, description, None
            self.index_client.create_index(index)  # same fields, vector profile and semantic config
            if not clear:
                source = self._store(current)
                batch: list[dict[str, Any]] = []
                for doc in source.iter_documents(include_vectors=True):
                    batch.append(doc)
                    if len(batch) >= 1000:
                        staged.upload_index_documents(batch)
                        batch = []
                if batch:
                    staged.upload_index_documents(batch)
        return staged

    def commit(self, staged: AzureSearchVectorStore) -> None:
        """Make ``staged`` the current version: mark it committed, then repoint the alias."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            index = self.index_client.get_index(staged.index_name)
        except ResourceNotFoundError:  # nothing was written and there was no current version: an empty bank
            staged.create_index(len(self.embedding.embed_query("dimensions")))
            index = self.index_client.get_index(staged.index_name)
        info = _description(index)
        info.update(state="committed", committed_at=time.time())
        index.description = json.dumps(info)
        self.index_client.create_or_update_index(index)
        self._point_alias(staged.index_name)
        self._prune()

    def discard(self, staged: AzureSearchVectorStore) -> None:
        """Drop a staged index (readers never saw it)."""
        staged.delete_index()

    def _prune(self) -> None:
        from azure.core.exceptions import HttpResponseError

        current = self.current_index()
        committed = [v for v in self.versions() if not v.current]
        for v in committed[: max(0, len(committed) - (self.keep_versions - 1))]:
            name = self._version_name(v.number)
            if name != current:
                try:
                    self.index_client.delete_index(name)
                except HttpResponseError:  # another reader's alias may still use it: keep it
                    pass


def _description(index: Any) -> dict[str, Any]:
    try:
        info = json.loads(index.description or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def open_engine(kb_id: str, folder: Any, settings: dict[str, Any], embeddings: Any,
                metadata_schema: dict[str, str]) -> AzureSearchBankEngine:
    """The ``azure_search`` entry of the backend registry (:mod:`knowledge_banks.backends`)."""
    return AzureSearchBankEngine(kb_id, settings, embeddings(), metadata_schema=metadata_schema)
