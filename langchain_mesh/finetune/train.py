"""Training with TRL and PEFT: supervised LoRA / QLoRA (:func:`train_sft`) and DPO (:func:`train_dpo`).

Both start from a loaded local causal model (:class:`~langchain_mesh.local.loading.LoadedModel`),
never touch the copy the mesh serves (they train a deep copy, or a fresh 4-bit load for QLoRA), and
save the result to ``output_dir``: a PEFT adapter, or with ``merge=True`` the merged weights and the
tokenizer. Defaults suit a small model on a CPU; every LoRA and trainer argument can be overridden
(``lora={...}``, ``trainer_args={...}``), and an unknown one is an error that names it.

On a CUDA device the same code trains in bf16 (when the GPU supports it) on that device; on a CPU
it trains in float32. QLoRA needs a CUDA GPU and ``bitsandbytes``; without them it is refused
with a :class:`~langchain_mesh.errors.CapabilityError` before anything loads.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import CapabilityError, SettingsError

__all__ = ["TrainingResult", "train_sft", "train_dpo", "DEFAULT_LORA"]

DEFAULT_LORA: dict[str, Any] = {
    "r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear", "task_type": "CAUSAL_LM",
}
_COMMON_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "lr_scheduler_type": "linear",
    "logging_strategy": "steps",
    "logging_steps": 0.05,        # a ratio: about 20 loss reports whatever the run's length
    "save_strategy": "no",        # the saved-model version is the checkpoint that matters
    "report_to": "none",
    "max_length": 1024,
    "seed": 42,
}
SFT_DEFAULTS: dict[str, Any] = {**_COMMON_DEFAULTS, "learning_rate": 2e-4}
DPO_DEFAULTS: dict[str, Any] = {**_COMMON_DEFAULTS, "learning_rate": 5e-5, "beta": 0.1}


@dataclass
class TrainingResult:
    method: str                       # lora | qlora | dpo
    kind: str                         # adapter | merged
    metrics: dict[str, Any]           # train_loss, train_loss_first/last, eval_loss, steps, runtime, device
    log_history: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)   # the LoRA and trainer arguments used


def _json_safe(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_json_safe(x) for x in v]
    return str(v)


def _lora_config(overrides: Optional[dict[str, Any]]) -> Any:
    from peft import LoraConfig

    args = {**DEFAULT_LORA, **(overrides or {})}
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise SettingsError(f"unknown LoRA argument(s) {unknown}; see peft.LoraConfig", [f"lora.{k}" for k in unknown])
    try:
        return LoraConfig(**args), args
    except (TypeError, ValueError) as e:
        raise SettingsError(f"invalid LoRA arguments: {e}", ["lora"]) from None


def _trainer_config(config_cls: Any, defaults: dict[str, Any], overrides: Optional[dict[str, Any]],
                    device: str, output_dir: Path, has_eval: bool) -> tuple[Any, dict[str, Any]]:
    import torch

    args = dict(defaults)
    if has_eval:
        args["eval_strategy"] = "epoch"
    if device.startswith("cuda"):
        args["bf16"] = bool(torch.cuda.is_bf16_supported())
        args["fp16"] = not args["bf16"]
    else:
        args["use_cpu"] = True
        # TRL turns gradient checkpointing on by default: on a CPU it trades memory we have for a second
        # forward pass and a backward pass through every layer (measured 3x slower per step on SmolLM2)
        # (transformers 5.25 renamed the argument activation_checkpointing; the old name warns)
        names = {f.name for f in dataclasses.fields(config_cls)}
        args["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = False
    args.update(overrides or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise SettingsError(f"unknown trainer argument(s) {unknown}; see trl.{config_cls.__name__}",
                            [f"trainer_args.{k}" for k in unknown])
    if "output_dir" in (overrides or {}):
        raise SettingsError("trainer_args.output_dir is chosen by the saved-model version; remove it",
                            ["trainer_args.output_dir"])
    args["output_dir"] = str(output_dir)
    try:
        return config_cls(**args), args
    except (TypeError, ValueError) as e:
        raise SettingsError(f"invalid trainer arguments: {e}", ["trainer_args"]) from None


def _training_model(lm: Any, method: str) -> Any:
    """A trainable copy of ``lm``'s model: the served one is never modified."""
    if method != "qlora":
        from ..local.loading import hf_model

        model = copy.deepcopy(hf_model(lm))  # the transformers model, also when serving runs on the lean decoder
        model.config.use_cache = False  # the KV cache is useless (and warned about) when training
        return model
    import torch

    if not str(lm.device).startswith("cuda") or not torch.cuda.is_available():
        raise CapabilityError("QLoRA trains a 4-bit quantized model and needs a CUDA GPU with bitsandbytes; "
                              "on this machine use method='lora'")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise CapabilityError("QLoRA needs bitsandbytes: pip install 'bitsandbytes>=0.45,<1' "
                              "(or use method='lora')") from None
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from ..local.loading import _gguf_cache_for

    source = Path(lm.path)
    if source.suffix == ".gguf":  # the de-quantized copy load_causal_lm wrote when it first loaded the GGUF
        source = _gguf_cache_for(source)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(source), quantization_config=quant,
                                                 device_map={"": torch.device(lm.device).index or 0})
    model.config.use_cache = False
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)


def _check_method(method: str, merge: bool) -> None:
    if method not in ("lora", "qlora"):
        raise SettingsError(f"unknown fine-tuning method {method!r}: lora, qlora (or dpo for preference pairs)",
                            ["method"])
    if merge and method == "qlora":
        raise SettingsError("merge=True is not offered with QLoRA: merging into 4-bit weights loses the "
                            "adapter's precision; keep the adapter (merge=False)", ["merge"])


def _save(trainer: Any, tokenizer: Any, output_dir: Path, merge: bool) -> str:
    model = trainer.model
    if merge:
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(str(output_dir))
        tokenizer.save_pretrained(str(output_dir))
        return "merged"
    model.save_pretrained(str(output_dir))
    return "adapter"


def _metrics(trainer: Any, train_out: Any, has_eval: bool, device: str, started: float) -> dict[str, Any]:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    m: dict[str, Any] = {
        "train_loss": float(train_out.training_loss),
        "train_loss_first": float(losses[0]) if losses else None,
        "train_loss_last": float(losses[-1]) if losses else None,
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0),
        "runtime_s": round(time.time() - started, 2),
        "device": device,
    }
    if has_eval:
        ev = trainer.evaluate()
        m["eval_loss"] = float(ev["eval_loss"])
        for k, v in ev.items():  # DPO's rewards/margins, accuracies...
            if k.startswith("eval_rewards/") and isinstance(v, (int, float)) and math.isfinite(v):
                m[k] = float(v)
    for h in reversed(history):
        for k, v in h.items():
            if k.startswith("rewards/") and k not in m and isinstance(v, (int, float)):
                m[k] = float(v)
    return m


def _run(trainer_cls: Any, lm: Any, method: str, config: Any, train: list[dict[str, Any]],
         validation: Optional[list[dict[str, Any]]], lora: Any, output_dir: Path, merge: bool,
         callbacks: Optional[Sequence[Any]]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    from datasets import Dataset

    started = time.time()
    model = _training_model(lm, method)
    from ..local.loading import hf_tokenizer

    tokenizer = copy.deepcopy(hf_tokenizer(lm))  # trainers may set a pad token; the served one stays as it is
    trainer = trainer_cls(model=model, args=config, train_dataset=Dataset.from_list(train),
                          eval_dataset=Dataset.from_list(validation) if validation else None,
                          processing_class=tokenizer, peft_config=lora, callbacks=list(callbacks or []))
    out = trainer.train()
    metrics = _metrics(trainer, out, bool(validation), str(lm.device), started)
    scratch = Path(config.output_dir)
    kind = _save(trainer, tokenizer, output_dir, merge)
    if scratch != output_dir:
        shutil.rmtree(scratch, ignore_errors=True)
    return kind, metrics, list(trainer.state.log_history)


def train_sft(lm: Any, train: list[dict[str, Any]], output_dir: Path, *, validation: Optional[list[dict[str, Any]]] = None,
              method: str = "lora", lora: Optional[dict[str, Any]] = None, trainer_args: Optional[dict[str, Any]] = None,
              merge: bool = False, callbacks: Optional[Sequence[Any]] = None) -> TrainingResult:
    """Supervised fine-tuning on normalised examples (:func:`~.data.load_sft_examples`), loss on the answers only."""
    _check_method(method, merge)
    from trl import SFTConfig, SFTTrainer

    peft_cfg, lora_args = _lora_config(lora)
    config, used = _trainer_config(SFTConfig, SFT_DEFAULTS, trainer_args, str(lm.device),
                                   output_dir / ".trainer", bool(validation))
    kind, metrics, history = _run(SFTTrainer, lm, method, config, train, validation, peft_cfg, output_dir, merge,
                                  callbacks)
    return TrainingResult(method, kind, metrics, history,
                          _json_safe({"lora": lora_args, "trainer": {k: v for k, v in used.items() if k != "output_dir"}}))


def train_dpo(lm: Any, pairs: list[dict[str, Any]], output_dir: Path, *, validation: Optional[list[dict[str, Any]]] = None,
              lora: Optional[dict[str, Any]] = None, trainer_args: Optional[dict[str, Any]] = None,
              merge: bool = False, callbacks: Optional[Sequence[Any]] = None) -> TrainingResult:
    """Direct Preference Optimization with a LoRA adapter; the reference model is the base itself
    (the adapter switched off), so no second copy of the weights is held."""
    from trl import DPOConfig, DPOTrainer

    peft_cfg, lora_args = _lora_config(lora)
    config, used = _trainer_config(DPOConfig, DPO_DEFAULTS, trainer_args, str(lm.device),
                                   output_dir / ".trainer", bool(validation))
    kind, metrics, history = _run(DPOTrainer, lm, "lora", config, pairs, validation, peft_cfg, output_dir, merge,
                                  callbacks)
    return TrainingResult("dpo", kind, metrics, history,
                          _json_safe({"lora": lora_args, "trainer": {k: v for k, v in used.items() if k != "output_dir"}}))
