"""The ``bedrock`` connection through the real boto3 client against the local Bedrock Runtime server.

botocore validates, signs (SigV4, verified by the server) and decodes the binary event stream itself,
so these tests exercise the same client code a production call runs. Each test checks what came back
and the exact request the server received (path, auth header, JSON body).
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from _transport_checks import assert_refused, assert_times_out

from langchain_mesh import Mesh
from langchain_mesh.config import load_config
from langchain_mesh.errors import (
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    ConfigError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import StreamChunk, StreamFooter
from langchain_mesh.testing.bedrock import BedrockServer
from langchain_mesh.testing.wire import free_port

pytest.importorskip("boto3")

SECRET = "test-secret"
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CLAUDE_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_SPEC = {"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                             "inputSchema": {"json": WEATHER["function"]["parameters"]}}}
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123def456"


def _config(srv, **conn):
    aws = {"type": "bedrock", "endpoint_url": srv.url, "region": "us-east-1", "access_key_id": "AKIDTESTKEY",
           "secret_access_key": SECRET, "max_retries": 0, "timeout": 5, **conn}
    return {"connections": {"aws": aws}}


@pytest.fixture(scope="module")
def _server():
    with BedrockServer() as s:
        yield s


@pytest.fixture
def srv(_server):
    _server.reset()
    return _server


@pytest.fixture(scope="module")
def mesh(_server):
    # one mesh (one boto3 client: building one loads botocore's service model) for the module's tests
    m = Mesh.from_config(_config(_server))
    yield m
    m.close()


def _llm(mesh, model=CLAUDE, conn="aws"):
    return mesh.get_llm(f"bedrock:{conn}:{model}")



# --------------------------------------------------------------------------------------------------
# completion


def test_converse_request_and_answer(srv, mesh):
    srv.script(text="Paris.", usage={"inputTokens": 12, "outputTokens": 2, "totalTokens": 14,
                                     "cacheReadInputTokens": 8, "cacheWriteInputTokens": 3})
    q = _llm(mesh).new_completion().with_message("Be brief.", role="system").with_message("Capital of France?")
    q.settings.update(temperature=0.2, topP=0.9, maxOutputTokens=50, stopSequences=["\n\n"], topK=5, logProbs=False)
    resp = q.execute()

    assert (resp.text, resp.finish_reason, resp.model) == ("Paris.", "stop", f"{CLAUDE}")
    u = resp.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens, u.cached_input_tokens,
            u.cache_creation_input_tokens) == (12, 2, 14, 8, 3)
    req = srv.last_request
    assert (req.method, req.path) == ("POST", CLAUDE_PATH + "/converse")
    assert re.match(r"AWS4-HMAC-SHA256 Credential=AKIDTESTKEY/\d{8}/us-east-1/bedrock/aws4_request, "
                    r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$", req.headers["Authorization"])
    assert "langchain-mesh" in req.headers["User-Agent"]
    assert req.json == {
        "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["\n\n"]},
        "additionalModelRequestFields": {"top_k": 5},
    }


def test_unscripted_echo_and_max_tokens_is_length(srv, mesh):
    q = _llm(mesh).new_completion().with_message("one two three four five")
    q.settings["maxOutputTokens"] = 2
    resp = q.execute()
    assert (resp.text, resp.finish_reason) == ("one two ", "length")


def test_multi_turn_merges_consecutive_roles(srv, mesh):
    (_llm(mesh).new_completion().with_message("Hi").with_message("Hello!", role="assistant")
     .with_message("part one").with_message("part two").execute())
    assert srv.last_request.json["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello!"}]},
        {"role": "user", "content": [{"text": "part one"}, {"text": "part two"}]},
    ]


def test_converse_stream_chunks_then_one_footer(srv, mesh):
    srv.script(text="Snow is frozen water.", usage={"inputTokens": 4, "outputTokens": 5, "totalTokens": 9})
    events = list(_llm(mesh).new_completion().with_message("What is snow?").execute_streamed())

    chunks, footer = events[:-1], events[-1]
    assert all(isinstance(c, StreamChunk) for c in chunks) and len(chunks) == 4
    assert "".join(c.text for c in chunks) == "Snow is frozen water."
    assert isinstance(footer, StreamFooter) and footer.finish_reason == "stop" and footer.tool_calls == []
    assert (footer.usage.input_tokens, footer.usage.output_tokens) == (4, 5)
    assert srv.last_request.path == CLAUDE_PATH + "/converse-stream"


async def test_async_complete_stream_and_embed(srv, mesh):
    llm = _llm(mesh)
    srv.script(text="async answer")
    assert (await llm.new_completion().with_message("hi").aexecute()).text == "async answer"

    srv.script(text="streamed async answer")
    events = [ev async for ev in llm.new_completion().with_message("hi").aexecute_streamed()]
    assert "".join(e.text for e in events[:-1]) == "streamed async answer"
    assert isinstance(events[-1], StreamFooter) and events[-1].finish_reason == "stop"

    emb = await _llm(mesh, "amazon.titan-embed-text-v2:0").new_embeddings().add_text("a").aexecute()
    assert len(emb.embeddings[0]) == 1024 and srv.last_request.path.endswith("/invoke")


def test_system_prompt_leads_the_first_turn_where_converse_has_no_system(srv, mesh):
    (_llm(mesh, "amazon.titan-text-express-v1").new_completion().with_message("Answer in French.", role="system")
     .with_message("Hello").execute())
    body = srv.last_request.json
    assert "system" not in body
    assert body["messages"] == [{"role": "user", "content": [{"text": "Answer in French."}, {"text": "Hello"}]}]


# --------------------------------------------------------------------------------------------------
# tools


def test_tool_call_round_trip(srv, mesh):
    llm = _llm(mesh)
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    q = llm.new_completion().with_message("Weather in Oslo?")
    q.settings.update(tools=[WEATHER], toolChoice="get_weather")
    resp = q.execute()

    assert resp.finish_reason == "tool_calls" and resp.text == ""
    call = resp.tool_calls[0]
    assert call.id.startswith("tooluse_") and call.function.parsed_arguments() == {"city": "Oslo"}
    assert srv.last_request.json["toolConfig"] == {"tools": [WEATHER_SPEC], "toolChoice": {"tool": {"name": "get_weather"}}}

    srv.script(text="It is sunny in Oslo.")
    q2 = (llm.new_completion().with_message("Weather in Oslo?").with_tool_calls([call])
          .with_tool_output({"sky": "sunny"}, call.id))
    q2.settings["tools"] = [WEATHER]
    assert q2.execute().text == "It is sunny in Oslo."
    assert srv.last_request.json["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": call.id, "name": "get_weather",
                                                       "input": {"city": "Oslo"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": call.id,
                                                     "content": [{"text": '{"sky": "sunny"}'}]}}]},
    ]
    assert srv.last_request.json["toolConfig"] == {"tools": [WEATHER_SPEC]}


def test_streamed_tool_calls_arrive_as_indexed_fragments(srv, mesh):
    srv.script(text="Checking.", tool_calls=[("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})])
    q = _llm(mesh).new_completion().with_message("Weather in Oslo and Bergen?")
    q.settings.update(tools=[WEATHER], toolChoice="required")
    events = list(q.execute_streamed())

    deltas = [d for e in events[:-1] for d in e.tool_call_deltas]
    opening = [d for d in deltas if d.id]
    assert [(d.index, d.name) for d in opening] == [(0, "get_weather"), (1, "get_weather")]
    assert len([d for d in deltas if d.index == 0 and d.arguments]) > 1  # the input comes in pieces
    assert json.loads("".join(d.arguments for d in deltas if d.index == 1)) == {"city": "Bergen"}
    footer = events[-1]
    assert footer.finish_reason == "tool_calls"
    assert [c.function.parsed_arguments() for c in footer.tool_calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert [c.id for c in footer.tool_calls] == [d.id for d in opening]
    assert "".join(e.text or "" for e in events[:-1]) == "Checking."
    assert srv.last_request.json["toolConfig"]["toolChoice"] == {"any": {}}


def test_tool_choice_auto_and_none(srv, mesh):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings.update(tools=[WEATHER], toolChoice="auto")
    q.execute()
    assert srv.last_request.json["toolConfig"]["toolChoice"] == {"auto": {}}
    q.settings["toolChoice"] = "none"
    q.execute()
    assert "toolConfig" not in srv.last_request.json  # Converse has no "none": the tools are left out

    call = {"id": "tooluse_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    q2 = _llm(mesh).new_completion().with_message("hi").with_tool_calls([call]).with_tool_output("x", "tooluse_1")
    q2.settings.update(tools=[WEATHER], toolChoice="none")
    with pytest.raises(SettingsError) as ei:
        q2.execute()
    assert ei.value.settings == ["toolChoice"]


def test_models_without_streamed_tool_use_answer_through_converse(srv, mesh):
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    q = _llm(mesh, "mistral.mistral-large-2402-v1:0").new_completion().with_message("Weather?")
    q.settings["tools"] = [WEATHER]
    events = list(q.execute_streamed())
    assert srv.last_request.path.endswith("/converse")
    assert events[0].tool_call_deltas[0].name == "get_weather"
    assert events[-1].tool_calls[0].function.parsed_arguments() == {"city": "Oslo"}

    q.settings["toolChoice"] = "required"  # only Claude and Nova take any/tool
    with pytest.raises(CapabilityError, match="toolChoice"):
        q.execute()


# --------------------------------------------------------------------------------------------------
# images, settings and capabilities


def test_images_become_image_blocks(srv, mesh):
    srv.script(text="A tiny picture.")
    (_llm(mesh).new_completion().new_multipart_message().with_text("Describe:").with_inline_image(PNG)
     .with_image_url("data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff").decode())
     .with_image_url("s3://bucket/cat.webp").add().execute())
    assert srv.last_request.json["messages"][0]["content"] == [
        {"text": "Describe:"},
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}},
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}},
        {"image": {"format": "webp", "source": {"s3Location": {"uri": "s3://bucket/cat.webp"}}}},
    ]


def test_capabilities_refused_before_any_request(srv, mesh):
    remote = _llm(mesh).new_completion().new_multipart_message().with_image_url("https://x.test/a.png").add()
    with pytest.raises(CapabilityError, match="bytes or s3"):
        remote.execute()
    titan = _llm(mesh, "amazon.titan-text-express-v1").new_completion().new_multipart_message() \
        .with_inline_image(PNG).add()
    with pytest.raises(CapabilityError, match="image input"):
        titan.execute()
    llama = _llm(mesh, "meta.llama3-70b-instruct-v1:0").new_completion().with_message("hi")
    llama.settings["tools"] = [WEATHER]
    with pytest.raises(CapabilityError, match="tool calling"):
        llama.execute_streamed()
    with pytest.raises(CapabilityError, match="JSON output"):
        _llm(mesh).new_completion().with_message("hi").with_json_output().execute()
    assert srv.requests == []


def test_unsupported_settings_are_named_or_dropped(srv):
    with Mesh.from_config(_config(srv)) as mesh:
        q = _llm(mesh).new_completion().with_message("hi")
        q.settings.update(seed=7, presencePenalty=0.5, logProbs=True, topLogProbs=2)
        with pytest.raises(SettingsError) as ei:
            q.execute()
        assert sorted(ei.value.settings) == ["logProbs", "presencePenalty", "seed", "topLogProbs"]
        q2 = _llm(mesh, "meta.llama3-1-70b-instruct-v1:0").new_completion().with_message("hi")
        q2.settings["topK"] = 3
        with pytest.raises(SettingsError, match="topK"):
            q2.execute()
    assert srv.requests == []
    with Mesh.from_config(_config(srv, drop_unsupported_settings=True)) as mesh:
        q = _llm(mesh).new_completion().with_message("hi")
        q.settings.update(seed=7, temperature=0.5)
        q.execute()
    assert srv.last_request.json["inferenceConfig"] == {"temperature": 0.5}
    assert "additionalModelRequestFields" not in srv.last_request.json


@pytest.mark.parametrize("model, fields", [
    ("cohere.command-r-v1:0", {"k": 4, "presence_penalty": 0.5, "frequency_penalty": 0.1, "seed": 7}),
    ("amazon.nova-pro-v1:0", {"inferenceConfig": {"topK": 4}}),
])
def test_model_specific_fields(srv, mesh, model, fields):
    q = _llm(mesh, model).new_completion().with_message("hi")
    q.settings.update(topK=4, **({"presencePenalty": 0.5, "frequencyPenalty": 0.1, "seed": 7}
                                 if model.startswith("cohere") else {}))
    q.execute()
    assert srv.last_request.json["additionalModelRequestFields"] == fields


def test_extra_goes_to_converse_keys_or_model_fields(srv, mesh):
    q = _llm(mesh).new_completion().with_message("hi")
    q.settings["extra"] = {"guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"},
                           "anthropic_beta": ["x"]}
    q.execute()
    body = srv.last_request.json
    assert body["guardrailConfig"] == {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}
    assert body["additionalModelRequestFields"] == {"anthropic_beta": ["x"]}


def test_structured_output_on_models_that_have_it(srv, mesh):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    srv.script(text='{"city": "Paris"}')
    resp = (_llm(mesh, "anthropic.claude-sonnet-4-5-20250929-v1:0").new_completion().with_message("Where?")
            .with_json_output(schema).execute())
    assert resp.json == {"city": "Paris"}
    fmt = srv.last_request.json["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema" and json.loads(fmt["structure"]["jsonSchema"]["schema"]) == schema


# --------------------------------------------------------------------------------------------------
# model ids: inference profiles and application-inference-profile ARNs


def test_inference_profile_prefixes_models_but_not_arns(srv, monkeypatch):
    monkeypatch.setitem(srv.application_profiles, PROFILE_ARN, "anthropic.claude-3-haiku-20240307-v1:0")
    cfg = _config(srv, inference_profile="us", models=[
        {"id": CLAUDE}, {"id": "amazon.titan-embed-text-v2:0", "use_inference_profile": False},
        {"id": PROFILE_ARN, "model": "anthropic.claude-3-haiku-20240307-v1:0"}])
    with Mesh.from_config(cfg) as mesh:
        _llm(mesh).new_completion().with_message("hi").execute()
        assert srv.last_request.path == "/model/us." + CLAUDE_PATH[len("/model/"):] + "/converse"
        _llm(mesh, "amazon.titan-embed-text-v2:0").new_embeddings().add_text("x").execute()
        assert srv.last_request.path == "/model/amazon.titan-embed-text-v2%3A0/invoke"

        arn = _llm(mesh, PROFILE_ARN)
        arn.new_completion().new_multipart_message().with_text("see").with_inline_image(PNG).add().execute()
        assert srv.last_request.path == "/model/" + PROFILE_ARN.replace(":", "%3A").replace("/", "%2F") + "/converse"
        info = {i.id: i for i in mesh.list_llms()}[f"bedrock:aws:{PROFILE_ARN}"]
        assert info.capabilities.image_input and info.capabilities.tools
        assert mesh.connection("aws").underlying_model(PROFILE_ARN) == "anthropic.claude-3-haiku-20240307-v1:0"


def test_profile_of_another_geography_is_refused_by_bedrock(srv):
    with Mesh.from_config(_config(srv, inference_profile="eu")) as mesh:
        with pytest.raises(BadRequestError) as ei:
            _llm(mesh).new_completion().with_message("hi").execute()
    assert ei.value.status == 400 and ei.value.provider_message == "The provided model identifier is invalid."
    assert "ValidationException" in str(ei.value)
    assert srv.last_request.path.startswith("/model/eu.anthropic")


# --------------------------------------------------------------------------------------------------
# embeddings


def test_titan_embeddings_one_call_per_text(srv, mesh):
    llm = _llm(mesh, "amazon.titan-embed-text-v2:0")
    q = llm.new_embeddings().add_texts(["snow falls", "snow falls", "rain"])
    q.settings["dimensions"] = 256
    resp = q.execute()
    assert len(resp.embeddings) == 3 and len(resp.embeddings[0]) == 256
    assert resp.embeddings[0] == resp.embeddings[1] != resp.embeddings[2]
    assert resp.usage.input_tokens == 5
    assert [r.json for r in srv.requests] == [{"inputText": t, "dimensions": 256, "normalize": True}
                                             for t in ("snow falls", "snow falls", "rain")]
    assert srv.last_request.headers["Content-Type"] == "application/json"
    assert srv.last_request.headers["Accept"] == "application/json"

    q.settings["dimensions"] = 300
    with pytest.raises(SettingsError, match="256"):
        q.execute()


def test_cohere_embeddings_batched_with_input_type(srv, mesh):
    texts = [f"text {i}" for i in range(200)]
    q = _llm(mesh, "cohere.embed-english-v3").new_embeddings().add_texts(texts)
    q.settings["input_type"] = "query"
    resp = q.execute()
    assert len(resp.embeddings) == 200 and len(resp.embeddings[0]) == 1024
    assert [len(r.json["texts"]) for r in srv.requests] == [96, 96, 8]
    assert {r.json["input_type"] for r in srv.requests} == {"search_query"}
    assert resp.usage.input_tokens == 400  # summed from X-Amzn-Bedrock-Input-Token-Count

    _llm(mesh, "cohere.embed-english-v3").new_embeddings().add_text("doc").execute()
    assert srv.last_request.json == {"texts": ["doc"], "input_type": "search_document"}


def test_embeddings_from_a_chat_model_are_refused(srv, mesh):
    with pytest.raises(CapabilityError):
        _llm(mesh).new_embeddings().add_text("x").execute()
    assert srv.requests == []


# --------------------------------------------------------------------------------------------------
# images


def _png_ok(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n")


def test_sd3_text_to_image_and_image_to_image(srv, mesh):
    llm = _llm(mesh, "stability.sd3-large-v1:0")
    q = llm.new_images_generation().with_prompt("a red fox").with_negative_prompt("blurry")
    q.aspect_ratio, q.seed = "16:9", 42
    resp = q.execute()
    assert _png_ok(resp.first_image())
    assert srv.last_request.json == {"prompt": "a red fox", "output_format": "png", "negative_prompt": "blurry",
                                     "aspect_ratio": "16:9", "mode": "text-to-image", "seed": 42}

    llm.new_images_generation().with_prompt("as a painting").with_original_image(PNG).execute()
    assert srv.last_request.json == {"prompt": "as a painting", "output_format": "png", "mode": "image-to-image",
                                     "image": base64.b64encode(PNG).decode(), "strength": 0.5}


def test_stable_image_core_ultra_and_sdxl(srv, mesh):
    q = _llm(mesh, "stability.stable-image-ultra-v1:0").new_images_generation().with_prompt("a fox")
    q.width, q.height, q.n = 1024, 576, 2
    resp = q.execute()
    assert len(resp.images) == 2 and len(srv.requests) == 2
    assert srv.last_request.json == {"prompt": "a fox", "output_format": "png", "aspect_ratio": "16:9"}

    with pytest.raises(CapabilityError, match="text only"):
        _llm(mesh, "stability.stable-image-core-v1:0").new_images_generation().with_prompt("x") \
            .with_original_image(PNG).execute()

    _llm(mesh, "stability.stable-diffusion-xl-v1").new_images_generation().with_prompt("a fox") \
        .with_negative_prompt("rain").execute()
    assert srv.last_request.json == {"text_prompts": [{"text": "a fox", "weight": 1.0},
                                                      {"text": "rain", "weight": -1.0}], "samples": 1}


def test_titan_image_generator(srv, mesh):
    llm = _llm(mesh, "amazon.titan-image-generator-v2:0")
    q = llm.new_images_generation().with_prompt("a lighthouse")
    q.width, q.height, q.n, q.seed = 512, 512, 3, 9
    resp = q.execute()
    assert len(resp.images) == 3 and all(_png_ok(i.data) for i in resp.images)
    assert srv.last_request.json == {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a lighthouse"},
                                     "imageGenerationConfig": {"numberOfImages": 3, "width": 512, "height": 512,
                                                               "seed": 9}}
    llm.new_images_generation().with_prompt("at night").with_original_image(PNG).execute()
    params = srv.last_request.json["imageVariationParams"]
    assert srv.last_request.json["taskType"] == "IMAGE_VARIATION" and params["similarityStrength"] == 0.5

    q.aspect_ratio = "16:9"  # the builder's last shape setting wins: it snaps to Titan's 1152x640
    q.execute()
    assert srv.last_request.json["imageGenerationConfig"]["width"] == 1152
    both = q.build_request().model_copy(update={"width": 512, "height": 512})
    with pytest.raises(SettingsError, match="contradict") as ei:
        mesh.connection("aws").generate_images("amazon.titan-image-generator-v2:0", both)
    assert ei.value.settings == ["aspect_ratio", "width", "height"]


def test_filtered_image_is_an_error(srv, mesh):
    srv.script(json_body={"seeds": [1], "finish_reasons": ["Filter reason: prompt"], "images": []})
    with pytest.raises(BadRequestError, match="Filter reason: prompt"):
        _llm(mesh, "stability.sd3-large-v1:0").new_images_generation().with_prompt("x").execute()


# --------------------------------------------------------------------------------------------------
# errors


def test_wrong_secret_is_an_authentication_error_that_does_not_leak_it(srv):
    with Mesh.from_config(_config(srv, secret_access_key="wrong-secret-value")) as mesh:
        llm = _llm(mesh)
        with pytest.raises(AuthenticationError) as ei:
            llm.new_completion().with_message("hi").execute()
        with pytest.raises(AuthenticationError):
            list(llm.new_completion().with_message("hi").execute_streamed())
        conn = mesh.connection("aws")
        shown = [str(ei.value), repr(ei.value), repr(conn), repr(conn.config), str(conn.config.model_dump())]
    assert ei.value.status == 403 and "InvalidSignatureException" in str(ei.value)
    assert not any("wrong-secret-value" in s for s in shown)


def test_unknown_access_key(srv):
    with Mesh.from_config(_config(srv, access_key_id="AKIDOTHER")) as mesh:
        with pytest.raises(AuthenticationError, match="UnrecognizedClientException"):
            _llm(mesh).new_completion().with_message("hi").execute()


@pytest.mark.parametrize("status, code, cls, retryable", [
    (400, "ValidationException", BadRequestError, False),
    (403, "AccessDeniedException", AuthenticationError, False),
    (404, "ResourceNotFoundException", NotFoundError, False),
    (408, "ModelTimeoutException", ProviderTimeoutError, True),
    (424, "ModelErrorException", ProviderError, False),
    (429, "ModelNotReadyException", RateLimitError, True),
    (500, "InternalServerException", ServerError, True),
    (503, "ServiceUnavailableException", ServerError, True),
])
def test_error_codes_map_to_mesh_errors(srv, mesh, status, code, cls, retryable):
    srv.script(status=status, error_type=code, error_message=f"scripted {code}")
    with pytest.raises(cls) as ei:
        _llm(mesh).new_completion().with_message("hi").execute()
    e = ei.value
    assert type(e) is cls and (e.status, e.retryable, e.provider) == (status, retryable, "bedrock")
    assert e.provider_message == f"scripted {code}" and code in str(e)


def test_429_carries_retry_after_and_the_connection_does_not_retry(srv, mesh):
    srv.script(status=429, error_message="Too many requests", headers={"Retry-After": "2"})
    with pytest.raises(RateLimitError) as ei:
        _llm(mesh).new_completion().with_message("hi").execute()
    assert (ei.value.retry_after, ei.value.retryable) == (2.0, True) and "ThrottlingException" in str(ei.value)
    assert len(srv.requests) == 1  # botocore's own retries are off

    srv.script(status=429, error_message="Too many requests", headers={"Retry-After": "1"})
    with pytest.raises(RateLimitError) as ei:
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert ei.value.retry_after == 1.0


def test_mesh_policy_retries_the_typed_error(srv):
    srv.script(status=429, error_message="Too many requests", headers={"Retry-After": "0"})
    srv.script(text="second time lucky")
    with Mesh.from_config(_config(srv, max_retries=1)) as mesh:
        assert _llm(mesh).new_completion().with_message("hi").execute().text == "second time lucky"
    assert len(srv.requests) == 2


async def test_timeout(srv):
    with Mesh.from_config(_config(srv, timeout=0.3)) as mesh:
        await assert_times_out(srv, _llm(mesh), 1.0, within=2.5)


def test_refused_connection(srv):
    with Mesh.from_config(_config(srv, endpoint_url=f"http://127.0.0.1:{free_port()}")) as mesh:
        assert_refused(_llm(mesh))


async def test_cut_stream_is_interrupted_with_partial_text(srv, mesh):
    srv.script(text="one two three four five", cut_after=3)  # messageStart and two words
    seen = []
    with pytest.raises(StreamInterruptedError) as ei:
        for ev in _llm(mesh).new_completion().with_message("count").execute_streamed():
            seen.append(ev)
    assert ei.value.partial_text == "one two " and ei.value.retryable
    assert not any(isinstance(e, StreamFooter) for e in seen)

    srv.script(text="one two three four five", cut_after=4)
    with pytest.raises(StreamInterruptedError) as ei:
        async for _ in _llm(mesh).new_completion().with_message("count").aexecute_streamed():
            pass
    assert ei.value.partial_text == "one two three "

    srv.script(text="never sent", cut_after=0)
    with pytest.raises(StreamInterruptedError):
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())


def test_exception_events_in_the_stream(srv, mesh):
    srv.script(text="one two", error_type="throttlingException", error_message="Too many tokens", cut_after=1)
    with pytest.raises(RateLimitError) as ei:  # before any content: the typed error, retryable as such
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
    assert (ei.value.status, ei.value.provider_message) == (429, "Too many tokens")

    srv.script(text="one two three", error_type="modelStreamErrorException", error_message="model broke",
               cut_after=3)
    with pytest.raises(StreamInterruptedError) as ei:  # after content: the answer is incomplete
        list(_llm(mesh).new_completion().with_message("hi").execute_streamed())
    e = ei.value
    assert (e.partial_text, e.status, e.provider_message) == ("one two ", 424, "model broke")
    assert "ModelStreamErrorException" in str(e)


# --------------------------------------------------------------------------------------------------
# credentials and configuration


def test_standard_chain_and_session_token(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MESH_TEST_AWS_TOKEN", "session-token-xyz")
    with BedrockServer(region="eu-west-1", access_key_id="AKIDCHAIN", secret_access_key="chain-secret") as s:
        cfg = {"connections": {"aws": {"type": "bedrock", "endpoint_url": s.url, "region": "eu-west-1",
                                       "max_retries": 0, "inference_profile": "eu"}}}
        with Mesh.from_config(cfg) as mesh:
            assert _llm(mesh).new_completion().with_message("hi").execute().text == "hi"
        assert "Credential=AKIDCHAIN/" in s.last_request.headers["Authorization"]
        assert s.last_request.path.startswith("/model/eu.anthropic")

    with BedrockServer(session_token="session-token-xyz") as s:
        cfg = _config(s, session_token="{{env:MESH_TEST_AWS_TOKEN}}")
        with Mesh.from_config(cfg) as mesh:
            _llm(mesh).new_completion().with_message("hi").execute()
            assert "session-token-xyz" not in repr(mesh.connection("aws").config)
        assert s.last_request.headers["X-Amz-Security-Token"] == "session-token-xyz"
        with Mesh.from_config(_config(s)) as mesh:  # the token is required by this server
            with pytest.raises(AuthenticationError, match="security token"):
                _llm(mesh).new_completion().with_message("hi").execute()


@pytest.mark.parametrize("conn, problem", [
    ({"access_key_id": "AKID"}, "give both 'access_key_id' and 'secret_access_key'"),
    ({"access_key_id": "AKID", "secret_access_key": "s", "profile_name": "p"}, "either 'profile_name' or access keys"),
    ({"session_token": "t"}, "'session_token' goes with"),
    ({"inference_profile": "mars"}, "inference_profile"),
])
def test_config_problems(conn, problem):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"aws": {"type": "bedrock", **conn}}})
    assert problem in str(ei.value) and "connections.aws" in str(ei.value)


def test_unknown_profile_is_a_config_error_at_first_use(srv, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    cfg = {"connections": {"aws": {"type": "bedrock", "endpoint_url": srv.url, "region": "us-east-1",
                                   "profile_name": "no-such-profile"}}}
    with Mesh.from_config(cfg) as mesh:
        with pytest.raises(ConfigError, match="connections.aws.profile_name"):
            _llm(mesh).new_completion().with_message("hi").execute()


def test_default_models_cover_the_seed_families():
    with Mesh.from_config({"connections": {"aws": {"type": "bedrock", "region": "us-east-1"}}}) as mesh:
        infos = {i.id: i for i in mesh.list_llms()}
    for model in ("anthropic.claude-instant-v1", CLAUDE, "ai21.j2-ultra-v1", "cohere.command-r-plus-v1:0",
                  "amazon.titan-text-express-v1", "mistral.mixtral-8x7b-instruct-v0:1",
                  "meta.llama3-70b-instruct-v1:0"):
        assert infos[f"bedrock:aws:{model}"].purposes[0] == "GENERIC_COMPLETION"
    for model in ("amazon.titan-embed-text-v2:0", "cohere.embed-multilingual-v3"):
        assert infos[f"bedrock:aws:{model}"].purposes[0] == "TEXT_EMBEDDING_EXTRACTION"
    for model in ("stability.stable-diffusion-xl-v1", "stability.sd3-large-v1:0", "stability.stable-image-core-v1:0",
                  "stability.stable-image-ultra-v1:0", "amazon.titan-image-generator-v1"):
        assert infos[f"bedrock:aws:{model}"].purposes[0] == "IMAGE_GENERATION"
    assert infos[f"bedrock:aws:{CLAUDE}"].capabilities.image_input


# --------------------------------------------------------------------------------------------------
# the LangChain face


def test_langchain_chat_model_invoke_stream_and_tools(srv, mesh):
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from langchain_mesh.langchain import MeshChatModel

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    chat = MeshChatModel(model=f"bedrock:aws:{CLAUDE}", mesh=mesh, temperature=0.1)
    srv.script(text="Hello from Bedrock.")
    assert chat.invoke("Say hello").content == "Hello from Bedrock."
    assert srv.last_request.json["inferenceConfig"] == {"temperature": 0.1}

    srv.script(text="Streaming from Bedrock.")
    assert "".join(c.content for c in chat.stream("Stream please")) == "Streaming from Bedrock."

    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    msg = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Oslo?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Oslo"}
    assert srv.last_request.json["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}


# --------------------------------------------------------------------------------------------------
# the server on its own, through a plain boto3 client


def test_server_validates_what_bedrock_validates(bedrock_server):
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=bedrock_server.url,
                          aws_access_key_id="AKIDTESTKEY", aws_secret_access_key=SECRET)
    bad = [
        ([{"role": "assistant", "content": [{"text": "hi"}]}], "start with a user message"),
        ([{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}], "alternate"),
        ([{"role": "user", "content": [{"text": " "}]}], "is blank"),
        ([{"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}}]}],
         "toolConfig field must be defined"),
    ]
    for messages, problem in bad:
        with pytest.raises(ClientError) as ei:
            client.converse(modelId=CLAUDE, messages=messages)
        err = ei.value.response
        assert err["Error"]["Code"] == "ValidationException" and problem in err["Error"]["Message"]
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError, match="extraneous key \\[texts\\]"):
        client.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"texts": ["x"]}))
    client.close()


def test_non_streaming_models_stream_one_chunk(srv, mesh):
    srv.script(text="Jurassic answer")
    events = list(_llm(mesh, "ai21.j2-ultra-v1").new_completion().with_message("hi").execute_streamed())
    assert [e.text for e in events[:-1]] == ["Jurassic answer"] and isinstance(events[-1], StreamFooter)
    assert srv.last_request.path.endswith("/converse")
