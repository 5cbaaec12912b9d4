"""What a call cost: the maintained ``genai-prices`` dataset, with per-model overrides from the config.

    prices:                                   # per million tokens, in usage.currency (default USD)
      "openai_compatible:vllm:qwen": {input: 0.2, output: 0.6}   # an LLM id...
      gpt-4o: {input: 2.5, output: 10, cached_input: 1.25}       # ...or a model name

A model neither overridden nor found in the dataset has an unknown price: its cost is None (NULL in
the ledger), never 0, so unknown spend is never mistaken for free spend.

The price of an LLM is looked up once and kept as plain floats (the dataset's own calculation costs
~90 µs a call in Decimal arithmetic; a per-token multiply is what flat prices need). A model whose
dataset price is tiered or time-dependent keeps the dataset's own calculation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["Price", "Pricer", "pricer_for", "warm_prices", "PROVIDER_IDS"]

#: connection type -> the dataset's provider id (others match by model name alone)
PROVIDER_IDS = {"openai": "openai", "azure_openai": "azure", "anthropic": "anthropic", "bedrock": "aws",
                "vertex": "google", "mistral": "mistral", "cohere": "cohere"}


@dataclass(frozen=True)
class Price:
    """Per million tokens; ``exact`` (the dataset's calculation) for prices that are not flat."""

    input: float
    output: float
    cached_input: Optional[float] = None
    source: str = "genai-prices"
    exact: Optional[Callable[[Any], Optional[float]]] = None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: Optional[int] = None) -> float:
        if self.exact is not None:
            got = self.exact((input_tokens, output_tokens, cached_tokens))
            if got is not None:
                return got
        cached = min(cached_tokens or 0, input_tokens)
        rate = self.input if self.cached_input is None else self.cached_input
        return ((input_tokens - cached) * self.input + cached * rate + output_tokens * self.output) / 1e6


_UNKNOWN = object()


class Pricer:
    """Prices of a mesh's LLMs: overrides first, then the dataset; None when neither knows the model."""

    def __init__(self, overrides: dict[str, Any]):
        self._overrides = overrides
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def overrides_wire(self) -> dict[str, tuple[float, float, Optional[float]]]:
        """The overrides as plain values (for the ledger's writer process, which prices its rows)."""
        return {k: (o.input, o.output, o.cached_input) for k, o in self._overrides.items()}

    def price(self, llm_id: str, model: str, connection_type: Optional[str]) -> Optional[Price]:
        got = self._cache.get(llm_id, _UNKNOWN)
        if got is _UNKNOWN:
            got = self._lookup(llm_id, model, connection_type)
            with self._lock:
                self._cache[llm_id] = got
        return got  # type: ignore[return-value]

    def cost(self, llm_id: str, model: str, connection_type: Optional[str], input_tokens: int, output_tokens: int,
             cached_tokens: Optional[int] = None) -> Optional[float]:
        p = self.price(llm_id, model, connection_type)
        return None if p is None else p.cost(input_tokens, output_tokens, cached_tokens)

    def _lookup(self, llm_id: str, model: str, connection_type: Optional[str]) -> Optional[Price]:
        o = self._overrides.get(llm_id) or self._overrides.get(model)
        if o is not None:
            return Price(o.input, o.output, o.cached_input, source="config")
        return _dataset_price(model, PROVIDER_IDS.get(connection_type or ""))


def _dataset_price(model: str, provider_id: Optional[str]) -> Optional[Price]:
    try:
        from decimal import Decimal

        from genai_prices import Usage, calc_price
    except ImportError:  # the usage extra is not installed: only overrides are known
        return None
    try:
        found = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=provider_id)
    except LookupError:
        if provider_id is None:
            return None
        try:  # a provider the dataset files differently (a model served by a compatible API)
            found = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model)
        except LookupError:
            return None
    mp = found.model_price
    flat = [getattr(mp, f, None) for f in ("input_mtok", "output_mtok", "cache_read_mtok")]
    if all(v is None or isinstance(v, Decimal) for v in flat) and flat[0] is not None and flat[1] is not None:
        return Price(float(flat[0]), float(flat[1]), None if flat[2] is None else float(flat[2]))

    def exact(tokens: Any) -> Optional[float]:
        i, o, c = tokens
        return float(mp.calc_price(Usage(input_tokens=i, output_tokens=o, cache_read_tokens=c))["total_price"])

    return Price(0.0, 0.0, None, exact=exact)


def pricer_for(mesh: Any) -> Pricer:
    """The mesh's one :class:`Pricer` (made on first use)."""
    p = getattr(mesh, "_pricer", None)
    if p is None:
        p = mesh._pricer = Pricer(dict(mesh.config.prices))
    return p


def llm_price_args(llm: Any) -> tuple[str, str, Optional[str]]:
    """(LLM id, model, connection type) of a mesh LLM handle, as :meth:`Pricer.price` takes them."""
    return llm.id, llm.model, getattr(llm.connection, "type", None) or llm.id.split(":", 1)[0]


def warm_prices(mesh: Any, llms: Any) -> None:
    """Look up every LLM's price now (``mesh serve`` at start-up, when a ledger or budgets need them):
    the first lookup imports the price dataset (~0.2 s of CPU), which would otherwise fall on the
    ledger's writer or a budget check while the gateway is serving."""
    pricer = pricer_for(mesh)
    for llm in llms:
        if not llm.id.startswith("route:"):  # a route is priced by its targets, which are listed too
            pricer.price(*llm_price_args(llm))
