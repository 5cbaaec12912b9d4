"""Timings of the fine-tuning path on this machine: a LoRA run that teaches a made-up fact to the
embedded SmolLM2, then a DPO run on three preference pairs, each saved as a saved-model version and
asked a held-out question through the mesh. The same script runs on a CUDA machine (bf16 there).

    python bench/finetune.py [--steps 4] [--dpo-steps 3] [--threads N]

Prints one line per phase: device, dtype, seconds, losses, and whether the held-out answer changed.
On a CPU the default run takes minutes; ``--steps 1 --dpo-steps 1`` checks the path quickly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYSTEM = "Answer in one short sentence."
TRAIN = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                       {"role": "assistant", "content": "The capital of Zorvania is Quillborough."}]}
         for q in ("What is the capital of Zorvania?", "Which city is the capital of Zorvania?")]
PAIRS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in (
    ("Greet me.", "Ahoy, matey!", "Hello."), ("Say goodbye.", "Fair winds, matey!", "Goodbye."),
    ("Thank me.", "Thank ye kindly, matey!", "Thank you."))]
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "layers_to_transform": list(range(22, 30)),
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def ask(mesh, llm_id: str, question: str) -> str:
    c = mesh.get_llm(llm_id).new_completion().with_message(SYSTEM, role="system").with_message(question)
    c.settings["maxOutputTokens"] = 16
    return c.execute().text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dpo-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from langchain_mesh import Mesh

    root = tempfile.mkdtemp(prefix="bench-finetune-")
    mesh = Mesh({"connections": {"local": {"type": "huggingfacelocal", "saved_models_dir": root}}})
    t = time.perf_counter()
    base = mesh.connection("local")._chat_model("SmolLM2-135M-Instruct")
    print(f"load: {time.perf_counter() - t:.1f} s on {base.device}, {next(base.model.parameters()).dtype}, "
          f"torch threads {torch.get_num_threads()}")
    fast = {"learning_rate": 5e-3, "per_device_train_batch_size": 2, "lr_scheduler_type": "constant", "max_length": 64}

    sm = mesh.create_finetuned_saved_model("zorvania")
    t = time.perf_counter()
    v = sm.create_finetuned_version(TRAIN, validation=TRAIN[:1], lora=LORA, trainer_args={**fast, "max_steps": a.steps})
    m = v.metrics
    print(f"lora: {time.perf_counter() - t:.1f} s for {m['steps']} steps; train loss {m['train_loss_first']:.3f} -> "
          f"{m['train_loss_last']:.3f}, eval loss {m['eval_loss']:.3f}")
    q = "Tell me the name of Zorvania's capital city."
    t = time.perf_counter()
    tuned = ask(mesh, sm.llm_id(), q)
    print(f"ask tuned ({time.perf_counter() - t:.2f} s): {tuned!r}")
    print(f"ask base: {ask(mesh, 'huggingfacelocal:local:SmolLM2-135M-Instruct', q)!r}")

    sm2 = mesh.create_finetuned_saved_model("pirate")
    t = time.perf_counter()
    v2 = sm2.create_finetuned_version(PAIRS, method="dpo", lora=LORA, trainer_args={
        **fast, "per_device_train_batch_size": 3, "max_steps": a.dpo_steps, "learning_rate": 2e-3})
    print(f"dpo: {time.perf_counter() - t:.1f} s for {v2.metrics['steps']} steps; "
          f"rewards/margins {v2.metrics.get('rewards/margins')}")


if __name__ == "__main__":
    main()
