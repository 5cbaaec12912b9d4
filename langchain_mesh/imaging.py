"""Pixel work image-to-image needs: image sizes, and inpainting masks in each provider's convention.

The mesh speaks the seed's two mask types; providers each want their own::

    MASK_IMAGE_BLACK      a second image, black pixels = the area to fill  (Titan, SDXL's MASK_IMAGE_BLACK)
    ORIGINAL_IMAGE_ALPHA  the original's transparent pixels = the area     (OpenAI, Stability inpaint)
    white mask            white pixels = the area                          (Stability inpaint, Imagen)
    alpha mask            a PNG whose transparent pixels = the area        (OpenAI /images/edits)

Decoding and encoding PNG/JPEG is Pillow's job (a maintained library; ``pip install
'langchain-mesh[images]'``), imported only when a mask must change convention, so text-to-image and
``import langchain_mesh`` never load it.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Optional

from .errors import SettingsError

__all__ = ["image_size", "check_mask_size", "black_mask", "white_mask", "alpha_mask", "mask_from_alpha_png"]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("converting an inpainting mask needs Pillow: pip install 'langchain-mesh[images]'") from None
    return Image


def image_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height): read from a PNG header directly (the common case), else by Pillow; None if unreadable."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    try:
        with _pil().open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - not an image Pillow reads
        return None


def check_mask_size(image: bytes, mask: bytes) -> None:
    """A mask must cover the image pixel for pixel; providers answer a vague 400 otherwise."""
    a, b = image_size(image), image_size(mask)
    if a is not None and b is not None and a != b:
        raise SettingsError(f"the mask is {b[0]}x{b[1]} but the original image is {a[0]}x{a[1]}; "
                            "a mask must have the image's size", ["mask"])


def _png(im: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def _area(mask_type: str, original: bytes, mask: Optional[bytes]) -> Any:
    """An 'L' image: 255 where the model should paint, 0 elsewhere."""
    Image = _pil()
    if mask_type == "ORIGINAL_IMAGE_ALPHA":
        with Image.open(io.BytesIO(original)) as im:
            if im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info:
                raise SettingsError("mask type ORIGINAL_IMAGE_ALPHA needs an original image with an alpha "
                                    "channel (a PNG with transparent pixels)", ["mask"])
            alpha = im.convert("RGBA").getchannel("A")
        return alpha.point(lambda a: 255 if a < 128 else 0)
    if mask is None:
        raise SettingsError("mask type MASK_IMAGE_BLACK needs the mask image", ["mask"])
    with Image.open(io.BytesIO(mask)) as im:
        gray = im.convert("L")
    return gray.point(lambda v: 255 if v < 128 else 0)


def black_mask(mask_type: str, original: bytes, mask: Optional[bytes]) -> bytes:
    """A PNG where black pixels are the area to fill (the seed's MASK_IMAGE_BLACK; Titan's convention)."""
    if mask_type == "MASK_IMAGE_BLACK" and mask is not None:
        return mask
    return _png(_area(mask_type, original, mask).point(lambda v: 255 - v))


def white_mask(mask_type: str, original: bytes, mask: Optional[bytes]) -> bytes:
    """A PNG where white pixels are the area to fill (Stability's inpaint, Imagen's user-provided mask)."""
    return _png(_area(mask_type, original, mask))


def alpha_mask(mask_type: str, original: bytes, mask: Optional[bytes]) -> bytes:
    """An RGBA PNG, transparent where the area to fill is (OpenAI's /images/edits ``mask``)."""
    Image = _pil()
    area = _area(mask_type, original, mask)
    out = Image.new("RGBA", area.size, (0, 0, 0, 255))
    out.putalpha(area.point(lambda v: 255 - v))
    return _png(out)


def mask_from_alpha_png(mask: bytes) -> bytes:
    """OpenAI's mask convention (transparent = edit) as the seed's MASK_IMAGE_BLACK (black = edit)."""
    Image = _pil()
    with Image.open(io.BytesIO(mask)) as im:
        alpha = im.convert("RGBA").getchannel("A")
    return _png(alpha.point(lambda a: 0 if a < 128 else 255))
