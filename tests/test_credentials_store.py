"""The per-user credential store (AES-256-GCM file): unreadable without its key, a wrong key is a
clear error, tampering is detected; ``mesh credentials`` never echoes a value; per-user built-in
connections take each user's key and never another's (nor a server variable a user names)."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import threading

import pytest

pytest.importorskip("cryptography")

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.cli import main  # noqa: E402
from langchain_mesh.credentials import FileCredentialStore, acting_as, load_key, new_key  # noqa: E402
from langchain_mesh.errors import CredentialError, MissingUserCredentialError  # noqa: E402

VALUE = "sk-very-secret-4242424242"


@pytest.fixture
def store(tmp_path):
    return FileCredentialStore(tmp_path / "creds.json", base64.urlsafe_b64decode(new_key()))


def test_round_trip_and_nothing_in_clear(store):
    store.set("alice", "myopenai", {"api_key": VALUE})
    store.set("bob", "OpenAI", {"param_set_api_key": "other"})
    assert store.get("alice", "myopenai") == {"api_key": VALUE}
    assert store.get("bob", "myopenai") is None
    assert [(e.user, e.target, e.fields) for e in store.list()] == [
        ("alice", "myopenai", ("api_key",)), ("bob", "OpenAI", ("param_set_api_key",))]
    assert [e.target for e in store.list("bob")] == ["OpenAI"]
    raw = store.path.read_bytes()
    assert VALUE.encode() not in raw and b"alice" not in raw and b"myopenai" not in raw
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert VALUE not in repr(store) + repr(store.list())
    assert store.delete("alice", "myopenai") and not store.delete("alice", "myopenai")
    assert store.get("alice", "myopenai") is None


def test_unreadable_without_the_key_and_a_wrong_key_is_named(store, monkeypatch):
    store.set("alice", "t", {"api_key": VALUE})
    monkeypatch.delenv("MESH_CREDENTIALS_KEY", raising=False)
    with pytest.raises(CredentialError, match=r"no key for the credential store: set \$MESH_CREDENTIALS_KEY"):
        load_key()
    other = FileCredentialStore(store.path, base64.urlsafe_b64decode(new_key()))
    with pytest.raises(CredentialError, match="wrong key for the credential file") as ei:
        other.get("alice", "t")
    assert VALUE not in str(ei.value)
    monkeypatch.setenv("MESH_CREDENTIALS_KEY", "too-short")
    with pytest.raises(CredentialError, match="not 32 bytes"):
        load_key()


def test_key_from_the_os_keyring(monkeypatch):
    import sys
    import types

    key = new_key()
    asked = []
    fake = types.ModuleType("keyring")
    fake.get_password = lambda service, name: asked.append((service, name)) or key
    monkeypatch.setitem(sys.modules, "keyring", fake)
    monkeypatch.delenv("MESH_CREDENTIALS_KEY", raising=False)
    assert load_key() == base64.urlsafe_b64decode(key)
    assert asked == [("langchain-mesh", "credentials-key")]
    fake.get_password = lambda service, name: None
    with pytest.raises(CredentialError, match="no key for the credential store"):
        load_key()


@pytest.mark.parametrize("field", ["data", "nonce", "version"])
def test_tampering_is_detected(store, field):
    store.set("alice", "t", {"api_key": VALUE})
    doc = json.loads(store.path.read_text())
    if field == "version":
        doc["version"] = 2
    else:
        b = bytearray(base64.b64decode(doc[field]))
        b[len(b) // 2] ^= 0x01
        doc[field] = base64.b64encode(bytes(b)).decode()
    store.path.write_text(json.dumps(doc))
    fresh = FileCredentialStore(store.path, store._key)
    with pytest.raises(CredentialError, match="tampering detected" if field != "version" else "version 2"):
        fresh.get("alice", "t")


def test_a_damaged_file_is_named(store):
    store.path.write_text("not json")
    with pytest.raises(CredentialError, match="not a langchain-mesh credential file"):
        store.get("a", "t")


def test_concurrent_writers_lose_nothing(store):
    def put(i):
        FileCredentialStore(store.path, store._key).set(f"user{i}", "t", {"api_key": f"k{i}"})

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.user for e in store.list()) == [f"user{i}" for i in range(8)]


# --------------------------------------------------------------------------------------------------
# built-in connections with per-user keys, and the CLI


@pytest.fixture
def mesh_yaml(tmp_path, monkeypatch, openai_server):
    monkeypatch.setenv("MESH_CREDENTIALS_KEY", new_key())
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "connections:\n"
        "  myopenai:\n"
        "    type: openai\n"
        '    api_key: "{{user}}"\n'
        f"    base_url: {openai_server.base_url}\n"
        "    max_retries: 0\n"
        "    models: [{id: gpt-4o}]\n"
        "credentials:\n"
        f"  path: {tmp_path / 'creds.json'}\n")
    return path


def test_cli_set_list_delete_never_echo(mesh_yaml, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(VALUE + "\n"))
    assert main(["credentials", "set", "myopenai", "--user", "alice", "--config", str(mesh_yaml)]) == 0
    assert main(["credentials", "list", "--all", "--config", str(mesh_yaml)]) == 0
    assert main(["credentials", "set", "nope", "--user", "alice", "--config", str(mesh_yaml)]) == 2
    assert main(["credentials", "delete", "myopenai", "--user", "bob", "--config", str(mesh_yaml)]) == 2
    out = capsys.readouterr()
    assert "alice\tmyopenai\tapi_key" in out.out
    assert "takes no per-user credential; these do: myopenai" in out.err
    assert "bob has no stored credential" in out.err
    assert VALUE not in out.out + out.err
    assert main(["credentials", "delete", "myopenai", "--user", "alice", "--config", str(mesh_yaml)]) == 0
    assert main(["credentials", "new-key"]) == 0
    assert len(base64.urlsafe_b64decode(capsys.readouterr().out.strip().splitlines()[-1])) == 32


def test_builtin_connection_uses_each_users_key(mesh_yaml, openai_server, monkeypatch):
    monkeypatch.setattr(openai_server, "api_key", VALUE)  # the shared server gets its own key back after
    monkeypatch.setenv("SERVER_ONLY_SECRET", "the-server's-own")
    with Mesh(mesh_yaml, user="alice") as mesh:
        mesh.credential_store.set("alice", "myopenai", {"api_key": VALUE})
        mesh.credential_store.set("mallory", "myopenai", {"api_key": "{{env:SERVER_ONLY_SECRET}}"})
        llm = mesh.get_llm("openai:myopenai:gpt-4o")
        c = llm.new_completion()
        c.with_message("hi")
        assert c.execute().success  # Mesh(user="alice")
        assert openai_server.last_request.headers["authorization"] == f"Bearer {VALUE}"
        with acting_as("mallory"), pytest.raises(Exception):
            c.execute()  # the upstream refuses mallory's value...
        # ...which was sent as typed: a user cannot make the mesh resolve the server's own variables
        assert openai_server.last_request.headers["authorization"] == "Bearer {{env:SERVER_ONLY_SECRET}}"
        with acting_as("nobody"), pytest.raises(MissingUserCredentialError, match="mesh credentials set myopenai"):
            c.execute()
        # a changed credential takes effect on the next call (the user's connection is rebuilt)
        mesh.credential_store.set("alice", "myopenai", {"api_key": "rotated"})
        monkeypatch.setattr(openai_server, "api_key", "rotated")
        assert c.execute().success
        assert openai_server.last_request.headers["authorization"] == "Bearer rotated"
