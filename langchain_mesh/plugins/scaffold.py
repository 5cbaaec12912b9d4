"""``mesh plugin new <name>``: a working folder plugin in the seed's shape, with a test.

It writes the seed's OpenAI-SDK example (completion, streaming and tool calls over the Chat
Completions API) pointed at a ``base_url`` parameter, so that it runs against any OpenAI-compatible
server, and a pytest file that runs it through the mesh against ``langchain_mesh.testing.openai``::

    <name>/
      plugin.json
      python-llms/<name>/llm.json            # params: model, base_url, api_key (PRESET)
      python-llms/<name>/llm.py              # class MyLLM(BaseLLM)
      parameter-sets/parameter-<name>/parameter-set.json   # param_set_api_key (CREDENTIAL_REQUEST)
      mesh.yaml                              # a connection and a preset using it
      tests/test_<name>.py                   # pytest <name>/tests
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["new_plugin"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

PLUGIN_JSON = """/* This file is the descriptor of the plugin {name} */
{{
    "id": "{name}",
    "version": "0.0.1",
    "meta": {{
        // label: name of the plugin as displayed, should be short
        "label": "{label}",
        // description: longer string to help end users understand what this plugin does
        "description": "A custom LLM connection over the OpenAI SDK",
        "author": "",
        "icon": "fas fa-puzzle-piece",
        "licenseInfo": "Apache Software License"
    }},
    /* plugin-level parameters: given as plugin_params in the connection, passed to set_config as
       plugin_config */
    "params": []
}}
"""

LLM_JSON = """/* This file is the descriptor for the Custom LLM {name} */
{{
    "meta" : {{
        // label: name of the LLM as displayed, should be short
        "label": "{label}",

        // description: longer string to help end users understand what this LLM is
        "description": "An LLM reached with the OpenAI SDK",

        // icon: must be one of the FontAwesome 5.15.4 icons, complete list here at https://fontawesome.com/v5/docs/
        "icon": "fas fa-puzzle-piece"
    }},

    /* params:
       The parameters of the LLM, given in the connection (params:, for every model, and per model).
       Types: STRING, TEXTAREA, PASSWORD, INT, DOUBLE, BOOLEAN, SELECT, MULTISELECT, STRINGS, MAP,
       PRESET, SEPARATOR
    */
    "params": [
        {{
            "name": "model",
            "label": "Model",
            "type": "STRING",
            "description": "The model name the server knows",
            "mandatory": true
        }},
        {{
            "name": "base_url",
            "label": "Base URL",
            "type": "STRING",
            "description": "An OpenAI-compatible endpoint (empty: api.openai.com)",
            "mandatory": false
        }},
        {{
            "name": "api_key",
            "label": "API Key",
            "type": "PRESET",
            "parameterSetId": "parameter-{name}",
            "mandatory": true
        }}
    ]
}}
"""

PARAMETER_SET_JSON = """/* This file is the descriptor for the parameter set parameter-{name} */
{{
    "meta" : {{
        // label: name of the parameter set as displayed, should be short
        "label": "Parameter set for {label}",

        // description: longer string to help end users understand what these parameter correspond to
        "description": "Each user's API key",

        // icon: must be one of the FontAwesome 5.15.4 icons, complete list here at https://fontawesome.com/v5/docs/
        "icon": "fas fa-puzzle-piece"
    }},

    /* if users are allowed to fill the values for an instance of this parameter
       set directly in the plugin component using it, as opposed to only be allowed
       to select already defined presets (default value, can be changed in plugin
       settings)
    */
    "defaultDefinableInline": true,
    /* if users are allowed to define presets at the project level in addition
       to the instance level (default value, can be changed in plugin settings) */
    "defaultDefinableAtProjectLevel": true,

    /* The field "pluginParams" has the same structure as the field "params"
       and is used for parameters that are set at the plugin level */
    "pluginParams": [
    ],

    /* params:
       The CREDENTIAL_REQUEST one is each user's own: stored with `mesh credentials set <preset>`
       or PUT /v1/credentials/<preset> on mesh serve
    */
    "params": [
        {{
            "name": "param_set_api_key",
            "label": "API Key",
            "type": "CREDENTIAL_REQUEST",
            "credentialRequestSettings": {{
                "type": "SINGLE_FIELD"
            }},
            "mandatory": true
        }}
    ]
}}
"""

LLM_PY = '''# This file is the implementation of custom LLM {name}
from langchain_mesh.plugins import BaseLLM
from openai import OpenAI


def _content(message):
    """A seed-format message's content in the Chat Completions format."""
    parts = message.get("parts")
    if not parts:
        return message.get("content") or ""
    out = []
    for part in parts:
        if part["type"] == "TEXT":
            out.append({{"type": "text", "text": part["text"]}})
        elif part["type"] == "IMAGE_INLINE":
            url = "data:%s;base64,%s" % (part["imageMimeType"], part["inlineImage"])
            out.append({{"type": "image_url", "image_url": {{"url": url}}}})
        elif part["type"] == "IMAGE_URI":
            out.append({{"type": "image_url", "image_url": {{"url": part["imageUrl"]}}}})
    return out


def _messages(query):
    out = []
    for message in query["messages"]:
        if message["role"] == "tool":
            for tool_output in message["toolOutputs"]:
                out.append({{"role": "tool", "tool_call_id": tool_output["callId"], "content": tool_output["output"]}})
        elif message.get("toolCalls"):
            out.append({{"role": "assistant", "content": message.get("content") or None,
                        "tool_calls": message["toolCalls"]}})
        else:
            out.append({{"role": message["role"], "content": _content(message)}})
    return out


_SETTINGS = {{"temperature": "temperature", "topP": "top_p", "maxOutputTokens": "max_tokens",
             "stopSequences": "stop", "presencePenalty": "presence_penalty",
             "frequencyPenalty": "frequency_penalty", "seed": "seed"}}


def _response_format(fmt):
    if fmt.get("type") == "text":
        return {{"type": "text"}}
    if not fmt.get("schema"):
        return {{"type": "json_object"}}
    return {{"type": "json_schema", "json_schema": {{"name": fmt.get("name") or "answer", "schema": fmt["schema"],
                                                  "strict": bool(fmt.get("strict"))}}}}


def _tool_choice(choice):
    if choice["type"] == "tool_name":
        return {{"type": "function", "function": {{"name": choice["name"]}}}}
    return choice["type"]


class MyLLM(BaseLLM):
    def __init__(self):
        pass

    def set_config(self, config: dict, plugin_config: dict) -> None:
        self.config = config
        self.model = config.get("model", None)
        self.api_key = config.get('api_key').get('param_set_api_key')
        self.client = OpenAI(api_key=self.api_key, base_url=config.get("base_url") or None, max_retries=0)

    def _request(self, query, settings):
        request = {{"model": self.model, "messages": _messages(query)}}
        for name, value in settings.items():
            if name in _SETTINGS:
                request[_SETTINGS[name]] = value
            elif name == "tools":
                request["tools"] = value
            elif name == "toolChoice":
                request["tool_choice"] = _tool_choice(value)
            elif name == "responseFormat":
                request["response_format"] = _response_format(value)
            else:
                raise ValueError("setting %r is not supported by this LLM" % name)
        return request

    def process(self, query, settings, trace):
        response = self.client.chat.completions.create(**self._request(query, settings))
        choice = response.choices[0]
        return {{
            "text": choice.message.content or "",
            "toolCalls": [call.model_dump() for call in choice.message.tool_calls or []],
            "finishReason": choice.finish_reason,
            "promptTokens": response.usage.prompt_tokens if response.usage else 0,
            "completionTokens": response.usage.completion_tokens if response.usage else 0,
        }}

    def process_stream(self, query, settings, trace):
        stream = self.client.chat.completions.create(
            **self._request(query, settings), stream=True, stream_options={{"include_usage": True}})
        calls, usage, finish_reason = {{}}, None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            finish_reason = chunk.choices[0].finish_reason or finish_reason
            if delta.content:
                yield {{"chunk": {{"text": delta.content}}}}
            for call in delta.tool_calls or []:
                acc = calls.setdefault(call.index, {{"type": "function", "id": None,
                                                    "function": {{"name": "", "arguments": ""}}}})
                acc["id"] = call.id or acc["id"]
                if call.function and call.function.name:
                    acc["function"]["name"] += call.function.name
                if call.function and call.function.arguments:
                    acc["function"]["arguments"] += call.function.arguments
        yield {{"footer": {{
            "toolCalls": [calls[i] for i in sorted(calls)],
            "finishReason": finish_reason,
            "promptTokens": usage.prompt_tokens if usage else 0,
            "completionTokens": usage.completion_tokens if usage else 0,
        }}}}
'''

MESH_YAML = """# A mesh using the {name} plugin: custom:my-{name}:gpt-4o-mini
presets:
  {label_id}:
    parameter_set: parameter-{name}
    values: {{}}            # param_set_api_key: each user's own (mesh credentials set {label_id})
connections:
  my-{name}:
    type: custom
    plugin: {root}
    component: {name}
    params:
      api_key: {label_id}
      base_url: https://api.openai.com/v1
    models:
      - id: gpt-4o-mini     # the "model" parameter defaults to the model id
"""

TEST_PY = '''"""Runs the {name} plugin through the mesh against the local OpenAI server (no network)."""

from pathlib import Path

import pytest

from langchain_mesh import Mesh
from langchain_mesh.credentials import acting_as, new_key
from langchain_mesh.testing.openai import OpenAIServer

PLUGIN = Path(__file__).resolve().parent.parent
LLM_ID = "custom:my-{name}:gpt-4o-mini"
TOOL = {{"type": "function", "function": {{"name": "multiply", "description": "Multiply two numbers",
        "parameters": {{"type": "object", "properties": {{"a": {{"type": "number"}}, "b": {{"type": "number"}}}},
                       "required": ["a", "b"]}}}}}}


@pytest.fixture
def mesh(tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_CREDENTIALS_KEY", new_key())
    with OpenAIServer(api_key="sk-plugin-test") as server:
        config = {{
            "presets": {{"Default": {{"parameter_set": "parameter-{name}"}}}},
            "connections": {{"my-{name}": {{
                "type": "custom", "plugin": str(PLUGIN), "component": "{name}",
                "params": {{"api_key": "Default", "base_url": server.base_url}},
                "models": [{{"id": "gpt-4o-mini"}}]}}}},
            "credentials": {{"path": str(tmp_path / "credentials.json")}},
        }}
        with Mesh(config, user="tester") as m:
            m.credential_store.set("tester", "Default", {{"param_set_api_key": "sk-plugin-test"}})
            m.server = server
            yield m


def test_complete(mesh):
    mesh.server.script(text="Hello from the plugin")
    completion = mesh.get_llm(LLM_ID).new_completion()
    completion.with_message("Say hello")
    resp = completion.execute()
    assert resp.success and resp.text == "Hello from the plugin"
    assert mesh.server.last_request.json["messages"] == [{{"role": "user", "content": "Say hello"}}]
    assert mesh.server.last_request.headers["authorization"] == "Bearer sk-plugin-test"


def test_stream(mesh):
    mesh.server.script(text="one two three")
    completion = mesh.get_llm(LLM_ID).new_completion()
    completion.with_message("Count")
    chunks = list(completion.execute_streamed())
    assert "".join(getattr(c, "text", None) or "" for c in chunks[:-1]) == "one two three"


def test_tool_call(mesh):
    mesh.server.script(tool_calls=[("multiply", {{"a": 3, "b": 6}})])
    completion = mesh.get_llm(LLM_ID).new_completion()
    completion.with_message("What is 3 * 6?")
    completion.settings["tools"] = [TOOL]
    resp = completion.execute()
    assert resp.tool_calls[0]["function"]["name"] == "multiply"
    assert mesh.server.last_request.json["tools"][0]["function"]["name"] == "multiply"


def test_json_output(mesh):
    completion = mesh.get_llm(LLM_ID).new_completion()
    completion.with_message("Give a name and an age")
    completion.with_json_output(schema={{"type": "object", "properties": {{"name": {{"type": "string"}},
                                        "age": {{"type": "integer"}}}}, "required": ["name", "age"]}})
    resp = completion.execute()
    assert set(resp.json) == {{"name", "age"}}
    assert mesh.server.last_request.json["response_format"]["type"] == "json_schema"


def test_a_user_without_a_key_is_told_what_to_set(mesh):
    completion = mesh.get_llm(LLM_ID).new_completion()
    completion.with_message("hi")
    with acting_as("someone-else"), pytest.raises(Exception, match="mesh credentials set Default"):
        completion.execute()
'''


def new_plugin(name: str, parent: Path) -> Path:
    """Write the plugin ``name`` under ``parent``; refuses to overwrite an existing folder."""
    if not _NAME.match(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and '-' (like tutorial-llm-connection)")
    root = parent / name
    if root.exists():
        raise FileExistsError(f"{root} already exists; pick another name or remove it")
    label = name.replace("-", " ").capitalize()
    label_id = "".join(w.capitalize() for w in name.split("-"))
    fmt = {"name": name, "label": label, "label_id": label_id, "root": str(root)}
    files = {
        root / "plugin.json": PLUGIN_JSON,
        root / "python-llms" / name / "llm.json": LLM_JSON,
        root / "python-llms" / name / "llm.py": LLM_PY,
        root / "parameter-sets" / f"parameter-{name}" / "parameter-set.json": PARAMETER_SET_JSON,
        root / "mesh.yaml": MESH_YAML,
        root / "tests" / f"test_{name.replace('-', '_')}.py": TEST_PY,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fmt), encoding="utf-8")
    return root
