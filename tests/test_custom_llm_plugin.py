"""Folder plugins in the seed's shape (``tests/plugins/tutorial-llm-connection``: llm.json and
parameter-set.json with their comments, llm.py whose only line naming this package is BaseLLM's
import), parameter sets and presets, per-user credentials: through the builders, ``MeshChatModel``
and ``mesh serve``, against the local OpenAI server. No key ever shows in output, logs, reprs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("json5")

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.credentials import acting_as, new_key  # noqa: E402
from langchain_mesh.errors import ConfigError, MissingUserCredentialError  # noqa: E402
from langchain_mesh.plugins.translate import PluginAnswerError  # noqa: E402
from langchain_mesh.testing.openai import OpenAIServer, make_png  # noqa: E402
from langchain_mesh.testing.wire import RecordedRequest  # noqa: E402

SEED_PLUGIN = Path(__file__).parent / "plugins" / "tutorial-llm-connection"
LLM_ID = "custom:mycustom:gpt-4o-mini"
ALICE_KEY, BOB_KEY = "sk-alice-0123456789abcdef", "sk-bob-fedcba9876543210"
TOOL = {"type": "function", "function": {"name": "multiply", "description": "Multiply two integers",
                                          "parameters": {"type": "object",
                                                         "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                                         "required": ["a", "b"]}}}


class MultiKeyServer(OpenAIServer):
    """The local OpenAI server accepting several keys (one per user), as a real provider does."""

    def __init__(self, keys: list[str], **kw):
        super().__init__(api_key=keys[0], **kw)
        self.keys = keys

    def _check_auth(self, req: RecordedRequest) -> None:
        auth = req.headers.get("authorization") or ""
        if auth[7:] in self.keys:
            return
        super()._check_auth(req)


@pytest.fixture(scope="module")
def upstream():
    with MultiKeyServer([ALICE_KEY, BOB_KEY]) as srv:
        yield srv


@pytest.fixture
def env(upstream, tmp_path, monkeypatch):
    upstream.reset()
    monkeypatch.setenv("MESH_CREDENTIALS_KEY", new_key())
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)  # the seed's OpenAI(api_key=...) client reads it
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path


def seed_config(tmp_path: Path, **extra) -> dict:
    cfg = {
        "presets": {"OpenAI": {"parameter_set": "parameter-custom-llm"}},  # each user's own key
        "connections": {"mycustom": {"type": "custom", "plugin": str(SEED_PLUGIN), "component": "custom-chat-plugin",
                                     "params": {"api_key": "OpenAI"}, "max_retries": 0,
                                     "models": [{"id": "gpt-4o-mini"}]}},
        "credentials": {"path": str(tmp_path / "credentials.json")},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def mesh(env):
    with Mesh(seed_config(env), user="alice") as m:
        m.credential_store.set("alice", "OpenAI", {"param_set_api_key": ALICE_KEY})
        yield m


# --------------------------------------------------------------------------------------------------
# the seed's files, through the builders


def test_seed_shaped_plugin_completes_with_the_users_key(mesh, upstream):
    assert [i.id for i in mesh.list_llms()] == [LLM_ID]
    upstream.script(text="An agent is code that calls an LLM")
    completion = mesh.get_llm(LLM_ID).new_completion()
    completion.with_message("How to code an agent?")
    resp = completion.execute()
    assert resp.success and resp.text == "An agent is code that calls an LLM"
    assert resp.finish_reason == "stop" and resp.usage.input_tokens > 0
    req = upstream.last_request
    assert req.headers["authorization"] == f"Bearer {ALICE_KEY}"
    assert req.json["model"] == "gpt-4o-mini"  # the "model" parameter defaults to the model id
    assert req.json["messages"] == [{"role": "user", "content": "How to code an agent?"}]


def test_stream_tools_and_tool_outputs(mesh, upstream):
    llm = mesh.get_llm(LLM_ID)
    upstream.script(text="one two three")
    c = llm.new_completion()
    c.with_message("count")
    events = list(c.execute_streamed())
    assert "".join(e.text or "" for e in events[:-1]) == "one two three"
    assert events[-1].finish_reason == "stop"

    upstream.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
    c = llm.new_completion()
    c.with_message("What is 3 * 6?")
    c.settings["tools"] = [TOOL]
    c.settings["toolChoice"] = {"type": "tool_name", "name": "multiply"}
    c.settings["temperature"] = 0.1
    resp = c.execute()
    assert resp.finish_reason == "tool_calls"
    call = resp.tool_calls[0]
    assert call["function"]["name"] == "multiply" and call.function.parsed_arguments() == {"a": 3, "b": 6}
    body = upstream.last_request.json
    assert body["tools"][0]["function"]["name"] == "multiply" and body["temperature"] == 0.1
    assert body["tool_choice"] == {"type": "function", "function": {"name": "multiply"}}

    # the tool output goes back in the seed's toolOutputs form, reaching the wire as a tool message
    upstream.script(text="18")
    c.with_tool_calls([call])
    c.with_tool_output("18", tool_call_id=call.id)
    assert c.execute().text == "18"
    msgs = upstream.last_request.json["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == call.id
    assert msgs[2] == {"role": "tool", "tool_call_id": call.id, "content": "18"}

    # streamed tool calls come back in the footer
    upstream.script(tool_calls=[("multiply", {"a": 2, "b": 5})])
    c = llm.new_completion()
    c.with_message("2*5?")
    c.settings["tools"] = [TOOL]
    footer = list(c.execute_streamed())[-1]
    assert footer.tool_calls[0].function.parsed_arguments() == {"a": 2, "b": 5}
    assert footer.finish_reason == "tool_calls"


def test_multimodal_parts_reach_the_plugin_and_the_wire(mesh, upstream):
    png = make_png(2, 2)
    c = mesh.get_llm(LLM_ID).new_completion()
    mp = c.new_multipart_message()
    mp.with_text("What is this?")
    mp.with_inline_image(png)
    mp.add()
    upstream.script(text="a tiny image")
    assert c.execute().text == "a tiny image"
    content = upstream.last_request.json["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_langchain_chat_model_invoke_tools_stream_and_async(mesh, upstream):
    from langchain_core.tools import tool

    from langchain_mesh import MeshChatModel

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    chat = MeshChatModel(llm_id=LLM_ID, mesh=mesh)
    upstream.script(text="Hello")
    assert chat.invoke("hi").content == "Hello"
    upstream.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
    msg = chat.bind_tools([multiply]).invoke("What is 3 * 6?")
    assert msg.tool_calls[0]["name"] == "multiply" and msg.tool_calls[0]["args"] == {"a": 3, "b": 6}
    upstream.script(text="streamed words here")
    assert "".join(ch.content for ch in chat.stream("go")) == "streamed words here"

    async def run():
        upstream.script(text="async answer")
        out = await chat.ainvoke("hi")
        upstream.script(text="async stream")
        parts = [ch.content async for ch in chat.astream("go")]
        return out.content, "".join(parts)

    with acting_as("alice"):
        assert asyncio.run(run()) == ("async answer", "async stream")


def test_user_without_a_credential_gets_a_clear_error(mesh, upstream):
    c = mesh.get_llm(LLM_ID).new_completion()
    c.with_message("hi")
    with acting_as("carol"), pytest.raises(MissingUserCredentialError) as ei:
        c.execute()
    msg = str(ei.value)
    assert "carol" in msg and "OpenAI" in msg and "param_set_api_key" in msg
    assert "mesh credentials set OpenAI" in msg and "PUT /v1/credentials/OpenAI" in msg
    assert ei.value.fields == ["param_set_api_key"] and upstream.requests == []


def test_shared_preset_with_a_secret_reference(env, upstream, monkeypatch):
    monkeypatch.setenv("TEAM_KEY", BOB_KEY)
    cfg = seed_config(env, presets={"Team": {"parameter_set": "parameter-custom-llm",
                                             "values": {"param_set_api_key": "{{env:TEAM_KEY}}"}}})
    cfg["connections"]["mycustom"]["params"]["api_key"] = {"preset": "Team"}
    with Mesh(cfg) as m:
        assert m.credential_targets() == {}  # nothing per user: the preset holds the key
        upstream.script(text="ok")
        c = m.get_llm(LLM_ID).new_completion()
        c.with_message("hi")
        assert c.execute().text == "ok"
        assert upstream.last_request.headers["authorization"] == f"Bearer {BOB_KEY}"
        assert BOB_KEY not in repr(m.config) + repr(m.config.presets) + repr(m.connection("mycustom").config)


# --------------------------------------------------------------------------------------------------
# the gateway: two users, each with their own stored key


def test_gateway_users_each_use_their_own_key(env, upstream, caplog, capsys):
    pytest.importorskip("uvicorn")
    import httpx
    import openai
    from test_server_harness import RunningServer

    caplog.set_level(logging.DEBUG)
    cfg = seed_config(env)
    cfg["connections"]["analysts"] = {"type": "openai", "api_key": "{{user}}", "base_url": upstream.base_url,
                                      "max_retries": 0, "models": [{"id": "gpt-4o"}]}
    cfg["server"] = {"api_keys": [{"key": "gw-alice", "name": "alice"}, {"key": "gw-bob", "name": "bob"},
                                  {"key": "gw-carol", "name": "carol"}]}
    outputs = []
    with RunningServer(Mesh(cfg)) as gw:
        def put(gw_key, target, body):
            r = httpx.put(f"{gw.url}/v1/credentials/{target}", json=body,
                          headers={"Authorization": f"Bearer {gw_key}"}, timeout=10)
            outputs.append(r.text)
            return r

        assert put("gw-alice", "OpenAI", {"param_set_api_key": ALICE_KEY}).status_code == 200
        assert put("gw-bob", "OpenAI", {"param_set_api_key": BOB_KEY}).status_code == 200
        assert put("gw-alice", "analysts", {"api_key": ALICE_KEY}).json() == {
            "object": "credential", "target": "analysts", "fields": ["api_key"]}
        assert put("gw-bob", "analysts", {"api_key": BOB_KEY}).status_code == 200
        bad = put("gw-bob", "OpenAI", {"api_kye": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "api_kye"
        assert put("gw-bob", "nope", {"api_key": "x"}).status_code == 404

        for model in (LLM_ID, "openai:analysts:gpt-4o"):
            for who, gw_key, key in (("alice", "gw-alice", ALICE_KEY), ("bob", "gw-bob", BOB_KEY)):
                upstream.script(text=f"hello {who}")
                client = openai.OpenAI(base_url=gw.base_url, api_key=gw_key, max_retries=0)
                r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
                assert r.choices[0].message.content == f"hello {who}"
                assert upstream.last_request.headers["authorization"] == f"Bearer {key}"
                outputs.append(r.model_dump_json())
                upstream.script(text=f"stream {who}")
                s = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                   stream=True)
                assert "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices) == f"stream {who}"
                assert upstream.last_request.headers["authorization"] == f"Bearer {key}"

        # tools through the gateway, on alice's key
        upstream.script(tool_calls=[("multiply", {"a": 3, "b": 6})])
        client = openai.OpenAI(base_url=gw.base_url, api_key="gw-alice", max_retries=0)
        r = client.chat.completions.create(model=LLM_ID, messages=[{"role": "user", "content": "3*6?"}], tools=[TOOL])
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "multiply" and r.choices[0].finish_reason == "tool_calls"
        assert upstream.last_request.json["tools"][0]["function"]["name"] == "multiply"
        assert upstream.last_request.headers["authorization"] == f"Bearer {ALICE_KEY}"

        # carol stored nothing: a 401 that says what to set, and nothing reaches the upstream
        sent = len(upstream.requests)
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": "Bearer gw-carol"},
                       json={"model": LLM_ID, "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        outputs.append(r.text)
        assert r.status_code == 401
        err = r.json()["error"]
        assert err["code"] == "missing_credential" and "PUT /v1/credentials/OpenAI" in err["message"]
        assert len(upstream.requests) == sent

        # each user lists their own entries only, never a value
        listing = httpx.get(f"{gw.url}/v1/credentials", headers={"Authorization": "Bearer gw-bob"}, timeout=10)
        outputs.append(listing.text)
        assert {(e["target"], tuple(e["fields"])) for e in listing.json()["data"]} == {
            ("OpenAI", ("param_set_api_key",)), ("analysts", ("api_key",))}
        assert listing.json()["targets"] == {"OpenAI": ["param_set_api_key"], "analysts": ["api_key"]}
        d = httpx.delete(f"{gw.url}/v1/credentials/analysts", headers={"Authorization": "Bearer gw-bob"}, timeout=10)
        assert d.status_code == 200
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": "Bearer gw-bob"},
                       json={"model": "openai:analysts:gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                       timeout=10)
        assert r.status_code == 401
        outputs += [r.text, repr(gw.app.mesh), repr(gw.app.mesh.config), repr(gw.app.mesh.credential_store)]
        outputs += [repr(c) for c in gw.app.mesh._user_connections()._conns.values()]

    captured = capsys.readouterr()
    everything = "\n".join(outputs + [captured.out, captured.err, caplog.text])
    for key in (ALICE_KEY, BOB_KEY):
        assert key not in everything
    assert key not in (env / "credentials.json").read_text()


# --------------------------------------------------------------------------------------------------
# descriptors validated when the config loads


def _plugin(tmp_path: Path, params: str, code: str = "", set_params: str = "", inline: str = "true") -> Path:
    root = tmp_path / "plug"
    comp = root / "python-llms" / "c"
    comp.mkdir(parents=True)
    (comp / "llm.json").write_text('// a comment\n{"meta": {"label": "x"}, /* inline */ "params": [' + params + "]}")
    (comp / "llm.py").write_text("from langchain_mesh.plugins import BaseLLM\n\n" + (code or (
        "class MyLLM(BaseLLM):\n"
        "    def set_config(self, config, plugin_config):\n"
        "        self.config = config\n"
        "    def process(self, query, settings, trace):\n"
        "        return {'text': repr(sorted(self.config.items())) + '|' + query['messages'][-1]['content']}\n")))
    ps = root / "parameter-sets" / "creds"
    ps.mkdir(parents=True)
    (ps / "parameter-set.json").write_text(
        '{"meta": {}, "defaultDefinableInline": ' + inline + ', "pluginParams": [], "params": ['
        + (set_params or '{"name": "key", "type": "CREDENTIAL_REQUEST", "mandatory": true}') + "]}")
    return root


def _conn(root: Path, **kw) -> dict:
    return {"connections": {"c": {"type": "custom", "plugin": str(root), "component": "c",
                                  "models": [{"id": "m"}], **kw}}}


def test_parameters_are_checked_against_llm_json(tmp_path):
    root = _plugin(tmp_path, '{"name": "size", "type": "SELECT", "selectChoices": [{"value": "s"}, {"value": "l"}],'
                             ' "defaultValue": "s"}, {"name": "n", "type": "INT", "mandatory": true},'
                             ' {"name": "flag", "type": "BOOLEAN"}, {"type": "SEPARATOR", "label": "---"},'
                             ' {"name": "tags", "type": "STRINGS"}')
    with pytest.raises(ConfigError) as ei:
        Mesh(_conn(root, params={"size": "xl", "n": "3", "flag": 1, "tagz": []}))
    problems = dict(ei.value.problems)
    assert "one of ['s', 'l']" in problems["connections.c.params.size"]
    assert "integer" in problems["connections.c.params.n"]
    assert "true or false" in problems["connections.c.params.flag"]
    assert "unknown parameter" in problems["connections.c.params.tagz"]
    with pytest.raises(ConfigError, match=r"connections.c.models\[0\].params.n: missing"):
        Mesh(_conn(root))
    with Mesh(_conn(root, params={"n": 3}, models=[{"id": "m", "params": {"size": "l"}}])) as m:
        c = m.get_llm("custom:c:m").new_completion()
        c.with_message("q")
        assert c.execute().text == "[('n', 3), ('size', 'l')]|q"  # the per-model value over the default


def test_unsupported_parameter_type_and_missing_component_are_named(tmp_path):
    root = _plugin(tmp_path, '{"name": "x", "type": "DATASET"}')
    with pytest.raises(ConfigError, match="DATASET.*does not support"):
        Mesh(_conn(root))
    root2 = _plugin(tmp_path / "b", '{"name": "x", "type": "STRING"}')
    with pytest.raises(ConfigError, match="no LLM component 'nope'.*c"):
        Mesh({"connections": {"c": {"type": "custom", "plugin": str(root2), "component": "nope",
                                    "models": [{"id": "m"}]}}})
    with pytest.raises(ConfigError, match="neither a folder nor an importable package"):
        Mesh({"connections": {"c": {"type": "custom", "plugin": str(tmp_path / "absent"), "component": "c",
                                    "models": [{"id": "m"}]}}})
    with pytest.raises(ConfigError, match="STRING parameters do not take secret references"):
        Mesh(_conn(root2, params={"x": "{{env:HOME}}"}))


def test_presets_checked_and_inline_values(tmp_path, monkeypatch):
    root = _plugin(tmp_path, '{"name": "auth", "type": "PRESET", "parameterSetId": "creds", "mandatory": true}')
    with pytest.raises(ConfigError, match="no preset 'Nope'"):
        Mesh(_conn(root, params={"auth": "Nope"}))
    with pytest.raises(ConfigError, match="is of parameter set 'other'"):
        Mesh({**_conn(root, params={"auth": "P"}), "presets": {"P": {"parameter_set": "other"}}})
    monkeypatch.setenv("MESH_CREDENTIALS_KEY", new_key())
    with Mesh({**_conn(root), "credentials": {"path": str(tmp_path / "c.json")}}) as m:  # no preset named: each user supplies the set's credential, under "c"
        assert m.credential_targets() == {"c": ["key"]}
        c = m.get_llm("custom:c:m").new_completion()
        c.with_message("q")
        with acting_as("dave"), pytest.raises(MissingUserCredentialError, match="mesh credentials set c --user dave"):
            c.execute()
    with pytest.raises(ConfigError, match=r"presets.P.values.kee: unknown parameter"):
        Mesh({**_conn(root, params={"auth": "P"}), "presets": {"P": {"parameter_set": "creds", "values": {"kee": "x"}}}})
    monkeypatch.setenv("INLINE_KEY", "from-env")
    cfg = _conn(root, params={"auth": {"key": "{{env:INLINE_KEY}}"}})
    with Mesh(cfg) as m, Mesh(cfg) as m2:  # the same dict twice: loading leaves it as it was
        assert cfg["connections"]["c"]["params"] == {"auth": {"key": "{{env:INLINE_KEY}}"}}
        for mesh in (m, m2):
            c = mesh.get_llm("custom:c:m").new_completion()
            c.with_message("q")
            assert "('auth', {'key': 'from-env'})" in c.execute().text
    root2 = _plugin(tmp_path / "b", '{"name": "auth", "type": "PRESET", "parameterSetId": "creds", "mandatory": true}',
                    inline="false")
    with pytest.raises(ConfigError, match="not definable inline"):
        Mesh(_conn(root2, params={"auth": {"key": "x"}}))
    with pytest.raises(ConfigError, match="missing: name a preset"):
        Mesh(_conn(root2))


def test_relative_plugin_path_is_read_beside_the_yaml(tmp_path, monkeypatch):
    _plugin(tmp_path, '{"name": "n", "type": "INT", "defaultValue": 7}')
    (tmp_path / "mesh.yaml").write_text(
        "connections:\n  c: {type: custom, plugin: ./plug, component: c, models: [{id: m}]}\n")
    monkeypatch.chdir(tmp_path.parent)
    with Mesh(tmp_path / "mesh.yaml") as m:
        c = m.get_llm("custom:c:m").new_completion()
        c.with_message("q")
        assert c.execute().text == "[('n', 7)]|q"


def test_plugin_answers_in_the_wrong_shape_are_errors(tmp_path):
    code = ("class MyLLM(BaseLLM):\n"
            "    def process(self, query, settings, trace):\n"
            "        return {'text': 'x', 'promptTokkens': 3}\n"
            "    def process_stream(self, query, settings, trace):\n"
            "        yield {'chunk': {'text': 'a'}}\n"
            "        if query['messages'][-1]['content'] == 'twice':\n"
            "            yield {'footer': {}}\n"
            "            yield {'chunk': {'text': 'late'}}\n")
    root = _plugin(tmp_path, "", code=code)
    with Mesh(_conn(root, max_retries=0)) as m:
        llm = m.get_llm("custom:c:m")
        c = llm.new_completion()
        c.with_message("q")
        with pytest.raises(PluginAnswerError, match="promptTokkens"):
            c.execute()
        events = list(c.execute_streamed())  # no footer yielded: the stream still ends with one
        assert events[0].text == "a" and events[-1].finish_reason == "stop"
        c2 = llm.new_completion()
        c2.with_message("twice")
        with pytest.raises(PluginAnswerError, match="after its footer"):
            list(c2.execute_streamed())


def test_string_answers_async_methods_and_plugin_exceptions(tmp_path):
    code = ("import asyncio\n"
            "class Boom(Exception):\n"
            "    status_code = 429\n"
            "class MyLLM(BaseLLM):\n"
            "    def process(self, query, settings, trace):\n"
            "        if query['messages'][-1]['content'] == 'boom':\n"
            "            raise Boom('slow down')\n"
            "        return 'plain ' + query['messages'][-1]['content']\n"
            "    async def aprocess_stream(self, query, settings, trace):\n"
            "        for w in ['x', 'y']:\n"
            "            await asyncio.sleep(0)\n"
            "            yield {'chunk': {'text': w}}\n"
            "        yield {'footer': {'promptTokens': 2, 'completionTokens': 2, 'finishReason': 'length'}}\n")
    root = _plugin(tmp_path, "", code=code)
    from langchain_mesh.errors import RateLimitError

    with Mesh(_conn(root, max_retries=0)) as m:
        llm = m.get_llm("custom:c:m")
        c = llm.new_completion()
        c.with_message("q")
        assert c.execute().text == "plain q"
        c.with_message("boom")
        with pytest.raises(RateLimitError, match="slow down"):
            c.execute()

        from langchain_mesh.schema import CompletionRequest, Message

        async def astream():
            req = CompletionRequest(messages=[Message(role="user", content="s")])
            return [e async for e in m.astream(llm, req)]

        events = asyncio.run(astream())
        assert [e.text for e in events[:-1]] == ["x", "y"]
        assert events[-1].finish_reason == "length" and events[-1].usage.total_tokens == 4


# --------------------------------------------------------------------------------------------------
# mesh plugin new


def test_plugin_new_scaffolds_a_plugin_whose_test_passes(tmp_path):
    import subprocess
    import sys

    from langchain_mesh.cli import main

    assert main(["plugin", "new", "acme-llm", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "acme-llm"
    assert (root / "python-llms" / "acme-llm" / "llm.json").read_text().startswith("/* This file is the descriptor")
    code = (root / "python-llms" / "acme-llm" / "llm.py").read_text()
    assert [line for line in code.splitlines() if "langchain_mesh" in line] == [
        "from langchain_mesh.plugins import BaseLLM"]
    assert main(["plugin", "new", "acme-llm", "--dir", str(tmp_path)]) == 2  # never overwrites
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240,
                       env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout
    shutil.rmtree(root)
