"""The pass-through path: OpenAI-wire requests forwarded to an OpenAI-wire upstream without translation.

When an LLM's connection offers a pass-through in the OpenAI wire format (``openai``,
``openai_compatible``, and any openai-family connection whose dialect needs at most a rename of the
token-limit key; the connection decides, the server imports no provider module), building mesh objects and the provider's JSON again would only cost
time (DESIGN.md, "Performance notes"). The request is still validated exactly as on the translated
path (same 400s, same fields named; a chat request shaped like one validated before skips the
work, see :mod:`.validated`); then its parsed dict gets a few edits (``model``, the token-limit
key, ``stream_options.include_usage`` so that usage can be recorded) and is sent through the
connection's :class:`~langchain_mesh.connections.base.Passthrough` (for the openai family, its pooled
HTTP/1.1 client) by :meth:`Mesh.aforward`, under the mesh's retry policy. A 200 answer goes back as the
upstream's bytes, with only its ``model`` field set to the mesh LLM id (a byte substitution; no
re-encoding), streams piece by piece.

Which LLMs take this path is decided once per LLM id (:func:`forward_plan`), not per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import orjson
from pydantic import ConfigDict

from ..errors import ProviderError, SettingsError
from ..schema import Usage
from .models import ChatCompletionRequest, EmbeddingsRequest
from .translate import _SETTING_OF

__all__ = ["Forward", "forward_plan", "ForwardChatRequest", "ForwardEmbeddingsRequest", "SSEPass", "swap_model"]


class ForwardChatRequest(ChatCompletionRequest):
    """The chat request on the pass-through path: every field checked as on the translated path, and
    top-level fields the mesh has no name for (a server's own extensions: vLLM's ``min_p``,
    ``guided_json``...) forwarded instead of refused, since nothing has to translate them."""

    model_config = ConfigDict(extra="allow")


class ForwardEmbeddingsRequest(EmbeddingsRequest):
    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class Forward:
    """How to forward one LLM's requests: built once per LLM id from its connection's
    :class:`~langchain_mesh.connections.base.Passthrough`; sent through :meth:`Mesh.aforward`."""

    mesh: Any
    llm: Any
    passthrough: Any                # the connection's Passthrough (Mesh.passthrough)
    wire_model: str                 # what the body's ``model`` becomes
    rename: Optional[tuple[str, str]]  # (client key, upstream key) of the token limit, when they differ
    unsupported: tuple[tuple[str, tuple[str, ...]], ...]  # seed setting -> the request keys that set it
    drop_unsupported: bool
    embedding_batch: int
    embedding_base64: bool          # the upstream is trusted to answer encoding_format=base64 itself
    streams: bool = True            # streams pass through too (not when a policy reads a stream: Mesh.forward_streams)

    @property
    def provider(self) -> str:
        return self.passthrough.provider

    @property
    def connection(self) -> Any:
        """The LLM's connection (for inspection; the plan only uses its :attr:`passthrough`)."""
        return self.llm.connection

    def chat_body(self, data: dict[str, Any], param_of: Any, stream: bool,
                  annotated: bool = False) -> tuple[bytes, bool]:
        """The upstream body (bytes) for a validated client request ``data`` (edited in place), and
        whether the usage chunk the gateway asked for must be kept from the client."""
        data["model"] = self.wire_model
        if annotated:  # echoed answer annotations: not a request field (the translated path drops them too)
            for m in data["messages"]:
                if m.get("role") == "assistant":
                    m.pop("annotations", None)
        if self.rename is not None:
            src, dst = self.rename
            if src in data:
                value = data.pop(src)
                if value is not None and data.get(dst) is None:
                    data[dst] = value
        for setting, keys in self.unsupported:
            present = [k for k in keys if data.get(k) is not None]
            if present:
                if not self.drop_unsupported:
                    raise SettingsError(
                        f"{self.provider} has no equivalent of the setting(s) {setting}; remove them, "
                        "or set drop_unsupported_settings: true on the connection to ignore them", [setting])
                for k in present:
                    del data[k]
        strip_usage = False
        if stream:
            opts = data.get("stream_options")
            if not (opts and opts.get("include_usage")):
                data["stream_options"] = {**(opts or {}), "include_usage": True}
                strip_usage = True
        return orjson.dumps(data), strip_usage

    async def prepare(self, path: str) -> None:
        """Build what the first request to ``path`` would (the SDK client, the URL and headers)."""
        await self.passthrough.prepare(path)

    async def send(self, path: str, body: bytes, stream: bool) -> Any:
        """The upstream's answer (bytes, or a stream's body with its first piece read), under the mesh's
        one retry policy (:meth:`Mesh.aforward`): the connection's ``max_retries`` within its
        ``timeout``, which bounds the whole call. A stream answered by anything but server-sent events
        (e.g. a JSON body) is an error, not an empty stream."""
        content, first = await self.mesh.aforward(self.llm, path, body, stream)
        if stream and not _looks_sse(first):
            content.close()
            end = getattr(content, "end", None)
            if end is not None:  # the policies waiting for this stream's end (limits, ledger)
                end(None, False)
            raise ProviderError(f"{self.provider} answered a streaming request without a server-sent event stream",
                                provider=self.provider, provider_message=first[:200].decode("utf-8", "replace"))
        return content, first

    def usage_of(self, raw: Optional[dict[str, Any]]) -> Optional[Usage]:
        return self.passthrough.parse_usage(raw) if raw else None


_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")


def _looks_sse(first: bytes) -> bool:
    head = first.lstrip(b"\xef\xbb\xbf \t\r\n")[:6]
    return bool(head) and any(head.startswith(p) or p.startswith(head) for p in _SSE_STARTS)


def forward_plan(llm: Any) -> Optional[Forward]:
    """The pass-through plan of an LLM, or None when its requests must be translated."""
    p = llm.mesh.passthrough(llm)
    if p is None or p.wire != "openai":
        return None
    # the client's token-limit key the upstream does not take -> the one it does (the newer name wins,
    # as on the translated path)
    rename = ("max_tokens", "max_completion_tokens") if p.token_limit_key == "max_completion_tokens" \
        else ("max_completion_tokens", "max_tokens")
    unsupported = tuple((s, tuple(k for k, v in _SETTING_OF.items() if v == s)) for s in sorted(p.unsupported))
    return Forward(mesh=llm.mesh, llm=llm, passthrough=p, wire_model=p.wire_model, rename=rename,
                   unsupported=unsupported, drop_unsupported=p.drop_unsupported,
                   embedding_batch=p.embedding_batch, embedding_base64=p.embedding_base64,
                   streams=llm.mesh.forward_streams(llm))


# --------------------------------------------------------------------------------------------------
# answers


def _patterns(upstream_model: Any, llm_id: str) -> tuple[tuple[bytes, ...], bytes]:
    if not isinstance(upstream_model, str):
        return (), b""
    return _str_patterns(upstream_model, llm_id)


@lru_cache(maxsize=256)  # an upstream answers with the same few model names: built once each (~1.5 µs)
def _str_patterns(upstream_model: str, llm_id: str) -> tuple[tuple[bytes, ...], bytes]:
    v = orjson.dumps(upstream_model)
    # an unescaped `"model":"..."` only occurs as JSON structure: inside a string its quotes are escaped
    return (b'"model":' + v, b'"model": ' + v), b'"model":' + orjson.dumps(llm_id)


def swap_model(raw: bytes, data: dict[str, Any], llm_id: str) -> bytes:
    """The answer with its ``model`` set to the mesh LLM id, as a byte substitution when possible."""
    pats, new = _patterns(data.get("model"), llm_id)
    for p in pats:
        # find, not `in` (here and below): bytes' `in` first tries its operand as an int, raising and
        # clearing a TypeError each time (~3k instructions)
        if raw.find(p) >= 0:
            return raw.replace(p, new, 1)
    data["model"] = llm_id
    return orjson.dumps(data)


class SSEPass:
    """Passes an upstream's SSE bytes through: whole events only (a piece's incomplete tail waits for
    the next), ``model`` substituted, the usage chunk read (and dropped when only the gateway asked
    for it). No event is decoded but the first (for the upstream's model name) and the usage one."""

    __slots__ = ("llm_id", "strip_usage", "tail", "usage", "pats", "new", "chunks")

    def __init__(self, llm_id: str, strip_usage: bool):
        self.llm_id = llm_id
        self.strip_usage = strip_usage
        self.tail = b""
        self.usage: Optional[dict[str, Any]] = None
        self.pats: Optional[tuple[bytes, ...]] = None
        self.new = b""
        self.chunks = 0  # data events passed on (about one token each): a cut stream's usage estimate

    def feed(self, piece: bytes) -> bytes:
        data = self.tail + piece if self.tail else piece
        if data.find(b"\r") >= 0:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.tail = data
            return b""
        self.tail = data[cut + 2:]
        return self._events(data[:cut + 2])

    def flush(self) -> bytes:
        rest, self.tail = self.tail, b""
        return self._events(rest) if rest else b""

    def _events(self, out: bytes) -> bytes:
        self.chunks += out.count(b"data:")
        if self.pats is None:
            first = _json_of(out.split(b"\n\n", 1)[0])
            if first is not None:
                self.pats, self.new = _patterns(first.get("model"), self.llm_id)
        if out.find(b'"usage":{') >= 0 or out.find(b'"usage": {') >= 0:
            out = self._usage(out)
        for p in self.pats or ():
            out = out.replace(p, self.new)
        return out

    def _usage(self, out: bytes) -> bytes:
        kept = []
        for ev in out.split(b"\n\n"):
            if ev.find(b'"usage":{') >= 0 or ev.find(b'"usage": {') >= 0:
                d = _json_of(ev)
                if d is not None and isinstance(d.get("usage"), dict):
                    self.usage = d["usage"]
                    if self.strip_usage and not d.get("choices"):
                        continue  # the usage-only chunk the client did not ask for
            kept.append(ev)
        return b"\n\n".join(kept)


def _json_of(event: bytes) -> Optional[dict[str, Any]]:
    """The JSON object of one SSE event's ``data:`` line, or None."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload.startswith(b"{"):
                try:
                    d = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    return None
                return d if isinstance(d, dict) else None
    return None
