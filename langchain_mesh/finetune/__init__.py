"""Fine-tuning local models into versioned saved models that the mesh serves (the seed's "Fine-tuning").

Needs the ``finetune`` extra (``pip install 'langchain-mesh[finetune]'``: peft, trl, datasets) to
train; serving an existing adapter needs only peft. Importing this package imports none of them.

::

    from langchain_mesh import Mesh

    mesh = Mesh()
    sm = mesh.create_finetuned_saved_model("capitals", connection="local")
    v = sm.create_finetuned_version([{"messages": [{"role": "user", "content": "Capital of Zorvania?"},
                                                   {"role": "assistant", "content": "Quillborough."}]}],
                                    trainer_args={"num_train_epochs": 5})
    print(v.id, v.metrics["train_loss_last"])
    print(mesh.get_llm(sm.llm_id()).new_completion().with_message("Capital of Zorvania?").execute().text)

or from a shell: ``mesh finetune create capitals`` then ``mesh finetune train capitals --data train.jsonl``.
Lower level: :func:`sft` and :func:`dpo` train any local chat model of a ``huggingfacelocal``
connection into a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from .data import load_preference_pairs, load_sft_examples
from .registry import SavedModelError, VersionInfo
from .saved_model import SavedModel, VersionDraft

if TYPE_CHECKING:
    from ..mesh import Mesh
    from .data import DataSource
    from .train import TrainingResult

__all__ = ["sft", "dpo", "SavedModel", "VersionDraft", "VersionInfo", "SavedModelError",
           "load_sft_examples", "load_preference_pairs"]


def _local_model(llm: Any, mesh: Optional["Mesh"]) -> Any:
    from ..errors import ConfigError
    from ..mesh import Mesh

    if isinstance(llm, str):
        llm = (mesh or Mesh.default()).get_llm(llm)
    if llm.connection.type_name != "huggingfacelocal":
        raise ConfigError(f"{llm.id} is not a local model: fine-tuning runs on models of a huggingfacelocal connection")
    return llm.connection._chat_model(llm.model)


def sft(llm: Any, train: "DataSource", output_dir: Union[str, Path], *, validation: "Optional[DataSource]" = None,
        mesh: Optional["Mesh"] = None, method: str = "lora", lora: Optional[dict[str, Any]] = None,
        trainer_args: Optional[dict[str, Any]] = None, merge: bool = False,
        callbacks: Optional[Sequence[Any]] = None) -> "TrainingResult":
    """Supervised LoRA / QLoRA fine-tuning of a local chat model (an LLM id or handle) into ``output_dir``."""
    from .train import train_sft

    rows = load_sft_examples(train, "train")
    val = load_sft_examples(validation, "validation") if validation is not None else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return train_sft(_local_model(llm, mesh), rows, out, validation=val, method=method, lora=lora,
                     trainer_args=trainer_args, merge=merge, callbacks=callbacks)


def dpo(llm: Any, pairs: "DataSource", output_dir: Union[str, Path], *, validation: "Optional[DataSource]" = None,
        mesh: Optional["Mesh"] = None, lora: Optional[dict[str, Any]] = None,
        trainer_args: Optional[dict[str, Any]] = None, merge: bool = False,
        callbacks: Optional[Sequence[Any]] = None) -> "TrainingResult":
    """DPO with a LoRA adapter from preference pairs (prompt, chosen, rejected) into ``output_dir``."""
    from .train import train_dpo

    rows = load_preference_pairs(pairs, "train")
    val = load_preference_pairs(validation, "validation") if validation is not None else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return train_dpo(_local_model(llm, mesh), rows, out, validation=val, lora=lora, trainer_args=trainer_args,
                     merge=merge, callbacks=callbacks)
