"""The `mesh` command, run in-process through ``main([...])`` on a scripted mesh (no model, no network)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from langchain_mesh import cli
from langchain_mesh.cli import main
from langchain_mesh.config import Secret
from langchain_mesh.connections import register_connection_type
from langchain_mesh.errors import error_for_status
from langchain_mesh.schema import Purpose
from langchain_mesh.testing.scripted import ScriptedConnection, ScriptedConnectionConfig

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
connections:
  fake:
    type: scripted
    models:
      - {id: chat, description: scripted chat}
      - {id: emb, purposes: [TEXT_EMBEDDING_EXTRACTION], description: hashed words}
"""


@pytest.fixture(autouse=True)
def _no_mesh_config(monkeypatch):
    monkeypatch.delenv("MESH_CONFIG", raising=False)


@pytest.fixture
def cfg(tmp_path) -> str:
    path = tmp_path / "mesh.yaml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def connections(monkeypatch) -> list[ScriptedConnection]:
    """Every scripted connection the CLI's own mesh creates, so a test can read the requests it got."""
    made: list[ScriptedConnection] = []
    init = ScriptedConnection.__init__

    def recording_init(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(ScriptedConnection, "__init__", recording_init)
    return made


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("mesh: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, (f, err)


# ---- models -------------------------------------------------------------------------------------


def test_models_table(capsys, cfg):
    code, out, err = run(capsys, "models", "--config", cfg)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "PURPOSES", "DESCRIPTION"]
    assert lines[1].split() == ["scripted:fake:chat", "GENERIC_COMPLETION", "scripted", "chat"]
    assert lines[2].split() == ["scripted:fake:emb", "TEXT_EMBEDDING_EXTRACTION", "hashed", "words"]
    assert len(lines) == 3


def test_models_purpose_filters(capsys, cfg):
    code, out, _ = run(capsys, "models", "--config", cfg, "--purpose", "TEXT_EMBEDDING_EXTRACTION")
    assert code == 0
    assert "scripted:fake:emb" in out and "scripted:fake:chat" not in out


def test_models_purpose_is_case_insensitive_and_checked(capsys, cfg):
    code, out, _ = run(capsys, "models", "--config", cfg, "--purpose", "generic_completion")
    assert code == 0 and "scripted:fake:chat" in out and "scripted:fake:emb" not in out
    code, _, err = run(capsys, "models", "--config", cfg, "--purpose", "CHAT")
    assert code == 2 and "invalid choice" in err and "Traceback" not in err


def test_models_json(capsys, cfg):
    code, out, _ = run(capsys, "models", "--json", "--config", cfg)
    assert code == 0
    rows = json.loads(out)
    capabilities = [row.pop("capabilities") for row in rows]
    assert rows == [
        {"id": "scripted:fake:chat", "type": "scripted", "connection": "fake",
         "purposes": ["GENERIC_COMPLETION"], "description": "scripted chat"},
        {"id": "scripted:fake:emb", "type": "scripted", "connection": "fake",
         "purposes": ["TEXT_EMBEDDING_EXTRACTION"], "description": "hashed words"},
    ]
    assert capabilities[0]["tools"] is True and capabilities[0]["streaming"] is True


def test_models_json_with_purpose_and_no_match(capsys, cfg):
    code, out, _ = run(capsys, "models", "--json", "--purpose", "IMAGE_GENERATION", "--config", cfg)
    assert code == 0 and json.loads(out) == []


def test_config_accepted_before_the_subcommand(capsys, cfg):
    code, out, _ = run(capsys, "--config", cfg, "models", "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_mesh_config_environment_variable(capsys, cfg, monkeypatch):
    monkeypatch.setenv("MESH_CONFIG", cfg)
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == ["scripted:fake:chat", "scripted:fake:emb"]


def test_config_flag_wins_over_mesh_config(capsys, cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_CONFIG", str(tmp_path / "does-not-exist.yaml"))
    code, out, _ = run(capsys, "models", "--config", cfg)
    assert code == 0 and "scripted:fake:chat" in out


def test_purpose_choices_match_the_schema():
    assert cli.PURPOSES == tuple(p.value for p in Purpose)


def test_default_mesh_lists_the_local_models(capsys):
    pytest.importorskip("langchain_mesh.connections.huggingface_local")
    code, out, err = run(capsys, "models")
    assert code == 0, err
    assert "huggingfacelocal:local:SmolLM2-135M-Instruct" in out
    assert "huggingfacelocal:local:all-MiniLM-L6-v2" in out


# ---- chat ---------------------------------------------------------------------------------------


def test_chat_prints_the_answer(capsys, cfg):
    code, out, err = run(capsys, "chat", "What is the capital of France?", "--config", cfg)
    assert code == 0 and err == ""
    assert out == "What is the capital of France?\n"  # the scripted model echoes the user


def test_chat_stream(capsys, cfg):
    code, out, err = run(capsys, "chat", "one two three four", "--stream", "--config", cfg)
    assert code == 0 and err == ""
    assert out == "one two three four\n"


def test_chat_system_prompt_and_settings_reach_the_model(capsys, cfg, connections):
    code, out, _ = run(capsys, "chat", "hello there", "--system", "You answer in haikus",
                       "--temperature", "0.3", "--max-tokens", "7", "--config", cfg)
    assert code == 0 and out == "hello there\n"
    (conn,) = connections
    (request,) = conn.requests
    assert [(m.role, m.text) for m in request.messages] == [
        ("system", "You answer in haikus"), ("user", "hello there")]
    assert request.settings.temperature == 0.3
    assert request.settings.maxOutputTokens == 7


def test_chat_max_tokens_truncates(capsys, cfg, connections):
    code, out, _ = run(capsys, "chat", "one two three four", "--max-tokens", "2", "--config", cfg)
    assert code == 0 and out.split() == ["one", "two"]


def test_chat_stream_with_system_prompt(capsys, cfg, connections):
    code, out, _ = run(capsys, "chat", "hi", "--system", "Be brief", "--stream", "--config", cfg)
    assert code == 0 and out == "hi\n"
    assert [m.role for m in connections[0].requests[0].messages] == ["system", "user"]


def test_chat_explicit_llm(capsys, cfg, connections):
    code, out, _ = run(capsys, "chat", "hi", "--llm", "scripted:fake:chat", "--config", cfg)
    assert code == 0 and out == "hi\n"


def test_chat_prompt_from_stdin(capsys, cfg, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    code, out, _ = run(capsys, "chat", "-", "--config", cfg)
    assert code == 0 and out == "from stdin\n"


# ---- embed --------------------------------------------------------------------------------------


def test_embed_prints_the_vector_as_json(capsys, cfg):
    code, out, err = run(capsys, "embed", "The quick brown fox", "--config", cfg)
    assert code == 0 and err == ""
    vector = json.loads(out)
    assert isinstance(vector, list) and len(vector) == 64  # the scripted connection's default dimensions
    assert all(isinstance(x, float) for x in vector)
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-6)
    # deterministic: the same text, the same vector
    assert run(capsys, "embed", "The quick brown fox", "--config", cfg)[1] == out


def test_embed_explicit_llm(capsys, cfg):
    code, out, _ = run(capsys, "embed", "fox", "--llm", "scripted:fake:emb", "--config", cfg)
    assert code == 0 and len(json.loads(out)) == 64


# ---- errors: exit 2, one line, no traceback --------------------------------------------------------


def test_bad_config_key(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("connections:\n  fake:\n    type: scripted\n    modles: []\n    timeot: 3\n")
    code, out, err = run(capsys, "models", "--config", str(path))
    assert code == 2 and out == ""
    assert_one_line_error(err, "connections.fake.modles", "unknown key", "connections.fake.timeot")


def test_unknown_connection_type(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("connections:\n  x:\n    type: opanai\n")
    code, _, err = run(capsys, "models", "--config", str(path))
    assert code == 2
    assert_one_line_error(err, "connections.x.type", "opanai")


def test_config_that_is_not_yaml(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("connections: [unclosed\n")
    code, _, err = run(capsys, "models", "--config", str(path))
    assert code == 2
    assert_one_line_error(err, "not valid YAML")


def test_unknown_llm_id(capsys, cfg):
    code, out, err = run(capsys, "chat", "hi", "--llm", "scripted:fake:nope", "--config", cfg)
    assert code == 2 and out == ""
    assert_one_line_error(err, "scripted:fake:nope", "scripted:fake:chat")


def test_unknown_connection_in_llm_id(capsys, cfg):
    code, _, err = run(capsys, "embed", "hi", "--llm", "openai:other:gpt-4o", "--config", cfg)
    assert code == 2
    assert_one_line_error(err, "openai:other:gpt-4o")


def test_malformed_llm_id(capsys, cfg):
    code, _, err = run(capsys, "chat", "hi", "--llm", "gpt-4o", "--config", cfg)
    assert code == 2
    assert_one_line_error(err, "gpt-4o", "<connection type>:<connection name>:<model>")


def test_missing_mesh_config_file(capsys, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "mesh.yaml"
    monkeypatch.setenv("MESH_CONFIG", str(missing))
    code, out, err = run(capsys, "models")
    assert code == 2 and out == ""
    assert_one_line_error(err, "cannot read mesh config", str(missing))


def test_missing_config_flag_file(capsys, tmp_path):
    code, _, err = run(capsys, "chat", "hi", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert_one_line_error(err, "cannot read mesh config")


def test_bad_setting(capsys, cfg):
    code, out, err = run(capsys, "chat", "hi", "--temperature", "9", "--config", cfg)
    assert code == 2 and out == ""
    assert_one_line_error(err, "temperature")


def test_bad_max_tokens(capsys, cfg):
    code, _, err = run(capsys, "chat", "hi", "--max-tokens", "0", "--config", cfg)
    assert code == 2
    assert_one_line_error(err, "maxOutputTokens")


def test_wrong_purpose(capsys, cfg):
    code, _, err = run(capsys, "embed", "hi", "--llm", "scripted:fake:chat", "--config", cfg)
    assert code == 2
    assert_one_line_error(err, "scripted:fake:chat", "TEXT_EMBEDDING_EXTRACTION")


def test_no_llm_of_the_needed_purpose(capsys, tmp_path):
    path = tmp_path / "chat-only.yaml"
    path.write_text("connections:\n  fake:\n    type: scripted\n    models: [{id: chat}]\n")
    code, _, err = run(capsys, "embed", "hi", "--config", str(path))
    assert code == 2
    assert_one_line_error(err, "no TEXT_EMBEDDING_EXTRACTION LLM", "--llm")


def test_usage_errors(capsys, cfg):
    code, _, err = run(capsys)
    assert code == 2 and "mesh: error:" in err
    code, _, err = run(capsys, "chat", "--config", cfg)  # no prompt
    assert code == 2 and "mesh chat: error:" in err and "prompt" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "chat", "hi", "--temperature", "hot", "--config", cfg)
    assert code == 2 and "invalid float value" in err


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "models" in out and "chat" in out and "embed" in out
    code, out, _ = run(capsys, "chat", "--help")
    assert code == 0 and "--system" in out and "--max-tokens" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("mesh ")


# ---- credentials and provider failures, through a connection type that needs a key -------------------


class KeyedConfig(ScriptedConnectionConfig):
    type: str = "clitest-keyed"
    api_key: Secret
    fail_with_status: Optional[int] = None


class KeyedConnection(ScriptedConnection):
    """Resolves its key on first use, like the hosted connections, and can fail like a provider."""

    config_model = KeyedConfig

    def _call(self) -> None:
        self.config.api_key.get(f"connections.{self.name}.api_key")
        if self.config.fail_with_status:
            raise error_for_status(self.config.fail_with_status, "upstream exploded", provider="clitest")

    def complete(self, model, request):
        self._call()
        return super().complete(model, request)

    def stream(self, model, request):
        self._call()
        return super().stream(model, request)


register_connection_type("clitest-keyed", KeyedConnection)


def keyed_config(tmp_path, status: Optional[int] = None) -> str:
    path = tmp_path / "keyed.yaml"
    extra = f"    fail_with_status: {status}\n" if status else ""
    path.write_text("connections:\n  k:\n    type: clitest-keyed\n"
                    "    api_key: \"{{env:CLITEST_API_KEY}}\"\n" + extra)
    return str(path)


def test_missing_credential(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("CLITEST_API_KEY", raising=False)
    code, out, err = run(capsys, "chat", "hi", "--config", keyed_config(tmp_path))
    assert code == 2 and out == ""
    assert_one_line_error(err, "CLITEST_API_KEY", "connections.k.api_key")


def test_credential_present(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CLITEST_API_KEY", "sk-very-secret")
    code, out, err = run(capsys, "chat", "hi", "--config", keyed_config(tmp_path))
    assert code == 0 and out == "hi\n" and "sk-very-secret" not in out + err


@pytest.mark.parametrize("stream", [False, True])
def test_provider_error_exits_1(capsys, tmp_path, monkeypatch, stream):
    monkeypatch.setenv("CLITEST_API_KEY", "sk-very-secret")
    argv = ["chat", "hi", "--config", keyed_config(tmp_path, status=503)] + (["--stream"] if stream else [])
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, "503", "upstream exploded")
    assert "sk-very-secret" not in err


def test_provider_bad_request_is_still_a_provider_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CLITEST_API_KEY", "k")
    code, _, err = run(capsys, "chat", "hi", "--config", keyed_config(tmp_path, status=400))
    assert code == 1
    assert_one_line_error(err, "400")


# ---- as a separate process ------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MESH_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_python_dash_m_langchain_mesh(cfg):
    proc = subprocess.run([sys.executable, "-m", "langchain_mesh", "models", "--config", cfg],
                          capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "scripted:fake:chat" in proc.stdout and "scripted:fake:emb" in proc.stdout


def test_python_dash_m_error_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "langchain_mesh", "models", "--config", str(tmp_path / "x.yaml")],
                          capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mesh: error: ") and "Traceback" not in proc.stderr


def test_help_imports_no_mesh_machinery():
    code = ("import io, sys, contextlib\n"
            "from langchain_mesh.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['--help']) == 0\n"
            "heavy = [m for m in ('pydantic', 'yaml', 'langchain_mesh.mesh', 'torch') if m in sys.modules]\n"
            "print(heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                          cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
