"""The seed-style builders: an LLM handle and the queries made from it.

``llm.new_completion()`` collects messages and settings, ``execute()`` validates them once into a
:class:`~langchain_mesh.schema.CompletionRequest` and hands it to the mesh. Builders return ``self``
so calls chain, as in the seed (``completion.with_message(...).with_message(...)``).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator, Optional, Union

from .errors import CapabilityError, MeshError, SettingsError
from .schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FunctionCall,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImagePart,
    ImageURLPart,
    Message,
    ModelInfo,
    Purpose,
    StreamEvent,
    TextPart,
    ToolCall,
    validate_settings,
)

if TYPE_CHECKING:
    from .connections.base import Connection

__all__ = [
    "LLM", "CompletionQuery", "MultipartMessage", "CompletionsQuery", "CompletionsResponse",
    "EmbeddingsQuery", "ImageGenerationQuery",
]


class LLM:
    """A handle on one mesh LLM (``mesh.get_llm(id)``). Cheap to keep; safe to share across threads."""

    # `mesh` is the Mesh that made the handle (typed Any: mesh.py imports this module, not the reverse)
    def __init__(self, mesh: Any, llm_id: str, connection: "Connection", model: str, info: ModelInfo):
        self.mesh = mesh
        self.id = llm_id
        self.connection = connection
        self.model = model
        self.info = info

    @property
    def capabilities(self):  # type: ignore[no-untyped-def]
        return self.info.capabilities

    def _require(self, purpose: Purpose) -> None:
        if purpose not in self.info.purposes:
            others = [i.id for i in self.mesh.list_llms(purpose)]
            raise CapabilityError(
                f"{self.id} is not a {purpose.value} model (its purposes: "
                f"{', '.join(p.value for p in self.info.purposes)}). {purpose.value} models: "
                f"{', '.join(others) or 'none'}")

    def new_completion(self) -> "CompletionQuery":
        self._require(Purpose.GENERIC_COMPLETION)
        return CompletionQuery(self)

    def new_completions(self) -> "CompletionsQuery":
        self._require(Purpose.GENERIC_COMPLETION)
        return CompletionsQuery(self)

    def new_embeddings(self) -> "EmbeddingsQuery":
        self._require(Purpose.TEXT_EMBEDDING_EXTRACTION)
        return EmbeddingsQuery(self)

    def new_images_generation(self) -> "ImageGenerationQuery":
        self._require(Purpose.IMAGE_GENERATION)
        return ImageGenerationQuery(self)

    # LangChain faces; imported on use so that langchain-core stays out of `import langchain_mesh`.
    def as_langchain_chat_model(self, **kwargs: Any) -> Any:
        from .langchain import MeshChatModel

        return MeshChatModel(model=self.id, mesh=self.mesh, **kwargs)

    def as_langchain_llm(self, **kwargs: Any) -> Any:
        from .langchain import MeshLLM

        return MeshLLM(model=self.id, mesh=self.mesh, **kwargs)

    def as_langchain_embeddings(self, **kwargs: Any) -> Any:
        from .langchain import MeshEmbeddings

        return MeshEmbeddings(model=self.id, mesh=self.mesh, **kwargs)

    def __repr__(self) -> str:
        return f"LLM({self.id!r})"


# --------------------------------------------------------------------------------------------------


class MultipartMessage:
    """A message of several parts (text and images), added to its completion with :meth:`add`."""

    def __init__(self, completion: "CompletionQuery", role: str = "user"):
        self._completion = completion
        self._role = role
        self._parts: list[Any] = []

    def with_text(self, text: str) -> "MultipartMessage":
        self._parts.append(TextPart(text=text))
        return self

    def with_inline_image(self, image: Union[bytes, str], mime_type: Optional[str] = None) -> "MultipartMessage":
        """Raw bytes, or base64 text as the seed's callers sometimes pass."""
        if isinstance(image, str):
            import base64

            image = base64.b64decode(image)
        self._parts.append(ImagePart.from_bytes(image, mime_type))
        return self

    def with_image_url(self, url: str, detail: Optional[str] = None) -> "MultipartMessage":
        self._parts.append(ImageURLPart(url=url, detail=detail))  # type: ignore[arg-type]
        return self

    def add(self) -> "CompletionQuery":
        if not self._parts:
            raise MeshError("a multipart message needs at least one part before add()")
        self._completion.messages.append(Message(role=self._role, content=list(self._parts)))  # type: ignore[arg-type]
        return self._completion


class CompletionQuery:
    """One completion: messages, then settings, then ``execute()`` or ``execute_streamed()``."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.messages: list[Message] = []
        self.settings: dict[str, Any] = {}

    # ---- messages --------------------------------------------------------------------------------------

    def with_message(self, message: str, role: str = "user") -> "CompletionQuery":
        self.messages.append(Message(role=role, content=message))  # type: ignore[arg-type]
        return self

    def new_multipart_message(self, role: str = "user") -> MultipartMessage:
        return MultipartMessage(self, role)

    def with_tool_calls(self, tool_calls: Iterable[Union[ToolCall, dict[str, Any]]], role: str = "assistant") -> "CompletionQuery":
        calls = [tc if isinstance(tc, ToolCall) else _tool_call_from_dict(tc) for tc in tool_calls]
        self.messages.append(Message(role=role, tool_calls=calls))  # type: ignore[arg-type]
        return self

    def with_tool_output(self, tool_output: Any, tool_call_id: str) -> "CompletionQuery":
        text = tool_output if isinstance(tool_output, str) else json.dumps(tool_output, default=str)
        self.messages.append(Message(role="tool", content=text, tool_call_id=tool_call_id))
        return self

    def with_json_output(self, schema: Optional[dict[str, Any]] = None, strict: bool = False,
                         name: Optional[str] = None) -> "CompletionQuery":
        """Ask for JSON: any object, or one valid against ``schema``."""
        fmt: dict[str, Any] = {"type": "json", "strict": strict}
        if schema is not None:
            fmt["schema"] = schema
        if name:
            fmt["name"] = name
        self.settings["responseFormat"] = fmt
        return self

    def with_structured_output(self, model_type: Any, strict: bool = True) -> "CompletionQuery":
        """JSON output following a pydantic model's schema; parse with ``model_type.model_validate_json``."""
        return self.with_json_output(model_type.model_json_schema(), strict=strict, name=model_type.__name__)

    # ---- execution -------------------------------------------------------------------------------------

    def build_request(self) -> CompletionRequest:
        if not self.messages:
            raise SettingsError("a completion needs at least one message (use with_message)", ["messages"])
        # model_construct: the messages were validated as they were added; only settings need it here
        return CompletionRequest.model_construct(messages=list(self.messages),
                                                 settings=validate_settings(self.settings))

    def execute(self) -> CompletionResponse:
        return self.llm.mesh.complete(self.llm, self.build_request())

    async def aexecute(self) -> CompletionResponse:
        return await self.llm.mesh.acomplete(self.llm, self.build_request())

    def execute_streamed(self) -> Iterator[StreamEvent]:
        """Text (and tool-call) chunks, then exactly one :class:`StreamFooter`."""
        return self.llm.mesh.stream(self.llm, self.build_request())

    def aexecute_streamed(self) -> AsyncIterator[StreamEvent]:
        return self.llm.mesh.astream(self.llm, self.build_request())


def _tool_call_from_dict(d: dict[str, Any]) -> ToolCall:
    fn = d.get("function") or {}
    args = fn.get("arguments", "{}")
    if not isinstance(args, str):
        args = json.dumps(args)
    return ToolCall(id=d["id"], function=FunctionCall(name=fn["name"], arguments=args))


class CompletionsResponse:
    def __init__(self, responses: list[CompletionResponse]):
        self.responses = responses

    def __iter__(self) -> Iterator[CompletionResponse]:
        return iter(self.responses)

    def __len__(self) -> int:
        return len(self.responses)

    def __getitem__(self, i: int) -> CompletionResponse:
        return self.responses[i]


class CompletionsQuery:
    """A batch of independent completions on one LLM. A failed item fails alone (``success=False``)."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.queries: list[CompletionQuery] = []
        self.settings: dict[str, Any] = {}  # applied to every query under its own settings

    def new_completion(self) -> CompletionQuery:
        q = CompletionQuery(self.llm)
        self.queries.append(q)
        return q

    def _request(self, q: CompletionQuery) -> CompletionRequest:
        if self.settings:
            q.settings = {**self.settings, **q.settings}
        return q.build_request()

    def execute(self) -> CompletionsResponse:
        out = []
        for q in self.queries:
            try:
                out.append(self.llm.mesh.complete(self.llm, self._request(q)))
            except MeshError as e:
                out.append(CompletionResponse(success=False, error=str(e), finish_reason="error"))
        return CompletionsResponse(out)

    async def aexecute(self) -> CompletionsResponse:
        async def one(q: CompletionQuery) -> CompletionResponse:
            try:
                return await self.llm.mesh.acomplete(self.llm, self._request(q))
            except MeshError as e:
                return CompletionResponse(success=False, error=str(e), finish_reason="error")

        return CompletionsResponse(list(await asyncio.gather(*(one(q) for q in self.queries))))


class EmbeddingsQuery:
    def __init__(self, llm: LLM):
        self.llm = llm
        self.texts: list[str] = []
        self.settings: dict[str, Any] = {}  # dimensions, input_type

    def add_text(self, text: str) -> "EmbeddingsQuery":
        if not isinstance(text, str):
            raise SettingsError(f"add_text takes a string, got {type(text).__name__}", ["text"])
        self.texts.append(text)
        return self

    def add_texts(self, texts: Iterable[str]) -> "EmbeddingsQuery":
        for t in texts:
            self.add_text(t)
        return self

    def build_request(self) -> EmbeddingRequest:
        if not self.texts:
            raise SettingsError("an embeddings query needs at least one text (use add_text)", ["texts"])
        try:
            return EmbeddingRequest(texts=list(self.texts), **self.settings)
        except Exception as e:  # pydantic names the offending setting
            raise SettingsError(f"invalid embedding settings: {e}", list(self.settings)) from None

    def execute(self) -> EmbeddingResponse:
        return self.llm.mesh.embed(self.llm, self.build_request())

    async def aexecute(self) -> EmbeddingResponse:
        return await self.llm.mesh.aembed(self.llm, self.build_request())


class ImageGenerationQuery:
    """Text-to-image, or image-to-image with :meth:`with_original_image`."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.prompt = ""
        self.negative_prompt: Optional[str] = None
        self.images: list[ImagePart] = []
        self.height: Optional[int] = None
        self.width: Optional[int] = None
        self.aspect_ratio: Optional[str] = None
        self.seed: Optional[int] = None
        self.n = 1

    def with_prompt(self, prompt: str) -> "ImageGenerationQuery":
        self.prompt = (self.prompt + " " + prompt).strip()
        return self

    def with_negative_prompt(self, prompt: str) -> "ImageGenerationQuery":
        self.negative_prompt = prompt
        return self

    def with_original_image(self, image: bytes, mime_type: Optional[str] = None) -> "ImageGenerationQuery":
        self.images.append(ImagePart.from_bytes(image, mime_type))
        return self

    def build_request(self) -> ImageGenerationRequest:
        if not self.prompt:
            raise SettingsError("an image generation needs a prompt (use with_prompt)", ["prompt"])
        return ImageGenerationRequest(prompt=self.prompt, negative_prompt=self.negative_prompt,
                                      images=self.images, height=self.height, width=self.width,
                                      aspect_ratio=self.aspect_ratio, seed=self.seed, n=self.n)

    def execute(self) -> ImageGenerationResponse:
        return self.llm.mesh.generate_images(self.llm, self.build_request())

    async def aexecute(self) -> ImageGenerationResponse:
        return await self.llm.mesh.agenerate_images(self.llm, self.build_request())
