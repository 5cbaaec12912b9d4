"""One error hierarchy for the whole mesh.

Every error says what went wrong and how to fix it. Provider errors carry the HTTP status, the
provider's own message and whether retrying can help, so policies (retries, fallbacks) and the HTTP
server decide from the type alone, whichever provider raised it.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .redact import redact


class MeshError(Exception):
    """Base of every error langchain-mesh raises."""


class ConfigError(MeshError, ValueError):
    """The mesh configuration is invalid. ``problems`` lists (dotted key path, reason) pairs."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


class CredentialError(MeshError):
    """A secret reference could not be resolved (unset variable, unreadable file)."""


class MissingUserCredentialError(CredentialError):
    """The calling user has no stored credential where the connection or preset needs one (401-class:
    the user, not the operator, fixes it by storing their own)."""

    status = 401

    def __init__(self, message: str, *, user: str = "", target: str = "", fields: Sequence[str] = ()):
        super().__init__(message)
        self.user = user
        self.target = target
        self.fields = list(fields)


class UnknownLLMError(MeshError, LookupError):
    """An LLM id names a connection or model the mesh does not have."""

    def __init__(self, message: str, llm_id: str = "", available: Sequence[str] = ()):
        super().__init__(message)
        self.llm_id = llm_id
        self.available = list(available)


class UnknownKnowledgeBankError(MeshError, LookupError):
    """A knowledge-bank id that the mesh config does not declare."""


class KnowledgeBankError(MeshError):
    """A knowledge bank's files are unreadable, corrupt or inconsistent, or its id is not usable."""


class InvalidLLMIdError(MeshError, ValueError):
    """An LLM id is not of the form ``<connection type>:<connection name>:<model>``."""


class SettingsError(MeshError, ValueError):
    """Completion settings are misspelt, ill-typed or incoherent. ``settings`` names the bad ones."""

    def __init__(self, message: str, settings: Sequence[str] = ()):
        super().__init__(message)
        self.settings = list(settings)


class ToolSchemaError(SettingsError):
    """A tool definition is malformed (bad name, parameters that are not a JSON Schema object)."""

    def __init__(self, message: str):
        super().__init__(message, ["tools"])


class CapabilityError(MeshError):
    """The model cannot do what was asked (embeddings from a chat model, images from a text model...)."""


class ProviderError(MeshError):
    """The provider answered with an error, or could not be reached."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        provider: Optional[str] = None,
        provider_message: Optional[str] = None,
        retry_after: Optional[float] = None,
        retryable: Optional[bool] = None,
    ):
        # the one redaction point of provider texts: a URL credential or an echoed key never leaves
        super().__init__(redact(message))
        self.status = status
        self.provider = provider
        self.provider_message = redact(provider_message)
        self.retry_after = retry_after
        if retryable is not None:
            self.retryable = retryable


class BadRequestError(ProviderError):
    """400/422: the request was rejected as malformed; retrying the same request cannot help."""


class AuthenticationError(ProviderError):
    """401/403: the credential is missing, wrong or lacks permission."""


class NotFoundError(ProviderError):
    """404: the model, deployment or endpoint does not exist on the provider's side."""


class RateLimitError(ProviderError):
    """429: slow down; ``retry_after`` holds the provider's hint in seconds when it gave one."""

    retryable = True


class ServerError(ProviderError):
    """5xx: the provider failed; usually transient."""

    retryable = True


class ProviderTimeoutError(ProviderError):
    """The provider did not answer in time."""

    retryable = True


class ProviderConnectionError(ProviderError):
    """The provider could not be reached at all (DNS, refused connection, TLS)."""

    retryable = True


class RouteUnavailableError(ServerError):
    """A route could call none of its targets (every circuit breaker open): 503, retry after the cooldown."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None):
        super().__init__(message, status=503, provider="route", retry_after=retry_after)


class StreamInterruptedError(ProviderError):
    """A stream ended before its final event: the partial text is not a complete answer."""

    retryable = True

    def __init__(self, message: str, *, partial_text: str = "", **kw):  # type: ignore[no-untyped-def]
        super().__init__(message, **kw)
        self.partial_text = partial_text


class GuardrailError(MeshError):
    """A guardrail refused the call (``stage`` "input": before any provider call; "output": the answer).
    ``guardrail`` is the configured guardrail's name, ``detail`` what kind of thing fired (e.g.
    ``CREDIT_CARD``), never the text it matched. The gateway answers HTTP 400 in OpenAI's shape."""

    def __init__(self, message: str, *, guardrail: str, stage: str = "input", detail: Optional[str] = None):
        super().__init__(message)
        self.guardrail = guardrail
        self.stage = stage
        self.detail = detail


class RateLimitExceeded(RateLimitError):
    """The mesh's own rate limit (``limits:``) refused the call before it was sent. ``limit`` names
    which one (``key:alice requests``); ``headers`` are the ``x-ratelimit-*`` values OpenAI sends,
    which ``mesh serve`` puts on its 429. Not retried in place: the caller waits ``retry_after``."""

    retryable = False

    def __init__(self, message: str, *, limit: str = "", retry_after: Optional[float] = None,
                 headers: Sequence[tuple[str, str]] = ()):
        super().__init__(message, status=429, provider="mesh", retry_after=retry_after, retryable=False)
        self.limit = limit
        self.headers = list(headers)


class BudgetExceeded(MeshError):
    """A spend cap (``budgets:``) is used up for this period: refused before sending. ``budget`` names
    it (``team:search``); ``spent`` and ``cap`` in ``currency``; ``retry_after``: seconds to the next period."""

    def __init__(self, message: str, *, budget: str = "", spent: Optional[float] = None,
                 cap: Optional[float] = None, currency: str = "USD", retry_after: Optional[float] = None):
        super().__init__(message)
        self.budget, self.spent, self.cap, self.currency, self.retry_after = budget, spent, cap, currency, retry_after


class StateUnavailableError(MeshError):
    """The shared state store (``state.redis_url``) is unreachable and ``state.on_failure`` is
    ``closed``: calls that need limits or budgets are refused rather than let through unchecked."""


#: the errors a retry can help with: what ``MeshChatModel.with_retry()`` retries by default, and what
#: to give ``with_fallbacks(exceptions_to_handle=...)`` to fall back on a provider outage or rate limit
RETRYABLE_ERRORS: tuple[type[ProviderError], ...] = (
    RateLimitError, ServerError, ProviderTimeoutError, ProviderConnectionError, StreamInterruptedError)


def error_for_status(
    status: int,
    message: str,
    *,
    provider: Optional[str] = None,
    retry_after: Optional[float] = None,
) -> ProviderError:
    """Map an HTTP status to the mesh error class a caller can act on."""
    cls: type[ProviderError]
    if status in (400, 409, 413, 422):
        cls = BadRequestError
    elif status in (401, 403):
        cls = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 408:
        cls = ProviderTimeoutError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500:
        cls = ServerError
    else:
        cls = ProviderError
    where = f"{provider} " if provider else ""
    return cls(
        f"{where}answered HTTP {status}: {message}",
        status=status,
        provider=provider,
        provider_message=message,
        retry_after=retry_after,
    )


def answer_object(body: object, provider: Optional[str]) -> dict:  # type: ignore[type-arg]
    """``body`` (a provider's parsed answer) when it is a JSON object; otherwise the typed error a caller
    can act on, instead of the ``AttributeError`` reading it as one would raise (a 200 whose body is a
    JSON string or list)."""
    if not isinstance(body, dict):
        import json

        raise ProviderError(f"{provider or 'the provider'} answered with a JSON {type(body).__name__}, not an "
                            "object", provider=provider, provider_message=json.dumps(body, default=str)[:200])
    return body


def parse_retry_after(headers: object) -> Optional[float]:
    """Seconds to wait from a response's ``retry-after-ms`` / ``retry-after`` headers, if any.

    ``headers`` is any mapping with ``.get`` (httpx, requests and the SDKs' header types all are).
    ``Retry-After`` may be a number of seconds or an HTTP date (RFC 9110 §10.2.3).
    """
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils
    import time

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
