"""The ``custom`` connection type: a folder plugin's LLM component as ``custom:<connection>:<model>``.

::

    presets:
      OpenAI:                                   # a preset of the plugin's parameter set
        parameter_set: parameter-custom-llm
        values: {}                              # param_set_api_key (CREDENTIAL_REQUEST) left out:
                                                # each user stores theirs (mesh credentials set OpenAI)
      OpenAI-team:
        parameter_set: parameter-custom-llm
        values: {param_set_api_key: "{{env:TEAM_OPENAI_KEY}}"}   # one shared key
    connections:
      mycustom:
        type: custom
        plugin: ./plugins/tutorial-llm-connection    # the plugin folder (relative: to the mesh.yaml's
                                                     # folder, else the working directory), or a package
        component: custom-chat-plugin                # python-llms/<component>/
        plugin_params: {}                            # plugin.json's params -> set_config's plugin_config
        params:                                      # llm.json's params, for every model...
          api_key: OpenAI                            # PRESET: a preset name ({preset: OpenAI} too), or
                                                     # the set's values inline ({param_set_api_key: ...});
                                                     # left out: each user's own credentials for the
                                                     # set, stored under the connection's name
        models:
          - id: gpt-4o-mini                          # custom:mycustom:gpt-4o-mini
            params: {model: gpt-4o-mini}             # ...and per model (a "model" parameter left unset
                                                     # takes the model id)

Every value is checked against the descriptors when the config loads (unknown names, types,
choices, mandatory parameters, defaults filled in); secrets (``PASSWORD``, ``CREDENTIAL_REQUEST``)
take references and ``{{user}}`` like any connection setting, and are resolved only when the model
is first used, then handed to ``set_config`` as plain strings.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional

from pydantic import Field, field_validator, model_validator

from ..config import ConnectionConfig, ModelConfig, Secret, _looks_like_reference
from ..errors import ConfigError, MeshError, ProviderError, error_for_status
from ..schema import CompletionRequest, CompletionResponse, ModelCapabilities, ModelInfo, StreamEvent, StreamFooter
from ..connections.base import Connection, collect_stream
from .base_llm import BaseLLM, Trace
from .descriptor import Component, Param, check_values, load_plugin
from .translate import StreamTranslator, to_query, to_response, to_settings

__all__ = ["CustomConfig", "CustomModelConfig", "CustomConnection"]


class CustomModelConfig(ModelConfig):
    params: dict[str, Any] = Field(default_factory=dict, repr=False)


class CustomConfig(ConnectionConfig):
    plugin: str
    component: str
    params: dict[str, Any] = Field(default_factory=dict, repr=False)
    plugin_params: dict[str, Any] = Field(default_factory=dict, repr=False)
    models: Optional[list[CustomModelConfig]] = None  # type: ignore[assignment]
    # filled by check_with when the config loads: model id -> set_config's config, and plugin_config
    resolved_params: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False, exclude=True)
    resolved_plugin_params: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)

    model_config_class = CustomModelConfig

    @model_validator(mode="before")
    @classmethod
    def _not_from_input(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for k in ("resolved_params", "resolved_plugin_params"):
                if k in data:
                    raise ValueError(f"{k} is computed from params; set params instead")
        return data

    @field_validator("models")
    @classmethod
    def _some_models(cls, v: Optional[list[CustomModelConfig]]) -> Optional[list[CustomModelConfig]]:
        if not v:
            raise ValueError("a custom connection lists its models (each becomes custom:<connection>:<id>)")
        return v

    # ---- load-time checks against the plugin's descriptors ------------------------------------------

    def check_with(self, mesh_config: Any, at: str, base_dir: Optional[Path] = None) -> list[tuple[str, str]]:
        name = at.split(".", 1)[1]
        if base_dir is not None and not Path(self.plugin).expanduser().is_absolute():
            beside = base_dir / self.plugin
            if beside.is_dir():  # a folder next to the mesh.yaml that names it, wherever mesh runs from
                self.plugin = str(beside.resolve())
        try:
            plugin = load_plugin(self.plugin)
        except ConfigError as e:
            return [(f"{at}.plugin", str(e))]
        comp = plugin.components.get(self.component)
        if comp is None:
            return [(f"{at}.component", f"plugin {plugin.id!r} ({plugin.root}) has no LLM component "
                                        f"{self.component!r}; its python-llms/: {', '.join(plugin.components) or 'none'}")]
        problems: list[tuple[str, str]] = []
        plugin_values, probs = check_values(plugin.params, self.plugin_params, f"{at}.plugin_params")
        problems += probs
        self.resolved_plugin_params = _secrets_for(plugin.params, plugin_values, f"{at}.plugin_params", problems)
        # copies: pydantic keeps nested values as given, and the caller's dict must stay as it was
        self.params = _secrets_for(comp.params, copy.deepcopy(self.params), f"{at}.params", problems,
                                   keep_unknown=True)
        for i, m in enumerate(self.models or []):
            m.params = _secrets_for(comp.params, copy.deepcopy(m.params), f"{at}.models[{i}].params", problems,
                                    keep_unknown=True)
            merged = {**self.params, **m.params}
            if any(p.name == "model" for p in comp.params) and "model" not in merged:
                merged["model"] = m.id
            presets = {p.name: merged.pop(p.name, None) for p in comp.params if p.type == "PRESET"}
            values, probs = check_values(comp.params, merged, f"{at}.models[{i}].params",
                                         skip_types=frozenset({"PRESET"}))
            per_model = f"{at}.models[{i}].params"
            for path, why in probs:  # a value set for every model is named where it was set
                key = path.rsplit(".", 1)[-1]
                if key in self.params and key not in m.params:
                    path = path.replace(per_model, f"{at}.params", 1)
                problems.append((path, why))
            for p in comp.params:
                if p.type == "PRESET":
                    values[p.name] = self._preset(p, presets[p.name], mesh_config, plugin, name, at, problems)
            self.resolved_params[m.id] = values
        return list(dict.fromkeys(problems))  # a connection-wide value is checked once per model

    def _preset(self, p: Param, value: Any, mesh_config: Any, plugin: Any, conn: str, at: str,
                problems: list[tuple[str, str]]) -> dict[str, Any]:
        where = f"{at}.params.{p.name}"
        ps = plugin.parameter_sets.get(p.parameter_set_id)
        if ps is None:
            problems.append((where, f"the plugin has no parameter set {p.parameter_set_id!r} "
                                    f"(parameter-sets/{p.parameter_set_id}/parameter-set.json)"))
            return {}
        if value is None and ps.definable_inline:
            value = {}  # no preset named: each user supplies the set's credentials, under the connection's name
        if value is None:
            if p.mandatory:
                problems.append((where, f"missing: name a preset of parameter set {ps.id!r} "
                                        f"(presets: {', '.join(_presets_of(mesh_config, ps.id)) or 'none defined'}); "
                                        "the set is not definable inline"))
            return {}
        if isinstance(value, str) or (isinstance(value, dict) and set(value) == {"preset"}):
            preset_name = value if isinstance(value, str) else value["preset"]
            preset = mesh_config.presets.get(preset_name)
            if preset is None:
                problems.append((where, f"no preset {preset_name!r}; presets of parameter set {ps.id!r}: "
                                        f"{', '.join(_presets_of(mesh_config, ps.id)) or 'none (add one under presets:)'}"))
                return {}
            if preset.parameter_set != ps.id:
                problems.append((where, f"preset {preset_name!r} is of parameter set {preset.parameter_set!r}, "
                                        f"not {ps.id!r}"))
                return {}
            values, target, vwhere = preset.values, preset_name, f"presets.{preset_name}.values"
        elif isinstance(value, dict):
            if not ps.definable_inline:
                problems.append((where, f"parameter set {ps.id!r} is not definable inline "
                                        "(defaultDefinableInline: false): name a preset"))
                return {}
            values, target, vwhere = value, conn, where
        else:
            problems.append((where, "a PRESET parameter takes a preset name, {preset: NAME}, or the set's values"))
            return {}
        secrets = _secrets_for(ps.params, values, vwhere, problems, keep_unknown=True)
        values.update(secrets)  # the config holds the Secrets (never a literal in clear), bound once, shared
        # a CREDENTIAL_REQUEST left out is each user's own (the seed's per-user credential)
        for q in ps.params:
            if q.type == "CREDENTIAL_REQUEST" and secrets.get(q.name) is None:
                secrets[q.name] = Secret("{{user}}")
        for q in ps.params:
            s = secrets.get(q.name)
            if isinstance(s, Secret) and s.kind == "user":
                s._user_slot = (target, q.name)
        out, probs = check_values(ps.params, secrets, vwhere)
        problems += probs
        return out


def _presets_of(mesh_config: Any, ps_id: str) -> list[str]:
    return sorted(n for n, p in mesh_config.presets.items() if p.parameter_set == ps_id)


def _secrets_for(params: list[Param], values: dict[str, Any], where: str, problems: list[tuple[str, str]],
                 keep_unknown: bool = False) -> dict[str, Any]:
    """``values`` with each secret parameter's string made a :class:`Secret` (a malformed reference
    is a problem, as anywhere in the config); a reference in a non-secret parameter is refused."""
    kinds = {p.name: p for p in params}
    out = {}
    for k, v in values.items():
        p = kinds.get(k)
        if p is not None and p.is_secret and isinstance(v, str):
            try:
                v = Secret(v)
            except ValueError as e:
                problems.append((f"{where}.{k}", str(e)))
        elif p is not None and isinstance(v, str) and _looks_like_reference(v):
            problems.append((f"{where}.{k}", f"{p.type} parameters do not take secret references; only "
                                             "PASSWORD and CREDENTIAL_REQUEST ones do"))
        out[k] = v
    return out


def _resolve(value: Any, where: str) -> Any:
    if isinstance(value, Secret):
        return value.get(where)
    if isinstance(value, dict):
        return {k: _resolve(v, f"{where}.{k}") for k, v in value.items()}
    return value


_LOAD_LOCK = threading.Lock()


def _load_class(comp: Component, plugin_root: Any) -> type:
    """The ``BaseLLM`` subclass defined in ``llm.py`` (``MyLLM`` when there are several)."""
    path = comp.code
    if not path.is_file():
        raise ConfigError(f"{comp.folder} has llm.json but no llm.py")
    mod_name = f"langchain_mesh_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    with _LOAD_LOCK:
        module = sys.modules.get(mod_name)
        if module is None:
            lib = plugin_root / "python-lib"
            if lib.is_dir() and str(lib) not in sys.path:  # the plugin's own modules, as its host provides
                sys.path.append(str(lib))
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise ConfigError(f"loading {path} failed: {type(e).__name__}: {e}") from e
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, BaseLLM) and c is not BaseLLM and c.__module__ == mod_name]
    if len(classes) > 1:
        classes = [c for c in classes if c.__name__ == "MyLLM"] or classes
    if len(classes) != 1:
        raise ConfigError(f"{path} must define one class deriving from langchain_mesh.plugins.BaseLLM "
                          f"(found {len(classes)}: {[c.__name__ for c in classes]})")
    cls = classes[0]
    if not any(hasattr(cls, m) for m in ("process", "process_stream", "aprocess", "aprocess_stream")):
        raise ConfigError(f"{cls.__name__} in {path} defines none of process, process_stream, aprocess, "
                          "aprocess_stream")
    return cls


def _plugin_error(e: BaseException, component: str) -> MeshError:
    """An exception from plugin code as a mesh error: an HTTP status it carries (the SDKs' errors
    do) decides the class, so retries and the gateway treat it like any provider's."""
    if isinstance(e, MeshError):
        return e
    status = getattr(e, "status_code", None) or getattr(e, "status", None)
    what = f"{type(e).__name__}: {e}"
    if isinstance(status, int):
        return error_for_status(status, what, provider=f"custom LLM {component}")
    return ProviderError(f"custom LLM {component} failed: {what}", provider=f"custom LLM {component}")


class CustomConnection(Connection):
    config_model = CustomConfig

    def __init__(self, name: str, config: CustomConfig):  # type: ignore[override]
        super().__init__(name, config)
        self._instances: dict[str, BaseLLM] = {}
        self._cls: Optional[type] = None

    def capabilities_for(self, model: str) -> ModelCapabilities:
        # what the plugin can do is its own business: nothing is refused before it sees the request
        return ModelCapabilities(streaming=True, tools=True, tool_choice=True, json_output=True,
                                 structured_output=True, image_input=True)

    def default_models(self) -> list[ModelInfo]:
        return []

    def _llm(self, model: str) -> BaseLLM:
        inst = self._instances.get(model)
        if inst is not None:
            return inst
        with self._lock:
            inst = self._instances.get(model)
            if inst is None:
                cfg: CustomConfig = self.config  # type: ignore[assignment]
                if self._cls is None:
                    plugin = load_plugin(cfg.plugin)
                    self._cls = _load_class(plugin.components[cfg.component], plugin.root)
                at = f"connections.{self.name}"
                config = _resolve(cfg.resolved_params[model], f"{at}.params")
                plugin_config = _resolve(cfg.resolved_plugin_params, f"{at}.plugin_params")
                inst = self._cls()
                try:
                    inst.set_config(config, plugin_config)
                except Exception as e:  # noqa: BLE001 - the plugin's own failure, as a mesh error
                    raise _plugin_error(e, cfg.component) from e
                self._instances[model] = inst
        return inst

    def _has(self, inst: BaseLLM, method: str) -> bool:
        return callable(getattr(inst, method, None))

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        inst = self._llm(model)
        if not self._has(inst, "process"):
            return collect_stream(self.stream(model, request))
        try:
            answer = inst.process(to_query(request), to_settings(request), Trace())  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001
            raise _plugin_error(e, self.config.component) from e  # type: ignore[attr-defined]
        return to_response(answer)

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        inst = self._llm(model)
        if not self._has(inst, "process_stream"):
            yield from Connection.stream(self, model, request)  # one chunk and the footer, from process
            return
        tr = StreamTranslator()
        items = inst.process_stream(to_query(request), to_settings(request), Trace())  # type: ignore[attr-defined]
        footer = None
        try:
            for item in items:  # read to the end: an item after the footer is the plugin's bug, named
                ev = tr.event(item)
                if isinstance(ev, StreamFooter):
                    footer = ev
                elif ev is not None:
                    yield ev
        except MeshError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _plugin_error(e, self.config.component) from e  # type: ignore[attr-defined]
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        yield footer or tr.end()

    async def acomplete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        inst = await asyncio.to_thread(self._llm, model)
        if self._has(inst, "aprocess"):
            try:
                answer = await inst.aprocess(to_query(request), to_settings(request), Trace())  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001
                raise _plugin_error(e, self.config.component) from e  # type: ignore[attr-defined]
            return to_response(answer, "aprocess")
        if self._has(inst, "aprocess_stream") and not self._has(inst, "process"):
            events = [ev async for ev in self.astream(model, request)]
            return collect_stream(iter(events))
        return await super().acomplete(model, request)

    async def astream(self, model: str, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        inst = await asyncio.to_thread(self._llm, model)
        if not self._has(inst, "aprocess_stream"):
            async for ev in super().astream(model, request):
                yield ev
            return
        tr = StreamTranslator("aprocess_stream")
        items = inst.aprocess_stream(to_query(request), to_settings(request), Trace())  # type: ignore[attr-defined]
        footer = None
        try:
            async for item in items:
                ev = tr.event(item)
                if isinstance(ev, StreamFooter):
                    footer = ev
                elif ev is not None:
                    yield ev
        except MeshError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _plugin_error(e, self.config.component) from e  # type: ignore[attr-defined]
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        yield footer or tr.end()

    def close(self) -> None:
        for inst in self._instances.values():
            close = getattr(inst, "close", None)
            if callable(close):
                close()
        self._instances.clear()
