"""mesh serve's HTTP protocol (server/protocol.py) answers as uvicorn's own httptools protocol does.

The same ASGI app runs under uvicorn twice, with ``http=MeshHttpProtocol`` and with ``http="httptools"``;
each scenario's raw bytes go to both over a socket and the bytes that come back (until the server
closes, or a quiet moment) must be the same, but for the ``date`` line. The scenarios are the HTTP
that clients and attackers send: keep-alive, pipelining, chunked and ``Expect: 100-continue`` bodies,
bodies past the read buffer, HEAD, HTTP/1.0, ``Connection: close``, malformed requests, an app that
fails, answers nothing, answers short or streams.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

from langchain_mesh.server.protocol import MeshHttpProtocol  # noqa: E402


async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom (expected by the test)")
    if path == "/nothing":
        return
    if path == "/half":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for piece in (b"one", b"", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"v\r\nset-cookie: x")]})
        return
    if path in ("/bad-length", "/word-length"):
        length = b"5\r\nset-cookie: x" if path == "/bad-length" else b"five"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
        await send({"type": "http.response.body", "body": b"12345"})
        return
    if path == "/no-content":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    out = (f"{scope['method']} {path} q={scope['query_string'].decode()} v={scope['http_version']} "
           f"raw={scope['raw_path'].decode()} n={len(body)} sum={sum(body) % 9973} "
           f"h={sorted(k.decode() for k, _ in scope['headers'])}").encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(out)),
                            (b"X-Mixed-Case", b"yes")]})
    await send({"type": "http.response.body", "body": out})


class _Server:
    def __init__(self, http, asgi=app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(asgi, host="127.0.0.1", port=self.port, http=http, loop="uvloop", lifespan="off",
                                log_level="critical", timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def servers():
    ours, theirs = _Server(MeshHttpProtocol), _Server("httptools")
    yield ours, theirs
    ours.stop()
    theirs.stop()


def _exchange(port, pieces, quiet=0.4):
    """Send each piece (bytes, or a float: seconds to wait, or "read": wait for an answer's first
    bytes); then read until the server closes or says nothing for ``quiet`` seconds."""
    got = b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(quiet)
        for piece in pieces:
            if isinstance(piece, float):
                time.sleep(piece)
            elif piece == "read":
                got += s.recv(65536)
            else:
                s.sendall(piece)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return got + b"<closed>"
                got += chunk
        except (socket.timeout, ConnectionResetError):
            return got


def _same(servers, pieces, quiet=0.4):
    ours, theirs = (re.sub(rb"date: [^\r]*\r\n", b"", _exchange(s.port, pieces, quiet)) for s in servers)
    assert ours == theirs
    return ours


def _post(path, body, extra=b""):
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


GET = b"GET /a%20b?x=1&y=%2F HTTP/1.1\r\nhost: x\r\nuser-agent: t\r\n\r\n"

SCENARIOS = {
    "get": [GET],
    "two in turn": [GET, "read", GET],
    "pipelined": [GET + _post(b"/p", b"hello") + GET],
    "post": [_post(b"/p", b"x" * 1000)],
    "chunked body": [b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"],
    "expect 100-continue": [b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n",
                            "read", b"abcd"],
    "a body past the read buffer": [_post(b"/big", bytes(range(256)) * 1200)],
    "a body in pieces": [b"POST /s HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345", 0.1, b"67890"],
    "head": [b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\n"],
    "http/1.0": [b"GET /old HTTP/1.0\r\n\r\n"],
    "connection close": [b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"],
    "malformed": [b"GET / HTTP/1.1\r\nbad header line\r\n\r\n"],
    "garbage": [b"\x00\x01\x02 nonsense\r\n\r\n"],
    "the app fails": [b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n"],
    "the app answers nothing": [b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n"],
    "the app answers short": [b"GET /half HTTP/1.1\r\nhost: x\r\n\r\n"],
    "the app streams": [b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n"],
    "a header the app must not write": [b"GET /bad-header HTTP/1.1\r\nhost: x\r\n\r\n"],
    "a length the app must not write": [b"GET /bad-length HTTP/1.1\r\nhost: x\r\n\r\n"],
    "a length that is no number": [b"GET /word-length HTTP/1.1\r\nhost: x\r\n\r\n"],
    "no content": [b"GET /no-content HTTP/1.1\r\nhost: x\r\n\r\n" + GET],
    "a websocket upgrade": [b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
                            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_answers_as_uvicorns_own_protocol(servers, name):
    if name == "a websocket upgrade" and servers[1].server.config.ws_protocol_class is not None:
        pytest.skip("uvicorn here would upgrade it (a WebSocket library is installed); mesh serve answers HTTP")
    got = _same(servers, SCENARIOS[name])
    assert got  # every scenario gets an answer (or at least a close)


def test_the_answers_are_what_the_app_sent(servers):
    ours = servers[0]
    got = _exchange(ours.port, [GET + _post(b"/p", b"hello")])
    first, second = got.split(b"HTTP/1.1 201 Created\r\n")[1:]
    assert b"GET /a b q=x=1&y=%2F v=1.1 raw=/a%20b n=0" in first
    assert b"x-mixed-case: yes\r\n" in first  # names lower-cased, as uvicorn writes them
    assert b"POST /p q= v=1.1 raw=/p n=5" in second
    assert b"<closed>" not in got  # kept alive
    assert _exchange(ours.port, [b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n"]).startswith(b"HTTP/1.1 500 ")
    bad = _exchange(ours.port, [b"GET /bad-header HTTP/1.1\r\nhost: x\r\n\r\n"])
    assert bad == b"<closed>"  # refused in the app's send, never written (the head had begun: closed, as uvicorn)


def test_a_disconnect_reaches_the_app_and_graceful_shutdown_waits_for_answers():
    events: list[str] = []

    async def slow(scope, receive, send):
        await receive()
        if scope["path"] == "/watch":  # a client that goes away: receive says so
            events.append((await receive())["type"])
            return
        await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = _Server(MeshHttpProtocol, slow)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET /watch HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == ["http.disconnect"]
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.settimeout(5)
            s.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.1)
            server.server.should_exit = True  # shutdown while the answer is on its way: it still comes
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"ok") and b"connection: close" in got
    finally:
        server.stop()


def test_a_slow_reader_gets_a_large_stream_whole():
    """Writes wait for the client (the transport's pause_writing, then drain in send): 16 MiB streamed
    to a client that reads only after a pause arrives whole and in order."""
    piece = bytes(range(256)) * 1024  # 256 KiB

    async def big(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(64):
            await send({"type": "http.response.body", "body": bytes([i]) + piece[1:], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    server = _Server(MeshHttpProtocol, big)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.settimeout(10)
            s.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.5)  # the server's buffers fill meanwhile
            got = bytearray()
            while not got.endswith(b"\r\n0\r\n\r\n"):
                chunk = s.recv(1 << 20)
                assert chunk, "closed before the end of the stream"
                got += chunk
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        data, rest = bytearray(), body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if not n:
                break
            data += rest[:n]
            rest = rest[n + 2:]
        assert len(data) == 64 * len(piece)
        assert [data[i * len(piece)] for i in range(64)] == list(range(64))
    finally:
        server.stop()


def test_answer_lengths_are_not_kept_as_checked_headers(servers):
    from langchain_mesh.server import protocol

    for n in range(40):  # answers of as many lengths
        _exchange(servers[0].port, [_post(b"/p", b"x" * n)], quiet=0.05)
    assert protocol._CHECKED and not [v for k, v in protocol._CHECKED if k.lower() == b"content-length" and v.isdigit()]
