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

__all__ = ["BM25Index", "Tokenizer", "STOPWORDS", "BM25_FORMAT"]

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


def _uint_for(n: int) -> Any:
    """The narrowest unsigned numpy type holding 0 .. n - 1: term counts and slot numbers are stored in
    it (SciFact's 5,183 abstracts: 8 bytes a posting became 3, its BM25 file 4.2 MB -> 1.8 MB)."""
    import numpy as np

    for t in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(t).max + 1:
            return t
    return np.int64


BM25_FORMAT = "langchain-mesh.bm25"
BM25_FORMAT_VERSION = 1


class BM25Index:
    """Incremental BM25 over string keys: ``add(key, text)`` (replaces), ``remove(key)``, ``search``.

    ``int_keys=True``: keys are non-negative ints and each key is its own slot, so ``score_all`` is an
    array indexed by key (what the FAISS store uses: its keys are the FAISS ids, and fusion with the dense
    results is then plain numpy indexing). ``to_bytes``/``from_bytes`` persist the index (numpy arrays in
    an ``.npz``, no pickle); a loaded index scores straight from its arrays and turns them back into
    per-term postings only when it is first changed.
    """

    def __init__(self, tokenizer: Optional[Tokenizer] = None, k1: float = 1.2, b: float = 0.75, *,
                 int_keys: bool = False):
        import numpy as np

        self._np = np
        self.tokenizer = tokenizer or Tokenizer()
        self.k1, self.b = float(k1), float(b)
        self.int_keys = bool(int_keys)
        self._slot: dict[Any, int] = {}
        self._keys: list[Any] = []
        self._free: list[int] = []
        self._terms: list[tuple[str, ...]] = []          # unique terms of each slot (for removal)
        self._len = np.zeros(16, dtype=np.float32)        # token count of each slot
        self._total_len = 0.0
        self._postings: Optional[dict[str, dict[int, int]]] = {}  # term -> {slot: tf}; None while frozen
        self._arrays: dict[str, tuple[Any, Any]] = {}     # term -> (slots, tfs) cache, dropped on change
        self._frozen: Any = None                          # (term -> row, ptr, slots, tfs) of a loaded index
        self._weights: dict[str, tuple[Any, Any]] = {}    # term -> its BM25 term weights, until the next change

    def config(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "tokenizer": self.tokenizer.config()}

    @classmethod
    def bulk(cls, keys: Sequence[int], texts: Sequence[str], tokenizer: Optional[Tokenizer] = None,
             k1: float = 1.2, b: float = 0.75) -> "BM25Index":
        """An ``int_keys`` index over many documents at once, built straight into the arrays a loaded
        index scores from (term -> row, CSR pointers, slots, term frequencies) instead of one dict per
        term: the same scores as ``add`` one by one, and ``to_bytes`` then has the arrays already (no
        walk over every posting). The first ``add``/``remove`` turns it into postings dicts, as for a
        loaded index."""
        import numpy as np

        self = cls(tokenizer, k1, b, int_keys=True)
        tok, vocab = self.tokenizer, {}
        term_ids: list[int] = []
        counts: list[int] = []
        per_doc: list[int] = []
        lengths: list[int] = []
        slot_of = vocab.setdefault
        for text in texts:
            tokens = tok(text)
            tf: dict[str, int] = {}
            for t in tokens:
                tf[t] = tf.get(t, 0) + 1
            term_ids.extend([slot_of(t, len(vocab)) for t in tf])  # a new term gets the next row
            counts.extend(tf.values())
            per_doc.append(len(tf))
            lengths.append(len(tokens))
        key_arr = np.asarray(list(keys), dtype=np.int64)
        if len(key_arr) != len(per_doc):
            raise ValueError(f"{len(key_arr)} keys for {len(per_doc)} texts")
        if len(key_arr) and int(key_arr.min()) < 0:
            raise ValueError("int_keys BM25 needs non-negative keys")
        tids = np.asarray(term_ids, dtype=np.int64)
        order = np.argsort(tids, kind="stable")  # by term, documents in the order given within a term
        ptr = np.zeros(len(vocab) + 1, np.int64)
        np.cumsum(np.bincount(tids, minlength=len(vocab)), out=ptr[1:])
        n_slots = int(key_arr.max()) + 1 if len(key_arr) else 0
        key_list = key_arr.tolist()
        self._keys = [None] * n_slots
        for k in key_list:
            self._keys[k] = k
        self._slot = dict(zip(key_list, key_list))
        self._terms = []  # rebuilt by _thaw on the first change
        self._len = np.zeros(n_slots, np.float32)
        self._len[key_arr] = lengths
        self._total_len = float(sum(lengths))
        self._postings = None
        self._frozen = (vocab, ptr, np.repeat(key_arr, per_doc)[order],
                        np.asarray(counts, dtype=np.float32)[order])
        return self

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    # ---- updates -------------------------------------------------------------------------------------

    def add(self, key: Any, text: str) -> None:
        self.add_tokens(key, self.tokenizer(text))

    def add_many(self, items: Iterable[tuple[Any, str]]) -> None:
        for key, text in items:
            self.add(key, text)

    def _grow(self, size: int) -> None:
        if size > len(self._keys):
            self._keys.extend([None] * (size - len(self._keys)))
            self._terms.extend([()] * (size - len(self._terms)))
        if size > len(self._len):
            grown = self._np.zeros(max(size, 2 * len(self._len)), self._np.float32)
            grown[:len(self._len)] = self._len
            self._len = grown

    def add_tokens(self, key: Any, tokens: Sequence[str]) -> None:
        postings = self._thaw()
        if key in self._slot:
            self.remove(key)
        if self.int_keys:
            slot = int(key)
            if slot < 0:
                raise ValueError(f"int_keys BM25 needs non-negative keys, got {key!r}")
        else:
            slot = self._free.pop() if self._free else len(self._keys)
        self._grow(slot + 1)
        self._keys[slot] = key
        tf: dict[str, int] = {}
        for t in tokens:
            tf[t] = tf.get(t, 0) + 1
        for t, c in tf.items():
            postings.setdefault(t, {})[slot] = c
            self._arrays.pop(t, None)
        self._weights.clear()  # N and the average length changed: every term's weights did
        self._terms[slot] = tuple(tf)
        self._len[slot] = len(tokens)
        self._total_len += len(tokens)
        self._slot[key] = slot

    def remove(self, key: Any) -> bool:
        if key not in self._slot:
            return False
        postings = self._thaw()
        slot = self._slot.pop(key)
        for t in self._terms[slot]:
            plist = postings.get(t)
            if plist is not None:
                plist.pop(slot, None)
                if not plist:
                    del postings[t]
            self._arrays.pop(t, None)
        self._weights.clear()
        self._total_len -= float(self._len[slot])
        self._len[slot] = 0.0
        self._terms[slot] = ()
        self._keys[slot] = None
        if not self.int_keys:
            self._free.append(slot)
        return True

    def clear(self) -> None:
        self.__init__(self.tokenizer, self.k1, self.b, int_keys=self.int_keys)  # type: ignore[misc]

    # ---- scoring -------------------------------------------------------------------------------------

    def _df(self, term: str) -> int:
        if self._postings is not None:
            return len(self._postings.get(term, ()))
        rows, ptr, _, _ = self._frozen
        row = rows.get(term)
        return 0 if row is None else int(ptr[row + 1] - ptr[row])

    def idf(self, term: str) -> float:
        n, df = len(self._slot), self._df(term)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _term_arrays(self, term: str) -> Optional[tuple[Any, Any]]:
        arr = self._arrays.get(term)
        if arr is not None:
            return arr
        np = self._np
        if self._postings is None:
            rows, ptr, slots, tfs = self._frozen
            row = rows.get(term)
            if row is None:
                return None
            arr = (slots[ptr[row]:ptr[row + 1]], tfs[ptr[row]:ptr[row + 1]])
        else:
            plist = self._postings.get(term)
            if plist is None:
                return None
            arr = (np.fromiter(plist.keys(), np.int64, len(plist)),
                   np.fromiter(plist.values(), np.float32, len(plist)))
        self._arrays[term] = arr
        return arr

    def _term_weights(self, term: str) -> Optional[tuple[Any, Any]]:
        """``idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl))`` for every document holding
        ``term``, cached until the index changes: (slots, weights), or (None, a weight per slot) for a
        term in more than 1/8 of the documents, which is added as a whole vector (contiguous, no scatter)."""
        w = self._weights.get(term)
        if w is not None:
            return w
        arr = self._term_arrays(term)
        if arr is None:
            return None
        np = self._np
        slots, tfs = arr
        k1, b = self.k1, self.b
        avgdl = max(self._total_len / max(len(self._slot), 1), 1e-9)
        vals = (self.idf(term) * tfs * (k1 + 1.0) / (tfs + k1 * (1.0 - b + b * self._len[slots] / avgdl)))
        if len(slots) * 8 > len(self._keys):
            dense = np.zeros(len(self._keys), np.float32)
            dense[slots] = vals
            w = (None, dense)
        else:
            w = (slots, vals.astype(np.float32))
        if len(self._weights) >= 4096:  # bound the cache (a long tail of rare query terms)
            self._weights.clear()
        self._weights[term] = w
        return w

    def score_all(self, query: str) -> Any:
        """A score per slot (numpy array, 0 where no query term occurs; indexed by key with int_keys)."""
        np = self._np
        scores = np.zeros(len(self._keys), dtype=np.float32)
        if not self._slot:
            return scores
        for term in self.tokenizer(query):  # repeated query terms count again, as in Lucene
            w = self._term_weights(term)
            if w is None:
                continue
            slots, vals = w
            if slots is None:
                scores += vals
            else:
                scores[slots] += vals
        return scores

    def search(self, query: str, k: Optional[int] = None, predicate: Any = None) -> list[tuple[Any, float]]:
        """Best ``k`` (key, score) pairs with score > 0, best first; ``predicate(key) -> bool`` filters."""
        np = self._np
        scores = self.score_all(query)
        hits = np.flatnonzero(scores > 0)
        if hits.size == 0:
            return []
        order = hits[np.argsort(-scores[hits], kind="stable")]
        out: list[tuple[Any, float]] = []
        for slot in order:
            key = self._keys[slot]
            if key is None or (predicate is not None and not predicate(key)):
                continue
            out.append((key, float(scores[slot])))
            if k is not None and len(out) >= k:
                break
        return out

    def score_keys(self, query: str, keys: Sequence[Any]) -> list[float]:
        """BM25 scores of specific documents (0.0 for unknown keys)."""
        scores = self.score_all(query)
        return [float(scores[self._slot[k]]) if k in self._slot else 0.0 for k in keys]

    # ---- persistence ---------------------------------------------------------------------------------

    def _thaw(self) -> dict[str, dict[int, int]]:
        """Per-term postings dicts from a loaded index's arrays (on its first change)."""
        if self._postings is not None:
            return self._postings
        np = self._np
        rows, ptr, slots, tfs = self._frozen
        vocab = list(rows)
        slot_list, tf_list = slots.tolist(), tfs.astype(np.int64).tolist()
        bounds = ptr.tolist()
        postings = {t: dict(zip(slot_list[bounds[r]:bounds[r + 1]], tf_list[bounds[r]:bounds[r + 1]]))
                    for r, t in enumerate(vocab)}
        # the terms of each slot, for removal: postings sorted by slot (numpy), then one slice per slot
        term_of = np.repeat(np.arange(len(vocab)), np.diff(ptr))
        order = np.argsort(slots, kind="stable")
        by_slot, tids = slots[order], term_of[order].tolist()
        starts = np.searchsorted(by_slot, np.arange(len(self._keys) + 1)).tolist()
        self._terms = [tuple(vocab[i] for i in tids[starts[s]:starts[s + 1]]) for s in range(len(self._keys))]
        self._postings, self._frozen = postings, None
        self._arrays.clear()
        self._weights.clear()
        return postings

    def to_bytes(self) -> bytes:
        """The index as an ``.npz`` file's bytes (numpy arrays only; ``np.load(allow_pickle=False)``)."""
        import io
        import itertools
        import json

        np = self._np
        slot_type = _uint_for(len(self._keys))  # the narrowest type that holds every slot: a smaller file
        if self._postings is None:
            rows, ptr, slots, tfs = self._frozen
            vocab = list(rows)
        else:
            vocab = list(self._postings)
            lists = list(self._postings.values())
            counts = np.fromiter(map(len, lists), np.int64, len(lists))
            ptr = np.zeros(len(vocab) + 1, np.int64)
            np.cumsum(counts, out=ptr[1:])
            total = int(ptr[-1])
            # straight into the stored dtypes, values through map(dict.values) (C iteration, no generator):
            # ~2x faster than a generator into int64/float32 (the counts are small ints)
            slots = np.fromiter(itertools.chain.from_iterable(lists), slot_type, total)
            tfs = np.fromiter(itertools.chain.from_iterable(map(dict.values, lists)), np.int32, total)
        header = {"format": BM25_FORMAT, "format_version": BM25_FORMAT_VERSION, **self.config(),
                  "int_keys": self.int_keys, "slots": len(self._keys)}
        live = np.fromiter((s for s in self._slot.values()), np.int64, len(self._slot))
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8),
                  "vocab": np.frombuffer("\n".join(vocab).encode("utf-8"), np.uint8),
                  "ptr": ptr.astype(_uint_for(int(ptr[-1]) + 1), copy=False),
                  "slots": slots.astype(slot_type, copy=False),
                  "tfs": tfs.astype(_uint_for(int(tfs.max()) + 1 if len(tfs) else 1), copy=False),
                  "lengths": self._len[:len(self._keys)], "live": live}
        if not self.int_keys:
            arrays["keys"] = np.frombuffer(json.dumps([self._keys[s] for s in live.tolist()]).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, tokenizer: Optional[Tokenizer] = None) -> "BM25Index":
        """Load ``to_bytes``' output; raises ValueError for anything else."""
        import io
        import json

        import numpy as np

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            header = json.loads(arrays["header"].tobytes())
        except Exception as e:  # noqa: BLE001 - numpy raises several types for a foreign file
            raise ValueError(f"not a BM25 index file ({type(e).__name__}: {e})") from None
        if header.get("format") != BM25_FORMAT or header.get("format_version") != BM25_FORMAT_VERSION:
            raise ValueError(f"not a {BM25_FORMAT} v{BM25_FORMAT_VERSION} file")
        tok = tokenizer or Tokenizer.from_config(header["tokenizer"])
        self = cls(tok, header["k1"], header["b"], int_keys=header["int_keys"])
        vocab_text = arrays["vocab"].tobytes().decode("utf-8")
        vocab = vocab_text.split("\n") if vocab_text else []
        n_slots = int(header["slots"])
        live = arrays["live"].tolist()
        keys = live if self.int_keys else json.loads(arrays["keys"].tobytes())
        self._keys = [None] * n_slots
        for s, key in zip(live, keys):
            self._keys[s] = key
        self._slot = dict(zip(keys, live))
        self._terms = []  # rebuilt by _thaw on the first change
        self._len = np.array(arrays["lengths"], dtype=np.float32)
        self._total_len = float(self._len.sum(dtype=np.float64))
        if not self.int_keys:
            self._free = [s for s in range(n_slots) if self._keys[s] is None]
        self._postings = None
        # whatever integer types the file narrowed them to (older files: int32 slots, float32 counts)
        self._frozen = (dict(zip(vocab, range(len(vocab)))), arrays["ptr"].astype(np.int64),
                        arrays["slots"].astype(np.int64), arrays["tfs"].astype(np.float32))
        return self
