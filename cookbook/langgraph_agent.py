"""An agent built with LangGraph's prebuilt ReAct agent on a mesh model, with memory (a checkpointer)
and step-by-step streaming.

Runs on the embedded default with no configuration, or on any mesh given by ``MESH_CONFIG``::

    python cookbook/langgraph_agent.py "What is (3 + 4) * 6?"

The agent gets a model *object*: ``langchain_mesh.init_chat_model(<mesh id>)``. Passing the id string
to ``create_react_agent`` / ``create_agent`` would go through LangChain's own ``init_chat_model``,
which reads ``openai:myopenai:gpt-4o`` as provider ``openai`` and model ``myopenai:gpt-4o`` and
builds a ``ChatOpenAI`` against api.openai.com.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from langchain_mesh import Mesh, init_chat_model


@tool
def add(a: float, b: float) -> float:
    """Add two numbers and return the sum."""
    return a + b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers and return the product."""
    return a * b


SYSTEM = ("You are a careful calculator. Use the add and multiply tools for every arithmetic step, "
          "one step at a time. When you know the result, answer with it in one short sentence.")


def pick_chat_llm(mesh: Mesh) -> str:
    items = mesh.list_llms("GENERIC_COMPLETION")
    with_tools = [i for i in items if i.capabilities.tools]
    if not (with_tools or items):
        raise SystemExit("the mesh offers no completion model")
    return (with_tools or items)[0].id


def build_agent(mesh: Mesh, llm_id: Optional[str] = None) -> Any:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.prebuilt import create_react_agent

    model = init_chat_model(llm_id or pick_chat_llm(mesh), mesh=mesh, temperature=0, max_tokens=128)
    return create_react_agent(model, tools=[add, multiply], prompt=SYSTEM, checkpointer=InMemorySaver())


def ask(agent: Any, question: str, thread_id: str = "cookbook") -> dict[str, Any]:
    """One turn of a conversation, streamed step by step (``stream_mode="updates"``): each model
    step and tool step is printed as it finishes. The checkpointer keeps the thread's history."""
    config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 12}
    steps: list[str] = []
    for update in agent.stream({"messages": [("user", question)]}, config, stream_mode="updates"):
        for node, out in update.items():
            for m in out.get("messages", []):
                if isinstance(m, AIMessage) and m.tool_calls:
                    line = ", ".join(f"{c['name']}({c['args']})" for c in m.tool_calls)
                elif isinstance(m, ToolMessage):
                    line = f"{m.name} -> {m.content}"
                else:
                    line = m.text
                steps.append(f"{node}: {line}")
                print(f"  [{node}] {line}")
    messages = agent.get_state(config).values["messages"]
    return {"answer": messages[-1].text, "steps": steps, "messages": messages}


def main(mesh: Optional[Mesh] = None, question: str = "What is (3 + 4) * 6?",
         follow_up: Optional[str] = "And that plus 1?") -> dict[str, Any]:
    mesh = mesh or Mesh.default()
    agent = build_agent(mesh)
    print(f"Q: {question}")
    first = ask(agent, question)
    print(f"A: {first['answer']}")
    out = {"first": first}
    if follow_up:
        print(f"Q: {follow_up}")
        out["follow_up"] = ask(agent, follow_up)  # same thread: the agent remembers the first answer
        print(f"A: {out['follow_up']['answer']}")
    return out


if __name__ == "__main__":
    main(question=sys.argv[1] if len(sys.argv) > 1 else "What is (3 + 4) * 6?")
