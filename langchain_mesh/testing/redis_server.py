"""A real ``redis-server`` on a free loopback port, for tests of the shared state (limits, budgets,
breakers): started from the system's package (``apt-get install redis-server``), with no persistence.

    with RedisServer() as redis:          # or the ``redis_server`` pytest fixture (tests skip without it)
        config = {"state": {"redis_url": redis.url}, ...}
        redis.kill()                      # Redis gone mid-run: what state.on_failure does
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

from .wire import free_port

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> Optional[str]:
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, port: int = 0):
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._dir = tempfile.TemporaryDirectory(prefix="mesh-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 10 s")

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def kill(self) -> None:
        """Stop it at once (SIGKILL): clients see refused connections from now on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self._dir.cleanup()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
