"""``ElasticsearchVectorStore``: a LangChain VectorStore on Elasticsearch with native kNN, BM25 and hybrid.

    store = ElasticsearchVectorStore(embedding=emb, index_name="docs", es_url="http://localhost:9200")
    store = ElasticsearchVectorStore(embedding=emb, index_name="docs", cloud_id="...", api_key="...")
    store = ElasticsearchVectorStore(embedding=emb, index_name="docs", client=Elasticsearch(...))
    store.add_documents(docs, ids=[...])                  # _bulk; a failed item raises, naming it
    store.similarity_search("q", k=4, filter={"year": {"$gte": 2020}})        # kNN + filter
    store.keyword_search("q")                                                  # BM25
    store.hybrid_search("q", k=4, fusion="rrf" (default) | "weighted", alpha=0.5)

Index layout and mapping: :mod:`knowledge_banks.elasticsearch_mapping` (typed metadata from the
bank's schema, ``dense_vector`` with ``similarity`` and ``index_options`` such as int8_hnsw). The
index is created on the first write when missing. Filters: the shared filter dicts, translated by
:mod:`knowledge_banks.elasticsearch_filters` with the same semantics as FAISS's.

Scores. ``similarity_search_with_score`` returns Elasticsearch's ``_score``: ``(1+cos)/2`` for
cosine, ``(1+dot)/2`` for dot_product, ``1/(1+d²)`` for l2_norm (higher is better in every case),
``dot+1`` (or ``1/(1-dot)``) for max_inner_product. Relevance scores
(``similarity_search_with_relevance_scores``) are these mapped into [0, 1]
(:func:`~knowledge_banks.elasticsearch_mapping.relevance_fn`).

Hybrid. ``fusion="rrf"`` runs the cluster's ``rrf`` retriever (a kNN and a BM25 child, each cut to
``rank_window_size``). RRF is an Enterprise feature: on a Basic licence the cluster answers 403
``security_exception``; the store then fuses the same two rankings itself with
:func:`~knowledge_banks.fusion.reciprocal_rank_fusion` — the same formula, so the same ranking —
and remembers for its lifetime not to ask again. ``alpha`` other than 0.5 weighs the two lists
(client-side, as plain RRF has no weights). ``fusion="weighted"``: ``α·minmax(kNN) +
(1-α)·minmax(BM25)`` over the union of both windows, each candidate's missing score fetched exactly
from the cluster (as FAISS computes it), via :func:`~knowledge_banks.fusion.weighted_score_fusion`.

Strategy. ``strategy=DenseVectorStrategy(hybrid=True, rrf=...)`` (from ``elasticsearch.helpers.vectorstore``,
the seed's form) makes ``similarity_search`` the hybrid search: ``rrf`` True or a dict of its
parameters runs the rrf retriever above; ``rrf=False`` sends ``knn`` and a BM25 ``query`` in one
search (the cluster sums their scores). What the strategy carries that the store cannot honour is
refused by :func:`strategy_options`.

Async: every operation has an ``a``-prefixed variant on ``AsyncElasticsearch`` (one client per event
loop, made from the same connection settings; with only a sync ``client=`` given, async calls run it
in a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import Any, Callable, Iterable, Optional, Sequence

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from langchain_mesh.errors import MeshError

from .filters import filter_fields, translate_filter
from .mapping import (SOURCE_FIELDS, TEXT_FIELD, VECTOR_FIELD, document_source, index_mapping,
                                    json_metadata, metadata_types, relevance_fn)
from ...filters import FilterSpec
from ...fusion import FUSION_METHODS, reciprocal_rank_fusion, weighted_score_fusion
from ...store_base import BankStoreMixin

__all__ = ["ElasticsearchVectorStore", "ElasticsearchBulkError"]

log = logging.getLogger(__name__)

MAX_K = 10_000  # Elasticsearch's num_candidates and result-window ceiling


class ElasticsearchBulkError(MeshError):
    """Some items of a ``_bulk`` write failed; ``failures`` holds (id, status, error type, reason).

    Items not listed were written (a bulk request is not a transaction).
    """

    def __init__(self, action: str, failures: list[tuple[str, int, str, str]], written: list[str]):
        self.failures = failures
        self.written = written
        shown = "; ".join(f"{i} ({status} {etype}: {reason})" for i, status, etype, reason in failures[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(f"Elasticsearch {action} failed for {len(failures)} document(s): {shown}{more}")


def _is_missing_index(e: Exception) -> bool:
    return getattr(e, "status_code", getattr(getattr(e, "meta", None), "status", None)) == 404 and \
        "index_not_found" in str(getattr(e, "error", "") or e)


def _refuses_rrf(e: Exception) -> bool:
    """A cluster that cannot run the rrf retriever: Basic licence (403), or too old to know it (400)."""
    status = getattr(getattr(e, "meta", None), "status", None)
    text = str(getattr(e, "error", "")) + " " + str(e)
    if status == 403 and "security_exception" in text:
        return True
    return status == 400 and "retriever" in text and ("unknown" in text or "parsing" in text)


class ElasticsearchVectorStore(BankStoreMixin, VectorStore):
    """LangChain vector store on Elasticsearch (kNN, BM25, hybrid with RRF); see the module doc."""

    def __init__(self, embedding: Embeddings, index_name: str, *, es_url: Optional[str] = None,
                 client: Any = None, async_client: Any = None, cloud_id: Optional[str] = None,
                 api_key: Optional[str] = None, basic_auth: Optional[tuple[str, str]] = None,
                 metadata_schema: Optional[dict[str, str]] = None, similarity: str = "cosine",
                 index_options: Optional[dict[str, Any]] = None, refresh: bool | str = True,
                 create_index: bool = True, num_candidates: Optional[int] = None, bulk_batch_size: int = 500,
                 client_kwargs: Optional[dict[str, Any]] = None, strategy: Any = None):
        given = [n for n, v in (("es_url", es_url), ("client", client), ("cloud_id", cloud_id)) if v]
        if len(given) != 1:
            raise ValueError("give exactly one of es_url=, client= or cloud_id= (with api_key=), "
                             f"got {', '.join(given) or 'none'}")
        self.embedding = embedding
        self.index_name = index_name
        self.metadata_schema = dict(metadata_schema or {})
        self.similarity = similarity
        self.index_options = dict(index_options) if index_options else None
        self.refresh = refresh
        self.create_index = create_index
        self.num_candidates = num_candidates
        self.bulk_batch_size = int(bulk_batch_size)
        index_mapping(None, similarity, index_options, self.metadata_schema)  # validates early
        #: how ``similarity_search`` runs, from an ``elasticsearch`` ``DenseVectorStrategy`` (None: plain kNN)
        self.hybrid = strategy_options(strategy, similarity)
        self._conn = {k: v for k, v in (("hosts", es_url), ("cloud_id", cloud_id), ("api_key", api_key),
                                        ("basic_auth", basic_auth)) if v}
        self._conn.update(client_kwargs or {})
        self._owns_client = client is None
        self._client = client if client is not None else self._make_client(sync=True)
        self._async_given = async_client
        self._async_clients: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
        self._server_rrf: Optional[bool] = None  # None: not tried yet; False: refused, fuse client-side
        self._types: dict[str, str] = {}
        self._index_ready = False

    # ---- clients ---------------------------------------------------------------------------------------

    def _make_client(self, sync: bool) -> Any:
        from elasticsearch import AsyncElasticsearch, Elasticsearch

        return (Elasticsearch if sync else AsyncElasticsearch)(**self._conn)

    @property
    def client(self) -> Any:
        return self._client

    def _aclient(self) -> Optional[Any]:
        """The async client for the running loop, or None (then sync calls go to a thread)."""
        if self._async_given is not None:
            return self._async_given
        if not self._owns_client:
            return None
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = self._make_client(sync=False)
        return client

    async def _acall(self, method: str, **kwargs: Any) -> Any:
        client = self._aclient()
        if client is None:
            return await asyncio.to_thread(self._call, method, **kwargs)
        target = client.indices if method.startswith("indices.") else client
        return await getattr(target, method.split(".")[-1])(**kwargs)

    def _call(self, method: str, **kwargs: Any) -> Any:
        target = self._client.indices if method.startswith("indices.") else self._client
        return getattr(target, method.split(".")[-1])(**kwargs)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    async def aclose(self) -> None:
        for client in list(self._async_clients.values()):
            await client.close()
        self._async_clients.clear()

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def __repr__(self) -> str:
        return f"ElasticsearchVectorStore(index_name={self.index_name!r}, similarity={self.similarity!r})"

    # ---- index -----------------------------------------------------------------------------------------

    def mapping(self, dims: Optional[int]) -> dict[str, Any]:
        return index_mapping(dims, self.similarity, self.index_options, self.metadata_schema)

    def ensure_index(self, dims: Optional[int] = None) -> None:
        """Create the index with this store's mapping unless it (or an alias of that name) exists."""
        if self._index_ready:
            return
        if not self._call("indices.exists", index=self.index_name):
            self._create(dims, self._call)
        self._index_ready = True

    async def aensure_index(self, dims: Optional[int] = None) -> None:
        if self._index_ready:
            return
        if not await self._acall("indices.exists", index=self.index_name):
            await self._acreate(dims)
        self._index_ready = True

    def _create_args(self, dims: Optional[int]) -> dict[str, Any]:
        if not self.create_index:
            raise MeshError(f"Elasticsearch index or alias {self.index_name!r} does not exist (this store was "
                            f"opened with create_index=False)")
        return {"index": self.index_name, "mappings": self.mapping(dims)}

    def _create(self, dims: Optional[int], call: Callable[..., Any]) -> None:
        from elasticsearch import BadRequestError

        try:
            call("indices.create", **self._create_args(dims))
        except BadRequestError as e:  # created meanwhile by another writer: fine
            if "resource_already_exists" not in str(e):
                raise

    async def _acreate(self, dims: Optional[int]) -> None:
        from elasticsearch import BadRequestError

        try:
            await self._acall("indices.create", **self._create_args(dims))
        except BadRequestError as e:
            if "resource_already_exists" not in str(e):
                raise

    # ---- writes ----------------------------------------------------------------------------------------

    def _bulk_batches(self, texts: Sequence[str], vectors: Sequence[Sequence[float]],
                      metadatas: Optional[Sequence[Optional[dict]]], ids: Optional[Sequence[Optional[str]]]
                      ) -> tuple[list[str], list[tuple[list[str], list[dict[str, Any]]]]]:
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} texts")
        if len(vectors) != n:
            raise ValueError(f"expected {n} embeddings, got {len(vectors)}")
        out_ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * n)]
        mds = [json_metadata(metadatas[i] if metadatas else None, i) for i in range(n)]
        batches = []
        for start in range(0, n, self.bulk_batch_size):
            ops: list[dict[str, Any]] = []
            for i in range(start, min(n, start + self.bulk_batch_size)):
                ops.append({"index": {"_index": self.index_name, "_id": out_ids[i]}})
                ops.append(document_source(str(texts[i]), list(vectors[i]), mds[i]))
            batches.append((out_ids[start:start + self.bulk_batch_size], ops))
        return out_ids, batches

    @staticmethod
    def _bulk_failures(response: Any, ignore_not_found: bool = False) -> list[tuple[str, int, str, str]]:
        failures = []
        if not response.get("errors") and not ignore_not_found:
            return failures
        for item in response.get("items", []):
            (_, res), = item.items()
            err = res.get("error")
            if err:
                failures.append((str(res.get("_id")), int(res.get("status", 0)), str(err.get("type")),
                                 str(err.get("reason"))))
        return failures

    def _check_bulk(self, responses: list[Any], action: str) -> None:
        failures, written = [], []
        for r in responses:
            bad = self._bulk_failures(r)
            if action == "deletion":  # deleting from a missing index: nothing to delete, not a failure
                bad = [f for f in bad if f[2] != "index_not_found_exception"]
            failures.extend(bad)
            bad_ids = {f[0] for f in bad}
            written.extend(str(next(iter(it.values())).get("_id")) for it in r.get("items", [])
                           if str(next(iter(it.values())).get("_id")) not in bad_ids)
        if failures:
            raise ElasticsearchBulkError(action, failures, written)

    def add_embeddings(self, texts: Sequence[str], embeddings: Sequence[Sequence[float]],
                       metadatas: Optional[Sequence[Optional[dict]]] = None, *,
                       ids: Optional[Sequence[Optional[str]]] = None) -> list[str]:
        """Index precomputed embeddings (re-adding an id replaces it); returns the ids."""
        out_ids, batches = self._bulk_batches(texts, embeddings, metadatas, ids)
        if not out_ids:
            return []
        self.ensure_index(len(embeddings[0]))
        responses = [self._call("bulk", operations=ops, refresh=self.refresh) for _, ops in batches]
        self._check_bulk(responses, "indexing")
        return out_ids

    async def aadd_embeddings(self, texts: Sequence[str], embeddings: Sequence[Sequence[float]],
                              metadatas: Optional[Sequence[Optional[dict]]] = None, *,
                              ids: Optional[Sequence[Optional[str]]] = None) -> list[str]:
        out_ids, batches = self._bulk_batches(texts, embeddings, metadatas, ids)
        if not out_ids:
            return []
        await self.aensure_index(len(embeddings[0]))
        responses = [await self._acall("bulk", operations=ops, refresh=self.refresh) for _, ops in batches]
        self._check_bulk(responses, "indexing")
        return out_ids

    def add_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                  ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = self.embedding.embed_documents(texts) if texts else []
        return self.add_embeddings(texts, vectors, metadatas, ids=ids)

    async def aadd_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                         ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = await self.embedding.aembed_documents(texts) if texts else []
        return await self.aadd_embeddings(texts, vectors, metadatas, ids=ids)

    def _delete_ops(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [{"delete": {"_index": self.index_name, "_id": str(i)}} for i in dict.fromkeys(ids)]

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete by id (missing ids are ignored); ``ids=None`` deletes every document. Returns True."""
        from elasticsearch import NotFoundError

        try:
            if ids is None:
                self._call("delete_by_query", index=self.index_name, query={"match_all": {}}, refresh=True,
                           conflicts="proceed")
            elif ids:
                self._check_bulk([self._call("bulk", operations=self._delete_ops(ids), refresh=self.refresh)],
                                 "deletion")
        except NotFoundError as e:
            if not _is_missing_index(e):
                raise
        return True

    async def adelete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        from elasticsearch import NotFoundError

        try:
            if ids is None:
                await self._acall("delete_by_query", index=self.index_name, query={"match_all": {}}, refresh=True,
                                  conflicts="proceed")
            elif ids:
                r = await self._acall("bulk", operations=self._delete_ops(ids), refresh=self.refresh)
                self._check_bulk([r], "deletion")
        except NotFoundError as e:
            if not _is_missing_index(e):
                raise
        return True

    @staticmethod
    def _mget_docs(response: Any, ids: Sequence[str]) -> list[Document]:
        found = {d["_id"]: d for d in response["docs"] if d.get("found")}
        return [_to_doc(found[i]) for i in dict.fromkeys(ids) if i in found]

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        from elasticsearch import NotFoundError

        ids = [str(i) for i in ids]
        if not ids:
            return []
        try:
            r = self._call("mget", index=self.index_name, ids=ids, source_includes=SOURCE_FIELDS)
        except NotFoundError as e:
            if _is_missing_index(e):
                return []
            raise
        return self._mget_docs(r, ids)

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        from elasticsearch import NotFoundError

        ids = [str(i) for i in ids]
        if not ids:
            return []
        try:
            r = await self._acall("mget", index=self.index_name, ids=ids, source_includes=SOURCE_FIELDS)
        except NotFoundError as e:
            if _is_missing_index(e):
                return []
            raise
        return self._mget_docs(r, ids)

    # ---- filters ---------------------------------------------------------------------------------------

    def _filter_clauses(self, spec: FilterSpec, types: dict[str, str]) -> list[dict[str, Any]]:
        clause = translate_filter(spec, types)
        return [] if clause is None else [clause]

    def _needs_types(self, spec: FilterSpec) -> bool:
        return bool(spec) and not filter_fields(spec) <= set(self._types)

    def _filter(self, spec: FilterSpec) -> list[dict[str, Any]]:
        """ES filter clauses for a filter dict; field types come from the live mapping (cached)."""
        if self._needs_types(spec):
            self._types = self._read_types(lambda: self._call("indices.get_mapping", index=self.index_name))
        return self._filter_clauses(spec, self._types)

    async def _afilter(self, spec: FilterSpec) -> list[dict[str, Any]]:
        if self._needs_types(spec):
            try:
                r = await self._acall("indices.get_mapping", index=self.index_name)
            except Exception as e:  # noqa: BLE001 - a missing index has no typed fields
                if not _is_missing_index(e):
                    raise
                r = {}
            self._types = metadata_types(r)
        return self._filter_clauses(spec, self._types)

    @staticmethod
    def _read_types(get: Callable[[], Any]) -> dict[str, str]:
        from elasticsearch import NotFoundError

        try:
            return metadata_types(get())
        except NotFoundError as e:
            if _is_missing_index(e):
                return {}
            raise

    # ---- request bodies --------------------------------------------------------------------------------

    def _candidates(self, k: int, num_candidates: Optional[int]) -> int:
        wanted = num_candidates or self.num_candidates or max(50, 2 * k)
        return min(MAX_K, max(k, int(wanted)))

    def _knn(self, vector: Sequence[float], k: int, filters: list[dict[str, Any]],
             num_candidates: Optional[int]) -> dict[str, Any]:
        return {"field": VECTOR_FIELD, "query_vector": [float(x) for x in vector], "k": k,
                "num_candidates": self._candidates(k, num_candidates), "filter": filters}

    @staticmethod
    def _bm25(query: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
        return {"bool": {"must": [{"match": {TEXT_FIELD: {"query": query}}}], "filter": filters}}

    def _search(self, body: dict[str, Any]) -> list[tuple[Document, float]]:
        from elasticsearch import NotFoundError

        try:
            r = self._call("search", index=self.index_name, **body)
        except NotFoundError as e:
            if _is_missing_index(e):
                return []
            raise
        return _hits(r)

    async def _asearch(self, body: dict[str, Any]) -> list[tuple[Document, float]]:
        from elasticsearch import NotFoundError

        try:
            r = await self._acall("search", index=self.index_name, **body)
        except NotFoundError as e:
            if _is_missing_index(e):
                return []
            raise
        return _hits(r)

    # ---- dense search ----------------------------------------------------------------------------------

    def _knn_body(self, vector: Sequence[float], k: int, filters: list[dict[str, Any]],
                  num_candidates: Optional[int], source: Any = None) -> dict[str, Any]:
        k = min(int(k), MAX_K)
        return {"knn": self._knn(vector, k, filters, num_candidates), "size": k,
                "source": source if source is not None else SOURCE_FIELDS}

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4, filter: FilterSpec = None,
                                               num_candidates: Optional[int] = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        self._no_strategy("search by vector (the hybrid search needs the query text)")
        if k <= 0:
            return []
        return self._search(self._knn_body(embedding, k, self._filter(filter), num_candidates))

    async def asimilarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                                      filter: FilterSpec = None, num_candidates: Optional[int] = None,
                                                      **kwargs: Any) -> list[tuple[Document, float]]:
        self._no_strategy("search by vector (the hybrid search needs the query text)")
        if k <= 0:
            return []
        return await self._asearch(self._knn_body(embedding, k, await self._afilter(filter), num_candidates))

    def similarity_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        if self.hybrid is not None:  # the store was opened with a hybrid DenseVectorStrategy
            return self._strategy_search(query, self.embedding.embed_query(query), k, filter, kwargs)
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter, **kwargs)

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        if self.hybrid is not None:
            return await self._astrategy_search(query, vector, k, filter, kwargs)
        return await self.asimilarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    # ---- the hybrid strategy -------------------------------------------------------------------------------

    def _strategy_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from langchain_mesh.errors import SettingsError

        unknown = sorted(set(kwargs) - {"num_candidates"})
        if unknown:
            raise SettingsError(f"similarity search with a hybrid strategy takes k, filter and num_candidates; "
                                f"unknown: {', '.join(unknown)}", unknown)
        opts = self.hybrid or {}
        if opts.get("fusion") != "rrf":
            return dict(kwargs)
        return {"fusion": "rrf", "rank_constant": opts["rank_constant"], "rank_window_size": opts["rank_window_size"],
                **kwargs}

    def _sum_body(self, query: str, vector: Sequence[float], k: int, filters: list[dict[str, Any]],
                  num_candidates: Optional[int]) -> dict[str, Any]:
        # DenseVectorStrategy(hybrid=True, rrf=False): one search with a kNN clause and a BM25 query
        # beside it; Elasticsearch returns their union with the two scores summed
        k = min(int(k), MAX_K)
        return {"knn": self._knn(vector, k, filters, num_candidates), "query": self._bm25(query, filters),
                "size": k, "source": SOURCE_FIELDS}

    def _strategy_search(self, query: str, vector: Sequence[float], k: int, filter: FilterSpec,
                         kwargs: dict[str, Any]) -> list[tuple[Document, float]]:
        kw = self._strategy_kwargs(kwargs)
        if k <= 0:
            return []
        if self.hybrid and self.hybrid["fusion"] == "sum":
            return self._search(self._sum_body(query, vector, k, self._filter(filter), kw.get("num_candidates")))
        return self.hybrid_search_with_score_by_vector(query, list(vector), k, filter, **kw)

    async def _astrategy_search(self, query: str, vector: Sequence[float], k: int, filter: FilterSpec,
                                kwargs: dict[str, Any]) -> list[tuple[Document, float]]:
        kw = self._strategy_kwargs(kwargs)
        if k <= 0:
            return []
        if self.hybrid and self.hybrid["fusion"] == "sum":
            body = self._sum_body(query, vector, k, await self._afilter(filter), kw.get("num_candidates"))
            return await self._asearch(body)
        return await self.ahybrid_search_with_score_by_vector(query, list(vector), k, filter, **kw)

    def _no_strategy(self, what: str) -> None:
        from langchain_mesh.errors import SettingsError

        if self.hybrid is not None:
            raise SettingsError(f"{what} cannot run with a hybrid DenseVectorStrategy: only similarity search does "
                                "(it runs the hybrid search); open the store without strategy= for this",
                                ["strategy"])

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
        return [d for d, _ in await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return relevance_fn(self.similarity)

    # ---- MMR -------------------------------------------------------------------------------------------

    def _mmr(self, embedding: Sequence[float], hits: list[tuple[Document, float]], vectors: list[list[float]],
             k: int, lambda_mult: float) -> list[Document]:
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        if not hits:
            return []
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vectors,
                                            lambda_mult=lambda_mult, k=k)
        return [hits[j][0] for j in chosen]

    def _mmr_body(self, embedding: Sequence[float], fetch_k: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
        return self._knn_body(embedding, fetch_k, filters, None, source=SOURCE_FIELDS + [VECTOR_FIELD])

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: FilterSpec = None,
                                                **kwargs: Any) -> list[Document]:
        from elasticsearch import NotFoundError

        self._no_strategy("max marginal relevance search")
        body = self._mmr_body(embedding, max(fetch_k, k), self._filter(filter))
        try:
            r = self._call("search", index=self.index_name, **body)
        except NotFoundError as e:
            if _is_missing_index(e):
                return []
            raise
        return self._mmr(embedding, _hits(r), _vectors(r), k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                       lambda_mult: float = 0.5, filter: FilterSpec = None,
                                                       **kwargs: Any) -> list[Document]:
        from elasticsearch import NotFoundError

        self._no_strategy("max marginal relevance search")
        body = self._mmr_body(embedding, max(fetch_k, k), await self._afilter(filter))
        try:
            r = await self._acall("search", index=self.index_name, **body)
        except NotFoundError as e:
            if _is_missing_index(e):
                return []
            raise
        return self._mmr(embedding, _hits(r), _vectors(r), k, lambda_mult)

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(self.embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: FilterSpec = None,
                                             **kwargs: Any) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    # ---- keyword search --------------------------------------------------------------------------------

    def _keyword_body(self, query: str, k: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
        return {"query": self._bm25(query, filters), "size": min(int(k), MAX_K), "source": SOURCE_FIELDS}

    def keyword_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                  **kwargs: Any) -> list[tuple[Document, float]]:
        """BM25 on the text (standard analyzer): documents sharing no term with the query are not returned."""
        if k <= 0:
            return []
        return self._search(self._keyword_body(query, k, self._filter(filter)))

    async def akeyword_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                         **kwargs: Any) -> list[tuple[Document, float]]:
        if k <= 0:
            return []
        return await self._asearch(self._keyword_body(query, k, await self._afilter(filter)))

    def keyword_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.keyword_search_with_score(query, k, filter)]

    async def akeyword_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.akeyword_search_with_score(query, k, filter)]

    # ---- hybrid search ---------------------------------------------------------------------------------

    def _hybrid_plan(self, k: int, fusion: str, alpha: float, rank_constant: float,
                     rank_window_size: Optional[int]) -> tuple[int, bool]:
        if fusion not in FUSION_METHODS:
            raise ValueError(f"fusion must be one of {FUSION_METHODS}, got {fusion!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        window = min(MAX_K, max(int(rank_window_size or max(100, 4 * k)), k))
        # the cluster's RRF has no per-list weights here, and takes integer rank constants
        native = (fusion == "rrf" and alpha == 0.5 and float(rank_constant).is_integer() and rank_constant >= 1
                  and self._server_rrf is not False)
        return window, native

    def _rrf_body(self, query: str, vector: Sequence[float], k: int, window: int, filters: list[dict[str, Any]],
                  rank_constant: float, num_candidates: Optional[int]) -> dict[str, Any]:
        # the same two rankings the client-side fallback fuses, in the same order: kNN, then BM25
        return {"retriever": {"rrf": {
            "retrievers": [{"knn": self._knn(vector, window, filters, max(num_candidates or 0, window))},
                           {"standard": {"query": self._bm25(query, filters)}}],
            "rank_constant": int(rank_constant), "rank_window_size": window}},
            "size": k, "source": SOURCE_FIELDS}

    def _lists_bodies(self, query: str, vector: Sequence[float], window: int, filters: list[dict[str, Any]],
                      num_candidates: Optional[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        dense = self._knn_body(vector, window, filters, max(num_candidates or 0, window))
        return dense, self._keyword_body(query, window, filters)

    @staticmethod
    def _fuse_ranks(dense: list[tuple[Document, float]], lexical: list[tuple[Document, float]], k: int, alpha: float,
                    rank_constant: float) -> list[tuple[Document, float]]:
        docs = {d.id: d for d, _ in lexical}
        docs.update({d.id: d for d, _ in dense})
        fused = reciprocal_rank_fusion([[d.id for d, _ in dense], [d.id for d, _ in lexical]],
                                       weights=[2 * alpha, 2 * (1 - alpha)], rank_constant=rank_constant)
        return [(docs[i], s) for i, s in fused[:k]]

    def _completion_bodies(self, query: str, vector: Sequence[float], filters: list[dict[str, Any]],
                           dense: list[tuple[Document, float]], lexical: list[tuple[Document, float]]
                           ) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]]]:
        """Requests for the exact score each candidate lacks (kNN score of BM25-only hits and back)."""
        dense_ids = {d.id for d, _ in dense}
        lex_ids = {d.id for d, _ in lexical}
        need_dense = [i for i in lex_ids if i not in dense_ids]
        need_lex = [i for i in dense_ids if i not in lex_ids]
        d_body = l_body = None
        if need_dense:
            ids_filter = filters + [{"ids": {"values": need_dense}}]
            d_body = self._knn_body(vector, len(need_dense), ids_filter, len(need_dense), source=False)
        if need_lex:
            l_body = {"query": self._bm25(query, filters + [{"ids": {"values": need_lex}}]), "size": len(need_lex),
                      "source": False}
        return d_body, l_body

    @staticmethod
    def _fuse_weighted(dense: list[tuple[Document, float]], lexical: list[tuple[Document, float]],
                       more_dense: list[tuple[Document, float]], more_lex: list[tuple[Document, float]],
                       k: int, alpha: float) -> list[tuple[Document, float]]:
        docs = {d.id: d for d, _ in lexical}
        docs.update({d.id: d for d, _ in dense})
        dense_map = {d.id: s for d, s in dense}
        dense_map.update({d.id: s for d, s in more_dense})
        lex_map = {d.id: s for d, s in lexical}
        lex_map.update({d.id: s for d, s in more_lex})
        for i in dense_map:  # a dense hit that matches no query term has a BM25 score of 0
            lex_map.setdefault(i, 0.0)
        fused = weighted_score_fusion([dense_map, lex_map], weights=[alpha, 1 - alpha])
        return [(docs[i], s) for i, s in fused[:k] if i in docs]

    def _note_rrf_refused(self, e: Exception) -> None:
        self._server_rrf = False
        log.warning("Elasticsearch index %s: the cluster refused the rrf retriever (%s); fusing client-side from "
                    "now on", self.index_name, str(e)[:200])

    def hybrid_search_with_score_by_vector(self, query: str, embedding: list[float], k: int = 4,
                                           filter: FilterSpec = None, *, fusion: str = "rrf", alpha: float = 0.5,
                                           rank_constant: float = 60, rank_window_size: Optional[int] = None,
                                           num_candidates: Optional[int] = None,
                                           **kwargs: Any) -> list[tuple[Document, float]]:
        """Fuse kNN and BM25 rankings of ``rank_window_size`` candidates each (default ``max(100, 4k)``);
        returns (document, fused score) best first. See the module doc for the fusion methods."""
        from elasticsearch import ApiError

        if k <= 0:
            return []
        window, native = self._hybrid_plan(k, fusion, alpha, rank_constant, rank_window_size)
        filters = self._filter(filter)
        if native:
            try:
                hits = self._search(self._rrf_body(query, embedding, k, window, filters, rank_constant,
                                                   num_candidates))
                self._server_rrf = True
                return hits
            except ApiError as e:
                if not _refuses_rrf(e):
                    raise
                self._note_rrf_refused(e)
        dense_body, lex_body = self._lists_bodies(query, embedding, window, filters, num_candidates)
        dense, lexical = self._search(dense_body), self._search(lex_body)
        if fusion == "rrf":
            return self._fuse_ranks(dense, lexical, k, alpha, rank_constant)
        d_body, l_body = self._completion_bodies(query, embedding, filters, dense, lexical)
        more_dense = self._search(d_body) if d_body else []
        more_lex = self._search(l_body) if l_body else []
        return self._fuse_weighted(dense, lexical, more_dense, more_lex, k, alpha)

    async def ahybrid_search_with_score_by_vector(self, query: str, embedding: list[float], k: int = 4,
                                                  filter: FilterSpec = None, *, fusion: str = "rrf",
                                                  alpha: float = 0.5, rank_constant: float = 60,
                                                  rank_window_size: Optional[int] = None,
                                                  num_candidates: Optional[int] = None,
                                                  **kwargs: Any) -> list[tuple[Document, float]]:
        from elasticsearch import ApiError

        if k <= 0:
            return []
        window, native = self._hybrid_plan(k, fusion, alpha, rank_constant, rank_window_size)
        filters = await self._afilter(filter)
        if native:
            try:
                hits = await self._asearch(self._rrf_body(query, embedding, k, window, filters, rank_constant,
                                                          num_candidates))
                self._server_rrf = True
                return hits
            except ApiError as e:
                if not _refuses_rrf(e):
                    raise
                self._note_rrf_refused(e)
        dense_body, lex_body = self._lists_bodies(query, embedding, window, filters, num_candidates)
        dense, lexical = await self._asearch(dense_body), await self._asearch(lex_body)
        if fusion == "rrf":
            return self._fuse_ranks(dense, lexical, k, alpha, rank_constant)
        d_body, l_body = self._completion_bodies(query, embedding, filters, dense, lexical)
        more_dense = await self._asearch(d_body) if d_body else []
        more_lex = await self._asearch(l_body) if l_body else []
        return self._fuse_weighted(dense, lexical, more_dense, more_lex, k, alpha)

    def hybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                 **kwargs: Any) -> list[tuple[Document, float]]:
        return self.hybrid_search_with_score_by_vector(query, self.embedding.embed_query(query), k, filter, **kwargs)

    async def ahybrid_search_with_score(self, query: str, k: int = 4, filter: FilterSpec = None,
                                        **kwargs: Any) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        return await self.ahybrid_search_with_score_by_vector(query, vector, k, filter, **kwargs)

    def hybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.hybrid_search_with_score(query, k, filter, **kwargs)]

    async def ahybrid_search(self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.ahybrid_search_with_score(query, k, filter, **kwargs)]

    @property
    def server_rrf(self) -> Optional[bool]:
        """True once the cluster ran an rrf retriever, False once it refused one, None before trying."""
        return self._server_rrf



# --------------------------------------------------------------------------------------------------
# DenseVectorStrategy (the seed's ``vectorstore_kwargs={"strategy": DenseVectorStrategy(hybrid=True)}``)

_DISTANCES = {"COSINE": "cosine", "DOT_PRODUCT": "dot_product", "EUCLIDEAN_DISTANCE": "l2_norm",
              "MAX_INNER_PRODUCT": "max_inner_product"}
_RRF_KEYS = {"rank_constant", "rank_window_size", "window_size"}  # window_size: the helper's older name


def strategy_options(strategy: Any, similarity: str) -> Optional[dict[str, Any]]:
    """What a ``DenseVectorStrategy`` asks of ``similarity_search``: None for plain kNN, else
    ``{"fusion": "rrf", "rank_constant", "rank_window_size"}`` (``rrf=True`` or a dict of its parameters)
    or ``{"fusion": "sum"}`` (``rrf=False``: Elasticsearch's kNN + BM25 query, scores summed).

    Everything the strategy carries is either honoured or refused with a :class:`SettingsError`
    naming it: the distance must be the index's, inference in the cluster (``model_id``) is not
    used (the bank embeds with its ``embedding_llm``), and other strategy classes are refused.
    """
    from langchain_mesh.errors import SettingsError

    if strategy is None:
        return None
    try:
        from elasticsearch.helpers.vectorstore import DenseVectorStrategy
    except ImportError:  # pragma: no cover - the elasticsearch extra is what this store runs on
        DenseVectorStrategy = None  # type: ignore[assignment,misc]
    if DenseVectorStrategy is None or not isinstance(strategy, DenseVectorStrategy):
        raise SettingsError(f"strategy={type(strategy).__name__}(...) is not supported by a knowledge bank on "
                            "Elasticsearch: give elasticsearch.helpers.vectorstore.DenseVectorStrategy (for "
                            "keyword search use search_type='keyword')", ["strategy"])
    distance = _DISTANCES.get(getattr(strategy.distance, "name", str(strategy.distance)))
    if distance != similarity:
        raise SettingsError(f"DenseVectorStrategy(distance={strategy.distance}) does not match the bank's index, "
                            f"built with similarity {similarity!r}; leave distance out or set the bank's "
                            f"settings.similarity", ["strategy.distance"])
    if strategy.model_id:
        raise SettingsError(f"DenseVectorStrategy(model_id={strategy.model_id!r}): inference in the cluster is not "
                            "used; the knowledge bank embeds queries with its embedding_llm", ["strategy.model_id"])
    if strategy.text_field not in ("text_field", TEXT_FIELD):  # "text_field" is the helper's default
        raise SettingsError(f"DenseVectorStrategy(text_field={strategy.text_field!r}): a knowledge bank keeps its "
                            f"text in {TEXT_FIELD!r}; leave text_field out", ["strategy.text_field"])
    rrf = strategy.rrf
    if not strategy.hybrid:
        if isinstance(rrf, dict):
            raise SettingsError("DenseVectorStrategy(rrf={...}) has parameters for hybrid search; add hybrid=True",
                                ["strategy.rrf"])
        return None
    if rrf is False:
        return {"fusion": "sum"}
    if rrf is True:
        return {"fusion": "rrf", "rank_constant": 60, "rank_window_size": None}
    if not isinstance(rrf, dict):
        raise SettingsError(f"DenseVectorStrategy(rrf={rrf!r}): give True, False or a dict of "
                            f"{sorted(_RRF_KEYS - {'window_size'})}", ["strategy.rrf"])
    unknown = sorted(set(rrf) - _RRF_KEYS)
    if unknown:
        raise SettingsError(f"DenseVectorStrategy(rrf=...): unknown rrf parameter(s) {unknown}; known: "
                            "rank_constant, rank_window_size", [f"strategy.rrf.{k}" for k in unknown])
    window = rrf.get("rank_window_size", rrf.get("window_size"))
    return {"fusion": "rrf", "rank_constant": rrf.get("rank_constant", 60), "rank_window_size": window}


def _to_doc(hit: dict[str, Any]) -> Document:
    src = hit.get("_source") or {}
    return Document(page_content=src.get(TEXT_FIELD, ""), metadata=src.get("metadata") or {}, id=hit["_id"])


def _hits(response: Any) -> list[tuple[Document, float]]:
    return [(_to_doc(h), float(h.get("_score") or 0.0)) for h in response["hits"]["hits"]]


def _vectors(response: Any) -> list[list[float]]:
    return [list((h.get("_source") or {}).get(VECTOR_FIELD) or []) for h in response["hits"]["hits"]]
