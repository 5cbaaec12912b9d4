"""``stability``: Stability AI image generation over its REST API v2beta (Stable Image).

There is no maintained official Python SDK, so this is a plain ``httpx`` client::

    stab:                                     # stability:stab:stable-image-core
      type: stability
      api_key: "{{env:STABILITY_API_KEY}}"    # the default
      # base_url: https://api.stability.ai    # the default
      # image_strength: 0.5                   # image-to-image: how far from the input image (0-1)

Models and endpoints: ``stable-image-core`` (``/v2beta/stable-image/generate/core``, text only),
``stable-image-ultra`` (``/generate/ultra``, MASK_FREE image-to-image with ``image`` + ``strength``) and
the SD3 family on ``/generate/sd3`` with ``model`` (``sd3-large``, ``sd3-large-turbo``, ``sd3.5-large``...;
MASK_FREE with ``mode=image-to-image``). Core and Ultra also reach Stability's edit and control
services: INPAINTING is ``/v2beta/stable-image/edit/inpaint`` (a white-is-fill ``mask``, or none: the
image's transparent pixels), CONTROLNET_STRUCTURE / CONTROLNET_SKETCH are ``/control/structure`` and
``/control/sketch`` with ``control_strength`` (the original image's weight). Requests are
``multipart/form-data`` with ``Accept: image/*``: the raw image comes back with ``finish-reason`` and
``seed`` headers.

Request mapping (:class:`~.image_settings.ImageTranslation`: strict refusals, or lenient drops):
``prompt`` and ``negative_prompt`` keep their weights in Stability's ``(text:weight)`` syntax; ``seed``;
``style`` is ``style_preset`` (Core and the edit/control services); ``fidelity`` is SD3's ``cfg_scale``
(10 x fidelity); ``quality`` has no parameter; ``mime_type`` is ``output_format`` (png, jpeg, webp; SD3
writes no webp); the original image's weight is ``strength`` = 1 - weight. The API takes an aspect
ratio, not a size: a ratio (or ``width``/``height``) within 10% of one of the API's nine ratios is sent
as that ratio (1344x768 is 16:9; the service picks the pixel size, about one megapixel), any other is
refused rather than a silently different shape. The API returns one image per request, so ``n``
images are ``n`` requests (concurrent in the
async path); with a ``seed``, image *i* uses ``seed + i`` so the images differ and stay reproducible.
An image the service filtered (``finish-reason: CONTENT_FILTERED``, a blurred image) is an error,
not a success. Errors (``{"id", "name", "errors"}``) are the mesh's typed errors; nothing is retried
here.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Optional

from pydantic import Field

from ...config import ConnectionConfig, Secret
from ...errors import (
    CapabilityError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    SettingsError,
    error_for_status,
    parse_retry_after,
)
from ...schema import (
    GeneratedImage,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ModelCapabilities,
    ModelInfo,
    Purpose,
)
from ..base import Connection
from ..transport.clients import PerLoopClients
from ...imaging import white_mask
from ..image_settings import STYLE_PRESETS, ImageTranslation, fidelity_to_scale, weighted_prompt

__all__ = ["StabilityConnection", "StabilityConfig"]

PROVIDER = "stability"
PATH = "/v2beta/stable-image/generate/"
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
#: model id -> (endpoint, description); SD3 models also send their id as ``model``
MODELS = {
    "stable-image-core": ("core", "Stable Image Core"),
    "stable-image-ultra": ("ultra", "Stable Image Ultra"),
    "sd3-large": ("sd3", "Stable Diffusion 3 Large"),
    "sd3-large-turbo": ("sd3", "Stable Diffusion 3 Large Turbo"),
    "sd3.5-large": ("sd3", "Stable Diffusion 3.5 Large"),
    "sd3.5-large-turbo": ("sd3", "Stable Diffusion 3.5 Large Turbo"),
    "sd3.5-medium": ("sd3", "Stable Diffusion 3.5 Medium"),
}


class StabilityConfig(ConnectionConfig):
    type: str = "stability"
    api_key: Secret = Field(default_factory=lambda: Secret("{{env:STABILITY_API_KEY}}"))
    base_url: str = "https://api.stability.ai"
    #: image-to-image: how much the output may depart from the input (0 keeps it, 1 ignores it)
    image_strength: float = Field(default=0.5, ge=0, le=1)


def _endpoint(model: str) -> str:
    if model in MODELS:
        return MODELS[model][0]
    if model.startswith("sd3"):  # a newer SD3 model than this list
        return "sd3"
    raise CapabilityError(f"{model!r} is not a Stability image model this connection knows; "
                          f"known: {', '.join(MODELS)} (or any sd3* model)")


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body. Built here because httpx sends a body without files url-encoded,
    and the API takes multipart only (its own examples add a dummy file to force it)."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    for name, (filename, data, mime) in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {mime}\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


#: image-to-image mode -> the Stable Image service path serving it (MASK_FREE is the generate endpoint's)
MODE_PATHS = {"INPAINTING": "/v2beta/stable-image/edit/inpaint",
              "CONTROLNET_STRUCTURE": "/v2beta/stable-image/control/structure",
              "CONTROLNET_SKETCH": "/v2beta/stable-image/control/sketch"}
_MODES = {"core": ("INPAINTING", "CONTROLNET_STRUCTURE", "CONTROLNET_SKETCH"),
          "ultra": ("MASK_FREE", "INPAINTING", "CONTROLNET_STRUCTURE", "CONTROLNET_SKETCH"),
          "sd3": ("MASK_FREE",)}


def form_fields(model: str, request: ImageGenerationRequest, strength: float,
                t: Optional[ImageTranslation] = None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(path, form, files) of one request (seed aside); what the API cannot do raises before any request."""
    t = t or ImageTranslation(PROVIDER, model, request)
    endpoint, mode = _endpoint(model), request.mode
    fmt = _FORMATS.get(request.mime_type)
    if fmt is None or (endpoint == "sd3" and mode in (None, "MASK_FREE") and fmt == "webp"):
        allowed = "image/png or image/jpeg" if endpoint == "sd3" else "image/png, image/jpeg or image/webp"
        raise SettingsError(f"{model} writes {allowed}, not {request.mime_type}", ["mime_type"])
    if mode is not None and mode not in _MODES[endpoint]:
        raise t.mode_not_offered(_MODES[endpoint] + ("text-to-image",),
                                 "; text only" if endpoint == "core" and mode == "MASK_FREE" else "")
    path = MODE_PATHS.get(mode or "", PATH + endpoint)
    fields: dict[str, str] = {"prompt": weighted_prompt(request.prompts), "output_format": fmt}
    if endpoint == "sd3" and path.startswith(PATH):
        fields["model"] = model
    if request.negative_prompts:
        fields["negative_prompt"] = weighted_prompt(request.negative_prompts)
    t.refuse_present(quality="Stability's API has no quality setting")
    takes_style = endpoint == "core" or path in MODE_PATHS.values()
    if request.style is not None:
        if not takes_style:
            t.refuse("style", "style presets are for stable-image-core and the edit/control services")
        else:
            style = t.choice("style", {s: s for s in STYLE_PRESETS})
            if style:
                fields["style_preset"] = style
    if request.fidelity is not None:
        if endpoint == "sd3" and path.startswith(PATH):
            fields["cfg_scale"] = str(fidelity_to_scale(request.fidelity))
        else:
            t.refuse("fidelity", "only SD3 models take a CFG scale")
    files: dict[str, Any] = {}
    if mode is None:
        ratio = t.snap_ratio(ASPECT_RATIOS)
        if ratio is not None:
            fields["aspect_ratio"] = ratio
        return path, fields, files
    if len(request.images) > 1:
        raise SettingsError("Stability's image-to-image takes one input image", ["images"])
    if request.aspect_ratio is not None or request.width or request.height:
        t.refuse("aspect_ratio", "image-to-image output takes the input image's shape; drop aspect_ratio/width/height")
    image = request.images[0]
    files["image"] = ("image." + _FORMATS.get(image.mime_type, "png"), image.data, image.mime_type)
    if mode == "MASK_FREE":
        fields["strength"] = str(t.strength(strength))
        if endpoint == "sd3":
            fields["mode"] = "image-to-image"
    elif mode == "INPAINTING":
        t.refuse_present(weight="Stability's inpainting has no image strength")
        if request.mask_type == "MASK_IMAGE_BLACK":  # Stability paints the mask's white pixels
            t.check_mask()
            files["mask"] = ("mask.png", white_mask(request.mask_type, image.data, request.mask.data),  # type: ignore[union-attr]
                             "image/png")
        # ORIGINAL_IMAGE_ALPHA: no mask part; the service paints the image's transparent pixels
    else:
        fields["control_strength"] = str(0.7 if request.image_weight is None else request.image_weight)
    return path, fields, files


class StabilityConnection(Connection):
    type_name = "stability"
    config_model = StabilityConfig
    config: StabilityConfig

    def __init__(self, name: str, config: ConnectionConfig):
        super().__init__(name, config)
        self._http = PerLoopClients(self._make_http, lambda c: c.close(), lambda c: c.aclose())
        self._key: Optional[str] = None

    def default_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, purposes=[Purpose.IMAGE_GENERATION], description=f"{d} (Stability AI)",
                          capabilities=ModelCapabilities(streaming=False)) for m, (_, d) in MODELS.items()]

    def known_model(self, model: Any) -> Optional[ModelInfo]:
        return ModelInfo(id=model.id, purposes=[Purpose.IMAGE_GENERATION],
                         capabilities=ModelCapabilities(streaming=False))

    # ---- HTTP ----------------------------------------------------------------------------------------

    def _headers(self, content_type: str) -> dict[str, str]:
        if self._key is None:
            self._key = self.config.api_key.get(f"connections.{self.name}.api_key")
        return {"Authorization": f"Bearer {self._key}", "Accept": "image/*", "Content-Type": content_type,
                "User-Agent": "langchain-mesh"}

    def _make_http(self, is_async: bool) -> Any:
        import httpx

        return (httpx.AsyncClient if is_async else httpx.Client)(timeout=self.config.timeout)

    def _requests(self, model: str, request: ImageGenerationRequest,
                  t: ImageTranslation) -> list[tuple[str, bytes, dict[str, str]]]:
        """(url, body, headers) of each of the ``n`` requests."""
        path, fields, files = form_fields(model, request, self.config.image_strength, t)
        url = self.config.base_url.rstrip("/") + path
        out = []
        for i in range(request.n):
            one = dict(fields)
            if request.seed is not None:
                one["seed"] = str((request.seed + i) % 4294967295)
            body, ctype = _multipart(one, files)
            out.append((url, body, self._headers(ctype)))
        return out

    def _transport_error(self, e: Exception) -> ProviderError:
        import httpx

        if isinstance(e, httpx.TimeoutException):
            return ProviderTimeoutError(f"{PROVIDER} did not answer within {self.config.timeout}s "
                                        f"(connection {self.name!r})", provider=PROVIDER)
        return ProviderConnectionError(f"cannot reach {PROVIDER} at {self.config.base_url}: {type(e).__name__}: {e}",
                                       provider=PROVIDER)

    @staticmethod
    def _image(resp: Any, model: str) -> GeneratedImage:
        if resp.status_code >= 400:
            raise error_for_status(resp.status_code, error_message(resp), provider=PROVIDER,
                                   retry_after=parse_retry_after(resp.headers))
        finish = resp.headers.get("finish-reason", "SUCCESS")
        if finish != "SUCCESS":
            raise ProviderError(f"{PROVIDER} {model} did not return the image: finish-reason {finish}"
                                + (" (the output was blurred by Stability's content filter)"
                                   if finish == "CONTENT_FILTERED" else ""),
                                provider=PROVIDER, provider_message=finish, status=resp.status_code)
        mime = resp.headers.get("content-type", "image/png").split(";")[0].strip()
        return GeneratedImage(data=resp.content, mime_type=mime)

    # The transport exceptions are re-raised `from None`: they hold the request, whose headers carry the key.

    def generate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        import httpx

        images, t = [], ImageTranslation(PROVIDER, model, request)
        for url, body, headers in self._requests(model, request, t):
            try:
                resp = self._http.sync().post(url, content=body, headers=headers)
            except httpx.TransportError as e:
                raise self._transport_error(e) from None
            images.append(self._image(resp, model))
        return t.finish(ImageGenerationResponse(images=images, model=model))

    async def agenerate_images(self, model: str, request: ImageGenerationRequest) -> ImageGenerationResponse:
        import httpx

        client = self._http.running_loop()

        async def one(url: str, body: bytes, headers: dict[str, str]) -> GeneratedImage:
            try:
                resp = await client.post(url, content=body, headers=headers)
            except httpx.TransportError as e:
                raise self._transport_error(e) from None
            return self._image(resp, model)

        t = ImageTranslation(PROVIDER, model, request)
        images = await asyncio.gather(*(one(*r) for r in self._requests(model, request, t)))
        return t.finish(ImageGenerationResponse(images=list(images), model=model))

    def close(self) -> None:
        self._http.close()


def error_message(resp: Any) -> str:
    """The message of a Stability error body (``{"id", "name", "errors": [...]}``), else the raw text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or "(empty body)"
    if not isinstance(body, dict):
        return str(body)[:500]
    errors = body.get("errors")
    message = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else body.get("message")
    name = body.get("name")
    return f"{message or resp.text[:500]}" + (f" ({name})" if name else "")
