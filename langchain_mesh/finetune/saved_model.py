"""Fine-tuned saved models of a mesh: the seed's entry points, versions, and their LLM ids.

::

    sm = mesh.create_finetuned_saved_model("support-bot", connection="local")   # base: the connection's chat model
    v = sm.create_finetuned_version("train.jsonl", validation="val.jsonl")      # LoRA; method="qlora" | "dpo"
    mesh.get_llm(sm.llm_id())          # huggingfacelocal:local:support-bot      (the active version)
    mesh.get_llm(sm.llm_id(v.id))      # huggingfacelocal:local:support-bot@v1   (pinned)
    sm.activate("v1"); sm.rollback()

    with sm.new_version(method="custom") as draft:          # train with your own code, as in the seed
        trainer.save_model(draft.working_directory)           # an adapter or full weights
        draft.metrics["eval_loss"] = 0.42

Saved models live in the connection's ``saved_models_dir`` (config key of ``huggingfacelocal``;
default ``$MESH_SAVED_MODELS_DIR/<connection>``, else ``./saved_models/<connection>``). The LLMs are
served by that connection, so its settings apply at inference as they do to its base models.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

from ..errors import ConfigError
from ..schema import Purpose
from .data import DataSource, fingerprint, load_preference_pairs, load_sft_examples
from .registry import (SavedModelError, SavedModelFolder, VersionInfo, check_name, list_saved_models,
                       saved_models_root)

if TYPE_CHECKING:  # a mesh is passed in (Mesh -> saved models, never back: the import contracts)
    Mesh = Any
    LLM = Any

__all__ = ["SavedModel", "VersionDraft", "saved_models_root", "create_saved_model", "get_saved_model",
           "list_saved_models_of"]

LOCAL_TYPE = "huggingfacelocal"


@dataclass
class VersionDraft:
    """A version being made: write the model into ``working_directory``; committed when the block ends."""

    working_directory: Path
    method: str
    data_fingerprint: Optional[str] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    version: Optional[str] = None     # set once committed


class SavedModel:
    """A fine-tuned LLM saved model: versions of one base model of one ``huggingfacelocal`` connection."""

    def __init__(self, mesh: "Mesh", connection: str, folder: SavedModelFolder):
        self.mesh = mesh
        self.connection = connection
        self._folder = folder
        meta = folder.meta()
        self.name: str = meta["name"]
        self.base_model: str = meta["base_model"]
        self.description: str = meta.get("description", "")
        self.created_at: float = float(meta["created_at"])

    @property
    def path(self) -> Path:
        return self._folder.root

    # ---- versions --------------------------------------------------------------------------------

    def list_versions(self) -> list[VersionInfo]:
        return self._folder.list()

    def get_version(self, version: Optional[str] = None) -> VersionInfo:
        """A version by id; without one, the active version."""
        want = version or self.active_version
        for v in self.list_versions():
            if v.id == want:
                return v
        self._folder.version_path(want or "")  # raises the error listing the versions
        raise AssertionError("unreachable")

    @property
    def active_version(self) -> Optional[str]:
        return self._folder.active()

    def activate(self, version: str) -> None:
        """Make ``version`` the one the unpinned LLM id serves (also how to roll back)."""
        self._folder.set_active(version)
        self.mesh._saved_models_changed(self.connection)

    def rollback(self) -> str:
        """Activate the version before the active one; returns its id."""
        versions = [v.id for v in self.list_versions()]
        active = self.active_version
        if active is None or versions.index(active) == 0:
            raise SavedModelError(f"saved model {self.name!r} has no version before {active or 'none'} to roll back to")
        previous = versions[versions.index(active) - 1]
        self.activate(previous)
        return previous

    def llm_id(self, version: Optional[str] = None) -> str:
        """``huggingfacelocal:<connection>:<name>`` (follows the active version) or ``...@<version>``."""
        if version is not None:
            self._folder.version_path(version)
        return f"{LOCAL_TYPE}:{self.connection}:{self.name}" + (f"@{version}" if version else "")

    def get_llm(self, version: Optional[str] = None) -> "LLM":
        return self.mesh.get_llm(self.llm_id(version))

    # ---- making versions -------------------------------------------------------------------------

    @contextmanager
    def new_version(self, method: str = "custom", data_fingerprint: Optional[str] = None,
                    activate: bool = True) -> Iterator[VersionDraft]:
        """A staging folder for a new version; committed (and activated) only if the block succeeds."""
        staging, release = self._folder.new_staging()
        draft = VersionDraft(staging, method, data_fingerprint)
        try:
            yield draft
            kind = _kind_of(staging)
            shutil.rmtree(staging / ".trainer", ignore_errors=True)
            meta = {"created_at": time.time(), "method": draft.method, "kind": kind,
                    "base_model": self.base_model, "connection": self.connection,
                    "data_fingerprint": draft.data_fingerprint, "metrics": draft.metrics,
                    "settings": draft.settings}
            draft.version = self._folder.commit(staging, meta, activate)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            release()
        self.mesh._saved_models_changed(self.connection)

    def create_finetuned_version(self, train: DataSource, *, validation: Optional[DataSource] = None,
                                 method: str = "lora", lora: Optional[dict[str, Any]] = None,
                                 trainer_args: Optional[dict[str, Any]] = None, merge: bool = False,
                                 activate: bool = True, callbacks: Optional[Sequence[Any]] = None) -> VersionInfo:
        """Fine-tune the base model and save the result as the next version.

        ``method``: ``lora`` (default), ``qlora`` (CUDA + bitsandbytes) on chat examples, or ``dpo`` on
        preference pairs (see :mod:`langchain_mesh.finetune.data`). ``lora`` and ``trainer_args``
        override :data:`~.train.DEFAULT_LORA` and the trainer defaults. A run that fails or is killed
        leaves the saved model as it was.
        """
        from .train import train_dpo, train_sft

        if method == "dpo":
            rows = load_preference_pairs(train, "train")
            val = load_preference_pairs(validation, "validation") if validation is not None else None
        else:
            rows = load_sft_examples(train, "train")
            val = load_sft_examples(validation, "validation") if validation is not None else None
        lm = self._base_loaded()
        with self.new_version(method, fingerprint(rows, val), activate) as draft:
            if method == "dpo":
                result = train_dpo(lm, rows, draft.working_directory, validation=val, lora=lora,
                                   trainer_args=trainer_args, merge=merge, callbacks=callbacks)
            else:
                result = train_sft(lm, rows, draft.working_directory, validation=val, method=method, lora=lora,
                                   trainer_args=trainer_args, merge=merge, callbacks=callbacks)
            draft.metrics.update(result.metrics)
            draft.metrics["train_examples"] = len(rows)
            if val:
                draft.metrics["validation_examples"] = len(val)
            draft.settings.update(result.settings)
        assert draft.version is not None
        return self.get_version(draft.version)

    def _base_loaded(self) -> Any:
        conn = self.mesh.connection(self.connection)
        return conn._chat_model(self.base_model)

    def __repr__(self) -> str:
        return f"SavedModel({self.name!r}, connection={self.connection!r}, base_model={self.base_model!r})"


def _kind_of(folder: Path) -> str:
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "merged"
    raise SavedModelError(f"nothing was saved in {folder}: a version holds a PEFT adapter (adapter_config.json) "
                          "or a full model (config.json); e.g. trainer.save_model(draft.working_directory)")


# ---- the mesh's side ------------------------------------------------------------------------------


def _local_connection(mesh: "Mesh", connection: str) -> Any:
    cfg = mesh.config.connections.get(connection)
    if cfg is None or cfg.type != LOCAL_TYPE:
        local = [n for n, c in mesh.config.connections.items() if c.type == LOCAL_TYPE]
        raise ConfigError(f"fine-tuned saved models live on a {LOCAL_TYPE} connection; {connection!r} is "
                          f"{'of type ' + repr(cfg.type) if cfg else 'not a connection'}. "
                          f"{LOCAL_TYPE} connections: {', '.join(local) or 'none'}")
    return mesh.connection(connection)


def create_saved_model(mesh: "Mesh", name: str, connection: str, base_model: Optional[str] = None,
                       description: str = "") -> SavedModel:
    check_name(name)
    conn = _local_connection(mesh, connection)
    chat = [m.id for m in conn.base_models() if Purpose.GENERIC_COMPLETION in m.purposes]
    base = base_model or (chat[0] if chat else None)
    if base is None or base not in chat:
        raise ConfigError(f"base model {base!r} is not a chat model of connection {connection!r}; "
                          f"its chat models: {', '.join(chat) or 'none'}")
    if name in {m.id for m in conn.base_models()}:
        raise ConfigError(f"{name!r} is already a model of connection {connection!r}; choose another name")
    folder = SavedModelFolder(conn.saved_models_root() / name)
    folder.create(connection, base, description)
    mesh._saved_models_changed(connection)
    return SavedModel(mesh, connection, folder)


def get_saved_model(mesh: "Mesh", name: str, connection: Optional[str] = None) -> SavedModel:
    names = [connection] if connection else [n for n, c in mesh.config.connections.items() if c.type == LOCAL_TYPE]
    for cname in names:
        conn = _local_connection(mesh, cname)
        folder = SavedModelFolder(conn.saved_models_root() / check_name(name))
        if folder.exists():
            return SavedModel(mesh, cname, folder)
    have = [s.name for s in list_saved_models_of(mesh, connection)]
    raise SavedModelError(f"no fine-tuned saved model {name!r}; saved models: {', '.join(have) or 'none'} "
                          "(create one with mesh.create_finetuned_saved_model or `mesh finetune create`)")


def list_saved_models_of(mesh: "Mesh", connection: Optional[str] = None) -> list[SavedModel]:
    names = [connection] if connection else [n for n, c in mesh.config.connections.items() if c.type == LOCAL_TYPE]
    out = []
    for cname in names:
        conn = _local_connection(mesh, cname)
        out += [SavedModel(mesh, cname, f) for f in list_saved_models(conn.saved_models_root())]
    return out
