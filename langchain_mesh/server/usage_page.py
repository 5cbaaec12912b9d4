"""``/usage``: the ledger's totals and charts for admins, and ``/usage/api``, the same as JSON.

Only keys marked ``admin: true`` under ``server.api_keys`` may read them::

    server:
      api_keys:
        - {name: ops, key: "{{env:MESH_ADMIN_KEY}}", admin: true}
    usage: {path: ./mesh-usage.db}

A program sends its key as ``Authorization: Bearer <key>``. A browser signs in once with a form
(``POST /usage/login``; the key never goes into a URL, where access logs would keep it) and gets a
session cookie: an expiry signed with HMAC-SHA256 under the admin key's digest, so every worker of
the server accepts it with no shared session store, and it dies with the key. The page is static
HTML with Chart.js (vendored, MIT; no CDN, no build step), served from the package.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from html import escape
from importlib import resources
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import parse_qs

import orjson

from .errors import APIError

__all__ = ["UsagePage", "PATHS"]

PATHS = ("/usage", "/usage/api", "/usage/login", "/usage/chart.umd.min.js")
COOKIE = "mesh_usage"
SESSION_SECONDS = 12 * 3600

_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>mesh usage: sign in</title></head>
<body style="font: 14px system-ui, sans-serif; margin: 2rem"><h1 style="font-size:1.3rem">mesh usage</h1>
<p>{message}</p><form method="post" action="/usage/login">
<label>Admin API key <input type="password" name="key" id="key" autocomplete="off" autofocus></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>"""


def _static(name: str) -> bytes:
    return resources.files("langchain_mesh.usage").joinpath("static", name).read_bytes()


class UsagePage:
    def __init__(self, mesh: Any, keys: Any):
        self.mesh = mesh
        self.keys = keys
        self._files: dict[str, bytes] = {}

    def _file(self, name: str) -> bytes:
        got = self._files.get(name)
        if got is None:
            got = self._files[name] = _static(name)
        return got

    # ---- who may read -------------------------------------------------------------------------------

    def _sign(self, digest: bytes, expiry: int) -> str:
        return hmac.new(digest, b"mesh-usage-session:%d" % expiry, hashlib.sha256).hexdigest()

    def _admin(self, authorization: Optional[bytes], cookie: Optional[bytes]) -> bool:
        if authorization and authorization[:7].lower() == b"bearer ":
            return self.keys.admin_digest(authorization[7:]) is not None
        token = _cookie(cookie, COOKIE)
        if not token or "." not in token:
            return False
        exp, _, sig = token.partition(".")
        if not exp.isdigit() or int(exp) < time.time():
            return False
        ok = False
        for digest in self.keys.admins:  # every admin key is tried: constant time in which one signed it
            ok |= hmac.compare_digest(self._sign(digest, int(exp)), sig)
        return ok

    # ---- the endpoints --------------------------------------------------------------------------------

    async def handle(self, method: str, path: str, scope: dict[str, Any], receive: Any, send: Any,
                     headers: dict[bytes, bytes], read_body: Callable[[], Awaitable[bytes]]) -> None:
        if self.mesh.config.usage is None:
            raise APIError(404, "the usage ledger is off: add a usage: section to the mesh config", code="unknown_url")
        if path == "/usage/login":
            if method != "POST":
                raise APIError(405, f"Method {method} not allowed on {path}", code="method_not_allowed")
            return await self._login(await read_body(), send)
        if method != "GET":
            raise APIError(405, f"Method {method} not allowed on {path}", code="method_not_allowed")
        admin = self._admin(headers.get(b"authorization"), headers.get(b"cookie"))
        if path == "/usage/api":
            if not admin:
                raise APIError(401, "The usage API needs an admin key (server.api_keys[] with admin: true), sent as "
                                    "'Authorization: Bearer <key>'.", code="invalid_api_key")
            query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
            return await _send(send, 200, orjson.dumps(await self._report(query)), b"application/json")
        if not admin:
            return await self._login_page(send, 401, "Sign in with an admin API key to read the usage ledger.")
        if path == "/usage":
            return await _send(send, 200, self._file("usage.html"), b"text/html; charset=utf-8")
        return await _send(send, 200, self._file("chart.umd.min.js"), b"text/javascript; charset=utf-8")

    async def _login(self, body: bytes, send: Any) -> None:
        form = parse_qs(body.decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].encode()
        digest = self.keys.admin_digest(key) if key else None
        if digest is None:
            return await self._login_page(send, 401, "That is not an admin key.")
        expiry = int(time.time()) + SESSION_SECONDS
        cookie = (f"{COOKIE}={expiry}.{self._sign(digest, expiry)}; Path=/usage; HttpOnly; SameSite=Strict; "
                  f"Max-Age={SESSION_SECONDS}").encode()
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/usage"), (b"set-cookie", cookie), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def _login_page(self, send: Any, status: int, message: str) -> None:
        await _send(send, status, _LOGIN.format(message=escape(message)).encode(), b"text/html; charset=utf-8")

    async def _report(self, query: dict[str, list[str]]) -> dict[str, Any]:
        from ..usage.report import totals

        cfg = self.mesh.config.usage
        since = (query.get("since") or [None])[0]
        until = (query.get("until") or [None])[0]

        def run() -> dict[str, Any]:
            ledger = getattr(self.mesh, "_ledger", None)
            if ledger is not None:
                ledger.flush()  # this worker's queued rows first (others write theirs every flush_interval)
            return {"currency": cfg.currency, "since": since, "until": until,
                    "totals": totals(cfg, by=(), since=since, until=until),
                    "by_key": totals(cfg, by=("key",), since=since, until=until),
                    "by_llm": totals(cfg, by=("llm",), since=since, until=until),
                    "by_day": totals(cfg, by=("day",), since=since, until=until)}
        return await asyncio.to_thread(run)


def _cookie(raw: Optional[bytes], name: str) -> Optional[str]:
    if not raw:
        return None
    for part in raw.decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


async def _send(send: Any, status: int, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body)),
                            (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})
