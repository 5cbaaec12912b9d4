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
from .errors import StreamInterruptedError, UnknownKnowledgeBankError, UnknownLLMError
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

    def __init__(self, config: Union[MeshConfig, Mapping[str, Any], str, os.PathLike[str], None] = None):
        self.config: MeshConfig = load_config(config)
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

        return [KnowledgeBankListItem(id=k, name=k, backend=c.backend, description=c.description)
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
        conn, n = llm.connection, llm.connection.config.max_retries
        if not n:
            return conn.complete(llm.model, request)
        return call_with_retries(lambda: conn.complete(llm.model, request), n)

    async def acomplete(self, llm: "LLM", request: CompletionRequest) -> CompletionResponse:
        conn, n = llm.connection, llm.connection.config.max_retries
        if not n:
            return await conn.acomplete(llm.model, request)
        return await acall_with_retries(lambda: conn.acomplete(llm.model, request), n)

    def stream(self, llm: "LLM", request: CompletionRequest) -> Iterator[StreamEvent]:
        conn, n = llm.connection, llm.connection.config.max_retries
        if not n:
            return _ensure_footer(conn.stream(llm.model, request), llm.id)
        return stream_with_retries(lambda: _ensure_footer(conn.stream(llm.model, request), llm.id), n)

    def astream(self, llm: "LLM", request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        conn, n = llm.connection, llm.connection.config.max_retries
        if not n:
            return _aensure_footer(conn.astream(llm.model, request), llm.id)
        return astream_with_retries(lambda: _aensure_footer(conn.astream(llm.model, request), llm.id), n)

    def embed(self, llm: "LLM", request: EmbeddingRequest) -> EmbeddingResponse:
        conn, n = llm.connection, llm.connection.config.max_retries
        if not n:
            return conn.embed(llm.model, request)
        return call_with_retries(lambda: conn.embed(llm.model, request), n)

    async def aembed(self, llm: "LLM", request: EmbeddingRequest) -> EmbeddingResponse:
        conn, n = llm.connection, llm.connection.config.max_retries
        if not n:
            return await conn.aembed(llm.model, request)
        return await acall_with_retries(lambda: conn.aembed(llm.model, request), n)

    def generate_images(self, llm: "LLM", request: ImageGenerationRequest) -> ImageGenerationResponse:
        conn, n = llm.connection, llm.connection.config.max_retries
        return call_with_retries(lambda: conn.generate_images(llm.model, request), n)

    async def agenerate_images(self, llm: "LLM", request: ImageGenerationRequest) -> ImageGenerationResponse:
        conn, n = llm.connection, llm.connection.config.max_retries
        return await acall_with_retries(lambda: conn.agenerate_images(llm.model, request), n)

    def close(self) -> None:
        with self._lock:
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
