"""LLM ids: ``<connection type>:<connection name>:<model>``, the model part may hold ':'."""

from __future__ import annotations

import pytest

from langchain_mesh.errors import InvalidLLMIdError, MeshError
from langchain_mesh.ids import LLMId, format_llm_id, parse_llm_id


@pytest.mark.parametrize(
    "llm_id, expected",
    [
        ("openai:myopenai:gpt-4o", ("openai", "myopenai", "gpt-4o")),
        ("huggingfacelocal:local:all-MiniLM-L6-v2", ("huggingfacelocal", "local", "all-MiniLM-L6-v2")),
        # Bedrock model ids carry a version after ':'
        ("bedrock:mybedrock:anthropic.claude-3-sonnet-20240229-v1:0",
         ("bedrock", "mybedrock", "anthropic.claude-3-sonnet-20240229-v1:0")),
        # local model ids carry several ':'-separated options
        ("huggingfacelocal:hf:meta-llama/Meta-Llama-3.1-8B-Instruct:TEXT_GENERATION_LLAMA_2:promptDriven=true",
         ("huggingfacelocal", "hf", "meta-llama/Meta-Llama-3.1-8B-Instruct:TEXT_GENERATION_LLAMA_2:promptDriven=true")),
        ("custom:c:model::with::doubles", ("custom", "c", "model::with::doubles")),
    ],
)
def test_parse_keeps_colons_in_model(llm_id, expected):
    parsed = parse_llm_id(llm_id)
    assert isinstance(parsed, LLMId)
    assert tuple(parsed) == expected
    assert parsed.connection_type == expected[0]
    assert parsed.connection_name == expected[1]
    assert parsed.model == expected[2]


@pytest.mark.parametrize(
    "llm_id",
    [
        "openai:myopenai:gpt-4o",
        "bedrock:mybedrock:anthropic.claude-3-sonnet-20240229-v1:0",
        "huggingfacelocal:hf:meta-llama/Meta-Llama-3.1-8B-Instruct:TEXT_GENERATION_LLAMA_2:promptDriven=true",
    ],
)
def test_round_trip(llm_id):
    parsed = parse_llm_id(llm_id)
    assert str(parsed) == llm_id
    assert format_llm_id(*parsed) == llm_id
    assert parse_llm_id(format_llm_id(*parsed)) == parsed


def test_tuple_unpacking():
    ctype, cname, model = parse_llm_id("openai:myopenai:gpt-4o")
    assert (ctype, cname, model) == ("openai", "myopenai", "gpt-4o")


@pytest.mark.parametrize(
    "bad",
    ["", "gpt-4o", "openai:gpt-4o", "openai:myopenai:", ":myopenai:gpt-4o", "openai::gpt-4o",
     "::", " : : ", "openai:   :gpt-4o"],
)
def test_bad_ids_raise_with_helpful_message(bad):
    with pytest.raises(InvalidLLMIdError) as ei:
        parse_llm_id(bad)
    msg = str(ei.value)
    assert repr(bad) in msg
    assert "<connection type>:<connection name>:<model>" in msg
    assert "openai:myopenai:gpt-4o" in msg  # an example of a good id


def test_invalid_id_error_is_a_value_error_and_mesh_error():
    with pytest.raises(ValueError):
        parse_llm_id("nope")
    with pytest.raises(MeshError):
        parse_llm_id("nope")


@pytest.mark.parametrize("bad", [None, 42, b"openai:x:y", ["openai", "x", "y"]])
def test_non_string_ids(bad):
    with pytest.raises(InvalidLLMIdError, match="must be a string"):
        parse_llm_id(bad)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("", "c", "m"), "connection type"),
        (("a:b", "c", "m"), "connection type"),
        (("t", "", "m"), "connection name"),
        (("t", "c:d", "m"), "connection name"),
        (("t", "c", ""), "model"),
    ],
)
def test_format_rejects_bad_parts(args, needle):
    with pytest.raises(InvalidLLMIdError, match=needle):
        format_llm_id(*args)


def test_format_allows_colons_in_model():
    assert format_llm_id("bedrock", "b", "x:0") == "bedrock:b:x:0"


def test_public_exports():
    import langchain_mesh

    assert langchain_mesh.parse_llm_id is parse_llm_id
    assert langchain_mesh.format_llm_id is format_llm_id
