"""The usage and cost ledger: a row per call (sync, async, streamed, failed, refused; library and
gateway pass-through), priced from genai-prices or the config's overrides (unknown: NULL), written
off the request path, surviving a crash; and ``mesh usage`` reading it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from langchain_mesh import Mesh
from langchain_mesh.cli import main as cli_main
from langchain_mesh.errors import RateLimitError, RateLimitExceeded
from langchain_mesh.policies.scope import call_scope
from langchain_mesh.schema import CompletionRequest, EmbeddingRequest, Message
from langchain_mesh.usage.report import totals

ROOT = Path(__file__).resolve().parents[1]
CHAT, EMB = "scripted:fake:chat", "scripted:fake:emb"
FAKE = {"fake": {"type": "scripted", "models": [{"id": "chat"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}}


def _req(text: str = "what is a haiku") -> CompletionRequest:
    return CompletionRequest(messages=[Message(role="user", content=text)])


def _rows_once_made(path: Path) -> list[dict]:
    """:func:`_rows`, or none while the writer process has not made the table yet."""
    try:
        return _rows(path)
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        return []


def _rows(path: Path) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM mesh_usage ORDER BY ts")]
    finally:
        db.close()


def test_rows_for_sync_async_stream_failed_and_refused_calls(tmp_path):
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db)},
                 "limits": {"period": 60, "keys": {"capped": {"rpm": 0}}}})
    chat, emb = mesh.get_llm(CHAT), mesh.get_llm(EMB)
    conn = mesh.connection("fake")
    with call_scope(key="k1", user="alice", team="search"):
        sync = mesh.complete(chat, _req())
        asyncio.run(mesh.acomplete(chat, _req("two words")))
        footer = list(mesh.stream(chat, _req("stream me please")))[-1]

        async def astream():
            return [ev async for ev in mesh.astream(chat, _req("and async"))][-1]
        afooter = asyncio.run(astream())
        mesh.embed(emb, EmbeddingRequest(texts=["a b c"]))
        conn.script(error=RateLimitError("slow down", status=429))
        with pytest.raises(RateLimitError):
            mesh.complete(chat, _req())
        it = mesh.stream(chat, _req("one two three four five six"))
        next(it)
        it.close()  # the caller stops early
        assert mesh.count_tokens(chat, _req()) > 0  # not a call to record
    with call_scope(key="capped"), pytest.raises(RateLimitExceeded):
        mesh.complete(chat, _req())
    mesh.close()  # flushes

    rows = _rows(db)
    assert [(r["op"], r["status"]) for r in rows] == [
        ("complete", "ok"), ("complete", "ok"), ("stream", "ok"), ("stream", "ok"), ("embed", "ok"),
        ("complete", "error"), ("stream", "cancelled"), ("complete", "refused")]
    first = rows[0]
    assert (first["api_key"], first["user_name"], first["team"], first["llm_id"], first["target"]) == (
        "k1", "alice", "search", CHAT, CHAT)
    assert (first["input_tokens"], first["output_tokens"]) == (sync.usage.input_tokens, sync.usage.output_tokens)
    assert (rows[2]["input_tokens"], rows[2]["output_tokens"]) == (footer.usage.input_tokens, footer.usage.output_tokens)
    assert rows[3]["output_tokens"] == afooter.usage.output_tokens
    assert rows[5]["error"] == "RateLimitError" and rows[5]["input_tokens"] is None
    assert rows[7]["error"] == "RateLimitExceeded" and rows[7]["api_key"] == "capped"
    assert all(r["latency_ms"] >= 0 and r["currency"] == "USD" for r in rows)
    # the scripted model has no price anywhere: unknown, never 0
    assert all(r["cost"] is None for r in rows)
    assert sync.meta.cost is None and footer.meta.cost is None and sync.meta.currency == "USD"
    assert totals(str(db), by=())[0]["unpriced"] == 5


def test_cost_from_the_price_table_and_from_overrides(tmp_path, openai_server):
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": {
        "oa": {"type": "openai", "api_key": "test-key", "base_url": openai_server.base_url, "max_retries": 0,
               "models": [{"id": "gpt-4o-mini"}, {"id": "gpt-4o"}]}, **FAKE},
        "usage": {"path": str(db)},
        "prices": {"gpt-4o": {"input": 1.0, "output": 3.0}, CHAT: {"input": 0.5, "output": 0.25}}})
    mini_resp = mesh.complete(mesh.get_llm("openai:oa:gpt-4o-mini"), _req())
    mini = mini_resp.usage
    big = mesh.complete(mesh.get_llm("openai:oa:gpt-4o"), _req()).usage
    fake = mesh.complete(mesh.get_llm(CHAT), _req()).usage
    mesh.close()
    from genai_prices import Usage, calc_price

    table = float(calc_price(Usage(input_tokens=mini.input_tokens, output_tokens=mini.output_tokens),
                             model_ref="gpt-4o-mini", provider_id="openai").total_price)
    rows = _rows(db)
    assert table > 0
    assert rows[0]["cost"] == pytest.approx(table)  # the dataset's price
    assert mini_resp.meta.cost == pytest.approx(table) and mini_resp.meta.currency == "USD"  # on the answer too
    assert rows[1]["cost"] == pytest.approx((big.input_tokens * 1.0 + big.output_tokens * 3.0) / 1e6)  # by model
    assert rows[2]["cost"] == pytest.approx((fake.input_tokens * 0.5 + fake.output_tokens * 0.25) / 1e6)  # by LLM id


def test_a_crash_loses_at_most_the_unflushed_tail_and_the_file_stays_sound(tmp_path):
    db = tmp_path / "usage.db"
    script = textwrap.dedent(f"""
        import os, sys
        from langchain_mesh import Mesh
        from langchain_mesh.schema import CompletionRequest, Message
        from langchain_mesh.usage.ledger import ledger_for
        mesh = Mesh({{"connections": {FAKE!r}, "usage": {{"path": {str(db)!r}, "flush_interval": 5.0}}}})
        llm = mesh.get_llm("{CHAT}")
        req = CompletionRequest(messages=[Message(role="user", content="hi")])
        for _ in range(50):
            mesh.complete(llm, req)
        ledger_for(mesh).flush()
        for _ in range(30):
            mesh.complete(llm, req)
        print("flushed", flush=True)
        os._exit(3)   # no close, no flush, no atexit: a crash
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 3 and "flushed" in out.stdout, out.stderr[-2000:]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n = con.execute("SELECT COUNT(*) FROM mesh_usage").fetchone()[0]
    con.close()
    assert 50 <= n <= 80  # the flushed rows all there; at most the 30 unflushed ones lost
    # and the ledger goes on in the same file afterwards
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db)}})
    mesh.complete(mesh.get_llm(CHAT), _req())
    mesh.close()
    assert len(_rows(db)) == n + 1


def test_mesh_usage_prints_totals_by_key_llm_and_day(tmp_path, capsys):
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db)}, "prices": {CHAT: {"input": 1.0, "output": 1.0}}})
    for key, n in (("a", 2), ("b", 3)):
        with call_scope(key=key):
            for _ in range(n):
                mesh.complete(mesh.get_llm(CHAT), _req())
    mesh.embed(mesh.get_llm(EMB), EmbeddingRequest(texts=["x y"]))
    mesh.close()
    assert cli_main(["usage", "--db", str(db), "--by", "key", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["key"], r["requests"]) for r in rows] == [(None, 1), ("a", 2), ("b", 3)]
    assert rows[1]["cost"] == pytest.approx((rows[1]["input_tokens"] + rows[1]["output_tokens"]) / 1e6)
    assert rows[0]["cost"] is None and rows[0]["unpriced"] == 1  # the embedding model has no price
    assert cli_main(["usage", "--db", str(db), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("key,llm,day,requests,")
    assert len(lines) == 4 and any(line.startswith(f"b,{CHAT},") and ",3," in line for line in lines)
    assert cli_main(["usage", "--db", str(db), "--by", "llm"]) == 0
    table = capsys.readouterr().out
    assert CHAT in table and "unknown" in table  # the unpriced embedding model's cost
    assert cli_main(["usage", "--db", str(db), "--by", "colour"]) == 2


def test_sqlalchemy_url_instead_of_the_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    mesh = Mesh({"connections": FAKE, "usage": {"url": url, "path": "unused.db"}})
    with call_scope(key="sa"):
        mesh.complete(mesh.get_llm(CHAT), _req())
    mesh.close()
    assert totals(mesh.config.usage, by=("key",))[0]["key"] == "sa"
    assert not Path("unused.db").exists()


# ---- the gateway's pass-through path keeps limits and the ledger ----------------------------------------


def test_gateway_pass_through_is_limited_and_recorded(tmp_path, openai_server):
    pytest.importorskip("uvicorn")
    import httpx
    from test_server_harness import RunningServer

    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": {"vllm": {"type": "openai_compatible", "base_url": openai_server.base_url,
                                          "api_key": "test-key", "max_retries": 0, "models": [{"id": "qwen"}]}},
                 "server": {"api_keys": [{"name": "gw", "key": "sk-gw-0123456789", "user": "carol", "team": "t1"}]},
                 "usage": {"path": str(db)},
                 "limits": {"period": 60, "keys": {"gw": {"rpm": 3, "tpm": 100000}}}})
    llm = mesh.get_llm("openai_compatible:vllm:qwen")
    assert mesh.passthrough(llm) is not None  # limits and ledger keep the byte pass-through
    head = {"authorization": "Bearer sk-gw-0123456789"}
    body = {"model": llm.id, "messages": [{"role": "user", "content": "hello"}]}
    with RunningServer(mesh) as srv:
        r1 = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=head, timeout=10)
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**body, "stream": True,
                          "stream_options": {"include_usage": True}}, headers=head, timeout=10) as r2:
            chunks = [json.loads(line[6:]) for line in r2.iter_lines() if line.startswith("data: {")]
        r3 = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=head, timeout=10)
        r4 = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=head, timeout=10)
    assert (r1.status_code, r2.status_code, r3.status_code, r4.status_code) == (200, 200, 200, 429), r1.text
    assert r4.json()["error"]["code"] == "rate_limit_exceeded"
    assert r4.headers["x-ratelimit-limit-requests"] == "3" and r4.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(r4.headers["retry-after"]) <= 60 and r4.headers["x-ratelimit-reset-tokens"]
    assert int(r4.headers["x-ratelimit-remaining-tokens"]) == 100000 - sum(
        u["prompt_tokens"] + u["completion_tokens"] for u in (r1.json()["usage"], chunks[-1]["usage"],
                                                               r3.json()["usage"]))  # reconciled, stream too
    rows = _rows(db)
    assert [(r["op"], r["status"]) for r in rows] == [("forward", "ok")] * 3 + [("forward", "refused")]
    assert (rows[0]["api_key"], rows[0]["user_name"], rows[0]["team"]) == ("gw", "carol", "t1")
    assert rows[0]["input_tokens"] == r1.json()["usage"]["prompt_tokens"]
    assert rows[1]["output_tokens"] == chunks[-1]["usage"]["completion_tokens"]  # the stream's, from its end


def test_under_mesh_serve_no_thread_writes_the_rows(tmp_path, openai_server):
    """No writer thread competes with the serving loop for the GIL: the loop hands the queued rows to the
    writer process on its own timer (nothing flushed, nothing closed yet), and a flush from another
    thread is handed to the loop."""
    pytest.importorskip("uvicorn")
    import threading
    import time

    import httpx
    from test_server_harness import RunningServer

    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": {"vllm": {"type": "openai_compatible", "base_url": openai_server.base_url,
                                          "api_key": "test-key", "max_retries": 0, "models": [{"id": "qwen"}]}},
                 "usage": {"path": str(db), "flush_interval": 0.05}})
    body = {"model": "openai_compatible:vllm:qwen", "messages": [{"role": "user", "content": "hello"}]}
    with RunningServer(mesh) as srv:
        for _ in range(3):
            assert httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        assert "mesh-usage-ledger" not in {t.name for t in threading.enumerate()}
        deadline = time.monotonic() + 10
        while len(_rows_once_made(db)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r["status"] for r in _rows(db)] == ["ok"] * 3
        mesh._ledger.config.flush_interval = 3600  # once the timer set before has run, only a flush writes
        time.sleep(0.2)
        assert httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        mesh._ledger.flush()
        assert len(_rows(db)) == 4


def test_the_writer_process_prices_the_gateways_llms_as_it_starts(tmp_path, monkeypatch, caplog):
    """The first price lookup imports the price dataset (~0.1 s of CPU): the writer process does it as it
    starts, for the LLMs mesh serve names (Ledger.run_on's warm), not on the first rows under load; a
    lookup that fails is logged and the writer goes on."""
    import os

    from langchain_mesh.usage import writer_main
    from langchain_mesh.usage.ledger import Rows
    from langchain_mesh.usage.writer import _frame

    priced = []

    def price(self, target):
        priced.append(target)
        if target == "broken:x:y":
            raise RuntimeError("no dataset")
        return None
    monkeypatch.setattr(Rows, "price", price)
    r, w = os.pipe()
    os.write(w, _frame("config", {"path": str(tmp_path / "u.db"), "url": None, "flush_interval": 1.0, "batch": 10,
                                  "currency": "USD", "prices": {}, "warm": ["openai:a:gpt-4o", "broken:x:y"]}))
    os.close(w)  # no rows: the writer prices the LLMs, reads EOF and ends
    monkeypatch.setattr(writer_main.sys, "stdin", open(r, "rb"))
    with caplog.at_level("WARNING", logger="langchain_mesh.usage"):
        writer_main.main()
    assert priced == ["openai:a:gpt-4o", "broken:x:y"]
    assert "could not look up the price of broken:x:y" in caplog.text


def test_mesh_serve_names_its_llms_but_not_its_routes_to_the_writer(tmp_path):
    pytest.importorskip("uvicorn")
    from test_server_harness import RunningServer

    mesh = Mesh({"connections": FAKE, "routes": {"r": {"targets": [CHAT]}},
                 "usage": {"path": str(tmp_path / "usage.db")}})
    with RunningServer(mesh):
        warm, ids = mesh._ledger._proc.settings["warm"], [i.id for i in mesh.list_llms()]
        assert "route:r" in ids and sorted(warm) == sorted(i for i in ids if i != "route:r") and CHAT in warm


def test_a_routes_target_calls_are_not_recorded_twice(tmp_path):
    """A route calls its target through the target's own chain under scope.extra["route"]: the
    route's own call is the one row (with the target that answered)."""
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db)}})
    with call_scope(key="k", extra={"route": "my-route"}):
        mesh.complete(mesh.get_llm(CHAT), _req())
    with call_scope(key="k"):
        mesh.complete(mesh.get_llm(CHAT), _req())
    mesh.close()
    assert len(_rows(db)) == 1


def test_many_rows_in_one_flush_are_all_written_in_order(tmp_path):
    """The writer packs rows into multi-row INSERTs (50 a statement) and ``usage.batch`` a transaction:
    a flush of a count that is neither is written whole, each row as recorded."""
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db), "flush_interval": 60, "batch": 70}})
    chat = mesh.get_llm(CHAT)
    for i in range(123):
        with call_scope(key=f"k{i}"):
            mesh.complete(chat, _req("word " * (i % 7 + 1)))
    mesh.close()
    rows = _rows(db)
    assert [r["api_key"] for r in rows] == [f"k{i}" for i in range(123)]
    assert all(r["status"] == "ok" and r["input_tokens"] > 0 for r in rows)


# ---- mesh serve: a writer process writes the rows ---------------------------------------------------------


def test_rows_handed_to_the_writer_process_survive_the_gateway_dying(tmp_path):
    """Under mesh serve the loop hands rows to a writer process (usage/writer.py); a gateway that dies
    after handing them over (no close, no flush) loses none of them: the writer sees the pipe close,
    writes them, priced, and exits."""
    db = tmp_path / "usage.db"
    script = textwrap.dedent(f"""
        import asyncio, os
        from langchain_mesh import Mesh
        from langchain_mesh.policies.scope import call_scope
        from langchain_mesh.schema import CompletionRequest, Message
        from langchain_mesh.usage.ledger import ledger_for
        mesh = Mesh({{"connections": {FAKE!r}, "usage": {{"path": {str(db)!r}, "flush_interval": 60}},
                     "prices": {{"{CHAT}": {{"input": 2.0, "output": 4.0}}}}}})
        llm = mesh.get_llm("{CHAT}")
        req = CompletionRequest(messages=[Message(role="user", content="hi there")])

        async def main():
            led = ledger_for(mesh)
            assert led.run_on(asyncio.get_running_loop())
            print("writer", led._proc.proc.pid, flush=True)
            with call_scope(key="k"):
                for _ in range(30):  # the translated path: a Usage, priced on the call
                    await mesh.acomplete(llm, req)
            for i in range(20):  # the pass-through's wire usage, priced by the writer
                led.record(1.7e9 + i, "p", None, None, "{CHAT}", None, "forward",
                           {{"prompt_tokens": 10, "completion_tokens": 5,
                             "prompt_tokens_details": {{"cached_tokens": 2}}}}, 0.01, "ok", None)
            led._tick()  # hands them over now
            os._exit(3)   # a crash: the loop never runs again
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 3 and "writer" in out.stdout, out.stderr[-2000:]
    pid = int(out.stdout.split()[1])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = _rows(db)
    assert len(rows) == 50
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    called = [r for r in rows if r["api_key"] == "k"]
    assert len(called) == 30 and all(r["op"] == "complete" and r["input_tokens"] > 0 for r in called)
    assert called[0]["cost"] == pytest.approx((called[0]["input_tokens"] * 2 + called[0]["output_tokens"] * 4) / 1e6)
    wire = [r for r in rows if r["api_key"] == "p"]
    assert [(r["input_tokens"], r["output_tokens"], r["cached_tokens"]) for r in wire] == [(10, 5, 2)] * 20
    assert wire[0]["cost"] == pytest.approx((10 * 2 + 5 * 4) / 1e6)  # priced by the writer, from the overrides


def test_a_writer_process_that_dies_is_replaced_and_says_what_was_lost(tmp_path, caplog):
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db), "flush_interval": 60}})
    chat = mesh.get_llm(CHAT)

    async def main():
        from langchain_mesh.usage.ledger import ledger_for

        led = ledger_for(mesh)
        assert led.run_on(asyncio.get_running_loop())
        await mesh.acomplete(chat, _req())
        led.flush()
        assert len(_rows(db)) == 1
        first = led._proc.proc
        first.kill()
        first.wait()
        with caplog.at_level("ERROR", logger="langchain_mesh.usage"):
            await mesh.acomplete(chat, _req())
            led._tick()  # the pipe is broken: a new writer starts
            await mesh.acomplete(chat, _req())
            led.flush()
        assert led._proc.proc.pid != first.pid
        mesh.close()
        led.flush(timeout=5)  # after close: nothing to hand over, and no writer started again
        assert led._proc is None

    asyncio.run(main())
    assert "writer process ended" in caplog.text and "1 queued rows lost; starting a new one" in caplog.text
    assert len(_rows(db)) == 2  # the row sent into the dead pipe is lost (and said so), the later one is not


def test_the_writer_process_writes_to_a_sqlalchemy_url_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    mesh = Mesh({"connections": FAKE, "usage": {"url": url, "path": str(tmp_path / "unused.db")}})

    async def main():
        from langchain_mesh.usage.ledger import ledger_for

        led = ledger_for(mesh)
        assert led.run_on(asyncio.get_running_loop())
        with call_scope(key="sa-served"):
            await mesh.acomplete(mesh.get_llm(CHAT), _req())
        led.flush()
        mesh.close()

    asyncio.run(main())
    assert totals(mesh.config.usage, by=("key",))[0]["key"] == "sa-served"
    assert not (tmp_path / "unused.db").exists()


def test_values_marshal_refuses_reach_the_writer_process_as_their_base_types(tmp_path):
    """Rows go to the writer process by marshal, which refuses instances of subclasses of str (an
    enum's value, a library's own string type): WriterProcess.send hands those over as plain str."""
    import marshal

    class Name(str):
        pass

    with pytest.raises(ValueError):
        marshal.dumps(Name("x"))  # (what the fallback is for)
    db = tmp_path / "usage.db"
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(db)}})

    async def main():
        from langchain_mesh.usage.ledger import ledger_for

        led = ledger_for(mesh)
        assert led.run_on(asyncio.get_running_loop())
        with call_scope(key=Name("subclassed-key"), team=Name("a-team")):
            await mesh.acomplete(mesh.get_llm(CHAT), _req())
        with call_scope(key="plain-key"):
            await mesh.acomplete(mesh.get_llm(CHAT), _req())
        led.flush()
        mesh.close()

    asyncio.run(main())
    rows = sqlite3.connect(db).execute("SELECT api_key, team FROM mesh_usage ORDER BY rowid").fetchall()
    assert rows == [("subclassed-key", "a-team"), ("plain-key", None)]


def test_a_writer_process_that_cannot_open_its_database_says_so_once_and_the_gateway_goes_on(tmp_path, capfd):
    mesh = Mesh({"connections": FAKE, "usage": {"path": str(tmp_path / "no-such-dir" / "usage.db")}})

    async def main():
        from langchain_mesh.usage.ledger import ledger_for

        led = ledger_for(mesh)
        assert led.run_on(asyncio.get_running_loop())
        proc = led._proc.proc
        for _ in range(3):
            await mesh.acomplete(mesh.get_llm(CHAT), _req())
            led.flush(timeout=10)
        assert led._proc.proc is proc and proc.poll() is None  # not restarted: it reads on, writing nowhere
        mesh.close()

    asyncio.run(main())
    err = capfd.readouterr().err
    assert err.count("the usage ledger cannot open its database") == 1 and "unrecorded" in err


def test_rows_of_every_shape_are_written_as_recorded_and_in_order(tmp_path):
    """The SQLite sink writes runs of rows of one shape together, with their NULLs in the statement
    rather than bound: rows whose missing values differ, interleaved, come back as recorded, in order."""
    from langchain_mesh.usage.ledger import COLUMNS, TABLE, _SQLite

    sink = _SQLite(str(tmp_path / "u.db"))
    base = (1796000000.5, "2026-12-01", "k", "u", "t", "llm", "target", "complete", 10, 5, 2, 1, 1.5, "ok", None,
            0.25, "USD")
    rows = []
    for i in range(130):  # every few rows another column is missing; runs of 1 to 60 rows
        row = list(base)
        row[0] += i
        for col in (3, 4, 10, 11, 15)[: (i // 7) % 6]:
            row[col] = None
        if i % 60 == 59:
            row[14] = "ProviderError"
        rows.append(tuple(row))
    sink.write(rows)
    got = sink.db.execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY rowid").fetchall()
    assert got == rows
    sink.close()
