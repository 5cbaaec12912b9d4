"""The OpenAI wire translation on its own: request bodies per dialect, response and chunk parsing,
SSE decoding and error bodies. The same code is then exercised over HTTP in
``test_openai_connections.py``."""

from __future__ import annotations

import base64
import struct

import pytest

from langchain_mesh.connections.openai_wire import (
    ChunkReader,
    Dialect,
    chat_body,
    embedding_bodies,
    image_body,
    iter_sse_data,
    parse_chat_completion,
    parse_embeddings,
    provider_message,
)
from langchain_mesh.errors import RateLimitError, SettingsError, StreamInterruptedError
from langchain_mesh.schema import (
    CompletionRequest,
    EmbeddingRequest,
    FunctionCall,
    ImageGenerationRequest,
    ImagePart,
    ImageURLPart,
    Message,
    StreamChunk,
    TextPart,
    ToolCall,
    validate_settings,
)

OPENAI = Dialect(provider="openai", max_tokens_key="max_completion_tokens")
MISTRAL = Dialect(provider="mistral", tool_choice_required="any", seed_key="random_seed",
                  unsupported=frozenset({"topK", "logitBias", "logProbs", "topLogProbs"}), embedding_dimensions=False)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                         "required": ["city"]}}}


def req(messages=None, **settings) -> CompletionRequest:
    return CompletionRequest(messages=messages or [Message(role="user", content="hi")],
                             settings=validate_settings(settings))


def test_minimal_body_has_only_model_and_messages():
    assert chat_body("gpt-4o", req(), OPENAI) == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_every_seed_setting_maps_to_its_openai_key():
    body = chat_body("gpt-4o", req(temperature=0.2, topP=0.9, maxOutputTokens=50, stopSequences=["END"],
                                   presencePenalty=0.5, frequencyPenalty=-0.5, logitBias={50256: -100},
                                   logProbs=True, topLogProbs=3, seed=7), OPENAI)
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2,
                    "top_p": 0.9, "max_completion_tokens": 50, "stop": ["END"], "presence_penalty": 0.5,
                    "frequency_penalty": -0.5, "logit_bias": {"50256": -100}, "logprobs": True,
                    "top_logprobs": 3, "seed": 7}


def test_tools_tool_choice_and_strict_schema_output():
    body = chat_body("gpt-4o", req(tools=[TOOL], toolChoice="get_weather"), OPENAI)
    assert body["tools"] == [TOOL]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat_body("m", req(tools=[TOOL], toolChoice="required"), OPENAI)["tool_choice"] == "required"
    assert chat_body("m", req(tools=[TOOL], toolChoice="none"), OPENAI)["tool_choice"] == "none"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
    body = chat_body("m", req(responseFormat={"type": "json", "schema": schema, "name": "answer", "strict": True}), OPENAI)
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    assert chat_body("m", req(responseFormat={"type": "json"}), OPENAI)["response_format"] == {"type": "json_object"}


def test_mistral_dialect_renames_and_refuses_what_it_lacks():
    body = chat_body("mistral-large-latest", req(tools=[TOOL], toolChoice="required", seed=3, maxOutputTokens=9), MISTRAL)
    assert body["tool_choice"] == "any" and body["random_seed"] == 3 and body["max_tokens"] == 9
    assert "seed" not in body
    with pytest.raises(SettingsError) as e:
        chat_body("m", req(logProbs=True, topK=5), MISTRAL)
    assert set(e.value.settings) == {"logProbs", "topK"} and "drop_unsupported_settings" in str(e.value)
    dropped = chat_body("m", req(logProbs=True, topK=5, temperature=0.1), MISTRAL, drop_unsupported=True)
    assert "logprobs" not in dropped and "top_k" not in dropped and dropped["temperature"] == 0.1


def test_extra_keys_pass_top_k_to_compatible_servers():
    d = Dialect(provider="openai_compatible", unsupported=frozenset(), extra_keys={"topK": "top_k"})
    assert chat_body("m", req(topK=40), d)["top_k"] == 40


def test_extra_settings_are_passed_through_verbatim():
    body = chat_body("o3", req(extra={"reasoning_effort": "low", "user": "u1"}), OPENAI)
    assert body["reasoning_effort"] == "low" and body["user"] == "u1"


def test_streaming_asks_for_usage_unless_the_dialect_cannot():
    assert chat_body("m", req(), OPENAI, stream=True)["stream_options"] == {"include_usage": True}
    assert "stream_options" not in chat_body("m", req(), Dialect(stream_usage=False), stream=True)


def test_multimodal_and_tool_turns():
    msgs = [
        Message(role="system", content="be brief"),
        Message(role="user", content=[TextPart(text="what is this?"), ImagePart(data=PNG, mime_type="image/png"),
                                      ImageURLPart(url="https://x/y.jpg", detail="low")]),
        Message(role="assistant", tool_calls=[ToolCall(id="c1", function=FunctionCall(name="f", arguments='{"a":1}'))]),
        Message(role="tool", tool_call_id="c1", content="42"),
    ]
    out = chat_body("m", req(msgs), OPENAI)["messages"]
    assert out[1]["content"][1] == {"type": "image_url",
                                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    assert out[1]["content"][2] == {"type": "image_url", "image_url": {"url": "https://x/y.jpg", "detail": "low"}}
    assert out[2] == {"role": "assistant", "content": None,
                      "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}
    assert out[3] == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def test_parse_completion_with_tool_calls_usage_and_log_probs():
    body = {"model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":2}'}}]},
        "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                                  "top_logprobs": [{"token": "Hi", "logprob": -0.1}, {"token": "Hello", "logprob": -2.0}]}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                  "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 1}}}
    r = parse_chat_completion(body)
    assert r.tool_calls[0].function.parsed_arguments() == {"x": 2} and r.finish_reason == "tool_calls"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cached_input_tokens, r.usage.reasoning_tokens) == (10, 3, 4, 1)
    assert r.log_probs[0].token == "Hi" and r.log_probs[0].top == [("Hi", -0.1), ("Hello", -2.0)]
    assert r.model == "gpt-4o-2024-08-06"


def test_a_refusal_is_reported_not_returned_as_empty_json():
    r = parse_chat_completion({"choices": [{"finish_reason": "stop",
                                            "message": {"content": None, "refusal": "I can't help with that."}}]})
    assert r.text == "I can't help with that." and r.finish_reason == "content_filter"


def test_chunk_reader_folds_the_usage_chunk_into_the_footer():
    rd = ChunkReader("openai")
    events = [rd.feed(c) for c in [
        {"choices": [], "prompt_filter_results": []},  # Azure's first chunk
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "c", "function": {"name": "f", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}},
    ]]
    chunks = [e for e in events if e is not None]
    assert chunks[0] == StreamChunk(text="Hel")
    assert chunks[1].tool_call_deltas[0].index == 1 and chunks[1].tool_call_deltas[0].name == "f"
    footer = rd.footer()
    assert footer.finish_reason == "tool_calls" and footer.usage.total_tokens == 3


def test_a_stream_without_finish_reason_is_interrupted():
    rd = ChunkReader("openai")
    rd.feed({"choices": [{"index": 0, "delta": {"content": "partial"}}]})
    with pytest.raises(StreamInterruptedError) as e:
        rd.footer()
    assert e.value.partial_text == "partial" and e.value.retryable


def test_an_error_event_inside_a_stream_raises_its_type():
    with pytest.raises(RateLimitError):
        ChunkReader("openai").feed({"error": {"message": "slow down", "code": 429}})


def test_sse_decoding():
    lines = [": keep-alive", "", "data: {\"a\":1}", "", "event: x", "data: line1", "data: line2", "", "data: [DONE]", "",
             "data: after-done", ""]
    assert list(iter_sse_data(lines)) == ['{"a":1}', "line1\nline2"]
    assert list(iter_sse_data(["data:tight"])) == ["tight"]  # no space after the colon, no final blank line


def test_embedding_batches_and_base64_vectors():
    bodies = embedding_bodies("text-embedding-3-small", EmbeddingRequest(texts=list("abcde"), dimensions=8), OPENAI, 2)
    assert [b["input"] for b in bodies] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(b["dimensions"] == 8 and b["encoding_format"] == "base64" for b in bodies)
    with pytest.raises(SettingsError):
        embedding_bodies("mistral-embed", EmbeddingRequest(texts=["a"], dimensions=8), MISTRAL)

    def enc(v):
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()

    r = parse_embeddings([
        {"data": [{"index": 1, "embedding": enc([0.5, 1.0])}, {"index": 0, "embedding": enc([0.25, 2.0])}],
         "usage": {"prompt_tokens": 2, "total_tokens": 2}, "model": "m"},
        {"data": [{"index": 0, "embedding": [3.0, 4.0]}], "usage": {"prompt_tokens": 1, "total_tokens": 1}},
    ])
    assert r.embeddings == [[0.25, 2.0], [0.5, 1.0], [3.0, 4.0]] and r.usage.input_tokens == 3


def test_image_body():
    assert image_body("dall-e-3", ImageGenerationRequest(prompt="a cat", width=1792, height=1024)) == {
        "model": "dall-e-3", "prompt": "a cat", "n": 1, "size": "1792x1024", "response_format": "b64_json"}
    assert "response_format" not in image_body("gpt-image-1", ImageGenerationRequest(prompt="x"))
    with pytest.raises(SettingsError):
        image_body("dall-e-3", ImageGenerationRequest(prompt="x", negative_prompt="dogs"))
    with pytest.raises(SettingsError, match="seed"):
        image_body("dall-e-3", ImageGenerationRequest(prompt="x", seed=1))


@pytest.mark.parametrize("body,expected", [
    ({"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"},
     "Incorrect API key provided (invalid_api_key)"),  # openai (the SDK hands us the inner error object)
    ({"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}},
     "The API deployment does not exist. (DeploymentNotFound)"),  # azure
    ({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no endpoint x"}, "no endpoint x (RESOURCE_DOES_NOT_EXIST)"),
    ({"object": "error", "message": {"detail": [{"loc": ["body", "seed"], "msg": "Extra inputs are not permitted"}]},
      "type": "invalid_request_message_error", "param": None, "code": None},
     '{"detail": [{"loc": ["body", "seed"], "msg": "Extra inputs are not permitted"}]}'),  # mistral 422
    ("upstream connect error", "upstream connect error"),
    (None, "fallback"),
])
def test_provider_message_reads_every_error_body_shape(body, expected):
    assert provider_message(body, "fallback") == expected


def test_images_in_tool_results_move_to_a_user_turn_after_the_tool_run():
    calls = [ToolCall(id=i, function=FunctionCall(name="screenshot")) for i in ("a", "b")]
    msgs = [Message(role="user", content="look"), Message(role="assistant", tool_calls=calls),
            Message(role="tool", tool_call_id="a", content=[TextPart(text="page 1"), ImagePart(data=PNG, mime_type="image/png")]),
            Message(role="tool", tool_call_id="b", content=[ImagePart(data=PNG, mime_type="image/png")])]
    out = chat_body("m", req(msgs), OPENAI)["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "tool", "user", "user"]
    assert out[2]["content"] == [{"type": "text", "text": "page 1"}]
    assert out[3]["content"] == "[image attached in the next message]"
    assert all(m["content"][0]["type"] == "image_url" for m in out[4:])
