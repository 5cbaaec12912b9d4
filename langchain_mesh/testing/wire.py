"""The base of the local provider servers: a real HTTP server in a background thread, scriptable per
test and recording every request it receives.

Each provider module (``testing/openai.py``, ``testing/snowflake_cortex.py``...) subclasses
:class:`WireServer` and implements :meth:`WireServer.handle` with that provider's paths, auth checks,
response bodies, SSE framing and error bodies. What is shared lives here:

* a queue of :class:`Reply` scripts (next text, tool calls, error status, delay, cut stream);
* :class:`RecordedRequest` for assertions on the exact wire request (path, query, headers, JSON);
* :class:`Responder`, which writes JSON, SSE (chunked, so a cut stream is a real broken body) and
  provider-shaped errors;
* a control API under ``/__mesh__/`` so a server started with ``python -m`` in another process can be
  scripted and inspected over HTTP: ``POST /__mesh__/script`` (a Reply as JSON),
  ``GET /__mesh__/requests``, ``POST /__mesh__/reset``, ``POST /__mesh__/faults`` (a FaultPlan as JSON);
* fault injection (:mod:`.faults`): 429/500/503, hangs, cut streams and refused connections, per
  request (``x-mesh-fault`` header), per rate or by schedule (``srv.faults = FaultPlan(...)``).

Stdlib only (``http.server``): the servers start in milliseconds and need no extra.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union
from urllib.parse import parse_qs, urlsplit

__all__ = ["Reply", "RecordedRequest", "Responder", "WireServer", "free_port", "serve_main", "sse_json"]


@dataclass
class Reply:
    """What the server answers to the next request it handles (one script = one request).

    ``text`` and ``tool_calls`` shape a completion; ``embeddings`` an embeddings answer; ``status``
    other than 200 makes the answer a provider-shaped error carrying ``error_message`` (and
    ``error_type``/``error_code`` where the provider has them). ``delay`` waits before answering,
    ``chunk_delay`` between stream events; ``cut_after`` closes a stream after that many events
    without its end. ``json_body`` replaces the whole body (for the odd case no field covers).
    """

    text: Optional[str] = None
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments dict or JSON text)
    finish_reason: Optional[str] = None
    usage: Optional[dict[str, int]] = None  # {"prompt_tokens": .., "completion_tokens": ..} style
    embeddings: Optional[list[list[float]]] = None
    status: int = 200
    error_message: Optional[str] = None
    error_type: Optional[str] = None
    error_code: Optional[str] = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    cut_after: Optional[int] = None
    json_body: Any = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Reply":
        d = dict(d)
        d["tool_calls"] = [tuple(tc) for tc in d.get("tool_calls") or []]
        return cls(**d)

    def arguments_text(self, i: int) -> str:
        args = self.tool_calls[i][1]
        return args if isinstance(args, str) else json.dumps(args)


class _Headers(dict):
    """Case-insensitive header lookup (HTTP header names are)."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: _Headers
    body: bytes
    received_at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "headers": dict(self.headers),
                "json": self.json if self.body else None}


class ClientGone(Exception):
    """The client hung up while we were writing (it stopped reading a stream)."""


class Responder:
    """Writes one HTTP response on the handler's socket."""

    def __init__(self, handler: BaseHTTPRequestHandler):
        self._h = handler
        self.sent = False

    def _start(self, status: int, content_type: str, headers: Mapping[str, str], length: Optional[int]) -> None:
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        if length is None:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(length))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        self.sent = True

    def json(self, status: int, body: Any, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.bytes(status, data, "application/json", headers)

    def bytes(self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
        self._start(status, content_type, headers, len(data))
        self._h.wfile.write(data)
        self._h.wfile.flush()

    def sse(self, events: Iterable[Union[str, tuple[str, str]]], *, headers: Mapping[str, str] = {},
            chunk_delay: float = 0.0, cut_after: Optional[int] = None, status: int = 200) -> None:
        """Stream server-sent events, each a ``data`` string or an ``(event, data)`` pair.

        ``cut_after=N`` sends N events and then drops the connection mid-body (no terminating
        chunk), which is what a client sees when a provider or proxy dies during a stream.
        """
        self._start(status, "text/event-stream", {"Cache-Control": "no-cache", **headers}, None)
        w = self._h.wfile
        try:
            for i, ev in enumerate(events):
                if cut_after is not None and i >= cut_after:
                    w.flush()
                    self._h.close_connection = True
                    # abort the socket: the client sees a body that ends without its last chunk
                    self._h.connection.shutdown(socket.SHUT_RDWR)
                    return
                if i and chunk_delay:
                    time.sleep(chunk_delay)
                if isinstance(ev, tuple):
                    frame = f"event: {ev[0]}\ndata: {ev[1]}\n\n".encode()
                else:
                    frame = f"data: {ev}\n\n".encode()
                w.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                w.flush()
            w.write(b"0\r\n\r\n")
            w.flush()
        except (BrokenPipeError, ConnectionResetError) as e:
            self._h.close_connection = True
            raise ClientGone() from e


class WireServer:
    """A provider's HTTP API on ``127.0.0.1``, in a background thread. Subclasses implement ``handle``.

    Use as a context manager (``with OpenAIServer() as srv: ...``), through the pytest fixtures in
    :mod:`langchain_mesh.testing.fixtures`, or from the command line (``python -m ...``).
    """

    #: shown in logs and the CLI banner
    provider = "generic"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any):
        self.host = host
        self.port = port
        self.options = options
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        #: injected failures (:class:`~.faults.FaultPlan`); None: only the ``x-mesh-fault`` header
        self.faults: Any = None
        self._fault_reply = threading.local()  # the reply a fault puts in place of the script's
        # a new connection accepted before this time is reset at once (a refused request's client retry)
        self._refuse_until = 0.0

    # ---- scripting and inspection ------------------------------------------------------------------

    def script(self, reply: Optional[Reply] = None, /, **fields: Any) -> "WireServer":
        """Queue the answer to the next request: ``srv.script(text="Paris")``, ``srv.script(status=429)``."""
        with self._lock:
            self._replies.append(reply if reply is not None else Reply(**fields))
        return self

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()

    @property
    def last_request(self) -> RecordedRequest:
        if not self.requests:
            raise AssertionError(f"the {self.provider} server has received no request")
        return self.requests[-1]

    def next_reply(self) -> Optional[Reply]:
        injected = getattr(self._fault_reply, "reply", None)
        if injected is not None:  # a fault answers this request; the scripts wait for the next one
            self._fault_reply.reply = None
            return injected
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "WireServer":
        if self._httpd is not None:
            return self
        server = self

        class Handler(_Handler):
            wire = server

        httpd = _QuietHTTPServer((self.host, self.port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.provider}-wire-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "WireServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ---- what subclasses implement -------------------------------------------------------------------

    def handle(self, request: RecordedRequest, respond: Responder) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def not_found(self, request: RecordedRequest, respond: Responder) -> None:
        respond.json(404, {"error": {"message": f"no route {request.method} {request.path}"}})

    # ---- command line (``python -m``); subclasses may add their own options ------------------------

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add provider options (``--flavor``...) to the ``python -m`` parser; none by default."""

    @classmethod
    def cli_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Constructor keyword arguments taken from the parsed options of :meth:`add_cli_arguments`."""
        return {}

    def banner(self) -> str:
        """What ``python -m`` prints once the server listens."""
        return (f"{self.provider} test server on {self.url} "
                f"(script it: POST {self.url}/__mesh__/script; inspect: GET {self.url}/__mesh__/requests)")


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        # a client that hangs up (a test of timeouts or cut streams) is expected, not a server bug
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    wire: WireServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' pooled clients expect
    # headers and body go out in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a request on Linux)
    disable_nagle_algorithm = True
    server_version = "langchain-mesh-testing"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read requests, not logs
        pass

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        req = RecordedRequest(self.command, parts.path, query, _Headers(self.headers.items()), body)
        respond = Responder(self)
        if parts.path.startswith("/__mesh__/"):
            self._control(req, respond)
            return
        with self.wire._lock:
            self.wire.requests.append(req)
        self._on_connection += 1
        from .faults import HEADER, HEADER_ONLY

        plan = self.wire.faults
        if plan is not None or HEADER in req.headers:
            fault = (plan or HEADER_ONLY).next(req.headers)
            if fault is not None and self._inject(fault, req):
                return
        try:
            self.wire.handle(req, respond)
        except ClientGone:
            return
        except Exception as e:  # a bug in a test server must show up as a 500, not a hung client
            if not respond.sent:
                respond.json(500, {"error": {"message": f"test server failure: {type(e).__name__}: {e}"}})
            raise
        finally:
            self.wire._fault_reply.reply = None  # a fault's reply the handler did not reach ends here

    def _inject(self, fault: Any, req: RecordedRequest) -> bool:
        """Apply ``fault`` to this request: True when it is fully handled (no answer at all)."""
        kind = fault.kind
        if kind in ("429", "500", "503"):
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None and kind != "500" else {}
            self.wire._fault_reply.reply = Reply(status=int(kind), headers=headers,
                                                 error_message=f"injected fault: HTTP {kind}")
            return False
        if kind == "cut" and _is_stream(req):
            self.wire._fault_reply.reply = Reply(text=" ".join(["word"] * 40), cut_after=fault.cut_after)
            return False
        if kind == "hang":
            time.sleep(fault.hang)
        if kind == "refuse" and self._on_connection > 1:
            # a pooled client retries a reset keep-alive connection once on a fresh one (it may have
            # been stale): the next new connection within 0.25 s is refused too, or the fault would not show
            self.wire._refuse_until = time.monotonic() + 0.25
        # hang (after its wait), refuse, cut of a non-stream: the connection ends without an answer,
        # reset (RST) rather than closed, as a server that went away
        self._reset()
        return True

    def _reset(self) -> None:
        import struct

        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True

    _on_connection = 0  # requests served on this connection (a refused reused one is retried by clients)

    def handle(self) -> None:
        w = self.wire
        if w._refuse_until and time.monotonic() < w._refuse_until:
            w._refuse_until = 0.0
            self._reset()
            return
        super().handle()

    def _control(self, req: RecordedRequest, respond: Responder) -> None:
        w = self.wire
        if req.path == "/__mesh__/script" and req.method == "POST":
            w.script(Reply.from_json(req.json or {}))
            respond.json(200, {"pending": w.pending()})
        elif req.path == "/__mesh__/requests":
            with w._lock:
                respond.json(200, [r.to_json() for r in w.requests])
        elif req.path == "/__mesh__/faults" and req.method == "POST":
            from .faults import FaultPlan

            body = req.json or {}
            w.faults = FaultPlan.from_json(body) if body else None
            respond.json(200, {"ok": True})
        elif req.path == "/__mesh__/reset" and req.method == "POST":
            w.reset()
            respond.json(200, {"ok": True})
        else:
            respond.json(404, {"error": {"message": f"unknown control path {req.path}"}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch  # type: ignore[assignment]


def _is_stream(req: RecordedRequest) -> bool:
    """Whether a request asks for a stream, in any provider's way (a body flag or a streaming path)."""
    path = req.path.lower()
    if "stream" in path:  # bedrock converse-stream, vertex streamGenerateContent, sagemaker ...-stream
        return True
    return b'"stream"' in req.body and (b'"stream":true' in req.body or b'"stream": true' in req.body)


def free_port() -> int:
    """A loopback port nothing listens on now: for a server about to start, or a refused connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_main(server_cls: type[WireServer], argv: Optional[Sequence[str]] = None, **defaults: Any) -> None:
    """``python -m langchain_mesh.testing.<provider> --port N``: serve until interrupted."""
    # under ``python -m`` the class lives in ``__main__``; the module spec keeps the dotted name
    spec = getattr(sys.modules.get(server_cls.__module__), "__spec__", None)
    module = spec.name if spec is not None else server_cls.__module__
    p = argparse.ArgumentParser(prog=f"python -m {module}",
                                description=f"A local {server_cls.provider} wire-format server for offline tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    server_cls.add_cli_arguments(p)
    args = p.parse_args(argv)
    srv = server_cls(host=args.host, port=args.port, **{**defaults, **server_cls.cli_options(args)})
    srv.start()
    print(srv.banner(), flush=True)
    srv.serve_forever()


def sse_json(events: Iterable[Any]) -> Iterator[str]:
    """JSON-encode each event for :meth:`Responder.sse`."""
    for ev in events:
        yield ev if isinstance(ev, str) else json.dumps(ev, separators=(",", ":"))

