"""Guardrails on the three faces (builder, LangChain, gateway), streamed and not: PII redaction and
blocking, terms, size caps refused before any provider call, JSON repair-or-refuse, an LLM judge,
streaming redaction across chunk boundaries with a content_filter stop."""

from __future__ import annotations

import asyncio
import json

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import GuardrailError
from langchain_mesh.policies.chain import Call
from langchain_mesh.policies.guardrails.rules import iban_ok, luhn_ok, pii_rule
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.schema import CompletionRequest, EmbeddingRequest, Message, StreamChunk, StreamFooter

CARD = "4111 1111 1111 1111"  # a Luhn-valid test number
CHAT = "scripted:fake:chat"


def _mesh(guardrails, **extra):
    return Mesh.from_config({"connections": {"fake": {"type": "scripted", "models": [
        {"id": "chat"}, {"id": "judge"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}},
        "guardrails": guardrails, **extra})


def _req(text):
    return CompletionRequest(messages=[Message(role="user", content=text)])


# ---- detectors ---------------------------------------------------------------------------------------

def test_detectors_confirm_checksums_and_numbers():
    rule = pii_rule("pii", "redact", frozenset({"input"}))
    text = (f"card {CARD}, not 4111 1111 1111 1112; mail jo.doe@example.org; call +1 415-555-2671, "
            "not 2024-01-15; iban DE89 3704 0044 0532 0130 00; key sk-proj-abcdefghijklmnop123456")
    assert rule.redact(text, rule.find(text)) == (
        "card [CREDIT_CARD], not 4111 1111 1111 1112; mail [EMAIL]; call [PHONE], not 2024-01-15; "
        "iban [IBAN]; key [API_KEY]")
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


# ---- builder face --------------------------------------------------------------------------------------

def test_input_redaction_reaches_the_provider_redacted_and_is_reported():
    mesh = _mesh([{"name": "pii", "type": "pii", "stage": "input"}])
    conn = mesh.connection("fake")
    resp = mesh.get_llm(CHAT).new_completion().with_message(f"my card is {CARD}, mail a@b.io").execute()
    assert conn.requests[-1].messages[0].content == "my card is [CREDIT_CARD], mail [EMAIL]"
    assert [(h.name, h.action, h.stage, h.detail) for h in resp.meta.guardrails] == [
        ("pii", "redact", "input", "CREDIT_CARD,EMAIL")]
    assert CARD not in resp.meta.model_dump_json()  # what fired, never what it matched


def test_block_raises_before_any_provider_call_and_flag_only_records():
    mesh = _mesh([{"name": "no-cards", "type": "pii", "action": "block", "entities": ["CREDIT_CARD"]},
                  {"name": "mails", "type": "pii", "action": "flag", "entities": ["EMAIL"]}])
    conn = mesh.connection("fake")
    with pytest.raises(GuardrailError) as e:
        mesh.get_llm(CHAT).new_completion().with_message(f"charge {CARD}").execute()
    assert e.value.guardrail == "no-cards" and e.value.stage == "input" and conn.requests == []
    resp = mesh.get_llm(CHAT).new_completion().with_message("write to a@b.io").execute()
    assert resp.text == "write to a@b.io"  # flagged, untouched
    assert [(h.name, h.action) for h in resp.meta.guardrails] == [("mails", "flag"), ("mails", "flag")]


def test_output_block_withholds_the_answer_with_content_filter():
    mesh = _mesh([{"name": "words", "type": "terms", "stage": "output", "terms": ["Project Falcon"]}])
    mesh.connection("fake").script(text="It is about project falcon, of course.")
    resp = mesh.get_llm(CHAT).new_completion().with_message("what is it?").execute()
    assert resp.text == "" and resp.finish_reason == "content_filter"
    assert resp.meta.guardrails[0].action == "block" and resp.meta.guardrails[0].detail == "TERM"


def test_size_caps_refuse_a_1mb_prompt_before_any_provider_call(openai_server):
    mesh = Mesh.from_config({
        "connections": {"oa": {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url,
                               "max_retries": 0, "models": [{"id": "gpt-4o"}]}},
        "guardrails": [{"name": "caps", "type": "size", "max_tokens": 100_000, "max_messages": 3}]})
    llm = mesh.get_llm("openai:oa:gpt-4o")
    big = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB
    with pytest.raises(GuardrailError, match="max_tokens=100000") as e:
        llm.new_completion().with_message(big).execute()
    assert e.value.guardrail == "caps" and e.value.detail == "max_tokens"
    with pytest.raises(GuardrailError, match="max_messages"):
        list(mesh.stream(llm, CompletionRequest(messages=[Message(role="user", content="hi")] * 4)))
    assert openai_server.requests == []  # the provider's request log: nothing was sent
    openai_server.script(text="fine")
    assert llm.new_completion().with_message("short").execute().text == "fine"
    assert len(openai_server.requests) == 1


def test_guardrails_apply_per_llm_and_per_key():
    mesh = _mesh([{"name": "team-b-only", "type": "terms", "terms": ["secret"], "keys": ["team-b*"],
                   "llms": ["scripted:fake:ch*"]}])
    llm = mesh.get_llm(CHAT)
    assert llm.new_completion().with_message("a secret").execute().text == "a secret"  # no key: not this caller
    with call_scope(key="team-b-batch"), pytest.raises(GuardrailError):
        llm.new_completion().with_message("a secret").execute()
    with call_scope(key="team-b-batch"):  # another LLM: not matched by llms
        assert mesh.get_llm("scripted:fake:judge").new_completion().with_message("a secret").execute().text


def test_embedding_inputs_are_redacted():
    mesh = _mesh([{"name": "pii", "type": "pii"}])
    mesh.embed(mesh.get_llm("scripted:fake:emb"), EmbeddingRequest(texts=["mail x@y.com", "plain"]))
    assert mesh.connection("fake").embedding_requests[-1].texts == ["mail [EMAIL]", "plain"]


# ---- JSON and judge --------------------------------------------------------------------------------------

def test_json_repair_and_refuse():
    schema = {"type": "object", "required": ["answer"]}
    mesh = _mesh([{"name": "json-out", "type": "json", "schema": schema, "on_invalid": "repair"}])
    conn = mesh.connection("fake")
    conn.script(text='Here you go:\n```json\n{"answer": 42}\n```')
    resp = mesh.get_llm(CHAT).new_completion().with_message("q").execute()
    assert json.loads(resp.text) == {"answer": 42} and resp.meta.guardrails[0].action == "repair"
    conn.script(text='{"other": 1}')  # JSON, but not the schema's: nothing to repair it into
    with pytest.raises(GuardrailError, match="schema") as e:
        mesh.get_llm(CHAT).new_completion().with_message("q").execute()
    assert e.value.stage == "output"
    conn.script(text='{"answer": "streamed"}  trailing words')
    events = list(mesh.stream(mesh.get_llm(CHAT), _req("q")))
    assert "".join(e.text or "" for e in events[:-1]) == '{"answer": "streamed"}'


def test_llm_judge_on_input_and_output():
    mesh = _mesh([{"name": "safety", "type": "judge", "llm": "scripted:fake:judge", "llms": [CHAT],
                   "policy": "No talk about weapons."}])
    conn = mesh.connection("fake")
    conn.script(text="BLOCK")
    with pytest.raises(GuardrailError, match="safety"):
        mesh.get_llm(CHAT).new_completion().with_message("how to build a weapon").execute()
    judged = conn.requests[-1]
    assert "No talk about weapons." in judged.messages[0].content and "<text>" in judged.messages[1].content
    assert judged.settings.temperature == 0
    conn.script(text="ALLOW").script(text="an answer about weapons").script(text="BLOCK")
    resp = mesh.get_llm(CHAT).new_completion().with_message("tell me").execute()
    assert resp.finish_reason == "content_filter" and resp.text == ""
    assert [(h.stage, h.action) for h in resp.meta.guardrails] == [("output", "block")]


# ---- streams -----------------------------------------------------------------------------------------------

def _guard_stream(mesh, pieces):
    """The guardrail layer of CHAT over a provider stream cut into exactly ``pieces``."""
    llm = mesh.get_llm(CHAT)
    (layer,) = mesh._chain(llm)
    call = Call(mesh, llm, "stream", _req("x"))

    def provider():
        yield from (StreamChunk(text=p) for p in pieces)
        yield StreamFooter(finish_reason="stop")

    return list(layer.stream(call, provider)), call


def test_a_card_number_split_across_two_chunks_is_still_redacted():
    mesh = _mesh([{"name": "pii", "type": "pii", "stage": "output"}])
    events, call = _guard_stream(mesh, ["Your card: 4111 11", "11 1111 1111 is on file. Bye"])
    texts = [e.text for e in events if isinstance(e, StreamChunk)]
    assert "".join(texts) == "Your card: [CREDIT_CARD] is on file. Bye"
    assert texts[0] == "Your card: "  # only what a card could still reach was held back
    assert not any(any(d in t for d in ("4111", "1111")) for t in texts)
    assert [(h.name, h.detail) for h in call.meta.guardrails] == [("pii", "CREDIT_CARD")]


def test_a_blocked_stream_stops_with_content_filter():
    mesh = _mesh([{"name": "words", "type": "terms", "stage": "output", "terms": ["falcon"]}])
    events, _call = _guard_stream(mesh, ["The code name ", "is fal", "con and more", " text"])
    assert "".join(e.text for e in events if isinstance(e, StreamChunk)) == "The code name is "
    assert isinstance(events[-1], StreamFooter) and events[-1].finish_reason == "content_filter"


def test_streams_on_the_builder_sync_and_async():
    mesh = _mesh([{"name": "pii", "type": "pii"}])
    mesh.connection("fake").script(text=f"card {CARD} ok")
    events = list(mesh.get_llm(CHAT).new_completion().with_message("x").execute_streamed())
    assert "".join(e.text or "" for e in events[:-1]) == "card [CREDIT_CARD] ok"
    assert events[-1].meta.guardrails[0].stage == "output"

    async def go():
        mesh.connection("fake").script(text=f"mail a@b.io and {CARD}")
        return [e async for e in mesh.get_llm(CHAT).new_completion().with_message("x").aexecute_streamed()]

    events = asyncio.run(go())
    assert "".join(e.text or "" for e in events[:-1]) == "mail [EMAIL] and [CREDIT_CARD]"


# ---- LangChain face ------------------------------------------------------------------------------------------

def test_langchain_chat_model_invoke_and_stream():
    pytest.importorskip("langchain_core")
    mesh = _mesh([{"name": "pii", "type": "pii"}, {"name": "words", "type": "terms", "terms": ["forbidden"],
                                                   "stage": "input"}])
    chat = mesh.get_llm(CHAT).as_langchain_chat_model()
    mesh.connection("fake").script(text=f"stored {CARD}")
    assert chat.invoke("hello").content == "stored [CREDIT_CARD]"
    mesh.connection("fake").script(text=f"again {CARD} here")
    assert "".join(c.content for c in chat.stream("hello")) == "again [CREDIT_CARD] here"
    with pytest.raises(GuardrailError, match="words"):
        chat.invoke("this is forbidden")


# ---- gateway face -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(_mesh_openai_server_session):
    pytest.importorskip("uvicorn")
    from test_server_harness import RunningServer

    mesh = Mesh.from_config({
        "connections": {"oa": {"type": "openai", "api_key": "test-key",
                               "base_url": _mesh_openai_server_session.base_url,
                               "max_retries": 0, "timeout": 5, "models": [{"id": "gpt-4o"}]}},
        "guardrails": [{"name": "pii", "type": "pii"},
                       {"name": "caps", "type": "size", "max_chars": 500_000},
                       {"name": "words", "type": "terms", "terms": ["falcon"], "stage": "input"},
                       {"name": "out-words", "type": "terms", "terms": ["classified"], "stage": "output"}]})
    with RunningServer(mesh) as srv:
        yield srv


def test_gateway_redacts_both_ways_streamed_and_not(gateway, openai_server):
    import openai

    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    openai_server.script(text=f"your card {CARD} is saved")
    r = client.chat.completions.create(model="openai:oa:gpt-4o",
                                       messages=[{"role": "user", "content": f"save {CARD}"}])
    assert r.choices[0].message.content == "your card [CREDIT_CARD] is saved"
    assert openai_server.last_request.json["messages"][0]["content"] == "save [CREDIT_CARD]"
    openai_server.script(text=f"streamed {CARD} done")
    chunks = list(client.chat.completions.create(model="openai:oa:gpt-4o", stream=True,
                                                 messages=[{"role": "user", "content": "go"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed [CREDIT_CARD] done" and "1111" not in text


def test_gateway_refusals_are_400_with_the_guardrails_name(gateway, openai_server):
    import httpx

    for content, name, stream in (("about falcon", "words", False), ("x" * 1_000_000, "caps", True)):
        r = httpx.post(gateway.base_url + "/chat/completions", timeout=30, json={
            "model": "openai:oa:gpt-4o", "stream": stream, "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "content_policy_violation" and repr(name) in err["message"]
        assert r.headers["x-mesh-guardrail"] == name
    assert openai_server.requests == []  # refused before any provider call


def test_config_errors_name_the_problem():
    from langchain_mesh.errors import ConfigError, UnknownLLMError

    with pytest.raises(ConfigError, match="unique"):
        _mesh([{"name": "a", "type": "pii"}, {"name": "a", "type": "terms", "terms": ["x"]}])
    with pytest.raises(ConfigError, match="regular expression"):
        _mesh([{"name": "a", "type": "terms", "patterns": ["(unclosed"]}])
    with pytest.raises(ConfigError, match="actoin"):
        _mesh([{"name": "a", "type": "pii", "actoin": "block"}])
    mesh = _mesh([{"name": "j", "type": "judge", "llm": "scripted:fake:nope", "policy": "p"}])
    with pytest.raises(UnknownLLMError):
        mesh.get_llm(CHAT).new_completion().with_message("x").execute()


def test_gateway_stream_stopped_by_an_output_guardrail_finishes_with_content_filter(gateway, openai_server):
    import openai

    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    openai_server.script(text="The plan is classified and the rest is secret too")
    chunks = list(client.chat.completions.create(model="openai:oa:gpt-4o", stream=True,
                                                 messages=[{"role": "user", "content": "plan?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The plan is " and "classified" not in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["content_filter"]
    openai_server.script(text="It is classified.")
    r = client.chat.completions.create(model="openai:oa:gpt-4o", messages=[{"role": "user", "content": "plan?"}])
    assert r.choices[0].finish_reason == "content_filter" and not r.choices[0].message.content


# ---- the gateway's pass-through: guardrails read the OpenAI-wire bytes ----------------------------------

def test_gateway_whole_answers_keep_the_pass_through_and_streams_with_output_rules_are_translated(gateway, openai_server):
    import httpx

    mesh = gateway.app.mesh
    llm = mesh.get_llm("openai:oa:gpt-4o")
    assert mesh.passthrough(llm) is not None and not mesh.forward_streams(llm)
    openai_server.script(text=f"card {CARD} kept")
    # min_p is a server extension only the pass-through forwards (the translated path has no name for it)
    r = httpx.post(gateway.base_url + "/chat/completions", timeout=30, json={
        "model": "openai:oa:gpt-4o", "min_p": 0.05, "messages": [
            {"role": "system", "content": "mail ops@example.org"},
            {"role": "user", "content": [{"type": "text", "text": f"pay {CARD}"},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "card [CREDIT_CARD] kept"
    assert r.json()["model"] == "openai:oa:gpt-4o"
    sent = openai_server.last_request.json
    assert sent["min_p"] == 0.05  # the pass-through carried it
    assert sent["messages"][0]["content"] == "mail [EMAIL]"
    assert sent["messages"][1]["content"][0] == {"type": "text", "text": "pay [CREDIT_CARD]"}
    assert sent["messages"][1]["content"][1]["image_url"]["url"] == "https://x.test/a.png"
    r = httpx.post(gateway.base_url + "/chat/completions", timeout=30, json={
        "model": "openai:oa:gpt-4o", "stream": True, "min_p": 0.05, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "min_p" in r.text  # a stream took the translated path, which names it


def _oa_mesh(base_url, guardrails, **extra):
    return Mesh.from_config({"connections": {"oa": {
        "type": "openai", "api_key": "test-key", "base_url": base_url, "max_retries": 0, "timeout": 5,
        "models": [{"id": "gpt-4o"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}},
        "guardrails": guardrails, **extra})


def _body(content, **extra):
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra}).encode()


def test_mesh_aforward_redacts_the_bytes_both_ways_and_refuses_what_it_cannot_read(openai_server):
    from langchain_mesh.errors import CapabilityError

    mesh = _oa_mesh(openai_server.base_url, [{"name": "pii", "type": "pii"}])
    llm = mesh.get_llm("openai:oa:gpt-4o")
    openai_server.script(text=f"stored {CARD}", usage={"prompt_tokens": 5, "completion_tokens": 3})
    content, _ = asyncio.run(mesh.aforward(llm, "/chat/completions", _body(f"keep {CARD}")))
    answer = json.loads(content)
    assert answer["choices"][0]["message"]["content"] == "stored [CREDIT_CARD]"
    assert answer["usage"]["completion_tokens"] == 3  # the rest of the answer as the upstream sent it
    assert openai_server.last_request.json["messages"][0]["content"] == "keep [CREDIT_CARD]"
    with pytest.raises(CapabilityError, match="stream openai:oa:gpt-4o translated"):
        asyncio.run(mesh.aforward(llm, "/chat/completions", _body("hi", stream=True), True))
    with pytest.raises(CapabilityError, match="/moderations"):
        asyncio.run(mesh.aforward(llm, "/moderations", b'{"input": "hi"}'))
    emb = mesh.get_llm("openai:oa:emb")
    openai_server.script(embeddings=[[0.1], [0.2]])
    asyncio.run(mesh.aforward(emb, "/embeddings", json.dumps({"model": "emb", "input": [f"c {CARD}", "x"]}).encode()))
    assert openai_server.last_request.json["input"] == ["c [CREDIT_CARD]", "x"]
    assert len(openai_server.requests) == 2  # the refusals sent nothing


def test_input_rules_alone_let_streams_pass_through_and_judges_keep_the_translated_path(openai_server):
    mesh = _oa_mesh(openai_server.base_url, [{"name": "pii", "type": "pii", "stage": "input"}])
    llm = mesh.get_llm("openai:oa:gpt-4o")
    assert mesh.passthrough(llm) is not None and mesh.forward_streams(llm)
    openai_server.script(text=f"said {CARD}")

    async def stream():
        body, first = await mesh.aforward(llm, "/chat/completions", _body(f"a {CARD}", stream=True), True)
        out = first
        while piece := await body.read():
            out += piece
        body.close()
        return out
    events = [json.loads(line[6:]) for line in asyncio.run(stream()).decode().splitlines()
              if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == f"said {CARD}"  # output not guarded: the upstream's stream as it was
    assert openai_server.last_request.json["messages"][0]["content"] == "a [CREDIT_CARD]"
    judged = _oa_mesh(openai_server.base_url, [{"name": "j", "type": "judge", "llm": "openai:oa:gpt-4o", "policy": "p"}])
    assert judged.passthrough(judged.get_llm("openai:oa:gpt-4o")) is None


def test_a_json_refusal_on_the_pass_through_raises_and_the_answer_never_leaves(openai_server):
    mesh = _oa_mesh(openai_server.base_url, [{"name": "json-out", "type": "json", "on_invalid": "refuse"}])
    llm = mesh.get_llm("openai:oa:gpt-4o")
    openai_server.script(text="not json at all")
    with pytest.raises(GuardrailError, match="json-out"):
        asyncio.run(mesh.aforward(llm, "/chat/completions", _body("give json")))
    mesh = _oa_mesh(openai_server.base_url, [{"name": "json-out", "type": "json", "on_invalid": "repair"}])
    openai_server.script(text='```json\n{"a": 1}\n```')
    content, _ = asyncio.run(mesh.aforward(mesh.get_llm("openai:oa:gpt-4o"), "/chat/completions", _body("give json")))
    assert json.loads(json.loads(content)["choices"][0]["message"]["content"]) == {"a": 1}


def test_a_route_applies_each_rule_once_and_a_blocked_target_still_falls_back():
    mesh = Mesh.from_config({
        "connections": {n: {"type": "scripted", "models": [{"id": "chat"}]} for n in "ab"},
        "routes": {"r": {"targets": ["scripted:a:chat", "scripted:b:chat"], "strategy": "fallback",
                         "fallback_on": ["retryable", "content_filter"]}},
        "guardrails": [{"name": "mails", "type": "pii", "action": "flag", "entities": ["EMAIL"]},
                       {"name": "secret", "type": "terms", "terms": ["secret"], "stage": "output", "action": "block"}]})
    mesh.connection("a").script(text="the secret is out")
    mesh.connection("b").script(text="write to b@c.io")
    resp = mesh.get_llm("route:r").new_completion().with_message("mail a@b.io").execute()
    assert resp.text == "write to b@c.io" and resp.meta.llm_id == "scripted:b:chat"
    assert resp.meta.attempts[0].error == "content_filter"  # target a's answer, blocked where it was made
    assert sorted((h.name, h.stage, h.action) for h in resp.meta.guardrails) == [
        ("mails", "input", "flag"), ("mails", "output", "flag")]
    assert mesh.connection("b").requests[-1].messages[0].content == "mail a@b.io"  # flagged, not changed
