"""LangChain messages <-> mesh :mod:`~langchain_mesh.schema` messages, responses and stream events.

The only module of the LangChain face that knows both type systems. Every function is a plain,
allocation-light translation (no validation round trips on the hot path: text-only messages, the
common case, become one :class:`~langchain_mesh.schema.Message` each).

Content blocks understood in LangChain messages:

* text: ``"..."``, ``{"type": "text", "text": ...}`` (extra keys such as ``cache_control`` ignored);
* inline images: the OpenAI ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``,
  the LangChain v1 ``{"type": "image", "base64": ..., "mime_type": ...}``, the v0
  ``{"type": "image", "source_type": "base64", "data": ..., "mime_type": ...}`` and the Anthropic
  ``{"type": "image", "source": {"type": "base64", "media_type": ..., "data": ...}}``;
* image URLs: ``image_url`` with an http(s) URL, ``{"type": "image", "url": ...}`` and the v0 /
  Anthropic URL spellings.

Assistant bookkeeping blocks (``tool_use``, ``tool_call``, ``reasoning``, ``thinking``...) are
dropped from content because the calls travel in ``AIMessage.tool_calls``. Any other block type
(files, audio, video) raises :class:`ValueError` naming it, instead of being silently lost.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterable, Optional, Sequence

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from ..schema import (
    CompletionResponse,
    FunctionCall,
    ImagePart,
    ImageURLPart,
    Message,
    StreamChunk,
    StreamFooter,
    TextPart,
    TokenLogProb,
    ToolCall,
    Usage,
)

__all__ = [
    "to_mesh_messages",
    "to_mesh_message",
    "content_to_parts",
    "from_mesh_message",
    "from_mesh_messages",
    "usage_to_metadata",
    "tool_calls_to_langchain",
    "response_to_ai_message",
    "StreamConverter",
]

# langchain-core >= 1.0 marks the final chunk of a stream; older versions have no such field
_LAST: dict[str, Any] = {"chunk_position": "last"} if "chunk_position" in AIMessageChunk.model_fields else {}

_ROLE_OF_TYPE = {"human": "user", "system": "system", "ai": "assistant", "tool": "tool"}
_CHAT_ROLES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "ai": "assistant", "model": "assistant",
    "system": "system", "developer": "system",
    "tool": "tool",
}
# Blocks an assistant message carries for bookkeeping; the information lives elsewhere
# (tool_calls) or is not something to send back to a model (reasoning traces, server-side tools).
_ASSISTANT_SKIPPED = frozenset({
    "tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call", "function_call",
    "reasoning", "thinking", "redacted_thinking", "server_tool_call", "server_tool_call_chunk",
    "server_tool_result", "server_tool_use", "web_search_tool_result", "non_standard",
})


# --------------------------------------------------------------------------------------------------
# LangChain -> mesh


def _image_from_url(url: str, detail: Optional[str] = None) -> Any:
    if url.startswith("data:"):
        return ImagePart.from_data_url(url)
    if detail not in (None, "auto", "low", "high"):
        detail = None
    return ImageURLPart.model_construct(type="image_url", url=url, detail=detail)


def _image_from_base64(data: str, mime_type: Optional[str]) -> ImagePart:
    import base64

    raw = base64.b64decode(data)
    return ImagePart.from_bytes(raw, mime_type or None)


def _block_to_part(block: Any, role: str) -> Any:
    """One LangChain content block -> a mesh content part, or None when it is to be dropped."""
    if isinstance(block, str):
        return TextPart.model_construct(type="text", text=block)
    if not isinstance(block, dict):
        raise ValueError(f"unsupported content block of type {type(block).__name__} in a {role} message")
    btype = block.get("type")
    if btype == "text" or (btype is None and "text" in block):
        return TextPart.model_construct(type="text", text=block.get("text") or "")
    if btype == "image_url":
        iu = block.get("image_url")
        if isinstance(iu, str):
            return _image_from_url(iu)
        if isinstance(iu, dict) and isinstance(iu.get("url"), str):
            return _image_from_url(iu["url"], iu.get("detail"))
        raise ValueError("an image_url block needs image_url.url")
    if btype == "image":
        # LangChain v1 standard block
        if block.get("base64"):
            return _image_from_base64(block["base64"], block.get("mime_type"))
        # v0 standard data block
        source_type = block.get("source_type")
        if source_type == "base64" and block.get("data"):
            return _image_from_base64(block["data"], block.get("mime_type"))
        if block.get("url") and source_type in (None, "url"):
            return _image_from_url(block["url"], block.get("detail"))
        # Anthropic spelling
        src = block.get("source")
        if isinstance(src, dict):
            if src.get("type") == "base64" and src.get("data"):
                return _image_from_base64(src["data"], src.get("media_type"))
            if src.get("type") == "url" and src.get("url"):
                return _image_from_url(src["url"])
        if block.get("file_id") or source_type == "id":
            raise ValueError("image blocks that reference a provider file id are not supported; "
                             "pass the image inline (base64) or by URL")
        raise ValueError("an image block needs 'base64' (with 'mime_type') or 'url'")
    if role == "assistant" and btype in _ASSISTANT_SKIPPED:
        return None
    if btype in ("reasoning", "thinking", "redacted_thinking"):
        return None
    raise ValueError(
        f"content blocks of type {btype!r} are not supported by the mesh message format "
        "(supported: text, image as base64 or URL)")


def content_to_parts(content: Any, role: str = "user") -> Any:
    """LangChain message content -> a string, a list of mesh parts, or None when empty."""
    if isinstance(content, str):
        return content
    if not content:
        return None
    parts = []
    for block in content:
        part = _block_to_part(block, role)
        if part is not None:
            parts.append(part)
    if not parts:
        return None
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    if all(isinstance(p, TextPart) for p in parts):
        # several text blocks are one text to every provider; keep them as one string
        return "".join(p.text for p in parts)
    return parts


def _args_text(args: Any) -> str:
    if isinstance(args, str):
        return args or "{}"
    return json.dumps(args if args is not None else {}, ensure_ascii=False)


def _mesh_tool_calls(msg: AIMessage) -> Optional[list[ToolCall]]:
    calls: list[ToolCall] = []
    for i, tc in enumerate(msg.tool_calls):
        calls.append(ToolCall.model_construct(
            id=tc.get("id") or f"call_{i}", type="function",
            function=FunctionCall.model_construct(name=tc["name"], arguments=_args_text(tc.get("args")))))
    # Calls the model made with unparsable arguments still happened; send them back verbatim so the
    # tool message answering them has something to refer to.
    for j, itc in enumerate(msg.invalid_tool_calls):
        if itc.get("name"):
            calls.append(ToolCall.model_construct(
                id=itc.get("id") or f"call_invalid_{j}", type="function",
                function=FunctionCall.model_construct(name=itc["name"], arguments=itc.get("args") or "{}")))
    return calls or None


def to_mesh_message(msg: BaseMessage) -> Message:
    """One LangChain message -> one mesh :class:`~langchain_mesh.schema.Message`."""
    if isinstance(msg, ChatMessage):
        role = _CHAT_ROLES.get(msg.role.lower())
        if role is None:
            raise ValueError(f"ChatMessage role {msg.role!r} is not one of {sorted(_CHAT_ROLES)}")
    elif isinstance(msg, FunctionMessage):
        raise ValueError("FunctionMessage is the legacy OpenAI function-calling format; "
                         "answer tool calls with ToolMessage(content, tool_call_id=...)")
    else:
        role = _ROLE_OF_TYPE.get(msg.type)
        if role is None:
            raise ValueError(f"cannot send a message of type {msg.type!r} ({type(msg).__name__}) to a model")
    name = msg.name or None
    if role == "assistant" and isinstance(msg, AIMessage):
        calls = _mesh_tool_calls(msg)
        content = content_to_parts(msg.content, "assistant")
        if calls and not content:
            content = None  # a pure tool-call turn: no text, as providers expect
        return Message.model_construct(role="assistant", content=content, tool_calls=calls,
                                       tool_call_id=None, name=name)
    if role == "tool":
        tcid = getattr(msg, "tool_call_id", None) or (msg.additional_kwargs or {}).get("tool_call_id")
        if not tcid:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        content = content_to_parts(msg.content, "tool")
        if content is None:
            content = ""
        return Message.model_construct(role="tool", content=content, tool_calls=None,
                                       tool_call_id=tcid, name=name)
    return Message.model_construct(role=role, content=content_to_parts(msg.content, role),
                                   tool_calls=None, tool_call_id=None, name=name)


def to_mesh_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    return [to_mesh_message(m) for m in messages]


# --------------------------------------------------------------------------------------------------
# mesh -> LangChain


def _parts_to_content(content: Any) -> Any:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    blocks: list[Any] = []
    for p in content:
        if isinstance(p, TextPart):
            blocks.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            blocks.append({"type": "image", "base64": p.base64, "mime_type": p.mime_type})
        elif isinstance(p, ImageURLPart):
            blocks.append({"type": "image", "url": p.url})
    return blocks


def tool_calls_to_langchain(calls: Iterable[ToolCall]) -> tuple[list[Any], list[Any]]:
    """Mesh tool calls -> (LangChain tool_calls, invalid_tool_calls)."""
    valid: list[Any] = []
    invalid: list[Any] = []
    for tc in calls:
        raw = tc.function.arguments
        try:
            args = json.loads(raw) if raw and raw.strip() else {}
        except json.JSONDecodeError as e:
            invalid.append(invalid_tool_call(name=tc.function.name, args=raw, id=tc.id,
                                             error=f"arguments are not valid JSON: {e}"))
            continue
        if not isinstance(args, dict):
            invalid.append(invalid_tool_call(name=tc.function.name, args=raw, id=tc.id,
                                             error="arguments must be a JSON object"))
            continue
        valid.append(tool_call(name=tc.function.name, args=args, id=tc.id))
    return valid, invalid


def from_mesh_message(msg: Message) -> BaseMessage:
    """One mesh message -> the LangChain message of its role."""
    content = _parts_to_content(msg.content)
    kw: dict[str, Any] = {"name": msg.name} if msg.name else {}
    if msg.role == "user":
        return HumanMessage(content=content, **kw)
    if msg.role == "system":
        return SystemMessage(content=content, **kw)
    if msg.role == "tool":
        return ToolMessage(content=content, tool_call_id=msg.tool_call_id or "", **kw)
    valid, invalid = tool_calls_to_langchain(msg.tool_calls or [])
    return AIMessage(content=content, tool_calls=valid, invalid_tool_calls=invalid, **kw)


def from_mesh_messages(messages: Iterable[Message]) -> list[BaseMessage]:
    return [from_mesh_message(m) for m in messages]


def usage_to_metadata(usage: Usage) -> UsageMetadata:
    """Mesh usage -> LangChain ``usage_metadata`` (ints; details only where the provider told us)."""
    md = UsageMetadata(input_tokens=int(usage.input_tokens), output_tokens=int(usage.output_tokens),
                       total_tokens=int(usage.total_tokens or usage.input_tokens + usage.output_tokens))
    inp: InputTokenDetails = {}
    if usage.cached_input_tokens is not None:
        inp["cache_read"] = int(usage.cached_input_tokens)
    if usage.cache_creation_input_tokens is not None:
        inp["cache_creation"] = int(usage.cache_creation_input_tokens)
    if inp:
        md["input_token_details"] = inp
    if usage.reasoning_tokens is not None:
        out: OutputTokenDetails = {"reasoning": int(usage.reasoning_tokens)}
        md["output_token_details"] = out
    return md


def _logprobs(items: Optional[list[TokenLogProb]]) -> Optional[dict[str, Any]]:
    if not items:
        return None
    return {"content": [
        {"token": lp.token, "logprob": lp.logprob,
         "top_logprobs": [{"token": t, "logprob": v} for t, v in lp.top]}
        for lp in items
    ]}


def response_metadata(*, llm_id: str, provider: str, finish_reason: Optional[str],
                      provider_model: Optional[str]) -> dict[str, Any]:
    md: dict[str, Any] = {"model_name": llm_id, "model_provider": provider, "finish_reason": finish_reason}
    if provider_model and provider_model != llm_id:
        md["provider_model_name"] = provider_model
    return md


def response_to_ai_message(resp: CompletionResponse, *, llm_id: str, provider: str) -> AIMessage:
    """A complete mesh response -> ``AIMessage`` with tool calls, usage and response metadata."""
    valid, invalid = tool_calls_to_langchain(resp.tool_calls)
    md = response_metadata(llm_id=llm_id, provider=provider, finish_reason=resp.finish_reason,
                           provider_model=resp.model)
    lp = _logprobs(resp.log_probs)
    if lp is not None:
        md["logprobs"] = lp
    return AIMessage(content=resp.text or "", tool_calls=valid, invalid_tool_calls=invalid,
                     usage_metadata=usage_to_metadata(resp.usage), response_metadata=md)


class StreamConverter:
    """Turns one mesh stream (chunks, then a footer) into ``AIMessageChunk``s.

    * tool-call deltas become ``tool_call_chunks`` (name, args, id, index); every index gets exactly
      one non-null id (a provider that streams none gets a generated one) so that LangChain's
      merge-by-index never concatenates two ids;
    * when a stream carried no deltas but its footer carries the reassembled calls (a connection
      that only completes), the calls are emitted on the footer chunk;
    * ``usage_metadata``, ``model_name``, ``model_provider`` and ``finish_reason`` ride on the footer
      chunk only, which is marked ``chunk_position="last"``.
    """

    __slots__ = ("llm_id", "provider", "_ids")

    def __init__(self, llm_id: str, provider: str):
        self.llm_id = llm_id
        self.provider = provider
        self._ids: dict[int, str] = {}

    def chunk(self, ev: StreamChunk) -> Optional[AIMessageChunk]:
        tccs = []
        for d in ev.tool_call_deltas:
            if d.index in self._ids:
                tcid = None
            else:
                tcid = d.id or f"call_{uuid.uuid4().hex[:24]}"
                self._ids[d.index] = tcid
            tccs.append(tool_call_chunk(name=d.name, args=d.arguments or None, id=tcid, index=d.index))
        if not ev.text and not tccs:
            return None
        md: dict[str, Any] = {}
        lp = _logprobs(ev.log_probs)
        if lp is not None:
            md["logprobs"] = lp
        return AIMessageChunk(content=ev.text or "", tool_call_chunks=tccs, response_metadata=md)

    def footer(self, ev: StreamFooter) -> AIMessageChunk:
        tccs = []
        if not self._ids:
            for i, tc in enumerate(ev.tool_calls):
                tccs.append(tool_call_chunk(name=tc.function.name, args=tc.function.arguments or "{}",
                                            id=tc.id, index=i))
        md = response_metadata(llm_id=self.llm_id, provider=self.provider, finish_reason=ev.finish_reason,
                               provider_model=ev.model)
        return AIMessageChunk(content="", tool_call_chunks=tccs, usage_metadata=usage_to_metadata(ev.usage),
                              response_metadata=md, **_LAST)
