"""LangGraph's prebuilt agent (the real langgraph package) on a mesh model: the cookbook agent with a
checkpointer, token streaming, parallel tool calls and the async path. The scripted connection plays
the model, so every request the agent makes is checked."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import AIMessageChunk, ToolMessage  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402

COOKBOOK = Path(__file__).resolve().parents[1] / "cookbook" / "langgraph_agent.py"


def _cookbook():
    spec = importlib.util.spec_from_file_location("cookbook_langgraph_agent", COOKBOOK)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture
def mesh():
    with Mesh.from_config({"connections": {"fake": {"type": "scripted"}}}) as m:
        yield m


@pytest.fixture
def agent(mesh):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents is announced
        return _cookbook().build_agent(mesh, "scripted:fake:chat")


def test_cookbook_agent_streams_steps_and_remembers_the_thread(mesh):
    conn = mesh.connection("fake")
    conn.script(tool_calls=[("add", {"a": 3, "b": 4})])
    conn.script(tool_calls=[("multiply", {"a": 7, "b": 6})])
    conn.script(text="The answer is 42.")
    conn.script(tool_calls=[("add", {"a": 42, "b": 1})])
    conn.script(text="That makes 43.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _cookbook().main(mesh)
    first, follow = out["first"], out["follow_up"]
    assert first["answer"] == "The answer is 42."
    assert first["steps"] == ["agent: add({'a': 3, 'b': 4})", "tools: add -> 7.0",
                              "agent: multiply({'a': 7, 'b': 6})", "tools: multiply -> 42.0",
                              "agent: The answer is 42."]
    assert follow["answer"] == "That makes 43."
    # the checkpointer gave the second turn the whole first conversation
    last = conn.requests[-1]
    texts = [m.text for m in last.messages]
    assert texts[0].startswith("You are a careful calculator") and "What is (3 + 4) * 6?" in texts
    assert "The answer is 42." in texts and "And that plus 1?" in texts
    assert [t.function.name for t in last.settings.tools] == ["add", "multiply"]


def test_token_streaming_through_the_agent(agent, mesh):
    mesh.connection("fake").script(text="Forty two, as computed by hand.")
    chunks = [msg for msg, meta in agent.stream({"messages": [("user", "6 * 7?")]},
                                                {"configurable": {"thread_id": "s"}}, stream_mode="messages")
              if isinstance(msg, AIMessageChunk) and meta["langgraph_node"] == "agent"]
    assert len([c for c in chunks if c.content]) > 1  # token by token, not one final message
    assert "".join(c.text for c in chunks) == "Forty two, as computed by hand."


async def test_async_agent_with_parallel_tool_calls(agent, mesh):
    conn = mesh.connection("fake")
    conn.script(tool_calls=[("add", {"a": 1, "b": 2}), ("multiply", {"a": 3, "b": 4})])
    conn.script(text="3 and 12.")
    result = await agent.ainvoke({"messages": [("user", "1+2 and 3*4?")]}, {"configurable": {"thread_id": "a"}})
    tools = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert sorted((t.name, t.content) for t in tools) == [("add", "3.0"), ("multiply", "12.0")]
    assert result["messages"][-1].text == "3 and 12."
    # both results went back to the model, each answering its own call
    back = [m for m in conn.requests[-1].messages if m.role == "tool"]
    calls = [m for m in conn.requests[-1].messages if m.role == "assistant"][0].tool_calls
    assert sorted(m.tool_call_id for m in back) == sorted(c.id for c in calls)
