"""Fuzzing the server's request schema: bodies generated from its own ``/openapi.json`` (valid per
the schema, with a real mesh LLM id or a random one) and arbitrary JSON, against the real uvicorn
stack over a scripted connection. Whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import pytest

pytest.importorskip("uvicorn")
hypothesis = pytest.importorskip("hypothesis")
hjs = pytest.importorskip("hypothesis_jsonschema")

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402

OTHER_IDS = ["scripted:fake:chat", "scripted:fake:embed", "scripted:fake:nope", "nope"]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])


@contextmanager
def fuzzable(mesh: Mesh) -> Iterator[RunningServer]:
    """The server over ``mesh``, with its OpenAPI document and an HTTP client."""
    # JSON bodies: the keyless server refuses other content types
    with RunningServer(mesh) as srv, httpx.Client(base_url=srv.url, timeout=3,
                                                  headers={"content-type": "application/json"}) as http:
        srv.doc = http.get("/openapi.json").json()
        srv.http = http
        yield srv


@pytest.fixture(scope="module")
def fuzz_server():
    with fuzzable(Mesh.from_config({"connections": {"fake": {"type": "scripted"}}})) as srv:
        yield srv


def bodies(doc: dict, path: str, llm_id: str) -> st.SearchStrategy:
    """Request bodies for ``path``: schema-valid ones, mostly for ``llm_id`` so that they get past the
    model lookup to translation and the connection, and arbitrary JSON."""
    ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = hjs.from_schema({**ref, "components": doc["components"]})
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                               max_leaves=10)
    ids = st.one_of(st.just(llm_id), st.sampled_from(OTHER_IDS))
    with_ids = st.tuples(valid, ids).map(lambda t: {**t[0], "model": t[1]})
    return st.one_of(with_ids, with_ids, valid, json_values)


def check(srv, path: str, body) -> None:
    r = srv.http.post(path, content=json.dumps(body))
    assert r.status_code < 500, (body, r.status_code, r.text[:500])
    if r.status_code != 200:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


# --------------------------------------------------------------------------------------------------
# the pass-through path (openai_compatible): the same schema, forwarded to the local OpenAI server


@pytest.fixture(scope="module")
def forward_server(_mesh_openai_server_session):
    mesh = Mesh.from_config({"connections": {"vllm": {
        "type": "openai_compatible", "base_url": _mesh_openai_server_session.base_url, "api_key": "test-key",
        "max_retries": 0, "models": [{"id": "qwen"}, {"id": "bge", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}})
    with fuzzable(mesh) as srv:
        assert set(srv.app._forward) == {"openai_compatible:vllm:qwen", "openai_compatible:vllm:bge"}
        yield srv


@pytest.mark.parametrize("server,path,llm_id", [
    ("fuzz_server", "/v1/chat/completions", "scripted:fake:chat"),
    ("fuzz_server", "/v1/embeddings", "scripted:fake:embed"),
    ("forward_server", "/v1/chat/completions", "openai_compatible:vllm:qwen"),
    ("forward_server", "/v1/embeddings", "openai_compatible:vllm:bge"),
], ids=["chat", "embeddings", "chat-pass-through", "embeddings-pass-through"])
def test_fuzz(request, server, path, llm_id):
    srv = request.getfixturevalue(server)

    @FUZZ
    @given(bodies(srv.doc, path, llm_id))
    def run(body):
        check(srv, path, body)

    run()


def test_the_pass_through_checks_are_the_translated_paths(fuzz_server):
    """check_request (pass-through) refuses exactly what completion_request (translation) refuses,
    with the same status, field and message."""
    from pydantic import ValidationError

    from langchain_mesh.server.errors import APIError
    from langchain_mesh.server.models import ChatCompletionRequest
    from langchain_mesh.server.translate import check_request, completion_request

    def outcome(fn, req):
        try:
            fn(req)
        except APIError as e:
            return e.status, e.param, e.message
        return None

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(bodies(fuzz_server.doc, "/v1/chat/completions", "scripted:fake:chat"))
    def run(body):
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError:
            return  # refused before either runs
        assert outcome(check_request, req) == outcome(completion_request, req), body

    run()


def test_known_shapes_accept_only_what_the_whole_validation_accepts():
    """The pass-through's memory of validated request fields (server/validated.py) never takes a body
    that the request model and check_request would refuse, and names the same fields: bodies made of
    small pools of good and bad messages and field values meet fields remembered from earlier ones
    again and again. Each the memory calls known valid (known fields, plain messages) is validated in
    full, and must pass; one with known fields and other messages, checked with only its messages
    (``check_request(req, known)``), must be refused or passed exactly as the whole validation does."""
    from pydantic import ValidationError

    from langchain_mesh.server.errors import APIError
    from langchain_mesh.server.forward import ForwardChatRequest
    from langchain_mesh.server.translate import check_request
    from langchain_mesh.server.validated import KnownShapes

    def full(body, known=None):
        try:
            return check_request(ForwardChatRequest.model_validate_json(json.dumps(body)), known)
        except (ValidationError, APIError) as e:
            return None if isinstance(e, ValidationError) else (e.status, e.param, e.message)

    messages = st.lists(st.sampled_from([
        {"role": "user", "content": "hi"}, {"role": "system", "content": "s", "name": "n"},
        {"role": "assistant", "content": "a"}, {"role": "developer", "content": "d"},
        {"role": "user", "content": "x", "name": 3}, {"role": "tool", "content": "t"},
        {"role": "tool", "content": "t", "tool_call_id": "c1"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "user", "content": "hi", "foo": 1}, {"role": ["user"], "content": "x"}, {"role": "assistant", "content": None},
        {"role": "user"}, {"role": "assistant", "content": "a", "refusal": "r"}, "hi"]), max_size=3)
    pools = {
        "temperature": [0, 0.5, 2, 2.5, -1, "0.5", True, None], "max_tokens": [1, 64, 0, -5, 1.5, "64", None],
        "max_completion_tokens": [32, 0], "stop": ["\n", ["a", "b"], [1], "", None, 5],
        "stream": [True, False, None, 1], "stream_options": [{"include_usage": True}, {"include_usage": "yes"}, {"x": 1}, None, []],
        "n": [1, 2, None], "top_p": [0.9, 1.5, None], "top_k": [20, -1], "seed": [3, -1, 1.0, None],
        "user": ["u1", "u2", 3, None], "response_format": [{"type": "json_object"}, {"type": "text"}, {"type": "bogus"}],
        "reasoning_effort": ["low", "extreme"], "logit_bias": [{"5": 1.0}, {"5": "x"}], "min_p": [0.1, "x"],
        "tools": [[], [{"type": "function", "function": {"name": "f"}}]], "tool_choice": ["auto", "sometimes"]}
    fields = st.dictionaries(st.sampled_from(sorted(pools)), st.integers(0, 9), max_size=4).map(
        lambda d: {k: pools[k][i % len(pools[k])] for k, i in d.items()})
    names = [["temperature"], ["maxTokens"], ["stop"], ["seed"], ["extra"], ["topP"], ["responseFormat"], ["topK"]]
    shapes = KnownShapes()
    hits, partial = [], []

    def named(param_of):
        return [param_of(n) for n in names] if callable(param_of) else param_of

    @settings(max_examples=400, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(messages, fields)
    def run(msgs, extra):
        body = {"model": "scripted:fake:chat", "messages": msgs, **extra}
        param_of, key, plain = shapes.check(body)
        whole = full(body)
        if param_of is not None and plain:
            hits.append(body)
            assert callable(whole), body
            assert named(param_of) == named(whole), body
        elif param_of is not None:  # known fields, messages to check: the same outcome as the whole check
            partial.append(body)
            assert named(full(body, param_of)) == named(whole), body
        elif callable(whole) and key is not None:
            shapes.remember(key, whole)

    run()
    assert len(hits) >= 15 and len(partial) >= 15  # the bodies did meet remembered fields
