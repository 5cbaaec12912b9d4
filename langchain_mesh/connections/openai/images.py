"""The OpenAI images API (OpenAI and Azure OpenAI): which endpoint, which body, per model family.

::

    text-to-image   POST /images/generations   JSON
    MASK_FREE       POST /images/edits         multipart: image (gpt-image-1: image[] of several)
    INPAINTING      POST /images/edits         multipart: image + mask (transparent = area to fill);
                                               ORIGINAL_IMAGE_ALPHA sends the image alone (its alpha is the mask)
    VARY            POST /images/variations    multipart: image, no prompt (dall-e-2; not on Azure)

Per family (recognised in the model or deployment name; another name is sent as given and the
service decides): ``dall-e-2`` (256/512/1024 squares, edits and variations), ``dall-e-3`` (three sizes,
``quality`` standard|hd, ``style`` vivid|natural, one image a request: ``images_to_generate=N`` is N
requests), ``gpt-image`` (three sizes, ``quality`` low|medium|high|auto with standard -> medium and
hd -> high, png/jpeg/webp output, edits with several images). No OpenAI image model takes a seed, a
negative prompt, fidelity or an image weight: strict requests refuse them, lenient ones drop them.
Weighted prompts are merged into one prompt, as the seed says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ...errors import SettingsError
from ...imaging import alpha_mask
from ...schema import ImageGenerationRequest
from ..image_settings import ImageTranslation

__all__ = ["ImagePlan", "image_plan", "image_body", "family_of"]


@dataclass(frozen=True)
class _Family:
    sizes: tuple[tuple[int, int], ...]
    quality: dict[str, str]
    style: dict[str, str]
    max_n: int  # images one request may ask for
    modes: frozenset[str]  # image-to-image modes
    formats: dict[str, str]  # mime -> output_format ({} = png only, no output_format key)
    response_format: bool = True  # takes response_format=b64_json (gpt-image always answers base64)


FAMILIES = {
    "dall-e-2": _Family(((256, 256), (512, 512), (1024, 1024)), {}, {}, 10,
                        frozenset({"INPAINTING", "VARY"}), {}),
    "dall-e-3": _Family(((1024, 1024), (1792, 1024), (1024, 1792)), {"standard": "standard", "hd": "hd"},
                        {"vivid": "vivid", "natural": "natural"}, 1, frozenset(), {}),
    "gpt-image": _Family(((1024, 1024), (1536, 1024), (1024, 1536)),
                         {"low": "low", "medium": "medium", "high": "high", "auto": "auto",
                          "standard": "medium", "hd": "high"}, {}, 10, frozenset({"MASK_FREE", "INPAINTING"}),
                         {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}, response_format=False),
}
_SIZE_FOR_RATIO = {"1:1": "1024x1024", "16:9": "1792x1024", "9:16": "1024x1792",
                   "3:2": "1536x1024", "2:3": "1024x1536"}
_NO = "OpenAI image models have no such parameter"


def family_of(*names: str) -> Optional[str]:
    for name in names:
        low = name.lower().replace("_", "-")
        if "gpt-image" in low:
            return "gpt-image"
        if "dall-e-3" in low or "dalle3" in low or "dalle-3" in low:
            return "dall-e-3"
        if "dall-e-2" in low or "dalle2" in low or "dalle-2" in low:
            return "dall-e-2"
    return None


@dataclass
class ImagePlan:
    """What to send: the endpoint (``generations``, ``edits``, ``variations``), the body, the files of
    a multipart body, and how many identical requests make ``n`` images."""

    op: str
    body: dict[str, Any]
    files: list[tuple[str, tuple[str, bytes, str]]] = field(default_factory=list)
    calls: int = 1
    translation: Optional[ImageTranslation] = None


def image_plan(model: str, request: ImageGenerationRequest, provider: str = "openai",
               family_hint: str = "") -> ImagePlan:
    t = ImageTranslation(provider, model, request)
    name = family_of(model, family_hint)
    fam = FAMILIES.get(name or "")
    mode = request.mode
    if mode is not None:  # a mode the model lacks first: no setting can make up for it
        offered = fam.modes if fam is not None else {"MASK_FREE", "INPAINTING", "VARY"}
        if provider == "azure_openai":
            offered = offered - {"VARY"}  # Azure serves no /images/variations
        if mode not in offered:
            raise t.mode_not_offered(sorted(offered) + ["text-to-image"], " on the OpenAI images API")
    t.refuse_present(negative_prompt=f"{_NO}; fold it into the prompt", seed=_NO,
                     fidelity=_NO, weight="OpenAI's edits and variations take no image strength")
    body: dict[str, Any] = {"model": model}
    if mode != "VARY":
        body["prompt"] = request.prompt
    elif request.prompts:
        t.refuse("prompt", "variations (mode VARY) take no prompt; use MASK_FREE for a prompted variation")
    calls, n = 1, request.n
    if fam is not None and n > fam.max_n:
        if fam.max_n == 1:  # dall-e-3 makes one image a request: N images are N requests
            calls, n = n, 1
        else:
            raise SettingsError(f"{model} makes at most {fam.max_n} images a request, asked for {n}",
                                ["images_to_generate"])
    body["n"] = n
    _size(t, fam, body)
    _quality_style(t, fam, body, mode)
    _format(t, fam, body)
    plan = ImagePlan(op="generations" if mode is None else ("variations" if mode == "VARY" else "edits"),
                     body=body, calls=calls, translation=t)
    if mode is not None:
        _files(t, name, plan)
    return plan


def _size(t: ImageTranslation, fam: Optional[_Family], body: dict[str, Any]) -> None:
    r = t.request
    if fam is not None:
        size = t.snap_size(fam.sizes)
        if size is not None:
            body["size"] = f"{size[0]}x{size[1]}"
    elif r.width or r.height:
        body["size"] = f"{r.width or r.height}x{r.height or r.width}"
    elif r.aspect_ratio:
        if r.aspect_ratio not in _SIZE_FOR_RATIO:
            t.refuse("aspect_ratio", f"{r.aspect_ratio} is none of {', '.join(_SIZE_FOR_RATIO)}")
        else:
            body["size"] = _SIZE_FOR_RATIO[r.aspect_ratio]


def _quality_style(t: ImageTranslation, fam: Optional[_Family], body: dict[str, Any], mode: Optional[str]) -> None:
    r = t.request
    if fam is None:  # a model we do not know: the values go as given and the service judges them
        body.update({k: v for k, v in (("quality", r.quality), ("style", r.style)) if v is not None})
        return
    if r.quality is not None:
        if not fam.quality:
            t.refuse("quality", "it has a single quality")
        else:
            q = t.choice("quality", fam.quality)
            if q is not None:
                body["quality"] = q
    if r.style is not None:
        if not fam.style or mode is not None:
            t.refuse("style", "it has no style setting" if not fam.style else "edits take no style")
        else:
            s = t.choice("style", fam.style)
            if s is not None:
                body["style"] = s


def _format(t: ImageTranslation, fam: Optional[_Family], body: dict[str, Any]) -> None:
    mime = t.request.mime_type
    if fam is not None and fam.formats:
        if mime not in fam.formats:
            t.refuse("mime_type", f"it writes {', '.join(fam.formats)}, not {mime}")
        else:
            body["output_format"] = fam.formats[mime]
    elif mime != "image/png":
        t.refuse("mime_type", f"it writes image/png, not {mime}")
    if fam is None or fam.response_format:
        body["response_format"] = "b64_json"


def _ext(mime: str) -> str:
    return {"image/jpeg": "jpg", "image/webp": "webp"}.get(mime, "png")


def _files(t: ImageTranslation, family: Optional[str], plan: ImagePlan) -> None:
    r = t.request
    images = r.images
    if len(images) > 1 and family != "gpt-image":
        raise SettingsError(f"{t.model} edits one image; only gpt-image models take several", ["images"])
    key = "image[]" if len(images) > 1 else "image"
    plan.files = [(key, (f"image{i}.{_ext(im.mime_type)}", im.data, im.mime_type)) for i, im in enumerate(images)]
    if r.mode == "INPAINTING" and r.mask_type == "MASK_IMAGE_BLACK":
        t.check_mask()
        plan.files.append(("mask", ("mask.png", alpha_mask(r.mask_type, images[0].data, r.mask.data), "image/png")))


def image_body(model: str, request: ImageGenerationRequest) -> dict[str, Any]:
    """The JSON body of a text-to-image request (one request's worth)."""
    plan = image_plan(model, request)
    if plan.op != "generations":
        raise SettingsError(f"image-to-image goes to /images/{plan.op}, not /images/generations", ["images"])
    return plan.body
