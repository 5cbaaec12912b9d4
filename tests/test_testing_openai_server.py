"""The local OpenAI-format server (langchain_mesh.testing.openai) and its pytest fixtures.

Raw httpx requests pin the wire shapes of each flavour (bodies, SSE framing, error bodies); one
check per flavour runs the real ``openai`` SDK against it. The servers come from the pytest plugin
(``langchain_mesh.testing.fixtures``, registered through the ``pytest11`` entry point).
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib

import httpx
import pytest

from langchain_mesh.testing.openai import OpenAIServer, count_tokens, embed_text, make_png, split_tokens
from langchain_mesh.testing.wire import free_port

AUTH = {"Authorization": "Bearer test-key"}
HELLO = [{"role": "user", "content": "Hello there, world!"}]

FIXTURES = {"openai": "openai_server", "azure": "azure_openai_server", "azure_serverless": "azure_serverless_server",
            "databricks": "databricks_server", "mistral": "mistral_server"}
CHAT_PATH = {"openai": "/v1/chat/completions",
             "azure": "/openai/deployments/gpt-4o-dep/chat/completions?api-version=2024-10-21",
             "azure_serverless": "/v1/chat/completions",
             "databricks": "/serving-endpoints/chat/completions",
             "mistral": "/v1/chat/completions"}
EMBED_PATH = {"openai": "/v1/embeddings",
              "azure": "/openai/deployments/text-embedding-3-small-dep/embeddings?api-version=2024-10-21",
              "azure_serverless": "/v1/embeddings",
              "databricks": "/serving-endpoints/embeddings",
              "mistral": "/v1/embeddings"}
CHAT_MODEL = {"openai": "gpt-4o", "azure": "gpt-4o-dep", "azure_serverless": "Meta-Llama-3.1-8B-Instruct",
              "databricks": "databricks-meta-llama-3-3-70b-instruct", "mistral": "mistral-small-latest"}
EMBED_MODEL = {"openai": "text-embedding-3-small", "azure": "text-embedding-3-small-dep",
               "azure_serverless": "Cohere-embed-v3-english", "databricks": "databricks-gte-large-en",
               "mistral": "mistral-embed"}
AUTH_FOR = {"azure": {"api-key": "test-key"}}


@pytest.fixture(params=list(FIXTURES))
def flavored(request):
    """Each flavour's server in turn."""
    return request.getfixturevalue(FIXTURES[request.param])


HTTP = httpx.Client(timeout=5)  # one pool for the file: a client per request costs more than the request


def post(srv, path, body, headers=AUTH, **kw):
    return HTTP.post(srv.url + path, json=body, headers=headers, **kw)


def chat(srv, headers=None, **body):
    flavor = srv.flavor
    payload = {"messages": HELLO, **body}
    if flavor in ("openai", "databricks", "mistral"):
        payload.setdefault("model", CHAT_MODEL[flavor])
    return post(srv, CHAT_PATH[flavor], payload, headers or AUTH_FOR.get(flavor, AUTH))


def sse_data(resp) -> list[str]:
    """The ``data`` payloads of an SSE body, asserting OpenAI's framing: ``data: {...}\\n\\n`` frames,
    ``data: [DONE]`` last."""
    assert resp.headers["content-type"].startswith("text/event-stream")
    frames = resp.text.split("\n\n")
    assert frames[-1] == "", "the body ends with a blank line"
    assert all(f.startswith("data: ") and "\n" not in f for f in frames[:-1])
    data = [f[len("data: "):] for f in frames[:-1]]
    assert data[-1] == "[DONE]"
    return data


def chunks(resp) -> list[dict]:
    return [json.loads(d) for d in sse_data(resp)[:-1]]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    # walk the chunks: CRCs valid, IDAT inflates to height rows of 1 + 3 * width bytes
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + payload)
        idat += payload if kind == b"IDAT" else b""
        pos += 12 + length
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


# ---- OpenAI: chat bodies ---------------------------------------------------------------------------------


def test_openai_chat_body_shape(openai_server):
    r = chat(openai_server)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint",
                         "service_tier"}
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == "gpt-4o"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there, world!",
                                                        "refusal": None, "annotations": []},
                                "logprobs": None, "finish_reason": "stop"}]
    n = count_tokens("Hello there, world!")
    assert body["usage"] == {"prompt_tokens": n, "completion_tokens": n, "total_tokens": 2 * n,
                             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                           "accepted_prediction_tokens": 0,
                                                           "rejected_prediction_tokens": 0}}
    assert "x-request-id" in r.headers


def test_tokenizer_is_words_and_punctuation():
    assert split_tokens("Hello there, world!") == ["Hello", " there", ",", " world", "!"]
    assert count_tokens("") == 0


def test_tool_calls_body(openai_server):
    openai_server.script(tool_calls=[("get_weather", {"city": "Paris"}), ("get_time", '{"tz": "CET"}')])
    body = chat(openai_server).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["type"] for c in calls] == ["function", "function"]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert calls[1]["function"] == {"name": "get_time", "arguments": '{"tz": "CET"}'}


def test_multimodal_echo_usage_override_and_finish_reason(openai_server):
    content = [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": "data:,"}},
               {"type": "text", "text": "this image"}]
    body = chat(openai_server, messages=[{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": content}]).json()
    assert body["choices"][0]["message"]["content"] == "Describe this image"
    assert body["usage"]["prompt_tokens"] == count_tokens("Be brief.") + count_tokens("Describe this image") + 85
    openai_server.script(text="hi", finish_reason="content_filter",
                         usage={"prompt_tokens": 7, "completion_tokens": 3, "cached_tokens": 5, "reasoning_tokens": 2})
    body = chat(openai_server).json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (7, 3, 10)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2


def test_max_tokens_stop_and_n(openai_server):
    openai_server.script(text="one two three four five")
    body = chat(openai_server, max_tokens=2).json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
    openai_server.script(text="one two three four five")
    body = chat(openai_server, max_completion_tokens=3).json()
    assert body["choices"][0]["message"]["content"] == "one two three"
    openai_server.script(text="alpha. beta END gamma")
    body = chat(openai_server, stop=["END", "zzz"]).json()
    assert body["choices"][0]["message"]["content"] == "alpha. beta "
    assert body["choices"][0]["finish_reason"] == "stop"
    body = chat(openai_server, n=3).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 3 * count_tokens("Hello there, world!")


def test_logprobs(openai_server):
    body = chat(openai_server, logprobs=True, top_logprobs=3).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == split_tokens("Hello there, world!")
    for t in content:
        assert t["logprob"] < 0 and t["bytes"] == list(t["token"].encode())
        assert len(t["top_logprobs"]) == 3 and t["top_logprobs"][0]["token"] == t["token"]
        assert set(t["top_logprobs"][1]) == {"token", "logprob", "bytes"}
    again = chat(openai_server, logprobs=True, top_logprobs=3).json()["choices"][0]["logprobs"]["content"]
    assert again == content  # deterministic
    streamed = chunks(chat(openai_server, logprobs=True, stream=True))
    tokens = [t["token"] for c in streamed if c["choices"] and c["choices"][0]["logprobs"]
              for t in c["choices"][0]["logprobs"]["content"]]
    assert tokens == split_tokens("Hello there, world!")
    assert all(t["top_logprobs"] == [] for c in streamed if c["choices"] and c["choices"][0]["logprobs"]
               for t in c["choices"][0]["logprobs"]["content"])


def test_unscripted_structured_output_and_forced_tool(openai_server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"},
                                               "tags": {"type": "array"}, "kind": {"enum": ["a", "b"]}}}
    body = chat(openai_server, response_format={"type": "json_schema",
                                                "json_schema": {"name": "answer", "schema": schema}}).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Hello there, world!", "n": 0,
                                                                   "tags": [], "kind": "a"}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    body = chat(openai_server, tools=tools, tool_choice="required").json()
    call = body["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == {"name": "lookup", "arguments": json.dumps({"q": "Hello there, world!"})}
    body = chat(openai_server, tools=tools).json()  # "auto": the unscripted server just answers
    assert body["choices"][0]["message"]["content"] == "Hello there, world!"


# ---- OpenAI: streams ------------------------------------------------------------------------------------


def test_stream_framing_and_text_chunks(openai_server):
    openai_server.script(text="The quick brown fox.")
    r = chat(openai_server, stream=True)
    cs = chunks(r)
    ids = {c["id"] for c in cs}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o" and "usage" not in c for c in cs)
    assert cs[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                 "logprobs": None, "finish_reason": None}]
    texts = [c["choices"][0]["delta"]["content"] for c in cs[1:-1]]
    assert texts == ["The", " quick", " brown", " fox."]
    assert cs[-1]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]


def test_stream_include_usage(openai_server):
    cs = chunks(chat(openai_server, stream=True, stream_options={"include_usage": True}))
    assert all("usage" in c and c["usage"] is None for c in cs[:-1])
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["total_tokens"] == 2 * count_tokens("Hello there, world!")
    assert cs[-2]["choices"][0]["finish_reason"] == "stop"


def test_stream_tool_call_fragments(openai_server):
    openai_server.script(text="Let me check.", tool_calls=[("get_weather", {"city": "Paris", "unit": "C"}),
                                                           ("get_time", {"tz": "Europe/Paris"})])
    cs = chunks(chat(openai_server, stream=True))
    deltas = [c["choices"][0]["delta"] for c in cs]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check."
    tool_deltas = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert all(len(tc) == 1 and set(d) == {"tool_calls"} for tc, d in zip(tool_deltas, deltas[-len(tool_deltas) - 1:]))
    calls = [tc[0] for tc in tool_deltas]
    for index, (name, args) in enumerate([("get_weather", {"city": "Paris", "unit": "C"}),
                                          ("get_time", {"tz": "Europe/Paris"})]):
        mine = [c for c in calls if c["index"] == index]
        head, fragments = mine[0], mine[1:]
        assert head["id"].startswith("call_") and head["type"] == "function"
        assert head["function"] == {"name": name, "arguments": ""}
        assert len(fragments) >= 2
        assert all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments)
        assert json.loads("".join(f["function"]["arguments"] for f in fragments)) == args
    assert [c["index"] for c in calls] == sorted(c["index"] for c in calls)  # call 0 complete before call 1
    assert cs[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


def test_cut_stream_leaves_an_incomplete_body(openai_server):
    openai_server.script(text="one two three four five six", cut_after=3)
    received = []
    with httpx.Client(timeout=5) as client:
        with client.stream("POST", openai_server.base_url + "/chat/completions", headers=AUTH,
                           json={"model": "gpt-4o", "messages": HELLO, "stream": True}) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for line in r.iter_lines():
                    received.append(line)
    data = [line for line in received if line.startswith("data: ")]
    assert len(data) == 3 and "data: [DONE]" not in data


def test_delay_and_chunk_delay(openai_server):
    openai_server.script(text="hi", delay=0.3)
    t0 = time.monotonic()
    assert chat(openai_server).json()["choices"][0]["message"]["content"] == "hi"
    assert time.monotonic() - t0 >= 0.3
    openai_server.script(text="a b c", chunk_delay=0.05)
    t0 = time.monotonic()
    events = sse_data(chat(openai_server, stream=True))
    assert time.monotonic() - t0 >= 0.05 * (len(events) - 1)


# ---- errors: auth, scripted, validation -----------------------------------------------------------------


AUTH_401 = {
    "openai": {"error": {"message": "Incorrect API key provided: ********. You can find your API key at "
                                    "https://platform.openai.com/account/api-keys.",
                         "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
    "azure": {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API "
                        "endpoint. Make sure to provide a valid key for an active subscription and use a correct "
                        "regional API endpoint for your resource."}},
    "azure_serverless": {"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, audience "
                         "is incorrect (https://cognitiveservices.azure.com), or have expired."},
}


def test_wrong_key_is_401_with_the_flavours_body(flavored):
    wrong = {"api-key": "nope"} if flavored.flavor == "azure" else {"Authorization": "Bearer nope"}
    r = chat(flavored, headers=wrong)
    assert r.status_code == 401
    body = r.json()
    assert "nope" not in r.text
    if flavored.flavor in AUTH_401:
        assert body == AUTH_401[flavored.flavor]
    elif flavored.flavor == "databricks":
        assert body["error_code"] == 401 and body["message"].startswith("Invalid access token.")
    else:
        assert set(body) == {"message", "request_id"} and body["message"] == "Unauthorized"
    missing = post(flavored, CHAT_PATH[flavored.flavor], {"model": "m", "messages": HELLO}, headers={})
    assert missing.status_code == 401


def test_missing_key_bodies(openai_server, databricks_server):
    body = post(openai_server, "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO}, headers={}).json()
    assert body["error"]["message"].startswith("You didn't provide an API key.")
    body = post(databricks_server, CHAT_PATH["databricks"], {"model": "x", "messages": HELLO}, headers={}).json()
    assert body["message"].startswith("Credential was not sent or was of an unsupported type for this API.")


def test_auth_failures_do_not_consume_scripts(openai_server):
    openai_server.script(text="kept")
    assert chat(openai_server, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert chat(openai_server).json()["choices"][0]["message"]["content"] == "kept"


SCRIPTED_429 = {
    "openai": {"error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
    "azure": {"error": {"code": "429", "message": "slow down"}},
    "azure_serverless": {"error": {"code": "Too Many Requests", "message": "slow down", "status": 429}},
    "databricks": {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"},
    "mistral": {"object": "error", "message": "slow down", "type": "rate_limited", "param": None, "code": "1300"},
}


def test_scripted_error_has_the_flavours_body_and_headers(flavored):
    flavored.script(status=429, error_message="slow down", headers={"retry-after": "1"})
    r = chat(flavored, stream=True)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json() == SCRIPTED_429[flavored.flavor]
    flavored.script(status=503, error_message="down", error_type="overloaded", error_code="E1")
    r = chat(flavored)
    assert r.status_code == 503 and "down" in r.text


def test_json_body_replaces_the_body(openai_server):
    openai_server.script(json_body={"anything": [1, 2]}, status=202)
    r = chat(openai_server)
    assert r.status_code == 202 and r.json() == {"anything": [1, 2]}


def _openai_error(message, param=None, code=None):
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


VALIDATION = [
    ({"messages": HELLO}, _openai_error("you must provide a model parameter")),
    ({"model": "gpt-4o", "messages": []},
     _openai_error("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
                   "array instead.", "messages", "empty_array")),
    ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]},
     _openai_error("Invalid value: 'robot'. Supported values are: 'system', 'assistant', 'user', 'function', "
                   "'tool', and 'developer'.", "messages[0].role", "invalid_value")),
    ({"model": "gpt-4o", "messages": HELLO, "tools": [{"type": "function", "function": {"parameters": {}}}]},
     _openai_error("Missing required parameter: 'tools[0].function.name'.", "tools[0].function.name",
                   "missing_required_parameter")),
    ({"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "xml"}},
     _openai_error("Invalid value: 'xml'. Supported values are: 'text', 'json_object', and 'json_schema'.",
                   "response_format.type", "invalid_value")),
    ({"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     _openai_error("Missing required parameter: 'response_format.json_schema.name'.",
                   "response_format.json_schema.name", "missing_required_parameter")),
    ({"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
     _openai_error("Missing required parameter: 'response_format.json_schema.schema'.",
                   "response_format.json_schema.schema", "missing_required_parameter")),
    ({"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "json_object"}},
     _openai_error("'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                   "'json_object'.", "messages")),
    ({"model": "gpt-4o", "messages": HELLO, "stream_options": {"include_usage": True}},
     _openai_error("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")),
    ({"model": "gpt-4o", "messages": HELLO, "tool_choice": "auto"},
     _openai_error("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                   "tool_choice")),
    ({"model": "gpt-4o", "messages": HELLO, "n": 0},
     _openai_error("Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.", "n",
                   "integer_below_min_value")),
]


@pytest.mark.parametrize(("body", "expected"), VALIDATION)
def test_openai_validation_errors(openai_server, body, expected):
    r = post(openai_server, "/v1/chat/completions", body)
    assert r.status_code == 400 and r.json() == expected


def test_bad_json_and_unknown_path(openai_server):
    r = HTTP.post(openai_server.base_url + "/chat/completions", content=b"{nope", headers=AUTH)
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    r = post(openai_server, "/v1/nothing", {})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"


# ---- Azure OpenAI ------------------------------------------------------------------------------------------


def test_azure_chat_body(azure_openai_server):
    r = chat(azure_openai_server)
    assert r.status_code == 200 and "apim-request-id" in r.headers
    body = r.json()
    assert body["model"] == "gpt-4o" and body["system_fingerprint"]  # the deployment's model
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {"filtered": False,
                                                                                        "detected": False}
    choice = body["choices"][0]
    assert choice["message"]["content"] == "Hello there, world!"
    assert choice["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert "prompt_tokens_details" in body["usage"]
    recorded = azure_openai_server.last_request
    assert recorded.path == "/openai/deployments/gpt-4o-dep/chat/completions"
    assert recorded.query == {"api-version": "2024-10-21"}


def test_azure_auth_modes_and_path_errors(azure_openai_server):
    srv = azure_openai_server
    assert chat(srv, headers={"Authorization": "Bearer test-entra-token"}).status_code == 200
    r = chat(srv, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["message"].startswith("Unauthorized. Access token is missing")
    assert chat(srv, headers={"Authorization": "Bearer test-key"}).status_code == 401  # a key is no bearer token
    r = post(srv, "/openai/deployments/gpt-4o-dep/chat/completions", {"messages": HELLO}, {"api-key": "test-key"})
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}
    r = post(srv, "/openai/deployments/nope/chat/completions?api-version=2024-10-21", {"messages": HELLO},
             {"api-key": "test-key"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"
    assert r.json()["error"]["message"].startswith("The API deployment for this resource does not exist.")
    # the v1 API: no api-version, the deployment in "model"
    r = post(srv, "/openai/v1/chat/completions", {"model": "gpt-4o-mini-dep", "messages": HELLO},
             {"api-key": "test-key"})
    assert r.status_code == 200 and r.json()["model"] == "gpt-4o-mini"


def test_azure_stream_starts_with_prompt_filter_results(azure_openai_server):
    cs = chunks(chat(azure_openai_server, stream=True, stream_options={"include_usage": True}))
    first = cs[0]
    assert first["choices"] == [] and first["id"] == "" and first["object"] == ""
    assert first["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert cs[1]["choices"][0]["delta"]["role"] == "assistant" and cs[1]["choices"][0]["content_filter_results"] == {}
    assert cs[2]["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert cs[-1]["choices"] == [] and cs[-1]["usage"]["total_tokens"] > 0


# ---- Azure AI serverless -----------------------------------------------------------------------------------


def test_azure_serverless_paths_and_auth(azure_serverless_server):
    srv = azure_serverless_server
    for path in ("/v1/chat/completions", "/chat/completions"):
        r = post(srv, path, {"messages": HELLO})
        assert r.status_code == 200 and r.json()["model"] == "Meta-Llama-3.1-8B-Instruct"
        assert "system_fingerprint" not in r.json() and "refusal" not in r.json()["choices"][0]["message"]
    assert post(srv, "/v1/chat/completions", {"messages": HELLO}, {"api-key": "test-key"}).status_code == 200
    r = post(srv, "/v1/chat/completions", {"messages": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Bad Request"
    assert post(srv, "/v1/images/generations", {"prompt": "x"}).status_code == 404


# ---- Databricks --------------------------------------------------------------------------------------------


def test_databricks_chat_invocations_and_errors(databricks_server):
    srv = databricks_server
    body = chat(srv).json()
    assert body["model"] == "databricks-meta-llama-3-3-70b-instruct" and "system_fingerprint" not in body
    r = post(srv, "/serving-endpoints/chat/completions", {"model": "nope", "messages": HELLO})
    assert r.status_code == 404
    assert r.json() == {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Endpoint with name 'nope' does not exist."}
    r = post(srv, "/serving-endpoints/chat/completions", {"model": "databricks-claude-sonnet-4", "messages": []})
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
    r = post(srv, "/serving-endpoints/databricks-claude-sonnet-4/invocations", {"messages": HELLO})
    assert r.json()["choices"][0]["message"]["content"] == "Hello there, world!"
    assert r.json()["model"] == "databricks-claude-sonnet-4"
    r = post(srv, "/serving-endpoints/databricks-gte-large-en/invocations", {"input": ["a"]})
    assert len(r.json()["data"][0]["embedding"]) == 64
    srv.script(text="scored")
    r = post(srv, "/serving-endpoints/databricks-claude-sonnet-4/invocations",
             {"dataframe_split": {"columns": ["x"], "data": [[1], [2]]}})
    assert r.json() == {"predictions": ["scored", "scored"]}
    assert post(srv, "/serving-endpoints/nope/invocations", {"inputs": [1]}).json()["error_code"] == \
        "RESOURCE_DOES_NOT_EXIST"


def test_databricks_endpoint_to_model_mapping():
    with OpenAIServer(flavor="databricks", endpoints={"chat-ep": "llama-3-70b"}) as srv:
        assert chat(srv, model="chat-ep").json()["model"] == "llama-3-70b"
        assert chat(srv, model="databricks-gte-large-en").status_code == 404


def test_databricks_oauth_m2m_token():
    with OpenAIServer(flavor="databricks", oauth_clients={"sp-id": "sp-secret"}) as srv:
        r = HTTP.post(srv.url + "/oidc/v1/token", auth=("sp-id", "sp-secret"),
                      data={"grant_type": "client_credentials", "scope": "all-apis"})
        assert r.json() == {"access_token": "test-oauth-token", "token_type": "Bearer", "expires_in": 3600,
                            "scope": "all-apis"}
        assert chat(srv, headers={"Authorization": "Bearer test-oauth-token"}).status_code == 200
        r = HTTP.post(srv.url + "/oidc/v1/token", auth=("sp-id", "wrong"), data={"grant_type": "client_credentials"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        meta = HTTP.get(srv.url + "/oidc/.well-known/oauth-authorization-server").json()
        assert meta["token_endpoint"] == srv.url + "/oidc/v1/token"


# ---- Mistral -----------------------------------------------------------------------------------------------


def _mistral_422(detail):
    return {"object": "error", "message": {"detail": [detail]}, "type": "invalid_request_error", "param": None,
            "code": None}


def test_mistral_validation_errors(mistral_server):
    r = chat(mistral_server, seed=42)
    assert r.status_code == 422
    assert r.json() == _mistral_422({"type": "extra_forbidden", "loc": ["body", "seed"],
                                     "msg": "Extra inputs are not permitted", "input": 42})
    r = chat(mistral_server, logprobs=True)
    assert r.status_code == 422 and r.json()["message"]["detail"][0]["loc"] == ["body", "logprobs"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    r = chat(mistral_server, tools=tools, tool_choice="sometimes")
    assert r.status_code == 422
    assert r.json() == _mistral_422({"type": "literal_error", "loc": ["body", "tool_choice"],
                                     "msg": "Input should be 'auto', 'none', 'any' or 'required'",
                                     "input": "sometimes", "ctx": {"expected": "'auto', 'none', 'any' or 'required'"}})
    for choice in ("auto", "none", "any", "required", {"type": "function", "function": {"name": "f"}}):
        assert chat(mistral_server, tools=tools, tool_choice=choice).status_code == 200
    r = chat(mistral_server, messages=[{"role": "developer", "content": "x"}])
    assert r.status_code == 422 and r.json()["message"]["detail"][0]["type"] == "union_tag_invalid"
    r = post(mistral_server, "/v1/chat/completions", {"messages": HELLO})
    assert r.status_code == 422 and r.json()["message"]["detail"][0]["loc"] == ["body", "model"]
    assert chat(mistral_server, random_seed=42).status_code == 200


def test_mistral_bodies_and_stream(mistral_server):
    mistral_server.script(tool_calls=[("f", {"a": 1}), ("g", {"b": 2})])
    body = chat(mistral_server).json()
    assert "system_fingerprint" not in body and len(body["id"]) == 32
    msg = body["choices"][0]["message"]
    assert msg["content"] == "" and [len(c["id"]) for c in msg["tool_calls"]] == [9, 9]
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    mistral_server.script(text="Hi you", tool_calls=[("f", {"a": 1}), ("g", {"b": 2})])
    cs = chunks(chat(mistral_server, stream=True))
    tool_chunks = [c for c in cs if c["choices"][0]["delta"].get("tool_calls")]
    assert len(tool_chunks) == 1  # Mistral sends every call complete in one delta
    calls = tool_chunks[0]["choices"][0]["delta"]["tool_calls"]
    assert [(c["index"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [(0, "f", {"a": 1}), (1, "g", {"b": 2})]
    last = cs[-1]
    assert last["choices"][0]["finish_reason"] == "tool_calls" and last["usage"]["total_tokens"] > 0
    assert all("usage" not in c for c in cs[:-1])


# ---- embeddings --------------------------------------------------------------------------------------------


def test_embeddings_float_and_base64(flavored):
    path, model = EMBED_PATH[flavored.flavor], EMBED_MODEL[flavored.flavor]
    payload = {"model": model, "input": ["red apple", "green apple", "red apple"]}
    headers = AUTH_FOR.get(flavored.flavor, AUTH)
    floats = post(flavored, path, payload, headers).json()
    assert floats["object"] == "list" and [d["index"] for d in floats["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in floats["data"])
    vectors = [d["embedding"] for d in floats["data"]]
    assert len(vectors[0]) == 64 and vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert math.isclose(math.sqrt(sum(v * v for v in vectors[0])), 1.0, rel_tol=1e-6)
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] == 6
    b64 = post(flavored, path, {**payload, "encoding_format": "base64"}, headers).json()
    decoded = [list(struct.unpack("<64f", base64.b64decode(d["embedding"]))) for d in b64["data"]]
    assert decoded == vectors


def test_embedding_dimensions_limits_and_script(openai_server):
    r = post(openai_server, "/v1/embeddings", {"model": "text-embedding-3-large", "input": "x", "dimensions": 8})
    assert len(r.json()["data"][0]["embedding"]) == 8
    assert r.json()["data"][0]["embedding"] == embed_text("x", 8)
    r = post(openai_server, "/v1/embeddings", {"model": "text-embedding-ada-002", "input": "x", "dimensions": 8})
    assert r.status_code == 400 and r.json() == _openai_error("This model does not support specifying dimensions.")
    r = post(openai_server, "/v1/embeddings", {"model": "text-embedding-3-small", "input": ""})
    assert r.status_code == 400
    openai_server.script(embeddings=[[0.5, 0.25]])
    r = post(openai_server, "/v1/embeddings", {"model": "m", "input": "x"})
    assert r.json()["data"][0]["embedding"] == [0.5, 0.25]
    with OpenAIServer(max_embedding_inputs=2) as small:
        assert post(small, "/v1/embeddings", {"model": "m", "input": ["a", "b"]}).status_code == 200
        r = post(small, "/v1/embeddings", {"model": "m", "input": ["a", "b", "c"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_mistral_embeddings_use_output_dimension(mistral_server):
    r = post(mistral_server, "/v1/embeddings", {"model": "mistral-embed", "input": ["a"], "output_dimension": 16})
    assert len(r.json()["data"][0]["embedding"]) == 16 and r.json()["usage"]["completion_tokens"] == 0
    r = post(mistral_server, "/v1/embeddings", {"model": "mistral-embed", "input": ["a"], "dimensions": 16})
    assert r.status_code == 422


# ---- images, models ----------------------------------------------------------------------------------------


def test_images_b64_and_url(openai_server):
    r = post(openai_server, "/v1/images/generations", {"model": "dall-e-2", "prompt": "a red fox", "n": 2,
                                                       "size": "64x32", "response_format": "b64_json"})
    body = r.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 2
    assert body["data"][0]["revised_prompt"] == "a red fox"
    assert png_size(base64.b64decode(body["data"][0]["b64_json"])) == (64, 32)
    body = post(openai_server, "/v1/images/generations", {"prompt": "a cat", "size": "16x16"}).json()
    image = HTTP.get(body["data"][0]["url"])
    assert image.headers["content-type"] == "image/png" and png_size(image.content) == (16, 16)
    r = post(openai_server, "/v1/images/generations", {"prompt": "a cat", "size": "big"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "size"
    assert make_png(3, 2) != make_png(3, 2, "other")
    # dall-e-3: one image a request, its own qualities and styles
    r = post(openai_server, "/v1/images/generations", {"model": "dall-e-3", "prompt": "a fox", "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = post(openai_server, "/v1/images/generations", {"model": "dall-e-3", "prompt": "a fox", "quality": "premium"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "quality"
    r = post(openai_server, "/v1/images/generations", {"model": "dall-e-3", "prompt": "a fox", "size": "16x8",
                                                       "quality": "hd", "style": "natural"})
    assert r.status_code == 200


def test_azure_images_and_other_flavours(azure_openai_server, mistral_server):
    r = post(azure_openai_server, "/openai/deployments/dall-e-3-dep/images/generations?api-version=2024-10-21",
             {"prompt": "a fox", "size": "8x8", "response_format": "b64_json"}, {"api-key": "test-key"})
    item = r.json()["data"][0]
    assert png_size(base64.b64decode(item["b64_json"])) == (8, 8)
    assert item["content_filter_results"]["sexual"]["filtered"] is False and "prompt_filter_results" in item
    assert post(mistral_server, "/v1/images/generations", {"prompt": "x"}).status_code == 404


def test_models_list(openai_server, mistral_server):
    body = HTTP.get(openai_server.base_url + "/models", headers=AUTH).json()
    assert body["object"] == "list" and "gpt-4o" in [m["id"] for m in body["data"]]
    assert body["data"][0] == {"id": "gpt-4o", "object": "model", "created": 1700000000, "owned_by": "openai"}
    assert HTTP.get(openai_server.base_url + "/models/nope", headers=AUTH).json()["error"]["code"] == \
        "model_not_found"
    body = HTTP.get(mistral_server.base_url + "/models", headers=AUTH).json()
    assert "mistral-embed" in [m["id"] for m in body["data"]] and "capabilities" in body["data"][0]


# ---- control API, fixtures ---------------------------------------------------------------------------------


def test_control_api(openai_server):
    url = openai_server.url
    assert HTTP.post(url + "/__mesh__/script", json={"text": "scripted", "tool_calls": [["f", {"a": 1}]]}).json() \
        == {"pending": 1}
    body = chat(openai_server).json()
    assert body["choices"][0]["message"]["content"] == "scripted"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"
    recorded = HTTP.get(url + "/__mesh__/requests").json()
    assert [r["path"] for r in recorded] == ["/v1/chat/completions"]
    assert recorded[0]["json"]["messages"] == HELLO
    assert HTTP.post(url + "/__mesh__/reset").json() == {"ok": True}
    assert openai_server.requests == [] and openai_server.pending() == 0


def test_fixture_is_reset_between_tests_part1(openai_server):
    openai_server.script(text="left over")
    chat(openai_server, headers={"Authorization": "Bearer nope"})


def test_fixture_is_reset_between_tests_part2(openai_server, pytestconfig):
    plugins = pytestconfig.pluginmanager  # the pytest11 entry point (or an explicit -p) loaded the fixtures
    assert plugins.has_plugin("langchain_mesh") or plugins.has_plugin("langchain_mesh.testing.fixtures")
    assert openai_server.pending() == 0 and openai_server.requests == []
    assert openai_server.base_url == openai_server.url + "/v1"


def test_base_urls():
    with OpenAIServer(flavor="azure") as a, OpenAIServer(flavor="databricks") as d:
        assert a.base_url == a.url and d.base_url == d.url + "/serving-endpoints"
        assert "test-key" not in repr(a)
    with pytest.raises(ValueError):
        OpenAIServer(flavor="bedrock")


# ---- the real openai SDK -----------------------------------------------------------------------------------


def test_openai_sdk_parses_every_flavour(flavored):
    openai = pytest.importorskip("openai")
    client = flavored.openai_client()
    model = CHAT_MODEL[flavored.flavor]
    flavored.script(text="Paris")
    reply = client.chat.completions.create(model=model, messages=HELLO)
    assert reply.choices[0].message.content == "Paris" and reply.usage.total_tokens > 0
    flavored.script(text="Hello streaming world", tool_calls=[("get_weather", {"city": "Paris"})])
    stream = client.chat.completions.create(model=model, messages=HELLO, stream=True)
    text, args, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Hello streaming world" and json.loads(args) == {"city": "Paris"} and finish == "tool_calls"
    emb = client.embeddings.create(model=EMBED_MODEL[flavored.flavor], input=["hello world"])  # base64 on the wire
    assert flavored.last_request.json["encoding_format"] == "base64"
    assert emb.data[0].embedding == pytest.approx(embed_text("hello world", 64))
    flavored.script(status=429, error_message="slow down")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=model, messages=HELLO)


def test_azure_sdk_with_entra_token(azure_openai_server):
    openai = pytest.importorskip("openai")
    client = openai.AzureOpenAI(azure_endpoint=azure_openai_server.base_url, api_version="2024-10-21",
                                azure_ad_token="test-entra-token", max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-dep", messages=HELLO)
    assert reply.model == "gpt-4o"
    assert azure_openai_server.last_request.headers["authorization"] == "Bearer test-entra-token"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing-dep", messages=HELLO)


def test_sdk_sees_a_cut_stream_as_an_error(openai_server):
    openai = pytest.importorskip("openai")
    openai_server.script(text="one two three four", cut_after=2)
    stream = openai_server.openai_client().chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    with pytest.raises(Exception) as cut:  # noqa: PT011 - which class depends on the SDK's version:
        list(stream)
    # openai 3.60 wraps the transport's error in APIError; 3.3 (what instructor's jiter cap lets a
    # fresh install pick) lets httpx's RemoteProtocolError through. Either way the cut is not silent.
    assert isinstance(cut.value, openai.APIError) or type(cut.value).__name__ == "RemoteProtocolError", cut.value


# ---- python -m -------------------------------------------------------------------------------------------



def test_python_m_serves_and_accepts_scripts():
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "langchain_mesh.testing.openai", "--port", str(port),
                             "--flavor", "mistral", "--api-key", "k-123"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in banner and "k-123" not in banner
        url = f"http://127.0.0.1:{port}"
        assert HTTP.post(url + "/__mesh__/script", json={"text": "from afar"}).json() == {"pending": 1}
        r = HTTP.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer k-123"},
                       json={"model": "mistral-small-latest", "messages": HELLO})
        assert r.json()["choices"][0]["message"]["content"] == "from afar"
        assert HTTP.post(url + "/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=5)
