"""What the "ideal model" oracles of the langchain-tests suites share.

``test_langchain_scripted_integration.py`` answers at the connection layer (a scripted connection),
``test_langchain_openai_integration.py`` at the wire (a local OpenAI server): both compute their
unscripted answers with these helpers, so the two suites ask the same of the LangChain face.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import httpx
import pytest

__all__ = ["instance", "quoted", "png", "serve_image_fixtures_locally"]


def quoted(text: str) -> list[str]:
    """The quoted strings of a prompt ('single' or "double")."""
    return [a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", text)]


def instance(schema: Any, prompt: str, defs: dict[str, Any], key: str = "") -> Any:
    """A value valid against ``schema``, taking strings and numbers from the prompt where it can."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return instance(defs.get(schema["$ref"].split("/")[-1], {}), prompt, defs, key)
    for k in ("anyOf", "oneOf"):
        if k in schema:
            options = [o for o in schema[k] if o.get("type") != "null"] or schema[k]
            return instance(options[0], prompt, defs, key)
    if "enum" in schema:
        return schema["enum"][0]
    t = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t == "object":
        props = schema.get("properties", {})
        return {k: instance(v, prompt, defs, k) for k, v in props.items()}
    if t == "array":
        return [instance(schema.get("items", {}), prompt, defs, key)]
    if t in ("integer", "number"):
        nums = re.findall(r"-?\d+", prompt)
        return int(nums[0]) if nums else 1
    if t == "boolean":
        return True
    if t == "null":
        return None
    q = quoted(prompt)
    return q[0] if q else (f"{key}: {prompt[:60]}" if key else prompt[:60]) or "ok"


def png(width: int = 2, height: int = 2) -> bytes:
    """A valid red RGB PNG."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(autouse=True)
def serve_image_fixtures_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image tests download a PNG with httpx.get; these machines have no internet, so serve it.

    (The openai SDK is built on ``httpx2`` and is not affected.) Import it into a test module to use it.
    """
    data = png()

    def fake_get(url: str, *a: Any, **kw: Any) -> httpx.Response:
        if url.endswith(".png"):
            return httpx.Response(200, content=data, request=httpx.Request("GET", url))
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(httpx, "get", fake_get)


class EveryFeatureOn:
    """langchain-tests feature flags for an "oracle" model that can answer every kind of test:
    mix in before ``ChatModelIntegrationTests``."""

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True
