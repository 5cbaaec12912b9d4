"""A scripted in-process connection for testing apps built on the mesh, with no model and no network.

Like LangChain's fake chat models, but at the connection layer, so everything above it (builders,
policies, LangChain adapters, the HTTP server) runs for real::

    mesh = Mesh.from_config({"connections": {"fake": {"type": "scripted", "models": [
        {"id": "chat"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}})
    conn = mesh.connection("fake")
    conn.script(text="Paris")                      # the next completion answers "Paris"
    conn.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
    conn.script(error=RateLimitError("slow down", status=429))
    conn.requests                                  # every CompletionRequest received

With nothing scripted, a completion echoes the last user message. Embeddings are deterministic
hashed bag-of-words vectors (same text, same vector; shared words, closer vectors).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Union

from pydantic import Field

from ..config import ConnectionConfig
from ..connections.base import Connection
from ..errors import StreamInterruptedError
from ..schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCall,
    ModelCapabilities,
    ModelInfo,
    Purpose,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .fakes import count_tokens, embed_text, stream_pieces

__all__ = ["ScriptedConnection", "ScriptedConnectionConfig", "Reply"]


class ScriptedConnectionConfig(ConnectionConfig):
    type: str = "scripted"
    embedding_dimensions: int = 64
    # one script answers one call: the mesh's retry policy would otherwise consume the next scripts
    max_retries: int = Field(default=0, ge=0)


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: Optional[Exception] = None
    cut_after: Optional[int] = None  # stream: stop after this many chunks, without a footer
    finish_reason: Optional[str] = None


class ScriptedConnection(Connection):
    type_name = "scripted"
    config_model = ScriptedConnectionConfig

    _CAPS = ModelCapabilities(tools=True, tool_choice=True, json_output=True, structured_output=True,
                              image_input=True)

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._replies: deque[Reply] = deque()
        self._script_lock = threading.Lock()
        self.requests: list[CompletionRequest] = []
        self.embedding_requests: list[EmbeddingRequest] = []

    def default_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id="chat", purposes=[Purpose.GENERIC_COMPLETION], capabilities=self._CAPS,
                      description="scripted chat model"),
            ModelInfo(id="embed", purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION], description="hashed embeddings"),
        ]

    def capabilities_for(self, model: str) -> ModelCapabilities:
        return self._CAPS

    # ---- scripting -------------------------------------------------------------------------------------

    def script(self, text: str = "", tool_calls: Sequence[Union[ToolCall, tuple[str, dict[str, Any]]]] = (),
               error: Optional[Exception] = None, cut_after: Optional[int] = None,
               finish_reason: Optional[str] = None) -> "ScriptedConnection":
        calls = []
        for i, tc in enumerate(tool_calls):
            if isinstance(tc, ToolCall):
                calls.append(tc)
            else:
                name, args = tc
                calls.append(ToolCall(id=f"call_{len(self.requests)}_{i}",
                                      function=FunctionCall(name=name, arguments=json.dumps(args))))
        with self._script_lock:
            self._replies.append(Reply(text, calls, error, cut_after, finish_reason))
        return self

    def _next(self, request: CompletionRequest) -> Reply:
        with self._script_lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        return Reply(text=last_user)

    def count_tokens(self, model: str, request: CompletionRequest) -> int:
        """What a completion of ``request`` reports as its input tokens (the fake word tokenizer)."""
        return count_tokens(" ".join(m.text for m in request.messages))

    def _usage(self, request: CompletionRequest, reply: Reply) -> Usage:
        prompt = " ".join(m.text for m in request.messages)
        out = reply.text + "".join(tc.function.arguments for tc in reply.tool_calls)
        return Usage(input_tokens=count_tokens(prompt), output_tokens=count_tokens(out))

    def _apply_stop(self, request: CompletionRequest, text: str) -> tuple[str, bool]:
        for s in request.settings.stopSequences or []:
            i = text.find(s)
            if i >= 0:
                text = text[:i]
        mx = request.settings.maxOutputTokens
        if mx is not None:
            words = stream_pieces(text)
            if len(words) > mx:
                return "".join(words[:mx]), True
        return text, False

    # ---- the connection interface --------------------------------------------------------------------

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        reply = self._next(request)
        if reply.error is not None:
            raise reply.error
        text, truncated = self._apply_stop(request, reply.text)
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "length" if truncated else "stop")
        return CompletionResponse(text=text, tool_calls=reply.tool_calls, finish_reason=finish,  # type: ignore[arg-type]
                                  usage=self._usage(request, reply), model=model)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        reply = self._next(request)
        if reply.error is not None:
            raise reply.error
        text, truncated = self._apply_stop(request, reply.text)
        sent: list[str] = []
        for w in stream_pieces(text):
            if reply.cut_after is not None and len(sent) >= reply.cut_after:
                raise StreamInterruptedError("scripted stream cut", partial_text="".join(sent))
            yield StreamChunk(text=w)
            sent.append(w)
        for i, tc in enumerate(reply.tool_calls):
            args = tc.function.arguments
            half = len(args) // 2
            # partial calls, as OpenAI streams them: id and name first, the arguments in pieces
            yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=i, id=tc.id, name=tc.function.name, arguments=args[:half])])
            yield StreamChunk(tool_call_deltas=[ToolCallDelta(index=i, arguments=args[half:])])
        if reply.cut_after is not None:
            return  # a cut stream: no footer
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "length" if truncated else "stop")
        yield StreamFooter(finish_reason=finish, usage=self._usage(request, reply), model=model,  # type: ignore[arg-type]
                           tool_calls=reply.tool_calls)

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        self.embedding_requests.append(request)
        dims = request.dimensions or self.config.embedding_dimensions  # type: ignore[attr-defined]
        out = [embed_text(text, dims) for text in request.texts]
        return EmbeddingResponse(embeddings=out, usage=Usage(input_tokens=sum(count_tokens(t) for t in request.texts)),
                                 model=model)
