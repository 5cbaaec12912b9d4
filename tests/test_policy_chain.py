"""The policy chain seam: layers wrap every operation, in order, and report on answers and footers."""

from __future__ import annotations

import asyncio

import pytest

from langchain_mesh import Mesh
from langchain_mesh.policies.chain import Chain, Layer
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.schema import CompletionRequest, EmbeddingRequest, GuardrailHit, Message, StreamFooter

CONFIG = {"connections": {"fake": {"type": "scripted", "models": [
    {"id": "chat"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}}


class Recorder(Layer):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def call(self, call, nxt):
        self.log.append((self.name, call.op, call.scope.key))
        call.meta.guardrails.append(GuardrailHit(name=self.name, action="flag", stage="input"))
        return nxt()

    async def acall(self, call, nxt):
        self.log.append((self.name, call.op, call.scope.key))
        return await nxt()

    def stream(self, call, nxt):
        self.log.append((self.name, call.op, call.scope.key))
        call.meta.llm_id = "answered-by"
        return nxt()

    def astream(self, call, nxt):
        self.log.append((self.name, call.op, call.scope.key))
        return nxt()


@pytest.fixture
def mesh_with_layers():
    mesh = Mesh.from_config(CONFIG)
    log: list = []
    chat, emb = mesh.get_llm("scripted:fake:chat"), mesh.get_llm("scripted:fake:emb")
    mesh._policies = True
    for llm in (chat, emb):
        mesh._chains[llm.id] = Chain((Recorder("outer", log), Recorder("inner", log)))
    yield mesh, chat, emb, log
    mesh.close()


def _req(text="hi"):
    return CompletionRequest(messages=[Message(role="user", content=text)])


def test_no_policy_config_means_no_chain():
    mesh = Mesh.from_config(CONFIG)
    assert mesh._policies is False
    resp = mesh.complete(mesh.get_llm("scripted:fake:chat"), _req())
    assert resp.meta is None and mesh._chains == {}


def test_layers_wrap_each_operation_in_order(mesh_with_layers):
    mesh, chat, emb, log = mesh_with_layers
    with call_scope(key="team-a"):
        resp = mesh.complete(chat, _req("ping"))
        mesh.embed(emb, EmbeddingRequest(texts=["a"]))
    assert resp.text == "ping"
    assert [g.name for g in resp.meta.guardrails] == ["outer", "inner"]
    assert log == [("outer", "complete", "team-a"), ("inner", "complete", "team-a"),
                   ("outer", "embed", "team-a"), ("inner", "embed", "team-a")]


def test_streams_pass_the_layers_and_the_footer_carries_meta(mesh_with_layers):
    mesh, chat, _emb, log = mesh_with_layers
    events = list(mesh.stream(chat, _req("hello there")))
    footer = events[-1]
    assert isinstance(footer, StreamFooter) and footer.meta.llm_id == "answered-by"
    assert "".join(e.text or "" for e in events[:-1]) == "hello there"
    assert [x[:2] for x in log] == [("outer", "stream"), ("inner", "stream")]


def test_async_paths(mesh_with_layers):
    mesh, chat, _emb, log = mesh_with_layers

    async def go():
        resp = await mesh.acomplete(chat, _req("x"))
        texts = [e.text async for e in mesh.astream(chat, _req("y")) if not isinstance(e, StreamFooter)]
        return resp, texts

    resp, texts = asyncio.run(go())
    assert resp.text == "x" and "".join(texts) == "y"
    assert [x[:2] for x in log] == [("outer", "acomplete"), ("inner", "acomplete"),
                                    ("outer", "astream"), ("inner", "astream")]


def test_a_layer_that_reads_content_turns_off_pass_through(mesh_with_layers):
    mesh, chat, _emb, _log = mesh_with_layers
    reader = Recorder("reader", [])
    reader.needs_content = True
    mesh._chains[chat.id] = Chain((reader,))
    assert mesh.passthrough(chat) is None


def test_a_layer_may_leave_a_routes_target_calls_alone():
    """``route_targets = False`` (the ledger): the layer sees the route's call, not the calls the route
    makes to its targets; the other layers see both."""
    mesh = Mesh.from_config({**CONFIG, "routes": {"r": {"targets": ["scripted:fake:chat"]}}})
    route, chat = mesh.get_llm("route:r"), mesh.get_llm("scripted:fake:chat")
    log: list = []
    every, once = Recorder("every", log), Recorder("once", log)
    once.route_targets = False
    mesh._policies = True
    for llm in (route, chat):
        mesh._chains[llm.id] = Chain((every, once))
    with call_scope(key="k"):
        assert mesh.complete(route, _req("hi")).text == "hi"
    assert [x[0] for x in log] == ["every", "once", "every"]  # route: both layers; its target: `every` only
    log.clear()
    mesh.complete(chat, _req("hi"))  # the same LLM called directly: both
    assert [x[0] for x in log] == ["every", "once"]
    mesh.close()


def test_call_scope_refuses_unknown_fields():
    with pytest.raises(TypeError, match="unknown field"):
        with call_scope(teem="x"):
            pass


def test_memory_store_counts_and_expires(monkeypatch):
    from langchain_mesh.policies import state

    now = [100.0]
    monkeypatch.setattr(state.time, "monotonic", lambda: now[0])
    s = state.MemoryStore()
    assert s.incr("a", ttl=10) == 1 and s.incr("a", 2) == 3
    s.set("b", "open", ttl=5)
    assert s.get("b") == "open"
    now[0] += 6
    assert s.get("b") is None and s.incr("a") == 4  # the counter's own ttl runs from its creation
    now[0] += 5
    assert s.incr("a") == 1
    assert asyncio.run(s.aget("zz")) is None


class _Hooks(Layer):
    """Forward hooks that log what runs: ``refuse`` raises in enter, ``bad_done`` raises in done;
    ``wait``: enter answers chain.Await (a round trip, as limits on Redis without a lease), which
    refuses the call when ``refuse`` is set too."""

    forward_hooks = True

    def __init__(self, name, log, refuse=False, bad_done=False, wait=False):
        self.name, self.log, self.refuse, self.bad_done, self.wait = name, log, refuse, bad_done, wait

    def forward_enter(self, call):
        from langchain_mesh.policies.chain import Await

        self.log.append(("enter", self.name))
        if self.wait:
            return Await(self._trip())
        if self.refuse:
            raise PermissionError(self.name)
        return self.name

    async def _trip(self):
        await asyncio.sleep(0)
        self.log.append(("waited", self.name))
        if self.refuse:
            raise PermissionError(self.name)
        return self.name

    def forward_fail(self, call, state, error):
        self.log.append(("fail", state, type(error).__name__))

    def forward_done(self, call, state, result):
        self.log.append(("done", state))
        if self.bad_done:
            raise KeyError(state)
        return result + (state,)


@pytest.mark.parametrize("case", ["ok", "refused", "upstream fails", "done fails", "waits", "refused after waiting"])
def test_forward_hooks_run_as_the_nested_acalls_would(case):
    """arun_forward (the hooks run around the upstream call) and arun over ahooked layers (a coroutine
    per layer) do the same things in the same order, and end the same way; a hook that must wait
    (chain.Await) too."""
    from langchain_mesh.policies.chain import Call, ahooked, arun, arun_forward

    def layers(log):
        return (_Hooks("outer", log), _Hooks("middle", log, refuse=case.startswith("refused"),
                                             bad_done=case == "done fails", wait="wait" in case),
                _Hooks("inner", log))

    async def upstream():
        if case == "upstream fails":
            raise TimeoutError("upstream")
        return ("answer",)

    async def both():
        out = []
        for fused in (True, False):
            log: list = []
            chain = layers(log)
            for layer in chain:
                layer.acall = lambda call, nxt, layer=layer: ahooked(layer, call, nxt)
            call = Call(None, None, "forward", None)
            try:
                result = await (arun_forward(chain, call, upstream(), False) if fused else arun(chain, call, upstream))
            except Exception as e:  # noqa: BLE001
                result = type(e).__name__
            out.append((result, log))
        return out

    fused, nested = asyncio.run(both())
    assert fused == nested
    expected = {"ok": ("answer", "inner", "middle", "outer"), "refused": "PermissionError",
                "upstream fails": "TimeoutError", "done fails": "KeyError",
                "waits": ("answer", "inner", "middle", "outer"), "refused after waiting": "PermissionError"}[case]
    assert fused[0] == expected
    if "wait" in case:  # the layers inside the waiting one enter after its round trip, and only if it passed
        log = fused[1]
        assert log.index(("waited", "middle")) == log.index(("enter", "middle")) + 1
        assert (("enter", "inner") in log) == (case == "waits")
    if case == "refused after waiting":  # the layer outside it is told; the call was never sent
        assert log[-1] == ("fail", "outer", "PermissionError")
    if case == "done fails":  # the layer outside the one that raised sees the failure; the one inside is done
        assert fused[1][-2:] == [("done", "middle"), ("fail", "outer", "KeyError")]
