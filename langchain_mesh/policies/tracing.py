"""Tracing (layer order 10, the outermost): one OpenTelemetry span per call, with child spans for the
policies (guardrails, cache), each attempt of the retry policy (the provider round-trip) and the
calls a route or a judge makes to other LLMs. Attributes follow the OpenTelemetry GenAI semantic
conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.response.finish_reasons``...)::

    tracing:
      enabled: true
      capture_content: false   # true: messages (after guardrails) as gen_ai.input/output.messages
      exporter: null           # null: the application's global TracerProvider (set up with the SDK,
                               # or by opentelemetry-instrument); console | otlp: the mesh's own

No secret and, unless ``capture_content``, no message text goes into a span: errors are recorded by
type and status only (a provider's message may quote the prompt). Without a ``tracing:`` section this
module is not even imported; with one and no ``opentelemetry-api`` installed, the first call says so.

Other layers open their child spans with :func:`span`, which costs one dict lookup when the call is
not traced.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional

from ..errors import CapabilityError, ProviderError
from ..schema import CompletionRequest, CompletionResponse, EmbeddingResponse, StreamFooter
from .chain import Call, Layer, ahooked
from .retry import ATTEMPTS
from .usage_of import on_forward_end

__all__ = ["tracing_layer", "TracingLayer", "span"]

_NULL = contextlib.nullcontext()
_OPERATION = {"complete": "chat", "acomplete": "chat", "stream": "chat", "astream": "chat",
              "embed": "embeddings", "aembed": "embeddings", "generate_images": "image_generation",
              "agenerate_images": "image_generation"}
#: a pass-through call's operation, by its path (GUARDED_PATHS: the two the gateway forwards)
_FORWARD_OPERATION = {"/chat/completions": "chat", "/embeddings": "embeddings"}


def span(call: Call, name: str, attributes: Optional[dict[str, Any]] = None) -> Any:
    """A child span of ``call``'s span, current for the block; a no-op when the call is not traced."""
    notes = call._notes  # (not call.notes, which would make the dict for an untraced call)
    tracer = notes.get("tracer") if notes is not None else None
    if tracer is None:
        return _NULL
    return tracer.start_as_current_span(name, attributes=attributes, record_exception=False)


def tracing_layer(mesh: Any, llm: Any) -> Optional[Layer]:
    cfg = mesh.config.tracing
    if cfg is None or not cfg.enabled:
        return None
    return TracingLayer(llm, cfg)


_providers: dict[tuple[str, str], Any] = {}
_providers_lock = threading.Lock()


def _tracer(cfg: Any) -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise CapabilityError("tracing: is configured but OpenTelemetry is not installed: "
                              "pip install 'langchain-mesh[tracing]'") from None
    from .._version import __version__

    if cfg.exporter is None:
        return trace.get_tracer("langchain_mesh", __version__)
    with _providers_lock:  # one SDK provider per exporter kind and service, for the life of the process
        provider = _providers.get((cfg.exporter, cfg.service_name))
        if provider is None:
            provider = _providers[(cfg.exporter, cfg.service_name)] = _sdk_provider(cfg)
    return provider.get_tracer("langchain_mesh", __version__)


def _sdk_provider(cfg: Any) -> Any:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise CapabilityError("tracing.exporter needs the OpenTelemetry SDK: pip install 'langchain-mesh[tracing]'") \
            from None
    if cfg.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise CapabilityError("tracing.exporter: otlp needs opentelemetry-exporter-otlp-proto-http "
                                  "(its endpoint from OTEL_EXPORTER_OTLP_ENDPOINT)") from None
        exporter: Any = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class TracingLayer(Layer):
    name = "tracing"

    def __init__(self, llm: Any, cfg: Any):
        self.llm = llm
        self.cfg = cfg
        self.reads_streams = bool(cfg.capture_content)  # a pass-through stream's text is not kept: translated
        self._live_state, self._recheck = False, 0.0  # _live
        self._tracer: Any = None
        self.provider = getattr(llm.connection, "type", None) or llm.id.split(":", 1)[0]

    @property
    def tracer(self) -> Any:
        if self._tracer is None:
            self._tracer = _tracer(self.cfg)
        return self._tracer

    def _live(self) -> bool:
        """Whether a span made now could record: not while the tracer is the API's no-op, or its proxy
        for a global provider nobody has set (exporter: null and no SDK set up). A global provider is
        set once and never unset, so a live answer is kept; a dead one is asked again after a second
        (an application sets its provider at start-up): ~0.1 µs a call, against ~4 µs for a no-op span."""
        if self._live_state:
            return True
        now = time.monotonic()
        if now < self._recheck:
            return False
        from opentelemetry import trace

        t = self.tracer
        if type(t) is trace.ProxyTracer:
            live = not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        else:
            live = type(t) is not trace.NoOpTracer
        self._live_state, self._recheck = live, now + 1.0
        return live

    def _start(self, call: Call) -> Any:
        from opentelemetry.trace import SpanKind

        operation = _FORWARD_OPERATION.get(call.request[0]) if call.op == "forward" else _OPERATION.get(call.op)
        attrs: dict[str, Any] = {"gen_ai.operation.name": operation or call.op,
                                 "gen_ai.provider.name": self.provider,
                                 "gen_ai.request.model": self.llm.model, "mesh.llm.id": self.llm.id}
        if call.scope.key:
            attrs["mesh.key"] = call.scope.key  # the key's name, never the key
        if isinstance(call.request, CompletionRequest):
            s = call.request.settings
            for name, value in (("temperature", s.temperature), ("top_p", s.topP), ("top_k", s.topK),
                                ("max_tokens", s.maxOutputTokens), ("seed", s.seed),
                                ("presence_penalty", s.presencePenalty), ("frequency_penalty", s.frequencyPenalty)):
                if value is not None:
                    attrs[f"gen_ai.request.{name}"] = value
        sp = self.tracer.start_span(f"{operation or call.op} {self.llm.model}", kind=SpanKind.CLIENT,
                                    attributes=attrs, record_exception=False, set_status_on_exception=False)
        call.notes["tracer"] = self.tracer
        return sp

    def _finish(self, sp: Any, call: Call, result: Any = None, error: Optional[BaseException] = None) -> None:
        if result is not None:
            _result_attributes(sp, result)
        meta = call.meta
        if meta.llm_id:
            sp.set_attribute("mesh.answered_by", meta.llm_id)
        if meta.cache:
            sp.set_attribute("mesh.cache", meta.cache)
        if meta.guardrails:
            sp.set_attribute("mesh.guardrails", [f"{g.name}:{g.stage}:{g.action}" for g in meta.guardrails])
        if self.cfg.capture_content:
            _content(sp, call, result)
        if error is not None:
            _error(sp, error)
        sp.end()

    # ---- the pass-through (op ``forward``): hooks, so a traced chain keeps arun_forward's one frame -------
    # The span is current from forward_enter to forward_done (the upstream call, its attempts, the
    # layers inside) and ends when the server has read the usage (usage_of.on_forward_end): for a
    # stream, at its last event.

    forward_hooks = True

    def forward_enter(self, call: Call) -> Any:
        if not self._live():
            return None
        from opentelemetry import context, trace

        sp = self._start(call)
        token = context.attach(trace.set_span_in_context(sp))
        if not sp.is_recording():  # sampled out: current all the same (see _unsampled), nothing recorded
            del call.notes["tracer"]
            return None, token, None
        # the wire body's settings, read once the span is known to record (samplers get the rest at start)
        settings = _wire_request_attributes(call.request)
        if settings:
            sp.set_attributes(settings)
        return sp, token, ATTEMPTS.set(_Attempts(self, sp))

    def forward_fail(self, call: Call, state: Any, error: BaseException) -> None:
        if state is not None:
            _leave(state)
            if state[0] is not None:
                self._finish(state[0], call, error=error)

    def forward_done(self, call: Call, state: Any, result: Any) -> Any:
        if state is None:
            return result
        _leave(state)
        if state[0] is None:
            return result
        if isinstance(result[0], (bytes, bytearray, memoryview)):  # a whole answer: its finish reasons, model
            _wire_answer_attributes(state[0], call, result[0], self.cfg.capture_content)
        return on_forward_end(result, _forward_ended, (self, state[0], call))

    def call(self, call: Call, nxt: Callable[[], Any]) -> Any:
        if call.op in ("count_tokens", "acount_tokens") or not self._live():
            return nxt()
        from opentelemetry import trace

        sp = self._start(call)
        if not sp.is_recording():
            with _unsampled(sp, call):
                return nxt()
        token = ATTEMPTS.set(_Attempts(self, sp))
        try:
            with trace.use_span(sp, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                result = nxt()
        except BaseException as e:
            self._finish(sp, call, error=e)
            raise
        finally:
            ATTEMPTS.reset(token)
        self._finish(sp, call, result)
        return result

    async def acall(self, call: Call, nxt: Callable[[], Awaitable[Any]]) -> Any:
        if call.op in ("count_tokens", "acount_tokens") or not self._live():
            return await nxt()
        if call.op == "forward":  # in a chain with a layer that has no forward hooks: the same hooks
            return await ahooked(self, call, nxt)
        from opentelemetry import trace

        sp = self._start(call)
        if not sp.is_recording():
            with _unsampled(sp, call):
                return await nxt()
        token = ATTEMPTS.set(_Attempts(self, sp))
        try:
            with trace.use_span(sp, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                result = await nxt()
        except BaseException as e:
            self._finish(sp, call, error=e)
            raise
        finally:
            ATTEMPTS.reset(token)
        self._finish(sp, call, result)
        return result

    def stream(self, call: Call, nxt: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        from opentelemetry import context, trace

        sp = self._start(call)
        ctx, attempts = trace.set_span_in_context(sp), _Attempts(self, sp)
        it: Any = None
        footer, error = None, None
        try:
            while True:
                # the span is current only while the rest of the chain runs (each step), never across
                # a yield: the caller's code between events is not part of the call
                token, hook = context.attach(ctx), ATTEMPTS.set(attempts)
                try:
                    if it is None:
                        it = nxt()
                    ev = next(it)
                except StopIteration:
                    return
                finally:
                    ATTEMPTS.reset(hook)
                    context.detach(token)
                if isinstance(ev, StreamFooter):
                    footer = ev
                yield ev
        except BaseException as e:
            error = e if not isinstance(e, GeneratorExit) else None
            raise
        finally:
            if it is not None and hasattr(it, "close"):
                it.close()
            self._finish(sp, call, footer, error)

    def astream(self, call: Call, nxt: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
        return self._astream(call, nxt)

    async def _astream(self, call: Call, nxt: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
        from opentelemetry import context, trace

        sp = self._start(call)
        ctx, attempts = trace.set_span_in_context(sp), _Attempts(self, sp)
        it: Any = None
        footer, error = None, None
        try:
            while True:
                token, hook = context.attach(ctx), ATTEMPTS.set(attempts)
                try:
                    if it is None:
                        it = nxt()
                    ev = await it.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    ATTEMPTS.reset(hook)
                    context.detach(token)
                if isinstance(ev, StreamFooter):
                    footer = ev
                yield ev
        except BaseException as e:
            error = e if not isinstance(e, GeneratorExit) else None
            raise
        finally:
            if it is not None and hasattr(it, "aclose"):
                await it.aclose()
            self._finish(sp, call, footer, error)


class _Attempts:
    """What the retry policy calls around each attempt of a traced call (``retry.ATTEMPTS``): a child
    span per attempt, the provider round-trip, with the error type and status of a failed one."""

    def __init__(self, layer: TracingLayer, parent: Any):
        self.layer = layer
        self.parent = parent
        self.n = 0

    def _span(self) -> Any:
        from opentelemetry import trace

        self.n += 1
        return self.layer.tracer.start_span(
            "attempt", context=trace.set_span_in_context(self.parent),
            attributes={"mesh.attempt": self.n, "gen_ai.provider.name": self.layer.provider,
                        "gen_ai.request.model": self.layer.llm.model},
            record_exception=False, set_status_on_exception=False)

    def wrap(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def attempt() -> Any:
            sp = self._span()
            try:
                return fn()
            except BaseException as e:
                _error(sp, e)
                raise
            finally:
                sp.end()
        return attempt

    def awrap(self, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def attempt() -> Any:
            sp = self._span()
            try:
                return await fn()
            except BaseException as e:
                _error(sp, e)
                raise
            finally:
                sp.end()
        return attempt

    def wrap_stream(self, open_stream: Callable[[], Iterator[Any]]) -> Callable[[], Iterator[Any]]:
        def attempt() -> Iterator[Any]:
            sp = self._span()
            try:
                yield from open_stream()
            except BaseException as e:
                if not isinstance(e, GeneratorExit):
                    _error(sp, e)
                raise
            finally:
                sp.end()
        return attempt

    def awrap_stream(self, open_stream: Callable[[], AsyncIterator[Any]]) -> Callable[[], AsyncIterator[Any]]:
        async def attempt() -> AsyncIterator[Any]:
            sp = self._span()
            it = open_stream()
            try:
                async for ev in it:
                    yield ev
            except BaseException as e:
                if not isinstance(e, GeneratorExit):
                    _error(sp, e)
                raise
            finally:
                sp.end()
                aclose = getattr(it, "aclose", None)
                if aclose is not None:
                    await aclose()
        return attempt


def _leave(state: tuple[Any, Any, Any]) -> None:
    """A pass-through span's context and attempt hook, set by forward_enter, taken down."""
    from opentelemetry import context

    if state[2] is not None:
        ATTEMPTS.reset(state[2])
    context.detach(state[1])


@contextlib.contextmanager
def _unsampled(sp: Any, call: Call) -> Iterator[None]:
    """A span the sampler left out, current while the call runs: the calls inside it (a route's
    targets, a judge's) then follow its decision (the SDK's default sampler is parent-based) instead
    of each starting a trace of its own, fragments of one whose root was dropped."""
    from opentelemetry import trace

    del call.notes["tracer"]
    with trace.use_span(sp, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        yield


def _forward_ended(state: tuple[TracingLayer, Any, Call], usage: Any, ok: Optional[bool]) -> None:
    """The server has read a pass-through answer's usage (``ok`` False: it failed; None: the client
    cut the stream): the span gets the usage and ends."""
    layer, sp, call = state
    if type(usage) is dict:
        attrs = {"gen_ai.usage.input_tokens": usage.get("prompt_tokens") or 0}
        if _FORWARD_OPERATION.get(call.request[0]) != "embeddings":  # no output tokens (as _result_attributes)
            attrs["gen_ai.usage.output_tokens"] = usage.get("completion_tokens") or 0
        sp.set_attributes(attrs)
    if ok is False:
        from opentelemetry.trace import Status, StatusCode

        sp.set_attribute("error.type", "_OTHER")  # (GenAI conventions: no type known) no answer, or a broken stream
        sp.set_status(Status(StatusCode.ERROR, "the answer failed after its first byte"))
    layer._finish(sp, call)


_WIRE_SETTINGS = (("temperature", "temperature"), ("top_p", "top_p"), ("max_tokens", "max_tokens"),
                  ("max_completion_tokens", "max_tokens"), ("seed", "seed"),
                  ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty"))


def _wire_request_attributes(request: Any) -> dict[str, Any]:
    """The GenAI request attributes of a pass-through body (OpenAI wire), read only for a recording span."""
    import orjson

    try:
        data = orjson.loads(request[1])
    except orjson.JSONDecodeError:
        return {}
    if type(data) is not dict:
        return {}
    return {f"gen_ai.request.{name}": data[key] for key, name in _WIRE_SETTINGS if type(data.get(key)) in (int, float)}


def _wire_answer_attributes(sp: Any, call: Call, content: Any, capture: bool) -> None:
    import orjson

    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    if type(answer) is not dict:
        return
    reasons = [c.get("finish_reason") for c in answer.get("choices") or () if type(c) is dict and c.get("finish_reason")]
    attrs: dict[str, Any] = {"gen_ai.response.finish_reasons": reasons} if reasons else {}
    if type(answer.get("model")) is str:
        attrs["gen_ai.response.model"] = answer["model"]
    if type(answer.get("id")) is str:
        attrs["gen_ai.response.id"] = answer["id"]
    sp.set_attributes(attrs)  # (one call: the SDK takes its lock and makes a dict per set_attribute)
    if capture:  # as _content: the messages as sent (after the guardrails inside this layer), the answer
        from .guardrails.wire import answer_texts, message_text

        try:
            data = orjson.loads(call.request[1])
        except orjson.JSONDecodeError:
            data = None
        messages = data.get("messages") if type(data) is dict else None
        if type(messages) is list:
            sp.set_attribute("gen_ai.input.messages", json.dumps(
                [{"role": m.get("role"), "content": message_text(m)} for m in messages if type(m) is dict],
                ensure_ascii=False))
        sp.set_attribute("gen_ai.output.messages", json.dumps(
            [{"role": "assistant", "content": text} for _m, text in answer_texts(answer)], ensure_ascii=False))


def _error(sp: Any, e: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    # the type and status only: a provider's message may quote the prompt or a credential
    sp.set_attribute("error.type", type(e).__name__)
    if isinstance(e, ProviderError) and e.status is not None:
        sp.set_attribute("http.response.status_code", e.status)
    sp.set_status(Status(StatusCode.ERROR, type(e).__name__))


def _result_attributes(sp: Any, result: Any) -> None:
    usage = getattr(result, "usage", None)
    if isinstance(result, (CompletionResponse, StreamFooter)):
        if result.finish_reason:
            sp.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
        if result.model:
            sp.set_attribute("gen_ai.response.model", result.model)
    elif isinstance(result, EmbeddingResponse) and getattr(result, "model", None):
        sp.set_attribute("gen_ai.response.model", result.model)
    if usage is not None:
        sp.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        if not isinstance(result, EmbeddingResponse):
            sp.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)


def _content(sp: Any, call: Call, result: Any) -> None:
    """Opt-in: the messages as the provider got them (after redaction) and the answer's text."""
    if isinstance(call.request, CompletionRequest):
        sp.set_attribute("gen_ai.input.messages", json.dumps(
            [{"role": m.role, "content": m.text} for m in call.request.messages], ensure_ascii=False))
    if isinstance(result, CompletionResponse):
        sp.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": result.text}],
                                                              ensure_ascii=False))
