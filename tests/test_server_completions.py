"""``POST /v1/completions`` (OpenAI's legacy text completion) in ``mesh serve``, driven by the openai SDK,
and ``MeshLLM`` taking the same path (one user message per prompt)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("openai")

import httpx  # noqa: E402
import openai  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402

KEY = "sk-test-carol"
CHAT, FAKE = "openai:oa:gpt-4o", "scripted:fake:chat"


@pytest.fixture(scope="module")
def gateway(_mesh_openai_server_session):
    mesh = Mesh.from_config({
        "connections": {
            "oa": {"type": "openai", "api_key": "test-key", "base_url": _mesh_openai_server_session.base_url,
                   "max_retries": 0, "timeout": 2, "models": [{"id": "gpt-4o"}]},
            "fake": {"type": "scripted"}},
        "server": {"api_keys": [{"key": KEY, "name": "carol"}]}})
    with RunningServer(mesh) as srv:
        yield srv


@pytest.fixture
def srv(gateway, openai_server):
    gateway.upstream = openai_server
    gateway.fake = gateway.app.mesh.connection("fake")
    gateway.fake._replies.clear()
    gateway.fake.requests.clear()
    return gateway


def client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0)


def test_text_completion_through_an_openai_connection(srv):
    srv.upstream.script(text="Databricks is a data platform.")
    r = client(srv).completions.create(model=CHAT, prompt="what is databricks", temperature=1.0, max_tokens=30,
                                       stop=["\n\n"])
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == CHAT
    assert r.choices[0].text == "Databricks is a data platform." and r.choices[0].index == 0
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    sent = srv.upstream.last_request.json  # the prompt went upstream as one user message, settings mapped
    assert sent["messages"] == [{"role": "user", "content": "what is databricks"}]
    assert sent["max_completion_tokens"] == 30 and sent["temperature"] == 1.0 and sent["stop"] == ["\n\n"]


def test_a_list_of_prompts_is_one_choice_each(srv):
    srv.fake.script(text="one").script(text="two")
    r = client(srv).completions.create(model=FAKE, prompt=["first", "second"])
    assert [(c.index, c.text) for c in r.choices] == [(0, "one"), (1, "two")]
    assert [m.text for q in srv.fake.requests for m in q.messages] == ["first", "second"]


def test_streamed_text_completion_with_usage(srv):
    srv.fake.script(text="Words weave through the code.")
    chunks = list(client(srv).completions.create(model=FAKE, prompt="haiku", stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Words weave through the code."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens > 0


def test_max_tokens_cuts_and_says_length(srv):
    srv.fake.script(text="one two three four five six")
    r = client(srv).completions.create(model=FAKE, prompt="count", max_tokens=2)
    assert r.choices[0].finish_reason == "length"
    assert srv.fake.requests[-1].settings.maxOutputTokens == 2


def test_logprobs_in_the_legacy_layout(srv):
    srv.upstream.script(text="Paris")
    r = client(srv).completions.create(model=CHAT, prompt="Capital of France?", logprobs=2)
    lp = r.choices[0].logprobs
    assert lp.tokens and len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs)
    assert srv.upstream.last_request.json["logprobs"] is True and srv.upstream.last_request.json["top_logprobs"] == 2


@pytest.mark.parametrize("extra, param, words", [
    ({"echo": True}, "echo", "echo is not supported"),
    ({"suffix": "end"}, "suffix", "insertion"),
    ({"best_of": 3}, "best_of", "best_of=3"),
    ({"temperature": 9}, "temperature", "temperature"),
    ({"prompt": [1, 2, 3]}, "prompt", ""),
    ({"n": 2}, "n", ""),
    ({"logit_bias_typo": {}}, "logit_bias_typo", "Unrecognized"),
])
def test_refusals_name_the_field(srv, extra, param, words):
    body = {"model": FAKE, "prompt": "hi", **extra}
    r = httpx.post(srv.url + "/v1/completions", content=json.dumps(body),
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"]


def test_openapi_lists_the_endpoint(srv):
    doc = httpx.get(srv.url + "/openapi.json").json()
    assert doc["paths"]["/v1/completions"]["post"]["operationId"] == "createCompletion"
    assert "CompletionsRequest" in doc["components"]["schemas"]


def test_mesh_llm_takes_the_same_path(srv):
    from langchain_mesh.langchain import MeshLLM

    mesh = srv.app.mesh
    srv.fake.script(text="From the LLM.")
    llm = MeshLLM(model=FAKE, mesh=mesh)
    assert llm.invoke("what is databricks", stop=["\n"], max_tokens=5) == "From the LLM."
    q = srv.fake.requests[-1]
    assert [(m.role, m.text) for m in q.messages] == [("user", "what is databricks")]
    assert q.settings.stopSequences == ["\n"] and q.settings.maxOutputTokens == 5
    # the server builds exactly this request for the same prompt and settings
    from langchain_mesh.server.models import CompletionsRequest
    from langchain_mesh.server.text_completion import text_requests

    [served], _ = text_requests(CompletionsRequest(model=FAKE, prompt="what is databricks", stop=["\n"], max_tokens=5))
    assert served.model_dump() == q.model_dump()
