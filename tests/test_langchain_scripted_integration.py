"""langchain-tests' integration suites against the scripted connection, with every feature flag on.

The connection is a scripted one that, when nothing is scripted, answers like an ideal model: it
calls a tool when tools are bound and the conversation awaits one (forced or not), fills arguments
from the prompt (quoted text, numbers), writes JSON that follows a requested schema, and otherwise
echoes. So these suites check the whole LangChain face (conversion, tools, tool choice, structured
output in every method, streaming, usage, multimodal and Anthropic-style inputs, model override)
deterministically, with answer quality out of the picture; the same suites run against the real
local model in ``test_langchain_integration.py``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests  # noqa: E402

from langchain_mesh.connections import register_connection_type  # noqa: E402
from langchain_mesh.langchain import MeshChatModel, MeshEmbeddings  # noqa: E402
from langchain_mesh.schema import CompletionRequest, FunctionCall, ImagePart, ImageURLPart, ToolCall  # noqa: E402
from langchain_mesh.testing.scripted import Reply, ScriptedConnection  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package
from _oracle import EveryFeatureOn, instance as _instance, quoted as _quoted  # noqa: E402
from _oracle import serve_image_fixtures_locally  # noqa: E402,F401  (autouse fixture)

# --------------------------------------------------------------------------------------------------
# an "ideal model" scripted connection


def _last_user_text(request: CompletionRequest) -> str:
    return next((m.text for m in reversed(request.messages) if m.role == "user"), "")


class OracleConnection(ScriptedConnection):
    def _next(self, request: CompletionRequest) -> Reply:
        with self._script_lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        s = request.settings
        prompt = _last_user_text(request)
        tools = list(s.tools or [])
        choice = s.toolChoice.type if s.toolChoice else "auto"
        awaiting_tool = bool(request.messages) and request.messages[-1].role == "user"
        if tools and choice != "none" and (choice in ("required", "tool_name") or awaiting_tool):
            if choice == "tool_name":
                spec = next(t for t in tools if t.function.name == s.toolChoice.name)  # type: ignore[union-attr]
            else:
                spec = next((t for t in tools if t.function.name in prompt), tools[0])
            params = spec.function.parameters
            args = _instance(params, prompt, params.get("$defs", {}))
            call = ToolCall(id=f"call_{len(self.requests)}",
                            function=FunctionCall(name=spec.function.name, arguments=json.dumps(args, ensure_ascii=False)))
            return Reply(tool_calls=[call])
        if s.responseFormat is not None and s.responseFormat.type == "json":
            schema = s.responseFormat.schema_
            if schema is None:
                keys = [q for q in _quoted(prompt) if re.fullmatch(r"\w+", q)] or ["answer"]
                schema = {"type": "object", "properties": {k: {"type": "string"} for k in keys}}
            return Reply(text=json.dumps(_instance(schema, prompt, schema.get("$defs", {}))))
        if request.messages and request.messages[-1].role == "tool":
            return Reply(text=f"The tool said: {request.messages[-1].text}")
        images = [p for m in request.messages for p in m.parts if isinstance(p, (ImagePart, ImageURLPart))]
        if images:
            return Reply(text=f"I see {len(images)} image(s).")
        return Reply(text=prompt or "Hello!")


register_connection_type("lc-oracle", OracleConnection)
ORACLE = {"connections": {"o": {"type": "lc-oracle", "models": [
    {"id": "chat"}, {"id": "chat-2"}, {"id": "embed", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}}


class TestMeshChatModelOnScripted(EveryFeatureOn, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[MeshChatModel]:
        return MeshChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"model": "lc-oracle:o:chat", "mesh": ORACLE}

    @property
    def model_override_value(self) -> str:
        return "lc-oracle:o:chat-2"


class TestMeshChatModelOnScriptedFunctionCalling(TestMeshChatModelOnScripted):
    """The structured-output tests again, through forced tool calls."""

    @property
    def structured_output_kwargs(self) -> dict:
        return {"method": "function_calling"}


class TestMeshEmbeddingsOnScripted(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[MeshEmbeddings]:
        return MeshEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "lc-oracle:o:embed", "mesh": ORACLE, "batch_size": 2}
