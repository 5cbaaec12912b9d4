"""Server-sent events as OpenAI streams them: one ``data: <json>`` event per chunk, ``[DONE]`` last."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["event", "DONE", "HEADERS"]

DONE = b"data: [DONE]\n\n"
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"x-accel-buffering", b"no")]  # proxies (nginx) must pass each event on at once


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
