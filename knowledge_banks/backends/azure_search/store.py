"""``AzureSearchVectorStore``: a LangChain VectorStore on Azure AI Search (``azure-search-documents``).

    store = AzureSearchVectorStore(embedding=emb, index_name="docs", endpoint="https://x.search.windows.net",
                                   key="...")                   # or credential=DefaultAzureCredential()
    store.add_documents(docs, ids=[...])                        # batched uploads, per-item errors raised
    store.similarity_search("q", k=4, filter={"year": {"$gte": 2020}})   # vector query, OData pre-filter
    store.hybrid_search("q", k=4)                               # text + vector, fused by the service (RRF)
    store.semantic_hybrid_search("q", k=4)                      # + semantic ranker: reranker score, captions
    store.as_retriever(search_type="similarity" | "mmr" | "hybrid" | "semantic_hybrid" | "keyword")

Index layout and metadata typing: :mod:`knowledge_banks.azure_search_schema` (typed, filterable
fields per metadata key plus an exact JSON copy). Filters: the filter dicts of
:mod:`knowledge_banks.filters`, translated to OData by :mod:`knowledge_banks.azure_search_odata`.
The index is created on the first write (its vector dimensions come from the embeddings); searching
an index that does not exist yet returns no documents.

Scores. ``similarity_search_with_score`` returns Azure's ``@search.score``: for cosine
``1 / (1 + (1 - cos))``, euclidean ``1 / (1 + distance)``, dotProduct ``1 + dot`` (dot >= 0) or
``1 / (1 - dot)``; ``similarity_search_with_relevance_scores`` maps it back to [0, 1] like FAISS
((1 + cos) / 2 for cosine). Hybrid scores are the service's RRF scores. ``semantic_hybrid`` documents
carry ``metadata["@search.reranker_score"]`` (0-4) and ``metadata["@search.captions"]``
(``[{"text", "highlights"}]``), taken from the SDK, which renames ``@search.rerankerScore``.

Writes are uploaded in batches of at most ``batch_size`` (1,000, the service limit) documents and
``max_batch_bytes`` (15 MB, under the 16 MB request limit); a batch the service reports as partly
failed (207) raises :class:`AzureSearchIndexingError` naming every failed id and message.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from langchain_mesh.errors import MeshError

from . import schema as layout
from .odata import filter_keys, to_odata
from ...filters import FilterSpec
from ...store_base import BankStoreMixin

__all__ = ["AzureSearchVectorStore", "AzureSearchIndexingError", "SEARCH_TYPES"]

SEARCH_TYPES = ("similarity", "hybrid", "semantic_hybrid")
MAX_BATCH_DOCS = 1000
MAX_BATCH_BYTES = 15 * 1024 * 1024
_SELECT = [layout.KEY_FIELD, layout.CONTENT_FIELD, layout.METADATA_FIELD]
_SEMANTIC_WINDOW = 50  # the semantic ranker reranks the top 50 of the first-stage ranking


class AzureSearchIndexingError(MeshError):
    """Some documents of an upload or delete failed; ``failures`` is ``[(id, status, message)]``."""

    def __init__(self, failures: list[tuple[str, int, str]], succeeded: list[str]):
        self.failures = failures
        self.succeeded = succeeded
        shown = "; ".join(f"{i!r}: {status} {msg}" for i, status, msg in failures[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(f"Azure AI Search refused {len(failures)} of {len(failures) + len(succeeded)} documents: "
                         f"{shown}{more}")


class _FieldNames(Mapping[str, str]):
    """metadata key -> typed field name (derived, so filters on never-seen keys fold to 'missing')."""

    def __init__(self, known: Mapping[str, str]):
        self._known = known

    def __getitem__(self, key: str) -> str:
        return self._known.get(key) or layout.field_name(key) or "\x00unfilterable"

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)


class _Definition:
    """What the store knows of its index: physical name, dimensions, typed metadata fields."""

    def __init__(self, physical: str, dimensions: Optional[int], fields: dict[str, str]):
        self.physical = physical
        self.dimensions = dimensions
        self.fields = fields  # field name -> Edm type
        self.names: dict[str, str] = {}  # metadata key -> field name, for keys seen or declared


class AzureSearchVectorStore(BankStoreMixin, VectorStore):
    """LangChain vector store on Azure AI Search with native hybrid and semantic ranking; see the module doc."""

    def __init__(self, embedding: Embeddings, index_name: str, endpoint: str, key: Optional[str] = None, *,
                 credential: Any = None, async_credential: Any = None,
                 metadata_schema: Optional[Mapping[str, str]] = None, vector_algorithm: str = "hnsw",
                 metric: str = "cosine", semantic_configuration: Optional[str] = "default",
                 api_version: Optional[str] = None, batch_size: int = MAX_BATCH_DOCS,
                 max_batch_bytes: int = MAX_BATCH_BYTES, index_description: Optional[str] = None,
                 search_type: str = "similarity"):
        from azure.core.credentials import AzureKeyCredential

        if (key is None) == (credential is None):
            raise ValueError("give key= (an admin or query API key) or credential= (a token credential), not both")
        if vector_algorithm not in layout.ALGORITHMS:
            raise ValueError(f"vector_algorithm must be one of {layout.ALGORITHMS}, got {vector_algorithm!r}")
        if metric not in layout.METRICS:
            raise ValueError(f"metric must be one of {layout.METRICS}, got {metric!r}")
        if not 1 <= batch_size <= MAX_BATCH_DOCS:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH_DOCS} (the service's limit), got {batch_size}")
        if search_type not in SEARCH_TYPES:
            raise ValueError(f"search_type must be one of {SEARCH_TYPES}, got {search_type!r}")
        self.embedding = embedding
        self.index_name = index_name
        self.endpoint = endpoint.rstrip("/")
        self.credential = AzureKeyCredential(key) if key is not None else credential
        # an API key works for the async clients too; a sync token credential does not
        self.async_credential = async_credential or (self.credential if key is not None else None)
        self.metadata_schema = dict(metadata_schema or {})
        self._schema_fields = layout.schema_fields(self.metadata_schema)
        self.vector_algorithm = vector_algorithm
        self.metric = metric
        self.semantic_configuration = semantic_configuration
        self.api_version = api_version
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.index_description = index_description
        self.search_type = search_type
        self._client_kwargs = {"api_version": api_version} if api_version else {}
        self._search_client: Any = None
        self._index_client: Any = None
        self._definition: Optional[_Definition] = None

    # ---- clients and the index definition ------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def __repr__(self) -> str:
        return f"AzureSearchVectorStore(index_name={self.index_name!r}, endpoint={self.endpoint!r})"

    @property
    def search_client(self) -> Any:
        if self._search_client is None:
            from azure.search.documents import SearchClient

            self._search_client = SearchClient(self.endpoint, self.index_name, self.credential, **self._client_kwargs)
        return self._search_client

    @property
    def index_client(self) -> Any:
        if self._index_client is None:
            from azure.search.documents.indexes import SearchIndexClient

            self._index_client = SearchIndexClient(self.endpoint, self.credential, **self._client_kwargs)
        return self._index_client

    def _aclients(self) -> tuple[Any, Any]:
        from azure.search.documents.aio import SearchClient
        from azure.search.documents.indexes.aio import SearchIndexClient

        cred = self.async_credential
        return (SearchClient(self.endpoint, self.index_name, cred, **self._client_kwargs),
                SearchIndexClient(self.endpoint, cred, **self._client_kwargs))

    def _new_definition(self, index: Any) -> _Definition:
        settings = layout.index_settings(index)
        d = _Definition(index.name, settings["dimensions"],
                        layout.metadata_fields([{"name": f.name, "type": _enum(f.type)} for f in index.fields]))
        d.names.update({k: name for k, (name, _) in self._schema_fields.items()})
        return d

    def _load_definition(self, refresh: bool = False) -> Optional[_Definition]:
        """The index behind ``index_name`` (an index or an alias to one); None when neither exists."""
        from azure.core.exceptions import ResourceNotFoundError

        if self._definition is not None and not refresh:
            return self._definition
        try:
            index = self.index_client.get_index(self.index_name)
        except ResourceNotFoundError:
            physical = self._resolve_alias()
            if physical is None:
                return None
            index = self.index_client.get_index(physical)
        self._definition = self._new_definition(index)
        return self._definition

    def _resolve_alias(self) -> Optional[str]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            alias = self.index_client.get_alias(self.index_name)
        except (ResourceNotFoundError, HttpResponseError):
            return None
        return alias.indexes[0] if alias.indexes else None

    async def _aload_definition(self, aindex: Any) -> Optional[_Definition]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        if self._definition is not None:
            return self._definition
        try:
            index = await aindex.get_index(self.index_name)
        except ResourceNotFoundError:
            try:
                alias = await aindex.get_alias(self.index_name)
            except (ResourceNotFoundError, HttpResponseError):
                return None
            if not alias.indexes:
                return None
            index = await aindex.get_index(alias.indexes[0])
        self._definition = self._new_definition(index)
        return self._definition

    def create_index(self, dimensions: int) -> None:
        """Create the index now (writes create it on demand); a no-op when it exists."""
        if self._load_definition() is None:
            self._apply_index_change(self._index_change(dimensions, {}, None))

    def delete_index(self) -> None:
        """Drop the index and every document in it (missing: no error)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.index_client.delete_index(self.index_name)
        except ResourceNotFoundError:
            pass
        self._definition = None

    # ---- writes ----------------------------------------------------------------------------------------

    def _prepare(self, texts: Sequence[str], vectors: Sequence[Sequence[float]],
                 metadatas: Optional[Sequence[Optional[dict]]], ids: Optional[Sequence[Optional[str]]],
                 definition: Optional[_Definition]) -> tuple[list[str], list[dict], Optional[Any]]:
        """(ids, index documents, index to create or update first, or None) for an upload."""
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} texts")
        if len(vectors) != n:
            raise ValueError(f"expected {n} embeddings, got {len(vectors)}")
        out_ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * n)]
        if n == 0:
            return [], [], None
        dim = len(vectors[0])
        if any(len(v) != dim for v in vectors):
            raise ValueError("embeddings of one batch have different dimensions")
        if definition is not None and definition.dimensions and dim != definition.dimensions:
            raise ValueError(f"embedding has {dim} dimensions but index {self.index_name!r} holds "
                             f"{definition.dimensions}-dimensional vectors (was it built with another model?)")
        fields = dict(definition.fields) if definition else {name: edm for name, edm in self._schema_fields.values()}
        names = dict(definition.names) if definition else {k: name for k, (name, _) in self._schema_fields.items()}
        last = {doc_id: i for i, doc_id in enumerate(out_ids)}  # an id repeated in one batch: last wins
        docs = []
        for doc_id, i in last.items():
            md = (metadatas[i] if metadatas else None) or {}
            if not isinstance(md, dict):
                raise TypeError(f"metadata #{i} must be a dict, not {type(md).__name__}")
            docs.append(layout.to_index_document(doc_id, str(texts[i]), vectors[i], md, fields, names))
        change = None
        if definition is None or set(fields) != set(definition.fields):
            change = self._index_change(dim, fields, definition)
        if definition is not None:
            definition.names.update(names)
        return out_ids, docs, change

    def _index_change(self, dim: int, fields: dict[str, str], definition: Optional[_Definition]) -> Any:
        physical = definition.physical if definition else self.index_name
        all_fields = {name: edm for name, edm in self._schema_fields.values()}
        all_fields.update(definition.fields if definition else {})
        all_fields.update(fields)
        return layout.build_index(physical, definition.dimensions or dim if definition else dim, all_fields,
                                  algorithm=self.vector_algorithm, metric=self.metric,
                                  semantic_configuration=self.semantic_configuration,
                                  description=self.index_description)

    def _apply_index_change(self, index: Optional[Any]) -> None:
        if index is None:
            return
        if self._definition is not None:  # keep the service's algorithm and semantic settings
            current = self.index_client.get_index(self._definition.physical)
            index = _extend_fields(current, index)
        self.index_client.create_or_update_index(index)
        self._definition = self._new_definition(index)

    async def _aapply_index_change(self, aindex: Any, index: Optional[Any]) -> None:
        if index is None:
            return
        if self._definition is not None:
            current = await aindex.get_index(self._definition.physical)
            index = _extend_fields(current, index)
        await aindex.create_or_update_index(index)
        self._definition = self._new_definition(index)

    def _batches(self, actions: list[dict]) -> Iterator[list[dict]]:
        """Split within the service's limits: count and (JSON) bytes per request."""
        batch: list[dict] = []
        size = 2
        for a in actions:
            n = len(json.dumps(a, separators=(",", ":"))) + 1
            if batch and (len(batch) >= self.batch_size or size + n > self.max_batch_bytes):
                yield batch
                batch, size = [], 2
            batch.append(a)
            size += n
        if batch:
            yield batch

    @staticmethod
    def _check_results(results: Iterable[Any], failures: list, succeeded: list) -> None:
        for r in results:
            doc_id = layout.decode_key(r.key)
            if r.succeeded:
                succeeded.append(doc_id)
            else:
                failures.append((doc_id, int(r.status_code or 0), r.error_message or ""))

    def add_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                  ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = self.embedding.embed_documents(texts) if texts else []
        return self.add_embeddings(texts, vectors, metadatas, ids=ids)

    def add_embeddings(self, texts: Sequence[str], embeddings: Sequence[Sequence[float]],
                       metadatas: Optional[Sequence[Optional[dict]]] = None, *,
                       ids: Optional[Sequence[Optional[str]]] = None) -> list[str]:
        """Upload precomputed embeddings (one per text); ids default to new UUIDs; returns the ids."""
        out_ids, docs, change = self._prepare(texts, embeddings, metadatas, ids, self._load_definition())
        self._apply_index_change(change)
        failures: list = []
        succeeded: list = []
        for batch in self._batches(docs):
            self._check_results(self.search_client.upload_documents(documents=batch), failures, succeeded)
        if failures:
            raise AzureSearchIndexingError(failures, succeeded)
        return out_ids

    async def aadd_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                         ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = await self.embedding.aembed_documents(texts) if texts else []
        if self.async_credential is None:
            return await asyncio.to_thread(self.add_embeddings, texts, vectors, metadatas, ids=ids)
        asearch, aindex = self._aclients()
        async with asearch, aindex:
            definition = await self._aload_definition(aindex)
            out_ids, docs, change = self._prepare(texts, vectors, metadatas, ids, definition)
            await self._aapply_index_change(aindex, change)
            failures: list = []
            succeeded: list = []
            for batch in self._batches(docs):
                self._check_results(await asearch.upload_documents(documents=batch), failures, succeeded)
        if failures:
            raise AzureSearchIndexingError(failures, succeeded)
        return out_ids

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete by id (missing ids are ignored); ``ids=None`` deletes every document. Returns True."""
        if self._load_definition() is None:
            return True
        keys = self._all_keys() if ids is None else [layout.encode_key(str(i)) for i in dict.fromkeys(ids)]
        failures: list = []
        succeeded: list = []
        for batch in self._batches([{layout.KEY_FIELD: k} for k in keys]):
            self._check_results(self.search_client.delete_documents(documents=batch), failures, succeeded)
        if failures:
            raise AzureSearchIndexingError(failures, succeeded)
        return True

    async def adelete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        if self.async_credential is None or ids is None:
            return await asyncio.to_thread(self.delete, ids)
        asearch, aindex = self._aclients()
        async with asearch, aindex:
            if await self._aload_definition(aindex) is None:
                return True
            failures: list = []
            succeeded: list = []
            keys = [layout.encode_key(str(i)) for i in dict.fromkeys(ids)]
            for batch in self._batches([{layout.KEY_FIELD: k} for k in keys]):
                self._check_results(await asearch.delete_documents(documents=batch), failures, succeeded)
        if failures:
            raise AzureSearchIndexingError(failures, succeeded)
        return True

    def _all_keys(self) -> list[str]:
        return [r[layout.KEY_FIELD] for r in self._scan([layout.KEY_FIELD])]

    def _scan(self, select: Optional[list[str]], page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every index document, in key order, a page at a time. Paging by key (``id gt 'last'``)
        rather than ``$skip``: the service caps ``$skip`` at 100,000 and skip pages shift under writes."""
        from .odata import odata_string

        last: Optional[str] = None
        while True:
            page = list(self.search_client.search(
                search_text="*", select=select, top=page_size, order_by=[f"{layout.KEY_FIELD} asc"],
                filter=None if last is None else f"{layout.KEY_FIELD} gt {odata_string(last)}"))
            yield from page
            if len(page) < page_size:
                return
            last = page[-1][layout.KEY_FIELD]

    def iter_documents(self, include_vectors: bool = False) -> Iterator[dict[str, Any]]:
        """Every stored index document (raw fields; with ``content_vector`` if asked), for copies."""
        if self._load_definition() is None:
            return
        select = None if include_vectors else _SELECT
        for r in self._scan(select):
            yield {k: v for k, v in r.items() if not k.startswith("@search.")}

    def upload_index_documents(self, docs: Sequence[dict[str, Any]]) -> None:
        """Upload raw index documents (``iter_documents`` output) in batches; raises on any failure."""
        failures: list = []
        succeeded: list = []
        for batch in self._batches(list(docs)):
            self._check_results(self.search_client.upload_documents(documents=batch), failures, succeeded)
        if failures:
            raise AzureSearchIndexingError(failures, succeeded)

    # ---- reads -----------------------------------------------------------------------------------------

    def _keys_filter(self, ids: Sequence[str]) -> str:
        from .odata import odata_string

        # encoded keys hold only [A-Za-z0-9_-=], so "," is a safe search.in delimiter
        return f"search.in({layout.KEY_FIELD}, {odata_string(','.join(layout.encode_key(str(i)) for i in ids))}, ',')"

    @staticmethod
    def _order(ids: Sequence[str], docs: Iterable[Document]) -> list[Document]:
        by_id = {d.id: d for d in docs}
        return [by_id[i] for i in dict.fromkeys(str(i) for i in ids) if i in by_id]

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        if not ids or self._load_definition() is None:
            return []
        results = self.search_client.search(search_text="*", filter=self._keys_filter(ids), select=_SELECT,
                                            top=len(ids))
        return self._order(ids, (_document(r) for r in results))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        if not ids:
            return []
        if self.async_credential is None:
            return await asyncio.to_thread(self.get_by_ids, ids)
        asearch, aindex = self._aclients()
        async with asearch, aindex:
            if await self._aload_definition(aindex) is None:
                return []
            results = await asearch.search(search_text="*", filter=self._keys_filter(ids), select=_SELECT,
                                           top=len(ids))
            docs = [_document(r) async for r in results]
        return self._order(ids, docs)

    def _search_kwargs(self, definition: _Definition, *, text: Optional[str], vector: Optional[list[float]], k: int,
                       filter: FilterSpec, semantic: bool = False, with_vectors: bool = False,
                       knn: Optional[int] = None, exhaustive: Optional[bool] = None) -> dict[str, Any]:
        from azure.search.documents.models import VectorizedQuery

        kw: dict[str, Any] = {"search_text": text, "top": k,
                              "select": _SELECT + ([layout.VECTOR_FIELD] if with_vectors else []),
                              "filter": to_odata(filter, definition.fields, _FieldNames(definition.names))}
        if vector is not None:
            kw["vector_queries"] = [VectorizedQuery(vector=[float(x) for x in vector], k_nearest_neighbors=knn or k,
                                                    fields=layout.VECTOR_FIELD, exhaustive=exhaustive)]
            # pre-filtering: a filtered query returns the true best k matching documents
            kw["vector_filter_mode"] = "preFilter"
        if semantic:
            if not self.semantic_configuration:
                raise ValueError("semantic_hybrid needs a semantic configuration (semantic_configuration=...)")
            kw.update(query_type="semantic", semantic_configuration_name=self.semantic_configuration,
                      query_caption="extractive", query_caption_highlight_enabled=True)
        return kw

    def _stale(self, definition: _Definition, spec: FilterSpec) -> bool:
        """Does the filter name a key the cached definition has no field for? Another writer (or a
        commit behind an alias) may have added it since: re-read the index before folding the clause
        to "missing"."""
        names = _FieldNames(definition.names)
        return any(names[k] not in definition.fields for k in filter_keys(spec))

    def _run(self, **kw: Any) -> list[tuple[Document, float]]:
        definition = self._load_definition()
        if definition is not None and self._stale(definition, kw.get("filter")):
            definition = self._load_definition(refresh=True)
        if definition is None or kw["k"] <= 0:
            return []
        semantic = kw.get("semantic", False)
        try:
            results = list(self.search_client.search(**self._search_kwargs(definition, **kw)))
        except Exception as e:  # noqa: BLE001 - only the stale-field case is retried, the rest re-raised
            if not _unknown_field(e):
                raise
            # the alias moved to an index without a field we knew (a rollback): re-read and retry once
            definition = self._load_definition(refresh=True)
            if definition is None:
                return []
            results = list(self.search_client.search(**self._search_kwargs(definition, **kw)))
        return [(_document(r, semantic), float(r["@search.score"] or 0.0)) for r in results]

    async def _arun(self, **kw: Any) -> list[tuple[Document, float]]:
        if self.async_credential is None:
            return await asyncio.to_thread(lambda: self._run(**kw))
        if kw["k"] <= 0:
            return []
        semantic = kw.get("semantic", False)
        asearch, aindex = self._aclients()
        async with asearch, aindex:
            definition = await self._aload_definition(aindex)
            if definition is not None and self._stale(definition, kw.get("filter")):
                self._definition = None
                definition = await self._aload_definition(aindex)
            if definition is None:
                return []
            try:
                results = [r async for r in await asearch.search(**self._search_kwargs(definition, **kw))]
            except Exception as e:  # noqa: BLE001 - as in _run
                if not _unknown_field(e):
                    raise
                self._definition = None
                definition = await self._aload_definition(aindex)
                if definition is None:
                    return []
                results = [r async for r in await asearch.search(**self._search_kwargs(definition, **kw))]
            return [(_document(r, semantic), float(r["@search.score"] or 0.0)) for r in results]

    # similarity

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                               exhaustive: Optional[bool] = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        return self._run(text=None, vector=embedding, k=k, filter=filter, exhaustive=exhaustive)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter, **kwargs)

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                            exhaustive: Optional[bool] = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        return await self._arun(text=None, vector=vector, k=k, filter=filter, exhaustive=exhaustive)

    def similarity_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: FilterSpec = None,
                                 **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                           **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self._arun(text=None, vector=embedding, k=k, filter=filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return _RELEVANCE[self.metric]

    # MMR (Azure has no MMR: fetch fetch_k candidates with their vectors and select here)

    def _mmr(self, embedding: list[float], hits: list[tuple[Document, float]], vectors: list[list[float]], k: int,
             lambda_mult: float) -> list[Document]:
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        if not hits:
            return []
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vectors,
                                            lambda_mult=lambda_mult, k=k)
        return [hits[j][0] for j in chosen]

    def _vector_hits(self, embedding: list[float], fetch_k: int, filter: FilterSpec) -> tuple[list, list]:
        definition = self._load_definition()
        if definition is None:
            return [], []
        hits, vectors = [], []
        kw = self._search_kwargs(definition, text=None, vector=embedding, k=fetch_k, filter=filter, with_vectors=True)
        for r in self.search_client.search(**kw):
            hits.append((_document(r), float(r["@search.score"] or 0.0)))
            vectors.append(r[layout.VECTOR_FIELD])
        return hits, vectors

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: FilterSpec = None,
                                                **kwargs: Any) -> list[Document]:
        hits, vectors = self._vector_hits(embedding, max(fetch_k, k), filter)
        return self._mmr(embedding, hits, vectors, k, lambda_mult)

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(self.embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: FilterSpec = None,
                                             **kwargs: Any) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await asyncio.to_thread(self.max_marginal_relevance_search_by_vector, vector, k, fetch_k,
                                       lambda_mult, filter)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5, filter: FilterSpec = None,
                                                       **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k,
                                       lambda_mult, filter)

    # keyword, hybrid, semantic hybrid

    def keyword_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                  **kwargs: Any) -> list[tuple[Document, float]]:
        """BM25 over ``content`` (the service's full-text search); no vector query."""
        return self._run(text=query, vector=None, k=k, filter=filter)

    def keyword_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.keyword_search_with_score(query, k, filter)]

    async def akeyword_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self._arun(text=query, vector=None, k=k, filter=filter)]

    def hybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None, fetch_k: Optional[int] = None,
                                 **kwargs: Any) -> list[tuple[Document, float]]:
        """Text and vector queries in one request; the service fuses the two rankings with RRF.
        ``fetch_k`` (default ``max(50, k)``): the vector query's k, the candidates RRF sees."""
        vector = self.embedding.embed_query(query)
        return self._run(text=query, vector=vector, k=k, filter=filter, knn=max(fetch_k or _SEMANTIC_WINDOW, k))

    def hybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.hybrid_search_with_score(query, k, filter, **kwargs)]

    async def ahybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                        fetch_k: Optional[int] = None, **kwargs: Any) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        return await self._arun(text=query, vector=vector, k=k, filter=filter,
                                knn=max(fetch_k or _SEMANTIC_WINDOW, k))

    async def ahybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.ahybrid_search_with_score(query, k, filter, **kwargs)]

    def semantic_hybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                          fetch_k: Optional[int] = None, **kwargs: Any) -> list[tuple[Document, float]]:
        """Hybrid, then the semantic ranker over the top 50: (document, reranker score 0-4), best first.
        Each document's metadata carries ``@search.score`` (RRF), ``@search.reranker_score`` and
        ``@search.captions``."""
        vector = self.embedding.embed_query(query)
        hits = self._run(text=query, vector=vector, k=k, filter=filter, semantic=True,
                         knn=max(fetch_k or _SEMANTIC_WINDOW, k))
        return [(d, float(d.metadata.get("@search.reranker_score") or 0.0)) for d, _ in hits]

    def semantic_hybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None,
                               **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.semantic_hybrid_search_with_score(query, k, filter, **kwargs)]

    async def asemantic_hybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                                 fetch_k: Optional[int] = None,
                                                 **kwargs: Any) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        hits = await self._arun(text=query, vector=vector, k=k, filter=filter, semantic=True,
                                knn=max(fetch_k or _SEMANTIC_WINDOW, k))
        return [(d, float(d.metadata.get("@search.reranker_score") or 0.0)) for d, _ in hits]

    async def asemantic_hybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None,
                                      **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asemantic_hybrid_search_with_score(query, k, filter, **kwargs)]

# ---- helpers ---------------------------------------------------------------------------------------------


def _document(result: Mapping[str, Any], semantic: bool = False) -> Document:
    raw = result.get(layout.METADATA_FIELD)
    metadata = json.loads(raw) if raw else {}
    if semantic:
        metadata["@search.score"] = result.get("@search.score")
        metadata["@search.reranker_score"] = result.get("@search.reranker_score")
        captions = result.get("@search.captions") or []
        metadata["@search.captions"] = [{"text": c.text, "highlights": c.highlights} for c in captions]
    return Document(page_content=result.get(layout.CONTENT_FIELD) or "", metadata=metadata,
                    id=layout.decode_key(result[layout.KEY_FIELD]))


def _unknown_field(error: Exception) -> bool:
    """The service's 400 for a filter on a field the index does not have."""
    return getattr(error, "status_code", None) == 400 and "Could not find a property" in str(error)


def _enum(value: Any) -> str:
    """The wire string of an SDK enum member (``str()`` of one gives its repr on Python 3.11+)."""
    return str(getattr(value, "value", value))


def _extend_fields(current: Any, wanted: Any) -> Any:
    """``current`` (as the service has it) with the fields of ``wanted`` it lacks: Azure only allows
    adding fields to an existing index, so nothing else changes."""
    have = {f.name for f in current.fields}
    current.fields = list(current.fields) + [f for f in wanted.fields if f.name not in have]
    return current


def _cosine_relevance(score: float) -> float:
    if score <= 0:
        return 0.0
    cos = 2.0 - 1.0 / score  # score = 1 / (1 + (1 - cos))
    return min(1.0, max(0.0, (1.0 + cos) / 2.0))


def _dot_relevance(score: float) -> float:
    if score <= 0:
        return 0.0
    dot = score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    return min(1.0, max(0.0, (1.0 + dot) / 2.0))


_RELEVANCE: dict[str, Callable[[float], float]] = {
    "cosine": _cosine_relevance,
    "euclidean": lambda s: min(1.0, max(0.0, float(s))),  # already 1 / (1 + distance)
    "dotProduct": _dot_relevance,
}
