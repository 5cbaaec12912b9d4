"""mesh.yaml validation (every problem named by its dotted path) and secrets (resolved late, never shown)."""

from __future__ import annotations

import logging
import pickle
from typing import Iterator, Optional

import pytest

from langchain_mesh import Mesh
from langchain_mesh.config import (
    DEFAULT_CONFIG,
    ConnectionConfig,
    KnowledgeBankConfig,
    MeshConfig,
    ModelConfig,
    Secret,
    ServerConfig,
    ServerKeyConfig,
    load_config,
    resolve_optional,
)
from langchain_mesh.connections import register_connection_type
from langchain_mesh.connections.base import Connection
from langchain_mesh.errors import ConfigError, CredentialError, MeshError
from langchain_mesh.schema import CompletionRequest, Purpose, StreamChunk, StreamEvent, StreamFooter
from langchain_mesh.testing.scripted import ScriptedConnectionConfig

LEAK = "sk-THIS-MUST-NEVER-LEAK-1234567890"


# A connection type with credentials, the way provider connections declare them.
class KeyedConfig(ConnectionConfig):
    api_key: Optional[Secret] = None
    base_url: Optional[str] = None


class KeyedConnection(Connection):
    config_model = KeyedConfig

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        key = self.config.api_key.get(f"connections.{self.name}.api_key")  # type: ignore[attr-defined]
        yield StreamChunk(text=f"key has {len(key)} chars")
        yield StreamFooter(finish_reason="stop")


register_connection_type("keyedtest", KeyedConnection)


def keyed(api_key, **extra):
    return {"connections": {"prov": {"type": "keyedtest", "api_key": api_key,
                                     "models": [{"id": "m"}], **extra}}}


def problem_paths(e: ConfigError) -> list[str]:
    return [p for p, _ in e.problems]


# --------------------------------------------------------------------------------------------------
# loading


YAML = """\
connections:
  fake:
    type: scripted
    description: offline models
    timeout: 30
    models:
      - {id: chat, purposes: [GENERIC_COMPLETION]}
      - {id: emb, purposes: [TEXT_EMBEDDING_EXTRACTION], description: embeddings}
      - id: both
        purposes: [GENERIC_COMPLETION, TEXT_EMBEDDING_EXTRACTION]
knowledge_banks:
  docs:
    backend: faiss
    path: ./banks/docs
    embedding_llm: scripted:fake:emb
    metadata_schema: {year: int, source: string}
server:
  port: 9000
"""


def check_loaded(cfg: MeshConfig) -> None:
    assert isinstance(cfg, MeshConfig)
    fake = cfg.connections["fake"]
    assert isinstance(fake, ScriptedConnectionConfig)  # each type validates with its own model
    assert fake.type == "scripted"
    assert fake.timeout == 30.0
    assert fake.max_retries == 0  # the scripted type turns retries off: one script, one call
    assert [m.id for m in fake.models] == ["chat", "emb", "both"]
    assert fake.models[1].purposes == [Purpose.TEXT_EMBEDDING_EXTRACTION]
    assert fake.models[2].purposes == [Purpose.GENERIC_COMPLETION, Purpose.TEXT_EMBEDDING_EXTRACTION]
    kb = cfg.knowledge_banks["docs"]
    assert kb.backend == "faiss" and kb.path == "./banks/docs" and kb.embedding_llm == "scripted:fake:emb"
    assert kb.metadata_schema == {"year": "int", "source": "string"}
    assert cfg.server.port == 9000 and cfg.server.host == "127.0.0.1"


def test_load_from_yaml_file_str_and_path(tmp_path):
    f = tmp_path / "mesh.yaml"
    f.write_text(YAML)
    check_loaded(load_config(str(f)))
    check_loaded(load_config(f))
    with Mesh.from_config(f) as mesh:
        check_loaded(mesh.config)


def test_load_from_dict_same_as_yaml():
    import yaml

    check_loaded(load_config(yaml.safe_load(YAML)))


def test_load_config_passes_mesh_config_through():
    cfg = load_config({"connections": {"fake": {"type": "scripted"}}})
    assert load_config(cfg) is cfg
    assert Mesh(cfg).config is cfg


def test_model_defaults():
    cfg = load_config({"connections": {"fake": {"type": "scripted", "models": [{"id": "x"}]}}})
    m = cfg.connections["fake"].models[0]
    assert m.purposes == [Purpose.GENERIC_COMPLETION]
    assert m.description == "" and m.capabilities is None
    assert load_config({"connections": {"fake": {"type": "scripted"}}}).connections["fake"].models is None


def test_empty_sources():
    assert load_config({}).connections == {}
    assert load_config({"connections": None}).connections == {}


def test_empty_yaml_file_is_an_empty_mesh(tmp_path):
    f = tmp_path / "mesh.yaml"
    f.write_text("# nothing yet\n")
    cfg = load_config(f)
    assert cfg.connections == {} and cfg.knowledge_banks == {}


def test_default_config_names_the_embedded_local_connection_and_bank():
    assert DEFAULT_CONFIG["connections"] == {"local": {"type": "huggingfacelocal"}}
    cfg = load_config(None)
    assert cfg.knowledge_banks["docs"].backend == "faiss"
    assert cfg.knowledge_banks["docs"].embedding_llm == "huggingfacelocal:local:all-MiniLM-L6-v2"


def test_knowledge_bank_and_server_defaults():
    kb = KnowledgeBankConfig()
    assert kb.backend == "faiss"
    assert kb.embedding_llm == "huggingfacelocal:local:all-MiniLM-L6-v2"
    assert kb.settings == {} and kb.metadata_schema == {}
    s = ServerConfig()
    assert (s.host, s.port, s.api_keys) == ("127.0.0.1", 8000, [])


# --------------------------------------------------------------------------------------------------
# validation: every problem with its dotted path, all at once


def test_unknown_top_level_key_with_hint():
    with pytest.raises(ConfigError) as ei:
        load_config({"connectons": {"a": {"type": "scripted"}}})
    assert ei.value.problems == [("connectons", "unknown key (did you mean 'connections'?)")]
    assert "connectons: unknown key (did you mean 'connections'?)" in str(ei.value)


def test_unknown_connection_key_with_hint():
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"fake": {"type": "scripted", "descripton": "x"}}})
    assert ei.value.problems == [("connections.fake.descripton", "unknown key (did you mean 'description'?)")]


def test_unknown_key_specific_to_connection_type():
    # embedding_dimensions belongs to the scripted type; a typo of it is caught against that type's model
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"fake": {"type": "scripted", "embeding_dimensions": 8}}})
    assert ei.value.problems == [
        ("connections.fake.embeding_dimensions", "unknown key (did you mean 'embedding_dimensions'?)")]
    ok = load_config({"connections": {"fake": {"type": "scripted", "embedding_dimensions": 8}}})
    assert ok.connections["fake"].embedding_dimensions == 8


@pytest.mark.parametrize(
    "raw, path, hint",
    [
        ({"connections": {"f": {"type": "scripted", "models": [{"id": "m", "purpose": ["GENERIC_COMPLETION"]}]}}},
         "connections.f.models.0.purpose", "purposes"),
        ({"connections": {"f": {"type": "scripted", "models": [{"id": "m", "capabilities": {"tool": True}}]}}},
         "connections.f.models.0.capabilities.tool", "tools"),
        ({"server": {"prot": 80}}, "server.prot", "port"),
        ({"server": {"api_keys": [{"key": "{{env:K}}", "nam": "ci"}]}}, "server.api_keys.0.nam", "name"),
        ({"knowledge_banks": {"docs": {"embeding_llm": "x"}}}, "knowledge_banks.docs.embeding_llm", "embedding_llm"),
    ],
)
def test_nested_unknown_keys_hint_from_their_own_level(raw, path, hint):
    with pytest.raises(ConfigError) as ei:
        load_config(raw)
    assert ei.value.problems == [(path, f"unknown key (did you mean {hint!r}?)")]


def test_unknown_connection_type_did_you_mean():
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"fake": {"type": "scriptd"}}})
    [(path, msg)] = ei.value.problems
    assert path == "connections.fake.type"
    assert "unknown connection type 'scriptd'" in msg
    assert "did you mean 'scripted'?" in msg
    assert "known types:" in msg and "scripted" in msg


def test_unknown_connection_type_without_close_match_lists_types():
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"x": {"type": "qqqqqqqq"}}})
    [(path, msg)] = ei.value.problems
    assert path == "connections.x.type"
    assert "did you mean" not in msg
    assert "huggingfacelocal" in msg and "scripted" in msg


@pytest.mark.parametrize("conn", [{}, {"type": ""}, {"type": None}, {"models": [{"id": "m"}]}])
def test_missing_type(conn):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"fake": conn}})
    [(path, msg)] = ei.value.problems
    assert path == "connections.fake.type"
    assert msg.startswith("missing")
    assert "scripted" in msg  # says which types exist


@pytest.mark.parametrize("purpose", ["CHAT", "generic_completion", 3])
def test_bad_purpose_in_a_model(purpose):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"fake": {"type": "scripted", "models": [
            {"id": "ok"}, {"id": "bad", "purposes": ["GENERIC_COMPLETION", purpose]}]}}})
    [(path, msg)] = ei.value.problems
    assert path == "connections.fake.models.1.purposes.1"
    assert "GENERIC_COMPLETION" in msg and "TEXT_EMBEDDING_EXTRACTION" in msg


@pytest.mark.parametrize(
    "raw, path",
    [
        ({"connections": {"f": {"type": "scripted", "models": [{"id": "  "}]}}}, "connections.f.models.0.id"),
        ({"connections": {"f": {"type": "scripted", "models": [{"purposes": []}]}}}, "connections.f.models.0.id"),
        ({"connections": {"f": {"type": "scripted", "models": "chat"}}}, "connections.f.models"),
        ({"connections": {"f": {"type": "scripted", "timeout": 0}}}, "connections.f.timeout"),
        ({"connections": {"f": {"type": "scripted", "max_retries": -1}}}, "connections.f.max_retries"),
        ({"knowledge_banks": {"kb": {"backend": "pinecone"}}}, "knowledge_banks.kb.backend"),
        ({"knowledge_banks": {"kb": {"metadata_schema": {"year": "integer"}}}},
         "knowledge_banks.kb.metadata_schema.year"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"api_keys": [{"name": "ci"}]}}, "server.api_keys.0.key"),
        ({"server": {"api_keys": [{"key": ["not", "a", "string"]}]}}, "server.api_keys.0.key"),
    ],
)
def test_bad_values_named_by_path(raw, path):
    with pytest.raises(ConfigError) as ei:
        load_config(raw)
    assert problem_paths(ei.value) == [path]
    assert path in str(ei.value)


@pytest.mark.parametrize("conn", ["scripted", ["type", "scripted"], 3])
def test_connection_must_be_a_mapping(conn):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {"fake": conn}})
    assert ei.value.problems == [("connections.fake", "must be a mapping with at least a 'type'")]


@pytest.mark.parametrize("name", ["a:b", ""])
def test_connection_names_without_colon(name):
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": {name: {"type": "scripted"}}})
    assert "contain no ':'" in ei.value.problems[0][1]


def test_connections_must_be_a_mapping():
    with pytest.raises(ConfigError) as ei:
        load_config({"connections": [{"type": "scripted"}]})
    assert problem_paths(ei.value) == ["connections"]


def test_many_problems_reported_at_once():
    raw = {
        "connectons": {},
        "server": {"port": -1},
        "knowledge_banks": {"kb": {"backend": "pinecone"}},
        "connections": {
            "a": {"type": "scripted", "descripton": "x"},
            "b": {"type": "scriptd"},
            "c": {},
            "d": {"type": "scripted", "models": [{"id": "m", "purposes": ["CHAT"]}]},
            "e": "scripted",
            "ok": {"type": "scripted"},
        },
    }
    with pytest.raises(ConfigError) as ei:
        load_config(raw)
    paths = set(problem_paths(ei.value))
    assert paths == {
        "connectons", "server.port", "knowledge_banks.kb.backend", "connections.a.descripton",
        "connections.b.type", "connections.c.type", "connections.d.models.0.purposes.0", "connections.e",
    }
    text = str(ei.value)
    assert text.startswith("invalid mesh configuration:")
    assert all(p in text for p in paths)
    assert "connections.ok" not in text


def test_config_error_type():
    with pytest.raises(ValueError):
        load_config({"bogus": 1})
    with pytest.raises(MeshError):
        load_config({"bogus": 1})


def test_file_problems_name_the_file(tmp_path):
    f = tmp_path / "mesh.yaml"
    f.write_text("connections:\n  fake:\n    type: scripted\n    modles: []\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert str(f) in str(ei.value)
    assert ei.value.problems == [("connections.fake.modles", "unknown key (did you mean 'models'?)")]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read mesh config"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "mesh.yaml"
    f.write_text("connections:\n  fake:\n    type: scripted\n   models: [\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    msg = str(ei.value)
    assert "not valid YAML" in msg and str(f) in msg
    assert "line " in msg


def test_bad_yaml_error_does_not_quote_a_secret(tmp_path):
    # PyYAML quotes the offending line in its message; that line may hold a literal key
    f = tmp_path / "mesh.yaml"
    f.write_text(f"connections:\n  prov:\n    type: keyedtest\n    api_key: {LEAK}: oops\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert "not valid YAML" in str(ei.value)
    assert "line 4" in str(ei.value)
    for shown in (str(ei.value), repr(ei.value)):
        for fragment in (LEAK, LEAK[:12], LEAK[12:24], LEAK[-12:]):  # not even a truncated quote
            assert fragment not in shown


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_non_mapping_yaml(tmp_path, text, kind):
    f = tmp_path / "mesh.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert "must be a mapping at the top level" in str(ei.value)
    assert kind in str(ei.value)
    assert str(f) in str(ei.value)


@pytest.mark.parametrize("source", [["connections"], 42, b"mesh.yaml"])
def test_source_of_wrong_kind(source):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(source)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Secret


def test_env_reference_resolved_lazily(monkeypatch):
    monkeypatch.delenv("MESH_TEST_KEY", raising=False)
    s = Secret("{{env:MESH_TEST_KEY}}")
    assert s.is_reference
    with pytest.raises(CredentialError) as ei:
        s.get("connections.prov.api_key")
    msg = str(ei.value)
    assert "MESH_TEST_KEY" in msg and "connections.prov.api_key" in msg
    monkeypatch.setenv("MESH_TEST_KEY", LEAK)
    assert s.get() == LEAK  # resolved at get(), not at construction


def test_env_reference_empty_value_is_unset(monkeypatch):
    monkeypatch.setenv("MESH_TEST_KEY", "")
    with pytest.raises(CredentialError, match="MESH_TEST_KEY"):
        Secret("{{env:MESH_TEST_KEY}}").get()


def test_reference_with_spaces(monkeypatch):
    monkeypatch.setenv("MESH_TEST_KEY", "v")
    assert Secret("{{ env : MESH_TEST_KEY }}").get() == "v"
    assert Secret("  {{env:MESH_TEST_KEY}}  ").is_reference


def test_file_reference(tmp_path):
    f = tmp_path / "key.txt"
    f.write_text(LEAK + "\n")
    s = Secret("{{file:" + str(f) + "}}")
    assert s.is_reference
    assert s.get() == LEAK  # trailing newline stripped
    assert LEAK not in repr(s) and str(f) in repr(s)


def test_file_reference_missing_file(tmp_path):
    missing = tmp_path / "absent.txt"
    with pytest.raises(CredentialError) as ei:
        Secret("{{file:" + str(missing) + "}}").get("connections.prov.api_key")
    assert str(missing) in str(ei.value)
    assert "connections.prov.api_key" in str(ei.value)


def test_file_reference_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".key").write_text("homekey")
    assert Secret("{{file:~/.key}}").get() == "homekey"


def test_literal_secret_masked_everywhere():
    s = Secret(LEAK)
    assert not s.is_reference
    assert s.get() == LEAK
    for shown in (repr(s), str(s), f"{s}", "%s" % s, "%r" % (s,), s.describe()):
        assert LEAK not in shown
        assert "*" in shown


def test_unmasked_literal_shown():
    s = Secret("https://adb-123.azuredatabricks.net", masked=False)
    assert "adb-123" in repr(s)
    assert s.get() == "https://adb-123.azuredatabricks.net"


def test_reference_describes_itself_not_its_value(monkeypatch):
    monkeypatch.setenv("MESH_TEST_KEY", LEAK)
    s = Secret("{{env:MESH_TEST_KEY}}")
    assert repr(s) == "Secret('{{env:MESH_TEST_KEY}}')"
    assert LEAK not in repr(s)


def test_secret_equality_and_type():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a")}) == 1
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_pickling_literal_secret_refused():
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(LEAK))


def test_pickling_a_config_holding_a_literal_secret_refused():
    cfg = load_config(keyed(LEAK))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(cfg)


def test_pickling_references_and_unmasked_literals_allowed():
    ref = Secret("{{env:MESH_TEST_KEY}}")
    assert pickle.loads(pickle.dumps(ref)) == ref
    plain = Secret("https://host", masked=False)
    back = pickle.loads(pickle.dumps(plain))
    assert back == plain and back.masked is False


def test_resolve_optional(monkeypatch):
    monkeypatch.setenv("MESH_TEST_KEY", "v")
    assert resolve_optional(None) is None
    assert resolve_optional("plain") == "plain"
    assert resolve_optional(Secret("{{env:MESH_TEST_KEY}}")) == "v"


# --------------------------------------------------------------------------------------------------
# secrets inside a config


def test_config_loads_with_unset_env_and_fails_only_on_use(monkeypatch):
    monkeypatch.delenv("MESH_TEST_PROV_KEY", raising=False)
    with Mesh.from_config(keyed("{{env:MESH_TEST_PROV_KEY}}")) as mesh:
        assert [i.id for i in mesh.list_llms()] == ["keyedtest:prov:m"]
        completion = mesh.get_llm("keyedtest:prov:m").new_completion().with_message("hi")
        with pytest.raises(CredentialError) as ei:
            completion.execute()
        assert "MESH_TEST_PROV_KEY" in str(ei.value)
        assert "connections.prov.api_key" in str(ei.value)
        monkeypatch.setenv("MESH_TEST_PROV_KEY", "abc")
        assert completion.execute().text == "key has 3 chars"


def test_secret_values_coerced_and_checked():
    cfg = load_config(keyed(12345))
    assert cfg.connections["prov"].api_key.get() == "12345"
    with pytest.raises(ConfigError) as ei:
        load_config(keyed({"nested": "x"}))
    assert problem_paths(ei.value) == ["connections.prov.api_key"]


def test_literal_connection_secret_never_shown(caplog):
    cfg = load_config(keyed(LEAK, base_url="http://proxy.local"))
    conn = cfg.connections["prov"]
    assert conn.api_key.get() == LEAK
    shown = [
        repr(cfg), str(cfg), repr(conn), str(conn), repr(cfg.connections),
        str(cfg.model_dump()), cfg.model_dump_json(), str(conn.model_dump()), conn.model_dump_json(),
        repr(Mesh(cfg)),
    ]
    for s in shown:
        assert LEAK not in s
    assert conn.model_dump()["api_key"] == "**********"
    assert conn.model_dump()["base_url"] == "http://proxy.local"
    with caplog.at_level(logging.DEBUG):
        log = logging.getLogger("langchain_mesh.test")
        log.info("config %s", cfg)
        log.info("config %r", cfg)
        log.info("connection %s / %r", conn, conn)
        log.info("dump %s", cfg.model_dump())
    assert caplog.records
    assert LEAK not in caplog.text


def test_reference_shown_as_reference_in_dump(monkeypatch):
    monkeypatch.setenv("MESH_TEST_PROV_KEY", LEAK)
    cfg = load_config(keyed("{{env:MESH_TEST_PROV_KEY}}"))
    assert cfg.connections["prov"].model_dump()["api_key"] == "{{env:MESH_TEST_PROV_KEY}}"
    assert LEAK not in cfg.model_dump_json()


@pytest.mark.parametrize(
    "extra",
    [
        {"api_kye": LEAK},                      # the secret under a misspelt key
        {"timeout": LEAK},                      # the secret in the wrong field
        {"models": LEAK},
        {"models": [{"id": "m", "purposes": [LEAK]}]},
        {"max_retries": [LEAK]},
    ],
)
def test_config_errors_never_quote_a_literal_secret(extra):
    raw = keyed(LEAK)
    raw["connections"]["prov"].update(extra)
    with pytest.raises(ConfigError) as ei:
        load_config(raw)
    assert ei.value.problems
    assert LEAK not in str(ei.value)
    assert LEAK not in repr(ei.value)
    assert LEAK not in repr(ei.value.problems)


def test_server_key_literal_never_shown(caplog):
    cfg = load_config({"server": {"api_keys": [{"key": LEAK, "name": "ci", "allowed_llms": ["scripted:f:chat"]}]}})
    key = cfg.server.api_keys[0]
    assert isinstance(key, ServerKeyConfig)
    assert key.key.get() == LEAK
    for s in (repr(cfg), str(cfg), repr(cfg.server), str(cfg.server), repr(key), str(key),
              str(cfg.model_dump()), cfg.model_dump_json(), key.model_dump_json()):
        assert LEAK not in s
    with caplog.at_level(logging.INFO):
        logging.getLogger("langchain_mesh.test").info("server %s %r", cfg.server, key)
    assert LEAK not in caplog.text


@pytest.mark.parametrize(
    "server",
    [
        {"port": "eighty", "api_keys": [{"key": LEAK}]},
        {"api_keys": [{"key": LEAK, "nmae": "ci"}]},
        {"api_keys": [{"key": LEAK, "allowed_llms": "all"}]},
        {"api_keys": [{"key": LEAK, "name": ["x"]}]},
        {"api_keys": {"key": LEAK}},           # a mapping where a list belongs
        {"api_keys": [LEAK]},                  # a bare key where a mapping belongs
        {"api_keys": LEAK},
    ],
)
def test_server_key_literal_never_in_errors(server):
    with pytest.raises(ConfigError) as ei:
        load_config({"server": server})
    assert LEAK not in str(ei.value)
    assert LEAK not in repr(ei.value.problems)


def test_server_key_reference(monkeypatch):
    monkeypatch.setenv("MESH_TEST_GATEWAY_KEY", "gw")
    cfg = load_config({"server": {"api_keys": [{"key": "{{env:MESH_TEST_GATEWAY_KEY}}"}]}})
    key = cfg.server.api_keys[0]
    assert key.key.is_reference and key.key.get() == "gw" and key.name == "default"
    assert key.allowed_llms is None


def test_model_config_class_is_strict():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ModelConfig(id="x", colour="blue")  # type: ignore[call-arg]
