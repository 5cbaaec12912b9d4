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
    IMAGE_MODES,
    MASK_TYPES,
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
    WeightedPrompt,
    merge_prompts,
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

    #: a route's dispatch (:class:`~langchain_mesh.policies.routes.Route`) for ``route:<name>``, else None
    route: Any = None

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
    """Texts (``add_text``) and images (``add_image``, on models that embed images); ``execute()`` gives
    one vector per input, in the order they were added."""

    def __init__(self, llm: LLM):
        self.llm = llm
        self.texts: list[str] = []
        self.images: list[ImagePart] = []
        self._order: list[tuple[str, int]] = []  # ("text" | "image", index in its list), as added
        self.settings: dict[str, Any] = {}  # dimensions, input_type

    def add_text(self, text: str) -> "EmbeddingsQuery":
        if not isinstance(text, str):
            raise SettingsError(f"add_text takes a string, got {type(text).__name__}", ["text"])
        self._order.append(("text", len(self.texts)))
        self.texts.append(text)
        return self

    def add_texts(self, texts: Iterable[str]) -> "EmbeddingsQuery":
        for t in texts:
            self.add_text(t)
        return self

    def add_image(self, image: Union[bytes, str], mime_type: Optional[str] = None) -> "EmbeddingsQuery":
        """Raw image bytes, or base64 text (as ``with_inline_image``); png, jpeg, gif or webp."""
        if isinstance(image, str):
            import base64

            image = base64.b64decode(image)
        if not isinstance(image, (bytes, bytearray)):
            raise SettingsError(f"add_image takes image bytes (or base64 text), got {type(image).__name__}", ["image"])
        try:
            part = ImagePart.from_bytes(bytes(image), mime_type)
        except ValueError as e:
            raise SettingsError(f"add_image: {e}", ["image"]) from None
        self._order.append(("image", len(self.images)))
        self.images.append(part)
        return self

    def _build(self, texts: list[str], images: list[ImagePart]) -> EmbeddingRequest:
        try:
            return EmbeddingRequest(texts=texts, images=images, **self.settings)
        except Exception as e:  # pydantic names the offending setting
            raise SettingsError(f"invalid embedding settings: {e}", list(self.settings)) from None

    def build_request(self) -> EmbeddingRequest:
        """The one request of a query of texts only, or of images only."""
        if not self.texts and not self.images:
            raise SettingsError("an embeddings query needs at least one text or image (use add_text or add_image)",
                                ["texts"])
        if self.texts and self.images:
            raise SettingsError("this query mixes texts and images: execute() sends them as two requests; "
                                "build_request() makes one", ["images"])
        return self._build(list(self.texts), list(self.images))

    def _requests(self) -> list[EmbeddingRequest]:
        if self.texts and self.images:
            return [self._build(list(self.texts), []), self._build([], list(self.images))]
        return [self.build_request()]

    def _merge(self, responses: list[EmbeddingResponse]) -> EmbeddingResponse:
        if len(responses) == 1:
            return responses[0]
        by_kind = {"text": responses[0].embeddings, "image": responses[1].embeddings}
        return EmbeddingResponse(embeddings=[by_kind[kind][i] for kind, i in self._order],
                                 usage=responses[0].usage + responses[1].usage, model=responses[0].model)

    def execute(self) -> EmbeddingResponse:
        return self._merge([self.llm.mesh.embed(self.llm, r) for r in self._requests()])

    async def aexecute(self) -> EmbeddingResponse:
        return self._merge([await self.llm.mesh.aembed(self.llm, r) for r in self._requests()])


class ImageGenerationQuery:
    """Text-to-image, or image-to-image with :meth:`with_original_image`: the seed's builder.

    ::

        generation = llm.new_images_generation()
        generation.with_prompt("meat pizza", weight=0.8).with_prompt("rustic wooden table", weight=0.6)
        generation.with_negative_prompt("tomatoes", weight=1)
        generation.aspect_ratio = 21 / 9          # or "21:9", or height + width
        generation.images_to_generate, generation.seed = 2, 3
        generation.quality, generation.style, generation.fidelity = "hd", "vivid", 0.5
        generation.with_original_image(png, mode="INPAINTING", weight=0.1).with_mask("MASK_IMAGE_BLACK", image=mask)
        resp = generation.execute()               # resp.success, resp.first_image(), resp.images

    Each setting is sent, translated or refused per model (see the README's translation table);
    ``generation.lenient = True`` drops what the model does not take instead of refusing it.
    ``height``/``width`` and ``aspect_ratio`` are alternatives: setting one clears the other.
    """

    def __init__(self, llm: LLM):
        self.llm = llm
        self.prompts: list[WeightedPrompt] = []
        self.negative_prompts: list[WeightedPrompt] = []
        self.images: list[ImagePart] = []
        self.image_mode: Optional[str] = None
        self.image_weight: Optional[float] = None
        self.mask_type: Optional[str] = None
        self.mask: Optional[ImagePart] = None
        self._height: Optional[int] = None
        self._width: Optional[int] = None
        self._aspect_ratio: Union[None, float, str] = None
        self.seed: Optional[int] = None
        self.images_to_generate = 1
        self.quality: Optional[str] = None
        self.style: Optional[str] = None
        self.fidelity: Optional[float] = None
        self.mime_type = "image/png"
        self.lenient = False

    # The seed: "you can specify either the height and width or the aspect_ratio" (and its sample sets
    # height and width, then aspect_ratio). The two are alternatives: the one set last is the one used.

    @property
    def height(self) -> Optional[int]:
        return self._height

    @height.setter
    def height(self, value: Optional[int]) -> None:
        self._height = value
        if value is not None:
            self._aspect_ratio = None

    @property
    def width(self) -> Optional[int]:
        return self._width

    @width.setter
    def width(self, value: Optional[int]) -> None:
        self._width = value
        if value is not None:
            self._aspect_ratio = None

    @property
    def aspect_ratio(self) -> Union[None, float, str]:
        return self._aspect_ratio

    @aspect_ratio.setter
    def aspect_ratio(self, value: Union[None, float, str]) -> None:
        self._aspect_ratio = value
        if value is not None:
            self._height = self._width = None

    @property
    def n(self) -> int:  # the OpenAI name of images_to_generate
        return self.images_to_generate

    @n.setter
    def n(self, value: int) -> None:
        self.images_to_generate = value

    @property
    def prompt(self) -> str:
        return merge_prompts(self.prompts)

    def with_prompt(self, prompt: str, weight: Optional[float] = None) -> "ImageGenerationQuery":
        self.prompts.append(_weighted(prompt, weight, "with_prompt"))
        return self

    def with_negative_prompt(self, prompt: str, weight: Optional[float] = None) -> "ImageGenerationQuery":
        self.negative_prompts.append(_weighted(prompt, weight, "with_negative_prompt"))
        return self

    def with_original_image(self, image: Union[bytes, str], mode: Optional[str] = None, weight: Optional[float] = None,
                            mime_type: Optional[str] = None) -> "ImageGenerationQuery":
        """The input image (bytes, or base64 text) and the mode: MASK_FREE (default), VARY, INPAINTING,
        CONTROLNET_STRUCTURE or CONTROLNET_SKETCH; ``weight`` (0-1) is how much the original counts."""
        if mode is not None and mode not in IMAGE_MODES:
            raise SettingsError(f"unknown image-to-image mode {mode!r}; modes: {', '.join(IMAGE_MODES)}", ["mode"])
        if isinstance(image, str):
            import base64

            image = base64.b64decode(image)
        self.images.append(ImagePart.from_bytes(image, mime_type))
        self.image_mode = mode or self.image_mode
        if weight is not None:
            self.image_weight = weight
        return self

    def with_mask(self, mask_type: str, image: Union[bytes, str, None] = None) -> "ImageGenerationQuery":
        """Inpainting's mask: ``MASK_IMAGE_BLACK`` with the mask ``image`` (black pixels are filled), or
        ``ORIGINAL_IMAGE_ALPHA`` (the original's transparent pixels are filled)."""
        if mask_type not in MASK_TYPES:
            raise SettingsError(f"unknown mask type {mask_type!r}; mask types: {', '.join(MASK_TYPES)}", ["mask_type"])
        if isinstance(image, str):
            import base64

            image = base64.b64decode(image)
        self.mask_type = mask_type
        self.mask = ImagePart.from_bytes(image) if image is not None else None
        return self

    def build_request(self) -> ImageGenerationRequest:
        return ImageGenerationRequest.checked(
            prompts=list(self.prompts), negative_prompts=list(self.negative_prompts), images=list(self.images),
            image_mode=self.image_mode, image_weight=self.image_weight, mask_type=self.mask_type, mask=self.mask,
            height=self.height, width=self.width, aspect_ratio=self.aspect_ratio, seed=self.seed,
            n=self.images_to_generate, quality=self.quality, style=self.style, fidelity=self.fidelity,
            mime_type=self.mime_type, lenient=self.lenient)

    def execute(self) -> ImageGenerationResponse:
        return self.llm.mesh.generate_images(self.llm, self.build_request())

    async def aexecute(self) -> ImageGenerationResponse:
        return await self.llm.mesh.agenerate_images(self.llm, self.build_request())


def _weighted(text: str, weight: Optional[float], method: str) -> WeightedPrompt:
    if not isinstance(text, str) or not text.strip():
        raise SettingsError(f"{method} takes a non-empty text, got {text!r}", ["prompt"])
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
        raise SettingsError(f"{method}: weight must be a number, got {weight!r}", ["weight"])
    return WeightedPrompt(text=text, weight=None if weight is None else float(weight))
