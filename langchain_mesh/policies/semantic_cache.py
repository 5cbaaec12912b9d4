"""The semantic side of the response cache (off by default): a request that is not cached word for word,
but whose conversation is close enough in meaning to one that is, gets that answer. Config::

    knowledge_banks:
      answer-cache: {backend: faiss, path: ./banks/answer-cache, embedding_llm: "openai:main:text-embedding-3-small"}
    cache:
      semantic: {knowledge_bank: answer-cache, threshold: 0.95}

The bank holds one document per cached answer: the conversation's text (``role: text`` lines), with
the answer's exact cache key and a fingerprint of everything else in the request (LLM, settings,
tools, streamed or not) as metadata. A lookup searches only documents with the same fingerprint, so
a near match never crosses models, settings or tools; its relevance score (0..1, the bank's own
scale) must reach ``threshold``. The answer itself stays in the cache store (LRU or Redis) under its
exact key and expires with its TTL; a bank document whose answer expired is simply a miss. Only
plain-text conversations take part (no images, tool calls or tool outputs).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Optional

from ..schema import CompletionRequest

__all__ = ["SemanticIndex", "semantic_text"]


def semantic_text(request: CompletionRequest) -> Optional[str]:
    """The conversation as the bank embeds it, or None when it is not plain text."""
    lines = []
    for m in request.messages:
        if m.tool_calls or m.role == "tool" or not (m.content is None or isinstance(m.content, str)):
            return None
        lines.append(f"{m.role}: {m.text}")
    return "\n".join(lines)


def fingerprint(llm_id: str, kind: str, request: CompletionRequest) -> str:
    body = json.dumps({"llm": llm_id, "kind": kind, "settings": request.settings.model_dump(mode="json", exclude_none=True)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class SemanticIndex:
    """Search and grow the bank of cached conversations (one per mesh)."""

    def __init__(self, mesh: Any, kb_id: str, threshold: float):
        self.bank = mesh.get_knowledge_bank(kb_id)  # an unknown bank fails here, when the layer is built
        self.threshold = threshold
        self._reader: Any = None
        self._lock = threading.Lock()

    def _store(self) -> Any:
        with self._lock:
            if self._reader is None:  # a snapshot of the current version; reopened after each write
                self._reader = self.bank.as_langchain_vectorstore()
            return self._reader

    def find(self, text: str, ctx: str) -> Optional[str]:
        """The cache key of the closest conversation with the same fingerprint, when close enough."""
        found = self._store().similarity_search_with_relevance_scores(text, k=1, filter={"ctx": ctx})
        if found and found[0][1] >= self.threshold:
            return found[0][0].metadata.get("key")
        return None

    def add(self, text: str, ctx: str, key: str) -> None:
        with self.bank.get_writer() as writer:
            writer.as_langchain_vectorstore().add_texts([text], metadatas=[{"key": key, "ctx": ctx}])
        with self._lock:
            self._reader = None
