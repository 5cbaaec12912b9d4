"""The shared types: messages, tools, settings validation (through the completion builder), responses."""

from __future__ import annotations

import base64
import json

import pytest

from langchain_mesh import Mesh
from langchain_mesh.connections.base import ToolCallAssembler, collect_stream
from langchain_mesh.errors import MeshError, SettingsError, StreamInterruptedError, ToolSchemaError
from langchain_mesh.schema import (
    CompletionResponse,
    CompletionSettings,
    FunctionCall,
    FunctionSpec,
    ImagePart,
    ImageURLPart,
    Message,
    ResponseFormat,
    StreamChunk,
    StreamFooter,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    sniff_image_mime,
    validate_settings,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
GIF = b"GIF89a" + b"\x00" * 16
WEBP = b"RIFF\x00\x00\x00\x00WEBP" + b"\x00" * 16

MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply integers",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "The first integer to multiply"},
                "b": {"type": "integer", "description": "The other integer to multiply"},
            },
            "required": ["a", "b"],
        },
    },
}


def tool(name="multiply", parameters=None, **fn):
    spec = {"name": name, **fn}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"type": "function", "function": spec}


@pytest.fixture
def mesh():
    m = Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})
    yield m
    m.close()


@pytest.fixture
def conn(mesh):
    return mesh.connection("fake")


@pytest.fixture
def completion(mesh):
    return mesh.get_llm("scripted:fake:chat").new_completion().with_message("hello")


# --------------------------------------------------------------------------------------------------
# settings through the builder: good values reach the connection validated


GOOD_SETTINGS = [
    ("temperature", 0, 0.0),
    ("temperature", 0.2, 0.2),
    ("temperature", 2, 2.0),
    ("topK", 1, 1),
    ("topK", 40, 40),
    ("topP", 0.3, 0.3),
    ("topP", 1, 1.0),
    ("maxOutputTokens", 2048, 2048),
    ("stopSequences", [".", "\n"], [".", "\n"]),
    ("stopSequences", "END", ["END"]),  # a bare string is one stop sequence
    ("presencePenalty", 0.6, 0.6),
    ("presencePenalty", -2, -2.0),
    ("frequencyPenalty", 0.9, 0.9),
    ("frequencyPenalty", 2, 2.0),
    ("logitBias", {1489: 60}, {1489: 60.0}),
    ("logitBias", {"1489": -100}, {1489: -100.0}),  # JSON keys arrive as strings
    ("logProbs", True, True),
    ("seed", 7, 7),
]


@pytest.mark.parametrize("name, value, expected", GOOD_SETTINGS)
def test_good_setting_reaches_connection(completion, conn, name, value, expected):
    completion.settings[name] = value
    resp = completion.execute()
    assert resp.success
    sent = conn.requests[-1].settings
    assert getattr(sent, name) == expected
    assert sent.to_dict()[name] == expected


def test_seed_settings_all_together(completion, conn):
    # the seed's own example block, verbatim values
    completion.settings.update({
        "temperature": 0.7, "topK": 10, "topP": 0.3, "maxOutputTokens": 2048, "stopSequences": [".", "\n"],
        "presencePenalty": 0.6, "frequencyPenalty": 0.9, "logitBias": {1489: 60}, "logProbs": True,
        "topLogProbs": 3,
    })
    completion.execute()
    s = conn.requests[-1].settings
    assert s.topLogProbs == 3 and s.logProbs is True and s.logitBias == {1489: 60.0}


def test_tools_tool_choice_and_response_format_accepted(completion, conn):
    completion.settings["tools"] = [MULTIPLY]
    completion.settings["toolChoice"] = {"type": "tool_name", "name": "multiply"}
    completion.settings["responseFormat"] = {"type": "json"}
    completion.execute()
    s = conn.requests[-1].settings
    assert s.tools[0].name == "multiply"
    assert s.tools[0].function.parameters["required"] == ["a", "b"]
    assert s.toolChoice == ToolChoice(type="tool_name", name="multiply")
    assert s.responseFormat.type == "json"


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "required"}, {"type": "none"}])
def test_seed_tool_choices(completion, conn, choice):
    completion.settings["tools"] = [MULTIPLY]
    completion.settings["toolChoice"] = choice
    completion.execute()
    assert conn.requests[-1].settings.toolChoice.type == choice["type"]


@pytest.mark.parametrize(
    "bare, expected",
    [("auto", ToolChoice(type="auto")), ("none", ToolChoice(type="none")),
     ("required", ToolChoice(type="required")), ("multiply", ToolChoice(type="tool_name", name="multiply"))],
)
def test_bare_tool_choice_spellings(bare, expected):
    s = validate_settings({"tools": [MULTIPLY], "toolChoice": bare})
    assert s.toolChoice == expected


# --------------------------------------------------------------------------------------------------
# settings through the builder: bad values are refused before anything is sent


BAD_SETTINGS = [
    ("temperature", "hot"),
    ("temperature", -0.1),
    ("temperature", 2.5),
    ("temperature", True),
    ("temperature", [0.5]),
    ("topK", 0),
    ("topK", 1.5),
    ("topK", "many"),
    ("topP", 0),
    ("topP", 1.5),
    ("topP", "high"),
    ("maxOutputTokens", 0),
    ("maxOutputTokens", -5),
    ("maxOutputTokens", 10.5),
    ("maxOutputTokens", True),
    ("stopSequences", [1, 2]),
    ("stopSequences", 5),
    ("stopSequences", {"a": "b"}),
    ("presencePenalty", 3),
    ("presencePenalty", -2.5),
    ("presencePenalty", "x"),
    ("frequencyPenalty", 2.1),
    ("frequencyPenalty", "x"),
    ("logitBias", {1489: 101}),
    ("logitBias", {1489: -500}),
    ("logitBias", {"not-a-token": 5}),
    ("logitBias", {1489: "big"}),
    ("logitBias", [1489, 60]),
    ("logProbs", "maybe"),
    ("logProbs", [True]),
    ("topLogProbs", 21),
    ("topLogProbs", -1),
    ("topLogProbs", "three"),
    ("tools", "multiply"),
    ("tools", {"name": "multiply"}),
    ("tools", [{"type": "retrieval", "function": {"name": "f"}}]),
    ("tools", [{"type": "function"}]),
    ("toolChoice", {"type": "sometimes"}),
    ("toolChoice", {"type": "tool_name"}),  # no name
    ("toolChoice", 3),
    ("responseFormat", {"type": "xml"}),
    ("responseFormat", "json"),
    ("responseFormat", {"type": "json", "schema": "not a schema"}),
    ("responseFormat", {"type": "json", "schema": {"type": "strng"}}),
]


@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_bad_setting_names_the_setting(completion, conn, name, value):
    if name in ("topLogProbs",):
        completion.settings["logProbs"] = True
    if name == "toolChoice":
        completion.settings["tools"] = [MULTIPLY]
    completion.settings[name] = value
    with pytest.raises(SettingsError) as ei:
        completion.execute()
    assert name in ei.value.settings
    assert name in str(ei.value)
    assert conn.requests == []  # nothing reached the connection


def test_settings_error_is_value_error_and_mesh_error():
    with pytest.raises(ValueError):
        validate_settings({"temperature": "hot"})
    with pytest.raises(MeshError):
        validate_settings({"temperature": "hot"})


def test_several_bad_settings_reported_together():
    with pytest.raises(SettingsError) as ei:
        validate_settings({"temperature": 9, "topK": 0, "maxOutputTokens": "lots"})
    assert set(ei.value.settings) == {"temperature", "topK", "maxOutputTokens"}
    for name in ("temperature", "topK", "maxOutputTokens"):
        assert name in str(ei.value)


@pytest.mark.parametrize(
    "typo, meant",
    [("tempreature", "temperature"), ("max_output_tokens", "maxOutputTokens"), ("topk", "topK"),
     ("stopSequence", "stopSequences"), ("toolchoice", "toolChoice"), ("logprobs", "logProbs"),
     ("TEMPERATURE", "temperature"), ("top_p", "topP"), ("max_tokens", "maxOutputTokens"), ("stop", "stopSequences"),
     ("response_format", "responseFormat"), ("logit_bias", "logitBias")],
)
def test_misspelt_setting_did_you_mean(completion, conn, typo, meant):
    completion.settings[typo] = 1
    with pytest.raises(SettingsError) as ei:
        completion.execute()
    assert ei.value.settings == [typo]
    assert f"unknown setting {typo!r}" in str(ei.value)
    assert f"did you mean {meant!r}" in str(ei.value)
    assert conn.requests == []


def test_unknown_setting_without_close_match_lists_known_ones():
    with pytest.raises(SettingsError) as ei:
        validate_settings({"zzzzzz": 1})
    assert "known settings" in str(ei.value)
    assert "temperature" in str(ei.value)


def test_extra_passes_connection_specific_settings():
    s = validate_settings({"extra": {"reasoning_effort": "low"}})
    assert s.extra == {"reasoning_effort": "low"}


def test_top_log_probs_needs_log_probs():
    with pytest.raises(SettingsError) as ei:
        validate_settings({"topLogProbs": 3})
    assert "topLogProbs" in ei.value.settings
    assert "logProbs" in str(ei.value)
    validate_settings({"topLogProbs": 3, "logProbs": True})
    validate_settings({"topLogProbs": 0})  # zero asks for nothing


@pytest.mark.parametrize("choice", [{"type": "required"}, {"type": "tool_name", "name": "multiply"}, "multiply"])
def test_tool_choice_demanding_a_call_needs_tools(choice):
    with pytest.raises(SettingsError) as ei:
        validate_settings({"toolChoice": choice})
    assert "toolChoice" in ei.value.settings
    assert "no tools" in str(ei.value)


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "none"}])
def test_non_demanding_tool_choice_without_tools_is_fine(choice):
    assert validate_settings({"toolChoice": choice}).toolChoice.type == choice["type"]


def test_tool_choice_naming_unknown_tool(completion, conn):
    completion.settings["tools"] = [MULTIPLY]
    completion.settings["toolChoice"] = {"type": "tool_name", "name": "divide"}
    with pytest.raises(SettingsError) as ei:
        completion.execute()
    assert "toolChoice" in ei.value.settings
    msg = str(ei.value)
    assert "'divide'" in msg and "multiply" in msg
    assert conn.requests == []


def test_validate_settings_passthrough_and_type_check():
    s = CompletionSettings(temperature=0.1)
    assert validate_settings(s) is s
    assert validate_settings(None) == CompletionSettings()
    assert validate_settings({}).to_dict() == {}
    with pytest.raises(SettingsError, match="must be a dict"):
        validate_settings([("temperature", 0.1)])


def test_to_dict_leaves_out_unset():
    s = validate_settings({"temperature": 0.5, "responseFormat": {"type": "json", "schema": {"type": "object"}}})
    d = s.to_dict()
    assert d["temperature"] == 0.5
    assert "topK" not in d
    assert d["responseFormat"]["schema"] == {"type": "object"}  # by alias, not schema_


# --------------------------------------------------------------------------------------------------
# tool schemas


@pytest.mark.parametrize(
    "bad_tool, needle",
    [
        (tool("bad name!"), "tool name"),
        (tool(""), "tool name"),
        (tool("x" * 65), "tool name"),
        (tool("multiply", {"type": "array", "items": {"type": "integer"}}), "type 'object'"),
        (tool("multiply", {"type": "string"}), "type 'object'"),
        (tool("multiply", {"type": "object", "properties": {"a": {"type": "int"}}}), "parameters.properties.a.type"),
        (tool("multiply", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]}),
         "'b'"),
        (tool("multiply", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": "a"}),
         "required must be a list"),
        (tool("multiply", {"type": "object", "properties": [{"a": {"type": "integer"}}]}), "properties must be an object"),
        (tool("multiply", {"type": "object", "properties": {"a": "integer"}}), "parameters.properties.a"),
        (tool("multiply", {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "float"}}}}),
         "parameters.properties.xs.items.type"),
        (tool("multiply", {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "bogus"}]}}}),
         "anyOf[1]"),
        (tool("multiply", {"type": "object", "properties": {"v": {"anyOf": {"type": "string"}}}}), "anyOf must be a list"),
        (tool("multiply", {"type": "object", "properties": {"v": {"type": "string", "enum": "abc"}}}), "enum must be a list"),
        (tool("multiply", {"type": "object", "$defs": {"Pt": {"type": "point"}}}), "$defs.Pt"),
    ],
)
def test_malformed_tool_schemas_raise_tool_schema_error(completion, conn, bad_tool, needle):
    completion.settings["tools"] = [MULTIPLY, bad_tool]
    with pytest.raises(ToolSchemaError) as ei:
        completion.execute()
    assert needle in str(ei.value)
    assert ei.value.settings == ["tools"]
    assert isinstance(ei.value, SettingsError)
    assert conn.requests == []


def test_tool_schema_error_names_the_tool_position():
    with pytest.raises(ToolSchemaError) as ei:
        validate_settings({"tools": [MULTIPLY, tool("bad name!")]})
    assert "tools.1" in str(ei.value)


def test_tool_schema_error_from_function_spec_directly():
    from pydantic import ValidationError

    # the raw pydantic model wraps the error (ToolSchemaError is a ValueError); the message survives
    with pytest.raises(ValidationError, match="tool name"):
        FunctionSpec(name="has space")


@pytest.mark.parametrize(
    "good",
    [
        tool("get_weather"),  # parameters default to an empty object
        tool("a.b-c_d", {"type": "object", "properties": {}}),
        tool("x" * 64, {"properties": {"q": {"type": "string"}}}),  # type defaults to object
        tool("multi", {"type": "object", "properties": {"v": {"type": ["string", "null"]}},
                       "additionalProperties": False}),
        tool("nested", {"type": "object", "properties": {"pts": {"type": "array", "items": {
            "type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}}}),
        tool("anyof", {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}),
        tool("boolschema", {"type": "object", "properties": {"anything": True}}),
        tool("refs", {"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}},
                      "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}}}}}),
    ],
)
def test_well_formed_tools_accepted(good):
    s = validate_settings({"tools": [good]})
    assert s.tools[0].name == good["function"]["name"]
    assert s.tools[0].function.parameters.get("type", "object") == "object"


def test_tool_defaults():
    s = validate_settings({"tools": [tool("ping")]})
    assert s.tools[0].function.parameters == {"type": "object", "properties": {}}
    assert s.tools[0].type == "function"


# --------------------------------------------------------------------------------------------------
# response format


def test_response_format_alias_and_defaults():
    rf = ResponseFormat.model_validate({"schema": {"type": "object"}})
    assert rf.type == "json"
    assert rf.schema_ == {"type": "object"}
    assert rf.strict is False
    assert rf.model_dump(by_alias=True, exclude_none=True)["schema"] == {"type": "object"}


# --------------------------------------------------------------------------------------------------
# messages and parts


def test_message_text_and_parts():
    m = Message(role="user", content="hi")
    assert m.text == "hi"
    assert m.parts == [TextPart(text="hi")]
    mp = Message(role="user", content=[TextPart(text="look: "), ImagePart.from_bytes(PNG), TextPart(text="ok")])
    assert mp.text == "look: ok"
    assert len(mp.parts) == 3
    assert Message(role="assistant").text == ""
    assert Message(role="assistant").parts == []


def test_tool_message_needs_call_id():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="tool_call_id"):
        Message(role="tool", content="18")
    assert Message(role="tool", content="18", tool_call_id="c1").tool_call_id == "c1"


def test_only_assistant_carries_tool_calls():
    from pydantic import ValidationError

    call = ToolCall(id="c", function=FunctionCall(name="f"))
    with pytest.raises(ValidationError, match="assistant"):
        Message(role="user", tool_calls=[call])
    assert Message(role="assistant", tool_calls=[call]).tool_calls == [call]


def test_bad_role_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Message(role="robot", content="x")


@pytest.mark.parametrize("data, mime", [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"),
                                        (WEBP, "image/webp")])
def test_sniff_image_mime(data, mime):
    assert sniff_image_mime(data) == mime
    assert ImagePart.from_bytes(data).mime_type == mime


def test_sniff_unknown_image_asks_for_mime():
    with pytest.raises(ValueError, match="mime_type"):
        sniff_image_mime(b"not an image at all")
    assert ImagePart.from_bytes(b"raw", "image/bmp").mime_type == "image/bmp"


def test_image_part_base64_and_data_url_round_trip():
    part = ImagePart.from_bytes(PNG)
    assert part.base64 == base64.b64encode(PNG).decode()
    assert part.data_url.startswith("data:image/png;base64,")
    back = ImagePart.from_data_url(part.data_url)
    assert back == part
    # JSON round trip carries base64 text
    again = ImagePart.model_validate({"type": "image", "data": part.base64, "mime_type": "image/png"})
    assert again.data == PNG
    with pytest.raises(ValueError):
        ImagePart.from_data_url("https://example.com/cat.png")


def test_message_with_parts_json_round_trip():
    m = Message(role="user", content=[TextPart(text="what is this?"), ImagePart.from_bytes(PNG),
                                      ImageURLPart(url="https://example.com/a.png", detail="low")])
    back = Message.model_validate_json(m.model_dump_json())
    assert back == m
    assert isinstance(back.content[1], ImagePart) and back.content[1].data == PNG
    assert isinstance(back.content[2], ImageURLPart)


# --------------------------------------------------------------------------------------------------
# tool calls, responses, usage, stream events


def test_tool_call_indexes_like_the_seed_dicts():
    call = ToolCall(id="call_1", function=FunctionCall(name="multiply", arguments='{"a":3,"b":6}'))
    assert call["id"] == "call_1"
    assert call["type"] == "function"
    assert call["function"]["name"] == "multiply"
    assert json.loads(call["function"]["arguments"]) == {"a": 3, "b": 6}
    assert call.get("missing", "dflt") == "dflt"
    assert call.function.parsed_arguments() == {"a": 3, "b": 6}
    assert FunctionCall(name="f", arguments="").parsed_arguments() == {}


def test_usage_total_and_sum():
    u = Usage(input_tokens=3, output_tokens=4)
    assert u.total_tokens == 7
    v = Usage(input_tokens=1, output_tokens=1, cached_input_tokens=1)
    s = u + v
    assert (s.input_tokens, s.output_tokens, s.total_tokens, s.cached_input_tokens) == (4, 5, 9, 1)
    assert s.reasoning_tokens is None


def test_completion_response_json_and_raw_excluded():
    r = CompletionResponse(text='{"a": 1}', raw=object())
    assert r.json == {"a": 1}
    assert "raw" not in r.model_dump()
    assert r.success is True and r.error is None


def test_stream_chunk_and_footer_data():
    c = StreamChunk(text="Hel")
    assert c.data == {"text": "Hel"}
    d = StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, id="c1", name="multiply", arguments='{"a"')])
    assert d.data == {"toolCalls": [{"index": 0, "id": "c1", "type": "function",
                                     "function": {"name": "multiply", "arguments": '{"a"'}}]}
    f = StreamFooter(finish_reason="stop", usage=Usage(input_tokens=2, output_tokens=3))
    assert f.data["finishReason"] == "stop"
    assert f.data["usage"]["total_tokens"] == 5
    assert "toolCalls" not in f.data


def test_tool_call_assembler_by_index():
    asm = ToolCallAssembler()
    asm.add(StreamChunk(tool_call_deltas=[ToolCallDelta(index=1, id="b", name="divide", arguments='{"x":')]))
    asm.add(StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, id="a", name="multiply", arguments='{"a":3,')]))
    asm.add(StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, arguments='"b":6}'),
                                          ToolCallDelta(index=1, arguments="1}")]))
    calls = asm.calls()
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("a", "multiply", '{"a":3,"b":6}'), ("b", "divide", '{"x":1}')]


def test_collect_stream_and_missing_footer():
    events = [StreamChunk(text="Hello "), StreamChunk(text="world"),
              StreamChunk(tool_call_deltas=[ToolCallDelta(index=0, id="c", name="f", arguments="{}")]),
              StreamFooter(finish_reason="tool_calls", usage=Usage(input_tokens=1, output_tokens=2))]
    r = collect_stream(iter(events))
    assert r.text == "Hello world"
    assert r.finish_reason == "tool_calls"
    assert r.tool_calls[0].function.name == "f"
    assert r.usage.total_tokens == 3
    with pytest.raises(StreamInterruptedError) as ei:
        collect_stream(iter(events[:2]))
    assert ei.value.partial_text == "Hello world"
    assert ei.value.retryable is True
