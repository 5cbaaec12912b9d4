"""The seed-style builders, run for real against the scripted connection."""

from __future__ import annotations

import base64
import json
import math
from typing import Optional

import pytest
from pydantic import BaseModel

from langchain_mesh import Mesh
from langchain_mesh.connections.base import ToolCallAssembler
from langchain_mesh.errors import (
    AuthenticationError,
    BadRequestError,
    CapabilityError,
    MeshError,
    NotFoundError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    SettingsError,
    StreamInterruptedError,
    error_for_status,
)
from langchain_mesh.queries import CompletionQuery, CompletionsResponse, MultipartMessage
from langchain_mesh.schema import (
    CompletionResponse,
    EmbeddingResponse,
    ImagePart,
    ImageURLPart,
    StreamChunk,
    StreamFooter,
    TextPart,
    ToolCall,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16

MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def mesh():
    m = Mesh.from_config({"connections": {"fake": {"type": "scripted", "embedding_dimensions": 32, "models": [
        {"id": "chat"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}})
    yield m
    m.close()


@pytest.fixture
def conn(mesh):
    return mesh.connection("fake")


@pytest.fixture
def llm(mesh):
    return mesh.get_llm("scripted:fake:chat")


@pytest.fixture
def emb(mesh):
    return mesh.get_llm("scripted:fake:emb")


# --------------------------------------------------------------------------------------------------
# completion


def test_completion(llm, conn):
    conn.script(text="Paris is the capital of France.")
    completion = llm.new_completion()
    assert isinstance(completion, CompletionQuery)
    assert completion.with_message("What is the capital of France?") is completion  # chains
    resp = completion.execute()
    assert isinstance(resp, CompletionResponse)
    assert resp.success is True and resp.error is None
    assert resp.text == "Paris is the capital of France."
    assert resp.finish_reason == "stop"
    assert resp.model == "chat"
    assert resp.usage.input_tokens == 7  # What is the capital of France ?
    assert resp.usage.output_tokens == 7
    assert resp.usage.total_tokens == 14
    [req] = conn.requests
    assert [(m.role, m.content) for m in req.messages] == [("user", "What is the capital of France?")]


def test_unscripted_completion_echoes_last_user_message(llm):
    assert llm.new_completion().with_message("ping").execute().text == "ping"


def test_completion_settings_shape_the_answer(llm, conn):
    conn.script(text="one two three four five")
    c = llm.new_completion().with_message("count")
    c.settings["maxOutputTokens"] = 2
    resp = c.execute()
    assert resp.text == "one two "
    assert resp.finish_reason == "length"
    conn.script(text="alpha. beta")
    c2 = llm.new_completion().with_message("x")
    c2.settings["stopSequences"] = ["."]
    assert c2.execute().text == "alpha"


def test_multi_turn_messages_reach_the_connection(llm, conn):
    conn.script(text="A transformer is a neural network architecture.")
    conn.script(text="Attention weighs every token against every other.")
    completion = llm.new_completion()
    completion.with_message("You answer in one sentence", role="system")
    completion.with_message("What is a transformer?")
    resp = completion.execute()
    completion.with_message(resp.text, role="assistant")
    completion.with_message("And attention?")
    second = completion.execute()
    assert second.text == "Attention weighs every token against every other."
    assert len(conn.requests) == 2
    assert [(m.role, m.text) for m in conn.requests[1].messages] == [
        ("system", "You answer in one sentence"),
        ("user", "What is a transformer?"),
        ("assistant", "A transformer is a neural network architecture."),
        ("user", "And attention?"),
    ]
    # the first request was not changed by later additions
    assert len(conn.requests[0].messages) == 2


def test_completion_needs_a_message(llm, conn):
    with pytest.raises(SettingsError, match="at least one message"):
        llm.new_completion().execute()
    assert conn.requests == []


def test_bad_role_rejected_when_added(llm):
    with pytest.raises(ValueError):
        llm.new_completion().with_message("hi", role="robot")


def test_settings_reach_the_connection(llm, conn):
    c = llm.new_completion().with_message("hi")
    c.settings["temperature"] = 0.2
    c.settings["topK"] = 5
    c.execute()
    s = conn.requests[0].settings
    assert (s.temperature, s.topK) == (0.2, 5)


# --------------------------------------------------------------------------------------------------
# multimodal input


def test_multipart_message_with_inline_png_and_url(llm, conn):
    completion = llm.new_completion()
    mp = completion.new_multipart_message()
    assert isinstance(mp, MultipartMessage)
    assert mp.with_text("What is in these images?") is mp
    mp.with_inline_image(PNG)
    mp.with_image_url("https://example.com/cat.jpg", detail="low")
    assert mp.add() is completion
    completion.execute()
    [msg] = conn.requests[0].messages
    assert msg.role == "user"
    text, img, url = msg.content
    assert isinstance(text, TextPart) and text.text == "What is in these images?"
    assert isinstance(img, ImagePart)
    assert img.mime_type == "image/png"  # sniffed from the bytes
    assert img.data == PNG
    assert img.data_url.startswith("data:image/png;base64,")
    assert isinstance(url, ImageURLPart)
    assert (url.url, url.detail) == ("https://example.com/cat.jpg", "low")
    assert msg.text == "What is in these images?"


def test_inline_image_as_base64_text_and_explicit_mime(llm, conn):
    completion = llm.new_completion()
    (completion.new_multipart_message(role="user")
     .with_inline_image(base64.b64encode(JPEG).decode())
     .with_inline_image(b"\x00\x01raw", mime_type="image/bmp")
     .with_text("describe")
     .add())
    completion.execute()
    jpeg, raw, _ = conn.requests[0].messages[0].content
    assert (jpeg.data, jpeg.mime_type) == (JPEG, "image/jpeg")
    assert (raw.data, raw.mime_type) == (b"\x00\x01raw", "image/bmp")


def test_inline_image_of_unknown_format_needs_mime(llm):
    mp = llm.new_completion().new_multipart_message()
    with pytest.raises(ValueError, match="mime_type"):
        mp.with_inline_image(b"definitely not an image")


def test_empty_multipart_message(llm):
    with pytest.raises(MeshError, match="at least one part"):
        llm.new_completion().new_multipart_message().add()


def test_multipart_then_text_turns(llm, conn):
    c = llm.new_completion().with_message("be brief", role="system")
    c.new_multipart_message().with_text("look").with_inline_image(PNG).add()
    c.with_message("well?")
    c.execute()
    assert [m.role for m in conn.requests[0].messages] == ["system", "user", "user"]


# --------------------------------------------------------------------------------------------------
# tool calls


def test_tool_call_round_trip_like_the_seed(llm, conn):
    conn.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
    conn.script(text="3 multiplied by 6 is 18.")
    completion = llm.new_completion()
    completion.settings["tools"] = [MULTIPLY]
    completion.with_message("What is 3 * 6 ?")
    resp = completion.execute()
    assert resp.finish_reason == "tool_calls"
    assert resp.text == ""

    tool_calls = resp.tool_calls
    call_id = tool_calls[0]["id"]
    llm_arguments = tool_calls[0]["function"]["arguments"]
    assert tool_calls[0]["function"]["name"] == "multiply"
    assert tool_calls[0]["type"] == "function"
    args = json.loads(llm_arguments)
    result = str(args["a"] * args["b"])

    assert completion.with_tool_calls(tool_calls) is completion
    assert completion.with_tool_output(result, tool_call_id=call_id) is completion
    resp = completion.execute()
    assert resp.text == "3 multiplied by 6 is 18."

    msgs = conn.requests[1].messages
    assert [m.role for m in msgs] == ["user", "assistant", "tool"]
    assert msgs[1].tool_calls[0].id == call_id
    assert msgs[1].tool_calls[0].function.name == "multiply"
    assert json.loads(msgs[1].tool_calls[0].function.arguments) == {"a": 3, "b": 6}
    assert (msgs[2].content, msgs[2].tool_call_id) == ("18", call_id)
    assert conn.requests[1].settings.tools[0].name == "multiply"


def test_with_tool_calls_from_seed_dicts(llm, conn):
    seed_calls = [
        {"type": "function", "function": {"name": "multiply", "arguments": '{"a":3,"b":6}'},
         "id": "call_gEB9fOdroydyxYuRs0Ge6Izg"},
        {"id": "call_2", "function": {"name": "multiply", "arguments": {"a": 2, "b": 5}}},  # a dict of arguments
    ]
    c = llm.new_completion().with_message("What is 3 * 6 and 2 * 5?")
    c.settings["tools"] = [MULTIPLY]
    c.with_tool_calls(seed_calls)
    c.with_tool_output("18", tool_call_id="call_gEB9fOdroydyxYuRs0Ge6Izg")
    c.with_tool_output({"result": 10}, tool_call_id="call_2")  # non-text output travels as JSON
    c.execute()
    msgs = conn.requests[0].messages
    calls = msgs[1].tool_calls
    assert all(isinstance(tc, ToolCall) for tc in calls)
    assert calls[0].id == "call_gEB9fOdroydyxYuRs0Ge6Izg"
    assert calls[0].function.arguments == '{"a":3,"b":6}'
    assert json.loads(calls[1].function.arguments) == {"a": 2, "b": 5}
    assert json.loads(msgs[3].content) == {"result": 10}
    assert msgs[3].tool_call_id == "call_2"


def test_tool_choice_reaches_connection(llm, conn):
    c = llm.new_completion().with_message("x")
    c.settings["tools"] = [MULTIPLY]
    c.settings["toolChoice"] = {"type": "tool_name", "name": "multiply"}
    c.execute()
    tc = conn.requests[0].settings.toolChoice
    assert (tc.type, tc.name) == ("tool_name", "multiply")


# --------------------------------------------------------------------------------------------------
# streaming


def test_streaming_chunks_then_one_footer(llm, conn):
    conn.script(text="Special relativity says light speed is constant.")
    events = list(llm.new_completion().with_message("Please explain special relativity").execute_streamed())
    chunks, footer = events[:-1], events[-1]
    assert len(chunks) == 7
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert "".join(c.data["text"] for c in chunks) == "Special relativity says light speed is constant."
    assert isinstance(footer, StreamFooter)
    assert sum(isinstance(e, StreamFooter) for e in events) == 1
    assert footer.finish_reason == "stop"
    assert footer.usage.input_tokens == 4 and footer.usage.output_tokens == 8
    assert footer.data["finishReason"] == "stop"
    assert footer.data["usage"]["total_tokens"] == 12
    assert footer.model == "chat"


def test_streaming_truncated_by_max_tokens(llm, conn):
    conn.script(text="a b c d e")
    c = llm.new_completion().with_message("x")
    c.settings["maxOutputTokens"] = 3
    events = list(c.execute_streamed())
    assert "".join(e.text for e in events[:-1]) == "a b c "
    assert events[-1].finish_reason == "length"


def test_streaming_tool_calls_reassembled_in_footer(llm, conn):
    conn.script(tool_calls=[("multiply", {"a": 3, "b": 6}), ("multiply", {"a": 12, "b": 34})])
    c = llm.new_completion().with_message("What is 3 * 6 and 12 * 34?")
    c.settings["tools"] = [MULTIPLY]
    events = list(c.execute_streamed())
    footer = events[-1]
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    # fragments: id and name first, then the arguments in pieces, told apart by index
    assert all("toolCalls" in ch.data for ch in chunks)
    first = chunks[0].data["toolCalls"][0]
    assert first["index"] == 0 and first["function"]["name"] == "multiply" and first["id"]
    assert any(d.arguments and not d.name for ch in chunks for d in ch.tool_call_deltas)
    asm = ToolCallAssembler()
    for ch in chunks:
        asm.add(ch)
    assert asm.calls() == footer.tool_calls
    assert [json.loads(tc["function"]["arguments"]) for tc in footer.tool_calls] == [
        {"a": 3, "b": 6}, {"a": 12, "b": 34}]
    assert footer.finish_reason == "tool_calls"
    assert [t["function"]["name"] for t in footer.data["toolCalls"]] == ["multiply", "multiply"]


def test_cut_stream_raises_interrupted(llm, conn):
    conn.script(text="one two three four five", cut_after=2)
    seen = []
    with pytest.raises(StreamInterruptedError) as ei:
        for ev in llm.new_completion().with_message("count").execute_streamed():
            seen.append(ev)
    assert [e.text for e in seen] == ["one ", "two "]
    assert not any(isinstance(e, StreamFooter) for e in seen)
    assert ei.value.retryable is True
    assert ei.value.partial_text == "one two "


def test_stream_ending_without_footer_raises_interrupted(llm, conn):
    # cut after every chunk was sent: the stream simply stops, without its footer
    conn.script(text="one two", cut_after=5)
    seen = []
    with pytest.raises(StreamInterruptedError) as ei:
        for ev in llm.new_completion().with_message("count").execute_streamed():
            seen.append(ev)
    assert [e.text for e in seen] == ["one ", "two"]
    assert ei.value.partial_text == "one two"
    assert "scripted:fake:chat" in str(ei.value)


# --------------------------------------------------------------------------------------------------
# errors


def test_rate_limit_error_propagates_typed(llm, conn):
    conn.script(error=RateLimitError("slow down", status=429, provider="scripted", retry_after=2.5))
    with pytest.raises(RateLimitError) as ei:
        llm.new_completion().with_message("hi").execute()
    e = ei.value
    assert isinstance(e, ProviderError) and isinstance(e, MeshError)
    assert e.retryable is True
    assert (e.status, e.retry_after, e.provider) == (429, 2.5, "scripted")


def test_bad_request_error_not_retryable(llm, conn):
    conn.script(error=BadRequestError("context too long", status=400))
    with pytest.raises(BadRequestError) as ei:
        llm.new_completion().with_message("hi").execute()
    assert ei.value.retryable is False
    assert ei.value.status == 400


def test_errors_propagate_while_streaming(llm, conn):
    conn.script(error=ServerError("boom", status=503))
    with pytest.raises(ServerError) as ei:
        list(llm.new_completion().with_message("hi").execute_streamed())
    assert ei.value.retryable is True


def test_retryable_override():
    assert ProviderError("x").retryable is False
    assert ProviderError("x", retryable=True).retryable is True
    assert RateLimitError("x", retryable=False).retryable is False
    assert RateLimitError.retryable is True  # the class default is untouched


@pytest.mark.parametrize(
    "status, cls, retryable",
    [
        (400, BadRequestError, False), (409, BadRequestError, False), (413, BadRequestError, False),
        (422, BadRequestError, False), (401, AuthenticationError, False), (403, AuthenticationError, False),
        (404, NotFoundError, False), (408, ProviderTimeoutError, True), (429, RateLimitError, True),
        (500, ServerError, True), (502, ServerError, True), (503, ServerError, True), (529, ServerError, True),
        (418, ProviderError, False), (302, ProviderError, False),
    ],
)
def test_error_for_status(status, cls, retryable):
    e = error_for_status(status, "provider says no", provider="openai", retry_after=1.0)
    assert type(e) is cls
    assert e.retryable is retryable
    assert e.status == status
    assert e.provider == "openai" and e.provider_message == "provider says no"
    assert e.retry_after == 1.0
    assert str(e) == f"openai answered HTTP {status}: provider says no"


def test_error_for_status_without_provider():
    e = error_for_status(429, "quota")
    assert str(e) == "answered HTTP 429: quota"
    assert e.provider is None and e.retry_after is None


def test_retryable_transport_errors():
    assert ProviderConnectionError("refused").retryable is True
    assert ProviderTimeoutError("slow").retryable is True
    assert AuthenticationError("who").retryable is False


# --------------------------------------------------------------------------------------------------
# batch


def test_batch_with_one_failing_item(llm, conn):
    conn.script(text="first answer")
    conn.script(error=RateLimitError("slow down", status=429))
    conn.script(text="third answer")
    batch = llm.new_completions()
    for q in ("one", "two", "three"):
        batch.new_completion().with_message(q)
    resps = batch.execute()
    assert isinstance(resps, CompletionsResponse)
    assert len(resps) == 3
    assert [r.success for r in resps] == [True, False, True]
    assert resps[0].text == "first answer" and resps[2].text == "third answer"
    failed = resps[1]
    assert failed.error and "slow down" in failed.error
    assert failed.finish_reason == "error" and failed.text == ""
    assert [r.messages[0].text for r in conn.requests] == ["one", "two", "three"]


def test_batch_settings_shared_and_overridden(llm, conn):
    batch = llm.new_completions()
    batch.settings["temperature"] = 0.1
    batch.new_completion().with_message("a")
    own = batch.new_completion().with_message("b")
    own.settings["temperature"] = 0.9
    bad = batch.new_completion().with_message("c")
    bad.settings["tempreature"] = 1
    resps = batch.execute()
    assert [r.success for r in resps] == [True, True, False]
    assert "did you mean 'temperature'" in resps[2].error
    assert [r.settings.temperature for r in conn.requests] == [0.1, 0.9]  # the bad item never left


# --------------------------------------------------------------------------------------------------
# async


async def test_aexecute(llm, conn):
    conn.script(text="async answer")
    resp = await llm.new_completion().with_message("hi").aexecute()
    assert resp.text == "async answer" and resp.finish_reason == "stop"
    assert conn.requests[0].messages[0].text == "hi"


async def test_aexecute_streamed(llm, conn):
    conn.script(text="one two three")
    events = [ev async for ev in llm.new_completion().with_message("count").aexecute_streamed()]
    assert [e.text for e in events[:-1]] == ["one ", "two ", "three"]
    assert isinstance(events[-1], StreamFooter)
    assert events[-1].finish_reason == "stop"


async def test_aexecute_streamed_tool_calls(llm, conn):
    conn.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
    c = llm.new_completion().with_message("3*6")
    c.settings["tools"] = [MULTIPLY]
    events = [ev async for ev in c.aexecute_streamed()]
    assert json.loads(events[-1].tool_calls[0]["function"]["arguments"]) == {"a": 3, "b": 6}


async def test_aexecute_streamed_cut(llm, conn):
    conn.script(text="one two three", cut_after=1)
    seen = []
    with pytest.raises(StreamInterruptedError):
        async for ev in llm.new_completion().with_message("count").aexecute_streamed():
            seen.append(ev)
    assert [e.text for e in seen] == ["one "]


async def test_aexecute_error_typed(llm, conn):
    conn.script(error=RateLimitError("slow down", status=429))
    with pytest.raises(RateLimitError):
        await llm.new_completion().with_message("hi").aexecute()


async def test_batch_aexecute(llm, conn):
    # unscripted replies echo each item, so the result is the same whatever order the calls run in
    batch = llm.new_completions()
    for q in ("alpha", "beta", "gamma"):
        batch.new_completion().with_message(q)
    batch.new_completion().with_message("delta").settings["topK"] = 0
    resps = await batch.aexecute()
    assert [r.success for r in resps] == [True, True, True, False]
    assert [r.text for r in resps[:3]] == ["alpha", "beta", "gamma"]
    assert "topK" in resps[3].error
    assert sorted(r.messages[0].text for r in conn.requests) == ["alpha", "beta", "gamma"]


# --------------------------------------------------------------------------------------------------
# embeddings


def test_embeddings(emb, conn):
    q = emb.new_embeddings()
    assert q.add_text("The quick brown fox jumps over the lazy dog.") is q
    q.add_texts(["The quick brown fox", "A slow green turtle"])
    resp = q.execute()
    assert isinstance(resp, EmbeddingResponse)
    vecs = resp.get_embeddings()
    assert len(vecs) == 3
    assert all(len(v) == 32 for v in vecs)  # the connection's configured dimensions
    assert all(type(x) is float for v in vecs for x in v)  # python floats, not numpy
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6) for v in vecs)  # float32 values
    assert resp.model == "emb"
    assert resp.usage.input_tokens > 0
    assert conn.embedding_requests[0].texts[1] == "The quick brown fox"


def test_embeddings_deterministic_and_meaningful(emb):
    def embed(*texts):
        return emb.new_embeddings().add_texts(texts).execute().embeddings

    a1, = embed("the quick brown fox")
    a2, = embed("the quick brown fox")
    assert a1 == a2
    near, far = embed("quick brown foxes and the fox", "unrelated zebra topics")

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v))

    assert cos(a1, near) > cos(a1, far)


def test_embedding_settings(emb, conn):
    q = emb.new_embeddings().add_text("x")
    q.settings["dimensions"] = 8
    q.settings["input_type"] = "query"
    assert len(q.execute().embeddings[0]) == 8
    assert conn.embedding_requests[-1].input_type == "query"


@pytest.mark.parametrize("settings", [{"dimensions": 0}, {"input_type": "passage"}, {"dims": 8}])
def test_bad_embedding_settings(emb, settings):
    q = emb.new_embeddings().add_text("x")
    q.settings.update(settings)
    with pytest.raises(SettingsError) as ei:
        q.execute()
    assert list(settings)[0] in ei.value.settings


def test_embeddings_need_text_strings(emb):
    with pytest.raises(SettingsError, match="at least one text"):
        emb.new_embeddings().execute()
    with pytest.raises(SettingsError, match="string"):
        emb.new_embeddings().add_text(42)  # type: ignore[arg-type]
    with pytest.raises(SettingsError):
        emb.new_embeddings().add_texts(["ok", None])  # type: ignore[list-item]


async def test_embeddings_aexecute(emb):
    resp = await emb.new_embeddings().add_text("hello world").aexecute()
    sync = emb.new_embeddings().add_text("hello world").execute()
    assert resp.embeddings == sync.embeddings


def test_embeddings_not_offered_by_chat_model(llm):
    with pytest.raises(CapabilityError, match="scripted:fake:emb"):
        llm.new_embeddings()


# --------------------------------------------------------------------------------------------------
# JSON and structured output


def test_with_json_output(llm, conn):
    conn.script(text='{"city": "Paris"}')
    c = llm.new_completion().with_message("capital of France as JSON")
    assert c.with_json_output() is c
    assert c.settings["responseFormat"] == {"type": "json", "strict": False}
    resp = c.execute()
    assert resp.json == {"city": "Paris"}
    rf = conn.requests[0].settings.responseFormat
    assert rf.type == "json" and rf.schema_ is None and rf.strict is False


def test_with_json_output_schema(llm, conn):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    c = llm.new_completion().with_message("x").with_json_output(schema, strict=True, name="City")
    c.execute()
    rf = conn.requests[0].settings.responseFormat
    assert rf.schema_ == schema and rf.strict is True and rf.name == "City"
    assert conn.requests[0].settings.to_dict()["responseFormat"]["schema"] == schema


def test_with_json_output_bad_schema(llm, conn):
    c = llm.new_completion().with_message("x").with_json_output({"type": "object", "properties": {"a": {"type": "str"}}})
    with pytest.raises(SettingsError) as ei:
        c.execute()
    assert ei.value.settings == ["responseFormat"]
    assert conn.requests == []


class Person(BaseModel):
    name: str
    age: int
    email: Optional[str] = None


def test_with_structured_output(llm, conn):
    conn.script(text='{"name": "Ada", "age": 36}')
    c = llm.new_completion().with_message("Who wrote the first program?").with_structured_output(Person)
    resp = c.execute()
    person = Person.model_validate_json(resp.text)
    assert person == Person(name="Ada", age=36)
    rf = conn.requests[0].settings.responseFormat
    assert rf.type == "json" and rf.strict is True and rf.name == "Person"
    assert rf.schema_ == Person.model_json_schema()
    assert set(rf.schema_["required"]) == {"name", "age"}


def test_with_structured_output_nested_model(llm, conn):
    class Team(BaseModel):
        members: list[Person]

    llm.new_completion().with_message("x").with_structured_output(Team, strict=False).execute()
    rf = conn.requests[0].settings.responseFormat
    assert "$defs" in rf.schema_ and rf.strict is False and rf.name == "Team"


# --------------------------------------------------------------------------------------------------
# image generation builder (no scripted images: the request is what is checked)


def test_image_generation_request(mesh):
    m = Mesh.from_config({"connections": {"f": {"type": "scripted", "models": [
        {"id": "img", "purposes": ["IMAGE_GENERATION"]}]}}})
    q = m.get_llm("scripted:f:img").new_images_generation()
    with pytest.raises(SettingsError, match="prompt"):
        q.build_request()
    q.with_prompt("a cat").with_prompt("in a hat").with_negative_prompt("dogs").with_original_image(PNG)
    q.height, q.width, q.n = 256, 512, 2
    req = q.build_request()
    # several prompts are merged, comma-separated, for models without weighted prompts
    assert req.prompt == "a cat, in a hat" and req.negative_prompt == "dogs"
    assert [p.text for p in req.prompts] == ["a cat", "in a hat"] and req.mode == "MASK_FREE"
    assert req.images[0].mime_type == "image/png"
    assert (req.height, req.width, req.n) == (256, 512, 2)
