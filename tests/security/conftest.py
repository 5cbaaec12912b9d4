"""``mesh serve`` as users start it (the CLI, in its own process), for the security suite: its log goes
to a file the tests read (every log line is searched for secrets), and it is stopped by SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

pytest.importorskip("uvicorn")

import httpx  # noqa: E402

from langchain_mesh.testing.wire import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Gateway:
    """A running ``mesh serve``: ``url``, ``log()`` (its stderr so far), ``stop()``."""

    def __init__(self, config: dict[str, Any], folder: Path, *extra: str):
        self.config_path = folder / "mesh.yaml"
        self.config_path.write_text(json.dumps(config))
        os.chmod(self.config_path, 0o600)
        self.log_path = folder / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("MESH_SERVE_CONFIG", None)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "langchain_mesh", "serve", "--config", str(self.config_path), "--host",
             "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--usage-log", *extra],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(folder))
        self._wait_up()

    def _wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mesh serve exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("mesh serve did not start")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def usage_records(self) -> list[dict[str, Any]]:
        """The usage lines the gateway has written whole (a test polling the log while the gateway
        writes may read the last line half-written: it is left for the next poll)."""
        whole = self.log().rpartition("\n")[0]
        return [json.loads(line) for line in whole.splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def gateway(config: dict[str, Any], folder: Path, *extra: str) -> Iterator[Gateway]:
    gw = Gateway(config, folder, *extra)
    try:
        yield gw
    finally:
        gw.stop()


def post(url: str, body: Any, key: Optional[str] = None, headers: Optional[dict[str, str]] = None,
         timeout: float = 10) -> httpx.Response:
    h = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url, content=content, headers=h, timeout=timeout)
