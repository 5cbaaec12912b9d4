"""Serving fine-tuned LoRA adapters on one shared copy of their base model.

Every adapter version of every saved model on a base is loaded (once) into one PEFT model built on a
single extra copy of that base's weights, the *adapter host*; a version is a named adapter in it, and
each forward pass names its adapter (PEFT's ``adapter_names``), so adding a version costs only the
adapter's own weights, never a reload of the base. The host is a copy, not the served base model
itself, because PEFT injects its layers into the module it wraps: the base model's own requests
must not run through them.

PEFT selects the adapter of a call with forward hooks installed for that call, which is state shared
by the whole host; forward passes on one host are therefore serialised by a lock (per step, not per
request: streams of different versions interleave token by token).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from .loading import LoadedModel, hf_model

__all__ = ["AdapterHost", "adapter_model"]

_hosts: dict[int, "AdapterHost"] = {}
_hosts_lock = threading.Lock()


class AdapterHost:
    def __init__(self, base: LoadedModel):
        self.base = base
        self.peft: Any = None
        self.lock = threading.Lock()
        self._names: dict[str, str] = {}      # adapter folder -> adapter name inside the host
        self._views: dict[str, LoadedModel] = {}

    def view(self, adapter_dir: Path, label: str) -> LoadedModel:
        key = str(adapter_dir.resolve())
        found = self._views.get(key)
        if found is not None:
            return found
        with self.lock:
            found = self._views.get(key)
            if found is None:
                name = self._load(adapter_dir, key)
                found = LoadedModel(_AdapterView(self, name), self.base.tokenizer, self.base.device,
                                    Path(label), self.base.context_window, None, threading.Lock())
                self._views[key] = found
        return found

    def _load(self, adapter_dir: Path, key: str) -> str:
        from peft import PeftModel

        # adapter names become keys of torch ModuleDicts, which refuse '.'; a counter is always valid
        name = f"adapter_{len(self._names) + 1}"
        if self.peft is None:
            host = copy.deepcopy(hf_model(self.base))  # PEFT wraps transformers modules
            self.peft = PeftModel.from_pretrained(host, str(adapter_dir), adapter_name=name, is_trainable=False)
            self.peft.eval()
        else:
            self.peft.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
        self._names[key] = name
        return name

    @property
    def adapter_count(self) -> int:
        return len(self._names)


class _AdapterView:
    """Quacks like the base model for :func:`~langchain_mesh.local.generation.generate`."""

    def __init__(self, host: AdapterHost, name: str):
        self._host = host
        self.adapter_name = name
        base = hf_model(host.base)
        self.config = base.config
        self.model_class = type(base)  # whose forward's arguments generate() speaks
        self.generation_config = getattr(base, "generation_config", None)

    def __call__(self, **kwargs: Any) -> Any:
        batch = int(kwargs["input_ids"].shape[0])
        with self._host.lock:
            return self._host.peft(**kwargs, adapter_names=[self.adapter_name] * batch)


def adapter_model(base: LoadedModel, adapter_dir: Path, label: str) -> LoadedModel:
    """The model of ``adapter_dir`` on ``base``: the base's host, loading the adapter the first time."""
    with _hosts_lock:
        host = _hosts.get(id(base))
        if host is None or host.base is not base:
            host = _hosts[id(base)] = AdapterHost(base)
    return host.view(adapter_dir, label)


def host_of(base: LoadedModel) -> "AdapterHost | None":
    host = _hosts.get(id(base))
    return host if host is not None and host.base is base else None
