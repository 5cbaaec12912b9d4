"""Rank fusion for hybrid search: reciprocal rank fusion and weighted (normalised) score fusion.

Pure functions over keys, no numpy, shared by every backend that fuses dense and keyword results.

- :func:`reciprocal_rank_fusion`: ``score(d) = sum_i w_i / (rank_constant + rank_i(d))`` with ranks
  starting at 1 (Cormack et al. 2009); a list that does not contain ``d`` contributes nothing.
  With equal weights this is plain RRF.
- :func:`weighted_score_fusion`: each list's scores are min-max normalised to [0, 1] over the
  candidates, then ``score(d) = sum_i w_i * norm_i(d)``; a list without ``d`` contributes 0 (callers
  that can compute the missing scores exactly, as :class:`~knowledge_banks.FaissVectorStore` does,
  should pass complete score maps). Ties keep first-seen order.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Optional, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["min_max_normalize", "reciprocal_rank_fusion", "weighted_score_fusion", "FUSION_METHODS"]

FUSION_METHODS = ("rrf", "weighted")


def _weights(n: int, weights: Optional[Sequence[float]]) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} result lists")
    if any(w < 0 for w in weights):
        raise ValueError(f"fusion weights must be >= 0, got {list(weights)}")
    return [float(w) for w in weights]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[K]], weights: Optional[Sequence[float]] = None,
                           rank_constant: float = 60.0) -> list[tuple[K, float]]:
    """Fuse best-first key lists; returns (key, fused score) best first."""
    if rank_constant < 0:
        raise ValueError(f"rank_constant must be >= 0, got {rank_constant}")
    ws = _weights(len(rankings), weights)
    fused: dict[K, float] = {}
    for w, ranking in zip(ws, rankings):
        seen: set = set()
        for rank, key in enumerate(ranking, start=1):
            if key in seen:  # a key counts once per list, at its best rank
                continue
            seen.add(key)
            fused[key] = fused.get(key, 0.0) + w / (rank_constant + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def min_max_normalize(scores: Mapping[K, float]) -> dict[K, float]:
    """Scale to [0, 1]; all-equal scores map to 1.0 (they are all the best of their list)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo <= 1e-12:
        return {k: 1.0 for k in scores}
    span = hi - lo
    return {k: (v - lo) / span for k, v in scores.items()}


def weighted_score_fusion(score_maps: Sequence[Mapping[K, float]], weights: Optional[Sequence[float]] = None,
                          normalize: bool = True) -> list[tuple[K, float]]:
    """Fuse {key: score} maps (higher = better); returns (key, fused score) best first."""
    ws = _weights(len(score_maps), weights)
    fused: dict[K, float] = {}
    for w, scores in zip(ws, score_maps):
        norm = min_max_normalize(scores) if normalize else dict(scores)
        for key in scores:
            fused[key] = fused.get(key, 0.0) + w * norm[key]
    return sorted(fused.items(), key=lambda kv: -kv[1])
