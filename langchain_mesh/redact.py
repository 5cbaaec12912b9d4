"""The one place that keeps secrets out of text the mesh shows: URLs and provider messages.

Every :class:`~langchain_mesh.errors.ProviderError` passes its message and the provider's message
through :func:`redact` when it is built, so what reaches a caller (the library's exceptions, the
gateway's error bodies, ``mesh chat``, log lines that format an error) never carries:

* the user part of a URL (``https://user:secret@host/v1`` -> ``https://***@host/v1``);
* the value of a credential-looking query parameter (``?api-key=...``, ``&sig=...``, ``token``...);
* a value the mesh resolved from a secret reference or a literal secret in the config (the
  connection's own API key, which providers echo: "Incorrect API key provided: sk-..."), which
  :class:`~langchain_mesh.config.Secret` registers here when it is resolved;
* a string shaped like a well-known key (``sk-...``, ``Bearer ...``, AWS access key ids, Google keys).

Example (what the gateway's 502 body holds for ``base_url: http://bob:pw@10.0.0.5:9/v1`` when it is
down)::

    cannot reach openai at http://***@10.0.0.5:9/v1/chat/completions: could not connect ...

Only ``re`` is imported: this sits on the error path of every call.
"""

from __future__ import annotations

import re
import threading
from typing import Optional

__all__ = ["redact", "redact_url", "remember_secret", "MASK"]

MASK = "***"
_MIN_SECRET = 8  # shorter values ("EMPTY", "ollama") would mask ordinary words of every message

# user:password@ (or a lone token@) after a scheme
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s?#]+@")
# a query or fragment parameter whose name says it is a credential
_QUERY = re.compile(
    r"(?i)([?&#;](?:[a-z0-9_-]*(?:key|token|secret|signature|password|passwd|pwd|auth|credential|sig|code))"
    r"=)([^&#\s\"'<>]+)")
# keys with a recognisable shape (OpenAI/Anthropic sk-..., bearer tokens, AWS ids, Google API keys)
_SHAPED = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{8,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,})"
    r"|(?i:(?<=bearer )[A-Za-z0-9._~+/=-]{8,})")

_known: set[str] = set()
_known_pattern: Optional[re.Pattern[str]] = None
_lock = threading.Lock()


def remember_secret(value: Optional[str]) -> None:
    """Mask ``value`` (a resolved secret) wherever it appears in text passed to :func:`redact`."""
    global _known_pattern
    if not value or len(value) < _MIN_SECRET or value in _known:
        return
    if "://" in value:  # an endpoint given where a Secret is accepted (Databricks host, Azure endpoint)
        return
    with _lock:
        _known.add(value)
        # longest first, so that a secret containing another is masked whole
        _known_pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def _mask_value(m: "re.Match[str]") -> str:
    # punctuation that ends a sentence around the URL ("...&sig=abc: refused") is not part of the value
    value = m.group(2)
    kept = value.rstrip(":.,;)")
    return m.group(1) + MASK + value[len(kept):]


def redact_url(url: str) -> str:
    """``url`` without the user part and without credential-looking query values."""
    return _QUERY.sub(_mask_value, _USERINFO.sub(r"\1" + MASK + "@", url))


def redact(text: Optional[str]) -> Optional[str]:
    """``text`` with every URL credential, known secret and key-shaped string replaced by ``***``."""
    if not text:
        return text
    if _known_pattern is not None:
        text = _known_pattern.sub(MASK, text)
    if "://" in text:
        text = _USERINFO.sub(r"\1" + MASK + "@", text)
    if "=" in text:
        text = _QUERY.sub(_mask_value, text)
    return _SHAPED.sub(MASK, text)
