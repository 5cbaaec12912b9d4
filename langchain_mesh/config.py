"""mesh.yaml -> validated configuration.

Two rules shape this module:

* every problem is reported with the dotted path of the key at fault
  (``connections.myopenai.api_kye: unknown key``), all problems at once;
* secrets are *references* (``{{env:NAME}}``, ``{{file:/path}}``) resolved only when a connection
  first needs them, and a :class:`Secret` never shows its value in a repr, str, log or error.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import core_schema

from .errors import ConfigError, CredentialError
from .schema import ModelCapabilities, Purpose

__all__ = [
    "Secret", "ModelConfig", "ConnectionConfig", "KnowledgeBankConfig", "ServerConfig",
    "MeshConfig", "load_config", "DEFAULT_CONFIG", "portable_config",
]

_REF = re.compile(r"^\{\{\s*(env|file)\s*:\s*(.+?)\s*\}\}$")


class Secret:
    """A credential or a reference to one. ``get()`` resolves it; nothing else ever shows it.

    ``masked=False`` is for non-secret settings that may still come from the environment (a
    Databricks host, an Azure endpoint): resolved the same way, shown in reprs.
    """

    __slots__ = ("_raw", "_kind", "_target", "masked")

    def __init__(self, raw: str, masked: bool = True):
        if not isinstance(raw, str):
            raise TypeError("a secret must be a string or a {{env:NAME}} / {{file:PATH}} reference")
        self._raw = raw
        m = _REF.match(raw.strip())
        self._kind, self._target = (m.group(1), m.group(2)) if m else ("literal", "")
        self.masked = masked

    @property
    def is_reference(self) -> bool:
        return self._kind != "literal"

    def get(self, where: str = "") -> str:
        """Resolve now. Raises :class:`CredentialError` naming the variable or file, never a value."""
        at = f" (referenced by {where})" if where else ""
        if self._kind == "env":
            value = os.environ.get(self._target)
            if value is None or value == "":
                raise CredentialError(
                    f"environment variable {self._target} is not set{at}; export it or change the reference")
            return value
        if self._kind == "file":
            path = Path(self._target).expanduser()
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise CredentialError(f"cannot read secret file {path}{at}: {e.strerror}") from None
        return self._raw

    def describe(self) -> str:
        """Safe to show: the reference itself, or asterisks for a literal."""
        if self.is_reference:
            return "{{" + f"{self._kind}:{self._target}" + "}}"
        return "**********" if self.masked else self._raw

    def __repr__(self) -> str:
        return f"Secret({self.describe()!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(("Secret", self._raw))

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickling (multiprocessing, caches) keeps the reference; a literal would travel in clear,
        # so refuse that rather than leak.
        if not self.is_reference and self.masked:
            raise TypeError("a literal secret cannot be pickled; use a {{env:...}} or {{file:...}} reference")
        return (Secret, (self._raw, self.masked))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def to_secret(v: Any) -> "Secret":
            if isinstance(v, Secret):
                return v
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str):
                raise ValueError("must be a string or a {{env:NAME}} / {{file:PATH}} reference")
            return cls(v)

        return core_schema.no_info_plain_validator_function(
            to_secret,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.describe()),
        )


def resolve_optional(value: Union[str, Secret, None], where: str = "") -> Optional[str]:
    if value is None:
        return None
    return value.get(where) if isinstance(value, Secret) else value


# --------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())


class ModelConfig(_Strict):
    """One model a connection exposes. Connection types may subclass it with their own fields."""

    id: str
    purposes: list[Purpose] = Field(default_factory=lambda: [Purpose.GENERIC_COMPLETION])
    description: str = ""
    capabilities: Optional[ModelCapabilities] = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model id must not be empty")
        return v


class ConnectionConfig(_Strict):
    """Fields every connection has. Each connection type subclasses this with its own settings."""

    type: str
    description: str = ""
    models: Optional[list[ModelConfig]] = None
    timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    model_config_class: ClassVar[type[ModelConfig]] = ModelConfig


class KnowledgeBankConfig(_Strict):
    backend: Literal["faiss", "elasticsearch", "azure_search"] = "faiss"
    description: str = ""
    path: Optional[str] = None
    embedding_llm: str = "huggingfacelocal:local:all-MiniLM-L6-v2"
    metadata_schema: dict[str, Literal["string", "int", "float", "bool", "date"]] = Field(default_factory=dict)
    # engine-specific connection settings (urls, index names, credentials) validated by the backend
    settings: dict[str, Any] = Field(default_factory=dict)


class ServerKeyConfig(_Strict):
    key: Secret
    name: str = "default"
    allowed_llms: Optional[list[str]] = None


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[ServerKeyConfig] = Field(default_factory=list)


class MeshConfig(_Strict):
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    knowledge_banks: dict[str, KnowledgeBankConfig] = Field(default_factory=dict)
    server: ServerConfig = Field(default_factory=ServerConfig)

    def __repr__(self) -> str:
        return f"MeshConfig(connections={sorted(self.connections)}, knowledge_banks={sorted(self.knowledge_banks)})"


DEFAULT_CONFIG: dict[str, Any] = {
    "connections": {"local": {"type": "huggingfacelocal"}},
    # a FAISS bank under $MESH_BANKS_DIR/docs (default ./banks/docs), embedded with the local MiniLM
    "knowledge_banks": {"docs": {"backend": "faiss", "embedding_llm": "huggingfacelocal:local:all-MiniLM-L6-v2"}},
}


# --------------------------------------------------------------------------------------------------


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Optional[Mapping[str, Any]]:
    """The fields of the pydantic model found at ``loc`` inside ``model`` (for did-you-mean hints)."""
    import types
    import typing

    def unwrap(t: Any) -> Any:
        if typing.get_origin(t) in (Union, getattr(types, "UnionType", Union)):
            t = next((a for a in typing.get_args(t) if a is not type(None)), t)
        return t

    cur: Any = model
    for part in loc:
        cur = unwrap(cur)
        origin = typing.get_origin(cur)
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            field = cur.model_fields.get(str(part))
            if field is None:
                return None
            cur = field.annotation
        elif origin is list:
            cur = typing.get_args(cur)[0]
        elif origin is dict:
            cur = typing.get_args(cur)[1]
        else:
            return None
    cur = unwrap(cur)
    return cur.model_fields if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _problems_from(e: ValidationError, prefix: str, model: type[BaseModel]) -> list[tuple[str, str]]:
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            msg = "unknown key"
            known = _fields_at(model, tuple(err["loc"][:-1]))  # the keys valid where this one sits
            if known is not None:
                hint = difflib.get_close_matches(key, list(known), n=1)
                if hint:
                    msg += f" (did you mean {hint[0]!r}?)"
        else:
            msg = err["msg"]
        out.append((path, msg))
    return out


def _format_problems(problems: list[tuple[str, str]], source: str) -> str:
    lines = [f"invalid mesh configuration{source}:"] + [f"  {p}: {m}" for p, m in problems]
    return "\n".join(lines)


def load_config(source: Union[str, os.PathLike[str], Mapping[str, Any], MeshConfig, None]) -> MeshConfig:
    """Read and validate a mesh config from a YAML path, a dict or an existing :class:`MeshConfig`."""
    from .connections import connection_types, get_connection_class

    if isinstance(source, MeshConfig):
        return source
    where = ""
    if source is None:
        raw: Any = DEFAULT_CONFIG
    elif isinstance(source, Mapping):
        raw = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f" in {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read mesh config {path}: {e.strerror}") from None
        import yaml

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            # Not str(e): PyYAML quotes the offending line, which may hold a literal secret.
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"mesh config {path} is not valid YAML{at}: {what}") from None
    else:
        raise ConfigError(f"a mesh config is a YAML file path, a mapping or a MeshConfig, got {type(source).__name__}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"mesh config{where} must be a mapping at the top level, got {type(raw).__name__}")

    problems: list[tuple[str, str]] = []
    top = dict(raw)
    raw_conns = top.pop("connections", None) or {}
    if not isinstance(raw_conns, Mapping):
        problems.append(("connections", "must be a mapping of connection name to settings"))
        raw_conns = {}
    try:
        base = MeshConfig.model_validate(top)
    except ValidationError as e:
        problems += _problems_from(e, "", MeshConfig)
        base = None

    conns: dict[str, ConnectionConfig] = {}
    for name, conn in raw_conns.items():
        at = f"connections.{name}"
        if not isinstance(name, str) or not name or ":" in name:
            problems.append((at, "connection names must be non-empty and contain no ':'"))
            continue
        if not isinstance(conn, Mapping):
            problems.append((at, "must be a mapping with at least a 'type'"))
            continue
        ctype = conn.get("type")
        if not ctype:
            problems.append((f"{at}.type", f"missing; one of {', '.join(connection_types())}"))
            continue
        try:
            cls = get_connection_class(ctype)
        except LookupError as e:
            problems.append((f"{at}.type", str(e)))
            continue
        model = cls.config_model
        try:
            conns[name] = model.model_validate(dict(conn))
        except ValidationError as e:
            problems += _problems_from(e, at, model)

    if problems:
        raise ConfigError(_format_problems(problems, where), problems)
    assert base is not None
    base.connections = conns
    return base


# --------------------------------------------------------------------------------------------------
# a config another process can rebuild the mesh from (pickle, LangChain dumpd/loads)

#: knowledge-bank ``settings`` keys whose values the backends read as secrets (see
#: knowledge_banks.elasticsearch_bank / azure_search_bank); free-form, so checked by name
_KB_SECRET_KEYS = frozenset({"api_key", "key", "basic_auth", "password", "token"})


def _literal_secrets(value: Any, path: str) -> list[str]:
    """Dotted paths of the literal (non-reference) secrets under ``value``."""
    if isinstance(value, Secret):
        return [path] if value.masked and not value.is_reference else []
    if isinstance(value, BaseModel):
        out: list[str] = []
        for name, v in value:
            out += _literal_secrets(v, f"{path}.{name}" if path else name)
        return out
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _literal_secrets(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _literal_secrets(v, f"{path}[{i}]")]
    return []


def _literal_bank_secrets(config: "MeshConfig") -> list[str]:
    out = []
    for kb_id, kb in config.knowledge_banks.items():
        for key, v in kb.settings.items():
            if key not in _KB_SECRET_KEYS or v is None:
                continue
            values = v if isinstance(v, (list, tuple)) else [v]
            if any(not Secret(str(x)).is_reference for x in values[-1:]):  # basic_auth: (user, password)
                out.append(f"knowledge_banks.{kb_id}.settings.{key}")
    return out


def portable_config(config: "MeshConfig") -> dict[str, Any]:
    """``config`` as a plain dict that :func:`load_config` reads back in another process.

    Secret *references* (``{{env:NAME}}``, ``{{file:PATH}}``) travel as written and are resolved on
    the other side; values left at their defaults are left out; relative knowledge-bank paths are
    made absolute. A literal secret is refused with a
    :class:`CredentialError` naming its key: it would travel (and be stored) in clear.

    ```python
    portable_config(load_config({"connections": {"o": {"type": "openai", "api_key": "{{env:OPENAI_API_KEY}}"}}}))
    # {'connections': {'o': {'type': 'openai', 'api_key': '{{env:OPENAI_API_KEY}}'}}}
    ```
    """
    literals = _literal_secrets(config, "") + _literal_bank_secrets(config)
    if literals:
        raise CredentialError(
            f"this mesh cannot be serialised or sent to another process: its config holds literal "
            f"secret(s) at {', '.join(literals)}, which would travel in clear. Put each in an "
            "environment variable or a file and reference it (api_key: \"{{env:NAME}}\" or "
            "\"{{file:/path}}\")")
    dump = dict(mode="json", exclude_unset=True, by_alias=True)
    out = config.model_dump(exclude={"connections"}, **dump)  # type: ignore[arg-type]
    # one dump per connection: each is its own config subclass (a dict of the base class would
    # serialise only the base fields)
    out["connections"] = {name: c.model_dump(**dump) for name, c in config.connections.items()}  # type: ignore[arg-type]
    for kb in (out.get("knowledge_banks") or {}).values():
        # a bank folder is read relative to the working directory: made absolute, a process started
        # elsewhere opens the same bank
        if kb.get("path") and not Path(kb["path"]).expanduser().is_absolute():
            kb["path"] = str(Path(kb["path"]).expanduser().resolve())
    return out
