"""The cookbook scripts: on the scripted connection (behaviour checked exactly) and, marked
``local_model``, run as scripts on the embedded default."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import ToolMessage  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COOKBOOK = ROOT / "cookbook"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", COOKBOOK / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def mesh():
    m = Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})
    yield m
    m.close()


def test_rag_chain_on_scripted(mesh):
    rag = _load("rag_chain")
    conn = mesh.connection("fake")
    conn.script(text="Venus.")
    out = rag.main(mesh, question="Which planet rotates so slowly that a day on Venus lasts longer than its year?")
    assert out["answer"] == "Venus."
    assert any("Venus" in s for s in out["sources"]), out["sources"]
    request = conn.requests[-1]
    assert [m.role for m in request.messages] == ["system", "user"]
    assert "Venus rotates so slowly" in request.messages[0].text  # the retrieved context reached the model
    assert request.messages[1].text.startswith("Which planet")


def test_agent_tool_loop_on_scripted(mesh):
    agent = _load("agent_tool_loop")
    conn = mesh.connection("fake")
    conn.script(tool_calls=[("add", {"a": 3, "b": 4})])
    conn.script(tool_calls=[("multiply", {"a": 7, "b": 6})])
    conn.script(text="The answer is 42.")
    out = agent.main(mesh, question="What is (3 + 4) * 6?")
    assert out["stopped"] == "final_answer" and out["turns"] == 3
    assert out["answer"] == "The answer is 42."
    assert [float(t.content) for t in out["tool_results"]] == [7.0, 42.0]
    # the first turn forces a call, later ones leave the choice to the model
    assert [r.settings.toolChoice.type for r in conn.requests] == ["required", "auto", "auto"]
    # every call was answered by a ToolMessage carrying its id
    last = conn.requests[-1].messages
    assert [m.role for m in last] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert last[3].tool_call_id == last[2].tool_calls[0].id


def test_agent_tool_loop_stops_at_max_turns_and_reports_bad_calls(mesh):
    agent = _load("agent_tool_loop")
    conn = mesh.connection("fake")
    conn.script(tool_calls=[("divide", {"a": 1, "b": 2})])
    conn.script(tool_calls=[("add", {"a": 1, "b": 1})])
    out = agent.main(mesh, question="?", max_turns=2)
    assert out["stopped"] == "max_turns" and out["turns"] == 2
    assert out["tool_results"][0].status == "error" and "divide" in out["tool_results"][0].content
    assert isinstance(out["tool_results"][1], ToolMessage) and float(out["tool_results"][1].content) == 2.0


# --------------------------------------------------------------------------------------------------
# the scripts themselves, on the embedded default (real local models)


def _local_available() -> bool:
    return importlib.util.find_spec("langchain_mesh.connections.huggingface_local") is not None


def _run_script(name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MESH_CONFIG"}  # the embedded default
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(COOKBOOK / f"{name}.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.local_model
@pytest.mark.skipif(not _local_available(), reason="the huggingfacelocal connection is not installed")
def test_rag_chain_script_on_embedded_default():
    out = _run_script("rag_chain", "Which planet has a day longer than its year?")
    assert "Sources:" in out
    sources = out.split("Sources:")[1].split("A:")[0]
    assert "Venus" in sources  # MiniLM retrieval puts the Venus text in the top 2
    answer = out.split("\nA:", 1)[1].strip()
    assert answer


@pytest.mark.local_model
@pytest.mark.skipif(not _local_available(), reason="the huggingfacelocal connection is not installed")
def test_agent_tool_loop_script_on_embedded_default():
    out = _run_script("agent_tool_loop", "What is (3 + 4) * 6?")
    assert "-> add(" in out or "-> multiply(" in out  # the forced first turn called a tool
    assert "<- " in out  # and its result was fed back
    assert "\nA: " in out and ("final_answer" in out or "max_turns" in out)
