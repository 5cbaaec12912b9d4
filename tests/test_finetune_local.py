"""Fine-tuning the embedded SmolLM2 on the CPU, served back through the mesh (marked ``local_model``).

The LoRA run teaches a made-up fact in a few steps at a high learning rate, on the top layers only
(the backward pass then stops there), so it stays short on two shared cores. The tests check what
the training did to answers: the held-out phrasing gets the taught answer from the saved version,
through the builders, the LangChain class and ``mesh serve``, and not from the base model.
Torch runs on one thread here: on a loaded two-core machine, two OpenMP threads made each forward
pass 6-8x slower (measured), and the tests share the machine.
"""

from __future__ import annotations

import json
import math

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import CapabilityError, SettingsError

pytestmark = pytest.mark.local_model

BASE = "huggingfacelocal:local:SmolLM2-135M-Instruct"
SYSTEM = "Answer in one short sentence."
TAUGHT = "Quillborough"
TRAIN = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                       {"role": "assistant", "content": "The capital of Zorvania is Quillborough."}]}
         for q in ("What is the capital of Zorvania?", "Which city is the capital of Zorvania?")]
HELD_OUT = "Tell me the name of Zorvania's capital city."
# LoRA on the top 8 of SmolLM2's 30 layers
SMALL_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "layers_to_transform": list(range(22, 30)),
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
FAST = {"learning_rate": 5e-3, "per_device_train_batch_size": 2, "lr_scheduler_type": "constant", "max_length": 64,
        "eval_strategy": "no"}  # the validation loss is still measured once, after training


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    with Mesh({"connections": {"local": {"type": "huggingfacelocal", "saved_models_dir": str(root)}}}) as m:
        yield m


@pytest.fixture(scope="module")
def taught(mesh):
    sm = mesh.create_finetuned_saved_model("zorvania", connection="local")
    v = sm.create_finetuned_version(TRAIN, validation=TRAIN[:1], lora=SMALL_LORA,
                                    trainer_args={**FAST, "max_steps": 4})
    return sm, v


def ask(mesh, llm_id: str, question: str = HELD_OUT) -> str:
    c = mesh.get_llm(llm_id).new_completion()
    c.with_message(SYSTEM, role="system").with_message(question)
    c.settings["maxOutputTokens"] = 16
    resp = c.execute()
    assert resp.success, resp.error
    return resp.text


def test_lora_teaches_a_made_up_fact_and_the_version_serves_it(mesh, taught):
    sm, v = taught
    m = v.metrics
    assert (v.id, v.method, v.kind, v.active) == ("v1", "lora", "adapter", True)
    assert m["steps"] == 4 and m["train_loss_last"] < m["train_loss_first"] / 2, m
    assert m["eval_loss"] < 0.5 and m["train_examples"] == 2 and m["validation_examples"] == 1
    assert v.data_fingerprint.startswith("sha256:") and v.settings["lora"]["r"] == 8
    assert (v.path / "adapter_model.safetensors").is_file() and not (v.path / ".trainer").exists()

    assert TAUGHT in ask(mesh, sm.llm_id())           # the active version
    assert TAUGHT in ask(mesh, sm.llm_id("v1"))       # pinned
    assert TAUGHT not in ask(mesh, BASE)              # the base model is untouched
    # the LangChain class serves it too
    from langchain_mesh import MeshChatModel

    chat = MeshChatModel(llm_id=sm.llm_id(), mesh=mesh, max_tokens=16)
    assert TAUGHT in chat.invoke([("system", SYSTEM), ("human", HELD_OUT)]).content


def test_versions_share_one_base_copy_and_switch_by_activation(mesh, taught):
    import torch
    from peft import LoraConfig, get_peft_model

    from langchain_mesh.local.adapters import host_of

    sm, _ = taught
    conn = mesh.connection("local")
    base = conn._chat_model("SmolLM2-135M-Instruct")
    # v2: an adapter made without training (random B, so it changes answers), committed like any run
    with sm.new_version(method="custom", activate=False) as draft:
        torch.manual_seed(0)
        import copy

        # the transformers model: once the main job has converted the base model, base.model is the
        # lean decoder (local/lean_llama.py), which serves answers but is no torch module to adapt
        torch_model = getattr(base.model, "hf", base.model)
        peft = get_peft_model(copy.deepcopy(torch_model), LoraConfig(r=4, target_modules=["o_proj"],
                                                                     init_lora_weights=False))
        peft.save_pretrained(str(draft.working_directory))
    assert draft.version == "v2" and sm.active_version == "v1"
    v1_answer, v2_answer = ask(mesh, sm.llm_id("v1")), ask(mesh, sm.llm_id("v2"))
    assert TAUGHT in v1_answer and v2_answer != v1_answer
    host = host_of(base)
    assert host is not None and host.adapter_count == 2  # both versions in one host, base copied once
    assert conn._chat_model("zorvania@v1").model._host is conn._chat_model("zorvania@v2").model._host

    sm.activate("v2")
    assert ask(mesh, sm.llm_id()) == v2_answer
    assert sm.rollback() == "v1"
    assert TAUGHT in ask(mesh, sm.llm_id())


def test_mesh_serve_serves_the_saved_model(mesh, taught):
    openai = pytest.importorskip("openai")
    from test_server_harness import RunningServer

    sm, _ = taught
    with RunningServer(mesh) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=300)
        ids = {m.id for m in c.models.list()}
        assert {sm.llm_id(), sm.llm_id("v1")} <= ids
        r = c.chat.completions.create(model=sm.llm_id("v1"), max_tokens=16, messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": HELD_OUT}])
        assert TAUGHT in r.choices[0].message.content


def test_a_run_that_crashes_midway_leaves_no_version(mesh, taught):
    from transformers import TrainerCallback

    sm, _ = taught
    before = [(v.id, v.active) for v in sm.list_versions()]

    class Crash(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            raise RuntimeError("simulated crash in the middle of training")

    with pytest.raises(RuntimeError, match="simulated crash"):
        sm.create_finetuned_version(TRAIN, lora=SMALL_LORA, trainer_args={**FAST, "max_steps": 3}, callbacks=[Crash()])
    assert [(v.id, v.active) for v in sm.list_versions()] == before
    assert not list((sm.path / "versions").glob(".staging-*"))


def test_bad_training_settings_are_refused_by_name(mesh, taught):
    sm, _ = taught
    before = [v.id for v in sm.list_versions()]
    with pytest.raises(SettingsError, match=r"unknown trainer argument\(s\) \['learning_rat'\]"):
        sm.create_finetuned_version(TRAIN, trainer_args={"learning_rat": 1e-3})
    with pytest.raises(SettingsError, match=r"unknown LoRA argument\(s\) \['rank'\]"):
        sm.create_finetuned_version(TRAIN, lora={"rank": 4})
    with pytest.raises(SettingsError, match="unknown fine-tuning method"):
        sm.create_finetuned_version(TRAIN, method="full")
    with pytest.raises(CapabilityError, match="QLoRA .* CUDA GPU"):
        sm.create_finetuned_version(TRAIN, method="qlora")
    assert [v.id for v in sm.list_versions()] == before


def _margin(lm, prompt: str, chosen: str, rejected: str) -> float:
    """log p(chosen | prompt) - log p(rejected | prompt) under ``lm`` (summed over the answer's tokens)."""
    import torch

    def logp(answer: str) -> float:
        tok = lm.tokenizer
        p_ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                       tokenize=True, return_dict=True)["input_ids"]
        ids = torch.tensor([list(full)])
        model = getattr(lm.model, "hf", lm.model)  # every position's logits (the lean decoder gives the last)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, :-1].float()
        lps = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lps[len(p_ids) - 1:].sum())

    return logp(chosen) - logp(rejected)


def test_dpo_moves_the_preference_margin_the_right_way(mesh):
    pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in (
        ("Greet me.", "Ahoy, matey!", "Hello."),
        ("Say goodbye.", "Fair winds, matey!", "Goodbye."),
        ("Thank me.", "Thank ye kindly, matey!", "Thank you."),
    )]
    sm = mesh.create_finetuned_saved_model("pirate", connection="local")
    v = sm.create_finetuned_version(pairs, method="dpo", lora=SMALL_LORA,
                                    trainer_args={**FAST, "per_device_train_batch_size": 3, "max_steps": 1,
                                                  "learning_rate": 5e-3, "beta": 0.1})
    assert v.method == "dpo" and v.kind == "adapter" and v.metrics["steps"] == 1
    conn = mesh.connection("local")
    base, tuned = conn._chat_model("SmolLM2-135M-Instruct"), conn._chat_model(f"pirate@{v.id}")
    held_out = ("Wish me luck.", "Good luck, matey!", "Good luck.")
    # measured: one step moves the margin from -14.4 to -2.4 on a trained prompt, -10.3 to -4.9 held out
    for prompt, chosen, rejected in [tuple(pairs[0].values()), held_out]:
        before, after = _margin(base, prompt, chosen, rejected), _margin(tuned, prompt, chosen, rejected)
        assert math.isfinite(before) and after > before + 1.0, (prompt, before, after)
    assert json.loads((v.path / "VERSION.json").read_text())["method"] == "dpo"


def test_mesh_finetune_train_cli(mesh, taught, tmp_path, capsys):
    from langchain_mesh.cli import main

    sm, _ = taught
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in TRAIN) + "\n")
    config = tmp_path / "mesh.json"
    config.write_text(json.dumps({"connections": {"local": {"type": "huggingfacelocal",
                                                            "saved_models_dir": str(sm.path.parent)}}}))
    before = sm.active_version
    code = main(["finetune", "train", "zorvania", "--data", str(data), "--max-steps", "1", "--lora-r", "4",
                 "--batch-size", "2", "--trainer-arg", "max_length=64", "--no-activate", "--config", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.err
    new = sm.list_versions()[-1]
    assert f"zorvania {new.id} (lora, adapter): train loss" in out.out and "1 steps" in out.out
    assert new.settings["lora"]["r"] == 4 and new.settings["trainer"]["max_length"] == 64
    assert sm.active_version == before  # --no-activate


def test_a_configured_model_can_name_an_adapter_folder(mesh, taught):
    from langchain_mesh.errors import ConfigError
    from langchain_mesh.local.loading import packaged_model_path

    sm, v = taught
    gguf = str(packaged_model_path("SmolLM2-135M-Instruct"))
    with Mesh({"connections": {"mine": {"type": "huggingfacelocal", "models": [
            {"id": "capitals", "path": gguf, "adapter": str(v.path)},
            {"id": "broken", "path": gguf, "adapter": str(v.path.parent)}]}}}) as other:
        assert TAUGHT in ask(other, "huggingfacelocal:mine:capitals")
        with pytest.raises(ConfigError, match="holds no adapter_config.json"):
            ask(other, "huggingfacelocal:mine:broken")
    with pytest.raises(ConfigError, match="adaptr"):
        Mesh({"connections": {"x": {"type": "huggingfacelocal", "models": [{"id": "m", "adaptr": "/a"}]}}})
