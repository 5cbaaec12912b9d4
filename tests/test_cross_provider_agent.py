"""One LangChain agent tool loop (two tools, three turns), unchanged, on every chat connection type.

Each provider's local server is scripted with the same turns: call ``add``, then ``multiply`` with
the first result, then answer. The loop is the cookbook's (``cookbook/agent_tool_loop.py``), so what
is checked is that tool-call ids, arguments and results survive each translation, both ways: the
calls the model made reach the tools with their arguments, and the results go back to the provider
under the ids (or names, for providers without call ids) the provider gave.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("langchain_core")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cookbook"))

from agent_tool_loop import run_agent  # noqa: E402

from langchain_mesh import Mesh, MeshChatModel  # noqa: E402


@dataclass
class Provider:
    type: str
    server: Callable[[pytest.FixtureRequest], Any]  # -> the started local server, reset
    config: Callable[[Any], dict[str, Any]]  # server -> connection config
    model: str
    ids_on_the_wire: bool = True  # False where the provider has no call ids (results go back by name)


def _fixture(name: str) -> Callable[[pytest.FixtureRequest], Any]:
    return lambda request: request.getfixturevalue(name)


PROVIDERS = [
    Provider("anthropic", _fixture("anthropic_server"),
             lambda s: {"type": "anthropic", "api_key": "test-key", "base_url": s.base_url}, "claude-3-5-sonnet-20241022"),
    Provider("openai", _fixture("openai_server"),
             lambda s: {"type": "openai", "api_key": "test-key", "base_url": s.base_url}, "gpt-4o"),
    Provider("azure_openai", _fixture("azure_openai_server"),
             lambda s: {"type": "azure_openai", "endpoint": s.base_url, "api_key": "test-key",
                        "models": [{"id": "gpt-4o-dep", "model": "gpt-4o"}]}, "gpt-4o-dep"),
    Provider("azure_llm", _fixture("azure_serverless_server"),
             lambda s: {"type": "azure_llm", "models": [{"id": "llama", "target_uri": s.base_url,
                                                         "api_key": "test-key"}]}, "llama"),
    Provider("databricks", _fixture("databricks_server"),
             lambda s: {"type": "databricks", "host": s.url, "token": "test-key"},
             "databricks-meta-llama-3-3-70b-instruct"),
    Provider("mistral", _fixture("mistral_server"),
             lambda s: {"type": "mistral", "api_key": "test-key", "base_url": s.base_url}, "mistral-large-latest"),
    Provider("openai_compatible", _fixture("openai_server"),
             lambda s: {"type": "openai_compatible", "base_url": s.base_url, "api_key": "test-key",
                        "models": [{"id": "Qwen/Qwen2.5-7B-Instruct"}]}, "Qwen/Qwen2.5-7B-Instruct"),
    Provider("snowflake_cortex", _fixture("snowflake_cortex_server"),
             lambda s: {"type": "snowflake_cortex", "base_url": s.url, "token": "test-token"}, "claude-3-5-sonnet"),
    Provider("cohere", _fixture("cohere_server"),
             lambda s: {"type": "cohere", "api_key": "test-key", "base_url": s.url}, "command-r-plus-08-2024"),
    Provider("bedrock", _fixture("bedrock_server"),
             lambda s: {"type": "bedrock", "endpoint_url": s.url, "region": "us-east-1",
                        "access_key_id": s.access_key_id, "secret_access_key": s.secret_access_key},
             "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    Provider("vertex", _fixture("vertex_server"),
             lambda s: {"type": "vertex", "project": "test-project", "oauth_token": "test-token", "base_url": s.url},
             "gemini-2.5-flash"),
]


@pytest.mark.parametrize("p", PROVIDERS, ids=[p.type for p in PROVIDERS])
def test_the_same_agent_loop_runs_on_every_chat_connection(p: Provider, request: pytest.FixtureRequest):
    srv = p.server(request)
    srv.script(tool_calls=[("add", {"a": 3, "b": 4})])
    srv.script(tool_calls=[("multiply", {"a": 7, "b": 6})])
    srv.script(text="(3 + 4) * 6 = 42.")
    mesh = Mesh.from_config({"connections": {"c": {**p.config(srv), "max_retries": 0}}})
    try:
        out = run_agent(MeshChatModel(llm_id=f"{p.type}:c:{p.model}", mesh=mesh), "What is (3 + 4) * 6?")
    finally:
        mesh.close()

    assert out["stopped"] == "final_answer" and out["turns"] == 3 and out["answer"] == "(3 + 4) * 6 = 42."
    calls = [c for m in out["messages"] if getattr(m, "tool_calls", None) for c in m.tool_calls]
    assert [(c["name"], c["args"]) for c in calls] == [("add", {"a": 3, "b": 4}), ("multiply", {"a": 7, "b": 6})]
    results = out["tool_results"]
    assert [float(r.content) for r in results] == [7.0, 42.0]
    assert [r.tool_call_id for r in results] == [c["id"] for c in calls] and all(c["id"] for c in calls)

    # the provider received, in its own format, both calls and both results on the last turn
    assert len(srv.requests) == 3
    wire = json.dumps(srv.requests[-1].json)
    for call, result in zip(calls, results):
        assert call["name"] in wire and result.content in wire
        if p.ids_on_the_wire:
            assert wire.count(call["id"]) >= 2, f"{call['id']} should tag both the call and its result"
