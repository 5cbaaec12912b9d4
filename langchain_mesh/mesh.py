"""The registry: which connections exist, which LLMs they offer, and the one dispatch path to them.

Data flows one way: caller (builder, LangChain adapter, HTTP server) -> :class:`Mesh` -> policies ->
connection -> provider. Connections are created on first use and then reused (one client and pool
per connection for the life of the mesh), so nothing is rebuilt on the request path.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Mapping, Optional, Union

from .config import DEFAULT_CONFIG, MeshConfig, load_config
from .errors import CapabilityError, ProviderError, StreamInterruptedError, UnknownKnowledgeBankError, UnknownLLMError
from .ids import format_llm_id, parse_llm_id
from .policies.chain import (
    LAYERS,
    Call,
    Chain,
    anote_target_on_footer,
    arun,
    arun_forward,
    arun_stream,
    attach_meta,
    note_target,
    note_target_on_footer,
    run,
    run_stream,
)
from .policies.retry import ATTEMPTS, acall_with_retries, astream_with_retries, call_with_retries, stream_with_retries
from .policies.scope import current_scope
from .schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamEvent,
    StreamFooter,
)

if TYPE_CHECKING:
    from .connections.base import Connection, Passthrough, ToolCallAssembler
    from .credentials.per_user import PerUserConnections
    from .queries import LLM

__all__ = ["Mesh", "LLMListItem"]


@dataclass(frozen=True)
class LLMListItem:
    """One entry of :meth:`Mesh.list_llms` (the seed's ``DSSLLMListItem``)."""

    id: str
    type: str
    description: str
    purposes: list[str]
    connection: str
    capabilities: ModelCapabilities = field(default_factory=ModelCapabilities, repr=False)


class Mesh:
    """A set of connections and knowledge banks, described by a config (``Mesh()`` = embedded default)."""

    def __init__(self, config: Union[MeshConfig, Mapping[str, Any], str, os.PathLike[str], None] = None,
                 user: Optional[str] = None):
        self.config: MeshConfig = load_config(config)
        #: the caller in library use when no ``acting_as`` says otherwise (default: the OS user)
        self.user = user
        self._user_slots: dict[str, dict[str, list[str]]] = _user_slots_of(self.config)
        self._per_user: Optional["PerUserConnections"] = None
        self._connections: dict[str, "Connection"] = {}
        self._models: dict[str, dict[str, ModelInfo]] = {}
        self._handles: dict[str, "LLM"] = {}
        self._passthrough: dict[str, Optional["Passthrough"]] = {}
        self._forward_streams: dict[str, bool] = {}  # forward_streams, per LLM id
        self._chains: dict[str, Chain] = {}
        self._routed_chains: dict[str, Chain] = {}  # the same, for the calls a route makes (_layers)
        self._retry_policies: dict[str, Any] = {}  # connection name -> its RetryPolicy (configured `retry:`)
        # no policy section in the config: every call takes the direct path, and no policy module loads
        self._policies = any(getattr(self.config, section, None) for _o, section, _t in LAYERS)
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, source: Union[MeshConfig, Mapping[str, Any], str, os.PathLike[str]]) -> "Mesh":
        return cls(source)

    _default: Optional["Mesh"] = None
    _default_key: Optional[str] = None
    _default_lock = threading.Lock()

    @classmethod
    def default(cls) -> "Mesh":
        """The process-wide mesh: ``MESH_CONFIG`` if set, else the embedded default. Built once."""
        key = os.environ.get("MESH_CONFIG") or ""
        with cls._default_lock:
            if cls._default is None or cls._default_key != key:
                cls._default = cls(Path(key) if key else DEFAULT_CONFIG)
                cls._default_key = key
            return cls._default

    # ---- connections -----------------------------------------------------------------------------------

    def connection(self, name: str) -> "Connection":
        conn = self._connections.get(name)
        if conn is not None:
            return conn
        with self._lock:
            conn = self._connections.get(name)
            if conn is None:
                from .connections import get_connection_class

                cfg = self.config.connections.get(name)
                if cfg is None:
                    raise UnknownLLMError(
                        f"no connection named {name!r}; connections: {', '.join(sorted(self.config.connections)) or 'none'}")
                conn = get_connection_class(cfg.type)(name, cfg)
                self._connections[name] = conn
        return conn

    # ---- per-user credentials -------------------------------------------------------------------------

    def uses_user_credentials(self, llm: "LLM") -> bool:
        """Whether ``llm``'s connection takes each caller's own stored credential (``{{user}}``)."""
        return llm.connection.name in self._user_slots

    def credential_targets(self) -> dict[str, list[str]]:
        """What users can store credentials for: connection or preset name -> the fields."""
        out: dict[str, list[str]] = {}
        for slots in self._user_slots.values():
            for target, fields in slots.items():
                out.setdefault(target, [])
                out[target] += [f for f in fields if f not in out[target]]
        return out

    @property
    def credential_store(self) -> Any:
        return self._user_connections().store

    def _user_connections(self) -> "PerUserConnections":
        if self._per_user is None:
            with self._lock:
                if self._per_user is None:
                    from .credentials.per_user import PerUserConnections, open_store

                    self._per_user = PerUserConnections(lambda: open_store(self.config))
        return self._per_user

    def caller(self) -> str:
        """The user this call runs for: ``acting_as`` / the server's caller, else ``Mesh(user=)``, else the OS user."""
        from .credentials.identity import current_user, os_user

        return current_user() or self.user or os_user()

    def _conn(self, llm: "LLM") -> "Connection":
        conn = llm.connection
        slots = self._user_slots.get(conn.name)
        if slots is None:  # the common case: one dict lookup
            return conn
        return self._user_connections().connection(conn, slots, self.caller())

    def _models_of(self, name: str) -> dict[str, ModelInfo]:
        models = self._models.get(name)
        if models is None:
            models = {m.id: m for m in self.connection(name).list_models()}
            self._models[name] = models
        return models

    # ---- listing and lookup -----------------------------------------------------------------------------

    def list_llms(self, purpose: Union[str, Purpose, None] = None) -> list[LLMListItem]:
        want = Purpose(purpose) if purpose is not None else None
        items = []
        for name, cfg in self.config.connections.items():
            for m in self._models_of(name).values():
                if want is not None and want not in m.purposes:
                    continue
                items.append(LLMListItem(
                    id=format_llm_id(cfg.type, name, m.id),
                    type=cfg.type,
                    description=m.description or f"{m.id} ({name})",
                    purposes=[p.value for p in m.purposes],
                    connection=name,
                    capabilities=m.capabilities,
                ))
        for name, route in self.config.routes.items():
            llm = self.get_llm(f"route:{name}")
            if want is not None and want not in llm.info.purposes:
                continue
            items.append(LLMListItem(id=llm.id, type="route", description=llm.info.description,
                                     purposes=[p.value for p in llm.info.purposes], connection=llm.id,
                                     capabilities=llm.info.capabilities))
        return items

    def get_llm(self, llm_id: str) -> "LLM":
        handle = self._handles.get(llm_id)
        if handle is not None:
            return handle
        from .queries import LLM

        ctype, cname, model = parse_llm_id(llm_id)
        if ctype == "route" and not model:
            return self._route_llm(llm_id, cname)
        cfg = self.config.connections.get(cname)
        if cfg is None or cfg.type != ctype:
            have = [f"{c.type}:{n}" for n, c in self.config.connections.items()]
            what = (f"connection {cname!r} is of type {cfg.type!r}, not {ctype!r}" if cfg is not None
                    else f"there is no connection {cname!r} of type {ctype!r}")
            raise UnknownLLMError(
                f"unknown LLM {llm_id!r}: {what}. Connections: {', '.join(have) or 'none'}. "
                "Run `mesh models` to list every LLM id.", llm_id, [i.id for i in self.list_llms()])
        models = self._models_of(cname)
        info = models.get(model)
        if info is None:  # listed before another process made it (a fine-tuned saved model, a version)?
            self._saved_models_changed(cname)
            models = self._models_of(cname)
            info = models.get(model)
        if info is None:
            ids = [format_llm_id(ctype, cname, m) for m in models]
            raise UnknownLLMError(
                f"unknown LLM {llm_id!r}: connection {cname!r} offers no model {model!r}. "
                f"Its models: {', '.join(ids) or 'none'}", llm_id, ids)
        handle = LLM(self, llm_id, self.connection(cname), model, info)
        self._handles[llm_id] = handle
        return handle

    def _route_llm(self, llm_id: str, name: str) -> "LLM":
        """The handle of ``route:<name>`` (see :mod:`langchain_mesh.policies.routes`)."""
        cfg = self.config.routes.get(name)
        if cfg is None:
            raise UnknownLLMError(
                f"unknown LLM {llm_id!r}: there is no route {name!r}. Routes: "
                f"{', '.join(sorted(self.config.routes)) or 'none (add one under routes: in the config)'}",
                llm_id, [f"route:{n}" for n in self.config.routes])
        from .policies.route_connection import RouteConnection, route_info
        from .policies.routes import Route
        from .queries import LLM

        with self._lock:
            handle = self._handles.get(llm_id)
            if handle is not None:
                return handle
            targets = []
            for t in cfg.targets:
                try:
                    targets.append(self.get_llm(t.llm))
                except UnknownLLMError as e:
                    raise UnknownLLMError(f"route {name!r}: {e}", llm_id, e.available) from None
            route = Route(self, name, cfg, targets)
            handle = LLM(self, llm_id, RouteConnection(route), name, route_info(name, cfg.description, targets))
            handle.route = route
            self._handles[llm_id] = handle
        return handle

    # ---- fine-tuned saved models (langchain_mesh.finetune; needs the finetune extra to train) ---------

    def create_finetuned_saved_model(self, name: str, connection: str = "local", base_model: Optional[str] = None,
                                     description: str = "") -> Any:
        """A new, empty fine-tuned LLM saved model on a ``huggingfacelocal`` connection (the seed's
        ``create_finetuned_llm_saved_model``); add versions with ``create_finetuned_version``."""
        from .finetune.saved_model import create_saved_model

        return create_saved_model(self, name, connection, base_model, description)

    def get_saved_model(self, name: str, connection: Optional[str] = None) -> Any:
        from .finetune.saved_model import get_saved_model

        return get_saved_model(self, name, connection)

    def list_saved_models(self, connection: Optional[str] = None) -> list[Any]:
        from .finetune.saved_model import list_saved_models_of

        return list_saved_models_of(self, connection)

    def _saved_models_changed(self, connection: str) -> None:
        """A version was made or activated: list the connection's models afresh."""
        with self._lock:
            self._models.pop(connection, None)
            conn = self._connections.get(connection)
            if conn is not None:
                conn._listed_caps = None

    # ---- knowledge banks ------------------------------------------------------------------------------

    def list_knowledge_banks(self) -> list[Any]:
        from knowledge_banks.bank import KnowledgeBankListItem

        return [KnowledgeBankListItem(id=k, name=k, backend=c.backend, description=c.description,
                                      embedding_llm=c.embedding_llm, mesh=self)
                for k, c in self.config.knowledge_banks.items()]

    def get_knowledge_bank(self, kb_id: str) -> Any:
        from knowledge_banks.bank import KnowledgeBank

        cfg = self.config.knowledge_banks.get(kb_id)
        if cfg is None:
            raise UnknownKnowledgeBankError(
                f"unknown knowledge bank {kb_id!r}; knowledge banks: "
                f"{', '.join(sorted(self.config.knowledge_banks)) or 'none (add one under knowledge_banks: in the config)'}")
        return KnowledgeBank(self, kb_id, cfg)

    # ---- dispatch (the one path every call takes to a connection) -------------------------------

    # Every operation goes through `_limits` and the retry policy here, and nowhere else: the
    # LangChain adapters and the gateway pass `timeout` / `max_retries` overrides instead of looping
    # again. This is the seam further policies (routes, limits, ledger) plug into.

    def complete(self, llm: "LLM", request: CompletionRequest, *, timeout: Optional[float] = None,
                 max_retries: Optional[int] = None) -> CompletionResponse:
        _typed(request, CompletionRequest, "complete")
        if request.settings.cache is not None:
            self._check_cache_setting(llm)
        return self._call(llm, self._conn(llm).complete, request, timeout, max_retries)

    async def acomplete(self, llm: "LLM", request: CompletionRequest, *, timeout: Optional[float] = None,
                        max_retries: Optional[int] = None) -> CompletionResponse:
        _typed(request, CompletionRequest, "acomplete")
        if request.settings.cache is not None:
            self._check_cache_setting(llm)
        return await self._acall(llm, self._conn(llm).acomplete, request, timeout, max_retries)

    def _check_cache_setting(self, llm: "LLM") -> None:
        """``settings["cache"]`` speaks to the response cache: without one for ``llm`` it would be ignored."""
        if not (self._policies and any(layer.name == "cache" for layer in self._chain(llm))):
            from .errors import SettingsError

            raise SettingsError(f"the setting 'cache' is for the mesh's response cache, and {llm.id} has none: add "
                                "a cache: section to the mesh config (see its llms: patterns) or remove the setting",
                                ["cache"])

    def stream(self, llm: "LLM", request: CompletionRequest, *, timeout: Optional[float] = None,
               max_retries: Optional[int] = None) -> Iterator[StreamEvent]:
        _typed(request, CompletionRequest, "stream")
        if request.settings.cache is not None:
            self._check_cache_setting(llm)
        layers, scope = self._layers(llm) if self._policies else _NO_LAYERS
        if layers:
            call = Call(self, llm, "stream", request, timeout, max_retries, scope)

            def inner() -> Iterator[StreamEvent]:
                events = self._stream(llm, call.request, timeout, max_retries, ATTEMPTS.get() is not None)
                return events if llm.route is None else note_target_on_footer(events, call)
            return _meta_on_footer(run_stream(layers, call, inner), call)
        return self._stream(llm, request, timeout, max_retries)

    def _stream(self, llm: "LLM", request: CompletionRequest, timeout: Optional[float],
                max_retries: Optional[int], observed: bool = False) -> Iterator[StreamEvent]:
        if llm.route is not None:
            return llm.route.stream(request, timeout, max_retries)
        conn = self._conn(llm)
        n, t, _ = _limits(conn, timeout, max_retries)
        # observed: a traced call (policies/tracing.py) sees its one attempt through the retry policy
        if not n and timeout is None and not observed:
            return _ensure_footer(conn.stream(llm.model, request), llm.id)
        # a caller's timeout bounds the whole stream; the connection's own bounds each read (a long
        # generation is not cut), so here it is only the deadline of the retries
        return stream_with_retries(lambda: _ensure_footer(conn.stream(llm.model, request), llm.id), n, t,
                                   timeout is not None, self._retry_policy(conn))

    def astream(self, llm: "LLM", request: CompletionRequest, *, timeout: Optional[float] = None,
                max_retries: Optional[int] = None) -> AsyncIterator[StreamEvent]:
        _typed(request, CompletionRequest, "astream")
        if request.settings.cache is not None:
            self._check_cache_setting(llm)
        layers, scope = self._layers(llm) if self._policies else _NO_LAYERS
        if layers:
            call = Call(self, llm, "astream", request, timeout, max_retries, scope)

            def ainner() -> AsyncIterator[StreamEvent]:
                events = self._astream(llm, call.request, timeout, max_retries, ATTEMPTS.get() is not None)
                return events if llm.route is None else anote_target_on_footer(events, call)
            return _ameta_on_footer(arun_stream(layers, call, ainner), call)
        return self._astream(llm, request, timeout, max_retries)

    def _astream(self, llm: "LLM", request: CompletionRequest, timeout: Optional[float],
                 max_retries: Optional[int], observed: bool = False) -> AsyncIterator[StreamEvent]:
        if llm.route is not None:
            return llm.route.astream(request, timeout, max_retries)
        conn = self._conn(llm)
        n, t, _ = _limits(conn, timeout, max_retries)
        if not n and timeout is None and not observed:
            return _aensure_footer(conn.astream(llm.model, request), llm.id)
        return astream_with_retries(lambda: _aensure_footer(conn.astream(llm.model, request), llm.id), n, t,
                                    timeout is not None, self._retry_policy(conn))

    def _check_images(self, llm: "LLM", request: EmbeddingRequest) -> None:
        """Images go only to a model that embeds them: anywhere else they would be dropped or misread."""
        _typed(request, EmbeddingRequest, "embed")
        if request.images and not (llm.capabilities.image_embedding and llm.connection.embeds_images):
            able = [i.id for i in self.list_llms("TEXT_EMBEDDING_EXTRACTION") if i.capabilities.image_embedding]
            raise CapabilityError(f"{llm.id} does not embed images (only texts). Image embedding models: "
                                  f"{', '.join(able) or 'none in this mesh'} (Bedrock amazon.titan-embed-image-v1, "
                                  "Vertex multimodalembedding@001, Cohere embed-v4.0)")

    def embed(self, llm: "LLM", request: EmbeddingRequest, *, timeout: Optional[float] = None,
              max_retries: Optional[int] = None) -> EmbeddingResponse:
        self._check_images(llm, request)
        return _one_vector_each(request, self._call(llm, self._conn(llm).embed, request, timeout, max_retries), llm)

    async def aembed(self, llm: "LLM", request: EmbeddingRequest, *, timeout: Optional[float] = None,
                     max_retries: Optional[int] = None) -> EmbeddingResponse:
        self._check_images(llm, request)
        return _one_vector_each(request, await self._acall(llm, self._conn(llm).aembed, request, timeout, max_retries),
                                llm)

    def count_tokens(self, llm: "LLM", request: CompletionRequest) -> int:
        """Input tokens of ``request`` on ``llm``: the provider's or the model's own count where
        there is one, else the documented estimate (``Connection.count_tokens``)."""
        _typed(request, CompletionRequest, "count_tokens")
        return self._call(llm, self._conn(llm).count_tokens, request, None, None)

    async def acount_tokens(self, llm: "LLM", request: CompletionRequest) -> int:
        _typed(request, CompletionRequest, "acount_tokens")
        return await self._acall(llm, self._conn(llm).acount_tokens, request, None, None)

    def tokenizer(self, llm: "LLM") -> Any:
        """The model's tokenizer (``encode``/``decode``) when this process has it, else None."""
        return llm.connection.tokenizer(llm.model)

    def generate_images(self, llm: "LLM", request: ImageGenerationRequest, *, timeout: Optional[float] = None,
                        max_retries: Optional[int] = None) -> ImageGenerationResponse:
        _typed(request, ImageGenerationRequest, "generate_images")
        conn = self._conn(llm)
        return self._call(llm, conn.generate_images, _image_leniency(conn, request), timeout, max_retries)

    async def agenerate_images(self, llm: "LLM", request: ImageGenerationRequest, *,
                               timeout: Optional[float] = None,
                               max_retries: Optional[int] = None) -> ImageGenerationResponse:
        _typed(request, ImageGenerationRequest, "agenerate_images")
        conn = self._conn(llm)
        return await self._acall(llm, conn.agenerate_images, _image_leniency(conn, request), timeout, max_retries)

    def passthrough(self, llm: "LLM") -> Optional["Passthrough"]:
        """The LLM's byte-level pass-through (:meth:`Connection.passthrough`), or None: asked once per LLM."""
        try:
            return self._passthrough[llm.id]
        except KeyError:
            # a connection on each caller's own credential ({{user}}) is never passed through: the
            # pass-through would send one shared request head, with one user's key
            own = None if self.uses_user_credentials(llm) else llm.connection.passthrough(llm.model)
            # a policy that reads the request (cache key, judge) needs the translated path; one that
            # reads the pass-through's bytes (a guardrail), a wire format it knows
            if own is not None and self._policies and any(
                    x.needs_content or x.reads_wire not in (None, own.wire) for x in self._chain(llm)):
                own = None
            p = self._passthrough[llm.id] = own
            return p

    def forward_streams(self, llm: "LLM") -> bool:
        """Whether a stream of ``llm`` may take its pass-through: no layer of its chain, or of a route's
        targets, reads a stream's content (an output guardrail; those streams are translated)."""
        try:
            return self._forward_streams[llm.id]
        except KeyError:
            ok = not self._policies or not any(x.reads_streams for x in self._chain(llm))
            ok = ok and (llm.route is None or all(self.forward_streams(t) for t in llm.route.targets))
            self._forward_streams[llm.id] = ok
            return ok

    async def aforward(self, llm: "LLM", path: str, body: bytes, stream: bool = False, *,
                       timeout: Optional[float] = None, max_retries: Optional[int] = None) -> tuple[Any, Optional[bytes]]:
        """``body`` (the LLM's wire format, as bytes) sent to ``path`` through its pass-through, under
        the same retry policy as every call: the answer's bytes, or for a stream its open body and
        first piece (read inside the attempt, so that a stream failing before it is retried).

        With policies that wait for the usage (limits, budgets, the ledger), a whole answer comes as
        ``(bytes, ForwardEnd)`` and a stream's body is a ``ForwardStream``: the caller calls their
        ``end(usage, ok)`` once it has read the usage (see :mod:`.policies.usage_of`)."""
        p = self.passthrough(llm)
        if p is None:
            raise CapabilityError(f"{llm.id} offers no pass-through; send it a translated request instead")
        layers, scope = self._layers(llm) if self._policies else _NO_LAYERS
        route = llm.route
        if route is not None:  # the route picks a target and calls this for it
            if not layers:
                return await route.forward(path, body, stream, timeout, max_retries)
            call = Call(self, llm, "forward", (path, body, stream), timeout, max_retries, scope)

            async def routed() -> tuple[Any, Optional[bytes]]:  # (the body as the layers left it)
                out = await route.forward(path, call.request[1], stream, timeout, max_retries)
                note_target(route.last_meta(), call)  # the pass-through's answer is bytes: the route says who
                return out
            if layers.hooked:  # no coroutine per layer around the route (see below)
                return await arun_forward(layers, call, routed(), False)
            return await arun(layers, call, routed)
        send = p.send
        if not layers and not stream:  # the common case, one attempt bounded by the connection: no closures
            n, t, own = _limits(llm.connection, timeout, max_retries)
            if not n and own and ATTEMPTS.get() is None:
                return await send(path, body, False), None

        call: Optional[Call] = None

        async def forward() -> tuple[Any, Optional[bytes]]:
            b = body if call is None else call.request[1]  # as the layers left it (a guardrail redacts)
            n, t, own = _limits(llm.connection, timeout, max_retries)
            if not n and own and ATTEMPTS.get() is None:  # one attempt: awaited here, not in a coroutine more
                return (await send(path, b, False), None) if not stream else await _attempt(send, path, b, True)
            return await acall_with_retries(lambda: _attempt(send, path, b, stream), n, t, own,
                                            self._retry_policy(llm.connection))

        if not layers:
            return await forward()
        call = Call(self, llm, "forward", (path, body, stream), timeout, max_retries, scope)
        if not layers.hooked:
            return await arun(layers, call, forward)
        # layers with forward hooks: run around the upstream call, no coroutine each (and for one whole
        # attempt, none for forward either, unless a layer may rewrite the body: it is read after them)
        n, t, own = _limits(llm.connection, timeout, max_retries)
        if not n and own and ATTEMPTS.get() is None and not stream and not layers.rewrites:
            return await arun_forward(layers, call, send(path, body, False), True)
        return await arun_forward(layers, call, forward(), False)

    def state_store(self) -> Any:
        """Where policies keep shared state: Redis with ``state.redis_url``, else this process's memory."""
        from .policies.state import store_for

        return store_for(self)

    def _chain(self, llm: "LLM") -> tuple[Any, ...]:
        """The policy layers of ``llm``, outermost first (built on its first call)."""
        chain = self._chains.get(llm.id)
        if chain is None:
            from .policies.chain import build_chain

            with self._lock:
                chain = self._chains.get(llm.id)
                if chain is None:
                    chain = self._chains[llm.id] = build_chain(self, llm)
        return chain

    def _layers(self, llm: "LLM") -> tuple[tuple[Any, ...], Any]:
        """The layers this call of ``llm`` passes, and the scope it is made in (for its Call): its
        chain, less the layers that leave alone the calls a route makes to its targets
        (``route_targets = False``: the ledger, which records the route's call) when a route makes this
        one (its scope says ``extra["route"]``). Not building a call for a layer that would only pass it
        on is most of what a route's ledger used to cost per call."""
        chain = self._chains.get(llm.id)
        if chain is None:
            chain = self._chain(llm)
        scope = current_scope()
        if chain and scope.extra.get("route") is not None:
            routed = self._routed_chains.get(llm.id)
            if routed is None:
                routed = self._routed_chains[llm.id] = Chain(x for x in chain if x.route_targets)
            return routed, scope
        return chain, scope

    def _call(self, llm: "LLM", fn: Any, request: Any, timeout: Optional[float], max_retries: Optional[int]) -> Any:
        layers, scope = self._layers(llm) if self._policies else _NO_LAYERS
        if layers:
            call = Call(self, llm, fn.__name__, request, timeout, max_retries, scope)

            def inner() -> Any:
                out = self._direct(llm, fn, call.request, timeout, max_retries, ATTEMPTS.get() is not None)
                return out if llm.route is None else note_target(out, call)
            return attach_meta(run(layers, call, inner), call)
        return self._direct(llm, fn, request, timeout, max_retries)

    async def _acall(self, llm: "LLM", fn: Any, request: Any, timeout: Optional[float],
                     max_retries: Optional[int]) -> Any:
        layers, scope = self._layers(llm) if self._policies else _NO_LAYERS
        if layers:
            call = Call(self, llm, fn.__name__, request, timeout, max_retries, scope)

            async def inner() -> Any:
                out = await self._adirect(llm, fn, call.request, timeout, max_retries, ATTEMPTS.get() is not None)
                return out if llm.route is None else note_target(out, call)
            return attach_meta(await arun(layers, call, inner), call)
        return await self._adirect(llm, fn, request, timeout, max_retries)

    def _direct(self, llm: "LLM", fn: Any, request: Any, timeout: Optional[float], max_retries: Optional[int],
                observed: bool = False) -> Any:
        """One operation under the retry policy, past every policy layer (``observed``: a tracing layer
        watches each attempt, so even a single one goes through the policy)."""
        if llm.route is not None:
            return llm.route.call(fn.__name__, request, timeout, max_retries)
        n, t, own = _limits(llm.connection, timeout, max_retries)
        if not n and own and not observed:  # one attempt, bounded by the connection's own timeout
            return fn(llm.model, request)
        return call_with_retries(lambda: fn(llm.model, request), n, t, own, self._retry_policy(llm.connection))

    async def _adirect(self, llm: "LLM", fn: Any, request: Any, timeout: Optional[float],
                       max_retries: Optional[int], observed: bool = False) -> Any:
        if llm.route is not None:
            return await llm.route.acall(fn.__name__, request, timeout, max_retries)
        n, t, own = _limits(llm.connection, timeout, max_retries)
        if not n and own and not observed:
            return await fn(llm.model, request)
        return await acall_with_retries(lambda: fn(llm.model, request), n, t, own, self._retry_policy(llm.connection))

    def _retry_policy(self, conn: "Connection") -> Any:
        """The connection's configured retry policy (``retry:``), None for the defaults: made once."""
        try:
            return self._retry_policies[conn.name]
        except KeyError:
            pass
        cfg = getattr(conn.config, "retry", None)
        policy = None
        if cfg is not None:
            from .policies.retry import RetryBudget, RetryPolicy
            from .policies.state import store_for

            budget = None if cfg.budget is None else RetryBudget(
                store_for(self), f"conn:{conn.name}", cfg.budget.ratio, cfg.budget.min_retries, cfg.budget.window)
            policy = RetryPolicy(cfg.base, cfg.cap, cfg.max_retry_after, budget)
        self._retry_policies[conn.name] = policy
        return policy

    def close(self) -> None:
        with self._lock:
            for layer in {id(x): x for chain in self._chains.values() for x in chain}.values():
                layer.close()  # flush what a layer buffers (the ledger) before the connections go
            self._chains.clear()
            self._routed_chains.clear()
            for shared in ("_ledger", "_state_store"):  # what the layers shared (usage ledger, Redis client)
                close = getattr(getattr(self, shared, None), "close", None)
                if close is not None:
                    close()
                self.__dict__.pop(shared, None)
            if self._per_user is not None:
                self._per_user.close()
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()
            self._models.clear()
            self._handles.clear()
            self._passthrough.clear()

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mesh(connections={sorted(self.config.connections)})"

    # ---- crossing a process boundary -------------------------------------------------------------

    def portable_config(self) -> dict[str, Any]:
        """The config as a plain dict with secret references, for another process (see
        :func:`~langchain_mesh.config.portable_config`; a literal secret raises CredentialError)."""
        from .config import portable_config

        return portable_config(self.config)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # pickle (multiprocessing spawn, Ray, Dask) carries the config, never a client, lock or
        # resolved secret: the other side opens its own connections on first use
        return (type(self), (self.portable_config(),))


def _user_slots_of(config: MeshConfig) -> dict[str, dict[str, list[str]]]:
    """Connection name -> its ``{{user}}`` references (credential target -> fields), for the
    connections that have any."""
    from .credentials.per_user import user_slots

    out = {}
    for name, cfg in config.connections.items():
        slots = user_slots(cfg)
        if slots:
            out[name] = slots
    return out


async def _attempt(send: Any, path: str, body: bytes, stream: bool) -> tuple[Any, Optional[bytes]]:
    """One pass-through attempt: the answer's bytes, or a stream's body and first piece (read inside
    the attempt, so that a stream failing before it is retried)."""
    content = await send(path, body, stream)
    if not stream:
        return content, None
    try:
        return content, await content.read()
    except BaseException:
        content.close()
        raise


_NO_LAYERS: tuple[tuple[Any, ...], Any] = ((), None)  # Mesh._layers' answer for a mesh with no policies


def _limits(conn: "Connection", timeout: Optional[float], max_retries: Optional[int]) -> tuple[int, float, bool]:
    """(retries, deadline in seconds, whether that deadline is the connection's own timeout, which
    its transport already applies to the first attempt) for one call: a caller's override, else the
    connection's config."""
    cfg = conn.config
    n = cfg.max_retries if max_retries is None else max_retries
    if timeout is None or timeout >= cfg.timeout:
        return n, (cfg.timeout if timeout is None else timeout), True
    return n, timeout, False


def _footer_with_calls(footer: StreamFooter, calls: "ToolCallAssembler") -> StreamFooter:
    # The footer carries the reassembled tool calls, whether or not the connection filled them in.
    if footer.tool_calls:
        return footer
    assembled = calls.calls()
    return footer.model_copy(update={"tool_calls": assembled}) if assembled else footer


def _ensure_footer(events: Iterator[StreamEvent], llm_id: str) -> Iterator[StreamEvent]:
    """Every stream ends with exactly one footer; one that stops short is an error, not an answer."""
    from .connections.base import ToolCallAssembler

    text_seen = []
    calls = ToolCallAssembler()
    for ev in events:
        if isinstance(ev, StreamFooter):
            yield _footer_with_calls(ev, calls)
            return
        yield ev
        if ev.text:
            text_seen.append(ev.text)
        if ev.tool_call_deltas:
            calls.add(ev)
    raise StreamInterruptedError(f"the stream from {llm_id} ended before its final event",
                                 partial_text="".join(text_seen))


async def _aensure_footer(events: AsyncIterator[StreamEvent], llm_id: str) -> AsyncIterator[StreamEvent]:
    from .connections.base import ToolCallAssembler

    text_seen = []
    calls = ToolCallAssembler()
    async for ev in events:
        if isinstance(ev, StreamFooter):
            yield _footer_with_calls(ev, calls)
            return
        yield ev
        if ev.text:
            text_seen.append(ev.text)
        if ev.tool_call_deltas:
            calls.add(ev)
    raise StreamInterruptedError(f"the stream from {llm_id} ended before its final event",
                                 partial_text="".join(text_seen))


def _meta_on_footer(events: Iterator[StreamEvent], call: Any) -> Iterator[StreamEvent]:

    try:
        for ev in events:
            yield attach_meta(ev, call) if isinstance(ev, StreamFooter) else ev
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


async def _ameta_on_footer(events: AsyncIterator[StreamEvent], call: Any) -> AsyncIterator[StreamEvent]:

    try:
        async for ev in events:
            yield attach_meta(ev, call) if isinstance(ev, StreamFooter) else ev
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _image_leniency(conn: Any, request: ImageGenerationRequest) -> ImageGenerationRequest:
    """A connection configured ``image_settings: lenient`` makes its image requests lenient."""
    if not request.lenient and getattr(conn.config, "image_settings", "strict") == "lenient":
        return request.model_copy(update={"lenient": True})
    return request


def _typed(request: Any, kind: type, op: str) -> None:
    """A request of the wrong type (a list of texts, a dict) named plainly, not as the AttributeError the
    first attribute read would raise."""
    if not isinstance(request, kind):
        example = "texts=[...]" if kind is EmbeddingRequest else "prompts=[...]" if kind is ImageGenerationRequest \
            else "messages=[...]"
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise TypeError(f"{op}() takes {article} {kind.__name__}({example}), not {type(request).__name__}")


def _one_vector_each(request: EmbeddingRequest, resp: EmbeddingResponse, llm: "LLM") -> EmbeddingResponse:
    """``resp``, when it has one vector per input: a short answer would pair texts with wrong vectors."""
    inputs = len(request.texts) + len(request.images)
    if len(resp.embeddings) != inputs:
        raise ProviderError(f"{llm.id} answered {len(resp.embeddings)} embeddings for {inputs} inputs",
                            provider=getattr(llm.connection, "type", None))
    return resp

