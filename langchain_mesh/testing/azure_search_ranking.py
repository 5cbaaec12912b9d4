"""Scoring for the local Azure AI Search server: BM25, vector similarity, RRF, a semantic reranker.

Written independently of ``knowledge_banks`` (no shared code with the stores under test), so the
server is an oracle rather than a mirror of the client's assumptions.

- Analyzer: Unicode words, lowercased (the ``standard.lucene`` analyzer without its token limit).
- BM25 (the service's default similarity): ``k1 = 1.2``, ``b = 0.75``,
  ``idf = ln(1 + (N - n + 0.5) / (n + 0.5))``, per field with that field's average length, summed over
  the searched fields; ``searchMode=any`` matches documents with any query term, ``all`` with every one.
- Vector ``@search.score``: cosine ``1 / (1 + (1 - cos))``; euclidean ``1 / (1 + d)``; dotProduct
  ``1 + dot`` if ``dot >= 0`` else ``1 / (1 - dot)``. Search is exhaustive (exact) for both HNSW and
  exhaustiveKnn profiles: HNSW's recall is approximate in the service, here it is perfect.
- Hybrid: ``score(d) = sum 1 / (60 + rank_i(d))`` over the text ranking and each vector ranking (RRF).
- Semantic reranker (deterministic stand-in for the service's model): over the first 50 results,
  ``4 * (0.8 * coverage + 0.2 * density)`` where coverage is the share of distinct query terms found in
  the prioritized fields (title, content, keywords) and density the best sentence's share; captions
  are that best sentence, with matched words in ``<em>`` tags when highlights are on.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

__all__ = ["analyze", "bm25_scores", "vector_score", "rrf", "semantic_rerank", "RRF_K", "SEMANTIC_WINDOW"]

RRF_K = 60
SEMANTIC_WINDOW = 50
K1, B = 1.2, 0.75
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def analyze(text: Any) -> list[str]:
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [t for part in text for t in analyze(part)]
    return [w.lower() for w in _WORD.findall(str(text))]


def bm25_scores(query: str, docs: Mapping[str, Mapping[str, Any]], fields: Sequence[str],
                mode: str = "any") -> dict[str, float]:
    """key -> BM25 score of the documents that match ``query`` (``docs``: key -> stored document)."""
    terms = list(dict.fromkeys(analyze(query)))
    if not terms:
        return {}
    n_docs = len(docs)
    scores: dict[str, float] = {}
    matched: dict[str, set] = {}
    for field in fields:
        tokens = {key: analyze(doc.get(field)) for key, doc in docs.items()}
        avgdl = (sum(len(t) for t in tokens.values()) / n_docs) if n_docs else 0.0
        for term in terms:
            df = sum(1 for t in tokens.values() if term in t)
            if df == 0:
                continue
            idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
            for key, toks in tokens.items():
                tf = toks.count(term)
                if tf == 0:
                    continue
                norm = 1.0 - B + B * (len(toks) / avgdl if avgdl else 0.0)
                scores[key] = scores.get(key, 0.0) + idf * tf * (K1 + 1.0) / (tf + K1 * norm)
                matched.setdefault(key, set()).add(term)
    if mode == "all":
        return {k: s for k, s in scores.items() if len(matched[k]) == len(terms)}
    return scores


def vector_score(metric: str, a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        raise ValueError(f"vector has {len(a)} dimensions, the field {len(b)}")
    if metric == "euclidean":
        return 1.0 / (1.0 + math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))))
    dot = sum(x * y for x, y in zip(a, b))
    if metric == "dotProduct":
        return 1.0 + dot if dot >= 0 else 1.0 / (1.0 - dot)
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    cos = dot / (na * nb) if na and nb else 0.0
    return 1.0 / (1.0 + (1.0 - cos))


def rrf(rankings: Iterable[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of best-first key lists; ties keep first-seen order."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def semantic_rerank(query: str, doc: Mapping[str, Any], fields: Sequence[str],
                    highlight: bool) -> tuple[float, Optional[dict[str, Any]]]:
    """(reranker score in [0, 4], caption {"text", "highlights"} or None) of one document."""
    qterms = set(analyze(query))
    if not qterms:
        return 0.0, None
    text = " ".join(str(doc.get(f) or "") if not isinstance(doc.get(f), list) else " ".join(map(str, doc.get(f)))
                    for f in fields).strip()
    coverage = len(qterms & set(analyze(text))) / len(qterms)
    best, best_share = None, 0.0
    for sentence in _SENTENCE.findall(text):
        words = analyze(sentence)
        if not words:
            continue
        share = len(qterms & set(words)) / len(qterms)
        if share > best_share:
            best, best_share = sentence.strip(), share
    score = round(4.0 * (0.8 * coverage + 0.2 * best_share), 6)
    if best is None:
        return score, None
    caption = {"text": best, "highlights": _highlight(best, qterms) if highlight else ""}
    return score, caption


def _highlight(sentence: str, terms: set) -> str:
    return _WORD.sub(lambda m: f"<em>{m.group()}</em>" if m.group().lower() in terms else m.group(), sentence)
