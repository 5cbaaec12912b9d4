"""The AWS event-stream encoder of the local AWS servers, checked against botocore's own decoder."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from langchain_mesh.testing import aws_eventstream as es

botocore_es = pytest.importorskip("botocore.eventstream")


def _decode(data: bytes) -> list:
    buf = botocore_es.EventStreamBuffer()
    buf.add_data(data)
    return list(buf)


def test_every_header_type_round_trips_through_botocore():
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {"t": True, "f": False, "b": es.Typed(es.BYTE, -3), "s": es.Typed(es.SHORT, 300),
               "i": 70000, "l": 2**40, "ba": b"\x00\x01", "str": "héllo", "ts": when, "u": uid}
    (msg,) = _decode(es.encode_message(headers, b"payload"))
    assert msg.payload == b"payload"
    assert msg.headers["t"] is True and msg.headers["f"] is False
    assert (msg.headers["b"], msg.headers["s"], msg.headers["i"], msg.headers["l"]) == (-3, 300, 70000, 2**40)
    assert msg.headers["ba"] == b"\x00\x01" and msg.headers["str"] == "héllo"
    assert msg.headers["ts"] == int(when.timestamp() * 1000) and msg.headers["u"] == uid.bytes


def test_several_messages_and_both_crcs_are_checked():
    data = es.event_message("PayloadPart", b"one") + es.exception_message("ModelStreamError", {"Message": "x"})
    first, second = _decode(data)
    assert first.headers[":event-type"] == "PayloadPart" and first.payload == b"one"
    assert second.headers[":exception-type"] == "ModelStreamError"
    assert second.to_response_dict()["status_code"] == 400

    corrupt = bytearray(es.event_message("PayloadPart", b"one"))
    corrupt[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    with pytest.raises(botocore_es.ChecksumMismatch):
        _decode(bytes(corrupt))
    corrupt = bytearray(es.event_message("PayloadPart", b"one"))
    corrupt[2] ^= 0x01  # the total length: the prelude CRC no longer matches
    with pytest.raises(botocore_es.ChecksumMismatch):
        _decode(bytes(corrupt))


def test_error_message_and_limits():
    (msg,) = _decode(es.error_message("InternalFailure", "boom"))
    assert msg.headers[":message-type"] == "error" and msg.headers[":error-message"] == "boom"
    with pytest.raises(ValueError):
        es.encode_headers({"x" * 256: "v"})
    with pytest.raises(TypeError):
        es.encode_headers({"x": 1.5})
