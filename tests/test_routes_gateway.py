"""Routes in ``mesh serve``: listed by /v1/models, served on the pass-through path when every target
offers one (the target picked per request), on the translated path otherwise; ``x-mesh-llm`` /
``x-mesh-attempts`` headers and the usage record say which target answered after how many attempts."""

from __future__ import annotations

import pytest

pytest.importorskip("uvicorn")

import httpx  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.errors import ServerError  # noqa: E402
from langchain_mesh.server.forward import forward_plan  # noqa: E402
from langchain_mesh.testing.faults import FaultPlan  # noqa: E402
from langchain_mesh.testing.openai import OpenAIServer  # noqa: E402

A, B = "openai_compatible:a:m", "openai_compatible:b:m"


@pytest.fixture(scope="module")
def gw():
    a, b = OpenAIServer(flavor="openai").start(), OpenAIServer(flavor="openai").start()
    conn = lambda s: {"type": "openai_compatible", "base_url": s.base_url, "api_key": "test-key",  # noqa: E731
                      "max_retries": 0, "timeout": 2,
                      "models": [{"id": "m"}, {"id": "e", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}
    mesh = Mesh({"connections": {"a": conn(a), "b": conn(b), "fake": {"type": "scripted"}},
                 "routes": {"chat": {"targets": [A, B]},
                            "mixed": {"targets": ["scripted:fake:chat", A]},
                            "split": {"strategy": "weighted", "targets": [A, B]},
                            "guarded": {"targets": [A, B], "breaker": {"failures": 1, "window": 60, "cooldown": 60}},
                            "emb": {"targets": ["openai_compatible:a:e", "openai_compatible:b:e"]}}})
    records: list = []
    with RunningServer(mesh, on_usage=records.append) as srv:
        srv.a, srv.b, srv.records = a, b, records
        yield srv
    a.stop()
    b.stop()


def post(gw, model, stream=False, headers=None, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream, **extra}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10, headers=headers or {})


def test_models_lists_routes(gw):
    ids = [m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]]
    assert {"route:chat", "route:mixed", "route:split"} <= set(ids)


def test_pass_through_route_falls_back_and_says_so(gw):
    mesh = gw.app.mesh
    assert forward_plan(mesh.get_llm("route:chat")) is not None  # all targets speak the OpenAI wire
    gw.a.faults = FaultPlan(schedule=["503"])
    gw.records.clear()
    try:
        r = post(gw, "route:chat")
    finally:
        gw.a.faults = None
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "route:chat"
    assert r.headers["x-mesh-llm"] == B and r.headers["x-mesh-attempts"] == "2"
    assert gw.b.last_request.json["model"] == "m"  # the target's own model name went upstream
    rec = gw.records[-1]
    assert (rec.llm_id, rec.target, rec.attempts) == ("route:chat", B, 2)


def test_pass_through_route_skips_a_target_its_breaker_took_out(gw):
    gw.a.faults = FaultPlan(schedule=["503"])
    try:
        first = post(gw, "route:guarded")  # a fails once: its breaker (failures: 1) opens
    finally:
        gw.a.faults = None
    assert first.status_code == 200 and first.headers["x-mesh-llm"] == B
    seen = len(gw.a.requests)
    r = post(gw, "route:guarded")
    assert r.status_code == 200 and r.headers["x-mesh-llm"] == B and r.headers["x-mesh-attempts"] == "2"
    assert len(gw.a.requests) == seen  # skipped, not sent
    route = gw.app.mesh.get_llm("route:guarded").route
    assert route.breakers[0].state() == "open" and route.inflight == [0, 0]


def test_pass_through_route_stream(gw):
    gw.a.faults = FaultPlan(schedule=["refuse"])
    try:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=10,
                          json={"model": "route:chat", "stream": True,
                                "messages": [{"role": "user", "content": "one two"}]}) as r:
            text = "".join(r.iter_text())
            assert r.status_code == 200 and r.headers["x-mesh-llm"] == B
    finally:
        gw.a.faults = None
    assert '"model":"route:chat"' in text and "[DONE]" in text


def test_translated_route_falls_back(gw):
    mesh = gw.app.mesh
    assert forward_plan(mesh.get_llm("route:mixed")) is None  # a scripted target: no pass-through
    mesh.connection("fake").script(error=ServerError("down", status=502))
    r = post(gw, "route:mixed")
    assert r.status_code == 200 and r.headers["x-mesh-llm"] == A and r.headers["x-mesh-attempts"] == "2"
    mesh.connection("fake").script(error=ServerError("down", status=502))
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=10,
                      json={"model": "route:mixed", "stream": True,
                            "messages": [{"role": "user", "content": "x"}]}) as r:
        "".join(r.iter_text())
        assert r.headers["x-mesh-llm"] == A


def test_sticky_by_user_and_header(gw):
    for user in ("alice", "bob", "carol"):
        seen = {post(gw, "route:split", user=user).headers["x-mesh-llm"] for _ in range(8)}
        assert len(seen) == 1
    seen = {post(gw, "route:split", headers={"x-mesh-sticky-key": "k1"}).headers["x-mesh-llm"] for _ in range(8)}
    assert len(seen) == 1


def test_all_failed_is_the_upstream_error(gw):
    gw.a.faults = FaultPlan(schedule=["429; retry_after=7"])
    gw.b.faults = FaultPlan(schedule=["429; retry_after=7"])
    try:
        r = post(gw, "route:chat")
    finally:
        gw.a.faults = gw.b.faults = None
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.headers["x-mesh-attempts"] == "2" and "x-mesh-llm" not in r.headers  # no target answered
    rec = gw.records[-1]
    assert (rec.status, rec.target, rec.attempts) == (429, None, 2)


def test_embeddings_route_on_the_pass_through(gw):
    gw.a.faults = FaultPlan(schedule=["500"])
    try:
        r = httpx.post(gw.url + "/v1/embeddings", json={"model": "route:emb", "input": ["a", "b"]}, timeout=10)
    finally:
        gw.a.faults = None
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2 and r.json()["model"] == "route:emb"
    assert r.headers["x-mesh-llm"] == "openai_compatible:b:e" and r.headers["x-mesh-attempts"] == "2"
    assert gw.b.last_request.json["model"] == "e"
