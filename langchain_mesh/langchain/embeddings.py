"""``MeshEmbeddings``: a mesh embedding LLM as LangChain ``Embeddings``.

Texts go to the mesh in batches of ``batch_size`` (order preserved); vectors come back as lists of
Python ``float`` whatever the connection produced (numpy scalars are converted). Async calls use the
mesh's async path (``mesh.aembed``).

Images: ``embed_image(uris)`` follows LangChain's convention for image embeddings (the
``embed_image(uris)`` of ``OpenCLIPEmbeddings``, which vector stores' ``add_images`` call): file paths,
``file://`` URIs or ``data:`` URLs (raw bytes too), one vector each, on models that embed images
(others raise :class:`~langchain_mesh.errors.CapabilityError`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

from langchain_core.embeddings import Embeddings
from langchain_core.load.serializable import Serializable
from pydantic import AliasChoices, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from ..errors import MeshError, SettingsError
from ..schema import EmbeddingRequest, ImagePart
from ._common import coerce_mesh, get_llm
from .serialization import MeshSerializable, allow_in_langchain_load, dump_with_mesh

__all__ = ["MeshEmbeddings"]


def _floats(vec: Any) -> list[float]:
    if isinstance(vec, list) and (not vec or type(vec[0]) is float):
        return vec
    return [float(x) for x in vec]


class MeshEmbeddings(MeshSerializable, Serializable, Embeddings):
    """``MeshEmbeddings(model="huggingfacelocal:local:all-MiniLM-L6-v2", mesh=mesh).embed_query("...")``.

    Serialisable the LangChain way (``dumpd``/``loads``) and picklable: the mesh travels as its
    config with secret references (see :class:`~langchain_mesh.langchain._common.MeshSerializable`).
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, extra="forbid",
                              protected_namespaces=())

    model: str = Field(validation_alias=AliasChoices("model", "llm_id"))
    """The mesh LLM id of a TEXT_EMBEDDING_EXTRACTION model."""
    mesh: Optional[Any] = Field(default=None, exclude=True, repr=False)
    """A Mesh, a config dict, or a path to a mesh YAML file; None = ``Mesh.default()``."""
    batch_size: int = Field(default=32, ge=1)
    """Texts per request to the connection."""
    dimensions: Optional[int] = Field(default=None, ge=1)
    """Output dimensions, for models that can shorten their vectors."""
    max_concurrency: int = Field(default=1, ge=1)
    """Batches in flight at once on the async path."""
    max_retries: Optional[int] = None
    timeout: Optional[float] = None
    use_input_type: bool = True
    """Tell the connection whether texts are documents or queries (models such as Cohere's embed
    them differently; others ignore it)."""

    @field_validator("mesh", mode="before")
    @classmethod
    def _coerce_mesh(cls, v: Any) -> Any:
        return coerce_mesh(v)

    @model_serializer(mode="wrap")
    def _dump_with_mesh(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return dump_with_mesh(self, handler)

    @property
    def llm_id(self) -> str:
        return self.model

    def _requests(self, texts: list[str], input_type: Literal["query", "document"]) -> list[EmbeddingRequest]:
        kind = input_type if self.use_input_type else None
        n = self.batch_size
        return [EmbeddingRequest(texts=texts[i:i + n], dimensions=self.dimensions, input_type=kind)
                for i in range(0, len(texts), n)]

    def _image_requests(self, uris: Sequence[Union[str, bytes]]) -> list[EmbeddingRequest]:
        images = [_load_image(u) for u in uris]
        n = self.batch_size
        return [EmbeddingRequest(images=images[i:i + n], dimensions=self.dimensions)
                for i in range(0, len(images), n)]

    @staticmethod
    def _vectors(resp: Any, expected: int, llm_id: str) -> list[list[float]]:
        if len(resp.embeddings) != expected:
            raise MeshError(f"{llm_id} returned {len(resp.embeddings)} embeddings for {expected} inputs")
        return [_floats(v) for v in resp.embeddings]

    def _run(self, requests: list[EmbeddingRequest]) -> list[list[float]]:
        llm = get_llm(self.mesh, self.model, "TEXT_EMBEDDING_EXTRACTION")
        out: list[list[float]] = []
        for req in requests:
            resp = llm.mesh.embed(llm, req, timeout=self.timeout, max_retries=self.max_retries)  # type: ignore[misc]
            out.extend(self._vectors(resp, len(req.texts) + len(req.images), llm.id))
        return out

    async def _arun(self, requests: list[EmbeddingRequest]) -> list[list[float]]:
        llm = get_llm(self.mesh, self.model, "TEXT_EMBEDDING_EXTRACTION")
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(req: EmbeddingRequest) -> list[list[float]]:
            async with sem:
                resp = await llm.mesh.aembed(llm, req, timeout=self.timeout, max_retries=self.max_retries)
            return self._vectors(resp, len(req.texts) + len(req.images), llm.id)

        batches = await asyncio.gather(*(one(r) for r in requests))
        return [v for batch in batches for v in batch]

    def _embed(self, texts: list[str], input_type: Literal["query", "document"]) -> list[list[float]]:
        return self._run(self._requests(list(texts), input_type)) if texts else []

    async def _aembed(self, texts: list[str], input_type: Literal["query", "document"]) -> list[list[float]]:
        return await self._arun(self._requests(list(texts), input_type)) if texts else []

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """One vector per image: file paths, ``file://`` URIs, ``data:`` URLs or raw bytes."""
        return self._run(self._image_requests(uris)) if uris else []

    async def aembed_image(self, uris: list[str]) -> list[list[float]]:
        return await self._arun(self._image_requests(uris)) if uris else []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._aembed(texts, "document")

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._aembed([text], "query"))[0]


def _load_image(uri: Union[str, bytes]) -> ImagePart:
    """An image from a path, a ``file://`` URI, a ``data:`` URL or bytes. Remote URLs are refused: the
    mesh does not fetch on a caller's behalf (download it, then pass the bytes or a path)."""
    if isinstance(uri, (bytes, bytearray)):
        return ImagePart.from_bytes(bytes(uri))
    if not isinstance(uri, str):
        raise SettingsError(f"embed_image takes paths, file:// URIs, data: URLs or bytes; got {type(uri).__name__}",
                            ["uris"])
    if uri.startswith("data:"):
        return ImagePart.from_data_url(uri)
    if uri.startswith(("http://", "https://")):
        raise SettingsError(f"embed_image does not download {uri[:80]!r}: pass the image's bytes or a local path",
                            ["uris"])
    path = Path(uri[7:] if uri.startswith("file://") else uri).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SettingsError(f"embed_image cannot read {path}: {e.strerror or e}", ["uris"]) from None
    try:
        return ImagePart.from_bytes(data)
    except ValueError as e:
        raise SettingsError(f"embed_image: {path}: {e}", ["uris"]) from None


allow_in_langchain_load(MeshEmbeddings)
