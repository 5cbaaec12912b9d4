"""Deterministic stand-ins for what a model produces, shared by every local provider server and the
scripted connection: tokens to count and stream, vectors to embed, images to return, JSON to fill a
schema. Same input, same output, so tests can assert exact values."""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from typing import Any

__all__ = ["split_tokens", "count_tokens", "stream_pieces", "embed_text", "embed_image_words", "to_float32", "token_logprob", "alternative_tokens", "make_png", "sample_from_schema"]

# A token is a word or one punctuation mark, with the whitespace before it: joining tokens gives the
# text back, so truncating to N tokens and streaming token by token never loses a character.
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")
_WORD = re.compile(r"\S+\s*")


def split_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def stream_pieces(text: str) -> list[str]:
    """Stream pieces: each word with the whitespace after it (joined, they give the text back)."""
    return _WORD.findall(text)


def to_float32(x: float) -> float:
    """Round to float32, so a float answer and a base64 answer decode to the same numbers."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def embed_text(text: str, dimensions: int) -> list[float]:
    """A normalised hashed bag of words: same text, same vector; shared words, closer vectors."""
    vec = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()) or [text]:
        h = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vec[int.from_bytes(h[:4], "little") % dimensions] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [to_float32(v / norm) for v in vec]


def embed_image_words(data: bytes) -> str:
    """An image as pseudo-words for :func:`embed_text`: the same image, the same vector (the local
    servers' stand-in for an image encoder)."""
    digest = hashlib.sha256(data).hexdigest()
    return " ".join("img" + digest[i:i + 8] for i in range(0, 64, 8))


def token_logprob(token: str) -> float:
    """A deterministic negative log-probability derived from the token's hash."""
    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little")
    return -round(0.01 + (h % 500) / 100, 4)


def alternative_tokens(token: str, count: int) -> list[str]:
    """``count`` plausible alternatives to ``token`` (itself first), for top-log-prob lists."""
    word = token.strip() or token
    out: list[str] = [token]
    for alt in (token.upper(), token.lower(), token.title(), " " + word, word + "s", word + "."):
        if len(out) >= count:
            break
        if alt not in out:
            out.append(alt)
    out += [f"{word}{i}" for i in range(count - len(out))]
    return out[:count]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(width: int, height: int, seed: str = "") -> bytes:
    """A valid RGB PNG of that size: a vertical gradient whose colour depends on ``seed``."""
    hue = hashlib.blake2b(seed.encode(), digest_size=3).digest()
    rows = []
    for y in range(height):
        shade = y * 255 // max(height - 1, 1)
        pixel = bytes(((hue[0] + shade) % 256, hue[1], (hue[2] + 255 - shade) % 256))
        rows.append(b"\x00" + pixel * width)  # filter byte 0, then the row's pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + _png_chunk(b"IEND", b""))


def sample_from_schema(schema: Any, text: str = "") -> Any:
    """A small instance of a JSON schema, so unscripted structured output still parses."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_from_schema(schema[key][0], text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: sample_from_schema(v, text) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    return {"string": text, "integer": 0, "number": 0.0, "boolean": False}.get(kind)
