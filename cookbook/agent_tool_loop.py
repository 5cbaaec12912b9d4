"""An agent tool loop on the mesh: a model bound to two tools, executing the calls it makes and feeding
the results back as ToolMessages until it gives a final answer (or runs out of turns).

Runs on the embedded default with no configuration::

    python cookbook/agent_tool_loop.py "What is (3 + 4) * 6?"

The first turn requires a tool call (``tool_choice="any"``), later turns let the model choose, which
keeps a small local model on track; a capable hosted model works with ``"auto"`` throughout.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from langchain_mesh import Mesh, MeshChatModel


@tool
def add(a: float, b: float) -> float:
    """Add two numbers and return the sum."""
    return a + b


@tool
def multiply(a: float, b: float) -> float:
    """Multiply two numbers and return the product."""
    return a * b


TOOLS = {t.name: t for t in (add, multiply)}
SYSTEM = ("You are a careful calculator. Use the add and multiply tools for every arithmetic step, "
          "one step at a time. When you know the result, answer with it in one short sentence.")


def pick_chat_llm(mesh: Mesh) -> str:
    items = mesh.list_llms("GENERIC_COMPLETION")
    with_tools = [i for i in items if i.capabilities.tools]
    if not (with_tools or items):
        raise SystemExit("the mesh offers no completion model")
    return (with_tools or items)[0].id


def run_agent(chat: MeshChatModel, question: str, max_turns: int = 4) -> dict[str, Any]:
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    first = chat.bind_tools(list(TOOLS.values()), tool_choice="any")
    then = chat.bind_tools(list(TOOLS.values()), tool_choice="auto")
    tool_results: list[ToolMessage] = []
    for turn in range(max_turns):
        ai: AIMessage = (first if turn == 0 else then).invoke(messages)
        messages.append(ai)
        if not ai.tool_calls:
            return {"answer": ai.text, "turns": turn + 1, "stopped": "final_answer",
                    "tool_results": tool_results, "messages": messages}
        for call in ai.tool_calls:
            fn = TOOLS.get(call["name"])
            if fn is None:
                result = ToolMessage(f"Error: no tool named {call['name']!r}", tool_call_id=call["id"], status="error")
            else:
                try:
                    result = fn.invoke(call)  # a ToolCall in -> a ToolMessage out
                except Exception as e:  # noqa: BLE001 - a bad call is reported back to the model
                    result = ToolMessage(f"Error: {e}", tool_call_id=call["id"], status="error")
            tool_results.append(result)
            messages.append(result)
    last = tool_results[-1].content if tool_results else ""
    return {"answer": f"(stopped after {max_turns} turns; last tool result: {last})", "turns": max_turns,
            "stopped": "max_turns", "tool_results": tool_results, "messages": messages}


def main(mesh: Optional[Mesh] = None, question: str = "What is (3 + 4) * 6?", max_turns: int = 4) -> dict[str, Any]:
    mesh = mesh or Mesh.default()
    chat = MeshChatModel(model=pick_chat_llm(mesh), mesh=mesh, temperature=0, max_tokens=128)
    out = run_agent(chat, question, max_turns=max_turns)
    print(f"Q: {question}")
    for m in out["messages"][2:]:
        if isinstance(m, AIMessage) and m.tool_calls:
            for c in m.tool_calls:
                print(f"  -> {c['name']}({c['args']})")
        elif isinstance(m, ToolMessage):
            print(f"  <- {m.content}")
    print(f"A: {out['answer']}  [{out['stopped']}, {out['turns']} turn(s)]")
    return out


if __name__ == "__main__":
    main(question=" ".join(sys.argv[1:]) or "What is (3 + 4) * 6?")
