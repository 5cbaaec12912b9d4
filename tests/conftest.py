"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def redis_server():
    """A real redis-server on a free port for the module's tests (skipped where it is not installed)."""
    from langchain_mesh.testing.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server; CI has it)")
    with RedisServer() as r:
        yield r
