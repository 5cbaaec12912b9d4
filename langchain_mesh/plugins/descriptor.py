"""A folder plugin on disk, in the seed's layout, and the parameters its descriptors declare.

::

    tutorial-llm-connection/              # the plugin (``plugin:`` in the connection config)
      plugin.json                         # optional: {"id", "meta", "params"} -> plugin_config
      python-llms/custom-chat-plugin/     # a component (``component:``)
        llm.json                          # {"meta": {...}, "params": [...]}, JSON with comments
        llm.py                            # class MyLLM(BaseLLM)
      parameter-sets/parameter-custom-llm/
        parameter-set.json                # {"meta", "defaultDefinableInline", ..., "params": [...]}
      python-lib/                         # optional: importable by llm.py

Descriptors are JSON with ``//`` and ``/* */`` comments, as the plugin editors write them; they are
read with ``json5`` (a maintained parser of that superset of JSON) rather than a hand-made comment
stripper that would trip over ``"http://..."`` inside strings.

Parameter types (``type`` of each entry of ``params``) and the values they take:
``STRING``, ``TEXTAREA`` (str), ``PASSWORD``, ``CREDENTIAL_REQUEST`` (a secret: a literal, a
``{{env:...}}``-style reference or ``{{user}}``), ``INT``, ``DOUBLE``, ``BOOLEAN``, ``SELECT`` (one of
``selectChoices[].value``), ``MULTISELECT`` (a list of them), ``STRINGS`` (a list of str), ``MAP``
(str -> str), ``PRESET`` (a preset of ``parameterSetId``) and ``SEPARATOR`` (no value). Any other
type is refused when the plugin loads, naming the file and parameter.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError

__all__ = ["Param", "ParameterSet", "Component", "Plugin", "load_plugin", "read_descriptor"]

SECRET_TYPES = frozenset({"PASSWORD", "CREDENTIAL_REQUEST"})
VALUE_TYPES = frozenset({"STRING", "TEXTAREA", "PASSWORD", "CREDENTIAL_REQUEST", "INT", "DOUBLE", "BOOLEAN",
                         "SELECT", "MULTISELECT", "STRINGS", "MAP", "PRESET"})
KNOWN_TYPES = VALUE_TYPES | {"SEPARATOR"}


def read_descriptor(path: Path) -> dict[str, Any]:
    try:
        import json5
    except ImportError:  # pragma: no cover - the plugins extra
        raise ImportError("folder plugins need the json5 package: pip install 'langchain-mesh[plugins]'") from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json5.loads(text)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON (comments allowed): {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


@dataclass(frozen=True)
class Param:
    """One parameter of a descriptor's ``params``."""

    name: str
    type: str
    label: str = ""
    mandatory: bool = False
    default: Any = None
    has_default: bool = False
    choices: tuple[Any, ...] = ()
    parameter_set_id: Optional[str] = None

    @property
    def is_secret(self) -> bool:
        return self.type in SECRET_TYPES

    def check(self, value: Any, where: str) -> Optional[str]:
        """Why ``value`` does not fit this parameter (None: it does). Secrets are checked as strings."""
        t = self.type
        if t in ("STRING", "TEXTAREA", "PASSWORD", "CREDENTIAL_REQUEST"):
            ok = isinstance(value, str) or (t in SECRET_TYPES and type(value).__name__ == "Secret")
            return None if ok else f"must be a string, got {type(value).__name__}"
        if t == "INT":
            return None if isinstance(value, int) and not isinstance(value, bool) else \
                f"must be an integer, got {value!r}"
        if t == "DOUBLE":
            return None if isinstance(value, (int, float)) and not isinstance(value, bool) else \
                f"must be a number, got {value!r}"
        if t == "BOOLEAN":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if t == "SELECT":
            return None if value in self.choices else f"must be one of {list(self.choices)}, got {value!r}"
        if t == "MULTISELECT":
            if not isinstance(value, list):
                return f"must be a list of {list(self.choices)}"
            bad = [v for v in value if v not in self.choices]
            return f"{bad} not among the choices {list(self.choices)}" if bad else None
        if t == "STRINGS":
            return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else \
                "must be a list of strings"
        if t == "MAP":
            return None if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()) else \
                "must be a mapping of string values"
        return None  # PRESET: checked by the connection against the presets


def _params(raw: Any, where: str) -> list[Param]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: 'params' must be a list")
    out = []
    for i, p in enumerate(raw):
        at = f"{where}: params[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{at} must be an object")
        t = p.get("type")
        if t not in KNOWN_TYPES:
            raise ConfigError(f"{at} ({p.get('name', '?')}) has type {t!r}, which langchain-mesh does not "
                              f"support; supported: {', '.join(sorted(KNOWN_TYPES))}")
        if t == "SEPARATOR":
            continue
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at} has no 'name'")
        choices = tuple(c.get("value") if isinstance(c, dict) else c for c in p.get("selectChoices") or ())
        if t in ("SELECT", "MULTISELECT") and not choices:
            raise ConfigError(f"{at} ({name}) is a {t} without selectChoices")
        if t == "PRESET" and not p.get("parameterSetId"):
            raise ConfigError(f"{at} ({name}) is a PRESET without parameterSetId")
        out.append(Param(name=name, type=t, label=p.get("label") or name, mandatory=bool(p.get("mandatory")),
                         default=p.get("defaultValue"), has_default="defaultValue" in p, choices=choices,
                         parameter_set_id=p.get("parameterSetId")))
    return out


@dataclass(frozen=True)
class ParameterSet:
    id: str
    path: Path
    meta: dict[str, Any]
    params: list[Param]
    plugin_params: list[Param]
    definable_inline: bool = True
    definable_at_project_level: bool = True

    def param(self, name: str) -> Optional[Param]:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True)
class Component:
    id: str
    folder: Path
    meta: dict[str, Any]
    params: list[Param]

    @property
    def code(self) -> Path:
        return self.folder / "llm.py"


@dataclass
class Plugin:
    root: Path
    id: str
    meta: dict[str, Any]
    params: list[Param]
    components: dict[str, Component] = field(default_factory=dict)
    parameter_sets: dict[str, ParameterSet] = field(default_factory=dict)


def _locate(plugin: str) -> Path:
    path = Path(plugin).expanduser()
    if path.is_dir():
        return path.resolve()
    if not any(sep in plugin for sep in ("/", "\\")) and plugin.replace(".", "").replace("_", "").isalnum():
        try:
            spec = importlib.util.find_spec(plugin)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0]).resolve()
    raise ConfigError(f"plugin {plugin!r} is neither a folder nor an importable package "
                      "(give the plugin folder's path, or the name of a package that ships one)")


_CACHE: dict[Path, tuple[float, Plugin]] = {}


def load_plugin(plugin: str) -> Plugin:
    """Read a plugin's descriptors (cached until ``plugin.json``/the folder changes)."""
    root = _locate(plugin)
    pj = root / "plugin.json"
    meta: dict[str, Any] = {}
    params: list[Param] = []
    pid = root.name
    if pj.is_file():
        d = read_descriptor(pj)
        pid = d.get("id") or pid
        meta = d.get("meta") or {}
        params = _params(d.get("params"), str(pj))
    plug = Plugin(root=root, id=pid, meta=meta, params=params)
    for folder in sorted((root / "python-llms").glob("*/")):
        lj = folder / "llm.json"
        if not lj.is_file():
            continue
        d = read_descriptor(lj)
        plug.components[folder.name] = Component(folder.name, folder, d.get("meta") or {},
                                                 _params(d.get("params"), str(lj)))
    for folder in sorted((root / "parameter-sets").glob("*/")):
        sj = folder / "parameter-set.json"
        if not sj.is_file():
            continue
        d = read_descriptor(sj)
        plug.parameter_sets[folder.name] = ParameterSet(
            id=folder.name, path=sj, meta=d.get("meta") or {}, params=_params(d.get("params"), str(sj)),
            plugin_params=_params(d.get("pluginParams"), str(sj)),
            definable_inline=bool(d.get("defaultDefinableInline", True)),
            definable_at_project_level=bool(d.get("defaultDefinableAtProjectLevel", True)))
    return plug


def check_values(params: list[Param], values: dict[str, Any], where: str,
                 skip_types: frozenset[str] = frozenset()) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``values`` checked against ``params``: unknown names, types, choices, mandatory ones; defaults
    filled in. Returns (the values with defaults, problems as (dotted path, reason))."""
    problems: list[tuple[str, str]] = []
    known = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for k in values:
        if k not in known:
            problems.append((f"{where}.{k}", f"unknown parameter; the descriptor declares: "
                                             f"{', '.join(known) or 'none'}"))
    for p in params:
        if p.type in skip_types:
            continue
        if p.name in values and values[p.name] is not None:
            why = p.check(values[p.name], f"{where}.{p.name}")
            if why:
                problems.append((f"{where}.{p.name}", why))
            out[p.name] = values[p.name]
        elif p.has_default:
            out[p.name] = p.default
        elif p.mandatory:
            problems.append((f"{where}.{p.name}", f"missing: the mandatory {p.type} parameter "
                                                  f"{p.label!r} has no default"))
    return out, problems
