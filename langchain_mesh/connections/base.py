"""The interface every connection implements.

A connection is a thin translator between :mod:`langchain_mesh.schema` and one provider. It knows
nothing of LangChain or HTTP serving. It must keep its module import light: provider SDKs, torch and
friends are imported inside methods, the first time they are needed.

Minimum to implement: ``list_models`` and whichever of ``complete``/``stream``/``embed``/
``generate_images`` the provider offers. ``complete`` defaults to draining ``stream`` (and vice
versa), and the async variants default to running the sync path in a worker thread, so a plugin can
start small; built-in connections override the async ones with native async clients.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, Iterator, Optional

from ..config import ConnectionConfig, ModelConfig
from ..errors import CapabilityError, StreamInterruptedError
from ..schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ModelCapabilities,
    ModelInfo,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    ToolCall,
    FunctionCall,
    Usage,
)

__all__ = ["Connection", "Passthrough", "collect_stream", "ToolCallAssembler", "count_with_encoding"]


@dataclass(frozen=True)
class Passthrough:
    """A connection's offer to carry requests byte for byte (see :meth:`Connection.passthrough`).

    A gateway whose clients speak the same wire format (``wire``) validates a request as it would
    for translation, edits a few keys of its body and sends the bytes through :attr:`send`; the
    answer comes back as bytes. What the gateway needs to know of the upstream is here, so that it
    never imports a provider module. Calls go through :meth:`Mesh.aforward` (the retry policy).
    """

    wire: str                       #: the request/answer format: ``"openai"`` (chat completions, embeddings)
    provider: str                   #: for error messages
    wire_model: str                 #: what the body's ``model`` becomes
    token_limit_key: str            #: the upstream's key for the output-token limit
    unsupported: frozenset[str]     #: seed settings the upstream has no parameter for
    drop_unsupported: bool          #: drop those silently (the connection's config says so) instead of failing
    embedding_batch: int            #: the most inputs one embeddings request may carry
    embedding_base64: bool          #: the upstream answers ``encoding_format=base64`` itself
    send: Callable[[str, bytes, bool], Awaitable[Any]]
    """``await send(path, body, stream)``: the answer's bytes, or (stream) a body with ``await read()``
    (``b""`` at the end) and ``close()``; errors raised as the mesh's typed errors."""
    prepare: Callable[[str], Awaitable[None]]
    """``await prepare(path)``: build what the first request to ``path`` would (clients, URL, headers)."""
    parse_usage: Callable[[dict[str, Any]], Usage]
    """The mesh :class:`Usage` of an answer's ``usage`` object."""


class Connection:
    #: the connection type, i.e. the first part of LLM ids (``openai``, ``huggingfacelocal``)
    type_name: ClassVar[str] = ""
    #: the pydantic model validating this type's config section
    config_model: ClassVar[type[ConnectionConfig]] = ConnectionConfig
    #: ``embed`` translates ``EmbeddingRequest.images`` for the models whose capabilities say
    #: ``image_embedding``; without it the mesh refuses images whatever a config declares
    embeds_images: ClassVar[bool] = False

    def __init__(self, name: str, config: ConnectionConfig):
        self.name = name
        self.config = config
        self._lock = threading.Lock()
        self._listed_caps: Optional[dict[str, ModelCapabilities]] = None

    # ---- what the connection offers ----------------------------------------------------------------

    def default_models(self) -> list[ModelInfo]:
        """Models offered when the config lists none. Override for connections with a default set."""
        return []

    def list_models(self) -> list[ModelInfo]:
        if self.config.models is None:
            return self.default_models()
        defaults = {m.id: m for m in self.default_models()}
        out = []
        for m in self.config.models:
            known = defaults.get(m.id) or self.known_model(m)
            # a configured model inherits what the connection knows of it, unless the config says otherwise
            purposes = known.purposes if known is not None and "purposes" not in m.model_fields_set else m.purposes
            caps = m.capabilities or (known.capabilities if known else self.capabilities_for(m.id))
            out.append(ModelInfo(id=m.id, purposes=purposes,
                                 description=m.description or (known.description if known else ""),
                                 capabilities=caps))
        return out

    def known_model(self, model: ModelConfig) -> Optional[ModelInfo]:
        """What the connection knows of a configured model outside its defaults (a dated snapshot,
        the model behind an Azure deployment). Override per provider."""
        return None

    def underlying_model(self, model: str) -> str:
        """The provider's name of the model behind ``model`` (an Azure deployment's model), for cost."""
        return model

    def capabilities_for(self, model: str) -> ModelCapabilities:
        """Capabilities of a configured model that declares none. Override per provider."""
        return ModelCapabilities()

    def capabilities_of(self, model: str) -> ModelCapabilities:
        """What ``model`` can do as the connection lists it (config, then catalogue), for checks that
        refuse a request before it is sent. Computed once per connection."""
        caps = self._listed_caps
        if caps is None:
            caps = self._listed_caps = {m.id: m.capabilities for m in self.list_models()}
        return caps.get(model) or self.capabilities_for(model)

    def passthrough(self, model: str) -> Optional[Passthrough]:
        """Byte-level pass-through for ``model``, or None (the default): requests are then translated.
        Optional; the OpenAI-wire family implements it."""
        return None

    # ---- completion ---------------------------------------------------------------------------------

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        if type(self).stream is Connection.stream:
            raise CapabilityError(f"connection type {self.type_name!r} does not offer completions")
        return collect_stream(self.stream(model, request))

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        if type(self).complete is Connection.complete:
            raise CapabilityError(f"connection type {self.type_name!r} does not offer completions")
        # A provider without streaming still honours the stream contract: chunks, then one footer.
        resp = self.complete(model, request)
        if resp.text:
            yield StreamChunk(text=resp.text)
        yield StreamFooter(finish_reason=resp.finish_reason, usage=resp.usage,
                           tool_calls=resp.tool_calls, model=resp.model)

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        return await asyncio.to_thread(self.complete, model, request)

    async def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        # Pull the sync iterator from a worker thread one event at a time so the loop stays free.
        # Compute-bound connections (local models) get the same treatment for free.
        it = self.stream(model, request)
        sentinel = object()
        try:
            while True:
                ev = await asyncio.to_thread(next, it, sentinel)
                if ev is sentinel:
                    return
                yield ev  # type: ignore[misc]
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # a consumer that stops early ends the generation too
                close()

    # ---- embeddings and images -----------------------------------------------------------------------

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        raise CapabilityError(f"connection type {self.type_name!r} does not offer embeddings")

    async def aembed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        return await asyncio.to_thread(self.embed, model, request)

    def generate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        """Text-to-image or image-to-image (``request.mode``); translate through
        :class:`~.image_settings.ImageTranslation` so that what the model cannot take is refused."""
        raise CapabilityError(f"connection type {self.type_name!r} does not generate images")

    async def agenerate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        return await asyncio.to_thread(self.generate_images, model, request)

    # ---- tokens (LangChain's get_num_tokens, trim_messages, mesh serve's token-id inputs) ------------

    def tokenizer(self, model: str) -> Optional[Any]:
        """The model's own tokenizer (``encode(text) -> list[int]``, ``decode(ids) -> str``) when this
        process has it (local models, the OpenAI family's encodings), else None."""
        return None

    def count_tokens(self, model: str, request: CompletionRequest) -> int:
        """Input tokens ``request`` would cost. Connections override this with the model's own
        count (a provider count-tokens endpoint, the local tokenizer and chat template); the default
        is the documented estimate of :func:`count_with_encoding` (``o200k_base``), never 0."""
        from ..tokens import ESTIMATE_ENCODING, openai_encoding

        return count_with_encoding(request, self.tokenizer(model) or openai_encoding(ESTIMATE_ENCODING))

    async def acount_tokens(self, model: str, request: CompletionRequest) -> int:
        return await asyncio.to_thread(self.count_tokens, model, request)

    def close(self) -> None:
        """Release clients and pools. Called by :meth:`Mesh.close`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ToolCallAssembler:
    """Reassembles streamed tool-call fragments by index (the bug gateways keep shipping)."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, chunk: StreamChunk) -> None:
        for d in chunk.tool_call_deltas:
            cur = self._calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            if d.id:
                cur["id"] = d.id
            if d.name:
                cur["name"] = (cur["name"] or "") + d.name
            cur["arguments"] += d.arguments or ""

    def calls(self) -> list[ToolCall]:
        out = []
        for idx in sorted(self._calls):
            c = self._calls[idx]
            out.append(ToolCall(id=c["id"] or f"call_{idx}",
                                function=FunctionCall(name=c["name"] or "", arguments=c["arguments"] or "{}")))
        return out


def collect_stream(events: Iterator[StreamEvent]) -> CompletionResponse:
    """Drain a stream into one response; a stream without its footer is an interrupted stream."""
    text: list[str] = []
    tools = ToolCallAssembler()
    log_probs: Optional[list[Any]] = None
    for ev in events:
        if isinstance(ev, StreamChunk):
            if ev.text:
                text.append(ev.text)
            if ev.tool_call_deltas:
                tools.add(ev)
            if ev.log_probs:
                log_probs = (log_probs or []) + list(ev.log_probs)
        else:
            return CompletionResponse(
                text="".join(text),
                tool_calls=ev.tool_calls or tools.calls(),
                finish_reason=ev.finish_reason,
                usage=ev.usage,
                model=ev.model,
                log_probs=log_probs,
            )
    raise StreamInterruptedError("the stream ended without its final event", partial_text="".join(text))


def count_with_encoding(request: CompletionRequest, encoding: Any) -> int:
    """Chat tokens counted the way OpenAI's cookbook counts them for its chat models: each message
    costs 3 tokens of framing plus its role, content, name and tool calls; the reply is primed with
    3 more; tool definitions are counted as their JSON. Images are not counted (their cost depends
    on the provider's resizing)."""
    import json

    enc = encoding.encode_ordinary if hasattr(encoding, "encode_ordinary") else encoding.encode
    total = 3
    for m in request.messages:
        total += 3 + len(enc(m.role)) + len(enc(m.text))
        if m.name:
            total += 1 + len(enc(m.name))
        for tc in m.tool_calls or ():
            total += 3 + len(enc(tc.function.name)) + len(enc(tc.function.arguments or ""))
    tools = request.settings.tools if request.settings is not None else None
    if tools:
        total += len(enc(json.dumps([t.model_dump(exclude_none=True) for t in tools])))
    return total
