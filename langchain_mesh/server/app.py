"""The ASGI application: routing, auth, body parsing and the answers, with no framework in between.

The request path does only what each request needs: look the route up in a dict, compare one key
digest, validate the body in one compiled pass (pydantic-core, from bytes), translate, call the mesh
(whose connections keep their clients and pools for the life of the process) and write orjson bytes.
Everything else (the LLM handles, the model list, the OpenAPI document, the key digests) is built
once in :class:`MeshApp`'s constructor.

Every POST that lasts longer than :data:`WATCH_AFTER` runs under a watch on the ASGI receive
channel: when the client disconnects, the task serving it is cancelled, which closes the upstream
request (an HTTP/1.1 answer released before its end closes its connection; a stream's generator is
closed). At startup, the SDK clients of the pass-through LLMs are built and what was built is frozen
out of the garbage collector's sight.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

import orjson
from pydantic import BaseModel, ValidationError

from .._loop import running_loop
from ..errors import MeshError, ProviderError
from ..schema import Purpose, StreamChunk, Usage
from . import sse
from ..credentials.identity import reset_user, set_user
from ..policies.scope import reset_scope, set_scope
from .auth import KeyRing, Principal
from .credentials import CredentialsAPI
from .errors import APIError, api_error, model_not_found
from .forward import ForwardChatRequest, ForwardEmbeddingsRequest, SSEPass, forward_plan, swap_model
from .guard import BrowserGuard
from .limits import ClientGone as _ClientGone
from .limits import read_body
from .models import ChatCompletionRequest, CompletionsRequest, EmbeddingsRequest, ImagesRequest
from .openapi import openapi_document
from .validated import KnownShapes
from .translate import (
    ChunkStream,
    check_request,
    completion_json,
    completion_request,
    embedding_request,
    token_arrays,
    embeddings_json,
    edit_request,
    image_request,
    images_json,
    variation_request,
)
from .multipart import parse_form

__all__ = ["MeshApp", "UsageRecord"]

log = logging.getLogger("langchain_mesh.server")
usage_log = logging.getLogger("langchain_mesh.server.usage")

_JSON = (b"content-type", b"application/json")
_CLIENT_GONE = 499  # the status usage records give a request whose client hung up (nginx's convention)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The collector's thresholds while serving (Python's are 700, 10, 10). A young collection starts when
# 700 more container objects were made than freed; 16 requests in flight hold that many (coroutines,
# frames, futures, dicts), so with a policy layer or two every few dozen requests one walked them all
# and promoted them, to die in an older generation: ~23k instructions a request with limits on
# (callgrind, bench/gateway_micro.py LIMITS=nolog), none of it finding garbage (the request path makes
# no cycles; DEBUG_SAVEALL collects nothing). 10,000 keeps the collector for real cycles.
GC_THRESHOLDS = (10_000, 10, 10)
_USAGE_PATHS = frozenset(("/usage", "/usage/api", "/usage/login", "/usage/chart.umd.min.js"))  # usage_page.PATHS


@dataclass(frozen=True)
class UsageRecord:
    """One served request, for the ``on_usage`` hook and the ``langchain_mesh.server.usage`` log."""

    key_name: str
    endpoint: str
    llm_id: Optional[str]
    status: int
    usage: Optional[Usage]
    seconds: float
    # True when ``usage`` is the gateway's estimate: a stream the client cut before the provider's usage
    # arrived (input ~ request bytes / 4, output ~ one token per streamed chunk)
    estimated: bool = False
    # a route's call: the target that answered and the attempts made (x-mesh-llm, x-mesh-attempts)
    target: Optional[str] = None
    attempts: Optional[int] = None


class _Served:
    """What a handler found out, kept even when it is cancelled: for the usage record."""

    __slots__ = ("llm_id", "usage", "raw_usage", "body_size", "chunks", "plan", "meta")

    def __init__(self) -> None:
        self.meta: Any = None  # a route's CallMeta (target, attempts)
        self.llm_id: Optional[str] = None
        self.usage: Optional[Usage] = None
        self.raw_usage: Optional[dict[str, Any]] = None  # the pass-through path's: read only when recorded
        self.body_size = 0     # a stream's request size and the chunks it sent: for a cut stream's estimate
        self.chunks: Any = None  # an int, or the pass-through's SSEPass (its ``chunks``)

    def estimate(self) -> Optional[Usage]:
        """The usage of a stream the client cut before its usage arrived, estimated (see UsageRecord)."""
        if self.chunks is None:
            return None
        chunks = self.chunks if type(self.chunks) is int else self.chunks.chunks
        return Usage(input_tokens=max(1, self.body_size // 4), output_tokens=chunks)
        self.plan: Any = None  # the pass-through plan that reads raw_usage


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class MeshApp:
    """``MeshApp(mesh)`` is an ASGI app serving the mesh's LLMs through the OpenAI HTTP API."""

    def __init__(self, mesh: Any, on_usage: Optional[Callable[[UsageRecord], None]] = None):
        self.mesh = mesh
        self.keys = KeyRing(mesh.config.server)
        self.limits = mesh.config.server.limits  # read by protocol.MeshHttpProtocol too
        # with no API keys, browsers on this machine are kept out (guard.py); programs are not affected
        self._guard = BrowserGuard(mesh.config.server) if self.keys.open else None
        self.on_usage = on_usage
        self._items = mesh.list_llms()
        self._llms = {i.id: mesh.get_llm(i.id) for i in self._items}
        # the pass-through plan of each LLM that needs no translation (decided once, here)
        # (not for LLMs on each caller's own credential: their connection is chosen per request)
        self._forward = {k: f for k, f in ((k, forward_plan(llm)) for k, llm in self._llms.items()
                                           if not mesh.uses_user_credentials(llm)) if f is not None}
        self._credentials = CredentialsAPI(mesh)
        # routes pick targets by the caller's sticky key (x-mesh-sticky-key, else the body's `user`)
        self._routes = bool(mesh.config.routes)
        self._openapi = orjson.dumps(openapi_document())
        self._posts: dict[str, Callable[..., Awaitable[None]]] = {
            "/v1/chat/completions": self._chat, "/v1/completions": self._text, "/v1/embeddings": self._embeddings,
            "/v1/images/generations": self._images}
        # multipart endpoints: their handlers also take the Content-Type (the form's boundary)
        self._forms: dict[str, Callable[..., Awaitable[None]]] = {
            "/v1/images/edits": self._image_edits, "/v1/images/variations": self._image_variations}
        self._watches: Optional[_Watches] = None  # the running loop's (see _until_disconnect)
        self._shapes = KnownShapes()  # the pass-through's chat requests validated so far (validated.py)

    # ---- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self._warm()
                # what was built at start (the mesh, its SDK clients, imported modules) lives as long as
                # the process: frozen, the collector's full runs under load no longer walk it
                gc.collect()
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                from ..policies.state import aflush

                await aflush(self.mesh)  # what the policies hold back for Redis (redis_pipe.SUM_GAP)
                self.mesh.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _warm(self) -> None:
        """Build what the first pass-through request of each LLM would (the SDK client, its URL and
        headers), so that no client's first request pays for importing the SDK; and the prices a
        ledger or budgets will ask for."""
        if self.mesh.config.usage is not None and self.mesh.config.usage.enabled:
            from ..usage.ledger import ledger_for

            # (the writer process prices the LLMs as it starts: a route's rows carry the target that answered)
            ledger_for(self.mesh).run_on(asyncio.get_running_loop(), warm=[i for i in self._llms if not i.startswith("route:")])
        if self.mesh.config.usage is not None or self.mesh.config.budgets is not None:
            from ..usage.prices import warm_prices

            try:
                warm_prices(self.mesh, self._llms.values())
            except Exception as e:  # noqa: BLE001 - the ledger prices (or says it cannot) when it writes
                log.warning("prices could not be looked up at start-up: %s", e)
        for llm_id, plan in self._forward.items():
            embeds = Purpose.TEXT_EMBEDDING_EXTRACTION in self._llms[llm_id].info.purposes
            try:
                await plan.prepare("/embeddings" if embeds else "/chat/completions")
            except Exception as e:  # noqa: BLE001 - its requests will say the same, as an OpenAI error
                log.warning("%s is not ready: %s", llm_id, e)

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        started = time.perf_counter()
        who, served, status = "-", _Served(), 200
        user_token = None
        try:
            if path == "/health":
                return await self._health(send)
            headers = _headers(scope)
            if path.startswith("/usage") and path in _USAGE_PATHS:
                return await self._usage_page().handle(method, path, scope, receive, send, headers,
                                                       lambda: read_body(receive, self.limits))
            if self._guard is not None:
                self._guard.check(headers, scope.get("server"), method, multipart=path in self._forms)
            if path == "/openapi.json":
                return await _json(send, 200, self._openapi)
            principal = self.keys.authenticate(headers.get(b"authorization"))
            who = principal.name
            call_scope = _cache_wish(principal.scope, headers.get(b"cache-control"))
            if self._routes:
                sticky = headers.get(b"x-mesh-sticky-key")
                if sticky:
                    call_scope = _with_sticky(call_scope, sticky.decode("latin-1"))
            user_token = set_user(principal.name)  # the caller's own credentials, for per-user connections
            scope_token = set_scope(call_scope)  # who the policies count it for
            handler = self._posts.get(path)
            form = self._forms.get(path)
            if path.startswith("/v1/credentials"):
                await self._credentials.handle(method, path, principal, receive, send)
            elif handler is not None and method == "POST":
                body = await read_body(receive, self.limits)
                await _until_disconnect(receive, handler(principal, body, send, served), self._watches_of())
            elif form is not None and method == "POST":
                body = await read_body(receive, self.limits)
                ctype = (headers.get(b"content-type") or b"").decode("latin-1")
                await _until_disconnect(receive, form(principal, body, ctype, send, served), self._watches_of())
            elif method == "GET" and path == "/v1/models":
                await _json(send, 200, orjson.dumps({"object": "list", "data": [
                    self._model_json(i) for i in self._items if principal.allows(i.id)]}))
            elif method == "GET" and path.startswith("/v1/models/"):
                item = next((i for i in self._items if i.id == path[11:] and principal.allows(i.id)), None)
                if item is None:
                    raise model_not_found(path[11:])
                await _json(send, 200, orjson.dumps(self._model_json(item)))
            elif handler is not None or form is not None or path == "/v1/models":
                raise APIError(405, f"Method {method} not allowed on {path}", code="method_not_allowed")
            else:
                raise APIError(404, f"Invalid URL ({method} {path})", code="unknown_url")
        except _ClientGone:
            status = _CLIENT_GONE
        except Exception as e:  # noqa: BLE001 - APIError, or a bug: an OpenAI error body either way
            err = api_error(e)
            status = err.status
            head = err.headers
            if self._routes and served.llm_id is not None and served.llm_id.startswith("route:"):
                served.meta = served.meta or _failed_route_meta()  # what the route tried before failing
                head = [*head, *_meta_headers(served.meta)]
            await _json(send, err.status, err.body(), head)
        finally:
            if user_token is not None:
                reset_user(user_token)
                reset_scope(scope_token)
        if self.on_usage is not None or usage_log.isEnabledFor(logging.INFO):
            usage = served.usage if served.raw_usage is None else served.plan.usage_of(served.raw_usage)
            estimated = usage is None and status == _CLIENT_GONE and served.chunks is not None
            if estimated:
                usage = served.estimate()
            meta = served.meta
            self._record(UsageRecord(who, path, served.llm_id, status, usage, time.perf_counter() - started,
                                     estimated, *((meta.llm_id, len(meta.attempts)) if meta is not None else ())))

    async def _health(self, send: Send) -> None:
        """``{"status": "ok"}``; with shared state (``state:``), the store's too: ``degraded`` (200) when
        Redis is down and calls pass unchecked (on_failure: open), 503 when they are refused (closed)."""
        if self.mesh.config.state is None:
            return await _json(send, 200, b'{"status":"ok"}')
        from ..policies.state import ahealth

        state = await ahealth(self.mesh)
        status = "ok" if state["ok"] else ("degraded" if state["on_failure"] == "open" else "unavailable")
        await _json(send, 503 if status == "unavailable" else 200, orjson.dumps({"status": status, "state": state}))

    def _watches_of(self) -> "_Watches":
        """The client watches of the running loop (a new one for a new loop: tests run several)."""
        loop = running_loop()
        watches = self._watches
        if watches is None or watches.loop is not loop:
            watches = self._watches = _Watches(loop)
        return watches

    def _usage_page(self) -> Any:
        page = self.__dict__.get("_usage")
        if page is None:
            from .usage_page import UsagePage

            page = self._usage = UsagePage(self.mesh, self.keys)
        return page

    def _record(self, rec: UsageRecord) -> None:
        if self.on_usage is not None:
            try:
                self.on_usage(rec)
            except Exception:  # noqa: BLE001 - a broken hook must not break serving
                log.exception("the on_usage hook failed")
        if usage_log.isEnabledFor(logging.INFO):
            u = rec.usage
            usage_log.info("%s", orjson.dumps({
                "key": rec.key_name, "endpoint": rec.endpoint, "llm": rec.llm_id, "status": rec.status,
                "input_tokens": u.input_tokens if u else None, "output_tokens": u.output_tokens if u else None,
                "ms": round(rec.seconds * 1000, 2), **({"estimated": True} if rec.estimated else {}),
                **({"target": rec.target, "attempts": rec.attempts} if rec.attempts is not None else {})}).decode())

    @staticmethod
    def _model_json(item: Any) -> dict[str, Any]:
        return {"id": item.id, "object": "model", "created": 0, "owned_by": item.connection,
                "purposes": item.purposes}

    def _llm(self, llm_id: str, principal: Principal, purpose: Purpose) -> Any:
        llm = self._llms.get(llm_id)
        if llm is None or not principal.allows(llm_id):
            raise model_not_found(llm_id)
        if purpose not in llm.info.purposes:
            raise APIError(400, f"{llm_id} is not a {purpose.value} model (its purposes: "
                                f"{', '.join(p.value for p in llm.info.purposes)})",
                           param="model", code="unsupported_model")
        return llm

    # ---- endpoints: each fills in ``served`` (LLM id, usage) for the usage record --------------------

    def _plan_of(self, body: bytes) -> tuple[Any, Any]:
        """The pass-through plan for the body's model and the body parsed, or (None, None)."""
        if not self._forward:
            return None, None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, None  # the translated path says precisely what is wrong
        if type(data) is not dict:
            return None, None
        model = data.get("model")
        plan = self._forward.get(model) if type(model) is str else None
        return plan, data

    async def _chat(self, principal: Principal, body: bytes, send: Send, served: _Served) -> None:
        plan, data = self._plan_of(body)
        if plan is not None and (plan.streams or not data.get("stream")):
            return await self._chat_forward(plan, data, principal, body, send, served)
        req = _parse(ChatCompletionRequest, body)
        llm = self._llm(req.model, principal, Purpose.GENERIC_COMPLETION)
        served.llm_id = llm.id
        if llm.route is not None and req.user:
            _sticky_from_user(req.user)
        request, param_of = completion_request(req)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            served.body_size = len(body)
            served.usage = await self._stream(llm, request, include_usage, param_of, send, served)
            return
        try:
            resp = await self.mesh.acomplete(llm, request)
        except MeshError as e:
            raise api_error(e, param_of) from None
        served.meta = _route_meta(llm, resp.meta)
        await _json(send, 200, orjson.dumps(completion_json(resp, llm.id)), _meta_headers(served.meta))
        served.usage = resp.usage

    async def _stream(self, llm: Any, request: Any, include_usage: bool, param_of: Any, send: Send,
                      served: _Served) -> Optional[Usage]:
        out = ChunkStream(llm.id, include_usage)
        events = self.mesh.astream(llm, request)
        started = False
        try:
            async for ev in events:
                if not started:  # the status waits for the first event: an early failure keeps its own
                    served.meta = _route_meta(llm, None)
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [*sse.HEADERS, *_meta_headers(served.meta)]})
                    await _chunk(send, sse.event(out.start()))
                    started = True
                if isinstance(ev, StreamChunk):
                    served.chunks = (served.chunks or 0) + 1
                    await _chunk(send, sse.event(out.chunk(ev)))
                else:
                    if ev.meta is not None and ev.meta.attempts:
                        served.meta = ev.meta
                    await _chunk(send, b"".join(sse.event(c) for c in out.end(ev)) + sse.DONE, more=False)
                    return ev.usage
        except Exception as e:  # noqa: BLE001 - a MeshError, or a bug (api_error logs those)
            err = api_error(e, param_of)
            if not started:
                raise err from None
            # after the 200: OpenAI's in-stream error event (the SDK raises it), then the end
            await _chunk(send, sse.event({"error": err.payload()}), more=False)
        finally:
            try:
                await events.aclose()  # on cancellation too: ends the upstream request
            except Exception:  # noqa: BLE001 - closing must not mask what ended the stream
                log.debug("closing the upstream stream failed", exc_info=True)
        return None

    async def _chat_forward(self, plan: Any, data: dict[str, Any], principal: Principal, body: bytes, send: Send,
                            served: _Served) -> None:
        """Chat on the pass-through path: validated as on the translated path, then forwarded."""
        # fields validated before: their settings pass again; with plain messages, the whole request
        param_of, shape, plain = self._shapes.check(data)
        if param_of is None or not plain:
            req = _parse(ForwardChatRequest, body)
            llm = self._llm(req.model, principal, Purpose.GENERIC_COMPLETION)
            param_of = check_request(req, param_of)  # every value check of the translated path
            if shape is not None:
                self._shapes.remember(shape, param_of)
        else:
            llm = self._llm(data["model"], principal, Purpose.GENERIC_COMPLETION)
        served.llm_id = llm.id
        stream = bool(data.get("stream"))
        user = data.get("user")
        if llm.route is not None and user:
            _sticky_from_user(user)
        try:
            # (find, not `in`: see forward.swap_model)
            out, strip_usage = plan.chat_body(data, param_of, stream, body.find(b'"annotations"') >= 0)
            content, first = await plan.send("/chat/completions", out, stream)
        except MeshError as e:
            raise api_error(e, param_of) from None
        served.meta = _route_meta(llm, None)
        head = _meta_headers(served.meta)
        if not stream:
            try:
                answer = orjson.loads(content)
            except orjson.JSONDecodeError:
                answer = None
            good = type(answer) is dict and bool(answer.get("choices"))
            end = getattr(first, "end", None)
            if end is not None:  # the policies (limits, budgets, ledger) wait for the answer's usage
                end(answer.get("usage") if good else None, good)
            if not good:
                raise api_error(ProviderError(f"{plan.provider} answered without any choice", provider=plan.provider))
            await _json(send, 200, swap_model(content, answer, llm.id), head)
            served.plan, served.raw_usage = plan, answer.get("usage") or None
            return
        events = SSEPass(llm.id, strip_usage)
        served.body_size, served.chunks = len(body), events
        outcome: Optional[bool] = None  # for the policies: True whole, False failed, None cut by the client
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [*sse.HEADERS, *head] if head else sse.HEADERS})
            piece = first
            while piece:
                data_out = events.feed(piece)
                if data_out:
                    await _chunk(send, data_out)
                piece = await content.read()
            await _chunk(send, events.flush(), more=False)
            outcome = events.usage is not None
        except Exception as e:  # noqa: BLE001 - the stream broke after the 200: OpenAI's in-stream error event
            outcome = False
            await _chunk(send, events.flush() + sse.event({"error": api_error(e, param_of).payload()}), more=False)
        finally:
            content.close()  # on cancellation too: ends the upstream request
            served.plan, served.raw_usage = plan, events.usage
            end = getattr(content, "end", None)
            if end is not None:  # the policies (limits, budgets, ledger) wait for the stream's usage
                end(events.usage, outcome)

    async def _text(self, principal: Principal, body: bytes, send: Send, served: _Served) -> None:
        """``/v1/completions``: each prompt a one-message chat request (see :mod:`.text_completion`)."""
        from .text_completion import TextChunkStream, text_completion_json, text_requests

        req = _parse(CompletionsRequest, body)
        llm = self._llm(req.model, principal, Purpose.GENERIC_COMPLETION)
        served.llm_id = llm.id
        requests, param_of = text_requests(req)
        if not req.stream:
            try:
                answers = [await self.mesh.acomplete(llm, r) for r in requests]
            except MeshError as e:
                raise api_error(e, param_of) from None
            out = text_completion_json(answers, llm.id)
            served.usage = Usage(input_tokens=out["usage"]["prompt_tokens"],
                                 output_tokens=out["usage"]["completion_tokens"],
                                 total_tokens=out["usage"]["total_tokens"])
            await _json(send, 200, orjson.dumps(out))
            return
        chunks = TextChunkStream(llm.id, bool(req.stream_options and req.stream_options.include_usage))
        started = False
        try:
            for index, request in enumerate(requests):
                events = self.mesh.astream(llm, request)
                try:
                    async for ev in events:
                        if not started:  # the status waits for the first event, as on the chat path
                            await send({"type": "http.response.start", "status": 200, "headers": sse.HEADERS})
                            started = True
                        if isinstance(ev, StreamChunk):
                            piece = chunks.chunk(index, ev)
                            if piece is not None:
                                await _chunk(send, sse.event(piece))
                        else:
                            await _chunk(send, sse.event(chunks.end(index, ev.finish_reason, ev.usage)))
                finally:
                    await events.aclose()
            await _chunk(send, b"".join(sse.event(c) for c in chunks.final()) + sse.DONE, more=False)
            served.usage = chunks.usage
        except Exception as e:  # noqa: BLE001 - a MeshError, or a bug (api_error logs those)
            err = api_error(e, param_of)
            if not started:
                raise err from None
            await _chunk(send, sse.event({"error": err.payload()}), more=False)

    async def _embeddings(self, principal: Principal, body: bytes, send: Send, served: _Served) -> None:
        plan, data = self._plan_of(body)
        if plan is not None:
            req = _parse(ForwardEmbeddingsRequest, body)
        else:
            req = _parse(EmbeddingsRequest, body)
        llm = self._llm(req.model, principal, Purpose.TEXT_EMBEDDING_EXTRACTION)
        served.llm_id = llm.id
        request = embedding_request(req)
        if len(request.texts) > self.limits.max_embedding_inputs:  # each input is work upstream and memory here
            raise APIError(400, f"input has {len(request.texts)} items; at most {self.limits.max_embedding_inputs} "
                                "per request (server.limits.max_embedding_inputs)", param="input",
                           code="too_many_inputs")
        if plan is not None and len(request.texts) <= plan.embedding_batch and (
                req.encoding_format != "base64" or plan.embedding_base64):
            data["model"] = plan.wire_model
            if plan.connection.dialect.provider not in ("openai", "azure_openai") and token_arrays(req) is not None:
                data["input"] = request.texts  # only OpenAI's own API reads tiktoken ids: send the text
            try:
                content, waiting = await plan.send("/embeddings", orjson.dumps(data), False)
            except MeshError as e:
                raise api_error(e, lambda names: "dimensions" if "dimensions" in names else None) from None
            try:
                answer = orjson.loads(content)
            except orjson.JSONDecodeError:
                answer = None
            good = type(answer) is dict and isinstance(answer.get("data"), list)
            end = getattr(waiting, "end", None)
            if end is not None:  # the policies wait for the answer's usage
                end(answer.get("usage") if good else None, good)
            if not good:
                raise api_error(ProviderError(f"{plan.provider} answered without embeddings",
                                              provider=plan.provider))
            if len(answer["data"]) != len(request.texts):  # a short answer would misalign every vector
                raise api_error(ProviderError(
                    f"{plan.provider} answered {len(answer['data'])} embeddings for "
                    f"{len(request.texts)} inputs", provider=plan.provider))
            served.meta = _route_meta(llm, None)
            await _json(send, 200, swap_model(content, answer, llm.id), _meta_headers(served.meta))
            served.plan, served.raw_usage = plan, answer.get("usage") or None
            return
        if plan is not None:
            for extra in req.model_extra or ():
                raise APIError(400, f"Unrecognized request argument supplied: {extra}", param=extra,
                               code="unknown_parameter")
        try:
            resp = await self.mesh.aembed(llm, request)
        except MeshError as e:
            raise api_error(e, lambda names: "dimensions" if "dimensions" in names else None) from None
        served.meta = _route_meta(llm, resp.meta)
        await _json(send, 200, orjson.dumps(embeddings_json(resp, llm.id, req.encoding_format)),
                    _meta_headers(served.meta))
        served.usage = resp.usage

    async def _images(self, principal: Principal, body: bytes, send: Send, served: _Served) -> None:
        req = _parse(ImagesRequest, body)
        llm = self._llm(req.model, principal, Purpose.IMAGE_GENERATION)
        served.llm_id = llm.id
        try:
            resp = await self.mesh.agenerate_images(llm, image_request(req))
        except MeshError as e:
            raise api_error(e, lambda names: next(iter(names), None)) from None
        await _json(send, 200, orjson.dumps(images_json(resp)))

    async def _image_edits(self, principal: Principal, body: bytes, ctype: str, send: Send, served: _Served) -> None:
        await self._image_form(principal, edit_request(*parse_form(body, ctype)), send, served)

    async def _image_variations(self, principal: Principal, body: bytes, ctype: str, send: Send,
                                served: _Served) -> None:
        await self._image_form(principal, variation_request(*parse_form(body, ctype)), send, served)

    async def _image_form(self, principal: Principal, parsed: tuple[str, Any], send: Send, served: _Served) -> None:
        llm_id, request = parsed
        llm = self._llm(llm_id, principal, Purpose.IMAGE_GENERATION)
        served.llm_id = llm.id
        try:
            resp = await self.mesh.agenerate_images(llm, request)
        except MeshError as e:
            raise api_error(e, lambda names: next(iter(names), None)) from None
        await _json(send, 200, orjson.dumps(images_json(resp)))


# --------------------------------------------------------------------------------------------------
# plumbing


def _route_meta(llm: Any, meta: Any) -> Any:
    """The meta of a route's call (target, attempts): the answer's, or (pass-through, stream start)
    the route's last one in this request's context; None for a plain LLM."""
    if meta is not None and meta.attempts:
        return meta
    return None if llm.route is None else llm.route.last_meta()


def _failed_route_meta() -> Any:
    from ..policies.routes import route_meta

    return route_meta()


def _meta_headers(meta: Any) -> list[tuple[bytes, bytes]]:
    if meta is None or not meta.attempts:
        return []
    attempts = (b"x-mesh-attempts", b"%d" % len(meta.attempts))
    return [(b"x-mesh-llm", meta.llm_id.encode()), attempts] if meta.llm_id else [attempts]


def _with_sticky(scope: Any, key: str) -> Any:
    from dataclasses import replace

    return replace(scope, sticky_key=key)


def _sticky_from_user(user: str) -> None:
    """The OpenAI ``user`` field keys a route's sticky assignment unless x-mesh-sticky-key did. Set for
    the rest of this request's task (the scope token of ``_http`` resets it with the request)."""
    from ..policies.scope import current_scope

    scope = current_scope()
    if scope.sticky_key is None:
        set_scope(_with_sticky(scope, user))


def _cache_wish(call_scope: Any, value: Optional[bytes]) -> Any:
    """The caller's scope, bypassing the response cache when the request says ``Cache-Control: no-cache``
    (or ``no-store``), as an HTTP cache would."""
    if value and (b"no-cache" in value.lower() or b"no-store" in value.lower()):
        from dataclasses import replace

        return replace(call_scope, cache=False)
    return call_scope


# headers whose value is one thing (a host, a credential, a media type, an origin...): a request that
# repeats one is ambiguous (which copy a proxy in front checked, which one a browser guard judged), so it
# is refused, as RFC 9112 (3.2) asks of a repeated Host
_SINGLE = (b"host", b"authorization", b"content-type", b"origin", b"sec-fetch-site", b"x-mesh-sticky-key")


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, read once for every check of the request: a repeated
    header's first value, except for the single-valued ones above, which may not be repeated (400)."""
    raw = scope["headers"]
    if type(raw) is not list:  # (ASGI allows any iterable)
        raw = list(raw)
    found = dict(reversed(raw))  # (reversed: the first value wins, as a scan would find it)
    if len(found) != len(raw):
        names = [k for k, _ in raw]
        for name in _SINGLE:
            if names.count(name) > 1:
                raise APIError(400, f"the request has more than one {name.decode()} header; send it once",
                               code="duplicate_header")
    return found


async def _json(send: Send, status: int, body: bytes, headers: Any = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _chunk(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


# How long a request runs before a watch on its client starts: an answer sooner than this goes out
# without one (a watcher task per request, and the garbage its cancellation leaves, cost a pass-through
# request ~10% of its CPU and caused 6 in 7 of the collector's runs); a client that hangs up on a slower
# one (every real model call) has it cancelled at most this long after the request came in.
WATCH_AFTER = 0.05


async def _until_disconnect(receive: Receive, work: Awaitable[Any], watches: "_Watches") -> Any:
    """``work``'s result, unless the client disconnects first: then ``work`` is cancelled.

    ``work`` runs in the current task. Within :data:`WATCH_AFTER` seconds (see :class:`_Watches`) a
    watcher task starts waiting on the receive channel, and cancels the current task when the client
    goes (a disconnect that came earlier is already queued there, so it is seen at once).
    """
    current = asyncio.current_task(watches.loop)  # (given the loop: no second lookup of it, a getpid() each)
    watch = _Watch(receive, current)
    watches.add(watch)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.gone:  # our own cancellation, not the server's shutdown
            current.uncancel()  # type: ignore[union-attr]
            raise _ClientGone from None
        raise
    finally:
        watches.pending.pop(watch, None)
        if watch.task is not None:
            watch.task.cancel()


class _Watches:
    """The requests of one event loop whose watch has not started, and one timer for all of them.

    A timer per request (armed, then cancelled when the answer goes out) cost a pass-through request
    ~2.5 µs on uvloop. Here a sweep every ``WATCH_AFTER / 2`` seconds, while any request waits, starts the
    watch of each request that has run at least that long: so between ``WATCH_AFTER / 2`` and
    ``WATCH_AFTER`` after it came in, as the bound above says.
    """

    __slots__ = ("loop", "pending", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: dict[_Watch, float] = {}  # (insertion order: oldest first)
        self.timer: Optional[asyncio.TimerHandle] = None

    def add(self, watch: "_Watch") -> None:
        self.pending[watch] = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(WATCH_AFTER / 2, self._sweep)

    def _sweep(self) -> None:
        self.timer = None
        due = self.loop.time() - WATCH_AFTER / 2
        pending = self.pending
        started = []
        for watch, since in pending.items():
            if since > due:
                break  # the rest came in later still
            started.append(watch)
        for watch in started:
            del pending[watch]
            watch.start()
        if pending:
            self.timer = self.loop.call_later(WATCH_AFTER / 2, self._sweep)


class _Watch:
    __slots__ = ("receive", "current", "task", "gone")

    def __init__(self, receive: Receive, current: Any):
        self.receive = receive
        self.current = current
        self.task: Optional[asyncio.Task[None]] = None
        self.gone = False

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.current.cancel()


_BAD_JSON = ("We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, "
             "but what was sent was not valid JSON.")


def _parse(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise _invalid(e, body) from None


def _invalid(e: ValidationError, body: bytes) -> APIError:
    err = e.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return APIError(400, _BAD_JSON, code="invalid_json")
    if not err["loc"]:
        return APIError(400, f"the request body must be a JSON object ({err['msg']})", code="invalid_json")
    param = _param(err["loc"], json.loads(body))  # stdlib: it reads what pydantic does (NaN, Infinity)
    if err["type"] == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    if err["type"] == "missing":
        return APIError(400, f"Missing required parameter: {param!r}.", param=param, code="missing_required_parameter")
    return APIError(400, f"Invalid value for {param!r}: {err['msg']}.", param=param, code="invalid_value")


def _param(loc: tuple[Any, ...], data: Any) -> str:
    """The request field of an error location, as OpenAI writes it (``messages[0].content``).

    Pydantic's locations also name the union member that was tried (``'user'``, ``'str'``...); only
    steps that exist in the request body (or name the missing or unknown field last) are kept.
    """
    out = ""
    for n, step in enumerate(loc):
        last = n == len(loc) - 1
        if isinstance(step, int) and isinstance(data, list) and step < len(data):
            out += f"[{step}]"
            data = data[step]
        elif isinstance(step, str) and isinstance(data, dict) and (step in data or (last and _IDENT.match(step))):
            out += f".{step}" if out else step
            data = data.get(step)
    return out or str(loc[0])
