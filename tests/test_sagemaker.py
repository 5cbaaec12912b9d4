"""The ``sagemaker`` connection: the real boto3 ``sagemaker-runtime`` client (SigV4, botocore validation,
event-stream decoding) against the local SageMaker Runtime server, one endpoint per handling mode,
with assertions on the exact request each container received."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("boto3")

from _transport_checks import assert_refused, assert_times_out  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.config import load_config  # noqa: E402
from langchain_mesh.connections import sagemaker_wire as wire  # noqa: E402
from langchain_mesh.errors import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    ConfigError,
    NotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import StreamChunk, StreamFooter  # noqa: E402
from langchain_mesh.testing.sagemaker import SageMakerServer  # noqa: E402
from langchain_mesh.testing.wire import free_port  # noqa: E402

SECRET = "sm-s3cret-key-value-0123456789"
ENDPOINTS = {"tgi-ep": "tgi", "hf-ep": "huggingface", "llama3-ep": "tgi", "llama2-ep": "llama", "j2-ep": "jurassic",
             "command-ep": "cohere", "claude-ep": "claude", "vllm-ep": "custom"}
TEMPLATE = ('{"model": "m", "messages": {{messages_json}}, "max_tokens": {{max_tokens}}, '
            '"temperature": "{{temperature}}", "note": "prompt was: {{prompt}}", "stream": {{stream}}}')
MODELS = [
    {"id": "tgi", "endpoint_name": "tgi-ep"},
    {"id": "hf", "endpoint_name": "hf-ep", "handling": "huggingface"},
    {"id": "llama3", "endpoint_name": "llama3-ep", "handling": "llama"},
    {"id": "llama2", "endpoint_name": "llama2-ep", "handling": "llama", "prompt_format": "dialog",
     "custom_attributes": "accept_eula=true"},
    {"id": "j2", "endpoint_name": "j2-ep", "handling": "jurassic"},
    {"id": "command", "endpoint_name": "command-ep", "handling": "cohere"},
    {"id": "claude", "endpoint_name": "claude-ep", "handling": "claude"},
    {"id": "vllm", "endpoint_name": "vllm-ep", "handling": "custom", "request_template": TEMPLATE,
     "response_path": "$.choices[0].message.content", "stream_path": "$.choices[0].delta.content"},
]


@pytest.fixture(scope="module")
def srv():
    with SageMakerServer(endpoints=ENDPOINTS, secret_access_key=SECRET, region="eu-west-1") as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(srv):
    srv.reset()


def _config(srv, models=MODELS, **conn):
    sm = {"type": "sagemaker", "region": "eu-west-1", "endpoint_url": srv.url, "access_key_id": "AKIDTEST",
          "secret_access_key": SECRET, "max_retries": 0, "timeout": 5, "models": models, **conn}
    return {"connections": {"sm": sm}}


@pytest.fixture
def mesh(srv):
    m = Mesh.from_config(_config(srv))
    yield m
    m.close()


def _llm(mesh, model="tgi"):
    return mesh.get_llm(f"sagemaker:sm:{model}")



# --------------------------------------------------------------------------------------------------
# built-in handling modes


def test_tgi_complete_signed_request_and_parameters(srv, mesh):
    srv.script(text="Paris is the capital.")
    q = _llm(mesh).new_completion().with_message("Be brief.", role="system").with_message("Capital of France?")
    q.settings.update(temperature=0, topP=0.9, topK=20, maxOutputTokens=3, stopSequences=["\n"], seed=7,
                      frequencyPenalty=0.5)
    resp = q.execute()

    assert (resp.text, resp.finish_reason, resp.usage.output_tokens) == ("Paris is the ", "length", 3)
    req = srv.last_request
    assert (req.method, req.path) == ("POST", "/endpoints/tgi-ep/invocations")
    assert req.headers["Content-Type"] == "application/json" and req.headers["Accept"] == "application/json"
    assert req.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "/eu-west-1/sagemaker/aws4_request" in req.headers["Authorization"]
    assert "X-Amz-Security-Token" not in req.headers
    assert req.json == {"inputs": "System: Be brief.\n\nUser: Capital of France?\n\nAssistant:", "parameters": {
        "max_new_tokens": 3, "top_p": 0.9, "top_k": 20, "stop": ["\n"], "seed": 7, "frequency_penalty": 0.5,
        "do_sample": False, "details": True}}  # temperature 0 is greedy decoding: TGI rejects 0


def test_tgi_stream_reassembles_lines_split_across_payload_parts(srv, mesh):
    srv.script(text="Snow is frozen water.")
    events = list(_llm(mesh).new_completion().with_message("What is snow?").execute_streamed())

    chunks, footer = events[:-1], events[-1]
    assert all(isinstance(c, StreamChunk) for c in chunks) and len(chunks) == 4
    assert "".join(c.text for c in chunks) == "Snow is frozen water."
    assert isinstance(footer, StreamFooter) and footer.finish_reason == "stop" and footer.usage.output_tokens == 4
    req = srv.last_request
    assert req.path == "/endpoints/tgi-ep/invocations-response-stream"
    assert req.headers["X-Amzn-SageMaker-Accept"] == "application/json"
    assert req.json == {"inputs": "What is snow?", "parameters": {"details": True}, "stream": True}


def test_tgi_json_output_is_a_grammar(srv, mesh):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    srv.script(text='{"city": "Paris"}')
    resp = _llm(mesh).new_completion().with_message("Where?").with_json_output(schema).execute()
    assert resp.json == {"city": "Paris"}
    assert srv.last_request.json["parameters"]["grammar"] == {"type": "json", "value": schema}


def test_huggingface_pipeline(srv, mesh):
    q = _llm(mesh, "hf").new_completion().with_message("Once upon a time")
    q.settings.update(temperature=0.7, maxOutputTokens=50)
    assert q.execute().text == "Once upon a time"  # return_full_text off: the echo, not prompt + echo
    assert srv.last_request.json == {"inputs": "Once upon a time", "parameters": {
        "max_new_tokens": 50, "temperature": 0.7, "return_full_text": False, "do_sample": True}}
    events = list(_llm(mesh, "hf").new_completion().with_message("no streaming here").execute_streamed())
    assert [e.text for e in events[:-1]] == ["no streaming here"]  # complete, then one chunk
    assert srv.last_request.path == "/endpoints/hf-ep/invocations"


def test_llama3_template_streams_the_tgi_way(srv, mesh):
    q = _llm(mesh, "llama3").new_completion().with_message("You are terse.", role="system").with_message("Hi")
    q.with_message("Hello!", role="assistant").with_message("Bye")
    events = list(q.execute_streamed())
    assert isinstance(events[-1], StreamFooter)
    assert srv.last_request.json["inputs"] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama2_prompt_format():
    turns = [("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")]
    assert wire.render_prompt(turns, "llama2") == (
        "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]")
    assert wire.render_prompt([("user", "Hi")], "chatml") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_llama2_dialog_form_with_eula(srv, mesh):
    q = _llm(mesh, "llama2").new_completion().with_message("Be kind.", role="system").with_message("Hello llama")
    q.settings.update(temperature=0.6, topP=0.9, maxOutputTokens=64)
    assert q.execute().text == "Hello llama"
    req = srv.last_request
    assert req.headers["X-Amzn-SageMaker-Custom-Attributes"] == "accept_eula=true"
    assert req.json == {"inputs": [[{"role": "system", "content": "Be kind."},
                                    {"role": "user", "content": "Hello llama"}]],
                        "parameters": {"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.9}}
    q.settings["topK"] = 5
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert ei.value.settings == ["topK"]


def test_llama2_dialog_without_eula_is_the_containers_400(srv):
    models = [{"id": "llama2", "endpoint_name": "llama2-ep", "handling": "llama", "prompt_format": "dialog"}]
    with Mesh.from_config(_config(srv, models=models)) as mesh:
        with pytest.raises(BadRequestError) as ei:
            _llm(mesh, "llama2").new_completion().with_message("hi").execute()
    assert ei.value.status == 400 and "accept_eula=true" in ei.value.provider_message
    assert ei.value.provider_message.startswith("ModelError: Need to pass custom_attributes")


def test_jurassic(srv, mesh):
    srv.script(text="Jurassic says hi.")
    q = _llm(mesh, "j2").new_completion().with_message("Greet me")
    q.settings.update(temperature=0.3, topP=0.8, maxOutputTokens=20, stopSequences=["##"])
    resp = q.execute()
    assert (resp.text, resp.finish_reason) == ("Jurassic says hi.", "stop")
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (2, 3)
    assert srv.last_request.json == {"prompt": "Greet me", "maxTokens": 20, "temperature": 0.3, "topP": 0.8,
                                     "stopSequences": ["##"]}
    q.settings["topK"] = 3
    with pytest.raises(SettingsError, match="topK"):
        q.execute()


def test_cohere_command_complete_and_json_lines_stream(srv, mesh):
    q = _llm(mesh, "command").new_completion().with_message("one two three")
    q.settings.update(temperature=0.5, topP=0.75, topK=10, maxOutputTokens=2, presencePenalty=0.1, seed=3)
    resp = q.execute()
    assert (resp.text, resp.finish_reason, resp.usage.input_tokens, resp.usage.output_tokens) == \
        ("one two ", "length", 3, 2)
    assert srv.last_request.json == {"prompt": "one two three", "max_tokens": 2, "temperature": 0.5, "p": 0.75,
                                     "k": 10, "seed": 3, "presence_penalty": 0.1}

    srv.script(text="Command streams too")
    events = list(_llm(mesh, "command").new_completion().with_message("x").execute_streamed())
    assert [e.text for e in events[:-1]] == ["Command ", "streams ", "too"]
    assert events[-1].finish_reason == "stop" and events[-1].usage.output_tokens == 3
    req = srv.last_request
    assert req.json == {"prompt": "x", "stream": True}
    assert req.headers["X-Amzn-SageMaker-Accept"] == "application/jsonlines"


def test_claude_v2_prompt(srv, mesh):
    srv.script(text=" Bonjour.")
    q = _llm(mesh, "claude").new_completion().with_message("Answer in French.", role="system")
    q.with_message("Hello").with_message("Hi!", role="assistant").with_message("Greet me")
    q.settings.update(topK=5, stopSequences=["\n\nHuman:"])
    assert q.execute().text == " Bonjour."
    assert srv.last_request.json == {
        "prompt": "Answer in French.\n\nHuman: Hello\n\nAssistant: Hi!\n\nHuman: Greet me\n\nAssistant:",
        "max_tokens_to_sample": wire.CLAUDE_DEFAULT_MAX_TOKENS, "top_k": 5, "stop_sequences": ["\n\nHuman:"]}


# --------------------------------------------------------------------------------------------------
# custom query template


def test_custom_template_is_rendered_with_json_escaping(srv, mesh):
    tricky = 'He said "hi"\n\\o/'
    q = _llm(mesh, "vllm").new_completion().with_message(tricky)
    q.settings["maxOutputTokens"] = 12
    resp = q.execute()
    sent = srv.last_request.json
    # temperature unset: its key is left out; numbers and booleans stay typed; text is escaped by json
    assert sent == {"model": "m", "messages": [{"role": "user", "content": tricky}], "max_tokens": 12,
                    "note": f"prompt was: {tricky}", "stream": False}
    assert json.loads(resp.text) == sent  # the custom container echoes the body, read back via response_path


def test_custom_template_streams_with_stream_path(srv, mesh):
    srv.script(text="streamed custom answer")
    events = list(_llm(mesh, "vllm").new_completion().with_message("hi").execute_streamed())
    assert "".join(e.text for e in events[:-1]) == "streamed custom answer"
    assert isinstance(events[-1], StreamFooter)
    assert srv.last_request.json["stream"] is True


def test_custom_template_refuses_settings_it_has_no_placeholder_for(srv, mesh):
    q = _llm(mesh, "vllm").new_completion().with_message("hi")
    q.settings.update(topP=0.5, seed=1, temperature=0.2)
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert sorted(ei.value.settings) == ["seed", "topP"] and srv.requests == []


def test_custom_response_path_that_matches_nothing(srv, mesh):
    srv.script(json_body={"unexpected": True})
    with pytest.raises(ProviderError, match=r"nothing at \$\.choices\[0\]\.message\.content"):
        _llm(mesh, "vllm").new_completion().with_message("hi").execute()


def test_json_path_subset():
    doc = {"choices": [{"message": {"content": "a"}}], "we ird": [1, {"x": None}], "list": ["p", "q"]}
    assert wire.JsonPath("$.choices[0].message.content").extract(doc) == "a"
    assert wire.JsonPath("$['we ird'][0]").extract(doc) == "1"
    assert wire.JsonPath('$["list"][-1]').extract(doc) == "q"
    assert wire.JsonPath("$[0].generated_text").extract([{"generated_text": "g"}]) == "g"
    assert wire.JsonPath("$.choices[0].message").extract(doc) == '{"content": "a"}'
    assert wire.JsonPath.missing(wire.JsonPath("$.choices[3]").find(doc))
    for bad in ("choices[0]", "$.choices[x]", "$..a"):
        with pytest.raises(ValueError):
            wire.JsonPath(bad)


def test_request_template_rules():
    t = wire.RequestTemplate('{"a": {{max_tokens}}, "b": ["{{stop_sequences}}", {{seed}}], "c": "x{{seed}}y"}')
    assert t.render({"max_tokens": 5, "stop_sequences": ["\n"], "seed": None}) == \
        {"a": 5, "b": [["\n"], None], "c": "xy"}
    with pytest.raises(ValueError, match="unknown placeholder"):
        wire.RequestTemplate('{"a": "{{nope}}"}')
    with pytest.raises(ValueError, match="not JSON"):
        wire.RequestTemplate('{"a": {{prompt}}')


@pytest.mark.parametrize("model, problem", [
    ({"id": "x", "endpoint_name": "e", "handling": "custom"}, "request_template"),
    ({"id": "x", "endpoint_name": "e", "handling": "custom", "request_template": "{", "response_path": "$.a"},
     "not JSON"),
    ({"id": "x", "endpoint_name": "e", "handling": "custom", "request_template": "{}", "response_path": "a"},
     "must start with '$'"),
    ({"id": "x", "endpoint_name": "e", "response_path": "$.a"}, "custom only"),
    ({"id": "x", "endpoint_name": "e", "prompt_format": "dialog"}, "handling: llama"),
    ({"id": "x", "endpoint_name": "e", "handling": "custom", "request_template": "{}", "response_path": "$.a",
      "streaming": True}, "stream_path"),
])
def test_config_problems(model, problem):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"sm": {"type": "sagemaker", "models": [model]}}})
    assert problem in str(ei.value) and "connections.sm" in str(ei.value)


def test_config_keys_come_in_pairs():
    with pytest.raises(ConfigError, match="secret_access_key"):
        load_config({"connections": {"sm": {"type": "sagemaker", "access_key_id": "A",
                                            "models": [{"id": "x", "endpoint_name": "e"}]}}})


# --------------------------------------------------------------------------------------------------
# capabilities


def test_tools_and_images_are_refused_before_any_call(srv, mesh):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings["tools"] = [tool]
    with pytest.raises(CapabilityError, match="tool calling"):
        q.execute()
    with pytest.raises(CapabilityError):
        q.execute_streamed()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    with pytest.raises(CapabilityError, match="images"):
        _llm(mesh, "llama3").new_completion().new_multipart_message().with_inline_image(png).add().execute()
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings["logProbs"] = True
    with pytest.raises(SettingsError, match="logProbs"):
        q.execute()
    assert srv.requests == []
    caps = {i.id: i.capabilities for i in mesh.list_llms()}
    assert caps["sagemaker:sm:tgi"].json_output and not caps["sagemaker:sm:j2"].streaming


# --------------------------------------------------------------------------------------------------
# errors


def test_unknown_endpoint_is_not_found(srv):
    with Mesh.from_config(_config(srv, models=[{"id": "gone", "endpoint_name": "no-such-ep"}])) as mesh:
        with pytest.raises(NotFoundError) as ei:
            _llm(mesh, "gone").new_completion().with_message("hi").execute()
    assert ei.value.status == 400
    assert ei.value.provider_message == "ValidationError: Endpoint no-such-ep of account 123456789012 not found."


def test_wrong_secret_is_an_authentication_error_without_the_secret(srv):
    with Mesh.from_config(_config(srv, secret_access_key="wrong-secret-value")) as mesh:
        with pytest.raises(AuthenticationError) as ei:
            _llm(mesh).new_completion().with_message("hi").execute()
        conn = mesh.connection("sm")
        shown = [str(ei.value), repr(ei.value), repr(conn.config), str(conn.config.model_dump())]
    assert ei.value.status == 403 and "InvalidSignatureException" in str(ei.value)
    assert not any("wrong-secret-value" in s or SECRET in s for s in shown)


def test_session_token_is_sent_and_checked(srv):
    with SageMakerServer(endpoints={"tgi-ep": "tgi"}, secret_access_key=SECRET, region="eu-west-1",
                         session_token="tok-123") as s:
        with Mesh.from_config(_config(s, session_token="tok-123", models=[MODELS[0]])) as mesh:
            assert _llm(mesh).new_completion().with_message("ok").execute().text == "ok"
        assert s.last_request.headers["X-Amz-Security-Token"] == "tok-123"
        with Mesh.from_config(_config(s, session_token="tok-999", models=[MODELS[0]])) as mesh:
            with pytest.raises(AuthenticationError, match="UnrecognizedClientException"):
                _llm(mesh).new_completion().with_message("ok").execute()


@pytest.mark.parametrize("script, cls, status", [
    ({"status": 429, "error_message": "Rate exceeded", "headers": {"Retry-After": "2"}}, RateLimitError, 429),
    ({"status": 503, "error_message": "try later"}, ServerError, 503),
    ({"status": 500, "error_message": "boom"}, ServerError, 500),
    ({"status": 400, "error_type": "ModelError", "error_message": "bad input"}, BadRequestError, 400),
    ({"status": 500, "error_type": "ModelError", "error_message": "CUDA OOM"}, ServerError, 500),
])
def test_error_classes(srv, mesh, script, cls, status):
    srv.script(**script)
    with pytest.raises(cls) as ei:
        _llm(mesh).new_completion().with_message("hi").execute()
    assert ei.value.status == status and script["error_message"] in ei.value.provider_message
    if status == 429:
        assert ei.value.retry_after == 2.0 and ei.value.provider_message == "ThrottlingException: Rate exceeded"
    srv.script(**script)
    with pytest.raises(cls):
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert len(srv.requests) == 2  # the SDK did not retry


def test_mesh_policy_retries_the_typed_error(srv):
    srv.script(status=503, error_message="warming up")
    srv.script(text="second time lucky")
    with Mesh.from_config(_config(srv, max_retries=1)) as mesh:
        assert _llm(mesh).new_completion().with_message("hi").execute().text == "second time lucky"
    assert len(srv.requests) == 2


async def test_timeout_and_refused_connection(srv):
    with Mesh.from_config(_config(srv, timeout=0.3)) as mesh:
        # sync only (the async path is a thread around it); the client creation is inside the window
        await assert_times_out(srv, _llm(mesh), 1.0, also_async=False, within=2.0)
    with Mesh.from_config(_config(srv, endpoint_url=f"http://127.0.0.1:{free_port()}")) as mesh:
        assert_refused(_llm(mesh), match=None)


def test_cut_stream_is_interrupted_with_partial_text(srv, mesh):
    srv.script(text="one two three four five", cut_after=2)
    seen = []
    with pytest.raises(StreamInterruptedError) as ei:
        for ev in _llm(mesh).new_completion().with_message("count").execute_streamed():
            seen.append(ev)
    assert ei.value.partial_text == "one two " and ei.value.retryable
    assert not any(isinstance(e, StreamFooter) for e in seen)


def test_model_stream_error_mid_stream_is_interrupted(srv, mesh):
    srv.script(text="one two three", cut_after=1, error_type="ModelStreamError", error_message="GPU fell over")
    with pytest.raises(StreamInterruptedError) as ei:
        list(_llm(mesh, "command").new_completion().with_message("count").execute_streamed())
    assert ei.value.partial_text == "one " and "ModelStreamError: GPU fell over" in str(ei.value)


# --------------------------------------------------------------------------------------------------
# async and LangChain


async def test_async_complete_and_stream(srv, mesh):
    srv.script(text="async answer")
    assert (await _llm(mesh).new_completion().with_message("hi").aexecute()).text == "async answer"
    srv.script(text="async stream")
    events = [e async for e in _llm(mesh).new_completion().with_message("hi").aexecute_streamed()]
    assert "".join(e.text for e in events[:-1]) == "async stream" and isinstance(events[-1], StreamFooter)


def test_langchain_chat_model_invoke_and_stream(srv, mesh):
    pytest.importorskip("langchain_core")
    from langchain_mesh.langchain import MeshChatModel

    chat = MeshChatModel(model="sagemaker:sm:llama3", mesh=mesh, temperature=0.1)
    srv.script(text="Hello from SageMaker.")
    assert chat.invoke("Say hello").content == "Hello from SageMaker."
    assert srv.last_request.json["parameters"]["temperature"] == 0.1
    srv.script(text="Streaming from SageMaker.")
    assert "".join(c.content for c in chat.stream("Stream please")) == "Streaming from SageMaker."


def test_sagemaker_server_fixture(sagemaker_server):
    cfg = {"connections": {"sm": {"type": "sagemaker", "region": "us-east-1", "endpoint_url": sagemaker_server.url,
                                  "access_key_id": "AKIDTEST", "secret_access_key": "test-secret",
                                  "models": [{"id": "c", "endpoint_name": "cohere-command", "handling": "cohere"}]}}}
    with Mesh.from_config(cfg) as mesh:
        sagemaker_server.script(text="from the fixture")
        assert _llm(mesh, "c").new_completion().with_message("hi").execute().text == "from the fixture"
    assert sagemaker_server.last_request.path == "/endpoints/cohere-command/invocations"
