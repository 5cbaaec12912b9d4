"""A bank's query-embedding cache: the same question asked again reads its vector from disk.

A retriever embeds every question it is asked. The main job asks the same one on every rerun, and a
gateway serves the same FAQ many times; with the cache, a repeated question costs a SQLite lookup and
the embedding model is not even loaded (local models load lazily, on the first miss)::

    knowledge_banks:
      docs:
        embedding_llm: huggingfacelocal:local:all-MiniLM-L6-v2
        query_cache: 1000     # question vectors kept in <bank folder>/query_cache.sqlite; 0 = off

Entries are keyed by a hash of the question and of the embedding model's *fingerprint*: the LLM id
plus what the connection says identifies its weights (``model_fingerprint(model)``: a local model's
files, their sizes and times) or, for a connection that says nothing, its type, endpoint and model
description. A changed embedding model therefore never reads an old vector; the first write after such
a change drops the old model's entries. Questions are stored only as hashes. Document embeddings are
never cached here (the bank writer's content-hash sync already embeds only what changed). At most
``query_cache`` entries are kept, the oldest dropped first.

Why not LangChain's ``CacheBackedEmbeddings``: it lives in the ``langchain`` package, which the main
job does not install, and its file store has no size bound; this is the same idea on the standard
library's sqlite3, bounded.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from langchain_core.embeddings import Embeddings

__all__ = ["QueryCachedEmbeddings", "embedding_fingerprint"]

_SCHEMA = ("CREATE TABLE IF NOT EXISTS query_vectors (fingerprint TEXT NOT NULL, key TEXT NOT NULL, "
           "vector BLOB NOT NULL, added REAL NOT NULL, PRIMARY KEY (fingerprint, key))")


def embedding_fingerprint(mesh: Any, llm_id: str) -> str:
    """What identifies the vectors an embedding LLM produces (see the module docstring)."""
    llm = mesh.get_llm(llm_id)
    conn, model = llm.connection, llm.model
    own = getattr(conn, "model_fingerprint", None)
    if callable(own):
        detail: Any = own(model)
    else:
        detail = {"type": getattr(conn.config, "type", ""), "base_url": str(getattr(conn.config, "base_url", "") or ""),
                  "model": llm.info.model_dump(mode="json")}
    return hashlib.sha256(json.dumps([llm_id, detail], sort_keys=True, default=str).encode()).hexdigest()


class QueryCachedEmbeddings(Embeddings):
    """Wraps a bank's embeddings: ``embed_query`` consults the cache, everything else passes through.

    The wrapped embeddings are made by ``make`` only on a miss (a hit never builds, let alone loads, the
    model), and the fingerprint is computed when the cache is first used.
    """

    def __init__(self, make: Callable[[], Embeddings], path: Path, fingerprint: Callable[[], str], max_entries: int):
        self._make, self._path, self._fingerprint_of, self._max = make, path, fingerprint, max_entries
        self._inner: Optional[Embeddings] = None
        self._fp: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def inner(self) -> Embeddings:
        if self._inner is None:
            self._inner = self._make()
        return self._inner

    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = self._fingerprint_of()
        return self._fp

    # ---- documents: never cached ----------------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self.inner.aembed_documents(texts)

    # ---- queries --------------------------------------------------------------------------------------

    def embed_query(self, text: str) -> list[float]:
        key = self._key(text)
        found = self._get(key)
        if found is not None:
            return found
        vector = self.inner.embed_query(text)
        self._put(key, vector)
        return vector

    async def aembed_query(self, text: str) -> list[float]:
        key = self._key(text)
        found = self._get(key)
        if found is not None:
            return found
        vector = await self.inner.aembed_query(text)
        self._put(key, vector)
        return vector

    def __getattr__(self, name: str) -> Any:  # model, dimensions...: the wrapped embeddings' own
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    # ---- storage --------------------------------------------------------------------------------------

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self._path), timeout=5)
        db.execute(_SCHEMA)
        return db

    def _get(self, key: str) -> Optional[list[float]]:
        if not self._path.exists():
            return None
        try:
            with self._lock, self._connect() as db:
                row = db.execute("SELECT vector FROM query_vectors WHERE fingerprint = ? AND key = ?",
                                 (self.fingerprint, key)).fetchone()
        except sqlite3.Error:
            return None  # an unreadable cache costs speed, never an answer: the model embeds the question
        if row is None:
            return None
        blob = row[0]
        return list(struct.unpack(f"<{len(blob) // 8}d", blob))

    def _put(self, key: str, vector: list[float]) -> None:
        blob = struct.pack(f"<{len(vector)}d", *vector)  # float64: a hit returns exactly what the model did
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self._connect() as db:
                fp = self.fingerprint
                db.execute("DELETE FROM query_vectors WHERE fingerprint != ?", (fp,))  # another model's
                db.execute("INSERT OR REPLACE INTO query_vectors VALUES (?, ?, ?, ?)", (fp, key, blob, time.time()))
                db.execute("DELETE FROM query_vectors WHERE rowid IN (SELECT rowid FROM query_vectors "
                           "ORDER BY added DESC LIMIT -1 OFFSET ?)", (self._max,))
        except (OSError, sqlite3.Error):
            pass  # a read-only or locked bank folder: the next run embeds the question again
