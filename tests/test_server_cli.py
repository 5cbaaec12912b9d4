"""``mesh serve`` as users start it: the CLI in its own process, one worker and several, in front of the
local OpenAI server, driven by the ``openai`` SDK; stopped by a signal as a process manager would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

import httpx  # noqa: E402

from langchain_mesh.testing.wire import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]



def _start(cfg: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MESH_SERVE_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "langchain_mesh", "serve", "--config", str(cfg), "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_up(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mesh serve exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("mesh serve did not start")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"mesh serve did not stop on SIGINT: {err}")
    return err


@pytest.mark.parametrize("workers", [1, 2])
def test_mesh_serve_from_the_command_line(openai_server, tmp_path, workers):
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(json.dumps({
        "connections": {"up": {"type": "openai_compatible", "base_url": openai_server.base_url, "api_key": "test-key",
                               "max_retries": 0, "models": [{"id": "qwen"},
                                                            {"id": "bge", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]},
                        "fake": {"type": "scripted"}},
        "server": {"api_keys": [{"key": "sk-cli-test", "name": "cli"}]}}))
    port = free_port()
    proc = _start(cfg, port, "--workers", str(workers), "--usage-log")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-cli-test", max_retries=0)
        assert {m.id for m in client.models.list()} >= {"openai_compatible:up:qwen", "scripted:fake:chat"}
        for i in range(4):  # spread over the workers
            openai_server.script(text=f"answer {i}")
            r = client.chat.completions.create(model="openai_compatible:up:qwen",
                                               messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content == f"answer {i}" and r.model == "openai_compatible:up:qwen"
        e = client.embeddings.create(model="openai_compatible:up:bge", input=["a", "b"])
        assert len(e.data) == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        err = _stop(proc)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    chats = [r for r in records if r["endpoint"] == "/v1/chat/completions"]
    assert len(chats) == 4 and all(r["key"] == "cli" and r["status"] == 200 and r["input_tokens"] for r in chats)
    assert any(r["endpoint"] == "/v1/embeddings" for r in records)
