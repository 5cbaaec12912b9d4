"""langchain_mesh._loop: the running loop without asyncio's getpid(), for loops mesh serve declared."""

import asyncio
import os
import sys
import threading

import pytest

from langchain_mesh import _loop


@pytest.fixture(autouse=True)
def _undeclared():
    saved = _loop._served
    _loop._forget()
    yield
    _loop._served = saved


def test_an_undeclared_loop_is_asyncios_answer():
    async def main():
        return _loop.running_loop(), asyncio.get_running_loop()

    got, running = asyncio.run(main())
    assert got is running


def test_outside_any_loop_it_raises_as_asyncio_does():
    with pytest.raises(RuntimeError, match="no running event loop"):
        _loop.running_loop()


def test_a_declared_loop_is_answered_only_while_it_runs_in_its_thread():
    async def serve():
        loop = asyncio.get_running_loop()
        _loop.serving(loop)
        other = {}

        def elsewhere():  # another thread with a loop of its own gets that loop, not the declared one
            async def mine():
                return _loop.running_loop(), asyncio.get_running_loop()
            other["got"], other["running"] = asyncio.run(mine())
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        return loop, _loop.running_loop(), other

    declared, got, other = asyncio.run(serve())
    assert got is declared
    assert other["got"] is other["running"] and other["got"] is not declared
    assert _loop._served[0]() is declared  # still declared, but it no longer runs:
    with pytest.raises(RuntimeError, match="no running event loop"):
        _loop.running_loop()

    async def next_loop():
        return _loop.running_loop(), asyncio.get_running_loop()

    got, running = asyncio.run(next_loop())  # the same thread, a new loop: asyncio's answer
    assert got is running and got is not declared


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_forgets_the_declared_loop():
    async def serve():
        _loop.serving(asyncio.get_running_loop())
        pid = os.fork()
        if pid == 0:  # the child: its copy of the running loop is not running here
            os._exit(0 if _loop._served[0]() is None else 1)
        return os.waitpid(pid, 0)[1]

    assert os.waitstatus_to_exitcode(asyncio.run(serve())) == 0


def test_mesh_serve_declares_its_loop_and_requests_get_it():
    """A real uvicorn server on MeshHttpProtocol, in a thread of its own: its requests run in the loop it
    declared, and are told that loop."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("httptools")
    import urllib.request

    from test_server_protocol import _Server

    from langchain_mesh.server.protocol import MeshHttpProtocol

    async def app(scope, receive, send):
        await receive()
        running = asyncio.get_running_loop()
        body = b"%d%d" % (_loop._served[0]() is running, _loop.running_loop() is running)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": body})

    server = _Server(MeshHttpProtocol, app)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/") as r:
            assert r.read() == b"11"
        with pytest.raises(RuntimeError, match="no running event loop"):  # this thread runs no loop
            _loop.running_loop()
    finally:
        server.stop()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11 keeps the declared-loop path")
def test_from_3_12_it_is_asyncios_own():
    assert _loop.running_loop is asyncio.get_running_loop
