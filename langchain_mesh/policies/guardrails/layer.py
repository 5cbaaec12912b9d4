"""The guardrail layer (order 30): input rules before the rest of the chain, output rules on the
answer or on the stream as it flows. See the package docstring for the config."""

from __future__ import annotations

import fnmatch
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional

import orjson

from ...errors import CapabilityError, GuardrailError
from ...schema import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    GuardrailHit,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    TextPart,
)
from ..chain import Call, Layer, ahooked
from ..scope import call_scope
from ..tracing import span
from .checks import JUDGE_SCOPE_KEY, JSONCheck, JudgeCheck, SizeCheck, request_size
from .rules import TextRule, safe_end
from .wire import GUARDED_PATHS, answer_texts, map_request_texts, wire_size, withhold_choice

__all__ = ["GuardrailLayer"]

_COMPLETION = frozenset({"complete", "acomplete", "stream", "astream"})
_EMBED = frozenset({"embed", "aembed"})


def _hit(call: Call, rule: Any, action: str, stage: str, detail: Optional[str] = None) -> None:
    call.meta.guardrails.append(GuardrailHit(name=rule.name, action=action, stage=stage, detail=detail))  # type: ignore[arg-type]


def _names(mesh: Any, llm: Any, stage: str) -> set[str]:
    """The names of the rules ``llm``'s guardrail layer applies at ``stage``."""
    layer = next((x for x in mesh._chain(llm) if isinstance(x, GuardrailLayer)), None)  # noqa: SLF001 - the mesh's chain cache
    return {r.name for r in layer.rules if stage in r.stages} if layer is not None else set()


def _labels(found: list[Any]) -> str:
    return ",".join(sorted({f.label for f in found}))


class GuardrailLayer(Layer):
    """The rules of one LLM. On the pass-through (op ``forward``) they read and rewrite the OpenAI-wire
    bodies themselves (:mod:`.wire`), so a guarded LLM keeps the gateway's byte path, with two
    exceptions that take the translated one: a judge (a model call, awaited) anywhere, and a stream
    when a rule reads the output (the stream guard holds back text between the mesh's events)."""

    name = "guardrails"
    reads_wire = "openai"
    forward_hooks = True

    def __init__(self, rules: list[Any]):
        self.rules = rules
        self.needs_content = any(isinstance(r, JudgeCheck) for r in rules)
        self.reads_streams = any("output" in r.stages for r in rules)
        self._memo: dict[tuple[str, Any], list[Any]] = {}  # _unrun
        self._asked: dict[tuple[Any, ...], list[Any]] = {}  # _active

    # ---- which rules apply to this call --------------------------------------------------------------

    def _active(self, call: Call, stage: str) -> list[Any]:
        scope = call.scope
        extra = scope.extra
        # what decides it, remembered (a gateway asks four times a request, for a few keys)
        ask = (stage, scope.key, extra.get("route"), bool(extra.get(JUDGE_SCOPE_KEY)))
        try:
            return self._asked[ask]
        except KeyError:
            pass
        stage, key, route, judged = ask  # judged: the judge's own call, no judge, no JSON check
        rules = self.rules
        if stage == "input" and route is not None:
            rules = self._unrun(call.mesh, "input", route)
        elif stage == "output" and call.llm.route is not None:
            rules = self._unrun(call.mesh, "output", call.llm.route)
        out = [r for r in rules if stage in r.stages
               and (not r.keys or (key is not None and any(fnmatch.fnmatchcase(key, p) for p in r.keys)))
               and not (judged and isinstance(r, (JudgeCheck, JSONCheck)))]
        if len(self._asked) >= 4096:  # library callers may make up keys: bounded
            self._asked.clear()
        self._asked[ask] = out
        return out

    def _unrun(self, mesh: Any, stage: str, route: Any) -> list[Any]:
        """This layer's rules less those a route's layers apply anyway (by name: a config entry), each
        applied once per call, not by the route and again by its target. ``input`` (this is a target
        called by the route named ``route``): the route's own rules ran on the request before it picked
        a target. ``output`` (this is the route): the rules every target applies to its answer, there
        (where a blocked answer may still send the route on to its next target, ``content_filter``)."""
        memo = self._memo.get((stage, route))
        if memo is None:
            if stage == "input":
                done = _names(mesh, mesh.get_llm(f"route:{route}"), "input")
            else:
                done = set.intersection(*(_names(mesh, t, "output") for t in route.targets))
            memo = self._memo[(stage, route)] = [r for r in self.rules if r.name not in done]
        return memo

    # ---- input -----------------------------------------------------------------------------------------

    def _input(self, call: Call) -> list[JudgeCheck]:
        """Apply the input rules that need no model call to ``call.request``; the judges left to run."""
        judges: list[JudgeCheck] = []
        if call.op not in _COMPLETION and call.op not in _EMBED:
            return judges
        req = call.request
        for rule in self._active(call, "input"):
            if isinstance(rule, JudgeCheck):
                judges.append(rule)
                continue
            with span(call, f"guardrail {rule.name}", {"mesh.guardrail.stage": "input"}):
                if isinstance(rule, SizeCheck):
                    try:
                        rule.check(*request_size(req))
                    except GuardrailError as e:
                        _hit(call, rule, "block", "input", e.detail)
                        raise
                elif isinstance(rule, TextRule):
                    req = _map_texts(req, lambda text, r=rule: self._text_in(call, r, text))  # type: ignore[misc]
        call.request = req
        return judges

    def _text_in(self, call: Call, rule: TextRule, text: str) -> str:
        found = rule.find(text)
        if not found:
            return text
        _hit(call, rule, rule.action, "input", _labels(found))
        if rule.action == "block":
            raise GuardrailError(f"guardrail {rule.name!r} refused the request: it contains {_labels(found)}",
                                 guardrail=rule.name, stage="input", detail=_labels(found))
        return rule.redact(text, found) if rule.action == "redact" else text

    def _judged(self, call: Call, rule: JudgeCheck, stage: str, breaks: bool) -> bool:
        """Record a judge's verdict; True when the call must stop (input: raises)."""
        if not breaks:
            return False
        _hit(call, rule, rule.action, stage, "POLICY")
        if rule.action != "block":
            return False
        if stage == "input":
            raise GuardrailError(f"guardrail {rule.name!r} refused the request: its judge found it against the "
                                 "policy", guardrail=rule.name, stage="input", detail="POLICY")
        return True

    def _judge(self, call: Call, rule: JudgeCheck, text: str) -> bool:
        mesh = call.mesh
        with span(call, f"guardrail {rule.name}", {"mesh.guardrail.judge": rule.llm_id}), \
                call_scope(extra={**call.scope.extra, JUDGE_SCOPE_KEY: rule.name}):
            return rule.verdict(mesh.complete(mesh.get_llm(rule.llm_id), rule.request(text)))

    async def _ajudge(self, call: Call, rule: JudgeCheck, text: str) -> bool:
        mesh = call.mesh
        with span(call, f"guardrail {rule.name}", {"mesh.guardrail.judge": rule.llm_id}), \
                call_scope(extra={**call.scope.extra, JUDGE_SCOPE_KEY: rule.name}):
            return rule.verdict(await mesh.acomplete(mesh.get_llm(rule.llm_id), rule.request(text)))

    # ---- output (a whole answer) ---------------------------------------------------------------------

    def _output(self, call: Call, resp: Any, rules: list[Any]) -> tuple[Any, bool]:
        """(the answer after the non-judge rules, whether it was withheld)."""
        for rule in rules:
            if isinstance(rule, JudgeCheck):
                continue
            with span(call, f"guardrail {rule.name}", {"mesh.guardrail.stage": "output"}):
                text, blocked = _text_out(call, rule, resp.text)
            if blocked:
                return _withheld(resp), True
            if text != resp.text:
                resp = resp.model_copy(update={"text": text})
        return resp, False

    def call(self, call: Call, nxt: Callable[[], Any]) -> Any:
        judges = self._input(call)
        for rule in judges:
            self._judged(call, rule, "input", self._judge(call, rule, _request_text(call.request)))
        resp = nxt()
        rules = self._active(call, "output") if isinstance(resp, CompletionResponse) else []
        if not rules:
            return resp
        resp, blocked = self._output(call, resp, rules)
        for rule in (r for r in rules if isinstance(r, JudgeCheck) and not blocked):
            if self._judged(call, rule, "output", self._judge(call, rule, resp.text)):
                return _withheld(resp)
        return resp

    async def acall(self, call: Call, nxt: Callable[[], Awaitable[Any]]) -> Any:
        if call.op == "forward":  # under a layer without forward hooks (tracing): the same hooks
            return await ahooked(self, call, nxt)
        judges = self._input(call)
        for rule in judges:
            self._judged(call, rule, "input", await self._ajudge(call, rule, _request_text(call.request)))
        resp = await nxt()
        rules = self._active(call, "output") if isinstance(resp, CompletionResponse) else []
        if not rules:
            return resp
        resp, blocked = self._output(call, resp, rules)
        for rule in (r for r in rules if isinstance(r, JudgeCheck) and not blocked):
            if self._judged(call, rule, "output", await self._ajudge(call, rule, resp.text)):
                return _withheld(resp)
        return resp

    # ---- the pass-through: OpenAI-wire bytes -----------------------------------------------------------

    def forward_enter(self, call: Call) -> list[Any]:
        """The input rules applied to the body (``call.request`` rewritten when one redacts); the
        output rules that the answer will pass."""
        path, body, stream = call.request
        outputs = self._active(call, "output")
        if stream and outputs:  # Mesh.forward_streams says so: the gateway translates these streams
            raise CapabilityError(f"guardrails {', '.join(r.name for r in outputs)} read the output, which a "
                                  f"pass-through stream does not show them; stream {call.llm.id} translated instead")
        inputs = self._active(call, "input")
        if not inputs:
            return outputs
        if path not in GUARDED_PATHS:
            raise CapabilityError(f"guardrails cannot read a pass-through request to {path}; send it translated")
        data = orjson.loads(body)
        changed = False
        for rule in inputs:
            with span(call, f"guardrail {rule.name}", {"mesh.guardrail.stage": "input"}):
                if isinstance(rule, SizeCheck):
                    try:
                        rule.check(*wire_size(path, data))
                    except GuardrailError as e:
                        _hit(call, rule, "block", "input", e.detail)
                        raise
                else:
                    changed = map_request_texts(path, data, lambda text, r=rule: self._text_in(call, r, text)) or changed
        if changed:
            call.request = (path, orjson.dumps(data), stream)
        return outputs

    def forward_done(self, call: Call, outputs: list[Any], result: Any) -> Any:
        """A whole chat answer's texts through the output rules (re-encoded only when one changed)."""
        content, rest = result
        if not outputs:
            return result
        try:
            answer = orjson.loads(content)  # (a stream never gets here with outputs: forward_enter)
        except orjson.JSONDecodeError:
            return result  # not an answer: the gateway says what the upstream sent
        try:
            changed = self._answer_out(call, outputs, answer)
        except GuardrailError:  # a JSON check refused it: the inner layers' usage is still the call's
            end = getattr(rest, "end", None)
            if end is not None:
                end(answer.get("usage") if type(answer) is dict else None, True)
            raise
        return (orjson.dumps(answer), rest) if changed else result

    def _answer_out(self, call: Call, outputs: list[Any], answer: Any) -> bool:
        changed = False
        for message, text in answer_texts(answer):
            for rule in outputs:
                with span(call, f"guardrail {rule.name}", {"mesh.guardrail.stage": "output"}):
                    new, blocked = _text_out(call, rule, text)
                if blocked:
                    withhold_choice(answer, message)
                    changed = True
                    break
                if new != text:
                    message["content"] = text = new
                    changed = True
        return changed

    # ---- streams -------------------------------------------------------------------------------------

    def stream(self, call: Call, nxt: Callable[[], Iterator[StreamEvent]]) -> Iterator[StreamEvent]:
        # a generator: a refusal is raised where a provider's error would be, at the first event
        judges = self._input(call)  # refused before the stream opens: no provider call
        for rule in judges:
            self._judged(call, rule, "input", self._judge(call, rule, _request_text(call.request)))
        rules = self._active(call, "output")
        if rules:
            yield from self._guarded(call, nxt(), rules)
        else:
            yield from nxt()

    def _guarded(self, call: Call, inner: Iterator[StreamEvent], rules: list[Any]) -> Iterator[StreamEvent]:
        guard = StreamGuard(call, rules)
        try:
            for ev in inner:
                if isinstance(ev, StreamFooter):
                    text, blocked = guard.finish()
                    for rule in guard.judges:
                        if not blocked and self._judged(call, rule, "output", self._judge(call, rule, text)):
                            blocked = True
                    yield from guard.last(ev, text, blocked)
                    return
                yield from guard.feed(ev)
                if guard.stopped:
                    yield guard.stop_footer()
                    return
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    def astream(self, call: Call, nxt: Callable[[], AsyncIterator[StreamEvent]]) -> AsyncIterator[StreamEvent]:
        return self._aguarded(call, nxt)

    async def _aguarded(self, call: Call, nxt: Callable[[], AsyncIterator[StreamEvent]]) -> AsyncIterator[StreamEvent]:
        judges = self._input(call)
        for rule in judges:
            self._judged(call, rule, "input", await self._ajudge(call, rule, _request_text(call.request)))
        rules = self._active(call, "output")
        inner = nxt()
        guard = StreamGuard(call, rules) if rules else None
        try:
            async for ev in inner:
                if guard is None:
                    yield ev
                    continue
                if isinstance(ev, StreamFooter):
                    text, blocked = guard.finish()
                    for rule in guard.judges:
                        if not blocked and self._judged(call, rule, "output", await self._ajudge(call, rule, text)):
                            blocked = True
                    for out in guard.last(ev, text, blocked):
                        yield out
                    return
                for out in guard.feed(ev):
                    yield out
                if guard.stopped:
                    yield guard.stop_footer()
                    return
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()


class StreamGuard:
    """Output rules on a stream. Text rules judge the text as far as no match can still reach and hold
    back the rest; JSON and judge rules need the whole answer, so with one of them the text is held to
    the end and sent as one chunk (tool-call pieces still flow)."""

    def __init__(self, call: Call, rules: list[Any]):
        self.call = call
        self.text_rules = [r for r in rules if isinstance(r, TextRule)]
        self.json_rules = [r for r in rules if isinstance(r, JSONCheck)]
        self.judges = [r for r in rules if isinstance(r, JudgeCheck)]
        self.whole = bool(self.json_rules or self.judges)
        self.held = ""
        self.stopped = False
        self._hits: dict[str, set[str]] = {}

    def _judge_text(self, text: str) -> Optional[str]:
        """``text`` after the text rules, or None when a rule blocks it."""
        for rule in self.text_rules:
            found = rule.find(text)
            if not found:
                continue
            seen = self._hits.setdefault(rule.name, set())
            new = {f.label for f in found} - seen
            if new:  # one hit per rule and kind for the whole stream
                seen.update(new)
                _hit(self.call, rule, rule.action, "output", ",".join(sorted(new)))
            if rule.action == "block":
                return None
            if rule.action == "redact":
                text = rule.redact(text, found)
        return text

    def feed(self, ev: StreamEvent) -> list[StreamEvent]:
        text = ev.text or ""  # type: ignore[union-attr]
        deltas = ev.tool_call_deltas  # type: ignore[union-attr]
        if not text and not self.held:
            return [ev]
        fresh = not self.held
        self.held += text
        if self.whole:
            return [StreamChunk(tool_call_deltas=deltas)] if deltas else []
        end = safe_end(self.text_rules, self.held)
        ready, self.held = self.held[:end], self.held[end:]
        out = self._judge_text(ready) if ready else ""
        if out is None:
            self.stopped = True
            return []
        if fresh and out == text and not self.held:
            return [ev]  # nothing held, nothing changed: the provider's own chunk (log probs and all)
        return [StreamChunk(text=out, tool_call_deltas=deltas)] if out or deltas else []

    def finish(self) -> tuple[str, bool]:
        """The held text judged whole at the end of the stream, and whether it is withheld."""
        text, self.held = self.held, ""
        out = self._judge_text(text) if text else ""
        if out is None:
            return "", True
        for rule in self.json_rules:
            with span(self.call, f"guardrail {rule.name}", {"mesh.guardrail.stage": "output"}):
                try:
                    out, repaired = rule.check(out)
                except GuardrailError:
                    _hit(self.call, rule, "block", "output", "invalid_json")
                    raise
            if repaired:
                _hit(self.call, rule, "repair", "output", "invalid_json")
        return out, False

    def last(self, footer: StreamFooter, text: str, blocked: bool) -> list[StreamEvent]:
        if blocked:
            return [footer.model_copy(update={"finish_reason": "content_filter", "tool_calls": []})]
        return ([StreamChunk(text=text)] if text else []) + [footer]

    def stop_footer(self) -> StreamFooter:
        # the provider's stream is closed here, so its usage is not known: the footer says so with zeros
        return StreamFooter(finish_reason="content_filter")


def _text_out(call: Call, rule: Any, text: str) -> tuple[str, bool]:
    if isinstance(rule, JSONCheck):
        try:
            fixed, repaired = rule.check(text)
        except GuardrailError:
            _hit(call, rule, "block", "output", "invalid_json")  # for the ledger, which sees the error's call
            raise
        if repaired:
            _hit(call, rule, "repair", "output", "invalid_json")
        return fixed, False
    found = rule.find(text)
    if not found:
        return text, False
    _hit(call, rule, rule.action, "output", _labels(found))
    if rule.action == "block":
        return "", True
    return (rule.redact(text, found) if rule.action == "redact" else text), False


def _withheld(resp: CompletionResponse) -> CompletionResponse:
    return resp.model_copy(update={"text": "", "tool_calls": [], "finish_reason": "content_filter"})


def _request_text(request: Any) -> str:
    if isinstance(request, CompletionRequest):
        return "\n".join(m.text for m in request.messages if m.role != "system" and m.text)
    return "\n".join(getattr(request, "texts", []))


def _map_texts(request: Any, fn: Callable[[str], str]) -> Any:
    """``request`` with every text passed through ``fn`` (a new request when anything changed)."""
    if isinstance(request, EmbeddingRequest):
        texts = [fn(t) for t in request.texts]
        return request if texts == request.texts else request.model_copy(update={"texts": texts})
    if not isinstance(request, CompletionRequest):
        return request
    changed, messages = False, []
    for m in request.messages:
        if isinstance(m.content, str) and m.content:
            new: Any = fn(m.content)
        elif isinstance(m.content, list):
            new = [p.model_copy(update={"text": fn(p.text)}) if isinstance(p, TextPart) else p for p in m.content]
        else:
            new = m.content
        if new != m.content:
            changed = True
            m = m.model_copy(update={"content": new})
        messages.append(m)
    return request.model_copy(update={"messages": messages}) if changed else request
