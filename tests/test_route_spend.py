"""A route's calls are recorded once and priced as the target that answered them (ledger and budgets)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from langchain_mesh import Mesh
from langchain_mesh.errors import BudgetExceeded
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.schema import CompletionRequest, Message

pytest.importorskip("limits")

CHEAP, DEAR = "scripted:a:chat", "scripted:b:chat"
CONNECTIONS = {"a": {"type": "scripted", "models": [{"id": "chat"}]},
               "b": {"type": "scripted", "models": [{"id": "chat"}]}}
PRICES = {CHEAP: {"input": 1.0, "output": 2.0}, DEAR: {"input": 50.0, "output": 100.0}}


def _mesh(tmp_path, prices=PRICES, budget=100.0):
    return Mesh({"connections": CONNECTIONS, "routes": {"r": {"targets": [CHEAP, DEAR]}}, "prices": prices,
                 "budgets": {"keys": {"k": budget}}, "usage": {"path": str(tmp_path / "u.db")}})


def _req():
    return CompletionRequest(messages=[Message(role="user", content="hi there")])


def _spent(mesh):
    got = mesh.state_store().get(f"budget:key:k:{int(time.time() // (30 * 86400))}")
    return float(got or 0.0)


def test_route_calls_spend_and_record_the_target_that_answered(tmp_path):
    mesh = _mesh(tmp_path)
    route = mesh.get_llm("route:r")
    with call_scope(key="k"):
        resp = mesh.complete(route, _req())
        events = list(mesh.stream(route, _req()))
        aresp = asyncio.run(mesh.acomplete(route, _req()))

        async def astream():
            return [ev async for ev in mesh.astream(route, _req())]
        aevents = asyncio.run(astream())
    u = resp.usage
    one = (u.input_tokens * 1.0 + u.output_tokens * 2.0) / 1e6  # the cheap target's price, not the dear one
    for meta in (resp.meta, events[-1].meta, aresp.meta, aevents[-1].meta):
        assert meta.llm_id == CHEAP and meta.cost == pytest.approx(one)
    assert _spent(mesh) == pytest.approx(4 * one)
    mesh.close()
    db = sqlite3.connect(tmp_path / "u.db")
    rows = db.execute("SELECT llm_id, target, cost FROM mesh_usage ORDER BY ts").fetchall()
    db.close()
    # one row per call: the target's own calls under the route are not recorded again
    assert rows == [("route:r", CHEAP, pytest.approx(one))] * 4


def test_a_route_with_an_unpriced_target_cannot_be_budgeted(tmp_path):
    mesh = _mesh(tmp_path, prices={CHEAP: PRICES[CHEAP]})
    with call_scope(key="k"), pytest.raises(BudgetExceeded, match="no known price"):
        mesh.complete(mesh.get_llm("route:r"), _req())
    mesh.close()


def test_a_route_is_checked_against_its_dearest_target_before_the_call(tmp_path):
    # the estimate of "hi there" at the dear target's input price passes a cap the cheap one would not
    mesh = _mesh(tmp_path, budget=1e-6)
    with call_scope(key="k"), pytest.raises(BudgetExceeded, match="used up"):
        mesh.complete(mesh.get_llm("route:r"), _req())
    mesh.close()
