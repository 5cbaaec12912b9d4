"""Issue 16, the gateway: each hostile input, hostile upstream and careless config, over real sockets
against ``mesh serve`` (the CLI in its own process) in front of the local OpenAI server.

Every test here failed on the code before the fix (a 192 MB header stalled the server, credentials in
``base_url`` reached the client, any web page could drive a keyless server, ...)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")

import httpx  # noqa: E402

from langchain_mesh.testing.wire import free_port  # noqa: E402

from .conftest import ROOT, gateway, post  # noqa: E402

KEY = "sk-mesh-gateway-key-0001"
UPSTREAM_KEY = "sk-live-UPSTREAMkey0123456789"   # what a provider echoes back in its error text
PASSWORD = "hunter2-in-the-url"                  # user:password@ in a base_url
QTOKEN = "qtoken-in-the-query-42"                # ?api-key= in a base_url
CHAT, EMBED, TR_CHAT, TR_EMBED = ("openai_compatible:up:qwen", "openai_compatible:up:bge",
                                  "openai_compatible:tr:qwen", "openai_compatible:tr:bge")
IMAGE, DEAD, LEAKY = "openai:img:dall-e-3", "openai:dead:gpt-4o", "openai_compatible:leaky:qwen"
MSG = [{"role": "user", "content": "hi"}]


class _Secret(BaseHTTPRequestHandler):
    """Another service on loopback (an admin port, a metadata service): what SSRF would reach."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Secret.hits.append(self.path)
        body = b"Authorization: Bearer other-service-secret"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture(scope="module")
def secret_service():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Secret)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture(scope="module")
def dead_port():
    return free_port()


def _models(*extra):
    return [{"id": "qwen"}, {"id": "bge", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}, *extra]


@pytest.fixture(scope="module")
def leaky_up():
    """A provider whose key is UPSTREAM_KEY (and whose error texts will quote it)."""
    from langchain_mesh.testing.openai import OpenAIServer

    with OpenAIServer(api_key=UPSTREAM_KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def gw(_mesh_openai_server_session, leaky_up, tmp_path_factory, dead_port):
    up = _mesh_openai_server_session
    cfg = {"connections": {
        "up": {"type": "openai_compatible", "base_url": up.base_url, "api_key": "test-key", "max_retries": 0,
               "models": _models()},
        "tr": {"type": "openai_compatible", "base_url": up.base_url, "api_key": "test-key", "max_retries": 0,
               "stream_usage": False, "models": _models()},
        "leaky": {"type": "openai_compatible", "base_url": leaky_up.base_url, "api_key": UPSTREAM_KEY, "max_retries": 0,
                  "models": [{"id": "qwen"}]},
        "img": {"type": "openai", "base_url": up.base_url, "api_key": "test-key", "max_retries": 0,
                "models": [{"id": "dall-e-3", "purposes": ["IMAGE_GENERATION"]}]},
        "dead": {"type": "openai", "base_url": f"http://bob:{PASSWORD}@127.0.0.1:{dead_port}/v1?api-key={QTOKEN}",
                 "api_key": "test-key", "max_retries": 0, "models": [{"id": "gpt-4o"}]}},
        "server": {"api_keys": [{"key": KEY, "name": "sec"}],
                   "limits": {"header_timeout": 1, "body_timeout": 1, "max_body_bytes": 256 * 1024,
                              "max_embedding_inputs": 64}}}
    yield from gateway(cfg, tmp_path_factory.mktemp("gw"))


@pytest.fixture()
def up(_mesh_openai_server_session):
    _mesh_openai_server_session.reset()
    return _mesh_openai_server_session


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
        return out


# ---- 1. header size and slow senders ------------------------------------------------------------------

def test_an_oversized_header_is_refused_with_431_and_the_server_keeps_answering(gw):
    head = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1024 * 1024)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("answer", _raw(gw.port, head)))
    t.start()
    assert httpx.get(gw.url + "/health", timeout=10).status_code == 200  # meanwhile
    t.join(20)
    assert result["answer"].startswith(b"HTTP/1.1 431"), result["answer"][:200]
    assert b"max_header_bytes" in result["answer"]
    # within the limit, headers are fine
    ok = httpx.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {KEY}", "x-fine": "b" * 8000})
    assert ok.status_code == 200


def test_a_slow_header_sender_is_timed_out_with_408(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ...and never the blank line
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert s.recv(4096) == b""  # closed


def test_body_size_and_slow_bodies_are_bounded(gw):
    r = post(gw.url + "/v1/chat/completions", b'{"x":"' + b"a" * (300 * 1024) + b'"}', key=KEY)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    for sent in (b'{"model":', b""):  # part of the body, or none of it
        with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                      + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + sent)
            answer = b""
            while b"}}" not in answer:  # the whole answer (head and body may come in separate pieces)
                piece = s.recv(4096)
                if not piece:
                    break
                answer += piece
        assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer, answer


# ---- 2. credentials in base_url -----------------------------------------------------------------------

def test_credentials_in_base_url_are_in_no_body_log_line_or_exception(gw, dead_port, tmp_path):
    r = post(gw.url + "/v1/chat/completions", {"model": DEAD, "messages": MSG}, key=KEY)
    assert r.status_code == 502
    assert "***" in r.text
    stream = post(gw.url + "/v1/chat/completions", {"model": DEAD, "messages": MSG, "stream": True}, key=KEY)
    assert stream.status_code == 502
    # the library, and `mesh chat`
    from langchain_mesh import Mesh
    from langchain_mesh.errors import ProviderConnectionError

    mesh = Mesh.from_config(json.loads(gw.config_path.read_text()))
    with pytest.raises(ProviderConnectionError) as e:
        mesh.get_llm(DEAD).new_completion().with_message("hi").execute()
    chat = subprocess.run([sys.executable, "-m", "langchain_mesh", "chat", "--config", str(gw.config_path),
                           "--llm", DEAD, "hi"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert chat.returncode == 1 and "cannot reach" in chat.stderr
    for text in (r.text, stream.text, str(e.value), repr(e.value), e.value.provider_message or "",
                 chat.stdout + chat.stderr, gw.log()):
        assert PASSWORD not in text and QTOKEN not in text and "bob:" not in text, text


# ---- 4. embedding inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [EMBED, TR_EMBED])
def test_embedding_inputs_are_capped(gw, up, model):
    r = post(gw.url + "/v1/embeddings", {"model": model, "input": ["x"] * 65}, key=KEY)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input", r.text
    assert "max_embedding_inputs" in r.json()["error"]["message"]
    assert up.requests == []  # refused before any upstream request
    assert post(gw.url + "/v1/embeddings", {"model": model, "input": ["x"] * 64}, key=KEY).status_code == 200


# ---- 5. upstream error texts --------------------------------------------------------------------------

@pytest.mark.parametrize("status,expected", [(400, 400), (500, 502), (401, 502)])
def test_a_key_echoed_by_the_provider_does_not_reach_the_client(gw, leaky_up, status, expected):
    leaky_up.script(status=status, error_message=f"Incorrect API key provided: {UPSTREAM_KEY}. Find yours at ...")
    r = post(gw.url + "/v1/chat/completions", {"model": LEAKY, "messages": MSG}, key=KEY)
    assert r.status_code == expected, r.text
    assert UPSTREAM_KEY not in r.text and UPSTREAM_KEY[:20] not in r.text
    assert UPSTREAM_KEY not in gw.log()


def test_a_key_echoed_by_the_provider_does_not_reach_a_library_caller(up):
    from langchain_mesh import Mesh
    from langchain_mesh.errors import ProviderError

    mesh = Mesh.from_config({"connections": {"c": {"type": "openai_compatible", "base_url": up.base_url,
                                                   "api_key": "test-key", "max_retries": 0,
                                                   "models": [{"id": "qwen"}]}}})
    up.script(status=403, error_message="key test-key is not allowed; also sk-proj-ABCDEFGH12345678 is revoked")
    with pytest.raises(ProviderError) as e:
        mesh.get_llm("openai_compatible:c:qwen").new_completion().with_message("hi").execute()
    assert "test-key" not in str(e.value) and "sk-proj-ABCDEFGH12345678" not in str(e.value)
    assert "***" in str(e.value)


# ---- 6. image URLs an upstream returns ----------------------------------------------------------------

def test_an_image_url_on_another_loopback_service_is_not_fetched(gw, up, secret_service):
    _Secret.hits.clear()
    for url in (secret_service + "/latest/meta-data", "file:///etc/passwd"):
        up.script(json_body={"created": 0, "data": [{"url": url}]})
        r = post(gw.url + "/v1/images/generations", {"model": IMAGE, "prompt": "a cat"}, key=KEY)
        assert r.status_code == 502, r.text
        assert "other-service-secret" not in r.text
    assert _Secret.hits == []
    # the provider's own files (its base_url's host and port) may be downloaded: this one is tried (a 404)
    up.script(json_body={"created": 0, "data": [{"url": up.url + "/files/images/gone.png"}]})
    r = post(gw.url + "/v1/images/generations", {"model": IMAGE, "prompt": "a cat"}, key=KEY)
    assert r.status_code == 502 and "downloading the generated image failed" in r.text, r.text
    assert post(gw.url + "/v1/images/generations", {"model": IMAGE, "prompt": "a cat"}, key=KEY).status_code == 200


def test_image_downloads_are_bounded_in_size_and_private_addresses_are_opt_in(up, secret_service):
    from langchain_mesh import Mesh
    from langchain_mesh.errors import ProviderError

    mesh = Mesh.from_config({"connections": {"img": {
        "type": "openai", "base_url": up.base_url, "api_key": "test-key", "max_retries": 0,
        "image_download": {"max_bytes": 16, "allow_private": True},
        "models": [{"id": "dall-e-3", "purposes": ["IMAGE_GENERATION"]}]}}})
    up.script(json_body={"created": 0, "data": [{"url": secret_service + "/big.png"}]})
    with pytest.raises(ProviderError, match="image_download.max_bytes"):
        mesh.get_llm(IMAGE).new_images_generation().with_prompt("a cat").execute()


# ---- bugs: hostile answers ----------------------------------------------------------------------------

def test_a_non_sse_200_to_a_stream_is_an_error_not_an_empty_stream(gw, up):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    up.script(json_body={"id": "x", "object": "chat.completion", "choices": []})
    with pytest.raises(openai.APIStatusError) as e:
        list(client.chat.completions.create(model=CHAT, messages=MSG, stream=True))
    assert e.value.status_code == 502


@pytest.mark.parametrize("model", [EMBED, TR_EMBED])
def test_fewer_vectors_than_inputs_is_an_error(gw, up, model):
    up.script(json_body={"object": "list", "model": "bge", "data": [{"object": "embedding", "index": 0,
                                                                    "embedding": [0.1, 0.2]}],
                         "usage": {"prompt_tokens": 2, "total_tokens": 2}})
    r = post(gw.url + "/v1/embeddings", {"model": model, "input": ["a", "b"]}, key=KEY)
    assert r.status_code == 502 and "1 embeddings for 2 inputs" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("model", [CHAT, TR_CHAT])
def test_a_json_string_200_body_is_a_typed_error(gw, up, model):
    up.script(json_body="I am a string")
    r = post(gw.url + "/v1/chat/completions", {"model": model, "messages": MSG}, key=KEY)
    assert r.status_code == 502 and r.json()["error"]["type"] == "server_error", r.text


@pytest.mark.parametrize("model", [CHAT, TR_CHAT])
@pytest.mark.parametrize("field", ["seed", "max_tokens", "max_completion_tokens"])
def test_integers_beyond_64_bits_are_a_400(gw, up, model, field):
    r = post(gw.url + "/v1/chat/completions", f'{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],'
                                              f'"{field}":{2**64}}}', key=KEY)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_a_stream_cut_by_the_client_has_an_estimated_usage(gw, up):
    up.script(text="word " * 200, chunk_delay=0.02)
    with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": CHAT, "messages": MSG, "stream": True}, timeout=10) as r:
        for n, _ in enumerate(r.iter_lines()):
            if n > 6:
                break  # hang up mid-stream
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cut = [u for u in gw.usage_records() if u["status"] == 499 and u["llm"] == CHAT]
        if cut:
            break
        time.sleep(0.1)
    assert cut and cut[-1]["input_tokens"] > 0 and cut[-1]["output_tokens"] > 0 and cut[-1]["estimated"] is True


# ---- 3. no API keys: browsers kept out ----------------------------------------------------------------

@pytest.fixture(scope="module")
def open_gw(_mesh_openai_server_session, tmp_path_factory):
    up = _mesh_openai_server_session
    cfg = {"connections": {"up": {"type": "openai_compatible", "base_url": up.base_url, "api_key": "test-key",
                                  "max_retries": 0, "models": _models()}}}
    yield from gateway(cfg, tmp_path_factory.mktemp("open"))


def test_without_keys_cross_origin_and_non_json_requests_are_refused(open_gw, up):
    url = open_gw.url + "/v1/chat/completions"
    body = json.dumps({"model": CHAT, "messages": MSG})
    # what a web page can send without a preflight
    r = httpx.post(url, content=body, headers={"content-type": "text/plain", "origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.post(url, content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(url, content=body, headers={"content-type": "application/json", "origin": "null"})
    assert r.status_code == 403
    r = httpx.post(url, content=body, headers={"content-type": "application/json", "sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    assert up.requests == []  # nothing reached the upstream
    # programs are not affected
    up.script(text="fine")
    client = openai.OpenAI(base_url=open_gw.url + "/v1", api_key="anything", max_retries=0)
    assert client.chat.completions.create(model=CHAT, messages=MSG).choices[0].message.content == "fine"


def test_without_keys_a_rebinding_host_is_refused(open_gw):
    for host in ("evil.example", f"evil.example:{open_gw.port}", f"127.0.0.1.nip.io:{open_gw.port}"):
        r = httpx.get(open_gw.url + "/v1/models", headers={"host": host})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed", host
    for host in (f"127.0.0.1:{open_gw.port}", f"localhost:{open_gw.port}"):
        assert httpx.get(open_gw.url + "/v1/models", headers={"host": host}).status_code == 200


def test_the_keyless_startup_warning_does_not_claim_browsers_cannot_reach_it(open_gw):
    log = open_gw.log()
    assert "UNAUTHENTICATED" in log and "only reachable from this machine" not in log


def _get_models(port: int, *headers: bytes) -> tuple[int, dict]:
    """``GET /v1/models`` with these header lines, on a connection closed after: (status, JSON body)."""
    head = b"GET /v1/models HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"
    out = _raw(port, head)
    status = int(out.split(b" ", 2)[1])
    return status, json.loads(out.split(b"\r\n\r\n", 1)[1])


def test_without_keys_a_repeated_host_or_origin_is_refused_not_judged_by_one_copy(open_gw):
    local, evil = b"Host: 127.0.0.1:%d" % open_gw.port, b"Host: evil.example"
    for lines in ((local, evil), (evil, local), (local, b"Origin: http://evil.example", b"Origin: null"),
                  (local, b"Sec-Fetch-Site: same-origin", b"Sec-Fetch-Site: cross-site")):
        status, body = _get_models(open_gw.port, *lines)
        assert status == 400 and body["error"]["code"] == "duplicate_header", lines
        assert body["error"]["type"] == "invalid_request_error"
    # other repeated headers are allowed, as before (their first value is the one read)
    status, body = _get_models(open_gw.port, local, b"Accept: application/json", b"Accept: */*")
    assert status == 200 and body["object"] == "list"


def test_a_repeated_authorization_is_refused_even_when_one_copy_is_a_valid_key(gw):
    good, bad = b"Authorization: Bearer " + KEY.encode(), b"Authorization: Bearer sk-not-a-key"
    host = b"Host: 127.0.0.1:%d" % gw.port
    for lines in ((host, good, bad), (host, bad, good), (host, good, good)):
        status, body = _get_models(gw.port, *lines)
        assert status == 400 and body["error"]["code"] == "duplicate_header"
        assert "authorization" in body["error"]["message"]
    status, body = _get_models(gw.port, host, good)
    assert status == 200 and body["object"] == "list"
