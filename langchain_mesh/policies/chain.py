"""The policy chain: the layers a call passes between :class:`~langchain_mesh.mesh.Mesh` and the connection.

    caller -> Mesh -> tracing -> ledger -> guardrails -> cache -> limits -> (route / retries) -> connection

Each layer wraps the rest of the chain, as ASGI middleware does: it gets the :class:`Call` and
``nxt``, the rest of the chain, and returns what ``nxt`` returns or something in its place (a cached
answer; a refusal is an exception). A layer is built per LLM, once, by a factory named in
:data:`LAYERS` whose config section is present, so a mesh with no policies configured imports none
of these modules and its calls take the direct path of before (one dict lookup more). Config::

    tracing: {enabled: true}          # each section turns on its layer; see each module's docstring
    guardrails: [...]
    cache: {ttl: 600}

A layer that must read the request's content (a cache key, a guardrail's judge) sets ``needs_content``: an
LLM with such a layer is not passed through as bytes by ``mesh serve`` (``Mesh.passthrough`` is None)
but served on the translated path, so every layer sees a parsed request. A layer that reads the
pass-through's bytes itself sets ``reads_wire`` (the wire format it reads) instead; a pass-through
call's layers may replace ``call.request``'s body, and the upstream gets the replacement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Optional

from ..schema import CallMeta, StreamEvent, StreamFooter, built
from .scope import CallScope, current_scope

__all__ = ["Await", "Call", "Chain", "Layer", "LAYERS", "build_chain", "run", "arun", "arun_forward", "ahooked", "run_stream",
           "arun_stream"]

#: (order, the config section that turns the layer on, "module:factory"); the factory is
#: ``factory(mesh, llm) -> Optional[Layer]`` (None: the section does not apply to this LLM).
#: Imported only when a config has the section.
LAYERS: list[tuple[int, str, str]] = [
    (10, "tracing", "langchain_mesh.policies.tracing:tracing_layer"),
    (20, "usage", "langchain_mesh.usage.layer:make_layer"),           # the ledger (issue 19)
    (30, "guardrails", "langchain_mesh.policies.guardrails:guardrails_layer"),
    (40, "cache", "langchain_mesh.policies.cache:cache_layer"),
    (50, "limits", "langchain_mesh.policies.limits:make_layer"),      # rate limits (issue 19)
    (55, "budgets", "langchain_mesh.policies.budgets:make_layer"),    # spend caps (issue 19)
]


@dataclass(slots=True, init=False)  # one per call: no per-instance __dict__
class Call:
    """One call as the layers see it. ``op`` is the connection method's name (``complete``,
    ``acomplete``, ``stream``, ``astream``, ``embed``, ``aembed``, ``generate_images``,
    ``agenerate_images``, ``count_tokens``, ``acount_tokens``, ``forward``)."""

    mesh: Any  # the Mesh and its LLM handle (typed Any: policies sit below Mesh and queries)
    llm: Any
    op: str
    request: Any  # a layer may replace it (a redacting guardrail): the direct call sends call.request
    timeout: Optional[float]
    max_retries: Optional[int]
    scope: CallScope  # who the call is for: the current scope unless given
    #: what the layers recorded (:attr:`meta`), made when a layer first writes or reads it: a pydantic
    #: model per call cost the gateway's pass-through ~1-2 µs a request, where no layer touches it
    _meta: Optional[CallMeta] = field(repr=False)
    _notes: Optional[dict[str, Any]] = field(repr=False)  # :attr:`notes`, made when first used

    # written out rather than generated: the generated __init__ calls a factory for each default
    # (the scope, the notes), ~0.8k of the ~3.7k instructions a gateway call spent making its Call
    def __init__(self, mesh: Any, llm: Any, op: str, request: Any, timeout: Optional[float] = None,
                 max_retries: Optional[int] = None, scope: Optional[CallScope] = None):
        self.mesh = mesh
        self.llm = llm
        self.op = op
        self.request = request
        self.timeout = timeout
        self.max_retries = max_retries
        self.scope = scope if scope is not None else current_scope()
        self._meta = None
        self._notes = None

    @property
    def notes(self) -> dict[str, Any]:
        """Free slots for layers to hand each other facts (e.g. the ledger reads the limits' estimate)."""
        n = self._notes
        if n is None:
            n = self._notes = {}
        return n

    @property
    def meta(self) -> CallMeta:
        m = self._meta
        if m is None:
            m = self._meta = CallMeta()
        return m

    @meta.setter
    def meta(self, value: CallMeta) -> None:
        self._meta = value

    @property
    def answered_by(self) -> Optional[str]:
        """``meta.llm_id`` (a route's target that answered) without making :attr:`meta` to read it."""
        m = self._meta
        return m.llm_id if m is not None else None


class Layer:
    """One policy. Override the entry points it changes; the defaults pass straight through."""

    name = "layer"
    needs_content = False  # True: reads the request, so no byte pass-through for its LLMs
    #: a layer that reads the request's content in one pass-through wire format (a guardrail:
    #: ``"openai"``): an LLM whose pass-through speaks another is not passed through
    reads_wire: Optional[str] = None
    #: True: reads a stream's content (an output guardrail), so streams of its LLMs are translated
    #: (``Mesh.forward_streams``) while their whole answers still pass through
    reads_streams = False
    #: False: passes on the calls a route makes to its targets (their scope says ``extra["route"]``)
    #: untouched, so the mesh leaves the layer out of them (``Mesh._layers``)
    route_targets = True

    def call(self, call: Call, nxt: Callable[[], Any]) -> Any:
        return nxt()

    async def acall(self, call: Call, nxt: Callable[[], Awaitable[Any]]) -> Any:
        return await nxt()

    def stream(self, call: Call, nxt: Callable[[], Iterator[StreamEvent]]) -> Iterator[StreamEvent]:
        return nxt()

    def astream(self, call: Call, nxt: Callable[[], AsyncIterator[StreamEvent]]) -> AsyncIterator[StreamEvent]:
        return nxt()

    # A layer whose pass-through calls (op ``forward``) need nothing awaited around the upstream call
    # sets ``forward_hooks`` and writes them as three plain methods: what it does before the call
    # (returning a state; raising refuses it), after a failure, and after an answer. When every layer of
    # a chain has them, Mesh.aforward runs them around the upstream call itself (arun_forward) instead of
    # nesting a coroutine per layer around it: each suspension of the call (its upstream I/O) resumed
    # through every one of those frames, ~3 µs of a gateway request per layer (bench/gateway_micro.py).
    # Its acall for ``forward`` is then ahooked, the same three methods: one code path either way.
    # A hook that must sometimes wait (a store's round trip, when what it kept in hand does not cover
    # the call) returns :class:`Await` from forward_enter: the runner awaits it and the result is the
    # state. Only those calls pay for a coroutine.
    forward_hooks = False

    def forward_enter(self, call: Call) -> Any:
        return None

    def forward_fail(self, call: Call, state: Any, error: BaseException) -> None:
        return None

    def forward_done(self, call: Call, state: Any, result: Any) -> Any:
        return result

    def close(self) -> None:
        """The mesh is closing (flush what is buffered)."""


class Await:
    """``forward_enter``'s answer when it must wait: ``work`` (a coroutine) is awaited by the runner
    and what it returns is the layer's state (what it raises refuses the call, as from forward_enter)."""

    __slots__ = ("work",)

    def __init__(self, work: Awaitable[Any]):
        self.work = work


class Chain(tuple):  # type: ignore[type-arg]
    """An LLM's layers, outermost first, whether every one has forward hooks (:attr:`hooked`: worked
    out once here rather than looked up per call, which hashed the tuple each time) and whether one
    may rewrite a pass-through body (:attr:`rewrites`)."""

    hooked: bool
    rewrites: bool  # a layer may replace a pass-through call's body (reads_wire)

    def __new__(cls, layers: Iterable[Layer]) -> "Chain":
        self = super().__new__(cls, layers)
        self.hooked = all(x.forward_hooks for x in self)
        self.rewrites = any(x.reads_wire is not None for x in self)
        return self


def build_chain(mesh: Any, llm: Any) -> Chain:
    """The layers for ``llm``, outermost first: those whose config section ``mesh.config`` has."""
    out = []
    for _order, section, target in sorted(LAYERS):
        if not _configured(mesh.config, section):
            continue
        module, _, name = target.partition(":")
        layer = getattr(importlib.import_module(module), name)(mesh, llm)
        if layer is not None:
            out.append(layer)
    return Chain(out)


def _configured(config: Any, section: str) -> bool:
    value = getattr(config, section, None)
    return bool(value) and getattr(value, "enabled", True) is not False


# The runners nest the layers around ``inner`` (the direct call). Written as small recursive steps
# rather than a prebuilt closure tower: the tower would have to be rebuilt per call anyway (it
# closes over the call), and the step costs one frame per layer.

def run(layers: tuple[Layer, ...], call: Call, inner: Callable[[], Any]) -> Any:
    if len(layers) == 1:  # the common case (one policy configured): no step closures to make
        return layers[0].call(call, inner)

    def step(i: int) -> Any:
        return inner() if i == len(layers) else layers[i].call(call, lambda: step(i + 1))
    return step(0)


async def arun(layers: tuple[Layer, ...], call: Call, inner: Callable[[], Awaitable[Any]]) -> Any:
    if len(layers) == 1:
        return await layers[0].acall(call, inner)
    if len(layers) == 2:  # the gateway's usual pair (the ledger around the limits): one lambda, no steps
        second = layers[1]
        return await layers[0].acall(call, lambda: second.acall(call, inner))

    def step(i: int) -> Awaitable[Any]:
        return inner() if i == len(layers) else layers[i].acall(call, lambda: step(i + 1))
    return await step(0)


async def ahooked(layer: Layer, call: Call, nxt: Callable[[], Awaitable[Any]]) -> Any:
    """``layer.acall`` of a pass-through call, made of its forward hooks (see :class:`Layer`)."""
    state = layer.forward_enter(call)
    if type(state) is Await:
        state = await state.work
    try:
        result = await nxt()
    except BaseException as e:
        layer.forward_fail(call, state, e)
        raise
    return layer.forward_done(call, state, result)


async def arun_forward(layers: tuple[Layer, ...], call: Call, work: Awaitable[Any], whole: bool) -> Any:
    """What :func:`arun` of ``ahooked`` layers does, without a coroutine per layer: every layer's
    ``forward_enter`` outermost first, the upstream call ``work`` (a coroutine; ``whole``: its bytes
    become the pass-through's ``(bytes, None)``), then ``forward_done`` innermost first; a failure
    (the call's, or a hook's) goes to ``forward_fail`` of each layer entered outside it, innermost
    first, as the nested acalls would see it."""
    states: list[Any] = []
    n = 0  # the layers entered whose exit has not run
    try:
        for layer in layers:
            state = layer.forward_enter(call)
            if type(state) is Await:
                state = await state.work
            states.append(state)
            n += 1
        result = await work
        if whole:
            result = (result, None)
        while n:
            n -= 1
            result = layers[n].forward_done(call, states[n], result)
        return result
    except BaseException as e:
        if len(states) < len(layers):
            work.close()  # refused before it was sent: never awaited
        err = e
        while n:
            n -= 1
            try:
                layers[n].forward_fail(call, states[n], err)
            except BaseException as e2:  # noqa: BLE001 - as a nested acall's handler raising: the outer layers see it
                err = e2
        if err is e:
            raise
        raise err from e


def run_stream(layers: tuple[Layer, ...], call: Call, inner: Callable[[], Iterator[StreamEvent]]) -> Iterator[StreamEvent]:
    def step(i: int) -> Iterator[StreamEvent]:
        return inner() if i == len(layers) else layers[i].stream(call, lambda: step(i + 1))
    return step(0)


def arun_stream(layers: tuple[Layer, ...], call: Call,
                inner: Callable[[], AsyncIterator[StreamEvent]]) -> AsyncIterator[StreamEvent]:
    def step(i: int) -> AsyncIterator[StreamEvent]:
        return inner() if i == len(layers) else layers[i].astream(call, lambda: step(i + 1))
    return step(0)


def note_target(result: Any, call: Call) -> Any:
    """``result`` of a route (an answer, a footer, or for the pass-through the route's meta itself):
    the target that answered goes into ``call.meta`` at once, so the layers around the route (the
    ledger, budgets) record and price that target, not the route."""
    meta = result if isinstance(result, CallMeta) else getattr(result, "meta", None)
    if meta is None or meta.llm_id is None:
        return result
    mine = call._meta
    if mine is None:  # (the gateway's route: every request) made as CallMeta() would be, unvalidated
        call._meta = built(CallMeta, {"llm_id": meta.llm_id, "attempts": [], "guardrails": [], "cache": None,
                                      "cost": None, "currency": None}, {"llm_id"})
    elif mine.llm_id is None:
        mine.llm_id = meta.llm_id
    return result


def note_target_on_footer(events: Iterator[StreamEvent], call: Call) -> Iterator[StreamEvent]:
    try:
        for ev in events:
            yield note_target(ev, call) if isinstance(ev, StreamFooter) else ev
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


async def anote_target_on_footer(events: AsyncIterator[StreamEvent], call: Call) -> AsyncIterator[StreamEvent]:
    try:
        async for ev in events:
            yield note_target(ev, call) if isinstance(ev, StreamFooter) else ev
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def attach_meta(result: Any, call: Call) -> Any:
    """``result`` (an answer or a footer) carrying what the layers recorded, when it can. An answer that
    already has meta (a route's: its target and attempts) gets the layers' findings added to it."""
    if call._meta is None or not hasattr(result, "meta") or call._meta == _NOTHING:
        return result
    if result.meta is None:
        result.meta = call.meta
    else:
        inner, outer = result.meta, call.meta
        inner.guardrails = [*outer.guardrails, *inner.guardrails]
        for name in ("cache", "cost", "currency"):
            if getattr(outer, name) is not None:
                setattr(inner, name, getattr(outer, name))
        if inner.llm_id is None:
            inner.llm_id = outer.llm_id
    return result


_NOTHING = CallMeta()
