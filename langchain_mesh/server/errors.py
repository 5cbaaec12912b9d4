"""Errors as OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``, with the
status an OpenAI client acts on. The mesh's typed errors decide the status; nothing a client sends
can produce a bare 500."""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import orjson

from ..errors import (
    AuthenticationError,
    BudgetExceeded,
    RateLimitExceeded,
    StateUnavailableError,
    BadRequestError,
    CapabilityError,
    ConfigError,
    CredentialError,
    GuardrailError,
    InvalidLLMIdError,
    MissingUserCredentialError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    SettingsError,
    UnknownLLMError,
)

__all__ = ["APIError", "api_error"]

log = logging.getLogger("langchain_mesh.server")


class APIError(Exception):
    """An answer other than success: status, OpenAI error fields and extra headers."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = list(headers)

    def body(self) -> bytes:
        return orjson.dumps({"error": self.payload()})

    def payload(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


def model_not_found(llm_id: str) -> APIError:
    # also the answer for an id the caller's key may not use: it does not learn that the id exists
    return APIError(404, f"The model {llm_id!r} does not exist or you do not have access to it "
                         "(GET /v1/models lists the mesh LLM ids you can use).",
                    param="model", code="model_not_found")


def api_error(e: BaseException, param_of: Any = None) -> APIError:
    """The API error for an exception raised while serving. ``param_of(setting names)`` names the
    request field behind a :class:`SettingsError`."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, (UnknownLLMError, InvalidLLMIdError)):
        return model_not_found(getattr(e, "llm_id", "") or "")
    if isinstance(e, SettingsError):  # ToolSchemaError included: its settings are ["tools"]
        param = param_of(e.settings) if param_of is not None else None
        return APIError(400, str(e), param=param, code="invalid_value")
    if isinstance(e, GuardrailError):  # OpenAI's answer to a prompt its content policy refuses
        return APIError(400, str(e), code="content_policy_violation",
                        headers=[(b"x-mesh-guardrail", e.guardrail.encode("ascii", "replace"))])
    if isinstance(e, CapabilityError):
        return APIError(400, str(e), param="model", code="unsupported_model")
    if isinstance(e, RateLimitExceeded):  # the gateway's own limit: OpenAI's 429 and x-ratelimit-* headers
        return APIError(429, str(e), type="tokens" if e.limit.endswith("tokens") else "requests",
                        code="rate_limit_exceeded",
                        headers=_retry_after(e) + [(k.encode(), v.encode()) for k, v in e.headers])
    if isinstance(e, BudgetExceeded):  # OpenAI's answer to a spent quota
        after = [] if e.retry_after is None else [(b"retry-after", str(max(0, math.ceil(e.retry_after))).encode())]
        return APIError(429, str(e), type="insufficient_quota", code="insufficient_quota", headers=after)
    if isinstance(e, StateUnavailableError):
        log.error("%s", e)
        return APIError(503, str(e), type="server_error", code="state_store_unavailable")
    if isinstance(e, ProviderError):
        return _upstream(e)
    if isinstance(e, MissingUserCredentialError):  # the caller's own credential: theirs to set
        return APIError(401, str(e), type="invalid_request_error", code="missing_credential")
    if isinstance(e, (CredentialError, ConfigError)):  # the gateway's own setup: the operator's to fix
        log.error("a request could not be served: %s", e)
        return APIError(503, "This model is not available: the gateway's configuration for it is incomplete "
                             "(a credential is missing or unreadable; the server log says which).",
                        type="server_error", code="model_unavailable")
    log.exception("unexpected error while serving a request")
    return APIError(500, f"internal error ({type(e).__name__}); see the server log", type="server_error")


def _retry_after(e: ProviderError) -> list[tuple[bytes, bytes]]:
    """The upstream's ``Retry-After``, passed on (whole seconds, rounded up), when it gave one."""
    if e.retry_after is None:
        return []
    return [(b"retry-after", str(max(0, math.ceil(e.retry_after))).encode())]


def _upstream(e: ProviderError) -> APIError:
    msg = str(e)
    if isinstance(e, RateLimitError):
        return APIError(429, msg, type="rate_limit_exceeded", code="rate_limit_exceeded", headers=_retry_after(e))
    if isinstance(e, BadRequestError):  # the request the client sent was what the provider refused
        return APIError(400, msg, code="upstream_bad_request")
    if isinstance(e, NotFoundError):
        return APIError(404, msg, param="model", code="model_not_found")
    if isinstance(e, ProviderTimeoutError):
        return APIError(504, msg, type="server_error", code="upstream_timeout")
    if isinstance(e, AuthenticationError):
        # the mesh's credential, not the caller's: a gateway fault, and the provider's text is about that
        # credential (some quote part of it), so it goes to the operator's log only
        log.error("the provider refused the gateway's credential: %s", msg)
        return APIError(502, f"{e.provider or 'the provider'} refused the gateway's credential for this model "
                             "(the server log has the provider's answer)",
                        type="server_error", code="upstream_authentication_failed")
    if e.status == 503 and e.retry_after is not None:
        # the upstream said when to come back (and the mesh did not wait that long, to stay within the
        # call's timeout): so does the gateway, for clients that honour Retry-After (the OpenAI SDKs do)
        return APIError(503, msg, type="server_error", code="upstream_unavailable", headers=_retry_after(e))
    return APIError(502, msg, type="server_error", code="upstream_error", headers=_retry_after(e))
