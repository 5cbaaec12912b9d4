"""The ledger's policy layer (order 20, outside limits and budgets): one row per call.

Records every operation but token counting: sync, async, streamed (usage from the footer; a stream
the caller stops early is ``cancelled``, with what it used if known) and failed calls (``error``, or
``refused`` for the mesh's own limits and budgets). The gateway's pass-through is recorded too: a
whole answer's usage read from its bytes, a stream's handed over by ``mesh serve`` at its end
(:mod:`langchain_mesh.policies.usage_of`). The calls a route makes to its targets
(``scope.extra["route"]``) are not recorded themselves: the route's call is, once, with the target
that answered (``call.meta.llm_id``).

    usage: {path: ./mesh-usage.db}     # turns it on; see langchain_mesh.usage
"""

from __future__ import annotations

import time
from typing import Any, Optional

from ..errors import BudgetExceeded, RateLimitExceeded, StateUnavailableError
from ..policies.chain import Layer, ahooked
from ..policies.usage_of import on_forward_end
from .ledger import _LATER, ledger_for

__all__ = ["LedgerLayer", "make_layer"]

_SKIP = frozenset({"count_tokens", "acount_tokens"})
#: the operation a row names: the async forms as the sync ones
_OP = {"acomplete": "complete", "aembed": "embed", "astream": "stream", "agenerate_images": "generate_images"}
_REFUSED = (RateLimitExceeded, BudgetExceeded, StateUnavailableError)


def _status(e: BaseException) -> str:
    if isinstance(e, _REFUSED):
        return "refused"
    if isinstance(e, (GeneratorExit, KeyboardInterrupt)) or type(e).__name__ == "CancelledError":
        return "cancelled"
    return "error"


class LedgerLayer(Layer):
    name = "ledger"
    route_targets = False  # a route's call is recorded, once, not its calls to its targets

    def __init__(self, mesh: Any, llm: Any):
        self.ledger = ledger_for(mesh)
        self.llm_id = llm.id

    def _skip(self, call: Any) -> bool:
        return call.op in _SKIP or bool(call.scope.extra and call.scope.extra.get("route"))

    def _record(self, call: Any, ts: float, t0: float, usage: Any, status: str,
                error: Optional[BaseException] = None) -> None:
        s = call.scope
        target = call.answered_by or self.llm_id
        # the pass-through's usage (a dict) is priced by the writer, off the request path
        cost = self._price(call, usage) if usage is not None and type(usage) is not dict else _LATER
        op = call.op
        self.ledger.record(ts, s.key, s.user, s.team, self.llm_id, target, _OP.get(op, op), usage,
                           time.perf_counter() - t0, status, type(error).__name__ if error else None, cost)

    def _price(self, call: Any, usage: Any) -> Optional[float]:
        """Put the call's cost on its answer (``CallMeta.cost``; None: unknown price), once."""
        if "ledger.cost" not in call.notes:
            call.notes["ledger.cost"] = call.meta.cost = self.ledger.cost(call.meta.llm_id or self.llm_id, usage)
            call.meta.currency = self.ledger.config.currency
        return call.notes["ledger.cost"]

    def call(self, call: Any, nxt: Any) -> Any:
        if self._skip(call):
            return nxt()
        ts, t0 = time.time(), time.perf_counter()
        try:
            result = nxt()
        except BaseException as e:
            self._record(call, ts, t0, None, _status(e), e)
            raise
        self._record(call, ts, t0, getattr(result, "usage", None), "ok")
        return result

    async def acall(self, call: Any, nxt: Any) -> Any:
        if call.op == "forward":
            return await ahooked(self, call, nxt)
        if self._skip(call):
            return await nxt()
        ts, t0 = time.time(), time.perf_counter()
        try:
            result = await nxt()
        except BaseException as e:
            self._record(call, ts, t0, None, _status(e), e)
            raise
        self._record(call, ts, t0, getattr(result, "usage", None), "ok")
        return result

    # ---- a pass-through call (Layer.forward_hooks): recorded when the server has read the usage -----

    forward_hooks = True

    def forward_enter(self, call: Any) -> tuple[Any, ...]:
        # the state, a tuple (cheaper to make than an object): what _ended records the row from. (A
        # pass-through is never skipped: its op is not counting tokens, and the calls a route makes to
        # its targets leave this layer out, Mesh._layers.)
        return (self, call, time.time(), time.perf_counter())

    def forward_fail(self, call: Any, state: tuple[Any, ...], error: BaseException) -> None:
        self._record(call, state[2], state[3], None, _status(error), error)

    def forward_done(self, call: Any, state: tuple[Any, ...], result: Any) -> Any:
        return on_forward_end(result, _ended, state)  # (policies/usage_of.py)

    def stream(self, call: Any, nxt: Any) -> Any:
        return nxt() if self._skip(call) else self._watch(call, nxt)

    def _watch(self, call: Any, nxt: Any) -> Any:
        ts, t0 = time.time(), time.perf_counter()
        usage, status, err = None, "cancelled", None
        events = None
        try:
            events = nxt()
            for ev in events:
                if hasattr(ev, "finish_reason") and getattr(ev, "usage", None) is not None:
                    usage, status = ev.usage, "ok"
                    self._price(call, usage)  # before the footer goes up: the mesh puts call.meta on it
                yield ev
        except BaseException as e:
            status, err = _status(e), e
            raise
        finally:
            if events is not None and getattr(events, "close", None) is not None:
                events.close()
            self._record(call, ts, t0, usage, status, err)

    def astream(self, call: Any, nxt: Any) -> Any:
        return nxt() if self._skip(call) else self._awatch(call, nxt)

    async def _awatch(self, call: Any, nxt: Any) -> Any:
        ts, t0 = time.time(), time.perf_counter()
        usage, status, err = None, "cancelled", None
        events = None
        try:
            events = nxt()
            async for ev in events:
                if hasattr(ev, "finish_reason") and getattr(ev, "usage", None) is not None:
                    usage, status = ev.usage, "ok"
                    self._price(call, usage)
                yield ev
        except BaseException as e:
            status, err = _status(e), e
            raise
        finally:
            if events is not None and getattr(events, "aclose", None) is not None:
                await events.aclose()
            self._record(call, ts, t0, usage, status, err)

    def close(self) -> None:
        self.ledger.close()


def _ended(state: tuple[LedgerLayer, Any, float, float], usage: Any, ok: Optional[bool]) -> None:
    """A pass-through call's row, recorded when the server has read its usage (usage_of.py)."""
    layer, call, ts, t0 = state
    layer._record(call, ts, t0, usage, "ok" if ok else ("cancelled" if ok is None else "error"))


def make_layer(mesh: Any, llm: Any) -> LedgerLayer:
    return LedgerLayer(mesh, llm)
