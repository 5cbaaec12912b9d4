"""Running ``MeshApp`` under a real uvicorn (httptools + uvloop) in a background thread, for the
server tests (imported by them; no tests of its own): the stack ``mesh serve`` runs, on a free port."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, AsyncIterator

import uvicorn

from langchain_mesh import Connection, Mesh, register_connection_type
from langchain_mesh.schema import CompletionRequest, CompletionResponse, ModelInfo, Purpose, StreamEvent, StreamFooter
from langchain_mesh.server import create_app
from langchain_mesh.testing.wire import free_port


class SlowConnection(Connection):
    """An async connection that takes ``delay`` seconds and records whether it was cancelled: the
    proof that a client's disconnect reaches the upstream call."""

    started: list[str] = []
    cancelled: list[str] = []
    delay = 5.0

    def default_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="chat", purposes=[Purpose.GENERIC_COMPLETION])]

    async def _wait(self, request: CompletionRequest) -> None:
        tag = request.messages[-1].text
        self.started.append(tag)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append(tag)
            raise

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        await self._wait(request)
        return CompletionResponse(text="too late")

    async def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        await self._wait(request)  # before the first event: the client has no answer yet
        yield StreamFooter(finish_reason="stop")


register_connection_type("slowtest", SlowConnection)



class RunningServer:
    def __init__(self, mesh: Mesh, **app_kwargs: Any):
        self.app = create_app(mesh, **app_kwargs)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, loop="uvloop",
                                                    http="httptools", log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
