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


def test_the_gateways_pass_through_is_traced_with_usage_through_a_route_and_to_a_streams_end(spans, openai_server):
    pytest.importorskip("uvicorn")
    import httpx
    import time

    from test_server_harness import RunningServer

    oa = {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url, "max_retries": 0,
          "models": [{"id": "gpt-4o"}]}
    mesh = Mesh.from_config({"connections": {"oa": oa}, "routes": {"r": {"targets": ["openai:oa:gpt-4o"]}},
                             "tracing": {"capture_content": True}, "guardrails": [{"name": "pii", "type": "pii"}]})
    assert mesh.passthrough(mesh.get_llm("route:r")) is not None  # traced and guarded, still the byte path
    with RunningServer(mesh) as srv:
        openai_server.script(text=f"card {CARD}", usage={"prompt_tokens": 11, "completion_tokens": 7})
        r = httpx.post(srv.base_url + "/chat/completions", timeout=30, json={
            "model": "route:r", "temperature": 0.5, "max_tokens": 9, "min_p": 0.1,  # min_p: only the pass-through takes it
            "messages": [{"role": "user", "content": SECRET_PROMPT}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "card [CREDIT_CARD]"
        tree, done = _tree(spans)
        # (the route redacts the input; the target, where a blocked answer could still fall back, the output)
        assert tree == [("chat r", [("guardrail pii", []), ("chat gpt-4o", [("attempt", []), ("guardrail pii", [])])])]
        outer = next(s for s in done if s.name == "chat r").attributes
        inner = next(s for s in done if s.name == "chat gpt-4o").attributes
        for a in (outer, inner):
            assert a["gen_ai.usage.input_tokens"] == 11 and a["gen_ai.usage.output_tokens"] == 7
            assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
            assert a["gen_ai.request.temperature"] == 0.5 and a["gen_ai.request.max_tokens"] == 9
        assert outer["mesh.answered_by"] == "openai:oa:gpt-4o" and "pii:input:redact" in outer["mesh.guardrails"]
        assert "[CREDIT_CARD], the launch code" in outer["gen_ai.input.messages"]
        assert '"card [CREDIT_CARD]"' in outer["gen_ai.output.messages"]
        spans.clear()
        # capture_content (and the output guardrail) read a stream's text: it is served translated, one span
        openai_server.script(text="streamed words", usage={"prompt_tokens": 3, "completion_tokens": 2})
        with httpx.stream("POST", srv.base_url + "/chat/completions", timeout=30, json={
                "model": "route:r", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as s:
            assert s.status_code == 200 and "streamed" in s.read().decode()
        deadline = time.monotonic() + 5
        while not any(x.name == "chat r" for x in spans.get_finished_spans()) and time.monotonic() < deadline:
            time.sleep(0.01)
        root = next(x for x in spans.get_finished_spans() if x.name == "chat r")
        assert root.attributes["gen_ai.usage.output_tokens"] == 2
    _no_secrets([s for s in done if "gen_ai.input.messages" not in s.attributes])


def test_a_pass_through_stream_span_ends_with_the_stream_and_its_usage(spans, openai_server):
    oa = {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url, "max_retries": 0,
          "models": [{"id": "gpt-4o"}]}
    mesh = Mesh.from_config({"connections": {"oa": oa}, "tracing": {}})
    llm = mesh.get_llm("openai:oa:gpt-4o")
    assert mesh.forward_streams(llm)
    openai_server.script(text="a b c", usage={"prompt_tokens": 4, "completion_tokens": 3})
    body = b'{"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}'

    async def go():
        content, first = await mesh.aforward(llm, "/chat/completions", body, True)
        assert [x.name for x in spans.get_finished_spans()] == ["attempt"]  # the call's span: open while the stream is
        while await content.read():
            pass
        content.close()
        content.end({"prompt_tokens": 4, "completion_tokens": 3}, True)
    asyncio.run(go())
    tree, done = _tree(spans)
    assert tree == [("chat gpt-4o", [("attempt", [])])]
    assert done[-1].attributes["gen_ai.usage.output_tokens"] == 3 and done[-1].status.status_code.name != "ERROR"


def test_no_provider_means_no_span_work_until_an_application_sets_one(monkeypatch):
    from opentelemetry import trace

    clock = [100.0]
    monkeypatch.setattr(tracing.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(tracing, "_tracer", lambda cfg: trace.ProxyTracer("langchain_mesh", None))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())  # nobody set one
    mesh = Mesh.from_config({"connections": {"fake": {"type": "scripted", "models": [{"id": "chat"}]}},
                             "tracing": {}})
    layer = mesh._chain(mesh.get_llm("scripted:fake:chat"))[0]
    assert not layer._live()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())  # the application sets its own
    assert not layer._live()  # asked again only after a second
    clock[0] += 1.5
    assert layer._live() and layer._live()
    monkeypatch.setattr(tracing, "_tracer", lambda cfg: trace.NoOpTracer())
    assert not tracing.TracingLayer(layer.llm, layer.cfg)._live()


@pytest.mark.parametrize("ok, error", [(False, True), (None, False)])
def test_a_pass_through_stream_that_breaks_is_an_error_and_one_the_client_leaves_is_not(spans, openai_server, ok, error):
    oa = {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url, "max_retries": 0,
          "models": [{"id": "gpt-4o"}]}
    mesh = Mesh.from_config({"connections": {"oa": oa}, "tracing": {}})
    llm = mesh.get_llm("openai:oa:gpt-4o")
    openai_server.script(text="a b c")
    body = b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'

    async def go():
        content, _first = await mesh.aforward(llm, "/chat/completions", body, True)
        content.close()  # (the server's side: the upstream broke, or the client hung up, mid-stream)
        content.end(None, ok)
    asyncio.run(go())
    root = spans.get_finished_spans()[-1]
    assert root.name == "chat gpt-4o" and "gen_ai.usage.output_tokens" not in root.attributes
    assert (root.status.status_code.name == "ERROR") is error
    assert (root.attributes.get("error.type") == "_OTHER") is error


def test_a_route_call_the_sampler_leaves_out_leaves_out_its_targets_calls_too(monkeypatch, openai_server):
    """A dropped span stays current while its call runs: the route's target (translated and pass-through)
    follows the parent-based sampler instead of starting a trace of its own."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult

    class DropTheRoute(Sampler):  # a root named after the route is dropped; any other root kept
        def should_sample(self, parent_context, trace_id, name, *args, **kwargs):
            return SamplingResult(Decision.DROP if name.startswith("chat r") else Decision.RECORD_AND_SAMPLE)

        def get_description(self):
            return "drop the route"

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(DropTheRoute(), remote_parent_sampled=ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", lambda cfg: provider.get_tracer("langchain_mesh"))
    oa = {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url, "max_retries": 0,
          "models": [{"id": "gpt-4o"}]}
    mesh = Mesh.from_config({"connections": {"oa": oa}, "routes": {"r": {"targets": ["openai:oa:gpt-4o"]}},
                             "tracing": {}})
    route = mesh.get_llm("route:r")
    openai_server.script(text="one")
    assert mesh.complete(route, _req("hi")).text == "one"  # translated
    openai_server.script(text="two")
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'

    async def forward():
        content, end = await mesh.aforward(route, "/chat/completions", body, False)
        if end is not None:
            end.end(None, True)
        return content
    assert b"two" in asyncio.run(forward())  # the pass-through
    assert exporter.get_finished_spans() == ()
    openai_server.script(text="three")  # the target called alone is its own root: kept
    assert mesh.complete(mesh.get_llm("openai:oa:gpt-4o"), _req("hi")).text == "three"
    assert [s.name for s in exporter.get_finished_spans()] == ["attempt", "chat gpt-4o"]
    provider.shutdown()


def test_a_pass_through_embedding_span_has_input_tokens_and_no_output_tokens(spans, openai_server):
    oa = {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url, "max_retries": 0,
          "models": [{"id": "text-embedding-3-small"}]}
    mesh = Mesh.from_config({"connections": {"oa": oa}, "tracing": {}})
    llm = mesh.get_llm("openai:oa:text-embedding-3-small")
    body = b'{"model": "text-embedding-3-small", "input": ["a b c"]}'

    async def go():
        content, end = await mesh.aforward(llm, "/embeddings", body, False)
        import orjson
        end.end(orjson.loads(content)["usage"], True)
    asyncio.run(go())
    root = spans.get_finished_spans()[-1]
    assert root.name == "embeddings text-embedding-3-small"
    assert root.attributes["gen_ai.usage.input_tokens"] > 0 and "gen_ai.usage.output_tokens" not in root.attributes
