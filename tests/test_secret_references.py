"""Secret references (issue 14, item 2): anything that looks like a reference and is not one the mesh
resolves is a ConfigError at load time naming the field and the supported syntaxes, and never reaches
the wire; ``{{secrets/scope/key}}`` goes through the configured, pluggable resolver."""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("openai")

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.config import Secret, load_config  # noqa: E402
from langchain_mesh.errors import ConfigError, CredentialError  # noqa: E402
from langchain_mesh.secrets import SecretResolver, register_secret_resolver  # noqa: E402
from langchain_mesh.testing.openai import OpenAIServer  # noqa: E402

SUPPORTED = ("{{env:NAME}}", "{{file:PATH}}", "{{secrets/SCOPE/KEY}}", "{{user}}")


@pytest.fixture(scope="module")
def server():
    with OpenAIServer(api_key="resolved-key") as srv:
        yield srv


def _config(server, api_key, **extra):
    return {"connections": {"oa": {"type": "openai", "api_key": api_key, "base_url": server.base_url,
                                   "max_retries": 0, "models": [{"id": "gpt-4o"}]}}, **extra}


def _ask(mesh):
    c = mesh.get_llm("openai:oa:gpt-4o").new_completion()
    c.with_message("hi")
    return c.execute()


@pytest.mark.parametrize("ref", ["{{enve:OPENAI_API_KEY}}", "{{ env OPENAI_API_KEY }}", "{{OPENAI_API_KEY}}",
                                 "${OPENAI_API_KEY}", "{{env:X}", "sk-{{typo}}", "{{secrets/only_scope}}"])
def test_lookalike_references_are_config_errors_and_never_sent(server, ref):
    server.reset()
    with pytest.raises(ConfigError) as ei:
        Mesh(_config(server, ref))
    msg = str(ei.value)
    assert "connections.oa.api_key" in msg and "looks like a secret reference" in msg
    assert all(s in msg for s in SUPPORTED)
    assert server.requests == []


def test_unconfigured_databricks_reference_is_a_config_error(server):
    server.reset()
    with pytest.raises(ConfigError) as ei:
        Mesh(_config(server, "{{secrets/my_scope/openai_api_key}}"))
    (path, why), = ei.value.problems
    assert path == "connections.oa.api_key" and "needs a secrets resolver" in why and "secrets:" in why
    assert server.requests == []


def test_malformed_references_elsewhere_name_their_field(server):
    cfg = _config(server, "{{env:OK}}")
    cfg["connections"]["oa"]["default_headers"] = {"X-Tenant": "{{evn:TENANT}}"}
    cfg["server"] = {"api_keys": [{"key": "{{user}}"}]}
    cfg["knowledge_banks"] = {"es": {"backend": "elasticsearch", "settings": {
        "es_url": "http://es:9200", "api_key": "{{env ES_KEY}}", "index_prefix": "{{user}}"}}}
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    problems = dict(ei.value.problems)
    assert "looks like a secret reference" in problems["connections.oa.default_headers.X-Tenant"]
    assert "only allowed in a connection's settings" in problems["server.api_keys[0].key"]
    assert "looks like a secret reference" in problems["knowledge_banks.es.settings.api_key"]
    assert "take {{env:NAME}} and {{file:PATH}} references only" in problems["knowledge_banks.es.settings.index_prefix"]


def test_env_resolver_resolves_databricks_references(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("MESH_SECRET_MY_SCOPE__OPENAI_API_KEY", "resolved-key")
    with Mesh(_config(server, "{{secrets/my_scope/openai_api_key}}", secrets={"resolver": "env"})) as m:
        assert _ask(m).success
        assert server.last_request.headers["authorization"] == "Bearer resolved-key"
        assert "resolved-key" not in repr(m.config.connections["oa"])
    monkeypatch.setenv("TEAM_SECRET_A__B", "v")
    cfg = load_config({"secrets": {"resolver": "env", "options": {"prefix": "TEAM_SECRET_"}},
                       "connections": {"oa": {"type": "openai", "api_key": "{{secrets/a/b}}"}}})
    assert cfg.connections["oa"].api_key.get() == "v"
    monkeypatch.delenv("TEAM_SECRET_A__B")
    with pytest.raises(CredentialError, match=r"secret a/b is not set.*\$TEAM_SECRET_A__B"):
        cfg.connections["oa"].api_key.get()


def test_file_resolver_reads_a_mounted_secret_and_stays_in_its_directory(server, tmp_path):
    (tmp_path / "my_scope").mkdir()
    (tmp_path / "my_scope" / "openai_api_key").write_text("resolved-key\n")
    server.reset()
    with Mesh(_config(server, "{{secrets/my_scope/openai_api_key}}",
                      secrets={"resolver": "file", "options": {"directory": str(tmp_path)}})) as m:
        assert _ask(m).success
        assert server.last_request.headers["authorization"] == "Bearer resolved-key"
    with pytest.raises(ConfigError, match="scope and key may hold"):
        load_config(_config(server, "{{secrets/../etc}}", secrets={"resolver": "file"}))
    cfg = load_config(_config(server, "{{secrets/my_scope/absent}}",
                              secrets={"resolver": "file", "options": {"directory": str(tmp_path)}}))
    with pytest.raises(CredentialError, match="cannot read secret my_scope/absent"):
        cfg.connections["oa"].api_key.get()


class VaultResolver(SecretResolver):
    """A stand-in for a vault plugin: options as keywords, values from its own store."""

    def __init__(self, url: str):
        self.url = url
        self.data = {("team", "openai"): "resolved-key"}

    def resolve(self, scope: str, key: str) -> str:
        try:
            return self.data[(scope, key)]
        except KeyError:
            raise CredentialError(f"vault has no {scope}/{key}") from None


def test_plugin_resolver_registered_at_run_time_and_by_entry_point(server, monkeypatch):
    register_secret_resolver("vault", VaultResolver)
    server.reset()
    cfg = _config(server, "{{secrets/team/openai}}", secrets={"resolver": "vault", "options": {"url": "https://v"}})
    with Mesh(cfg) as m:
        assert _ask(m).success and server.last_request.headers["authorization"] == "Bearer resolved-key"
    with pytest.raises(ConfigError, match=r"secrets.options.*'vault' resolver refused its options.*tokn"):
        load_config(_config(server, "x", secrets={"resolver": "vault", "options": {"url": "u", "tokn": "t"}}))
    with pytest.raises(ConfigError, match=r"unknown secret resolver 'vaullt'.*env.*file"):
        load_config(_config(server, "x", secrets={"resolver": "vaullt"}))

    class EP:
        name = "epvault"

        def load(self):
            return VaultResolver

    import langchain_mesh.secrets as secrets_mod

    monkeypatch.setattr(secrets_mod, "_entry_points", lambda: {"epvault": EP()})
    loaded = load_config(_config(server, "{{secrets/team/openai}}", secrets={"resolver": "epvault",
                                                                              "options": {"url": "u"}}))
    assert loaded.connections["oa"].api_key.get() == "resolved-key"


def test_reference_kinds_describe_themselves_and_pickle_with_their_binding(monkeypatch):
    cfg = load_config({"secrets": {"resolver": "env"},
                       "connections": {"oa": {"type": "openai", "api_key": "{{secrets/s/k}}"},
                                       "ob": {"type": "openai", "api_key": "{{user}}"}}})
    s, u = cfg.connections["oa"].api_key, cfg.connections["ob"].api_key
    assert repr(s) == "Secret('{{secrets/s/k}}')" and s.kind == "secrets"
    assert repr(u) == "Secret('{{user}}')" and u.user_slot == ("ob", "api_key")
    monkeypatch.setenv("MESH_SECRET_S__K", "v")
    assert pickle.loads(pickle.dumps(s)).get() == "v"
    with pytest.raises(CredentialError, match="each caller's own stored credential"):
        u.get()
    assert Secret.literal("{{env:HOME}}").get() == "{{env:HOME}}"  # a user's value is never a reference
