"""A route's LLM handle side: the :class:`RouteConnection` that :meth:`Mesh.get_llm` gives a
``route:<name>`` handle, what the route offers (:func:`route_info`), and its byte pass-through for
``mesh serve`` (one target's per request, when every target speaks the same wire format). The dispatch
itself is :class:`~langchain_mesh.policies.routes.Route`::

    route = Route(mesh, "chat", config.routes["chat"], [mesh.get_llm(t.llm) for t in ...])
    llm = LLM(mesh, "route:chat", RouteConnection(route), "chat", route_info("chat", "", route.targets))
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from ..schema import ModelCapabilities, ModelInfo, Purpose
from .routes import Route, _Replay

__all__ = ["RouteConnection", "route_info"]


def route_info(route_id: str, description: str, targets: list[Any]) -> ModelInfo:
    """What a route offers: the purposes every target has, the capabilities every target has (a call
    the route accepts must be one any target can take: a fallback may send it to any of them)."""
    purposes = [p for p in Purpose if all(p in t.info.purposes for t in targets)]
    caps: dict[str, Any] = {}
    for field in ModelCapabilities.model_fields:
        values = [getattr(t.capabilities, field) for t in targets]
        if field == "context_window":
            known = [v for v in values if v is not None]
            caps[field] = max(known) if known else None  # a context-window fallback reaches the largest
        else:
            caps[field] = all(values)
    names = ", ".join(t.id for t in targets)
    return ModelInfo(id=route_id, purposes=purposes, description=description or f"route over {names}",
                     capabilities=ModelCapabilities(**caps))


class RouteConnection:
    """The connection of a route's LLM handle: every operation dispatches through :class:`Route`.

    :class:`~langchain_mesh.mesh.Mesh` calls :meth:`Route.call` (and the stream forms) directly with
    the caller's timeout (``LLM.route``); these methods serve callers that hold the connection."""

    type_name = "route"

    def __init__(self, route: Route):
        from ..config import ConnectionConfig

        self.route = route
        self.name = route.id
        # no retries at this level (the targets have theirs) and no deadline but the route's own
        self.config = ConnectionConfig(type="route", timeout=1e9, max_retries=0)
        self.embeds_images = all(t.connection.embeds_images for t in route.targets)
        self._passthrough: Any = False

    def list_models(self) -> list[ModelInfo]:
        return []

    def complete(self, model: str, request: Any) -> Any:
        return self.route.call("complete", request)

    async def acomplete(self, model: str, request: Any) -> Any:
        return await self.route.acall("acomplete", request)

    def stream(self, model: str, request: Any) -> Iterator[Any]:
        return self.route.stream(request)

    def astream(self, model: str, request: Any) -> AsyncIterator[Any]:
        return self.route.astream(request)

    def embed(self, model: str, request: Any) -> Any:
        return self.route.call("embed", request)

    async def aembed(self, model: str, request: Any) -> Any:
        return await self.route.acall("aembed", request)

    def generate_images(self, model: str, request: Any) -> Any:
        return self.route.call("generate_images", request)

    async def agenerate_images(self, model: str, request: Any) -> Any:
        return await self.route.acall("agenerate_images", request)

    def count_tokens(self, model: str, request: Any) -> Any:
        return self.route.call("count_tokens", request)

    async def acount_tokens(self, model: str, request: Any) -> Any:
        return await self.route.acall("acount_tokens", request)

    def tokenizer(self, model: str) -> Any:
        return None  # the targets may tokenize differently

    def capabilities_of(self, model: str) -> ModelCapabilities:
        return ModelCapabilities()

    @property
    def dialect(self) -> Any:
        """The targets' OpenAI dialect (the gateway's pass-through checks it): a non-OpenAI one if any."""
        dialects = [t.connection.dialect for t in self.route.targets]
        return next((d for d in dialects if d.provider not in ("openai", "azure_openai")), dialects[0])

    def passthrough(self, model: str) -> Any:
        """A pass-through picking a target's per request, when every target offers one in the same
        wire format with the same request shape (so the gateway's one validation holds for all)."""
        if self._passthrough is False:
            self._passthrough = _route_passthrough(self.route)
        return self._passthrough

    def close(self) -> None:
        """The targets' connections belong to the mesh."""

    def __repr__(self) -> str:
        return f"RouteConnection({self.route.id!r})"


def _route_passthrough(route: Route) -> Any:
    from ..connections.base import Passthrough

    mesh = route.mesh
    own = [mesh.passthrough(t) for t in route.targets]
    if any(p is None for p in own):
        return None
    first = own[0]
    same = all((p.wire, p.token_limit_key, p.unsupported, p.drop_unsupported, p.embedding_base64) ==
               (first.wire, first.token_limit_key, first.unsupported, first.drop_unsupported, first.embedding_base64)
               for p in own)
    if not same:
        return None
    import orjson

    sentinel_model = f"mesh-route-{route.name}"
    route.wire = (b'"model":' + orjson.dumps(sentinel_model), [b'"model":' + orjson.dumps(p.wire_model) for p in own])

    async def send(path: str, body: bytes, stream: bool) -> Any:
        # Mesh.aforward calls Route.forward directly; this serves callers holding the Passthrough
        content, first = await route.forward(path, body, stream)
        return _Replay(content, first) if stream else content

    async def prepare(path: str) -> None:
        for p in own:
            await p.prepare(path)

    return Passthrough(wire=first.wire, provider=f"route {route.name}", wire_model=sentinel_model,
                       token_limit_key=first.token_limit_key, unsupported=first.unsupported,
                       drop_unsupported=first.drop_unsupported,
                       embedding_batch=min(p.embedding_batch for p in own), embedding_base64=first.embedding_base64,
                       send=send, prepare=prepare, parse_usage=first.parse_usage)
