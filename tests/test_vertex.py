"""The ``vertex`` connection (google-genai SDK) against the local Gemini server, on Vertex AI and on the
Gemini Developer API: each test checks what came back and the exact request the server received."""

from __future__ import annotations

import base64
import json

import pytest

from _transport_checks import assert_refused, assert_times_out

from langchain_mesh import Mesh
from langchain_mesh.config import load_config
from langchain_mesh.connections import vertex_wire as wire
from langchain_mesh.errors import (
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    ConfigError,
    CredentialError,
    NotFoundError,
    ProviderError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
)
from langchain_mesh.schema import StreamChunk, StreamFooter
from langchain_mesh.testing.openai import make_png
from langchain_mesh.testing.wire import free_port

CHAT = "vertex:gcp:gemini-2.5-flash"
GEN = "/v1beta1/projects/test-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
WEATHER_DECL = {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def sa_key(_mesh_vertex_server_session):
    return _mesh_vertex_server_session.service_account_key()


def _config(srv, sa_key, **conn):
    gcp = {"type": "vertex", "service_account_key": json.dumps(sa_key), "base_url": srv.url, "max_retries": 0,
           "timeout": 5, **conn}
    gem = {"type": "vertex", "backend": "gemini", "api_key": srv.api_key, "base_url": srv.url, "max_retries": 0,
           "timeout": 5}
    return {"connections": {"gcp": gcp, "gem": gem}}


@pytest.fixture
def mesh(vertex_server, sa_key):
    m = Mesh.from_config(_config(vertex_server, sa_key))
    yield m
    m.close()


def _q(mesh, text="hi", llm=CHAT):
    return mesh.get_llm(llm).new_completion().with_message(text)


def _api(srv):
    """The requests to the API (not to the token endpoint)."""
    return [r for r in srv.requests if r.path != "/token"]


# --------------------------------------------------------------------------------------------------
# completion


def test_complete_translates_every_setting(vertex_server, mesh):
    srv = vertex_server
    srv.script(text="Paris.", usage={"promptTokenCount": 9, "candidatesTokenCount": 2, "thoughtsTokenCount": 5,
                                     "cachedContentTokenCount": 4, "totalTokenCount": 16})
    q = mesh.get_llm(CHAT).new_completion().with_message("Be brief.", role="system") \
        .with_message("Capital of France?").with_message("Paris?", role="assistant").with_message("Sure?")
    q.settings.update(temperature=0.2, topP=0.9, topK=20, maxOutputTokens=50, stopSequences=["END"],
                      presencePenalty=0.5, frequencyPenalty=0.25, seed=7)
    r = q.execute()
    assert (r.text, r.finish_reason, r.model) == ("Paris.", "stop", "gemini-2.5-flash")
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (9, 7, 16)  # output includes the thoughts
    assert (u.cached_input_tokens, u.reasoning_tokens) == (4, 5)
    token_req, req = srv.requests  # google-auth fetched a token with the key first, then the call
    assert token_req.path == "/token" and "jwt-bearer" in token_req.body.decode()
    assert req.path == GEN and req.headers["Authorization"].startswith("Bearer ya29.mesh-")
    assert req.json == {
        "contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]},
                     {"role": "model", "parts": [{"text": "Paris?"}]},
                     {"role": "user", "parts": [{"text": "Sure?"}]}],
        "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 20, "maxOutputTokens": 50,
                             "stopSequences": ["END"], "presencePenalty": 0.5, "frequencyPenalty": 0.25, "seed": 7},
    }
    _q(mesh).execute()
    assert [r.path for r in srv.requests].count("/token") == 1, "the access token is reused"


def test_max_tokens_and_finish_reasons(vertex_server, mesh):
    q = _q(mesh, "one two three four")
    q.settings["maxOutputTokens"] = 2
    assert (lambda r: (r.text, r.finish_reason))(q.execute()) == ("one two ", "length")
    for reason, mapped in (("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
                           ("PROHIBITED_CONTENT", "content_filter"), ("MALFORMED_FUNCTION_CALL", "error")):
        vertex_server.script(text="", finish_reason=reason)
        assert _q(mesh).execute().finish_reason == mapped


def test_log_probs(vertex_server, mesh):
    q = _q(mesh, "hello world")
    q.settings.update(logProbs=True, topLogProbs=2)
    r = q.execute()
    assert [t.token.strip() for t in r.log_probs] == ["hello", "world"]
    assert all(t.logprob <= 0 and len(t.top) == 2 for t in r.log_probs)
    assert vertex_server.last_request.json["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}


def test_logit_bias_is_refused_before_any_request(vertex_server, mesh):
    q = _q(mesh)
    q.settings["logitBias"] = {42: 5}
    with pytest.raises(SettingsError, match="logitBias") as ei:
        q.execute()
    assert ei.value.settings == ["logitBias"] and _api(vertex_server) == []


def test_stream_text_then_one_footer(vertex_server, mesh):
    vertex_server.script(text="Snow is frozen water.", usage={"promptTokenCount": 3, "candidatesTokenCount": 5})
    events = list(_q(mesh, "What is snow?").execute_streamed())
    chunks, footer = events[:-1], events[-1]
    assert all(isinstance(c, StreamChunk) for c in chunks) and len(chunks) == 4
    assert "".join(c.text for c in chunks) == "Snow is frozen water."
    assert isinstance(footer, StreamFooter) and footer.finish_reason == "stop"
    assert (footer.usage.input_tokens, footer.usage.output_tokens) == (3, 5)
    req = vertex_server.last_request
    assert req.path == GEN.replace(":generateContent", ":streamGenerateContent") and req.query == {"alt": "sse"}


async def test_async_complete_stream_embed_and_images(vertex_server, sa_key):
    with Mesh.from_config(_config(vertex_server, sa_key)) as mesh:
        vertex_server.script(text="async answer")
        assert (await _q(mesh).aexecute()).text == "async answer"
        vertex_server.script(text="streamed async answer")
        events = [e async for e in _q(mesh).aexecute_streamed()]
        assert "".join(e.text for e in events[:-1]) == "streamed async answer" and events[-1].finish_reason == "stop"
        emb = await mesh.get_llm("vertex:gcp:text-embedding-005").new_embeddings().add_texts(["a", "b"]).aexecute()
        assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 768
        img = await mesh.get_llm("vertex:gcp:imagen-3.0-generate-002").new_images_generation() \
            .with_prompt("a cat").aexecute()
        assert img.first_image().startswith(b"\x89PNG")


# --------------------------------------------------------------------------------------------------
# tools


def test_tool_call_round_trip_with_generated_ids(vertex_server, mesh):
    srv = vertex_server
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})])
    q = _q(mesh, "Weather in Oslo and Rome?")
    q.settings.update(tools=[WEATHER], toolChoice="auto")
    r = q.execute()
    assert r.finish_reason == "tool_calls" and [c.function.name for c in r.tool_calls] == ["get_weather"] * 2
    assert [json.loads(c.function.arguments) for c in r.tool_calls] == [{"city": "Oslo"}, {"city": "Rome"}]
    ids = [c.id for c in r.tool_calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2  # Gemini sent none: generated
    body = srv.last_request.json
    assert body["tools"] == [{"functionDeclarations": [WEATHER_DECL]}]  # additionalProperties dropped
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}

    srv.script(text="Cold in Oslo, warm in Rome.")
    q2 = _q(mesh, "Weather in Oslo and Rome?").with_tool_calls(r.tool_calls) \
        .with_tool_output("cold", ids[0]).with_tool_output("warm", ids[1])
    q2.settings["tools"] = [WEATHER]
    assert q2.execute().text == "Cold in Oslo, warm in Rome."
    contents = srv.last_request.json["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"id": ids[0], "name": "get_weather", "args": {"city": "Oslo"}}},
        {"functionCall": {"id": ids[1], "name": "get_weather", "args": {"city": "Rome"}}}]}
    assert contents[2] == {"role": "user", "parts": [  # both results in one turn, named by their calls
        {"functionResponse": {"id": ids[0], "name": "get_weather", "response": {"output": "cold"}}},
        {"functionResponse": {"id": ids[1], "name": "get_weather", "response": {"output": "warm"}}}]}


def test_gemini_call_ids_and_thought_signatures_survive_the_next_turn(vertex_server, mesh):
    srv = vertex_server
    srv.call_ids = srv.thought_signatures = True
    srv.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    q = _q(mesh, "Weather?")
    q.settings["tools"] = [WEATHER]
    call = q.execute().tool_calls[0]
    assert call.id.startswith("call-")  # Gemini's own id
    q2 = _q(mesh, "Weather?").with_tool_calls([call]).with_tool_output("sunny", call.id)
    q2.settings["tools"] = [WEATHER]
    assert q2.execute().text == '{"output": "sunny"}'  # the server would refuse a call without its signature
    part = srv.last_request.json["contents"][1]["parts"][0]
    assert part["thoughtSignature"] and part["functionCall"]["id"] == call.id


def test_call_without_its_signature_is_refused_by_the_server(vertex_server, mesh):
    vertex_server.thought_signatures = True
    q = _q(mesh, "Weather?").with_tool_calls([{"id": "x1", "function": {"name": "get_weather",
                                                                         "arguments": '{"city": "Oslo"}'}}]) \
        .with_tool_output("sunny", "x1")
    q.settings["tools"] = [WEATHER]
    with pytest.raises(BadRequestError, match="thought_signature"):
        q.execute()


def test_streamed_tool_calls_arrive_whole_as_indexed_deltas(vertex_server, mesh):
    vertex_server.script(text="Checking.",
                         tool_calls=[("get_weather", {"city": "Oslo"}), ("get_weather", '{"city": "Rome"}')])
    q = _q(mesh, "Weather?")
    q.settings["tools"] = [WEATHER]
    events = list(q.execute_streamed())
    deltas = [d for e in events[:-1] for d in e.tool_call_deltas]
    assert [(d.index, d.name, json.loads(d.arguments)) for d in deltas] == [
        (0, "get_weather", {"city": "Oslo"}), (1, "get_weather", {"city": "Rome"})]
    footer = events[-1]
    assert footer.finish_reason == "tool_calls" and [c.id for c in footer.tool_calls] == [d.id for d in deltas]
    assert "".join(e.text or "" for e in events[:-1]) == "Checking."


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
    ("get_weather", {"mode": "ANY", "allowed_function_names": ["get_weather"]}),
])
def test_tool_choice_modes(vertex_server, mesh, choice, config):
    q = _q(mesh, "Weather?")
    q.settings.update(tools=[WEATHER], toolChoice=choice)
    r = q.execute()
    assert vertex_server.last_request.json["toolConfig"] == {"functionCallingConfig": config}
    if config["mode"] == "ANY":  # unscripted, the server calls the forced function
        assert r.tool_calls[0].function.name == "get_weather"


def test_json_output_schema_in_geminis_subset(vertex_server, mesh):
    schema = {"type": "object", "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}},
                                                   "additionalProperties": False}},
              "properties": {"city": {"$ref": "#/$defs/City"},
                             "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                             "kind": {"const": "answer"},
                             "tags": {"type": ["array", "null"], "items": {"type": "string"}}},
              "required": ["city"]}
    r = _q(mesh, "Where?").with_json_output(schema).execute()
    assert r.json["city"] == {"name": "Where?"}
    g = vertex_server.last_request.json["generationConfig"]
    assert g["responseMimeType"] == "application/json"
    assert g["responseSchema"] == {"type": "OBJECT", "required": ["city"], "properties": {
        "city": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}},
        "note": {"type": "STRING", "nullable": True},
        "kind": {"type": "STRING", "enum": ["answer"]},
        "tags": {"type": "ARRAY", "nullable": True, "items": {"type": "STRING"}}},
        "property_ordering": ["city", "note", "kind", "tags"]}  # added by the SDK


def test_recursive_schema_is_a_settings_error(vertex_server, mesh):
    node = {"type": "object", "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
            "properties": {"root": {"$ref": "#/$defs/N"}}}
    with pytest.raises(SettingsError, match="recursively"):
        _q(mesh).with_json_output(node).execute()
    assert _api(vertex_server) == []


def test_extra_config_passes_but_cannot_replace_built_keys(vertex_server, mesh):
    q = _q(mesh)
    q.settings["extra"] = {"labels": {"team": "mesh"}}
    q.execute()
    assert vertex_server.last_request.json["labels"] == {"team": "mesh"}
    q.settings["extra"] = {"temperature": 1}
    with pytest.raises(SettingsError, match="extra.temperature"):
        q.execute()


# --------------------------------------------------------------------------------------------------
# multimodal, embeddings, images


def test_inline_and_file_images(vertex_server, mesh):
    png = make_png(4, 4)
    q = mesh.get_llm(CHAT).new_completion()
    q.new_multipart_message().with_text("What is this?").with_inline_image(png) \
        .with_image_url("gs://bucket/cat.jpg").add()
    vertex_server.script(text="A square and a cat.")
    assert q.execute().text == "A square and a cat."
    text, inline, file = vertex_server.last_request.json["contents"][0]["parts"]
    assert text == {"text": "What is this?"}
    # the SDK camel-cases the part's key but sends nested keys as given (Google reads both spellings)
    assert inline["inlineData"]["mime_type"] == "image/png"
    assert base64.urlsafe_b64decode(inline["inlineData"]["data"]) == png  # the SDK writes URL-safe base64
    assert file == {"fileData": {"file_uri": "gs://bucket/cat.jpg", "mime_type": "image/jpeg"}}


def test_embeddings_vertex_predict_and_gemini_batch(vertex_server, mesh):
    e = mesh.get_llm("vertex:gcp:text-embedding-005").new_embeddings().add_texts(["red apple", "green pear"])
    e.settings.update(input_type="document", dimensions=16)
    r = e.execute()
    assert [len(v) for v in r.embeddings] == [16, 16] and r.usage.input_tokens == 4
    req = vertex_server.last_request
    assert req.path.endswith("/models/text-embedding-005:predict")
    assert req.json == {"instances": [{"content": "red apple", "task_type": "RETRIEVAL_DOCUMENT"},
                                      {"content": "green pear", "task_type": "RETRIEVAL_DOCUMENT"}],
                        "parameters": {"outputDimensionality": 16}}

    e = mesh.get_llm("vertex:gem:gemini-embedding-001").new_embeddings().add_texts(["q"])
    e.settings["input_type"] = "query"
    assert len(e.execute().embeddings[0]) == 3072
    req = vertex_server.last_request
    assert req.path == "/v1/models/gemini-embedding-001:batchEmbedContents"
    assert req.headers["x-goog-api-key"] == "test-api-key" and "Authorization" not in req.headers
    assert req.json == {"requests": [{"content": {"role": "user", "parts": [{"text": "q"}]},
                                      "taskType": "RETRIEVAL_QUERY",
                                      "model": "models/gemini-embedding-001"}]}


def test_embeddings_are_batched(vertex_server, sa_key):
    with Mesh.from_config(_config(vertex_server, sa_key, embedding_batch_size=2)) as mesh:
        r = mesh.get_llm("vertex:gcp:text-embedding-005").new_embeddings().add_texts(list("abcde")).execute()
    assert len(r.embeddings) == 5
    assert [len(q.json["instances"]) for q in _api(vertex_server)] == [2, 2, 1]


def test_imagen(vertex_server, mesh):
    q = mesh.get_llm("vertex:gcp:imagen-3.0-fast-generate-001").new_images_generation().with_prompt("a red square") \
        .with_negative_prompt("blue")
    q.width, q.height, q.seed, q.n = 1920, 1080, 42, 2
    r = q.execute()
    assert len(r.images) == 2 and all(i.data.startswith(b"\x89PNG") and i.mime_type == "image/png" for i in r.images)
    req = vertex_server.last_request
    assert req.path.endswith("/models/imagen-3.0-fast-generate-001:predict")
    assert req.json == {"instances": [{"prompt": "a red square"}], "parameters": {
        "negativePrompt": "blue", "sampleCount": 2, "aspectRatio": "16:9", "seed": 42,
        "outputOptions": {"mimeType": "image/png"}, "addWatermark": False}}


def test_imagen_refusals_before_any_request(vertex_server, mesh):
    llm = mesh.get_llm("vertex:gcp:imagen-3.0-generate-002")
    q = llm.new_images_generation().with_prompt("x")
    q.width, q.height = 1000, 300
    with pytest.raises(SettingsError, match="1000x300 is no aspect ratio it takes") as ei:
        q.execute()
    assert ei.value.settings == ["width", "height"]
    q = llm.new_images_generation().with_prompt("x")
    q.n = 5
    with pytest.raises(SettingsError, match="at most 4"):
        q.execute()
    with pytest.raises(CapabilityError, match="image-to-image"):
        llm.new_images_generation().with_prompt("x").with_original_image(make_png(4, 4)).execute()
    with pytest.raises(CapabilityError, match="Vertex AI only"):
        mesh.connection("gem").generate_images("imagen-3.0-generate-002", q.build_request())
    assert _api(vertex_server) == []


def test_blocked_prompt_and_filtered_images(vertex_server, mesh):
    vertex_server.script(json_body={"promptFeedback": {"blockReason": "SAFETY"},
                                    "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}})
    r = _q(mesh).execute()
    assert (r.text, r.finish_reason, r.usage.input_tokens) == ("", "content_filter", 4)
    vertex_server.script(json_body={"predictions": [{"raiFilteredReason": "39322892: the prompt was filtered"}]})
    with pytest.raises(ProviderError, match="39322892"):
        mesh.get_llm("vertex:gcp:imagen-3.0-generate-002").new_images_generation().with_prompt("x").execute()


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("status, cls", [(400, BadRequestError), (403, AuthenticationError), (404, NotFoundError),
                                         (429, RateLimitError), (500, ServerError), (503, ServerError)])
def test_error_statuses(vertex_server, mesh, status, cls):
    vertex_server.script(status=status, error_message="Quota exceeded for aiplatform", headers={"Retry-After": "3"})
    with pytest.raises(cls) as ei:
        _q(mesh).execute()
    e = ei.value
    assert (e.status, e.provider, e.provider_message) == (status, "vertex", "Quota exceeded for aiplatform")
    if cls is RateLimitError:
        assert e.retryable and e.retry_after == 3.0
    assert len(_api(vertex_server)) == 1, "the SDK does not retry"


def test_server_side_validation_and_unknown_models(vertex_server, mesh):
    q = _q(mesh)
    q.settings["stopSequences"] = list("abcdef")  # Gemini takes at most 5
    with pytest.raises(BadRequestError, match="at most 5"):
        q.execute()
    vertex_server.models = ["gemini-2.5-pro"]
    try:
        with pytest.raises(NotFoundError, match="gemini-2.5-flash` was not found"):
            _q(mesh).execute()
    finally:
        vertex_server.models = None


def test_wrong_credentials(vertex_server, sa_key, monkeypatch):
    # an OAuth token the server does not know: 401
    monkeypatch.setenv("VERTEX_TEST_TOKEN", "ya29.not-a-real-token-123")
    cfg = _config(vertex_server, sa_key)
    cfg["connections"]["gcp"] = {"type": "vertex", "project": "test-project", "base_url": vertex_server.url,
                                 "oauth_token": "{{env:VERTEX_TEST_TOKEN}}", "max_retries": 0}
    cfg["connections"]["gem"]["api_key"] = "wrong-key-456"
    with Mesh.from_config(cfg) as mesh:
        with pytest.raises(AuthenticationError) as ei:
            _q(mesh).execute()
        assert ei.value.status == 401 and "ya29.not-a-real-token-123" not in str(ei.value)
        assert vertex_server.last_request.headers["Authorization"] == "Bearer ya29.not-a-real-token-123"
        with pytest.raises(AuthenticationError, match="API key not valid") as ei:  # Google's 400 API_KEY_INVALID
            _q(mesh, llm="vertex:gem:gemini-2.5-flash").execute()
        assert "wrong-key-456" not in str(ei.value)
        assert "ya29" not in repr(mesh.connection("gcp").config)


def test_another_project_is_permission_denied(vertex_server, sa_key):
    with Mesh.from_config(_config(vertex_server, sa_key, project="other-project")) as mesh:
        with pytest.raises(AuthenticationError, match="Permission denied on resource project other-project"):
            _q(mesh).execute()


def test_key_the_token_endpoint_does_not_know(vertex_server, sa_key):
    from langchain_mesh.testing.vertex import VertexServer

    with VertexServer() as other:
        stranger = other.service_account_key()
    stranger["token_uri"] = vertex_server.token_uri
    with Mesh.from_config(_config(vertex_server, stranger)) as mesh:
        with pytest.raises(AuthenticationError, match="invalid_grant") as ei:
            _q(mesh).execute()
    assert "PRIVATE KEY" not in str(ei.value)


def test_bad_key_json_is_a_credential_error(vertex_server, sa_key, tmp_path):
    (tmp_path / "key.json").write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----xyz"}')
    with Mesh.from_config(_config(vertex_server, sa_key, service_account_key=f"{{{{file:{tmp_path}/key.json}}}}")) as m:
        with pytest.raises(CredentialError, match="service_account_key") as ei:
            _q(m).execute()
    assert "xyz" not in str(ei.value)


def test_application_default_credentials(vertex_server, sa_key, tmp_path, monkeypatch):
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(sa_key))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    cfg = {"connections": {"gcp": {"type": "vertex", "base_url": vertex_server.url, "location": "europe-west4",
                                   "max_retries": 0}}}
    with Mesh.from_config(cfg) as mesh:
        assert _q(mesh).execute().text == "hi"
    assert vertex_server.last_request.path.startswith("/v1beta1/projects/test-project/locations/europe-west4/")


async def test_timeout(vertex_server, sa_key):
    with Mesh.from_config(_config(vertex_server, sa_key, timeout=1)) as mesh:
        await assert_times_out(vertex_server, mesh.get_llm(CHAT), 2.5)


def test_refused_connection(sa_key, vertex_server):
    cfg = _config(vertex_server, sa_key)
    cfg["connections"]["gem"]["base_url"] = f"http://127.0.0.1:{free_port()}"
    with Mesh.from_config(cfg) as mesh:
        assert_refused(mesh.get_llm("vertex:gem:gemini-2.5-flash"), match="cannot reach vertex", stream=False)


async def test_cut_stream_is_interrupted_with_partial_text(vertex_server, mesh):
    vertex_server.script(text="one two three four", cut_after=2)
    with pytest.raises(StreamInterruptedError) as ei:
        list(_q(mesh).execute_streamed())
    assert ei.value.partial_text == "one two " and ei.value.retryable
    vertex_server.script(text="one two three four", cut_after=1)
    with pytest.raises(StreamInterruptedError) as ei:
        async for _ in _q(mesh).aexecute_streamed():
            pass
    assert ei.value.partial_text == "one "


def test_stream_without_finish_reason_is_interrupted():
    decoder = wire.StreamDecoder("m", {})
    with pytest.raises(StreamInterruptedError, match="without a finish reason"):
        decoder.footer()


# --------------------------------------------------------------------------------------------------
# config, models, LangChain


@pytest.mark.parametrize("conn, problem", [
    ({"backend": "gemini", "project": "p"}, "authenticates with 'api_key' only"),
    ({"api_key": "k"}, "'api_key' is for backend 'gemini'"),
    ({"service_account_key": "{}", "oauth_token": "t"}, "not both"),
    ({"backend": "palm"}, "backend"),
])
def test_config_problems(conn, problem):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"g": {"type": "vertex", **conn}}})
    assert problem in str(ei.value) and "connections.g" in str(ei.value)


def test_default_models(mesh):
    info = {i.id: i for i in mesh.list_llms()}
    assert info["vertex:gcp:gemini-2.5-pro"].purposes == ["GENERIC_COMPLETION"]
    assert info["vertex:gcp:text-embedding-005"].purposes == ["TEXT_EMBEDDING_EXTRACTION"]
    assert info["vertex:gcp:imagen-3.0-generate-002"].purposes == ["IMAGE_GENERATION"]
    assert "vertex:gem:imagen-3.0-generate-002" not in info and "vertex:gem:gemini-embedding-001" in info


def test_langchain_chat_model(vertex_server, mesh):
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from langchain_mesh.langchain import MeshChatModel

    @tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    chat = MeshChatModel(model=CHAT, mesh=mesh, temperature=0.1)
    vertex_server.script(text="Hello from Gemini.")
    assert chat.invoke("Say hello").content == "Hello from Gemini."
    assert vertex_server.last_request.json["generationConfig"] == {"temperature": 0.1}
    vertex_server.script(text="Streaming from Gemini.")
    assert "".join(c.content for c in chat.stream("Stream please")) == "Streaming from Gemini."
    vertex_server.script(tool_calls=[("get_weather", {"city": "Oslo"})])
    msg = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Oslo?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Oslo"}
    body = vertex_server.last_request.json
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowed_function_names": ["get_weather"]}}
