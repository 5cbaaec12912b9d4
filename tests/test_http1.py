"""The lean HTTP/1.1 client (connections/http1.py) against servers that write exact bytes: bodies by
length, by chunks and by close; keep-alive reuse and a dropped idle connection; timeouts, refused and
cut connections, invalid answers; abandoning an answer closes its connection; the per-origin limit;
flow control of a streamed body; TLS with the CA bundle from SSL_CERT_FILE."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from typing import Any, Awaitable, Callable

import pytest

pytest.importorskip("httptools")

from langchain_mesh.connections import http1  # noqa: E402
from langchain_mesh.connections.http1 import (  # noqa: E402
    ConnectError,
    ConnectionClosed,
    HTTPClient,
    ProtocolError,
    ReadTimeout,
    Target,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server running ``handler`` per connection; counts connections and records requests."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = 0
        self.server: Any = None
        self.port = 0

    async def __aenter__(self) -> "Server":
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # the client hung up, or the test ended
            finally:
                w.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()

    def target(self, path: str = "/v1/x", headers: Any = ()) -> Target:
        return Target("POST", f"http://127.0.0.1:{self.port}{path}", headers)

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        req = head + await r.readexactly(length)
        self.requests.append(req)
        return req


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status.encode(), len(body), extra, body)


async def fetch(client: HTTPClient, target: Target) -> bytes:
    """One whole answer's body; the connection goes back to the pool (or is closed)."""
    resp = await client.request(target, b"{}")
    try:
        assert resp.status == 200
        return await resp.read()
    finally:
        resp.release()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)


async def test_the_request_bytes_and_keep_alive_reuse():
    async def handler(r, w):
        while True:
            req = await srv.read_request(r)
            w.write(answer(b'{"echo":%d}' % len(req), extra=b"X-Twice: a\r\nx-twice: b\r\n"))
            await w.drain()

    async with Server(handler) as srv:
        client = HTTPClient()
        target = srv.target("/v1/chat?api-version=1", {"Authorization": "Bearer k", "Content-Length": "999",
                                                        "Host": "evil"})
        for _ in range(3):
            resp = await client.request(target, b'{"a":1}')
            assert resp.status == 200 and resp.headers["content-type"] == "application/json"
            assert resp.headers["x-twice"] == "a, b"
            assert (await resp.read()).startswith(b'{"echo":')
            resp.release()
        await client.close()
    assert srv.connections == 1  # kept alive
    assert srv.requests[0] == (b"POST /v1/chat?api-version=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                               b"Authorization: Bearer k\r\nContent-Length: 7\r\n\r\n{\"a\":1}" % srv.port)


def test_the_host_header_leaves_out_a_default_port_and_refuses_line_breaks():
    t = Target("POST", "https://api.example.com/v1/chat/completions", [("api-key", "k")])
    assert t.origin == ("https", "api.example.com", 443)
    assert t.head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\napi-key: k\r\n")
    assert Target("POST", "http://[::1]:8080/").head.split(b"\r\n")[1] == b"Host: [::1]:8080"
    with pytest.raises(ValueError, match="line break"):
        Target("POST", "http://h/", {"X-Evil": "a\r\nInjected: yes"})
    with pytest.raises(ValueError, match="http"):
        Target("POST", "ftp://h/")


async def test_chunked_bodies_whole_and_piece_by_piece():
    gate = asyncio.Event()

    async def handler(r, w):
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"data: 1\n\n"))
        await w.drain()
        await gate.wait()
        w.write(chunked(b"data: 2\n\n", b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await w.drain()
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"ab", b"cd") + b"0\r\n\r\n")
        await w.drain()
        await r.read()

    async with Server(handler) as srv:
        client = HTTPClient()
        resp = await client.request(srv.target(), b"{}", stream=True)
        assert await resp.readany() == b"data: 1\n\n"
        gate.set()
        rest = b""
        while piece := await resp.readany():
            rest += piece
        assert rest == b"data: 2\n\ndata: [DONE]\n\n"
        resp.release()
        assert await fetch(client, srv.target()) == b"abcd"
        await client.close()
    assert srv.connections == 1


async def test_a_body_delimited_by_the_close_ends_there_and_the_connection_is_not_reused():
    async def handler(r, w):
        req = await srv.read_request(r)
        if req.startswith(b"POST /cut "):  # a length given, and the close before it
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-LENGTH: 100\r\n\r\nonly part")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await w.drain()
        w.close()

    async with Server(handler) as srv:
        client = HTTPClient()
        for _ in range(2):
            assert await fetch(client, srv.target()) == b"all of it"
        resp = await client.request(srv.target("/cut"), b"{}")  # cut short: an error, not a whole body
        with pytest.raises(ConnectionClosed):
            await resp.read()
        resp.release()
        await client.close()
    assert srv.connections == 3


async def test_an_idle_connection_the_server_dropped_is_replaced_once():
    async def handler(r, w):
        await srv.read_request(r)
        w.write(answer(b"{}"))  # says nothing of closing, then closes: a keep-alive timeout
        await w.drain()

    async with Server(handler) as srv:
        client = HTTPClient()
        for _ in range(3):
            assert await fetch(client, srv.target()) == b"{}"
            await asyncio.sleep(0.05)  # the server's close arrives while the connection idles
        await client.close()
    assert srv.connections == 3 and len(srv.requests) == 3


async def test_a_connection_closed_before_the_answer_of_a_fresh_request_is_an_error():
    async def handler(r, w):
        await srv.read_request(r)  # and hang up without answering

    async with Server(handler) as srv:
        client = HTTPClient()
        with pytest.raises(ConnectionClosed, match="closed the connection"):
            await client.request(srv.target(), b"{}")
        await client.close()
    assert srv.connections == 1  # a fresh connection is not retried: the request may have been acted on


async def test_a_stream_cut_in_the_middle_raises_after_what_arrived():
    async def handler(r, w):
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"data: 1\n\n"))
        await w.drain()

    async with Server(handler) as srv:
        client = HTTPClient()
        resp = await client.request(srv.target(), b"{}", stream=True)
        assert await resp.readany() == b"data: 1\n\n"
        with pytest.raises(ConnectionClosed):
            await resp.readany()
        resp.release()
        await client.close()


async def test_timeouts_refusals_and_invalid_answers():
    async def silent(r, w):
        await srv.read_request(r)
        await r.read()  # never answers

    async with Server(silent) as srv:
        client = HTTPClient(read_timeout=0.2)
        with pytest.raises(ReadTimeout) as e:
            await client.request(srv.target(), b"{}")
        assert isinstance(e.value, TimeoutError)
        await client.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HTTPClient()
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        await client.request(Target("POST", f"http://127.0.0.1:{port}/"), b"{}")

    async def garbage(r, w):
        await srv2.read_request(r)
        w.write(b"SMTP ready\r\n\r\n")
        await w.drain()
        await r.read()

    async with Server(garbage) as srv2:
        with pytest.raises(ProtocolError, match="invalid HTTP"):
            await client.request(srv2.target(), b"{}")
    await client.close()


async def test_abandoning_an_answer_closes_its_connection():
    hung_up = asyncio.Event()

    async def handler(r, w):
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"data: 1\n\n"))
        await w.drain()
        await r.read()  # until the client hangs up
        hung_up.set()

    async with Server(handler) as srv:
        client = HTTPClient()
        resp = await client.request(srv.target(), b"{}", stream=True)
        await resp.readany()
        resp.release()  # before the end
        await asyncio.wait_for(hung_up.wait(), 5)
        hung_up.clear()
        task = asyncio.ensure_future(client.request(srv.target(), b"{}", stream=True))
        await asyncio.sleep(0.05)
        resp = await task
        assert await resp.readany() == b"data: 1\n\n"
        task2 = asyncio.ensure_future(resp.readany())  # waits: nothing more comes
        await asyncio.sleep(0.05)
        task2.cancel()  # a client of the gateway gone: the task serving it is cancelled
        with pytest.raises(asyncio.CancelledError):
            await task2
        resp.release()
        await asyncio.wait_for(hung_up.wait(), 5)
        await client.close()
    assert srv.connections == 2


async def test_cancelling_a_request_waiting_for_its_answer_closes_the_connection():
    hung_up = asyncio.Event()

    async def handler(r, w):
        await srv.read_request(r)
        await r.read()
        hung_up.set()

    async with Server(handler) as srv:
        client = HTTPClient()
        task = asyncio.ensure_future(client.request(srv.target(), b"{}"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(hung_up.wait(), 5)
        await client.close()


async def test_at_most_limit_connections_per_origin():
    open_now = peak = 0

    async def handler(r, w):
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                await srv.read_request(r)
                await asyncio.sleep(0.02)
                w.write(answer(b"{}"))
                await w.drain()
        finally:
            open_now -= 1

    async with Server(handler) as srv:
        client = HTTPClient(limit=2)
        assert await asyncio.gather(*(fetch(client, srv.target()) for _ in range(8))) == [b"{}"] * 8
        await client.close()
    assert peak == 2 and srv.connections == 2


async def test_a_large_streamed_body_is_read_with_flow_control():
    payload = bytes(range(256)) * (3 * 4096 + 7)  # about 3 MiB

    async def handler(r, w):
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for i in range(0, len(payload), 65536):
            w.write(payload[i:i + 65536])
            await w.drain()
        await r.read()

    async with Server(handler) as srv:
        client = HTTPClient()
        resp = await client.request(srv.target(), b"{}", stream=True)
        await asyncio.sleep(0.3)  # a slow reader: the buffer fills past the high-water mark
        assert resp._conn.paused and resp.buffered < 2 * http1._STREAM_HIGH_WATER
        got = []
        while piece := await resp.readany():
            got.append(piece)
        assert b"".join(got) == payload
        resp.release()
        await client.close()


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


async def test_tls_trusts_the_bundle_in_ssl_cert_file(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handler(r, w):
        req = await r.readuntil(b"\r\n\r\n")
        await r.readexactly(2)
        w.write(answer(b'{"tls":true}'))
        await w.drain()
        assert req.startswith(b"POST /v1/x HTTP/1.1\r\n")

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    target = Target("POST", f"https://127.0.0.1:{port}/v1/x")
    try:
        client = HTTPClient()  # certifi's bundle: the self-signed certificate is refused
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await client.request(target, b"{}")
        await client.close()
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        client = HTTPClient()
        resp = await client.request(target, b"{}")
        assert resp.status == 200 and await resp.read() == b'{"tls":true}'
        resp.release()
        await client.close()
    finally:
        server.close()


def test_without_httptools_the_async_path_is_the_sdks(monkeypatch):
    from langchain_mesh.connections.openai_base import lean_transport

    assert lean_transport()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert not lean_transport()  # only the SDK's client honours proxies
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setattr(http1, "httptools", None)
    assert not lean_transport()


async def test_headers_are_read_from_a_head_that_came_in_pieces_after_an_interim_answer():
    head = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"  # not the answer: its headers are not
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After:  7 \r\n"
            b"X-Seen: a\r\nx-seen: b\r\nContent-Length: 2\r\n\r\n")

    async def handler(r, w):
        await srv.read_request(r)
        for i in range(len(head)):  # a byte at a time: the head spans many reads
            w.write(head[i:i + 1])
            await w.drain()
            await asyncio.sleep(0)
        w.write(b"{}")
        await w.drain()

    async with Server(handler) as srv:
        client = HTTPClient()
        resp = await client.request(srv.target(), b"{}")
        try:
            assert resp.status == 429 and await resp.read() == b"{}"
            assert resp.headers == {"content-type": "application/json", "retry-after": "7", "x-seen": "a, b",
                                    "content-length": "2"}
        finally:
            resp.release()
        await client.close()


async def test_an_endless_head_is_refused(monkeypatch):
    monkeypatch.setattr(http1, "_MAX_HEAD", 4096)

    async def handler(r, w):
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(1000):
            w.write(b"x-filler-%d: %s\r\n" % (i, b"y" * 64))
            await w.drain()
            await asyncio.sleep(0)

    async with Server(handler) as srv:
        client = HTTPClient()
        with pytest.raises(ProtocolError, match="larger than 4096 bytes"):
            await client.request(srv.target(), b"{}")
        await client.close()
