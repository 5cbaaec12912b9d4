"""Browsers kept out of a server that has no API keys (CSRF and DNS rebinding).

Without ``server.api_keys`` the server binds loopback only, but a web page open in a browser on the
same machine can still reach loopback: a cross-origin ``fetch`` with ``Content-Type: text/plain``
needs no CORS preflight, and a page whose domain re-resolves to 127.0.0.1 (DNS rebinding) is
"same-origin" for the browser. So, with no keys, every request except ``GET /health`` must:

* name this server in ``Host``: the bound address, ``localhost``, ``127.0.0.1``, ``[::1]`` or a name
  listed in ``server.allowed_hosts`` (a rebinding page sends its own domain): 403 ``host_not_allowed``;
* come from no browser origin, or from this server's own origin or one in ``server.allowed_origins``
  (``Origin`` and ``Sec-Fetch-Site: cross-site`` are what browsers send): 403 ``origin_not_allowed``;
* POST ``Content-Type: application/json`` (a type a page cannot send cross-origin without a preflight
  this server does not answer): 415 ``unsupported_media_type``. The multipart endpoints
  (``/v1/images/edits``, ``/v1/images/variations``) take ``multipart/form-data``, as OpenAI's API
  does; a page can send that type cross-origin, but a browser always sends ``Origin`` with such a
  POST, so the origin check above is what keeps pages out there.

None of these headers may be repeated (the app refuses that with a 400 before the guard: one copy
judged and another read is how a check is slipped). Programs (the openai SDK, curl with
``-H 'content-type: application/json'``) send none of the browser headers and are not affected.
Example config for a tool served from another local port::

    server:
      allowed_origins: ["http://localhost:3000"]
      allowed_hosts: ["mesh.internal"]
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

from .errors import APIError

__all__ = ["BrowserGuard"]

_LOCAL = frozenset({"localhost", "127.0.0.1", "::1"})
_UNSEEN = object()
_SEEN_MAX = 1024  # verdicts kept (a few per client program in practice)


def _host_of(value: str) -> tuple[str, Optional[int]]:
    """(host, port) of a ``Host`` header value (``[::1]:8000``, ``localhost``)."""
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


class BrowserGuard:
    """The checks above, built once from the server config."""

    def __init__(self, server_config: Any):
        self.hosts = _LOCAL | {h.lower() for h in server_config.allowed_hosts}
        self.origins = frozenset(o.rstrip("/").lower() for o in server_config.allowed_origins)
        self._seen: dict[tuple[Any, ...], Optional[tuple[int, str, str]]] = {}

    def check(self, headers: dict[bytes, bytes], server: Any, method: str, multipart: bool = False) -> None:
        """``headers``: the request's, by lower-case name (app._headers: none of these is repeated);
        ``server``: the ASGI scope's (the address the request came in on)."""
        post = method == "POST"
        # the verdict depends on these values only, and a client sends the same ones on every request:
        # judged once (host parsing and lower-casing cost a pass-through request ~5% of its CPU)
        key = (headers.get(b"host"), headers.get(b"origin"), headers.get(b"sec-fetch-site"),
               headers.get(b"content-type") if post else None, post, multipart,
               tuple(server) if server is not None else None)  # (ASGI allows a list: not hashable)
        verdict = self._seen.get(key, _UNSEEN)
        if verdict is _UNSEEN:
            verdict = self._judge(*key)
            if len(self._seen) >= _SEEN_MAX:  # a client varying its headers only costs the judging again
                self._seen.clear()
            self._seen[key] = verdict
        if verdict is not None:
            status, message, code = verdict
            raise APIError(status, message, code=code)

    def _judge(self, host_header: Optional[bytes], origin: Optional[bytes], fetch_site: Optional[bytes],
               content_type: Optional[bytes], post: bool, multipart: bool,
               bound: Any) -> Optional[tuple[int, str, str]]:
        """None when the request may pass, else the refusal's (status, message, code)."""
        bound = bound or ("", None)
        host, _ = _host_of((host_header or b"").decode("latin-1"))
        if host not in self.hosts and host != str(bound[0]).lower():
            return (403, f"Host {host or '(none)'!r} is not this server: without API keys the server only "
                         "answers to its own address (add the name to server.allowed_hosts, or configure "
                         "server.api_keys)", "host_not_allowed")
        if origin is not None and not self._origin_ok(origin.decode("latin-1"), bound):
            return (403, "cross-origin requests are refused when the server has no API keys "
                         "(list the origin in server.allowed_origins, or configure server.api_keys)",
                    "origin_not_allowed")
        if origin is None and fetch_site == b"cross-site":
            return 403, "cross-site requests are refused when the server has no API keys", "origin_not_allowed"
        if post:
            ctype = (content_type or b"").split(b";", 1)[0].strip().lower()
            if ctype != b"application/json" and not (multipart and ctype == b"multipart/form-data"):
                return 415, "the request body must be sent with Content-Type: application/json", "unsupported_media_type"
        return None

    def _origin_ok(self, origin: str, bound: Any) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        if origin == "null":
            return False
        parts = urlsplit(origin)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        return (host in self.hosts or host == str(bound[0]).lower()) and port == bound[1]
