"""Tracing with the OpenTelemetry SDK's in-memory exporter: the span tree of a call with a failed
attempt, a guardrail and the cache; GenAI attributes; no secret or message text in any attribute."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import RateLimitError  # noqa: E402
from langchain_mesh.policies import tracing  # noqa: E402
from langchain_mesh.schema import CompletionRequest, CompletionSettings, Message  # noqa: E402

CARD = "4111 1111 1111 1111"
SECRET_PROMPT = f"my card {CARD}, the launch code is tangerine-42"


@pytest.fixture
def spans(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", lambda cfg: provider.get_tracer("langchain_mesh"))
    yield exporter
    provider.shutdown()


def _mesh(**extra):
    return Mesh.from_config({
        "connections": {"fake": {"type": "scripted", "max_retries": 1, "models": [{"id": "chat"}, {"id": "judge"}]}},
        "tracing": {}, "guardrails": [{"name": "pii", "type": "pii"}], "cache": {"ttl": 60}, **extra})


def _tree(exporter):
    done = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in done}
    roots = [s for s in done if s.parent is None or s.parent.span_id not in by_id]

    def node(s):
        kids = sorted((c for c in done if c.parent is not None and c.parent.span_id == s.context.span_id),
                      key=lambda c: c.start_time)
        return (s.name, [node(k) for k in kids])

    return [node(r) for r in sorted(roots, key=lambda r: r.start_time)], done


def _no_secrets(done):
    for s in done:
        for value in s.attributes.values():
            text = str(value)
            assert CARD not in text and "tangerine" not in text and "test-key" not in text, (s.name, value)
        assert "tangerine" not in (s.status.description or "")


def _req(text, **settings):
    return CompletionRequest(messages=[Message(role="user", content=text)],
                             settings=CompletionSettings(**{"temperature": 0, **settings}))


def test_span_tree_with_a_failed_attempt_a_guardrail_and_the_cache(spans):
    mesh = _mesh()
    conn = mesh.connection("fake")
    conn.script(error=RateLimitError("slow down: " + SECRET_PROMPT, status=429, retry_after=0))
    conn.script(text="ok")
    resp = mesh.complete(mesh.get_llm("scripted:fake:chat"), _req(SECRET_PROMPT, maxOutputTokens=20))
    assert resp.text == "ok"
    tree, done = _tree(spans)
    assert tree == [("chat chat", [("guardrail pii", []), ("cache lookup", []), ("attempt", []), ("attempt", []),
                                   ("guardrail pii", [])])]
    root = next(s for s in done if s.name == "chat chat")
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "scripted"
    assert a["gen_ai.request.model"] == "chat" and a["gen_ai.request.temperature"] == 0
    assert a["gen_ai.request.max_tokens"] == 20 and a["gen_ai.response.model"] == "chat"
    assert a["gen_ai.usage.input_tokens"] == resp.usage.input_tokens
    assert a["gen_ai.usage.output_tokens"] == resp.usage.output_tokens
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["mesh.cache"] == "miss" and "pii:input:redact" in a["mesh.guardrails"]
    failed, ok = [s for s in done if s.name == "attempt"]
    assert failed.attributes["mesh.attempt"] == 1 and failed.attributes["error.type"] == "RateLimitError"
    assert failed.attributes["http.response.status_code"] == 429 and failed.status.status_code.name == "ERROR"
    assert ok.attributes["mesh.attempt"] == 2 and "error.type" not in ok.attributes
    _no_secrets(done)


def test_a_cache_hit_has_no_attempt_and_a_stream_is_one_span(spans):
    mesh = _mesh()
    llm = mesh.get_llm("scripted:fake:chat")
    mesh.complete(llm, _req("hello"))
    spans.clear()
    mesh.complete(llm, _req("hello"))
    tree, done = _tree(spans)
    assert tree == [("chat chat", [("guardrail pii", []), ("cache lookup", []), ("guardrail pii", [])])]
    assert done[-1].attributes["mesh.cache"] == "hit"
    spans.clear()
    mesh.connection("fake").script(text=f"streamed {CARD} text")
    events = list(mesh.stream(llm, _req(SECRET_PROMPT, temperature=1)))
    assert "".join(e.text or "" for e in events[:-1]) == "streamed [CREDIT_CARD] text"
    tree, done = _tree(spans)
    assert tree == [("chat chat", [("guardrail pii", []), ("attempt", [])])]
    root = done[-1]
    assert tuple(root.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert root.attributes["gen_ai.usage.output_tokens"] == events[-1].usage.output_tokens
    _no_secrets(done)


def test_a_judge_call_is_a_child_span_and_async_calls_trace_alike(spans):
    mesh = _mesh(guardrails=[{"name": "safety", "type": "judge", "llm": "scripted:fake:judge",
                              "llms": ["scripted:fake:chat"], "policy": "nothing about launch codes", "stage": "input"}])
    conn = mesh.connection("fake")
    conn.script(text="ALLOW").script(text="fine")

    async def go():
        return await mesh.acomplete(mesh.get_llm("scripted:fake:chat"), _req(SECRET_PROMPT))

    assert asyncio.run(go()).text == "fine"
    tree, done = _tree(spans)
    assert tree == [("chat chat", [("guardrail safety", [("chat judge", [("cache lookup", []), ("attempt", [])])]),
                                   ("cache lookup", []), ("attempt", [])])]
    _no_secrets(done)


def test_content_capture_is_opt_in_and_after_redaction(spans):
    mesh = _mesh(tracing={"capture_content": True})
    mesh.complete(mesh.get_llm("scripted:fake:chat"), _req("mail a@b.io please"))
    root = [s for s in spans.get_finished_spans() if s.name == "chat chat"][0]
    assert "[EMAIL] please" in root.attributes["gen_ai.input.messages"]
    assert "a@b.io" not in root.attributes["gen_ai.input.messages"]


def test_langchain_callbacks_still_see_the_call(spans):
    pytest.importorskip("langchain_core")
    from langchain_core.callbacks import BaseCallbackHandler

    seen = []

    class Handler(BaseCallbackHandler):
        def on_chat_model_start(self, serialized, messages, **kw):
            seen.append(("start", kw.get("metadata", {}).get("ls_provider")))

        def on_llm_end(self, response, **kw):
            seen.append(("end", response.generations[0][0].text))

    mesh = _mesh()
    chat = mesh.get_llm("scripted:fake:chat").as_langchain_chat_model()
    mesh.connection("fake").script(text="hi there")
    assert chat.invoke("hello", config={"callbacks": [Handler()]}).content == "hi there"
    assert seen[0][0] == "start" and seen[0][1] and seen[-1] == ("end", "hi there")
    assert any(s.name == "chat chat" for s in spans.get_finished_spans())


def test_no_tracing_section_imports_nothing():
    import subprocess
    import sys

    code = ("import sys; from langchain_mesh import Mesh; m = Mesh({'connections': {'f': {'type': 'scripted'}}});"
            "m.get_llm('scripted:f:chat').new_completion().with_message('x').execute();"
            "print([n for n in ('opentelemetry', 'langchain_mesh.policies.tracing', 'redis', 'regex')"
            " if n in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_an_async_stream_with_a_failed_first_attempt(spans):
    mesh = _mesh()
    conn = mesh.connection("fake")
    conn.script(error=RateLimitError("busy", status=429, retry_after=0)).script(text="async words here")

    async def go():
        return [e async for e in mesh.astream(mesh.get_llm("scripted:fake:chat"), _req(SECRET_PROMPT, temperature=1))]

    events = asyncio.run(go())
    assert "".join(e.text or "" for e in events[:-1]) == "async words here"
    tree, done = _tree(spans)
    assert tree == [("chat chat", [("guardrail pii", []), ("attempt", []), ("attempt", [])])]
    first, second = [s for s in done if s.name == "attempt"]
    assert first.attributes["error.type"] == "RateLimitError" and "error.type" not in second.attributes
    _no_secrets(done)


def test_the_mesh_can_set_up_its_own_sdk_exporter():
    from langchain_mesh.config import TracingConfig

    tracer = tracing._tracer(TracingConfig(exporter="console", service_name="mesh-test"))
    with tracer.start_as_current_span("probe") as sp:
        assert sp.is_recording() and sp.resource.attributes["service.name"] == "mesh-test"
