"""Downloading an image URL that a provider answered with, without trusting the URL (no SSRF).

A provider (or anything pretending to be one at ``base_url``) chooses the URL, so a plain GET that
follows redirects lets it make the mesh read any service the mesh can reach: loopback admin ports,
cloud metadata (169.254.169.254), private hosts, and hand their answer back as "the image". Here:

* the scheme must be one of ``image_download.schemes`` (http, https);
* with ``image_download.hosts`` set, the host must be one of them (or a subdomain);
* every address the host resolves to must be public, unless ``image_download.allow_private`` is set,
  or the URL is on the connection's own ``base_url`` host and port (a local server serving its files);
* redirects are followed by hand, each hop checked the same way, at most ``max_redirects``;
* the body is read up to ``max_bytes`` (a ``Content-Length`` above it is refused before reading);
* nothing of the connection's (API key, headers) is sent.

Config (per connection)::

    connections:
      img:
        type: openai_compatible
        image_download: {hosts: [files.example.com], max_bytes: 10485760}

The address check resolves the name before the request, so a name that resolves differently a moment
later (DNS rebinding) is not covered; ``hosts`` closes that for deployments that need it.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Optional
from urllib.parse import urljoin, urlsplit

from ...config import ImageDownloadConfig
from ...errors import ProviderError
from ...redact import redact_url

__all__ = ["fetch_image", "check_image_url"]

_REDIRECTS = (301, 302, 303, 307, 308)


def _origin(url: Optional[str]) -> Optional[tuple[str, int]]:
    if not url:
        return None
    p = urlsplit(url)
    try:
        return (p.hostname or "").lower(), p.port or (443 if p.scheme == "https" else 80)
    except ValueError:
        return None


def _public(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return True  # unresolvable: the request itself fails with a connection error
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not addr.is_global or addr.is_multicast:
            return False
    return True


def check_image_url(url: str, policy: ImageDownloadConfig, base_url: Optional[str], provider: str) -> None:
    """Raise :class:`ProviderError` when ``url`` may not be downloaded under ``policy``."""
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in policy.schemes:
        raise ProviderError(f"{provider} answered an image URL with scheme {parts.scheme!r} ({shown}); allowed: "
                            f"{', '.join(policy.schemes)} (image_download.schemes)", provider=provider)
    origin = _origin(url)
    if origin is None or not origin[0]:
        raise ProviderError(f"{provider} answered an image URL without a host ({shown})", provider=provider)
    host, port = origin
    if policy.hosts is not None and not any(host == h.lower() or host.endswith("." + h.lower()) for h in policy.hosts):
        raise ProviderError(f"{provider} answered an image URL on host {host!r}, which image_download.hosts "
                            "does not list", provider=provider)
    if policy.allow_private or origin == _origin(base_url):
        return
    if not _public(host, port):
        raise ProviderError(f"{provider} answered an image URL on a loopback, private or reserved address "
                            f"({shown}); refused (set image_download.allow_private: true on the connection "
                            "to allow it)", provider=provider)


def fetch_image(http: Any, url: str, policy: ImageDownloadConfig, base_url: Optional[str], timeout: float,
                provider: str) -> bytes:
    """The bytes at ``url`` under ``policy``. ``http`` is httpx (or the SDK's httpx2)."""
    for _ in range(policy.max_redirects + 1):
        check_image_url(url, policy, base_url, provider)
        with http.stream("GET", url, timeout=timeout, follow_redirects=False) as r:
            if r.status_code in _REDIRECTS and r.headers.get("location"):
                url = urljoin(url, r.headers["location"])
                continue
            if r.status_code >= 400:
                r.read()
                # not the status's usual class: a missing file is no "model not found" nor a bad request
                raise ProviderError(f"downloading the generated image failed: HTTP {r.status_code} "
                                    f"{r.text[:200]}", provider=provider, status=r.status_code,
                                    retryable=r.status_code >= 500)
            return _read_bounded(r, policy.max_bytes, provider)
    raise ProviderError(f"downloading the generated image took more than {policy.max_redirects} redirects "
                        "(image_download.max_redirects)", provider=provider)


def _read_bounded(r: Any, limit: int, provider: str) -> bytes:
    too_big = ProviderError(f"the generated image is larger than {limit} bytes (image_download.max_bytes)",
                            provider=provider)
    try:
        declared = int(r.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    out = bytearray()
    for piece in r.iter_bytes():
        out += piece
        if len(out) > limit:
            raise too_big
    return bytes(out)
