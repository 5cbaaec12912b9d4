"""Budgets: spend caps per API key, user, team and connection over a period, refused before sending.

    budgets:
      period: month            # hour | day | week | month (30 days) | a number of seconds
      keys:  {batch-job: 50}   # in the price table's currency (usage.currency, default USD)
      users: {alice: 20}
      teams: {search: 500}
      connections: {myopenai: 2000}
      unknown_price: refuse    # a budgeted call to an LLM with no known price: refuse | allow

What a call spends is its usage priced by :mod:`langchain_mesh.usage.prices` (the ``genai-prices``
dataset, ``prices:`` overrides). Each budget's spend in the current period is a counter in the mesh's
state store (Redis with ``state.redis_url``: shared by every worker), keyed by the period's number
(periods are aligned on the Unix epoch), so a new period starts at zero. Before a call, its input is
priced from the token estimate; the call is refused with :class:`~langchain_mesh.errors.BudgetExceeded`
(``mesh serve``: 429 ``insufficient_quota``) when the spend so far plus that would pass the cap. After
it, the provider's usage priced is added. Calls already in flight when a cap is reached still finish,
so a budget can be passed by at most what those calls cost.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from ..errors import BudgetExceeded
from .chain import Await, Layer, ahooked
from .state import LEASE_TTL, aguarded, guarded, is_outage, leases_on, log, redis_url, store_for
from .usage_of import estimate_tokens, on_forward_end, usage_of_raw

__all__ = ["BudgetsLayer", "make_layer", "period_seconds"]

PERIODS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
_SKIP = frozenset({"count_tokens", "acount_tokens"})


_UNPRICED = object()


def _spend_key(kind: str, name: str, n: int) -> str:
    """The store key of one budget's spend in period number ``n`` (the store adds its prefix)."""
    return f"budget:{kind}:{name}:{n}"


def period_seconds(period: Any) -> float:
    return PERIODS[period] if isinstance(period, str) else float(period)


class BudgetsLayer(Layer):
    name = "budgets"

    def __init__(self, mesh: Any, llm: Any):
        from ..usage.prices import llm_price_args, pricer_for

        self.config = mesh.config
        self.cfg = mesh.config.budgets
        self.period = period_seconds(self.cfg.period)
        self.store = store_for(mesh)
        self.pricer = pricer_for(mesh)
        self.price_args = llm_price_args(llm)
        # a route's calls spend what its targets cost (the ledger prices them the same way): the one
        # that answered, once known; before the call, the dearest, since any of them may answer
        route = getattr(llm, "route", None)
        self.targets = {t.id: llm_price_args(t) for t in route.targets} if route is not None else {}
        self.llm_id = llm.id
        self.currency = mesh.config.usage.currency if mesh.config.usage is not None else "USD"
        conn = llm.id.split(":", 2)[1] if llm.id.count(":") >= 2 else ""
        cap = self.cfg.connections.get(conn)
        self.fixed = [("connection", conn, cap)] if cap is not None else []
        # a route's calls to this LLM are checked only against its connection's cap (budgets()): with
        # none, the layer would pass each on untouched, so the mesh leaves it out of them (Mesh._layers)
        self.route_targets = bool(self.fixed)
        self._by_scope: dict[tuple[Any, Any, Any], list[tuple[str, str, float]]] = {}  # budgets(), per caller
        self._priced: Any = _UNPRICED  # _price()
        self.lease = leases_on(mesh.config)  # on Redis: spend read lately and far from every cap is not read again (_far)
        self.remote = redis_url(mesh.config) is not None

    def budgets(self, call: Any) -> list[tuple[str, str, float]]:
        s = call.scope
        if s.extra and s.extra.get("route"):
            return self.fixed
        k = (s.key, s.user, s.team)
        got = self._by_scope.get(k)
        if got is None:
            got = []
            for kind, name, caps in (("key", s.key, self.cfg.keys), ("user", s.user, self.cfg.users),
                                     ("team", s.team, self.cfg.teams)):
                if name is not None and name in caps:
                    got.append((kind, name, caps[name]))
            got += self.fixed
            if len(self._by_scope) < 10000:  # bounded, as the limits' plans: callers are few
                self._by_scope[k] = got
        return got  # shared by the caller's calls: never mutated

    def _window(self) -> tuple[int, float]:
        now = time.time()
        n = int(now // self.period)
        return n, (n + 1) * self.period - now

    def _price(self, budgets: list[tuple[str, str, float]]) -> Any:
        price = self._priced
        if price is _UNPRICED:  # the pricer keeps what it found for good: so does this layer
            price = self.pricer.price(*self.price_args)
            if price is None and self.targets:
                price = self._dearest_target()
            self._priced = price
        if price is None and self.cfg.unknown_price == "refuse":
            kind, name, _cap = budgets[0]
            raise BudgetExceeded(
                f"{self.llm_id} has no known price, so the budget of {kind} {name!r} cannot be checked and the call "
                "is refused. Give it a price under prices: in the config, or set budgets.unknown_price: allow.",
                budget=f"{kind}:{name}", currency=self.currency)
        return price

    def _check(self, budgets: list[tuple[str, str, float]], spent: list[Optional[str]], estimate: float,
               retry_after: float) -> None:
        for (kind, name, cap), got in zip(budgets, spent):
            total = float(got or 0.0)
            if total + estimate > cap:
                raise BudgetExceeded(
                    f"The budget of {kind} {name!r} is used up: {total:.6g} of {cap:g} {self.currency} spent this "
                    f"period (this call would add ~{estimate:.6g}). It resets in {int(retry_after) + 1} s.",
                    budget=f"{kind}:{name}", spent=total, cap=cap, currency=self.currency, retry_after=retry_after)

    def _dearest_target(self) -> Any:
        """The highest of a route's target prices (None when one is unknown: then no bound is known)."""
        prices = [self.pricer.price(*args) for args in self.targets.values()]
        if any(p is None for p in prices):
            return None
        return max(prices, key=lambda p: p.cost(10**6, 10**6))

    def _spent(self, call: Any, price: Any, usage: Any) -> Optional[float]:
        """What the call cost: a route's at the price of the target that answered."""
        answered = self.targets.get(call.answered_by) if self.targets else None
        if answered is not None and self.pricer.price(*self.price_args) is None:
            price = self.pricer.price(*answered)
        return self._cost(price, usage)

    def _cost(self, price: Any, usage: Any) -> Optional[float]:
        if price is None or usage is None:
            return None
        if type(usage) is dict:  # the pass-through's wire usage, read as it is (no Usage made per call)
            d = usage.get("prompt_tokens_details")
            return price.cost(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                              d.get("cached_tokens") if type(d) is dict else None)
        return price.cost(usage.input_tokens or 0, usage.output_tokens or 0, usage.cached_input_tokens)

    # ---- sync ---------------------------------------------------------------------------------------

    def _before(self, call: Any, budgets: list[tuple[str, str, float]]) -> tuple[Any, int]:
        price = self._price(budgets)
        n, left = self._window()
        estimate = price.cost(estimate_tokens(call), 0) if price is not None else 0.0

        def check() -> bool:
            self._check(budgets, [self.store.get(_spend_key(k, m, n)) for k, m, _c in budgets], estimate, left)
            return True
        guarded(self.config, "budgets", check, False)
        return price, n

    def _after(self, budgets: list[tuple[str, str, float]], n: int, cost: Optional[float]) -> None:
        if not cost:
            return
        try:
            for k, m, _c in budgets:
                self.store.incr(_spend_key(k, m, n), cost, ttl=self.period * 2)
        except Exception as e:  # noqa: BLE001 - the call is over; an outage loses this call's spend
            if not is_outage(e):
                raise
            log.warning("could not add a call's spend to its budgets (%s)", type(e).__name__)

    def call(self, call: Any, nxt: Any) -> Any:
        budgets = self.budgets(call) if call.op not in _SKIP else []
        if not budgets:
            return nxt()
        price, n = self._before(call, budgets)
        result = nxt()
        self._after(budgets, n, self._spent(call, price, getattr(result, "usage", None)))
        return result

    def stream(self, call: Any, nxt: Any) -> Any:
        budgets = self.budgets(call)
        if not budgets:
            return nxt()
        price, n = self._before(call, budgets)
        return self._watch(call, nxt(), budgets, price, n)

    def _watch(self, call: Any, events: Any, budgets: Any, price: Any, n: int) -> Any:
        usage = None
        try:
            for ev in events:
                if hasattr(ev, "finish_reason") and getattr(ev, "usage", None) is not None:
                    usage = ev.usage
                yield ev
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            self._after(budgets, n, self._spent(call, price, usage))

    # ---- async --------------------------------------------------------------------------------------

    def spend_reads(self, call: Any, store: Any) -> Optional[tuple[list[tuple[str, str, float]], int, list[str]]]:
        """For a layer around this one that reads ``store`` (Redis) anyway before the call (the route's
        limits: one round trip for both): (this call's budgets, the period's number, their Redis keys),
        or None when there is nothing to read or this layer keeps its spend elsewhere. What was read
        is handed back in ``call.notes["budgets.spent"]``: (budgets, number, values)."""
        if store is not self.store or call.op in _SKIP:
            return None
        budgets = self.budgets(call)
        if not budgets:
            return None
        n = self._window()[0]
        prefix = self.store.prefix
        return budgets, n, [prefix + _spend_key(k, m, n) for k, m, _c in budgets]

    def _start(self, call: Any, budgets: list[tuple[str, str, float]]) -> tuple[Any, int, Optional[tuple[float, float]]]:
        """The call's price and period number, checked against what is known without asking the store;
        third, what :meth:`_aread` needs to check the rest (the estimate, the period's seconds left), or
        None when nothing is left to read."""
        price = self._price(budgets)
        n, left = self._window()
        estimate = price.cost(estimate_tokens(call), 0) if price is not None else 0.0
        read = call.notes.pop("budgets.spent", None)
        if read is not None and read[1] == n and read[0] == budgets:  # read for us (spend_reads) this period
            self._check(budgets, self._noted(budgets, n, read[2]), estimate, left)
            return price, n, None
        if self.lease and self._far(budgets, n, estimate):
            return price, n, None
        if not self.remote:  # in memory: read at once (no outage possible, nothing to await)
            self._check(budgets, [self.store.get(_spend_key(k, m, n)) for k, m, _c in budgets], estimate, left)
            return price, n, None
        return price, n, (estimate, left)

    async def _aread(self, budgets: list[tuple[str, str, float]], n: int, estimate: float, left: float) -> None:
        async def check() -> bool:
            spent = await self.store.amget([_spend_key(k, m, n) for k, m, _c in budgets])
            self._check(budgets, self._noted(budgets, n, spent), estimate, left)
            return True
        await aguarded(self.config, "budgets", check, False)

    async def _abefore(self, call: Any, budgets: list[tuple[str, str, float]]) -> tuple[Any, int]:
        price, n, rest = self._start(call, budgets)
        if rest is not None:
            await self._aread(budgets, n, *rest)
        return price, n

    # ---- a pass-through call (Layer.forward_hooks): spend added when the server has read the usage --

    forward_hooks = True

    def forward_enter(self, call: Any) -> Any:
        budgets = self.budgets(call) if call.op not in _SKIP else None
        if not budgets:
            return None
        price, n, rest = self._start(call, budgets)
        spend = (self, call, budgets, price, n)  # the state: what _spent_end adds the spend with
        return spend if rest is None else Await(self._aread_then(spend, *rest))

    async def _aread_then(self, spend: "_Spend", estimate: float, left: float) -> "_Spend":
        _layer, _call, budgets, _price, n = spend
        await self._aread(budgets, n, estimate, left)
        return spend

    def forward_done(self, call: Any, state: Optional["_Spend"], result: Any) -> Any:
        return on_forward_end(result, _spent_end, state) if state is not None else result  # (policies/usage_of.py)

    def _noted(self, budgets: list[tuple[str, str, float]], n: int, spent: list[Any]) -> list[float]:
        """``spent`` as just read from the store, plus what this process's calls added that the store
        has not been sent yet (incr_nowait sums them for a few ms: redis_pipe.SUM_GAP); kept for _far."""
        note, ttl = self.store.note, self.period * 2
        return [note(_spend_key(k, m, n), got, ttl) for (k, m, _c), got in zip(budgets, spent)]

    def _far(self, budgets: list[tuple[str, str, float]], n: int, estimate: float) -> bool:
        """Whether every budget of the call, as this process read it within LEASE_TTL (plus its own
        spend since), stays at half its cap or less with this call: then it is not read again. Other
        workers' spend in those few ms is not seen; it would have to be half a cap to matter, and from
        half a cap on every call reads it (as the limits' leases: policies/limits.py _Lease)."""
        seen = self.store.seen
        for k, m, cap in budgets:
            v = seen(_spend_key(k, m, n), LEASE_TTL)
            if v is None or v + estimate > cap / 2:
                return False
        return True

    async def _aafter(self, budgets: list[tuple[str, str, float]], n: int, cost: Optional[float]) -> None:
        if not cost:
            return
        try:
            for k, m, _c in budgets:
                await self.store.aincr(_spend_key(k, m, n), cost, ttl=self.period * 2)
        except Exception as e:  # noqa: BLE001
            if not is_outage(e):
                raise
            log.warning("could not add a call's spend to its budgets (%s)", type(e).__name__)

    def _after_nowait(self, budgets: list[tuple[str, str, float]], n: int, cost: Optional[float]) -> None:
        """:meth:`_aafter` sent without waiting (the answer is finishing; nothing reads this back)."""
        if not cost:
            return
        try:
            # one store for every budget: it takes all of them without waiting, or none (then await)
            if all(self.store.incr_nowait(_spend_key(k, m, n), cost, ttl=self.period * 2)
                   for k, m, _c in budgets):
                return
        except Exception as e:  # noqa: BLE001 - as _aafter: an outage loses this call's spend
            if not is_outage(e):
                raise
            log.warning("could not add a call's spend to its budgets (%s)", type(e).__name__)
            return
        _later(self._aafter(budgets, n, cost))

    async def acall(self, call: Any, nxt: Any) -> Any:
        if call.op == "forward":
            return await ahooked(self, call, nxt)
        budgets = self.budgets(call) if call.op not in _SKIP else []
        if not budgets:
            return await nxt()
        price, n = await self._abefore(call, budgets)
        result = await nxt()
        await self._aafter(budgets, n, self._spent(call, price, getattr(result, "usage", None)))
        return result

    def astream(self, call: Any, nxt: Any) -> Any:
        return self._awatch(call, nxt)

    async def _awatch(self, call: Any, nxt: Any) -> Any:
        budgets = self.budgets(call)
        price, n = (await self._abefore(call, budgets)) if budgets else (None, 0)
        events = nxt()
        usage = None
        try:
            async for ev in events:
                if hasattr(ev, "finish_reason") and getattr(ev, "usage", None) is not None:
                    usage = ev.usage
                yield ev
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            if budgets:
                await self._aafter(budgets, n, self._spent(call, price, usage))


#: a pass-through call's forward-hook state: (layer, call, budgets, price, period number); a tuple, which
#: costs less to make per call than an object (usage_of.py)
_Spend = tuple[Any, ...]


def _spent_end(spend: "_Spend", usage: Any, ok: Optional[bool]) -> None:
    """A pass-through call's spend, added when the server has read the usage (usage_of.py)."""
    layer, call, budgets, price, n = spend
    u = usage if type(usage) is dict else usage_of_raw(usage)
    layer._after_nowait(budgets, n, layer._spent(call, price, u))


_pending: set[Any] = set()


def _later(work: Any) -> None:
    import asyncio

    task = asyncio.get_running_loop().create_task(work)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def make_layer(mesh: Any, llm: Any) -> Optional[BudgetsLayer]:
    cfg = mesh.config.budgets
    if not (cfg.keys or cfg.users or cfg.teams or cfg.connections):
        return None
    return BudgetsLayer(mesh, llm)
