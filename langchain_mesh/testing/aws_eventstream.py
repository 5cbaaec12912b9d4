"""The AWS event-stream binary framing (``application/vnd.amazon.eventstream``), for the local AWS servers.

Streaming AWS APIs (SageMaker ``InvokeEndpointWithResponseStream``, Bedrock ``ConverseStream`` and
``InvokeModelWithResponseStream``, Transcribe...) answer with a body of binary messages, which
botocore decodes and checks (``botocore.eventstream``). The local servers must write exactly that
framing, CRCs included, so the real boto3 client's decoder is what the tests exercise. Each message::

    [total length u32][headers length u32][prelude CRC32 u32][headers][payload][message CRC32 u32]

big-endian; the prelude CRC covers the first 8 bytes, the message CRC every byte before it. A
header is ``[name length u8][name][type u8][value]`` with the value types below.

A successful event carries ``:message-type: event``, ``:event-type: <member name>`` and
``:content-type``; a modelled error inside the stream ``:message-type: exception`` and
``:exception-type: <shape name>`` with a JSON payload; an unmodelled one ``:message-type: error``
with ``:error-code`` and ``:error-message``. :func:`write_stream` sends messages as an HTTP chunked
body and can cut it mid-stream, as a provider that dies does.

Stdlib only, shared by :mod:`.sagemaker` and the Bedrock server.
"""

from __future__ import annotations

import datetime as _dt
import json
import socket
import struct
import time
import uuid as _uuid
from binascii import crc32
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .wire import ClientGone, Responder

__all__ = [
    "CONTENT_TYPE", "Typed", "encode_headers", "encode_message", "event_message", "exception_message",
    "error_message", "write_stream",
]

CONTENT_TYPE = "application/vnd.amazon.eventstream"

# header value types (the numbering is the wire format's)
BOOL_TRUE, BOOL_FALSE, BYTE, SHORT, INTEGER, LONG, BYTE_ARRAY, STRING, TIMESTAMP, UUID = range(10)
_INT_FORMATS = {BYTE: ">b", SHORT: ">h", INTEGER: ">i", LONG: ">q", TIMESTAMP: ">q"}
# limits botocore enforces when decoding (botocore.eventstream): stay inside them when encoding
_MAX_HEADERS_LENGTH = 128 * 1024
_MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024


@dataclass(frozen=True)
class Typed:
    """A header value with an explicit wire type (``Typed(SHORT, 3)``), for the types plain Python
    values cannot pick: ints are sent as INTEGER (LONG when they do not fit) otherwise."""

    kind: int
    value: Any


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _header_value(value: Any) -> bytes:
    if not isinstance(value, Typed):
        if isinstance(value, bool):
            value = Typed(BOOL_TRUE if value else BOOL_FALSE, value)
        elif isinstance(value, int):
            value = Typed(INTEGER if -2**31 <= value < 2**31 else LONG, value)
        elif isinstance(value, (bytes, bytearray)):
            value = Typed(BYTE_ARRAY, bytes(value))
        elif isinstance(value, str):
            value = Typed(STRING, value)
        elif isinstance(value, _dt.datetime):
            value = Typed(TIMESTAMP, value)
        elif isinstance(value, _uuid.UUID):
            value = Typed(UUID, value)
        else:
            raise TypeError(f"no event-stream header type for {type(value).__name__}")
    kind, v = value.kind, value.value
    if kind in (BOOL_TRUE, BOOL_FALSE):
        return bytes([kind])
    if kind == TIMESTAMP and isinstance(v, _dt.datetime):
        v = int(v.timestamp() * 1000)  # milliseconds since the epoch
    if kind in _INT_FORMATS:
        return bytes([kind]) + struct.pack(_INT_FORMATS[kind], v)
    if kind in (BYTE_ARRAY, STRING):
        data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        if len(data) > 0xFFFF:
            raise ValueError("an event-stream header value holds at most 65535 bytes")
        return bytes([kind]) + struct.pack(">H", len(data)) + data
    if kind == UUID:
        return bytes([kind]) + (v.bytes if isinstance(v, _uuid.UUID) else bytes(v))
    raise ValueError(f"unknown event-stream header type {kind}")


def encode_headers(headers: Mapping[str, Any]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw = name.encode("utf-8")
        if not 0 < len(raw) < 256:
            raise ValueError(f"event-stream header name {name!r} must be 1-255 bytes")
        out += bytes([len(raw)]) + raw + _header_value(value)
    return bytes(out)


def encode_message(headers: Mapping[str, Any], payload: bytes = b"") -> bytes:
    """One complete message, both CRCs included."""
    head = encode_headers(headers)
    if len(head) > _MAX_HEADERS_LENGTH or len(payload) > _MAX_PAYLOAD_LENGTH:
        raise ValueError("event-stream message too large (headers 128 KiB, payload 24 MiB at most)")
    total = 12 + len(head) + len(payload) + 4
    prelude = _u32(total) + _u32(len(head))
    prelude += _u32(crc32(prelude) & 0xFFFFFFFF)
    body = prelude + head + payload
    return body + _u32(crc32(body) & 0xFFFFFFFF)


def event_message(event_type: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    """An event of the stream's union member ``event_type`` (``PayloadPart``, ``chunk``, ``contentBlockDelta``)."""
    return encode_message({":event-type": event_type, ":content-type": content_type, ":message-type": "event"},
                          payload)


def exception_message(exception_type: str, fields: Mapping[str, Any]) -> bytes:
    """A modelled error inside the stream (``ModelStreamError``...): botocore raises it as that code."""
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, json.dumps(fields).encode())


def error_message(code: str, message: str) -> bytes:
    """An unmodelled error inside the stream."""
    return encode_message({":error-code": code, ":error-message": message, ":message-type": "error"})


def write_stream(respond: Responder, messages: Iterable[bytes], *, headers: Mapping[str, str] = {},
                 chunk_delay: float = 0.0, cut_after: Optional[int] = None, status: int = 200) -> None:
    """Send ``messages`` as a chunked event-stream body, one HTTP chunk per message.

    ``cut_after=N`` sends N messages and then aborts the connection without the terminating
    chunk: the client sees a body that breaks mid-stream (the same contract as ``Responder.sse``).
    """
    # Responder has no binary streaming writer; its header writer and handler are used directly
    respond._start(status, CONTENT_TYPE, headers, None)
    h = respond._h
    w = h.wfile
    try:
        for i, msg in enumerate(messages):
            if cut_after is not None and i >= cut_after:
                w.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            if i and chunk_delay:
                time.sleep(chunk_delay)
            w.write(b"%x\r\n%s\r\n" % (len(msg), msg))
            w.flush()
        w.write(b"0\r\n\r\n")
        w.flush()
    except (BrokenPipeError, ConnectionResetError) as e:
        h.close_connection = True
        raise ClientGone() from e
