"""Fine-tuned saved models without training: the registry's versions (create, list, activate, pin,
roll back), its crash safety (an exception or a SIGKILL mid-run leaves it as it was), the LLM ids it
adds to the mesh, the training-data loaders and the ``mesh finetune`` CLI. No model is loaded here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from langchain_mesh import Mesh
from langchain_mesh.cli import main
from langchain_mesh.errors import ConfigError, SettingsError, UnknownLLMError
from langchain_mesh.finetune import SavedModelError, load_preference_pairs, load_sft_examples
from langchain_mesh.finetune.data import fingerprint

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> dict:
    return {"connections": {"local": {"type": "huggingfacelocal", "saved_models_dir": str(tmp_path / "sm")},
                            "remote": {"type": "openai", "api_key": "sk-test", "models": [{"id": "gpt-4o"}]}}}


@pytest.fixture
def mesh(tmp_path):
    with Mesh(_config(tmp_path)) as m:
        yield m


def _fake_version(sm, tag: str, activate: bool = True, metrics: dict | None = None):
    """A version whose 'adapter' is a placeholder file: enough for the registry, never served here."""
    with sm.new_version(method="lora", data_fingerprint=f"sha256:{tag}", activate=activate) as draft:
        (draft.working_directory / "adapter_config.json").write_text(json.dumps({"tag": tag}))
        draft.metrics.update(metrics or {"train_loss": 1.0})
    return draft.version


def _registry_state(root: Path) -> dict:
    """Every file of the registry with its content, except staging folders and lock files."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and ".staging-" not in rel and not p.name.endswith(".lock"):
            out[rel] = p.read_bytes()
    return out


def test_create_list_activate_pin_and_roll_back(mesh, tmp_path):
    sm = mesh.create_finetuned_saved_model("capitals", connection="local", description="made-up capitals")
    assert sm.base_model == "SmolLM2-135M-Instruct" and sm.active_version is None
    assert (tmp_path / "sm" / "capitals" / "SAVED_MODEL.json").is_file()
    # without a version it is no LLM yet
    assert not [i for i in mesh.list_llms() if "capitals" in i.id]

    assert _fake_version(sm, "a", metrics={"train_loss": 2.0, "eval_loss": 1.5}) == "v1"
    assert _fake_version(sm, "b") == "v2"
    assert _fake_version(sm, "c", activate=False) == "v3"
    versions = sm.list_versions()
    assert [(v.id, v.active) for v in versions] == [("v1", False), ("v2", True), ("v3", False)]
    v1 = versions[0]
    assert v1.method == "lora" and v1.kind == "adapter" and v1.base_model == "SmolLM2-135M-Instruct"
    assert v1.data_fingerprint == "sha256:a" and v1.metrics == {"train_loss": 2.0, "eval_loss": 1.5}
    assert v1.created_at <= versions[1].created_at

    ids = [i.id for i in mesh.list_llms(purpose="GENERIC_COMPLETION")]
    assert ids[:1] == ["huggingfacelocal:local:SmolLM2-135M-Instruct"]
    assert {"huggingfacelocal:local:capitals", "huggingfacelocal:local:capitals@v1",
            "huggingfacelocal:local:capitals@v2", "huggingfacelocal:local:capitals@v3"} <= set(ids)
    item = next(i for i in mesh.list_llms() if i.id == "huggingfacelocal:local:capitals")
    assert "active version v2" in item.description and item.connection == "local"

    # pinned ids stay on their version; the plain id follows the active one
    assert sm.llm_id() == "huggingfacelocal:local:capitals" and sm.llm_id("v1").endswith("capitals@v1")
    assert mesh.get_llm(sm.llm_id("v3")).model == "capitals@v3"
    sm.activate("v3")
    assert sm.active_version == "v3" and sm.get_version().id == "v3"
    assert "active version v3" in next(i for i in mesh.list_llms() if i.id == sm.llm_id()).description
    assert sm.rollback() == "v2" and sm.rollback() == "v1"
    with pytest.raises(SavedModelError, match="no version before v1"):
        sm.rollback()
    with pytest.raises(SavedModelError, match="versions: v1, v2, v3"):
        sm.activate("v9")
    with pytest.raises(SavedModelError, match="has no version"):
        sm.llm_id("v9")
    with pytest.raises(UnknownLLMError, match="capitals@v9"):
        mesh.get_llm("huggingfacelocal:local:capitals@v9")

    # another Mesh over the same folder (another process, `mesh serve`) sees the same registry
    with Mesh(_config(tmp_path)) as other:
        again = other.get_saved_model("capitals")
        assert again.active_version == "v1" and len(again.list_versions()) == 3
        assert [s.name for s in other.list_saved_models()] == ["capitals"]


def test_a_version_made_by_another_process_is_found_by_its_pinned_id(mesh, tmp_path):
    sm = mesh.create_finetuned_saved_model("late", connection="local")
    _fake_version(sm, "a")
    assert {i.id for i in mesh.list_llms()} >= {"huggingfacelocal:local:late@v1"}  # listed (and cached)
    with Mesh(_config(tmp_path)) as other:
        _fake_version(other.get_saved_model("late"), "b")
    assert mesh.get_llm("huggingfacelocal:local:late@v2").model == "late@v2"


def test_bad_names_connections_and_duplicates_are_refused(mesh):
    with pytest.raises(ConfigError, match="invalid saved model name"):
        mesh.create_finetuned_saved_model("bad name@v1")
    with pytest.raises(ConfigError, match="huggingfacelocal connection; 'remote' is of type 'openai'"):
        mesh.create_finetuned_saved_model("x", connection="remote")
    with pytest.raises(ConfigError, match="not a connection"):
        mesh.create_finetuned_saved_model("x", connection="nope")
    with pytest.raises(ConfigError, match="not a chat model"):
        mesh.create_finetuned_saved_model("x", base_model="all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="already a model"):
        mesh.create_finetuned_saved_model("SmolLM2-135M-Instruct")
    mesh.create_finetuned_saved_model("dup")
    with pytest.raises(SavedModelError, match="already exists"):
        mesh.create_finetuned_saved_model("dup")
    with pytest.raises(SavedModelError, match="no fine-tuned saved model 'ghost'; saved models: dup"):
        mesh.get_saved_model("ghost")


def test_a_failed_run_leaves_the_registry_as_it_was(mesh, tmp_path):
    sm = mesh.create_finetuned_saved_model("safe")
    _fake_version(sm, "a")
    before = _registry_state(tmp_path / "sm")
    with pytest.raises(RuntimeError, match="crash at step 3"):
        with sm.new_version(method="lora") as draft:
            (draft.working_directory / "adapter_model.safetensors").write_bytes(b"half")
            raise RuntimeError("crash at step 3")
    assert _registry_state(tmp_path / "sm") == before
    assert not list((tmp_path / "sm" / "safe" / "versions").glob(".staging-*"))
    # a run that saved nothing is refused, and leaves nothing either
    with pytest.raises(SavedModelError, match="nothing was saved"):
        with sm.new_version():
            pass
    assert _registry_state(tmp_path / "sm") == before and sm.active_version == "v1"


def test_a_run_killed_midway_leaves_the_registry_as_it_was(mesh, tmp_path):
    sm = mesh.create_finetuned_saved_model("killed")
    _fake_version(sm, "a")
    before = _registry_state(tmp_path / "sm")
    config = tmp_path / "mesh.json"
    config.write_text(json.dumps(_config(tmp_path)))
    # the child writes part of a version, says so, then waits to be killed (SIGKILL: no cleanup runs)
    child = textwrap.dedent(f"""
        import json, sys, time
        from langchain_mesh import Mesh
        mesh = Mesh(json.load(open({str(config)!r})))
        sm = mesh.get_saved_model("killed")
        with sm.new_version(method="lora") as draft:
            (draft.working_directory / "adapter_config.json").write_text("{{}}")
            (draft.working_directory / "adapter_model.safetensors").write_bytes(b"partial")
            print("MIDWAY", flush=True)
            time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "MIDWAY"
        staging = list((tmp_path / "sm" / "killed" / "versions").glob(".staging-*"))
        assert len(staging) == 1
        # a live run's staging folder is never taken for a dead one
        assert sm._folder.remove_dead_staging() == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert _registry_state(tmp_path / "sm") == before
    assert [v.id for v in sm.list_versions()] == ["v1"] and sm.active_version == "v1"
    assert "huggingfacelocal:local:killed@v2" not in {i.id for i in mesh.list_llms()}
    # the next run clears the dead one's folder, and numbers its version as if it never happened
    assert _fake_version(sm, "b") == "v2"
    assert not list((tmp_path / "sm" / "killed" / "versions").glob(".staging-*"))


def test_training_data_formats_and_errors(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                          {"role": "assistant", "content": "Hello."}]},
            {"prompt": "2+2?", "completion": "4"}]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    from_list, from_file = load_sft_examples(rows), load_sft_examples(jsonl)
    assert from_list == from_file
    assert from_list[0] == {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                            "completion": [{"role": "assistant", "content": "Hello."}]}
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("prompt,completion\n2+2?,4\n")
    assert load_sft_examples(csv_file) == from_list[1:]
    assert fingerprint(load_sft_examples(csv_file)) == fingerprint(from_list[1:]) != fingerprint(from_list)

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("prompt,chosen,rejected\nSay hi,Hello!,Go away.\n")
    assert load_preference_pairs(pairs) == [{"prompt": [{"role": "user", "content": "Say hi"}],
                                             "chosen": [{"role": "assistant", "content": "Hello!"}],
                                             "rejected": [{"role": "assistant", "content": "Go away."}]}]

    with pytest.raises(SettingsError, match=r"train\[0\]: unknown keys \['answer'\]"):
        load_sft_examples([{"prompt": "a", "completion": "b", "answer": "c"}])
    with pytest.raises(SettingsError, match="last message must be the assistant"):
        load_sft_examples([{"messages": [{"role": "user", "content": "a"}]}])
    with pytest.raises(SettingsError, match="role"):
        load_sft_examples([{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}])
    with pytest.raises(SettingsError, match="no examples"):
        load_sft_examples([])
    with pytest.raises(SettingsError, match="no file"):
        load_sft_examples(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(SettingsError, match="line 2 is not JSON"):
        load_sft_examples(bad)
    with pytest.raises(SettingsError, match="'prompt', 'chosen' and 'rejected'"):
        load_preference_pairs([{"prompt": "a", "chosen": "b"}])


def test_mesh_finetune_cli(tmp_path, capsys):
    config = tmp_path / "mesh.json"
    config.write_text(json.dumps(_config(tmp_path)))
    assert main(["finetune", "create", "bot", "--config", str(config)]) == 0
    assert "created saved model bot (base SmolLM2-135M-Instruct)" in capsys.readouterr().out
    with Mesh(_config(tmp_path)) as m:
        sm = m.get_saved_model("bot")
        _fake_version(sm, "a")
        _fake_version(sm, "b")
    assert main(["finetune", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "huggingfacelocal:local:bot"
    assert main(["finetune", "versions", "bot", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:4] for line in lines] == ["  v1", "* v2"]
    assert main(["finetune", "activate", "bot", "v1", "--config", str(config)]) == 0
    assert "version v1 is active" in capsys.readouterr().out
    assert main(["finetune", "activate", "bot", "v7", "--config", str(config)]) == 2
    assert "no version 'v7'" in capsys.readouterr().err
    assert main(["finetune", "rollback", "bot", "--config", str(config)]) == 2
    assert main(["finetune", "train", "bot", "--data", str(tmp_path / "none.jsonl"), "--config", str(config)]) == 2
    assert "no file" in capsys.readouterr().err
    assert main(["finetune", "create", "x", "--connection", "remote", "--config", str(config)]) == 2


def test_sft_and_dpo_refuse_models_that_are_not_local(mesh, tmp_path):
    from langchain_mesh.finetune import dpo, sft

    rows = [{"prompt": "a", "completion": "b"}]
    with pytest.raises(ConfigError, match="not a local model"):
        sft("openai:remote:gpt-4o", rows, tmp_path / "out", mesh=mesh)
    with pytest.raises(ConfigError, match="not a local model"):
        dpo("openai:remote:gpt-4o", [{"prompt": "a", "chosen": "b", "rejected": "c"}], tmp_path / "out", mesh=mesh)
    with pytest.raises(SettingsError, match="'prompt', 'chosen' and 'rejected'"):
        dpo("openai:remote:gpt-4o", rows, tmp_path / "out", mesh=mesh)
