"""Fault injection for every local wire-format server: test routes, retries and breakers offline.

Each :class:`~langchain_mesh.testing.wire.WireServer` (OpenAI, Anthropic, Bedrock, Vertex, Cohere,
SageMaker, Snowflake Cortex, Stability...) can be told to fail:

* **per request**, with a header: ``x-mesh-fault: 429`` (also ``500``, ``503``, ``hang``, ``cut``,
  ``refuse``; options after ``;``: ``x-mesh-fault: 429; retry_after=2``, ``hang; seconds=3``);
* **per rate**: a share of requests, drawn from a seeded generator (reproducible runs);
* **by schedule**: the faults of the next requests in order (``None`` / ``"ok"`` = answer normally).

::

    from langchain_mesh.testing.faults import FaultPlan

    srv.faults = FaultPlan(rate=0.3, kinds=("429", "503", "hang", "cut", "refuse"), seed=7, hang=2.0)
    srv.faults = FaultPlan(schedule=["503", None, "429"])          # request 1 fails, 2 answers, 3 is throttled
    # from another process: POST /__mesh__/faults {"rate": 0.3, "seed": 7}   ({} clears)

What each fault does on the wire: ``429`` / ``500`` / ``503``: the provider's own error body and
status (``429`` and ``503`` with ``Retry-After``); ``hang``: nothing is answered for ``hang`` seconds,
then the connection is dropped (a client timeout shorter than that sees a timeout); ``cut``: a stream
stops after ``cut_after`` events without its end (a request that is not a stream: the connection is
dropped before any answer); ``refuse``: the connection is reset at once (TCP RST), as a server that
went away does, and so is the next new connection within 0.25 s (a pooled client retries a reset keep-alive
connection once on a fresh one, taking it for a stale one).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

__all__ = ["Fault", "FaultPlan", "KINDS", "HEADER", "parse_fault"]

KINDS = ("429", "500", "503", "hang", "cut", "refuse")
HEADER = "x-mesh-fault"


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: Optional[float] = 1.0  # 429 / 503: the Retry-After header (None: none sent)
    hang: float = 5.0                   # hang: seconds before the connection is dropped
    cut_after: int = 2                  # cut: events sent before the stream is cut

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; faults: {', '.join(KINDS)}")


def parse_fault(value: str, defaults: Optional[Fault] = None) -> Optional[Fault]:
    """``"429; retry_after=2"`` -> Fault; ``""``/``"ok"`` -> None."""
    kind, *opts = [p.strip() for p in value.split(";")]
    if kind in ("", "ok", "none"):
        return None
    fields: dict[str, Any] = {}
    for opt in opts:
        key, _, raw = opt.partition("=")
        key = {"seconds": "hang"}.get(key.strip(), key.strip())
        if key not in ("retry_after", "hang", "cut_after"):
            raise ValueError(f"unknown fault option {key!r} (retry_after, hang/seconds, cut_after)")
        fields[key] = int(raw) if key == "cut_after" else float(raw)
    base = defaults or Fault("500")
    return Fault(kind, fields.get("retry_after", base.retry_after), fields.get("hang", base.hang),
                 fields.get("cut_after", base.cut_after))


class FaultPlan:
    """Which requests fail, and how: a schedule first, then a seeded rate. Thread-safe (the servers
    handle requests on several threads)."""

    def __init__(self, rate: float = 0.0, kinds: Sequence[str] = KINDS, seed: Optional[int] = None,
                 schedule: Sequence[Optional[str]] = (), retry_after: Optional[float] = 1.0, hang: float = 5.0,
                 cut_after: int = 2):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        self.defaults = Fault("500", retry_after, hang, cut_after)
        self.kinds = [parse_fault(k, self.defaults) for k in kinds]
        self.rate = rate
        self.schedule = [None if s is None else parse_fault(s, self.defaults) for s in schedule]
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: list[str] = []  # the kinds injected so far, in order

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FaultPlan":
        return cls(**dict(d))

    def next(self, headers: Any = None) -> Optional[Fault]:
        """The fault for one request (``headers``: its headers, for ``x-mesh-fault``), or None."""
        own = headers.get(HEADER) if headers is not None else None
        with self._lock:
            if own:
                fault = parse_fault(own, self.defaults)
            elif self.schedule:
                fault = self.schedule.pop(0)
            elif self.rate and self._rng.random() < self.rate:
                fault = self._rng.choice(self.kinds)
            else:
                fault = None
            if fault is not None:
                self.injected.append(fault.kind)
        return fault


#: what a server with no plan consults: the per-request header only
HEADER_ONLY = FaultPlan()
