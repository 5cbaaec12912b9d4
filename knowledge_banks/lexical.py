"""Keyword search: a tokenizer and an incremental Okapi BM25 index.

Why our own index rather than ``bm25s``: ``bm25s`` builds a static sparse matrix, so keeping it in step
with a store that adds and deletes documents means a full rebuild after every change. This index keeps
postings per term and updates them in place on ``add``/``remove`` (O(tokens of that document)); scoring
is vectorised with numpy per query term. The formula is Lucene's BM25 (also what Elasticsearch uses)::

    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d, q) = sum over t in q of  idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))

``tests/test_hybrid.py`` checks the scores against ``bm25s`` (method="lucene") when it is installed.

The tokenizer lowercases, splits on Unicode word characters, drops English stopwords and stems with
the Snowball English stemmer (``PyStemmer``) when installed, else with a small suffix stripper.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Optional, Sequence

__all__ = ["BM25Index", "Tokenizer", "STOPWORDS"]

# A common English stopword list (close to NLTK's / bm25s's "en").
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more
most mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same
shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under
until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
while who who's whom why why's will with won't would wouldn't you you'd you'll you're you've your yours
yourself yourselves s t
""".split())

_WORD = re.compile(r"\w+", re.UNICODE)


def _load_stemmer(name: Optional[str]) -> Any:
    if not name:
        return None
    try:
        import Stemmer  # PyStemmer: Snowball stemmers in C

        return Stemmer.Stemmer(name)
    except ImportError:
        if name != "english":
            raise ValueError(f"stemmer {name!r} needs PyStemmer (pip install PyStemmer)") from None
        return _LightEnglishStemmer()


class _LightEnglishStemmer:
    """Fallback when PyStemmer is absent: strips common English inflections (not full Porter)."""

    _RULES = (("ational", "ate"), ("tional", "tion"), ("ization", "ize"), ("ations", "ate"),
              ("ation", "ate"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
              ("ities", "ity"), ("ness", ""), ("ments", "ment"), ("ies", "y"), ("ing", ""),
              ("edly", ""), ("ed", ""), ("ly", ""), ("sses", "ss"), ("es", "e"), ("s", ""))

    def stemWords(self, words: Sequence[str]) -> list[str]:  # noqa: N802 - PyStemmer's API
        return [self._stem(w) for w in words]

    def _stem(self, w: str) -> str:
        if len(w) <= 3 or w.endswith("ss") and not w.endswith("sses"):
            return w
        for suffix, repl in self._RULES:
            if w.endswith(suffix) and len(w) - len(suffix) + len(repl) >= 3:
                return w[: len(w) - len(suffix)] + repl
        return w


class Tokenizer:
    """``Tokenizer(stemmer="english", stopwords="en")("The cells were dying") -> ['cell', 'die']``.

    ``stopwords``: ``"en"`` (the list above), ``None`` (keep all) or an iterable of words.
    ``stemmer``: a Snowball language name (``"english"``) or ``None``. ``config()`` round-trips.
    """

    def __init__(self, stemmer: Optional[str] = "english", stopwords: Any = "en", min_length: int = 1):
        self.stemmer_name = stemmer
        if stopwords == "en":
            self._stop = STOPWORDS
        elif stopwords is None:
            self._stop = frozenset()
        else:
            self._stop = frozenset(str(w).lower() for w in stopwords)
        self._stopwords_cfg = stopwords if stopwords in ("en", None) else sorted(self._stop)
        self.min_length = min_length
        self._stemmer = _load_stemmer(stemmer)

    def config(self) -> dict[str, Any]:
        return {"stemmer": self.stemmer_name, "stopwords": self._stopwords_cfg, "min_length": self.min_length}

    @classmethod
    def from_config(cls, cfg: Optional[dict[str, Any]]) -> "Tokenizer":
        return cls(**(cfg or {}))

    def __call__(self, text: str) -> list[str]:
        stop, n = self._stop, self.min_length
        words = [w for w in _WORD.findall(text.lower()) if len(w) >= n and w not in stop]
        if self._stemmer is not None:
            words = self._stemmer.stemWords(words)
        return words


class BM25Index:
    """Incremental BM25 over string keys: ``add(key, text)`` (replaces), ``remove(key)``, ``search``."""

    def __init__(self, tokenizer: Optional[Tokenizer] = None, k1: float = 1.2, b: float = 0.75):
        import numpy as np

        self._np = np
        self.tokenizer = tokenizer or Tokenizer()
        self.k1, self.b = float(k1), float(b)
        self._slot: dict[str, int] = {}
        self._keys: list[Optional[str]] = []
        self._free: list[int] = []
        self._terms: list[tuple[str, ...]] = []          # unique terms of each slot (for removal)
        self._len = np.zeros(16, dtype=np.float32)        # token count of each slot
        self._total_len = 0.0
        self._postings: dict[str, dict[int, int]] = {}    # term -> {slot: tf}
        self._arrays: dict[str, tuple[Any, Any]] = {}     # term -> (slots, tfs) cache, dropped on change

    def config(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "tokenizer": self.tokenizer.config()}

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    # ---- updates -------------------------------------------------------------------------------------

    def add(self, key: str, text: str) -> None:
        self.add_tokens(key, self.tokenizer(text))

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        for key, text in items:
            self.add(key, text)

    def add_tokens(self, key: str, tokens: Sequence[str]) -> None:
        if key in self._slot:
            self.remove(key)
        slot = self._free.pop() if self._free else len(self._keys)
        if slot == len(self._keys):
            self._keys.append(key)
            self._terms.append(())
            if slot >= len(self._len):
                self._len = self._np.concatenate([self._len, self._np.zeros(len(self._len), self._np.float32)])
        else:
            self._keys[slot] = key
        tf: dict[str, int] = {}
        for t in tokens:
            tf[t] = tf.get(t, 0) + 1
        for t, c in tf.items():
            self._postings.setdefault(t, {})[slot] = c
            self._arrays.pop(t, None)
        self._terms[slot] = tuple(tf)
        self._len[slot] = len(tokens)
        self._total_len += len(tokens)
        self._slot[key] = slot

    def remove(self, key: str) -> bool:
        slot = self._slot.pop(key, None)
        if slot is None:
            return False
        for t in self._terms[slot]:
            plist = self._postings.get(t)
            if plist is not None:
                plist.pop(slot, None)
                if not plist:
                    del self._postings[t]
            self._arrays.pop(t, None)
        self._total_len -= float(self._len[slot])
        self._len[slot] = 0.0
        self._terms[slot] = ()
        self._keys[slot] = None
        self._free.append(slot)
        return True

    def clear(self) -> None:
        self.__init__(self.tokenizer, self.k1, self.b)  # type: ignore[misc]

    # ---- scoring -------------------------------------------------------------------------------------

    def idf(self, term: str) -> float:
        n, df = len(self._slot), len(self._postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _term_arrays(self, term: str) -> tuple[Any, Any]:
        arr = self._arrays.get(term)
        if arr is None:
            plist = self._postings[term]
            np = self._np
            arr = (np.fromiter(plist.keys(), np.int64, len(plist)),
                   np.fromiter(plist.values(), np.float32, len(plist)))
            self._arrays[term] = arr
        return arr

    def score_all(self, query: str) -> Any:
        """A score per slot (numpy array, 0 where no query term occurs)."""
        np = self._np
        scores = np.zeros(len(self._keys), dtype=np.float32)
        n = len(self._slot)
        if n == 0:
            return scores
        avgdl = max(self._total_len / n, 1e-9)
        k1, b = self.k1, self.b
        for term in self.tokenizer(query):  # repeated query terms count again, as in Lucene
            if term not in self._postings:
                continue
            slots, tfs = self._term_arrays(term)
            norm = k1 * (1.0 - b + b * self._len[slots] / avgdl)
            scores[slots] += self.idf(term) * tfs * (k1 + 1.0) / (tfs + norm)
        return scores

    def search(self, query: str, k: Optional[int] = None, predicate: Any = None) -> list[tuple[str, float]]:
        """Best ``k`` (key, score) pairs with score > 0, best first; ``predicate(key) -> bool`` filters."""
        np = self._np
        scores = self.score_all(query)
        hits = np.flatnonzero(scores > 0)
        if hits.size == 0:
            return []
        order = hits[np.argsort(-scores[hits], kind="stable")]
        out: list[tuple[str, float]] = []
        for slot in order:
            key = self._keys[slot]
            if key is None or (predicate is not None and not predicate(key)):
                continue
            out.append((key, float(scores[slot])))
            if k is not None and len(out) >= k:
                break
        return out

    def score_keys(self, query: str, keys: Sequence[str]) -> list[float]:
        """BM25 scores of specific documents (0.0 for unknown keys)."""
        scores = self.score_all(query)
        return [float(scores[self._slot[k]]) if k in self._slot else 0.0 for k in keys]
