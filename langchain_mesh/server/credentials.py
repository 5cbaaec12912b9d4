"""``/v1/credentials``: each gateway user stores, lists and deletes their OWN credentials.

The user is the caller's API key (``server.api_keys[].name``); nobody can read or touch another
user's entry, and no answer ever contains a value::

    PUT    /v1/credentials/<target>   {"api_key": "sk-..."}   -> 200 {"object": "credential", "target", "fields"}
    GET    /v1/credentials                                     -> 200 {"object": "list", "data": [...]}
    DELETE /v1/credentials/<target>                            -> 200 {"object": "credential.deleted", ...}

``<target>`` is a connection whose settings say ``{{user}}``, or a preset whose credential fields
each user fills (``GET /v1/credentials`` lists them with the fields they take, under ``targets``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import orjson

from ..errors import CredentialError
from .errors import APIError

__all__ = ["CredentialsAPI"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
_MAX = 64 * 1024
_JSON = (b"content-type", b"application/json")


class CredentialsAPI:
    def __init__(self, mesh: Any):
        self.mesh = mesh
        self.targets: dict[str, list[str]] = mesh.credential_targets()

    async def handle(self, method: str, path: str, principal: Any, receive: Receive, send: Send) -> None:
        target = path[len("/v1/credentials"):].strip("/")
        user = principal.name
        if not target:
            if method != "GET":
                raise APIError(405, f"Method {method} not allowed on {path}", code="method_not_allowed")
            entries = self._store().list(user)
            return await _send(send, 200, {"object": "list", "data": [
                {"object": "credential", "target": e.target, "fields": list(e.fields)} for e in entries],
                "targets": self.targets})
        if target not in self.targets:
            raise APIError(404, f"no connection or preset {target!r} takes per-user credentials; these do: "
                                f"{', '.join(sorted(self.targets)) or 'none'}", param="target",
                           code="unknown_credential_target")
        if method == "PUT":
            values = _values(await _body(receive), self.targets[target])
            await asyncio.to_thread(self._store().set, user, target, values)  # fsync: off the loop
            return await _send(send, 200, {"object": "credential", "target": target, "fields": sorted(values)})
        if method == "DELETE":
            if not await asyncio.to_thread(self._store().delete, user, target):
                raise APIError(404, f"you have no stored credential for {target!r}", code="credential_not_found")
            return await _send(send, 200, {"object": "credential.deleted", "target": target, "deleted": True})
        raise APIError(405, f"Method {method} not allowed on {path} (PUT or DELETE)", code="method_not_allowed")

    def _store(self) -> Any:
        try:
            return self.mesh.credential_store
        except CredentialError as e:  # the operator's setup (no key): say so without details
            raise APIError(503, "the gateway's credential store is not available (its key is not configured; "
                                "the operator sees why in the server log)", type="server_error",
                           code="credential_store_unavailable") from e


def _values(body: bytes, fields: list[str]) -> dict[str, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise APIError(400, "the body must be a JSON object of field -> value", code="invalid_json") from None
    if type(data) is not dict or not data:
        raise APIError(400, f"the body must be a JSON object with the fields {fields}", code="invalid_value")
    for k, v in data.items():
        if k not in fields:
            raise APIError(400, f"unknown credential field {k!r}; this target takes {fields}", param=k,
                           code="unknown_parameter")
        if type(v) is not str or not v:
            raise APIError(400, f"credential field {k!r} must be a non-empty string", param=k, code="invalid_value")
    return data


async def _body(receive: Receive) -> bytes:
    parts, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise APIError(400, "the client went away", code="client_gone")
        part = msg.get("body", b"")
        size += len(part)
        if size > _MAX:
            raise APIError(413, "credential body too large", code="body_too_large")
        parts.append(part)
        if not msg.get("more_body"):
            return b"".join(parts)


async def _send(send: Send, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
