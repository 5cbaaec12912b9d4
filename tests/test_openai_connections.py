"""Every OpenAI-wire connection type, end to end: mesh -> connection -> the real ``openai`` SDK ->
HTTP -> the local server of that service's flavour, with assertions on the exact request received.

One table (``CASES``) says how each type is configured and which features its service has; the
tests below run over all of them, so a feature that works for one type and not another shows up as
one failing parameter.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

pytest.importorskip("openai")

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import StreamChunk, StreamFooter  # noqa: E402
from langchain_mesh.testing.openai import OpenAIServer, make_png  # noqa: E402

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


@dataclass
class Case:
    type: str
    fixture: str
    chat: str  # the model part of the chat LLM id
    embed: str | None
    config: Callable[[OpenAIServer, str], dict[str, Any]]  # (server, api key) -> connection config
    chat_path: str
    embed_path: str = ""
    max_tokens_key: str = "max_tokens"
    required_choice: str = "required"
    wire_model: str = ""  # the `model` sent, when not the LLM id's model part
    logprobs: bool = True
    #: True: sent and honoured; False: refused before sending; "server": sent, the server decides
    dimensions: bool | str = False
    #: streams a call's arguments in fragments (Mistral sends each call whole, in one delta)
    partial_tool_calls: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def conn(self, srv: OpenAIServer, key: str = "test-key", **over: Any) -> dict[str, Any]:
        return {**self.config(srv, key), "max_retries": 0, **over}


def _azure_llm(srv: OpenAIServer, key: str) -> dict[str, Any]:
    return {"type": "azure_llm", "models": [
        {"id": "llama", "target_uri": srv.base_url, "api_key": key},
        {"id": "embedder", "target_uri": srv.base_url + "/v1/embeddings", "api_key": key,
         "purposes": ["TEXT_EMBEDDING_EXTRACTION"]},
    ]}


CASES = [
    Case("openai", "openai_server", "gpt-4o", "text-embedding-3-small",
         lambda s, k: {"type": "openai", "api_key": k, "base_url": s.base_url},
         "/v1/chat/completions", "/v1/embeddings", max_tokens_key="max_completion_tokens", dimensions=True),
    Case("azure_openai", "azure_openai_server", "gpt-4o-dep", "text-embedding-3-small-dep",
         lambda s, k: {"type": "azure_openai", "endpoint": s.base_url, "api_key": k, "api_version": "2024-10-21",
                       "models": [{"id": "gpt-4o-dep", "model": "gpt-4o"},
                                  {"id": "text-embedding-3-small-dep", "model": "text-embedding-3-small"},
                                  {"id": "dall-e-3-dep", "model": "dall-e-3"}]},
         "/openai/deployments/gpt-4o-dep/chat/completions", "/openai/deployments/text-embedding-3-small-dep/embeddings",
         max_tokens_key="max_completion_tokens", dimensions=True),
    Case("azure_llm", "azure_serverless_server", "llama", "embedder", _azure_llm,
         "/v1/chat/completions", "/v1/embeddings"),
    Case("databricks", "databricks_server", "databricks-meta-llama-3-3-70b-instruct", "databricks-gte-large-en",
         lambda s, k: {"type": "databricks", "host": s.url, "token": k},
         "/serving-endpoints/chat/completions", "/serving-endpoints/embeddings"),
    Case("mistral", "mistral_server", "mistral-large-latest", "mistral-embed",
         lambda s, k: {"type": "mistral", "api_key": k, "base_url": s.base_url},
         "/v1/chat/completions", "/v1/embeddings", required_choice="any", logprobs=False, partial_tool_calls=False),
    Case("openai_compatible", "openai_server", "Qwen/Qwen2.5-7B-Instruct", "bge-small",
         lambda s, k: {"type": "openai_compatible", "api_key": k, "base_url": s.base_url,
                       "models": [{"id": "Qwen/Qwen2.5-7B-Instruct"},
                                  {"id": "bge-small", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]},
         "/v1/chat/completions", "/v1/embeddings", dimensions="server"),
]


@pytest.fixture(params=CASES, ids=[c.type for c in CASES])
def case(request: pytest.FixtureRequest) -> tuple[Case, OpenAIServer]:
    c: Case = request.param
    return c, request.getfixturevalue(c.fixture)


def mesh_for(c: Case, srv: OpenAIServer, **over: Any) -> Mesh:
    return Mesh.from_config({"connections": {"conn": c.conn(srv, **over)}})


def chat(c: Case, srv: OpenAIServer, **over: Any):
    return mesh_for(c, srv, **over).get_llm(f"{c.type}:conn:{c.chat}")


# the async path's two transports: the lean HTTP/1.1 client (httptools installed, no proxy) and the
# SDK's own async client (no httptools, or a proxy in the environment)
TRANSPORTS = pytest.mark.parametrize("lean", [True, False], ids=["http1", "sdk"])


def on_transport(llm: Any, lean: bool) -> Any:
    llm.connection._lean = lean
    return llm


def body(srv: OpenAIServer) -> dict[str, Any]:
    return srv.last_request.json


# --------------------------------------------------------------------------------------------------
# completion, streaming


def test_completion_sends_the_exact_request(case):
    c, srv = case
    srv.script(text="Paris is the capital.")
    q = chat(c, srv).new_completion().with_message("Be brief.", role="system").with_message("Capital of France?")
    q.settings.update(temperature=0.3, maxOutputTokens=40, stopSequences=["\n\n"])
    r = q.execute()
    assert r.text == "Paris is the capital." and r.finish_reason == "stop"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    req = srv.last_request
    assert req.path == c.chat_path and req.method == "POST"
    auth = req.headers.get("api-key") or req.headers.get("authorization")
    assert auth in ("test-key", "Bearer test-key")
    sent = req.json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    assert sent["temperature"] == 0.3 and sent[c.max_tokens_key] == 40 and sent["stop"] == ["\n\n"]
    assert "stream" not in sent


def test_streaming_with_usage_in_the_footer(case):
    c, srv = case
    srv.script(text="One two three four five.")
    events = list(chat(c, srv).new_completion().with_message("Count").execute_streamed())
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    assert len(chunks) >= 3 and "".join(e.text or "" for e in chunks) == "One two three four five."
    footer = events[-1]
    assert isinstance(footer, StreamFooter) and footer.finish_reason == "stop"
    assert footer.usage.output_tokens > 0 and footer.usage.total_tokens == footer.usage.input_tokens + footer.usage.output_tokens
    sent = body(srv)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@TRANSPORTS
async def test_async_completion_and_stream(case, lean):
    c, srv = case
    llm = on_transport(chat(c, srv), lean)
    srv.script(text="async answer")
    r = await llm.new_completion().with_message("hi").aexecute()
    assert r.text == "async answer"
    srv.script(text="async stream answer")
    events = [e async for e in llm.new_completion().with_message("hi").aexecute_streamed()]
    assert "".join(e.text or "" for e in events if isinstance(e, StreamChunk)) == "async stream answer"
    assert isinstance(events[-1], StreamFooter)


# --------------------------------------------------------------------------------------------------
# tools


def test_tool_call_and_tool_choice(case):
    c, srv = case
    llm = chat(c, srv)
    srv.script(tool_calls=[("get_weather", {"city": "Paris"})])
    q = llm.new_completion().with_message("Weather in Paris?")
    q.settings.update(tools=[TOOL], toolChoice="required")
    r = q.execute()
    assert r.finish_reason == "tool_calls" and r.text == ""
    assert r.tool_calls[0].function.name == "get_weather" and r.tool_calls[0].function.parsed_arguments() == {"city": "Paris"}
    sent = body(srv)
    assert sent["tools"] == [TOOL] and sent["tool_choice"] == c.required_choice

    # the call and its result go back as the next turn
    q = llm.new_completion().with_message("Weather in Paris?").with_tool_calls(r.tool_calls)
    q.with_tool_output({"temp_c": 21}, tool_call_id=r.tool_calls[0].id)
    q.settings.update(tools=[TOOL], toolChoice="get_weather")
    srv.script(text="21 degrees.")
    assert q.execute().text == "21 degrees."
    msgs = body(srv)["messages"]
    assert msgs[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert msgs[2] == {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": r.tool_calls[0].id}
    assert body(srv)["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_streamed_partial_and_parallel_tool_calls(case):
    c, srv = case
    srv.script(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo, Norway"})])
    q = chat(c, srv).new_completion().with_message("Weather in Paris and Oslo?")
    q.settings["tools"] = [TOOL]
    events = list(q.execute_streamed())
    deltas = [d for e in events if isinstance(e, StreamChunk) for d in e.tool_call_deltas]
    by_index = {i: [d for d in deltas if d.index == i] for i in (0, 1)}
    for i, frags in by_index.items():
        assert len(frags) >= (2 if c.partial_tool_calls else 1), "arguments arrive in several fragments"
        assert frags[0].name == "get_weather" and frags[0].id and all(f.name is None for f in frags[1:])
    footer = events[-1]
    assert footer.finish_reason == "tool_calls"
    assert [tc.function.parsed_arguments() for tc in footer.tool_calls] == [{"city": "Paris"}, {"city": "Oslo, Norway"}]


# --------------------------------------------------------------------------------------------------
# structured output, multimodal, log-probs


def test_structured_output(case):
    c, srv = case
    srv.script(text='{"name": "Ada", "age": 36}')
    q = chat(c, srv).new_completion().with_message("Who wrote the first program?")
    r = q.with_json_output(SCHEMA, strict=True, name="person").execute()
    assert r.json == {"name": "Ada", "age": 36}
    assert body(srv)["response_format"] == {"type": "json_schema",
                                             "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    srv.script(text='{"ok": true}')
    chat(c, srv).new_completion().with_message("json please").with_json_output().execute()
    assert body(srv)["response_format"] == {"type": "json_object"}


def test_image_input_goes_as_a_data_url(case):
    c, srv = case
    png = make_png(4, 4)
    q = chat(c, srv).new_completion()
    q.new_multipart_message().with_text("What is in this image?").with_inline_image(png).add()
    srv.script(text="A small square.")
    assert q.execute().text == "A small square."
    content = body(srv)["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is in this image?"}
    assert content[1] == {"type": "image_url",
                          "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}


def test_log_probs_on_the_response(case):
    c, srv = case
    q = chat(c, srv).new_completion().with_message("Say hello world")
    q.settings.update(logProbs=True, topLogProbs=2)
    if not c.logprobs:
        with pytest.raises(SettingsError, match="logProbs"):
            q.execute()
        assert srv.requests == [], "an unsupported setting fails before any request"
        return
    srv.script(text="hello world")
    r = q.execute()
    assert [t.token.strip() for t in r.log_probs] == ["hello", "world"]
    assert all(t.logprob <= 0 and len(t.top) == 2 for t in r.log_probs)
    assert body(srv)["logprobs"] is True and body(srv)["top_logprobs"] == 2


# --------------------------------------------------------------------------------------------------
# embeddings


def test_embeddings_are_batched_and_decoded(case):
    c, srv = case
    mesh = mesh_for(c, srv, embedding_batch_size=2)
    texts = ["alpha one", "beta two", "gamma three", "delta four", "alpha one"]
    r = mesh.get_llm(f"{c.type}:conn:{c.embed}").new_embeddings().add_texts(texts).execute()
    assert len(r.embeddings) == 5 and r.embeddings[0] == r.embeddings[4] != r.embeddings[1]
    assert r.usage.input_tokens == 10
    posts = [q for q in srv.requests if q.path.endswith("/embeddings")]
    assert [q.json["input"] for q in posts] == [texts[:2], texts[2:4], texts[4:]]
    assert all(q.path == c.embed_path and q.json["encoding_format"] == "base64" for q in posts)


@TRANSPORTS
async def test_async_embeddings_keep_the_input_order(case, lean):
    c, srv = case
    mesh = mesh_for(c, srv, embedding_batch_size=1)
    llm = on_transport(mesh.get_llm(f"{c.type}:conn:{c.embed}"), lean)
    r = await llm.new_embeddings().add_texts(["a b", "c d", "e f"]).aexecute()
    one = llm.new_embeddings().add_text("c d").execute()
    assert r.embeddings[1] == one.embeddings[0]


def test_embedding_dimensions(case):
    c, srv = case
    q = mesh_for(c, srv).get_llm(f"{c.type}:conn:{c.embed}").new_embeddings().add_text("x")
    q.settings["dimensions"] = 16
    if c.dimensions is True:
        assert len(q.execute().embeddings[0]) == 16 and body(srv)["dimensions"] == 16
    elif c.dimensions == "server":  # a generic server: we pass it on, this one refuses it for the model
        with pytest.raises(BadRequestError, match="dimensions"):
            q.execute()
        assert body(srv)["dimensions"] == 16
    else:
        with pytest.raises(SettingsError, match="dimensions"):
            q.execute()


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("status,cls", [(400, BadRequestError), (404, NotFoundError), (429, RateLimitError),
                                        (500, ServerError), (503, ServerError)])
def test_each_status_maps_to_its_error(case, status, cls):
    c, srv = case
    srv.script(status=status, error_message=f"scripted {status}", headers={"retry-after": "7"})
    with pytest.raises(cls) as e:
        chat(c, srv).new_completion().with_message("hi").execute()
    err = e.value
    assert err.status == status and "scripted" in err.provider_message and err.provider == c.type
    assert err.retryable == (status >= 429)
    assert err.retry_after == 7.0


def test_a_wrong_key_is_an_authentication_error_that_does_not_leak_it(case):
    c, srv = case
    with pytest.raises(AuthenticationError) as e:
        mesh_for(c, srv, **c.config(srv, "sk-wrong-secret-value")).get_llm(
            f"{c.type}:conn:{c.chat}").new_completion().with_message("hi").execute()
    assert e.value.status == 401 and not e.value.retryable
    assert "sk-wrong-secret-value" not in str(e.value) + repr(e.value) + (e.value.provider_message or "")


def test_retry_policy_honours_retry_after(case):
    c, srv = case
    srv.script(status=429, error_message="slow down", headers={"retry-after": "0.01"})
    srv.script(status=503, error_message="overloaded", headers={"retry-after": "0"})
    srv.script(text="third time lucky")
    assert chat(c, srv, max_retries=2).new_completion().with_message("hi").execute().text == "third time lucky"
    assert len(srv.requests) == 3


def test_non_retryable_errors_are_not_retried(case):
    c, srv = case
    srv.script(status=400, error_message="bad")
    srv.script(text="never reached")
    with pytest.raises(BadRequestError):
        chat(c, srv, max_retries=3).new_completion().with_message("hi").execute()
    assert len(srv.requests) == 1


def test_timeout(case):
    c, srv = case
    srv.script(text="late", delay=1.0)
    with pytest.raises(ProviderTimeoutError) as e:
        chat(c, srv, timeout=0.2).new_completion().with_message("hi").execute()
    assert e.value.retryable and "0.2" in str(e.value)


def test_a_cut_stream_raises_instead_of_returning_partial_text(case):
    c, srv = case
    srv.script(text="This answer will be cut off in the middle of it.", cut_after=4)
    got: list[str] = []
    with pytest.raises(StreamInterruptedError) as e:
        for ev in chat(c, srv).new_completion().with_message("hi").execute_streamed():
            if isinstance(ev, StreamChunk) and ev.text:
                got.append(ev.text)
    assert got and e.value.partial_text == "".join(got)
    assert "This answer will be cut off in the middle of it." != "".join(got)


@TRANSPORTS
async def test_a_cut_async_stream_raises_too(case, lean):
    c, srv = case
    srv.script(text="This answer will be cut off in the middle of it.", cut_after=3)
    with pytest.raises(StreamInterruptedError):
        async for _ in on_transport(chat(c, srv), lean).new_completion().with_message("hi").aexecute_streamed():
            pass


@TRANSPORTS
async def test_async_errors_map_as_the_sync_ones(case, lean):
    c, srv = case
    llm = on_transport(chat(c, srv), lean)
    srv.script(status=429, error_message="slow down", headers={"retry-after": "7"})
    with pytest.raises(RateLimitError, match="slow down") as e:
        await llm.new_completion().with_message("hi").aexecute()
    assert e.value.retry_after == 7
    srv.script(status=400, error_message="bad temperature")
    with pytest.raises(BadRequestError, match="bad temperature"):
        await llm.new_completion().with_message("hi").aexecute()


@TRANSPORTS
def test_the_clients_of_finished_event_loops_are_let_go(openai_server, lean):
    """``asyncio.run`` per call (scripts, notebooks, sync web apps): every run gets clients of its own
    loop, and each run's loop, with its client and sockets, is freed once the next one starts, instead
    of piling up for the life of the process."""
    import gc
    import weakref

    llm = on_transport(Mesh.from_config({"connections": {"c": {
        "type": "openai_compatible", "base_url": openai_server.base_url, "api_key": "test-key",
        "models": [{"id": "m"}]}}}).get_llm("openai_compatible:c:m"), lean)
    loops = []
    for i in range(4):
        openai_server.script(text=f"run {i}")
        loop = asyncio.new_event_loop()
        loops.append(weakref.ref(loop))
        assert loop.run_until_complete(llm.new_completion().with_message("hi").aexecute()).text == f"run {i}"
        loop.close()
        del loop
    if lean:  # (the SDK's clients, once dropped, log their failed close on the next loop: that keeps it)
        gc.collect()
        assert [r() is None for r in loops] == [True, True, True, False]  # the last one waits for a next run


def test_a_stream_that_fails_before_its_first_event_is_retried(case):
    c, srv = case
    srv.script(status=500, error_message="boom")
    srv.script(text="recovered")
    events = list(chat(c, srv, max_retries=1).new_completion().with_message("hi").execute_streamed())
    assert "".join(e.text or "" for e in events if isinstance(e, StreamChunk)) == "recovered"


def test_unreachable_server_is_a_connection_error(case):
    c, srv = case
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = c.config(srv, "test-key")
    text = json.dumps(cfg).replace(f":{srv.port}", f":{dead}")
    mesh = Mesh.from_config({"connections": {"conn": {**json.loads(text), "max_retries": 0}}})
    with pytest.raises(ProviderConnectionError) as e:
        mesh.get_llm(f"{c.type}:conn:{c.chat}").new_completion().with_message("hi").execute()
    assert e.value.retryable and str(dead) in str(e.value)


# --------------------------------------------------------------------------------------------------
# what is specific to one type


def test_openai_allow_list(openai_server):
    mesh = Mesh.from_config({"connections": {"oa": {"type": "openai", "api_key": "test-key",
                                                    "base_url": openai_server.base_url,
                                                    "models": [{"id": "gpt-4o-mini"}, {"id": "text-embedding-3-large"}]}}})
    ids = {i.id: i for i in mesh.list_llms()}
    assert set(ids) == {"openai:oa:gpt-4o-mini", "openai:oa:text-embedding-3-large"}
    assert ids["openai:oa:text-embedding-3-large"].purposes == ["TEXT_EMBEDDING_EXTRACTION"]  # from the catalogue
    assert ids["openai:oa:gpt-4o-mini"].capabilities.structured_output
    from langchain_mesh.errors import UnknownLLMError

    with pytest.raises(UnknownLLMError, match="gpt-4o-mini"):
        mesh.get_llm("openai:oa:gpt-4o")
    assert openai_server.requests == []


def test_openai_images(openai_server):
    mesh = Mesh.from_config({"connections": {"oa": {"type": "openai", "api_key": "test-key",
                                                    "base_url": openai_server.base_url}}})
    q = mesh.get_llm("openai:oa:dall-e-3").new_images_generation().with_prompt("a red square")
    q.width, q.height = 1792, 1024
    img = q.execute()
    assert img.images[0].mime_type == "image/png" and img.first_image().startswith(b"\x89PNG")
    assert body(openai_server) == {"model": "dall-e-3", "prompt": "a red square", "n": 1, "size": "1792x1024",
                                   "response_format": "b64_json"}


def test_openai_organization_and_project_headers(openai_server):
    mesh = Mesh.from_config({"connections": {"oa": {"type": "openai", "api_key": "test-key", "organization": "org-1",
                                                    "project": "proj-9", "base_url": openai_server.base_url}}})
    mesh.get_llm("openai:oa:gpt-4o").new_completion().with_message("hi").execute()
    h = openai_server.last_request.headers
    assert h["openai-organization"] == "org-1" and h["openai-project"] == "proj-9"


def test_the_lean_transport_leaves_out_the_sdks_telemetry_headers_but_not_configured_ones(openai_server):
    mesh = Mesh.from_config({"connections": {"oa": {
        "type": "openai", "api_key": "test-key", "organization": "org-1", "base_url": openai_server.base_url,
        "default_headers": {"X-Stainless-Helper": "kept", "X-Tenant": "t1"}}}})
    llm = mesh.get_llm("openai:oa:gpt-4o")
    assert on_transport(llm, True) is llm
    asyncio.run(llm.new_completion().with_message("hi").aexecute())
    h = openai_server.last_request.headers
    assert h["authorization"] == "Bearer test-key" and h["openai-organization"] == "org-1"
    assert h["x-tenant"] == "t1" and h["x-stainless-helper"] == "kept" and h["user-agent"].startswith("AsyncOpenAI/")
    assert [k for k in h if k.lower().startswith("x-stainless-") and k.lower() != "x-stainless-helper"] == []
    # the SDK's own transport (sync calls) sends what the SDK sends
    llm.new_completion().with_message("hi").execute()
    assert openai_server.last_request.headers["x-stainless-lang"] == "python"


def test_azure_deployment_underlying_model_and_apim_headers(azure_openai_server, monkeypatch):
    monkeypatch.setenv("APIM_KEY", "apim-secret")
    c = CASES[1]
    mesh = mesh_for(c, azure_openai_server, default_headers={"Ocp-Apim-Subscription-Key": "{{env:APIM_KEY}}"})
    info = {i.id: i for i in mesh.list_llms()}
    assert info["azure_openai:conn:text-embedding-3-small-dep"].purposes == ["TEXT_EMBEDDING_EXTRACTION"]
    assert info["azure_openai:conn:dall-e-3-dep"].purposes == ["IMAGE_GENERATION"]
    assert info["azure_openai:conn:gpt-4o-dep"].capabilities.image_input
    assert mesh.connection("conn").underlying_model("gpt-4o-dep") == "gpt-4o"
    r = mesh.get_llm("azure_openai:conn:gpt-4o-dep").new_completion().with_message("hi").execute()
    assert r.model == "gpt-4o"
    req = azure_openai_server.last_request
    assert req.query["api-version"] == "2024-10-21" and req.headers["api-key"] == "test-key"
    assert req.headers["ocp-apim-subscription-key"] == "apim-secret"
    img = mesh.get_llm("azure_openai:conn:dall-e-3-dep").new_images_generation().with_prompt("a cat").execute()
    assert img.first_image().startswith(b"\x89PNG")
    assert azure_openai_server.last_request.path == "/openai/deployments/dall-e-3-dep/images/generations"


def test_azure_entra_token_from_a_file(azure_openai_server, tmp_path):
    token = tmp_path / "token"
    token.write_text("test-entra-token\n")
    mesh = Mesh.from_config({"connections": {"az": {
        "type": "azure_openai", "endpoint": azure_openai_server.base_url, "auth": "entra_id",
        "entra_token": f"{{{{file:{token}}}}}", "models": [{"id": "gpt-4o-dep", "model": "gpt-4o"}]}}})
    mesh.get_llm("azure_openai:az:gpt-4o-dep").new_completion().with_message("hi").execute()
    h = azure_openai_server.last_request.headers
    assert h["authorization"] == "Bearer test-entra-token" and "api-key" not in h


def test_azure_entra_default_credential_through_azure_identity(azure_openai_server, monkeypatch):
    identity = pytest.importorskip("azure.identity")
    scopes: list[tuple[str, ...]] = []

    class FakeCredential:  # stands in for managed identity / az login, which need Azure
        def get_token(self, *s: str, **kw: Any) -> Any:
            scopes.append(s)
            from azure.core.credentials import AccessToken

            return AccessToken("test-entra-token", 2_000_000_000)

    monkeypatch.setattr(identity, "DefaultAzureCredential", FakeCredential)
    mesh = Mesh.from_config({"connections": {"az": {
        "type": "azure_openai", "endpoint": azure_openai_server.base_url, "auth": "entra_id",
        "models": [{"id": "gpt-4o-dep", "model": "gpt-4o"}]}}})
    mesh.get_llm("azure_openai:az:gpt-4o-dep").new_completion().with_message("hi").execute()
    assert azure_openai_server.last_request.headers["authorization"] == "Bearer test-entra-token"
    assert scopes == [("https://cognitiveservices.azure.com/.default",)]


def test_azure_unknown_deployment_is_not_found(azure_openai_server):
    mesh = Mesh.from_config({"connections": {"az": {
        "type": "azure_openai", "endpoint": azure_openai_server.base_url, "api_key": "test-key",
        "models": [{"id": "ghost", "model": "gpt-4o"}], "max_retries": 0}}})
    with pytest.raises(NotFoundError, match="DeploymentNotFound"):
        mesh.get_llm("azure_openai:az:ghost").new_completion().with_message("hi").execute()


def test_azure_config_errors_are_named():
    from langchain_mesh.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        Mesh.from_config({"connections": {"az": {"type": "azure_openai", "endpoint": "https://x", "models": []}}})
    assert "connections.az.models" in str(e.value)
    with pytest.raises(ConfigError, match="tenant_id, client_id and client_secret"):
        Mesh.from_config({"connections": {"az": {"type": "azure_openai", "endpoint": "https://x", "auth": "entra_id",
                                                 "client_id": "c", "models": [{"id": "d", "model": "gpt-4o"}]}}})


def test_azure_llm_endpoints_each_have_their_own_client(azure_serverless_server):
    mesh = mesh_for(CASES[2], azure_serverless_server)
    mesh.get_llm("azure_llm:conn:llama").new_completion().with_message("hi").execute()
    mesh.get_llm("azure_llm:conn:embedder").new_embeddings().add_text("x").execute()
    conn = mesh.connection("conn")
    assert set(conn._clients) == {"llama", "embedder"}
    assert [r.path for r in azure_serverless_server.requests] == ["/v1/chat/completions", "/v1/embeddings"]


def test_databricks_oauth_m2m(databricks_server):
    mesh = Mesh.from_config({"connections": {"dbx": {
        "type": "databricks", "host": databricks_server.url, "client_id": "sp-id", "client_secret": "sp-secret"}}})
    llm = mesh.get_llm("databricks:dbx:databricks-meta-llama-3-3-70b-instruct")
    llm.new_completion().with_message("hi").execute()
    llm.new_completion().with_message("again").execute()
    token_posts = [r for r in databricks_server.requests if r.path == "/oidc/v1/token"]
    assert len(token_posts) == 1, "the token is cached until it nears expiry"
    assert token_posts[0].headers["authorization"] == "Basic " + base64.b64encode(b"sp-id:sp-secret").decode()
    assert "grant_type=client_credentials" in token_posts[0].body.decode()
    chat_req = databricks_server.last_request
    assert chat_req.path == "/serving-endpoints/chat/completions"
    assert chat_req.headers["authorization"] == "Bearer " + databricks_server.oauth_token


def test_databricks_unknown_endpoint(databricks_server):
    mesh = Mesh.from_config({"connections": {"dbx": {"type": "databricks", "host": databricks_server.url,
                                                     "token": "test-key", "models": [{"id": "nope"}], "max_retries": 0}}})
    with pytest.raises(NotFoundError, match="RESOURCE_DOES_NOT_EXIST"):
        mesh.get_llm("databricks:dbx:nope").new_completion().with_message("hi").execute()


def test_mistral_seed_is_random_seed(mistral_server):
    llm = mesh_for(CASES[4], mistral_server).get_llm("mistral:conn:mistral-large-latest")
    q = llm.new_completion().with_message("hi")
    q.settings["seed"] = 42
    q.execute()
    assert body(mistral_server)["random_seed"] == 42 and "seed" not in body(mistral_server)


def test_openai_compatible_top_k_and_model_discovery(openai_server):
    mesh = Mesh.from_config({"connections": {"vllm": {"type": "openai_compatible", "base_url": openai_server.base_url,
                                                      "api_key": "test-key", "discover_models": True}}})
    ids = [i.id for i in mesh.list_llms()]
    assert "openai_compatible:vllm:gpt-4o" in ids
    q = mesh.get_llm("openai_compatible:vllm:gpt-4o").new_completion().with_message("hi")
    q.settings["topK"] = 20
    q.execute()
    assert body(openai_server)["top_k"] == 20


def test_openai_compatible_server_down_does_not_break_listing():
    mesh = Mesh.from_config({"connections": {"vllm": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                                                      "discover_models": True, "timeout": 1}}})
    assert mesh.list_llms() == []


def test_missing_credential_is_a_clear_error(monkeypatch):
    from langchain_mesh.errors import CredentialError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    mesh = Mesh.from_config({"connections": {"oa": {"type": "openai"}}})
    with pytest.raises(CredentialError, match="OPENAI_API_KEY"):
        mesh.get_llm("openai:oa:gpt-4o").new_completion().with_message("hi").execute()


def test_langchain_chat_model_over_every_type(case):
    from langchain_core.messages import AIMessageChunk

    from langchain_mesh.langchain import MeshChatModel

    c, srv = case
    mesh = mesh_for(c, srv)
    model = MeshChatModel(llm_id=f"{c.type}:conn:{c.chat}", mesh=mesh)
    srv.script(text="hello there")
    assert model.invoke("hi").content == "hello there"
    srv.script(tool_calls=[("get_weather", {"city": "Rome"})])
    msg = model.bind_tools([TOOL], tool_choice="any").invoke("weather in Rome?")
    assert msg.tool_calls[0]["args"] == {"city": "Rome"}
    srv.script(text="streamed reply")
    chunks = list(model.stream("hi"))
    total = chunks[0]
    for ch in chunks[1:]:
        total = total + ch
    assert isinstance(total, AIMessageChunk) and total.content == "streamed reply"
    assert total.usage_metadata and total.usage_metadata["output_tokens"] > 0
    emb = mesh.get_llm(f"{c.type}:conn:{c.embed}").as_langchain_embeddings()
    assert len(asyncio.run(emb.aembed_documents(["a", "b"]))) == 2
