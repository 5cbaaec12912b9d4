"""mesh.yaml -> validated configuration.

Two rules shape this module:

* every problem is reported with the dotted path of the key at fault
  (``connections.myopenai.api_kye: unknown key``), all problems at once;
* secrets are *references* (``{{env:NAME}}``, ``{{file:/path}}``) resolved only when a connection
  first needs them, and a :class:`Secret` never shows its value in a repr, str, log or error.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import core_schema

from .errors import ConfigError, CredentialError, MeshError
from .schema import ModelCapabilities, Purpose

log = logging.getLogger("langchain_mesh.config")

__all__ = [
    "Secret", "ModelConfig", "ConnectionConfig", "KnowledgeBankConfig", "ServerConfig",
    "MeshConfig", "load_config", "DEFAULT_CONFIG", "SecretsConfig", "CredentialsConfig", "PresetConfig", "portable_config",
]

_REF = re.compile(r"^\{\{\s*(env|file)\s*:\s*(.+?)\s*\}\}$")
_SECRETS_REF = re.compile(r"^\{\{\s*secrets\s*/\s*([^/{}\s]+)\s*/\s*([^/{}\s]+)\s*\}\}$")
_USER_REF = re.compile(r"^\{\{\s*user\s*\}\}$")
#: what the error for a reference we do not resolve lists
SUPPORTED_REFERENCES = ("{{env:NAME}}, {{file:PATH}}, {{secrets/SCOPE/KEY}} (with a secrets: resolver "
                        "configured) and {{user}} (each caller's own stored credential)")


def _looks_like_reference(raw: str) -> bool:
    return "{{" in raw or "}}" in raw or raw.lstrip().startswith("${")


def _reference_head(raw: str) -> str:
    """The start of a malformed reference, safe to show: up to its first ':' or '/' (a typo such as
    ``{{enve:X}}`` shows as ``{{enve:...}}``; whatever follows may be a value)."""
    head = re.split(r"[:/]", raw.strip(), maxsplit=1)[0]
    return head[:24] + ("..." if len(head) > 24 or head != raw.strip() else "")


class Secret:
    """A credential or a reference to one. ``get()`` resolves it; nothing else ever shows it.

    ``masked=False`` is for non-secret settings that may still come from the environment (a
    Databricks host, an Azure endpoint): resolved the same way, shown in reprs.
    """

    __slots__ = ("_raw", "_kind", "_target", "masked", "_resolver", "_user_slot")

    def __init__(self, raw: str, masked: bool = True):
        if not isinstance(raw, str):
            raise TypeError("a secret must be a string or a {{env:NAME}} / {{file:PATH}} reference")
        self._raw = raw
        self.masked = masked
        self._resolver: Any = None  # the configured SecretResolver, bound by load_config
        self._user_slot: Optional[tuple[str, str]] = None  # (target, field) of a {{user}}, bound by load_config
        stripped = raw.strip()
        m = _REF.match(stripped)
        if m:
            self._kind, self._target = m.group(1), m.group(2)
            return
        m = _SECRETS_REF.match(stripped)
        if m:
            from .secrets import check_scope_key

            check_scope_key(m.group(1), m.group(2))
            self._kind, self._target = "secrets", f"{m.group(1)}/{m.group(2)}"
            return
        if _USER_REF.match(stripped):
            self._kind, self._target = "user", ""
            return
        if _looks_like_reference(raw):
            # A mistyped reference would otherwise be sent to the provider as the key itself.
            raise ValueError(f"{_reference_head(raw)} looks like a secret reference but is not one the mesh "
                             f"resolves; supported: {SUPPORTED_REFERENCES}")
        self._kind, self._target = "literal", ""

    @property
    def is_reference(self) -> bool:
        return self._kind != "literal"

    @classmethod
    def literal(cls, value: str) -> "Secret":
        """A masked literal taken as is, never parsed as a reference: for values users supply (their
        stored credentials), which must not be able to name the server's own variables or files."""
        s = cls.__new__(cls)
        s._raw, s.masked, s._resolver, s._user_slot = value, True, None, None
        s._kind, s._target = "literal", ""
        return s

    @property
    def kind(self) -> str:
        """``literal``, ``env``, ``file``, ``secrets`` or ``user``."""
        return self._kind

    @property
    def user_slot(self) -> Optional[tuple[str, str]]:
        """For a ``{{user}}`` reference: the (credential target, field) whose stored value it stands for."""
        return self._user_slot

    def get(self, where: str = "") -> str:
        """Resolve now. Raises :class:`CredentialError` naming the variable or file, never a value.

        A masked secret's value is handed to :mod:`.redact`, so that no error text repeats it."""
        value = self._resolve(where)
        if self.masked:
            from .redact import remember_secret

            remember_secret(value)
        return value

    def _resolve(self, where: str) -> str:
        at = f" (referenced by {where})" if where else ""
        if self._kind == "secrets":
            if self._resolver is None:
                raise CredentialError(f"{{{{secrets/{self._target}}}}}{at} needs a secrets resolver: add a "
                                      "'secrets:' section to the mesh config (resolver: env | file | a plugin's)")
            scope, _, key = self._target.partition("/")
            return self._resolver.resolve(scope, key)
        if self._kind == "user":
            slot = f" for {self._user_slot[0]}" if self._user_slot else ""
            raise CredentialError(f"{{{{user}}}}{at} stands for each caller's own stored credential{slot}; "
                                  "it is resolved per user by the mesh, not read directly")
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
        if self._kind == "secrets":
            return "{{secrets/" + self._target + "}}"
        if self._kind == "user":
            return "{{user}}"
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
        return (_rebuild_secret, (self._raw, self.masked, self._resolver, self._user_slot))

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


def _rebuild_secret(raw: str, masked: bool, resolver: Any, user_slot: Optional[tuple[str, str]]) -> "Secret":
    s = Secret(raw, masked)
    s._resolver, s._user_slot = resolver, user_slot
    return s


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


class ImageDownloadConfig(_Strict):
    """Which image URLs a provider's answer may make the mesh download (``image_download:`` on an
    openai-family connection, the ones whose images answers may hold URLs). The URL comes from the
    provider, so it is not trusted: by default only http(s) URLs on public addresses (or on the
    connection's own ``base_url`` host and port), each redirect checked again, and at most 20 MiB."""

    schemes: list[Literal["http", "https"]] = Field(default_factory=lambda: ["https", "http"])
    hosts: Optional[list[str]] = None        # when set, only these host names (and their subdomains)
    allow_private: bool = False              # loopback, private, link-local and reserved addresses
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_redirects: int = Field(default=3, ge=0)


class RetryBudgetConfig(_Strict):
    """Retries at most ``ratio`` of the calls of the last ``window`` seconds, plus ``min_retries``."""

    ratio: float = Field(default=0.2, ge=0)
    min_retries: int = Field(default=3, ge=0)
    window: float = Field(default=10.0, gt=0)


class RetryConfig(_Strict):
    """The retry policy's waits (:mod:`langchain_mesh.policies.retry`): exponential backoff with full
    jitter from ``base`` up to ``cap`` seconds, a provider's ``Retry-After`` waited up to
    ``max_retry_after`` (beyond it the error is returned at once), an optional retry budget."""

    base: float = Field(default=0.5, gt=0)
    cap: float = Field(default=8.0, gt=0)
    max_retry_after: float = Field(default=60.0, ge=0)
    budget: Optional[RetryBudgetConfig] = None


class ConnectionConfig(_Strict):
    """Fields every connection has. Each connection type subclasses this with its own settings."""

    type: str
    description: str = ""
    models: Optional[list[ModelConfig]] = None
    timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    #: image generation: refuse a setting the model does not take (strict), or drop it and list it in
    #: the response's ignored_settings (lenient)
    image_settings: Literal["strict", "lenient"] = "strict"
    #: how retries wait (backoff, Retry-After cap, budget); None: the defaults, no budget
    retry: Optional[RetryConfig] = None

    model_config_class: ClassVar[type[ModelConfig]] = ModelConfig


class KnowledgeBankConfig(_Strict):
    #: a registered bank backend (knowledge_banks.backends): faiss | elasticsearch | azure_search | a plugin's
    backend: str = "faiss"
    description: str = ""
    path: Optional[str] = None
    embedding_llm: str = "huggingfacelocal:local:all-MiniLM-L6-v2"
    # question vectors kept on disk in the bank folder (knowledge_banks/query_cache.py); 0 = off
    query_cache: int = Field(default=1000, ge=0)
    metadata_schema: dict[str, Literal["string", "int", "float", "bool", "date"]] = Field(default_factory=dict)
    # engine-specific settings (urls, index names, credentials), checked against the backend's
    # settings model when the config loads (load_config)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from knowledge_banks.backends import get_backend

        try:
            get_backend(v)
        except LookupError as e:
            raise ValueError(str(e)) from None
        return v


class ServerKeyConfig(_Strict):
    key: Secret
    name: str = "default"
    allowed_llms: Optional[list[str]] = None
    # who the key's calls count for (limits, budgets, the usage ledger): default user = the key's name
    user: Optional[str] = None
    team: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    admin: bool = False  # may read the usage page and API (/usage, /usage/api)


class ServerLimits(_Strict):
    """What one request may cost the gateway before it is refused (``server.limits:``)."""

    max_header_bytes: int = Field(default=64 * 1024, ge=1024)   # request line + headers: 431 beyond
    header_timeout: float = Field(default=10.0, gt=0)           # seconds to send them: 408 after
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)  # inline images make bodies large: 413
    body_timeout: float = Field(default=60.0, gt=0)             # seconds to send the body: 408 after
    max_embedding_inputs: int = Field(default=2048, ge=1)       # inputs of one embeddings request (OpenAI's cap)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[ServerKeyConfig] = Field(default_factory=list)
    limits: ServerLimits = Field(default_factory=ServerLimits)
    # without api keys: extra Host names the server answers to (besides the bound address and
    # localhost) and browser origins allowed to call it
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)


class SecretsConfig(_Strict):
    """Who resolves ``{{secrets/<scope>/<key>}}`` (see :mod:`langchain_mesh.secrets`)."""

    resolver: str
    options: dict[str, Any] = Field(default_factory=dict)


class CredentialsConfig(_Strict):
    """The per-user credential store (see :mod:`langchain_mesh.credentials`)."""

    store: Literal["file"] = "file"
    #: default: $MESH_CREDENTIALS_FILE, else ~/.local/share/langchain-mesh/credentials.json
    path: Optional[str] = None
    #: the store's encryption key; default: $MESH_CREDENTIALS_KEY, else the OS keyring
    key: Optional[Secret] = None


class PresetConfig(_Strict):
    """A preset of a plugin's parameter set: values for its fields. A credential field left out (or
    set to ``{{user}}``) is each user's own, stored with ``mesh credentials set <preset>``."""

    parameter_set: str
    description: str = ""
    values: dict[str, Any] = Field(default_factory=dict)

    @field_validator("values")
    @classmethod
    def _references(cls, v: dict[str, Any]) -> dict[str, Any]:
        # a reference is a Secret (checked, never shown) whichever field of the set it fills
        return {k: Secret(x) if isinstance(x, str) and _looks_like_reference(x) else x for k, x in v.items()}


#: what makes a route try its next target (``routes.<name>.fallback_on``); ``retryable`` = the first five
FALLBACK_TRIGGERS = ("rate_limit", "server_error", "timeout", "connection", "stream_interrupted",
                     "context_window", "content_filter", "any", "retryable")


class RouteTargetConfig(_Strict):
    """One target of a route: an LLM id, its share of the traffic, its own per-attempt timeout."""

    llm: str
    weight: Optional[float] = Field(default=None, ge=0)
    #: the seed's served-entity form of ``weight`` (percentages summing to 100)
    traffic_percentage: Optional[float] = Field(default=None, ge=0, le=100)
    #: seconds one call of this target may take (its retries included) before the route falls back
    timeout: Optional[float] = Field(default=None, gt=0)

    @property
    def share(self) -> float:
        return self.traffic_percentage if self.traffic_percentage is not None else (
            1.0 if self.weight is None else self.weight)


class BreakerConfig(_Strict):
    """Per target: ``failures`` failures within ``window`` seconds open the breaker; it stays open
    (the target is skipped) for ``cooldown`` seconds, then one probe call decides."""

    enabled: bool = True
    failures: int = Field(default=5, ge=1)
    window: float = Field(default=30.0, gt=0)
    cooldown: float = Field(default=30.0, gt=0)


class RouteRetryConfig(RetryConfig):
    """A route's retries: ``max_retries`` more passes over its targets once every target failed
    retryably (waits per the backoff); ``target_retries`` retries of each target before falling back
    (default: the target connection's own ``max_retries``)."""

    max_retries: int = Field(default=0, ge=0)
    target_retries: Optional[int] = Field(default=None, ge=0)


class RouteConfig(_Strict):
    """A virtual LLM, ``route:<name>``, dispatching each call to one of its targets
    (:mod:`langchain_mesh.policies.routes`)."""

    description: str = ""
    strategy: Literal["fallback", "weighted", "least_busy", "lowest_latency"] = "fallback"
    targets: list[RouteTargetConfig] = Field(min_length=1)
    #: after the chosen target fails on a trigger, try the other targets in order
    fallbacks: bool = True
    fallback_on: list[Literal[FALLBACK_TRIGGERS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["retryable", "context_window"])
    #: weighted: the caller's sticky key (call_scope(sticky_key=), the gateway's `user` or
    #: x-mesh-sticky-key) always picks the same target
    sticky: bool = True
    #: seconds for the whole call: every target, retry and wait
    timeout: Optional[float] = Field(default=None, gt=0)
    retry: Optional[RouteRetryConfig] = None
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @field_validator("targets", mode="before")
    @classmethod
    def _plain_ids(cls, v: Any) -> Any:
        return [{"llm": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[RouteTargetConfig]) -> list[RouteTargetConfig]:
        from .ids import parse_llm_id

        for t in v:
            try:
                ctype = parse_llm_id(t.llm).connection_type
            except MeshError as e:
                raise ValueError(str(e)) from None
            if ctype == "route":
                raise ValueError(f"target {t.llm!r} is a route: a route's targets are LLMs of connections")
            if t.weight is not None and t.traffic_percentage is not None:
                raise ValueError(f"target {t.llm!r}: give weight or traffic_percentage, not both")
        if len({t.llm for t in v}) != len(v):
            raise ValueError("a target is listed twice")
        pct = [t.traffic_percentage for t in v if t.traffic_percentage is not None]
        if pct and (len(pct) != len(v) or abs(sum(pct) - 100.0) > 1e-6):
            raise ValueError(f"traffic_percentage must be given for every target and sum to 100 (got {sum(pct)})")
        if not sum(t.share for t in v) > 0:
            raise ValueError("the targets' weights sum to 0")
        return v


class _GuardrailBase(_Strict):
    """What every guardrail has: a name (in errors, footers, spans) and where it applies. ``llms``
    and ``keys`` are glob patterns on the LLM id (``route:*``, ``openai:main:*``) and on the caller's
    key name (``CallScope.key``); empty = every LLM / every caller."""

    name: str = Field(min_length=1)
    llms: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list)
    stage: Literal["input", "output", "both"] = "both"


class PIIGuardrailConfig(_GuardrailBase):
    type: Literal["pii"]
    action: Literal["redact", "block", "flag"] = "redact"
    #: default all: EMAIL, PHONE, CREDIT_CARD, IBAN, API_KEY
    entities: Optional[list[Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "API_KEY"]]] = None


class TermsGuardrailConfig(_GuardrailBase):
    type: Literal["terms"]
    action: Literal["redact", "block", "flag"] = "block"
    terms: list[str] = Field(default_factory=list)  # matched case-insensitively on word boundaries
    patterns: list[str] = Field(default_factory=list)  # regular expressions (Python syntax)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} is not a valid regular expression: {e}") from None
        return v


class SizeGuardrailConfig(_GuardrailBase):
    type: Literal["size"]
    stage: Literal["input"] = "input"
    max_tokens: Optional[int] = Field(default=None, ge=1)  # estimated locally, never by a provider call
    max_chars: Optional[int] = Field(default=None, ge=1)
    max_messages: Optional[int] = Field(default=None, ge=1)
    max_images: Optional[int] = Field(default=None, ge=0)


class JSONGuardrailConfig(_GuardrailBase):
    type: Literal["json"]
    stage: Literal["output"] = "output"
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    on_invalid: Literal["repair", "refuse"] = "refuse"


class JudgeGuardrailConfig(_GuardrailBase):
    type: Literal["judge"]
    llm: str  # any mesh LLM id: a hosted safety model, or the local one
    policy: str = Field(min_length=1)  # what is not allowed, in words the judge model reads
    action: Literal["block", "flag"] = "block"


GuardrailConfig = Annotated[Union[PIIGuardrailConfig, TermsGuardrailConfig, SizeGuardrailConfig,
                                  JSONGuardrailConfig, JudgeGuardrailConfig], Field(discriminator="type")]


class SemanticCacheConfig(_Strict):
    """Answers for requests close in meaning (see :mod:`langchain_mesh.policies.semantic_cache`)."""

    knowledge_bank: str  # a bank of knowledge_banks:, holding the cached conversations
    threshold: float = Field(default=0.95, gt=0, le=1)  # the bank's relevance score a match must reach


class CacheConfig(_Strict):
    """The response cache (see :mod:`langchain_mesh.policies.cache`)."""

    enabled: bool = True
    ttl: float = Field(default=3600.0, gt=0)  # seconds
    max_entries: int = Field(default=1000, ge=1)  # in-process LRU size
    llms: list[str] = Field(default_factory=list)  # glob patterns; empty = every LLM
    #: cache calls whose answer may vary (temperature unset or > 0); default only temperature 0
    nondeterministic: bool = False
    #: shared cache for every worker and process; default: ``state.redis_url`` when configured
    redis_url: Optional[Secret] = None
    namespace: str = "mesh:cache:"
    semantic: Optional[SemanticCacheConfig] = None  # off by default


class TracingConfig(_Strict):
    """OpenTelemetry spans per call (see :mod:`langchain_mesh.policies.tracing`)."""

    enabled: bool = True
    #: message texts in span events (gen_ai.input.messages / gen_ai.output.messages): off by default
    capture_content: bool = False
    #: None: the application's global TracerProvider; console / otlp: one the mesh sets up
    exporter: Optional[Literal["console", "otlp"]] = None
    service_name: str = "langchain-mesh"


class StateConfig(_Strict):
    """Where limits, budgets and breakers keep their counters (``state:``); see :mod:`.policies.state`."""

    redis_url: Optional[Secret] = None  # may carry a password: a reference ({{env:REDIS_URL}}) or literal
    # Redis unreachable: "open" lets calls through unlimited (and logs it), "closed" refuses them (503)
    on_failure: Literal["open", "closed"] = "closed"
    timeout: float = Field(default=0.5, gt=0)  # seconds for one Redis command before it counts as down
    # far from its limits, a worker takes a few dozen calls' worth of windows in one trip and counts them
    # itself for 50 ms (policies/limits.py _Lease); false: every limited call asks Redis
    lease: bool = True


class RateConfig(_Strict):
    """Requests and tokens (input + output) per ``limits.period`` for one key, user, team, LLM or connection."""

    rpm: Optional[int] = Field(default=None, ge=0)
    tpm: Optional[int] = Field(default=None, ge=0)


class LimitsConfig(_Strict):
    """Rate limits (``limits:``), enforced on library calls and in ``mesh serve``; see :mod:`.policies.limits`."""

    enabled: bool = True
    period: int = Field(default=60, ge=1)  # seconds of a window: 60 = per minute ("rpm", "tpm")
    strategy: Literal["moving-window", "fixed-window", "sliding-window"] = "moving-window"  # for requests
    default: Optional[RateConfig] = None  # every key (caller) without an entry of its own
    keys: dict[str, RateConfig] = Field(default_factory=dict)
    users: dict[str, RateConfig] = Field(default_factory=dict)
    teams: dict[str, RateConfig] = Field(default_factory=dict)
    llms: dict[str, RateConfig] = Field(default_factory=dict)  # LLM or route id
    connections: dict[str, RateConfig] = Field(default_factory=dict)


class BudgetsConfig(_Strict):
    """Spend caps per period in the price table's currency (``budgets:``); see :mod:`.policies.budgets`."""

    enabled: bool = True
    period: Union[Literal["hour", "day", "week", "month"], float] = "month"  # month = 30 days; or seconds
    keys: dict[str, float] = Field(default_factory=dict)
    users: dict[str, float] = Field(default_factory=dict)
    teams: dict[str, float] = Field(default_factory=dict)
    connections: dict[str, float] = Field(default_factory=dict)
    # an LLM without a price cannot be budgeted: "refuse" its calls where a budget applies, or "allow" them
    unknown_price: Literal["refuse", "allow"] = "refuse"


class PriceConfig(_Strict):
    """A price per million tokens, overriding the price table (``prices: {<LLM id or model>: ...}``)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: Optional[float] = Field(default=None, ge=0)  # default: the input price


class UsageConfig(_Strict):
    """The usage and cost ledger (``usage:``); see :mod:`langchain_mesh.usage`."""

    enabled: bool = True
    path: str = "mesh-usage.db"  # the SQLite file (WAL mode), relative to the working directory
    url: Optional[Secret] = None  # any SQLAlchemy URL instead (postgresql+psycopg://...)
    flush_interval: float = Field(default=1.0, gt=0)  # seconds between writes of the buffered rows
    batch: int = Field(default=500, ge=1)  # rows per write at most
    currency: str = "USD"  # of the price table (genai-prices is in USD); overrides are in it too


class MeshConfig(_Strict):
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    knowledge_banks: dict[str, KnowledgeBankConfig] = Field(default_factory=dict)
    server: ServerConfig = Field(default_factory=ServerConfig)
    secrets: Optional[SecretsConfig] = None
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)
    presets: dict[str, PresetConfig] = Field(default_factory=dict)
    #: virtual LLMs ``route:<name>`` (traffic split, fallbacks, breakers): see policies/routes.py
    routes: dict[str, RouteConfig] = Field(default_factory=dict)

    @field_validator("routes")
    @classmethod
    def _route_names(cls, v: dict[str, RouteConfig]) -> dict[str, RouteConfig]:
        for name in v:
            if not name or ":" in name or name.strip() != name:
                raise ValueError(f"route name {name!r}: use a non-empty name without ':' or surrounding spaces")
        return v

    guardrails: list[GuardrailConfig] = Field(default_factory=list)
    cache: Optional[CacheConfig] = None
    tracing: Optional[TracingConfig] = None

    @field_validator("guardrails")
    @classmethod
    def _guardrail_names(cls, v: list[Any]) -> list[Any]:
        # the name is what errors, footers and spans report: two alike could not be told apart
        names = [g.name for g in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"guardrail names must be unique; used more than once: {', '.join(twice)}")
        return v
    state: Optional[StateConfig] = None
    limits: Optional[LimitsConfig] = None
    budgets: Optional[BudgetsConfig] = None
    usage: Optional[UsageConfig] = None
    prices: dict[str, PriceConfig] = Field(default_factory=dict)

    @field_validator("knowledge_banks")
    @classmethod
    def _bank_ids(cls, v: dict[str, KnowledgeBankConfig]) -> dict[str, KnowledgeBankConfig]:
        from .ids import check_bank_id

        for kb_id in v:
            try:
                check_bank_id(kb_id)
            except MeshError as e:
                raise ValueError(str(e)) from None
        return v

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


def _bank_settings_problems(banks: Mapping[str, KnowledgeBankConfig]) -> list[tuple[str, str]]:
    """Each bank's ``settings:`` checked against its backend's settings model."""
    from knowledge_banks.backends import get_backend

    out: list[tuple[str, str]] = []
    for kb_id, kb in banks.items():
        model = get_backend(kb.backend).settings_model
        try:
            model.model_validate(kb.settings)
        except ValidationError as e:
            out += _problems_from(e, f"knowledge_banks.{kb_id}.settings", model)
    return out


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

    if base is not None:
        problems += _link(base, conns, Path(source).parent if isinstance(source, (str, os.PathLike)) else None)
        problems += _bank_settings_problems(base.knowledge_banks)
        problems += _route_problems(base.routes, conns)
    if problems:
        raise ConfigError(_format_problems(problems, where), problems)
    assert base is not None
    base.connections = conns
    if where:
        _warn_if_exposed(Path(source), base)  # type: ignore[arg-type]
    return base


def _route_problems(routes: Mapping[str, "RouteConfig"], conns: Mapping[str, ConnectionConfig]) -> list[tuple[str, str]]:
    """Each route target names a configured connection of its type (its model is checked on first use)."""
    out = []
    for name, route in routes.items():
        for i, t in enumerate(route.targets):
            ctype, cname, _ = t.llm.split(":", 2)
            cfg = conns.get(cname)
            if cfg is None or cfg.type != ctype:
                out.append((f"routes.{name}.targets.{i}.llm", f"{t.llm!r} names no connection {cname!r} of type "
                            f"{ctype!r}; connections: {', '.join(sorted(conns)) or 'none'}"))
    return out


def _link(base: MeshConfig, conns: dict[str, ConnectionConfig], base_dir: Optional[Path] = None) -> list[tuple[str, str]]:
    """Checks that need the whole config: secret references bound to the configured resolver,
    ``{{user}}`` references to their credential target, and each connection's own cross-checks
    (``check_with``: a custom connection's presets and parameters; relative paths in it are read
    from ``base_dir``, the YAML file's folder)."""
    problems: list[tuple[str, str]] = []
    resolver = None
    if base.secrets is not None:
        from .secrets import make_secret_resolver

        try:
            resolver = make_secret_resolver(base.secrets.resolver, base.secrets.options)
        except ConfigError as e:
            problems += e.problems or [("secrets", str(e))]
    for name in conns:
        if name in base.presets:
            problems.append((f"presets.{name}", f"a preset and a connection are both named {name!r}: "
                             "credentials are stored by that name, so it must be unique"))
    for name, conn in conns.items():
        check = getattr(conn, "check_with", None)
        if check is not None:
            problems += check(base, f"connections.{name}", base_dir=base_dir)
    for kb, kbc in base.knowledge_banks.items():
        # the banks read their settings' references themselves, when opened: check them now
        for key, value in kbc.settings.items():
            if isinstance(value, str) and _looks_like_reference(value):
                where = f"knowledge_banks.{kb}.settings.{key}"
                try:
                    kind = Secret(value).kind
                except ValueError as e:
                    problems.append((where, str(e)))
                    continue
                if kind not in ("env", "file"):
                    problems.append((where, "knowledge-bank settings take {{env:NAME}} and {{file:PATH}} "
                                            "references only"))
    roots: list[tuple[str, Any]] = [(f"connections.{n}", c) for n, c in conns.items()]
    roots += [(f"presets.{n}.values", p.values) for n, p in base.presets.items()]
    roots += [("server", base.server), ("credentials", base.credentials)]
    for root, obj in roots:
        for path, secret in _secrets_in(obj, root):
            if secret.kind == "secrets":
                if base.secrets is None:
                    problems.append((path, f"{secret.describe()} needs a secrets resolver: add a 'secrets:' "
                                     f"section (resolver: env | file | a plugin's); supported references: "
                                     f"{SUPPORTED_REFERENCES}"))
                secret._resolver = resolver
            elif secret.kind == "user" and secret.user_slot is None:  # (a plugin's presets bind their own)
                slot = _user_slot(path)
                if slot is None:
                    problems.append((path, "{{user}} (a per-user credential) is only allowed in a "
                                     "connection's settings or a preset's values"))
                secret._user_slot = slot
    return problems


def _user_slot(path: str) -> Optional[tuple[str, str]]:
    """(credential target, field) of a ``{{user}}`` found at ``path``: the connection or preset it
    belongs to, and its key there (``connections.myopenai.api_key`` -> (``myopenai``, ``api_key``))."""
    parts = path.split(".")
    if parts[0] == "connections" and len(parts) >= 3:
        return parts[1], ".".join(parts[2:])
    if parts[0] == "presets" and len(parts) >= 4 and parts[2] == "values":
        return parts[1], ".".join(parts[3:])
    return None


def _secrets_in(obj: Any, path: str) -> list[tuple[str, Secret]]:
    """Every :class:`Secret` inside a validated config object, with its dotted path."""
    out: list[tuple[str, Secret]] = []
    if isinstance(obj, Secret):
        out.append((path, obj))
    elif isinstance(obj, BaseModel):
        for k in type(obj).model_fields:
            out += _secrets_in(getattr(obj, k, None), f"{path}.{k}")
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out += _secrets_in(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += _secrets_in(v, f"{path}[{i}]")
    return out


# free-form settings (a knowledge bank's engine settings) hold plain strings: judged by their key's name
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|password|basic_auth)$")


def _literal_secrets(value: Any, at: str) -> Iterator[str]:
    """Dotted paths of the masked literal secrets (not references) in a validated config."""
    if isinstance(value, Secret):
        if value.masked and not value.is_reference and "://" not in value._raw:
            yield at
    elif isinstance(value, str):
        from .redact import redact_url

        if "://" in value and redact_url(value) != value:  # a URL with a password or a token in it
            yield at
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _literal_secrets(getattr(value, name), f"{at}.{name}" if at else name)
    elif isinstance(value, dict):
        for k, v in value.items():
            where = f"{at}.{k}" if at else str(k)
            if _SECRET_NAME.search(str(k)) and _is_literal_text(v):
                yield where
            else:
                yield from _literal_secrets(v, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _literal_secrets(v, f"{at}[{i}]")


def _is_literal_text(v: Any) -> bool:
    """A plain string that is not a reference (for a ``(user, password)`` pair: its password)."""
    if isinstance(v, (list, tuple)) and v:
        v = v[-1]
    return isinstance(v, str) and not _REF.match(v.strip())


def _warn_if_exposed(path: Path, config: MeshConfig) -> None:
    """Warn when a config file that every user of the machine can read holds a literal secret."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not mode & stat.S_IROTH:
        return
    found = list(_literal_secrets(config, ""))
    if found:
        log.warning("mesh config %s is readable by every user of this machine and holds literal secrets (%s): "
                    "restrict it (chmod 600 %s) or use {{env:NAME}} / {{file:PATH}} references",
                    path, ", ".join(found[:5]) + (" ..." if len(found) > 5 else ""), path)


# --------------------------------------------------------------------------------------------------
# a config another process can rebuild the mesh from (pickle, LangChain dumpd/loads)


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
    literals = list(_literal_secrets(config, ""))
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
