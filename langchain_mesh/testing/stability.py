"""A local Stability AI REST API (v2beta Stable Image), for offline tests of the ``stability`` connection.

Serves ``POST /v2beta/stable-image/generate/core``, ``/generate/ultra`` and ``/generate/sd3``, and the
edit and control services ``/v2beta/stable-image/edit/inpaint``, ``/control/structure`` and
``/control/sketch`` (an ``image``; inpaint's ``mask`` must have the image's size, or the image must have
an alpha channel; ``control_strength`` in [0, 1]; the answer has the input's size), as the reference
describes them: a ``multipart/form-data`` body (parsed for real, file parts included),
``Authorization: Bearer <key>``, and ``Accept: image/*`` (the raw image, with ``finish-reason`` and
``seed`` headers; the default) or ``application/json`` (``{"image": base64, "finish_reason", "seed"}``)::

    with StabilityServer(api_key="sk-test") as srv:
        srv.script(finish_reason="CONTENT_FILTERED")          # the next image comes back filtered
        srv.script(status=429, error_message="slow down", headers={"Retry-After": "5"})
        srv.last_request.form, srv.last_request.files          # what the client sent (see ``form_of``)

Checks, in order: the key (401), the body's size (413 over 10 MiB), that it is multipart, then each
endpoint's fields (400): a prompt of 1-10000 characters, ``aspect_ratio`` among the API's, ``seed`` in
[0, 4294967294], ``output_format`` (png/jpeg/webp; png/jpeg on SD3), SD3's ``model`` and ``mode``,
image-to-image's ``image`` (png, jpeg or webp) and ``strength`` in [0, 1], no ``aspect_ratio`` in
image-to-image, Core taking no image. Unknown fields are refused too (the service ignores them; a
test should not send them). Errors are Stability's ``{"id", "name", "errors": [...]}``. Images are
real: PNGs of the requested aspect ratio (small), baseline JPEGs, and a 1x1 lossless WebP.

``python -m langchain_mesh.testing.stability --port 8080`` serves it (key ``test-key``).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import random
import struct
import time
import uuid
from typing import Any, Optional

from .fakes import make_png
from .wire import RecordedRequest, Responder, WireServer, serve_main

__all__ = ["StabilityServer", "form_of", "make_image", "make_jpeg", "ASPECT_RATIOS", "SD3_MODELS"]

PREFIX = "/v2beta/stable-image/generate/"
ASPECT_RATIOS = {"16:9": (112, 64), "1:1": (64, 64), "21:9": (147, 64), "2:3": (64, 96), "3:2": (96, 64),
                 "4:5": (64, 80), "5:4": (80, 64), "9:16": (64, 112), "9:21": (64, 147)}
SD3_MODELS = ("sd3-large", "sd3-large-turbo", "sd3-medium", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium",
              "sd3.5-flash")
_FIELDS = {
    "core": {"prompt", "negative_prompt", "aspect_ratio", "seed", "style_preset", "output_format"},
    "inpaint": {"prompt", "negative_prompt", "seed", "output_format", "style_preset", "grow_mask", "image", "mask"},
    "structure": {"prompt", "negative_prompt", "seed", "output_format", "style_preset", "control_strength", "image"},
    "sketch": {"prompt", "negative_prompt", "seed", "output_format", "style_preset", "control_strength", "image"},
    "ultra": {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "image", "strength"},
    "sd3": {"prompt", "mode", "image", "strength", "aspect_ratio", "model", "seed", "output_format",
            "negative_prompt", "cfg_scale"},
}
#: the Stable Image edit and control services, beside the generate endpoints
_PATHS = {"/v2beta/stable-image/edit/inpaint": "inpaint", "/v2beta/stable-image/control/structure": "structure",
          "/v2beta/stable-image/control/sketch": "sketch"}
STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
                 "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami",
                 "photographic", "pixel-art", "tile-texture")
_NAMES = {400: "bad_request", 401: "unauthorized", 402: "payment_required", 403: "content_moderation",
          404: "not_found", 413: "payload_too_large", 422: "invalid_parameters", 429: "rate_limit_exceeded",
          500: "internal_error"}
_MAX_BODY = 10 * 1024 * 1024
#: a 1x1 lossless WebP (VP8L): generating WebP properly is out of scope for a stdlib test server
_WEBP_1X1 = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


# --------------------------------------------------------------------------------------------------
# images


def _huffman_codes(counts: list[int], symbols: list[int]) -> dict[int, tuple[int, int]]:
    """JPEG's canonical Huffman codes: symbol -> (code, length)."""
    codes, code, k = {}, 0, 0
    for length, n in enumerate(counts, start=1):
        for _ in range(n):
            codes[symbols[k]] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    return codes


# the standard luminance DC table; for AC one symbol (end of block) is all a flat block needs
_DC_COUNTS, _DC_SYMBOLS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], list(range(12))
_AC_COUNTS, _AC_SYMBOLS = [1] + [0] * 15, [0x00]


def make_jpeg(width: int, height: int, seed: str = "") -> bytes:
    """A valid baseline grayscale JPEG of that size, one flat shade derived from ``seed``.

    Every 8x8 block is flat, so each carries only its DC coefficient (the first the shade, the rest a
    difference of 0) and an end-of-block code: a real, decodable JPEG in a few lines.
    """
    shade = hashlib.blake2b(seed.encode(), digest_size=1).digest()[0]
    dc, eob = _huffman_codes(_DC_COUNTS, _DC_SYMBOLS), _huffman_codes(_AC_COUNTS, _AC_SYMBOLS)[0]
    bits: list[tuple[int, int]] = []
    first = 8 * (shade - 128)  # the DC term of a flat block, quantised by 1
    cat = abs(first).bit_length()
    bits += [dc[cat], (first if first >= 0 else first + (1 << cat) - 1, cat), eob]
    blocks = -(-width // 8) * -(-height // 8)
    bits += [dc[0], eob] * (blocks - 1)
    acc, n, data = 0, 0, bytearray()
    for value, length in bits:
        acc, n = (acc << length) | value, n + length
        while n >= 8:
            n -= 8
            byte = (acc >> n) & 0xFF
            data += b"\xff\x00" if byte == 0xFF else bytes([byte])  # byte stuffing
    if n:
        byte = ((acc << (8 - n)) | ((1 << (8 - n)) - 1)) & 0xFF  # pad with 1 bits
        data += b"\xff\x00" if byte == 0xFF else bytes([byte])

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    return (b"\xff\xd8"
            + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + segment(0xDB, b"\x00" + b"\x01" * 64)
            + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
            + segment(0xC4, b"\x00" + bytes(_DC_COUNTS) + bytes(_DC_SYMBOLS))
            + segment(0xC4, b"\x10" + bytes(_AC_COUNTS) + bytes(_AC_SYMBOLS))
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + bytes(data) + b"\xff\xd9")


def make_image(mime: str, width: int, height: int, seed: str = "") -> bytes:
    """A real image of that type: PNG and JPEG at the size asked, WebP 1x1."""
    if mime == "image/jpeg":
        return make_jpeg(width, height, seed)
    if mime == "image/webp":
        return _WEBP_1X1
    return make_png(width, height, seed)


def _image_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) of a PNG, None for other formats (not checked here)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def _image_type(data: bytes) -> Optional[str]:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


# --------------------------------------------------------------------------------------------------
# multipart


def form_of(request: RecordedRequest) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """A multipart/form-data body as ``(fields, files)``; files are ``name -> (filename, type, bytes)``."""
    ctype = request.headers.get("Content-Type") or ""
    if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
        raise ValueError("the body is not multipart/form-data with a boundary")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + request.body)
    if not message.is_multipart() or message.defects:
        raise ValueError("the multipart body is malformed")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a part has no name in its Content-Disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[str(name)] = (filename, part.get_content_type(), payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, files


class _Invalid(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class StabilityServer(WireServer):
    provider = "stability"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str = "test-key"):
        super().__init__(host, port)
        self.api_key = api_key

    def handle(self, request: RecordedRequest, respond: Responder) -> None:
        endpoint = request.path[len(PREFIX):] if request.path.startswith(PREFIX) else _PATHS.get(request.path)
        if endpoint not in _FIELDS:
            self._error(respond, 404, f"no route {request.method} {request.path}")
            return
        if request.method != "POST":
            self._error(respond, 405, f"method {request.method} is not allowed; use POST")
            return
        try:
            auth = request.headers.get("Authorization") or ""
            if not auth.startswith("Bearer "):
                raise _Invalid("missing authorization header", 401)
            if auth[7:].strip() != self.api_key:
                raise _Invalid("Incorrect API key provided", 401)
            if len(request.body) > _MAX_BODY:
                raise _Invalid("payloads cannot be larger than 10MiB in size", 413)
            accept = (request.headers.get("Accept") or "image/*").split(";")[0].strip()
            if accept not in ("image/*", "application/json", "*/*"):
                raise _Invalid(f"accept: '{accept}' is not supported; use image/* or application/json")
            try:
                fields, files = form_of(request)
            except ValueError as e:
                raise _Invalid(f"the request body must be multipart/form-data: {e}") from None
            self._check(endpoint, fields, files)
        except _Invalid as e:
            self._error(respond, e.status, str(e))
            return
        self._answer(endpoint, fields, files, accept, respond)

    @staticmethod
    def _error(respond: Responder, status: int, message: str, headers: Optional[dict[str, str]] = None) -> None:
        respond.json(status, {"id": uuid.uuid4().hex, "name": _NAMES.get(status, "error"), "errors": [message]},
                     headers or {})

    @staticmethod
    def _check(endpoint: str, fields: dict[str, str], files: dict[str, Any]) -> None:
        unknown = sorted((set(fields) | set(files)) - _FIELDS[endpoint])
        if unknown:
            raise _Invalid(f"unknown field(s) for {endpoint}: {', '.join(unknown)}")
        if "style_preset" in fields and fields["style_preset"] not in STYLE_PRESETS:
            raise _Invalid(f"style_preset: must be one of {', '.join(STYLE_PRESETS)}")
        if "cfg_scale" in fields:
            try:
                ok = 1 <= float(fields["cfg_scale"]) <= 10
            except ValueError:
                ok = False
            if not ok:
                raise _Invalid("cfg_scale: must be a number in [1, 10]")
        if endpoint in ("inpaint", "structure", "sketch"):
            StabilityServer._check_edit(endpoint, fields, files)
            return
        prompt = fields.get("prompt") or ""
        if not 1 <= len(prompt) <= 10000:
            raise _Invalid("prompt: is required and must be 1 to 10000 characters long")
        if "aspect_ratio" in fields and fields["aspect_ratio"] not in ASPECT_RATIOS:
            raise _Invalid(f"aspect_ratio: must be one of {', '.join(ASPECT_RATIOS)}")
        if "seed" in fields and (not fields["seed"].isdigit() or int(fields["seed"]) > 4294967294):
            raise _Invalid("seed: must be an integer in [0, 4294967294]")
        formats = ("png", "jpeg") if endpoint == "sd3" else ("png", "jpeg", "webp")
        if fields.get("output_format", "png") not in formats:
            raise _Invalid(f"output_format: must be one of {', '.join(formats)}")
        if endpoint == "sd3" and fields.get("model", "sd3.5-large") not in SD3_MODELS:
            raise _Invalid(f"model: must be one of {', '.join(SD3_MODELS)}")
        mode = fields.get("mode", "text-to-image")
        if mode not in ("text-to-image", "image-to-image"):
            raise _Invalid("mode: must be text-to-image or image-to-image")
        image_to_image = mode == "image-to-image" or (endpoint == "ultra" and "image" in files)
        if mode == "image-to-image" and "image" not in files:
            raise _Invalid("image: is required in image-to-image mode")
        if "image" in files and endpoint == "sd3" and mode != "image-to-image":
            raise _Invalid("image: is only accepted with mode=image-to-image")
        if image_to_image:
            data = files["image"][2]
            if _image_type(data) is None:
                raise _Invalid("image: must be a png, jpeg or webp file")
            size = _image_size(data)
            if size is not None and min(size) < 64:
                raise _Invalid(f"image: each side must be at least 64 pixels, got {size[0]}x{size[1]}")
            try:
                strength = float(fields["strength"])
            except (KeyError, ValueError):
                raise _Invalid("strength: is required with an image and must be a number in [0, 1]") from None
            if not 0 <= strength <= 1:
                raise _Invalid("strength: must be in [0, 1]")
            if "aspect_ratio" in fields:
                raise _Invalid("aspect_ratio: is not accepted with an input image (the output takes its shape)")
        elif "strength" in fields:
            raise _Invalid("strength: is only accepted with an input image")

    @staticmethod
    def _check_edit(endpoint: str, fields: dict[str, str], files: dict[str, Any]) -> None:
        """The edit/inpaint and control/* services: an image (and for inpaint a mask of its size, or an
        image with transparent pixels), a prompt, control_strength in [0, 1]."""
        if not 1 <= len(fields.get("prompt") or "") <= 10000:
            raise _Invalid("prompt: is required and must be 1 to 10000 characters long")
        if "image" not in files:
            raise _Invalid("image: is required")
        data = files["image"][2]
        if _image_type(data) is None:
            raise _Invalid("image: must be a png, jpeg or webp file")
        size = _image_size(data)
        if size is not None and min(size) < 64:
            raise _Invalid(f"image: each side must be at least 64 pixels, got {size[0]}x{size[1]}")
        if fields.get("output_format", "png") not in ("png", "jpeg", "webp"):
            raise _Invalid("output_format: must be one of png, jpeg, webp")
        if "seed" in fields and (not fields["seed"].isdigit() or int(fields["seed"]) > 4294967294):
            raise _Invalid("seed: must be an integer in [0, 4294967294]")
        if endpoint == "inpaint":
            if "mask" in files:
                mask_size = _image_size(files["mask"][2])
                if mask_size is None:
                    raise _Invalid("mask: must be a png file")
                if size is not None and mask_size != size:
                    raise _Invalid(f"mask: must have the image's dimensions ({size[0]}x{size[1]}), "
                                   f"got {mask_size[0]}x{mask_size[1]}")
            elif not (data.startswith(b"\x89PNG") and len(data) > 25 and data[25] in (4, 6)):
                raise _Invalid("mask: is required unless the image has an alpha channel (its transparent "
                               "pixels are inpainted)")
        elif "control_strength" in fields:
            try:
                ok = 0 <= float(fields["control_strength"]) <= 1
            except ValueError:
                ok = False
            if not ok:
                raise _Invalid("control_strength: must be a number in [0, 1]")

    def _answer(self, endpoint: str, fields: dict[str, str], files: dict[str, Any], accept: str,
                respond: Responder) -> None:
        reply = self.next_reply()
        if reply is not None and reply.delay:
            time.sleep(reply.delay)
        if reply is not None and reply.status != 200:
            self._error(respond, reply.status, reply.error_message or f"scripted HTTP {reply.status}", reply.headers)
            return
        fmt = fields.get("output_format", "png")
        seed = int(fields.get("seed") or 0) or random.randint(1, 4294967294)  # 0 means "pick one"
        size = _image_size(files["image"][2]) if "image" in files else None
        width, height = size or ASPECT_RATIOS[fields.get("aspect_ratio", "1:1")]
        if size is None and "image" in files:  # a JPEG or WebP input: the first generate size stands in
            width, height = ASPECT_RATIOS["1:1"]
        image = make_image(_MIME[fmt], width, height, f"{endpoint}|{fields.get('prompt')}|{seed}")
        finish = (reply.finish_reason if reply is not None else None) or "SUCCESS"
        headers = dict(reply.headers) if reply is not None else {}
        if accept == "application/json":
            respond.json(200, {"image": base64.b64encode(image).decode(), "finish_reason": finish, "seed": seed},
                         headers)
        else:
            respond.bytes(200, image, _MIME[fmt], {"finish-reason": finish, "seed": str(seed), **headers})


if __name__ == "__main__":
    serve_main(StabilityServer)
