"""The response cache (layer order 40): the same request to the same LLM answered once, then from the
cache until its TTL ends. Config::

    cache:
      ttl: 600                  # seconds
      max_entries: 1000         # the in-process LRU (the default store)
      llms: ["openai:*"]        # glob patterns on LLM ids; default every LLM
      nondeterministic: false   # true: also cache calls with temperature unset or > 0
      redis_url: "{{env:REDIS_URL}}"   # shared by every worker and process (default: state.redis_url)

The key is a SHA-256 of the normalised request: the LLM id, the messages, the settings (tools
included) as validated, and whether it was streamed. Completions are cached only when deterministic
(``temperature: 0``) unless ``nondeterministic`` or the call's ``settings["cache"] = True`` asks for
it; embeddings always. Bypass per call with ``settings["cache"] = False``, ``call_scope(cache=False)``
or, on ``mesh serve``, a ``Cache-Control: no-cache`` request header. Errors, failed items, streams
that did not finish and answers cut by a content filter are never stored. A streamed answer is
stored event by event and replayed as the same events, chunk boundaries included.
``meta.cache`` says ``hit``, ``miss`` or ``bypass``. ``semantic: {knowledge_bank, threshold}`` adds
answers for requests close in meaning (:mod:`langchain_mesh.policies.semantic_cache`; off by default).

The cache sits inside the guardrails (order 30): keys are computed on the redacted request, and
output guardrails run on cached answers as on fresh ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional

from ..schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamChunk,
    StreamEvent,
    StreamFooter,
)
from .chain import Call, Layer
from .tracing import span

__all__ = ["cache_layer", "CacheLayer", "MemoryCache", "RedisCache"]

log = logging.getLogger("langchain_mesh.cache")

_COMPLETE = frozenset({"complete", "acomplete"})
_STREAM = frozenset({"stream", "astream"})
_EMBED = frozenset({"embed", "aembed"})


class MemoryCache:
    """An in-process LRU of strings with a TTL per entry. Written here (an OrderedDict and a lock)
    rather than taken from cachetools: the default store should need no extra package, and the
    clock is injectable for tests."""

    def __init__(self, max_entries: int = 1000, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[str]:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[1] <= self.clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[0]

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._data[key] = (value, self.clock() + ttl)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    async def aget(self, key: str) -> Optional[str]:
        return self.get(key)

    async def aset(self, key: str, value: str, ttl: float) -> None:
        self.set(key, value, ttl)

    def close(self) -> None:
        self._data.clear()


class RedisCache:
    """The cache in Redis (``redis`` client package): shared by every gateway worker and process.
    The same get/set shape as the policies' state store, so the store of ``state: {redis_url}`` can
    stand in for it."""

    def __init__(self, url: str, namespace: str = "mesh:cache:"):
        import redis

        self.url = url
        self.namespace = namespace
        self._sync = redis.Redis.from_url(url)
        self._async: Optional[tuple[Any, Any]] = None  # (event loop, client): an asyncio client serves one loop

    def get(self, key: str) -> Optional[str]:
        value = self._sync.get(self.namespace + key)
        return None if value is None else value.decode()

    def set(self, key: str, value: str, ttl: float) -> None:
        self._sync.set(self.namespace + key, value, px=max(1, int(ttl * 1000)))

    def _aclient(self) -> Any:
        import asyncio

        import redis.asyncio

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, redis.asyncio.Redis.from_url(self.url))
        return self._async[1]

    async def aget(self, key: str) -> Optional[str]:
        value = await self._aclient().get(self.namespace + key)
        return None if value is None else value.decode()

    async def aset(self, key: str, value: str, ttl: float) -> None:
        await self._aclient().set(self.namespace + key, value, px=max(1, int(ttl * 1000)))

    def close(self) -> None:
        self._sync.close()


_stores_lock = threading.Lock()


def store_of(mesh: Any) -> Any:
    """The mesh's cache store, built once: Redis when a URL is configured, else the in-process LRU."""
    store = getattr(mesh, "_response_cache", None)
    if store is not None:
        return store
    with _stores_lock:
        store = getattr(mesh, "_response_cache", None)
        if store is None:
            cfg = mesh.config.cache
            url = cfg.redis_url or getattr(getattr(mesh.config, "state", None), "redis_url", None)
            if url is not None and hasattr(url, "get"):
                url = url.get("cache.redis_url")  # a secret reference, resolved on first use
            store = RedisCache(url, cfg.namespace) if url else MemoryCache(cfg.max_entries)
            mesh._response_cache = store
    return store


def semantic_index_of(mesh: Any) -> Any:
    """The mesh's semantic index (``cache.semantic``), built once, or None."""
    cfg = mesh.config.cache.semantic
    if cfg is None:
        return None
    index = getattr(mesh, "_semantic_cache", None)
    if index is None:
        with _stores_lock:
            index = getattr(mesh, "_semantic_cache", None)
            if index is None:
                from .semantic_cache import SemanticIndex

                index = mesh._semantic_cache = SemanticIndex(mesh, cfg.knowledge_bank, cfg.threshold)
    return index


def cache_layer(mesh: Any, llm: Any) -> Optional[Layer]:
    import fnmatch

    cfg = mesh.config.cache
    if cfg is None or not cfg.enabled or (cfg.llms and not any(fnmatch.fnmatchcase(llm.id, p) for p in cfg.llms)):
        return None
    return CacheLayer(mesh, llm, cfg, semantic_index_of(mesh))


class CacheLayer(Layer):
    name = "cache"
    needs_content = True

    def __init__(self, mesh: Any, llm: Any, cfg: Any, semantic: Any = None):
        self.mesh = mesh
        self.llm = llm
        self.cfg = cfg
        self.semantic = semantic  # a SemanticIndex (cache.semantic), or None

    @property
    def store(self) -> Any:
        return store_of(self.mesh)

    def _key(self, call: Call) -> Optional[str]:
        """The call's cache key, or None when it must not be cached (``meta.cache`` then says bypass).
        Takes the caller's ``settings.cache`` off the request: no connection sees it."""
        request, op = call.request, call.op
        wish = None
        if isinstance(request, CompletionRequest) and (op in _COMPLETE or op in _STREAM):
            wish = request.settings.cache
            if wish is not None:
                call.request = request = request.model_copy(
                    update={"settings": request.settings.model_copy(update={"cache": None})})
            deterministic = request.settings.temperature == 0 or self.cfg.nondeterministic
            if wish is False or call.scope.cache is False or not (deterministic or wish):
                call.meta.cache = "bypass"
                return None
            kind = "stream" if op in _STREAM else "complete"
        elif isinstance(request, EmbeddingRequest) and op in _EMBED:
            if call.scope.cache is False:
                call.meta.cache = "bypass"
                return None
            kind = "embed"
        else:
            return None
        body = json.dumps({"llm": self.llm.id, "kind": kind, "request": request.model_dump(mode="json", exclude_none=True)},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return kind + ":" + hashlib.sha256(body.encode()).hexdigest()

    def _lookup(self, call: Call, key: str) -> Optional[str]:
        with span(call, "cache lookup") as sp:
            try:
                value = self.store.get(key)
            except Exception as e:  # noqa: BLE001 - a cache outage costs speed, not answers
                log.warning("response cache unavailable (%s): the call goes to the provider", type(e).__name__)
                value = None
            call.meta.cache = "miss" if value is None else "hit"
            if sp is not None:
                sp.set_attribute("mesh.cache", call.meta.cache)
        return value

    async def _alookup(self, call: Call, key: str) -> Optional[str]:
        with span(call, "cache lookup") as sp:
            try:
                value = await self.store.aget(key)
            except Exception as e:  # noqa: BLE001
                log.warning("response cache unavailable (%s): the call goes to the provider", type(e).__name__)
                value = None
            call.meta.cache = "miss" if value is None else "hit"
            if sp is not None:
                sp.set_attribute("mesh.cache", call.meta.cache)
        return value

    def _near(self, call: Call, key: str) -> Optional[tuple[str, str]]:
        """(conversation text, fingerprint) for the semantic index, when it applies to this call."""
        if self.semantic is None or key.startswith("embed:"):
            return None
        from .semantic_cache import fingerprint, semantic_text

        text = semantic_text(call.request)
        return None if text is None else (text, fingerprint(self.llm.id, key.split(":", 1)[0], call.request))

    def _semantic_lookup(self, call: Call, near: Optional[tuple[str, str]]) -> Optional[str]:
        if near is None:
            return None
        with span(call, "cache semantic lookup") as sp:
            found = self.semantic.find(*near)
            value = None
            if found is not None:
                try:
                    value = self.store.get(found)
                except Exception as e:  # noqa: BLE001
                    log.warning("response cache unavailable (%s): the call goes to the provider", type(e).__name__)
            if value is not None:
                call.meta.cache = "hit"
                call.notes["cache_semantic"] = True
            if sp is not None:
                sp.set_attribute("mesh.cache", "hit" if value is not None else "miss")
        return value

    def _semantic_add(self, near: Optional[tuple[str, str]], key: str) -> None:
        if near is not None:
            try:
                self.semantic.add(near[0], near[1], key)
            except Exception as e:  # noqa: BLE001 - the answer is cached by its exact key all the same
                log.warning("semantic cache: the conversation was not indexed (%s: %s)", type(e).__name__, e)

    def _save(self, key: str, value: str) -> None:
        try:
            self.store.set(key, value, self.cfg.ttl)
        except Exception as e:  # noqa: BLE001
            log.warning("response cache unavailable (%s): the answer was not stored", type(e).__name__)

    async def _asave(self, key: str, value: str) -> None:
        try:
            await self.store.aset(key, value, self.cfg.ttl)
        except Exception as e:  # noqa: BLE001
            log.warning("response cache unavailable (%s): the answer was not stored", type(e).__name__)

    def call(self, call: Call, nxt: Callable[[], Any]) -> Any:
        key = self._key(call)
        if key is None:
            return nxt()
        value = self._lookup(call, key)
        near = self._near(call, key) if value is None else None
        if value is None:
            value = self._semantic_lookup(call, near)
        if value is not None:
            return _load(key, value)
        result = nxt()
        if _storable(result):
            self._save(key, result.model_dump_json())
            self._semantic_add(near, key)
        return result

    async def acall(self, call: Call, nxt: Callable[[], Awaitable[Any]]) -> Any:
        key = self._key(call)
        if key is None:
            return await nxt()
        value = await self._alookup(call, key)
        near = self._near(call, key) if value is None else None
        if value is None and near is not None:
            import asyncio

            # the bank's search embeds the text and reads its index: blocking work, off the event loop
            value = await asyncio.to_thread(self._semantic_lookup, call, near)
        if value is not None:
            return _load(key, value)
        result = await nxt()
        if _storable(result):
            await self._asave(key, result.model_dump_json())
            if near is not None:
                import asyncio

                await asyncio.to_thread(self._semantic_add, near, key)
        return result

    def stream(self, call: Call, nxt: Callable[[], Iterator[StreamEvent]]) -> Iterator[StreamEvent]:
        key = self._key(call)
        if key is None:
            yield from nxt()
            return
        value = self._lookup(call, key)
        near = self._near(call, key) if value is None else None
        if value is None:
            value = self._semantic_lookup(call, near)
        if value is not None:
            yield from _replay(value)
            return
        seen: list[StreamEvent] = []
        for ev in nxt():
            seen.append(ev)
            if isinstance(ev, StreamFooter) and _storable(ev):
                self._save(key, _events_json(seen))
                self._semantic_add(near, key)
            yield ev

    def astream(self, call: Call, nxt: Callable[[], AsyncIterator[StreamEvent]]) -> AsyncIterator[StreamEvent]:
        return self._astream(call, nxt)

    async def _astream(self, call: Call, nxt: Callable[[], AsyncIterator[StreamEvent]]) -> AsyncIterator[StreamEvent]:
        key = self._key(call)
        if key is None:
            async for ev in nxt():
                yield ev
            return
        value = await self._alookup(call, key)
        near = self._near(call, key) if value is None else None
        if value is None and near is not None:
            import asyncio

            value = await asyncio.to_thread(self._semantic_lookup, call, near)
        if value is not None:
            for ev in _replay(value):
                yield ev
            return
        seen: list[StreamEvent] = []
        async for ev in nxt():
            seen.append(ev)
            if isinstance(ev, StreamFooter) and _storable(ev):
                await self._asave(key, _events_json(seen))
                if near is not None:
                    import asyncio

                    await asyncio.to_thread(self._semantic_add, near, key)
            yield ev

    def close(self) -> None:
        store = getattr(self.mesh, "_response_cache", None)
        if store is not None:
            self.mesh._response_cache = None
            store.close()


def _storable(result: Any) -> bool:
    if isinstance(result, (CompletionResponse, StreamFooter)):
        return getattr(result, "success", True) and result.finish_reason not in ("error", "content_filter")
    return isinstance(result, EmbeddingResponse)


def _load(key: str, value: str) -> Any:
    kind = key.split(":", 1)[0]
    return (EmbeddingResponse if kind == "embed" else CompletionResponse).model_validate_json(value)


def _events_json(events: list[StreamEvent]) -> str:
    return json.dumps([{"footer" if isinstance(ev, StreamFooter) else "chunk": ev.model_dump(mode="json")}
                       for ev in events], separators=(",", ":"), ensure_ascii=False)


def _replay(value: str) -> Iterator[StreamEvent]:
    for item in json.loads(value):
        if "footer" in item:
            yield StreamFooter.model_validate(item["footer"])
        else:
            yield StreamChunk.model_validate(item["chunk"])
