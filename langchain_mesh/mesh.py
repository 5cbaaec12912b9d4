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
from .errors import ProviderError, StreamInterruptedError, UnknownKnowledgeBankError, UnknownLLMError
from .ids import format_llm_id, parse_llm_id
from .policies.retry import acall_with_retries, astream_with_retries, call_with_retries, stream_with_retries
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
    from .connections.base import Connection, ToolCallAssembler
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
        return items

    def get_llm(self, llm_id: str) -> "LLM":
        handle = self._handles.get(llm_id)
        if handle is not None:
            return handle
        from .queries import LLM

        ctype, cname, model = parse_llm_id(llm_id)
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
        if info is None:
            ids = [format_llm_id(ctype, cname, m) for m in models]
            raise UnknownLLMError(
                f"unknown LLM {llm_id!r}: connection {cname!r} offers no model {model!r}. "
                f"Its models: {', '.join(ids) or 'none'}", llm_id, ids)
        handle = LLM(self, llm_id, self.connection(cname), model, info)
        self._handles[llm_id] = handle
        return handle

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

    # Each call goes through the retry policy with the connection's own ``max_retries``; with
    # retries off (the scripted test connection) the policy is skipped entirely.

    def complete(self, llm: "LLM", request: CompletionRequest) -> CompletionResponse:
        conn = self._conn(llm)
        n = conn.config.max_retries
        if not n:
            return conn.complete(llm.model, request)
        return call_with_retries(lambda: conn.complete(llm.model, request), n)

    async def acomplete(self, llm: "LLM", request: CompletionRequest) -> CompletionResponse:
        conn = self._conn(llm)
        n = conn.config.max_retries
        if not n:
            return await conn.acomplete(llm.model, request)
        return await acall_with_retries(lambda: conn.acomplete(llm.model, request), n)

    def stream(self, llm: "LLM", request: CompletionRequest) -> Iterator[StreamEvent]:
        conn = self._conn(llm)
        n = conn.config.max_retries
        if not n:
            return _ensure_footer(conn.stream(llm.model, request), llm.id)
        return stream_with_retries(lambda: _ensure_footer(conn.stream(llm.model, request), llm.id), n)

    def astream(self, llm: "LLM", request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        conn = self._conn(llm)
        n = conn.config.max_retries
        if not n:
            return _aensure_footer(conn.astream(llm.model, request), llm.id)
        return astream_with_retries(lambda: _aensure_footer(conn.astream(llm.model, request), llm.id), n)

    def _check_images(self, llm: "LLM", request: EmbeddingRequest) -> None:
        """Images go only to a model that embeds them: anywhere else they would be dropped or misread."""
        if request.images and not (llm.capabilities.image_embedding and llm.connection.embeds_images):
            from .errors import CapabilityError

            able = [i.id for i in self.list_llms("TEXT_EMBEDDING_EXTRACTION") if i.capabilities.image_embedding]
            raise CapabilityError(f"{llm.id} does not embed images (only texts). Image embedding models: "
                                  f"{', '.join(able) or 'none in this mesh'} (Bedrock amazon.titan-embed-image-v1, "
                                  "Vertex multimodalembedding@001, Cohere embed-v4.0)")

    def embed(self, llm: "LLM", request: EmbeddingRequest) -> EmbeddingResponse:
        self._check_images(llm, request)
        conn = self._conn(llm)
        n = conn.config.max_retries
        if not n:
            return _one_vector_each(request, conn.embed(llm.model, request), llm)
        return _one_vector_each(request, call_with_retries(lambda: conn.embed(llm.model, request), n), llm)

    async def aembed(self, llm: "LLM", request: EmbeddingRequest) -> EmbeddingResponse:
        self._check_images(llm, request)
        conn = self._conn(llm)
        n = conn.config.max_retries
        if not n:
            return _one_vector_each(request, await conn.aembed(llm.model, request), llm)
        return _one_vector_each(request, await acall_with_retries(lambda: conn.aembed(llm.model, request), n), llm)

    def generate_images(self, llm: "LLM", request: ImageGenerationRequest) -> ImageGenerationResponse:
        conn = self._conn(llm)
        n = conn.config.max_retries
        request = _image_leniency(conn, request)
        return call_with_retries(lambda: conn.generate_images(llm.model, request), n)

    async def agenerate_images(self, llm: "LLM", request: ImageGenerationRequest) -> ImageGenerationResponse:
        conn = self._conn(llm)
        n = conn.config.max_retries
        request = _image_leniency(conn, request)
        return await acall_with_retries(lambda: conn.agenerate_images(llm.model, request), n)

    def close(self) -> None:
        with self._lock:
            if self._per_user is not None:
                self._per_user.close()
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()
            self._models.clear()
            self._handles.clear()

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mesh(connections={sorted(self.config.connections)})"


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


def _image_leniency(conn: Any, request: ImageGenerationRequest) -> ImageGenerationRequest:
    """A connection configured ``image_settings: lenient`` makes its image requests lenient."""
    if not request.lenient and getattr(conn.config, "image_settings", "strict") == "lenient":
        return request.model_copy(update={"lenient": True})
    return request


def _one_vector_each(request: EmbeddingRequest, resp: EmbeddingResponse, llm: "LLM") -> EmbeddingResponse:
    """``resp``, when it has one vector per input: a short answer would pair texts with wrong vectors."""
    inputs = len(request.texts) + len(request.images)
    if len(resp.embeddings) != inputs:
        raise ProviderError(f"{llm.id} answered {len(resp.embeddings)} embeddings for {inputs} inputs",
                            provider=getattr(llm.connection, "type", None))
    return resp
