"""Training data for fine-tuning: chat examples and preference pairs, from JSONL, CSV or a list of dicts.

Accepted shapes (one example per JSONL line, per CSV row or per list item)::

    # supervised (sft): a conversation whose last message is the assistant's answer to learn
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}
    {"prompt": "...", "completion": "..."}              # also a CSV with prompt,completion[,system]

    # preferences (dpo)
    {"prompt": "...", "chosen": "...", "rejected": "..."}   # also a CSV with those columns
    {"prompt": [messages...], "chosen": [{"role": "assistant", ...}], "rejected": [...]}

Everything is normalised to TRL's conversational form (``prompt`` / ``completion`` message lists for
SFT, ``prompt`` / ``chosen`` / ``rejected`` for DPO), so the model's own chat template is applied and
only the answer's tokens are learned. The fingerprint recorded with a saved-model version is the
SHA-256 of the normalised examples (canonical JSON), so the same data in another file format or key
order has the same fingerprint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from ..errors import SettingsError

__all__ = ["DataSource", "load_sft_examples", "load_preference_pairs", "fingerprint"]

DataSource = Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]]]
_ROLES = {"system", "user", "assistant"}


def _read_rows(source: DataSource, what: str) -> list[Mapping[str, Any]]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise SettingsError(f"{what}: no file {path} (give a .jsonl or .csv file, or a list of dicts)", [what])
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if path.suffix.lower() not in (".jsonl", ".json"):
            raise SettingsError(f"{what}: {path.name} is neither .jsonl nor .csv", [what])
        rows = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SettingsError(f"{what}: {path.name} line {n} is not JSON ({e.msg})", [what]) from None
        return rows
    if isinstance(source, Mapping):
        raise SettingsError(f"{what}: expected a list of examples, got one dict", [what])
    return list(source)


def _messages(value: Any, where: str, default_role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise SettingsError(f"{where}: expected a string or a non-empty list of {{role, content}} messages", [where])
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise SettingsError(f"{where}[{i}]: each message needs a role (system, user, assistant) and a "
                                "string content", [where])
        extra = set(m) - {"role", "content"}
        if extra:
            raise SettingsError(f"{where}[{i}]: unknown message keys {sorted(extra)}", [where])
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _check_keys(row: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = {k for k, v in row.items() if k not in allowed and v not in (None, "")}
    if extra:
        raise SettingsError(f"{where}: unknown keys {sorted(extra)} (expected {sorted(allowed)})", [where])


def load_sft_examples(source: DataSource, what: str = "train") -> list[dict[str, Any]]:
    """Normalised supervised examples: ``{"prompt": [messages], "completion": [assistant message]}``."""
    out = []
    for n, row in enumerate(_read_rows(source, what)):
        where = f"{what}[{n}]"
        if not isinstance(row, Mapping):
            raise SettingsError(f"{where}: expected an object, got {type(row).__name__}", [what])
        if "messages" in row:
            _check_keys(row, {"messages"}, where)
            msgs = _messages(row["messages"], f"{where}.messages", "user")
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise SettingsError(f"{where}.messages: the last message must be the assistant's answer to "
                                    "learn, after at least one other message", [what])
            prompt, completion = msgs[:-1], msgs[-1:]
        elif "prompt" in row and "completion" in row:
            _check_keys(row, {"prompt", "completion", "system"}, where)
            prompt = _messages(row["prompt"], f"{where}.prompt", "user")
            if row.get("system"):
                prompt = [{"role": "system", "content": str(row["system"])}] + prompt
            completion = _messages(row["completion"], f"{where}.completion", "assistant")
        else:
            raise SettingsError(f"{where}: an example has 'messages', or 'prompt' and 'completion'", [what])
        out.append({"prompt": prompt, "completion": completion})
    if not out:
        raise SettingsError(f"{what}: no examples", [what])
    return out


def load_preference_pairs(source: DataSource, what: str = "train") -> list[dict[str, Any]]:
    """Normalised preference pairs: ``{"prompt": [messages], "chosen": [...], "rejected": [...]}``."""
    out = []
    for n, row in enumerate(_read_rows(source, what)):
        where = f"{what}[{n}]"
        if not isinstance(row, Mapping) or not {"prompt", "chosen", "rejected"} <= set(row):
            raise SettingsError(f"{where}: a preference pair has 'prompt', 'chosen' and 'rejected'", [what])
        _check_keys(row, {"prompt", "chosen", "rejected", "system"}, where)
        prompt = _messages(row["prompt"], f"{where}.prompt", "user")
        if row.get("system"):
            prompt = [{"role": "system", "content": str(row["system"])}] + prompt
        out.append({"prompt": prompt,
                    "chosen": _messages(row["chosen"], f"{where}.chosen", "assistant"),
                    "rejected": _messages(row["rejected"], f"{where}.rejected", "assistant")})
    if not out:
        raise SettingsError(f"{what}: no preference pairs", [what])
    return out


def fingerprint(*datasets: Any) -> str:
    h = hashlib.sha256()
    for d in datasets:
        h.update(json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
        h.update(b"\x00")
    return "sha256:" + h.hexdigest()
