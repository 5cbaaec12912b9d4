"""Per-call overhead of the mesh: the builder + registry path next to calling the connection directly.

The connection here is a trivial one registered in this script (``register_connection_type``): it
returns prebuilt responses, so the "direct" column is the cost of a method call and the difference
between the columns is the mesh's own work (building and validating the request, dispatch, the
stream's footer guard).

    python bench/overhead.py [--iterations 20000] [--repeat 5]
    python bench/overhead.py --local      # also the real local models of the embedded default

With ``--local``, the same comparison runs on SmolLM2-135M-Instruct (maxOutputTokens=8) and
all-MiniLM-L6-v2, few iterations: there the overhead is a share of a real call.

The ``openai`` section (``--openai``; run by default when the openai SDK is importable) starts the
local OpenAI server (``python -m langchain_mesh.testing.openai``) as a separate process, so that it
does not share our GIL, and times real HTTP calls to it: the ``openai`` SDK called directly, the
mesh builder on the ``openai`` connection, ``MeshChatModel``, and where installed
``langchain_openai.ChatOpenAI`` and ``litellm`` (``pip install 'langchain-mesh[bench]'``): the
median latency of a call, and the median time to the first content chunk of a stream. The
contenders take turns in every round (in a shuffled order), so machine noise hits them all alike;
the ratio column divides each median by the SDK's.

    python bench/overhead.py --openai-only [--openai-rounds 300]

The ``anthropic`` section (``--anthropic``; run by default when the anthropic SDK is importable)
does the same with the local Anthropic Messages API server (``python -m
langchain_mesh.testing.anthropic``): the ``anthropic`` SDK's ``messages.create`` called directly,
the mesh builder on the ``anthropic`` connection, ``MeshChatModel``, and where installed
``langchain_anthropic.ChatAnthropic`` and ``litellm``.

    python bench/overhead.py --anthropic-only [--anthropic-rounds 300]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT))

from langchain_mesh import Connection, Mesh, register_connection_type  # noqa: E402
from langchain_mesh.schema import (  # noqa: E402
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    ModelInfo,
    Purpose,
    StreamChunk,
    StreamEvent,
    StreamFooter,
    Usage,
    validate_settings,
)

_RESPONSE = CompletionResponse(text="Paris", finish_reason="stop", usage=Usage(input_tokens=8, output_tokens=1))
_CHUNKS = [StreamChunk(text=w) for w in ("The ", "capital ", "is ", "Paris.")]
_FOOTER = StreamFooter(finish_reason="stop", usage=Usage(input_tokens=8, output_tokens=4))
_EMBEDDING = EmbeddingResponse(embeddings=[[0.0] * 384])


class FixedConnection(Connection):
    """Answers every call with the same prebuilt objects: isolates the mesh's own cost."""

    def default_models(self) -> list[ModelInfo]:
        return [ModelInfo(id="chat", purposes=[Purpose.GENERIC_COMPLETION]),
                ModelInfo(id="emb", purposes=[Purpose.TEXT_EMBEDDING_EXTRACTION])]

    def complete(self, model: str, request: CompletionRequest) -> CompletionResponse:
        return _RESPONSE

    def stream(self, model: str, request: CompletionRequest) -> Iterator[StreamEvent]:
        yield from _CHUNKS
        yield _FOOTER

    def embed(self, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        return _EMBEDDING


def compare(direct: Callable[[], Any], mesh: Callable[[], Any], iterations: int,
            repeat: int) -> tuple[float, float]:
    """Best per-call seconds of each path, timed in alternation so that load on the machine hits both."""
    direct()  # warm caches (handles, connection, pydantic validators)
    mesh()
    gc.collect()
    best_direct = best_mesh = float("inf")
    for _ in range(repeat):
        best_direct = min(best_direct, timeit.timeit(direct, number=iterations) / iterations)
        best_mesh = min(best_mesh, timeit.timeit(mesh, number=iterations) / iterations)
    return best_direct, best_mesh


def print_table(title: str, rows: list[tuple[str, tuple[float, float]]]) -> None:
    unit, scale = ("µs", 1e6) if max(m for _, (_, m) in rows) < 1e-3 else ("ms", 1e3)
    print(f"\n{title}")
    w = max(len(r[0]) for r in rows)
    heads = (f"direct {unit}", f"mesh {unit}", f"overhead {unit}", "mesh/direct")
    print(f"{'case':<{w}}  {heads[0]:>11}  {heads[1]:>11}  {heads[2]:>11}  {heads[3]:>11}")
    print("-" * (w + 54))
    for name, (direct, mesh) in rows:
        print(f"{name:<{w}}  {direct * scale:11.2f}  {mesh * scale:11.2f}  {(mesh - direct) * scale:11.2f}  "
              f"{mesh / direct:11.2f}")


def bench_fixed(iterations: int, repeat: int) -> None:
    register_connection_type("bench-fixed", FixedConnection)
    mesh = Mesh.from_config({"connections": {"fixed": {"type": "bench-fixed"}}})
    llm = mesh.get_llm("bench-fixed:fixed:chat")
    emb = mesh.get_llm("bench-fixed:fixed:emb")
    conn = mesh.connection("fixed")

    request = CompletionRequest(messages=[Message(role="user", content="What is the capital of France?")])
    settings = {"temperature": 0.2, "maxOutputTokens": 64, "stopSequences": ["\n"]}
    request_with_settings = CompletionRequest(messages=request.messages, settings=validate_settings(settings))
    emb_request = EmbeddingRequest(texts=["The quick brown fox"])

    def mesh_complete() -> Any:
        return llm.new_completion().with_message("What is the capital of France?").execute()

    def mesh_complete_lookup() -> Any:
        return mesh.get_llm("bench-fixed:fixed:chat").new_completion().with_message(
            "What is the capital of France?").execute()

    def mesh_complete_settings() -> Any:
        c = llm.new_completion().with_message("What is the capital of France?")
        c.settings.update(settings)
        return c.execute()

    def mesh_stream() -> Any:
        return list(llm.new_completion().with_message("What is the capital of France?").execute_streamed())

    def mesh_embed() -> Any:
        return emb.new_embeddings().add_text("The quick brown fox").execute()

    n, r = iterations, repeat
    rows = [
        ("complete", compare(lambda: conn.complete("chat", request), mesh_complete, n, r)),
        ("complete, get_llm(id) each call", compare(lambda: conn.complete("chat", request), mesh_complete_lookup, n, r)),
        ("complete + 3 settings",
         compare(lambda: conn.complete("chat", request_with_settings), mesh_complete_settings, n, r)),
        ("stream (4 chunks + footer)", compare(lambda: list(conn.stream("chat", request)), mesh_stream, n, r)),
        ("embed (1 text)", compare(lambda: conn.embed("emb", emb_request), mesh_embed, n, r)),
    ]
    print_table(f"Trivial in-script connection: mesh overhead per call "
                f"(best of {repeat} x {iterations} calls)", rows)
    bench_langchain(mesh, conn, request, max(iterations // 10, 100), repeat)


def bench_langchain(mesh: Mesh, conn: Any, request: CompletionRequest, iterations: int, repeat: int) -> None:
    """MeshChatModel.invoke against the connection called directly, and the message conversion alone."""
    if importlib.util.find_spec("langchain_core") is None:
        print("\nlangchain-core is not installed; MeshChatModel rows skipped")
        return
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from langchain_mesh.langchain import MeshChatModel
    from langchain_mesh.langchain.convert import to_mesh_messages

    chat = MeshChatModel(model="bench-fixed:fixed:chat", mesh=mesh)
    fake = FakeListChatModel(responses=["Paris"])
    conversation = [
        SystemMessage("You answer briefly."),
        HumanMessage("What is 3 * 6?"),
        AIMessage("", tool_calls=[{"name": "multiply", "args": {"a": 3, "b": 6}, "id": "call_1"}]),
        ToolMessage("18", tool_call_id="call_1"),
        HumanMessage("And the capital of France?"),
    ]
    five = CompletionRequest(messages=to_mesh_messages(conversation))
    rows = [
        ("MeshChatModel.invoke(str)", compare(lambda: conn.complete("chat", request),
                                              lambda: chat.invoke("What is the capital of France?"), iterations, repeat)),
        ("MeshChatModel.invoke(5 messages)", compare(lambda: conn.complete("chat", five),
                                                     lambda: chat.invoke(conversation), iterations, repeat)),
        # LangChain's own fake chat model: the floor any BaseChatModel pays for callbacks and run trees
        ("vs LangChain FakeListChatModel.invoke", compare(lambda: fake.invoke("What is the capital of France?"),
                                                          lambda: chat.invoke("What is the capital of France?"),
                                                          iterations, repeat)),
        ("message conversion only (5 messages)", compare(lambda: None, lambda: to_mesh_messages(conversation),
                                                         iterations, repeat)),
    ]
    print_table(f"LangChain face: MeshChatModel vs the connection called directly "
                f"(best of {repeat} x {iterations} calls; 'direct' is the connection call, LangChain's fake model, or an empty call)", rows)


def bench_policies(iterations: int, repeat: int) -> None:
    """The policy layers' cost: a mesh without them (the 'direct' column here) against the same mesh
    with a section present but off, tracing through the OpenTelemetry API's no-op provider, and PII
    redaction of a 2 KB prompt (input and output). Compare the first rows with the same script on a
    checkout from before the policies: ``mesh`` of the plain mesh must not move (<= 2%)."""
    register_connection_type("bench-fixed", FixedConnection)

    def make(**sections: Any) -> tuple[Mesh, Any]:
        mesh = Mesh.from_config({"connections": {"fixed": {"type": "bench-fixed"}}, **sections})
        return mesh, mesh.get_llm("bench-fixed:fixed:chat")

    plain, plain_llm = make()
    short = CompletionRequest(messages=[Message(role="user", content="What is the capital of France?")])
    # ~2 KB of ordinary prose with an e-mail address, a phone number and a card number in it
    filler = ("Our quarterly review covers revenue, churn and the roadmap for the next two releases. " * 22)
    prompt = filler[:900] + " Reach me at jane.doe@example.com or +1 415-555-2671; card 4111 1111 1111 1111. " \
        + filler[:1000]
    long = CompletionRequest(messages=[Message(role="user", content=prompt)])
    off, off_llm = make(tracing={"enabled": False}, cache={"enabled": False})
    traced, traced_llm = make(tracing={})
    pii, pii_llm = make(guardrails=[{"name": "pii", "type": "pii", "stage": "input"}])
    n, r = iterations, repeat
    rows = [
        ("complete, no policy section (= the 'complete' row above)",
         compare(lambda: plain.complete(plain_llm, short), lambda: plain.complete(plain_llm, short), n, r)),
        ("complete, tracing and cache sections present but off",
         compare(lambda: plain.complete(plain_llm, short), lambda: off.complete(off_llm, short), n, r)),
        ("complete, tracing on (no SDK provider: API no-op)",
         compare(lambda: plain.complete(plain_llm, short), lambda: traced.complete(traced_llm, short), n, r)),
        (f"complete, PII redaction of a {len(prompt)} B prompt",
         compare(lambda: plain.complete(plain_llm, long), lambda: pii.complete(pii_llm, long), max(n // 10, 200), r)),
    ]
    print_table(f"Policy layers: 'direct' = the mesh without them, 'mesh' = with (best of {repeat} runs)", rows)


def bench_local(iterations: int, repeat: int, torch_threads: Optional[int]) -> None:
    if importlib.util.find_spec("langchain_mesh.connections.huggingface_local") is None:
        print("\n--local: langchain_mesh.connections.huggingface_local is not available; skipped")
        return
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)  # on a loaded machine, fewer threads than cores is steadier
    mesh = Mesh()
    llm = mesh.get_llm("huggingfacelocal:local:SmolLM2-135M-Instruct")
    emb = mesh.get_llm("huggingfacelocal:local:all-MiniLM-L6-v2")
    conn, emb_conn = llm.connection, emb.connection
    prompt = "What is the capital of France?"
    settings = {"maxOutputTokens": 8}
    request = CompletionRequest(messages=[Message(role="user", content=prompt)], settings=validate_settings(settings))
    emb_request = EmbeddingRequest(texts=["The quick brown fox"])

    def mesh_complete() -> Any:
        c = llm.new_completion().with_message(prompt)
        c.settings.update(settings)
        return c.execute()

    def mesh_stream() -> Any:
        c = llm.new_completion().with_message(prompt)
        c.settings.update(settings)
        return list(c.execute_streamed())

    t = time.perf_counter()
    mesh_complete()
    emb.new_embeddings().add_text("warm up").execute()
    print(f"\n--local: models loaded and warmed up in {time.perf_counter() - t:.1f} s")

    n_emb = iterations * 10
    rows = [
        ("SmolLM2 complete (8 tokens)", compare(lambda: conn.complete(llm.model, request), mesh_complete,
                                                iterations, repeat)),
        ("SmolLM2 stream (8 tokens)", compare(lambda: list(conn.stream(llm.model, request)), mesh_stream,
                                              iterations, repeat)),
        ("MiniLM embed (1 text)", compare(lambda: emb_conn.embed(emb.model, emb_request),
                                          lambda: emb.new_embeddings().add_text("The quick brown fox").execute(),
                                          n_emb, repeat)),
    ]
    print_table(f"Local models: mesh overhead per call (best of {repeat} x {iterations} generations, "
                f"{repeat} x {n_emb} embeddings)", rows)
    mesh.close()


# --------------------------------------------------------------------------------------------------
# real HTTP: the openai connection against the local OpenAI server, next to the SDK and other clients

PROMPT = "What is the capital of France?"  # the server echoes it: 6 streamed content chunks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m <module> --port N`` (a local provider server) in a child process, until ``stop()``.

    It is ready once ``GET <ready_path>`` answers 200 with ``headers``.
    """

    def __init__(self, module: str, ready_path: str, headers: dict[str, str], startup_timeout: float = 30.0):
        self.module = module
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait(urllib.request.Request(self.url + ready_path, headers=headers), startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, req: urllib.request.Request, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with opener.open(req, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.module} did not answer within {timeout:.0f}s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int, warmup: int,
                settle: float = 0.001) -> dict[str, list[float]]:
    """Seconds per call of each contender; every round runs each once, in a fresh random order.

    A contender returns the seconds it measured itself (the whole call, or the time to the first
    chunk of a stream), so that draining the rest of a stream stays out of the figure. The order is
    shuffled (not rotated: a rotation keeps the same neighbours) and each call is followed by a short
    untimed pause, so that work a client leaves behind (litellm's logging threads) and the server's
    own bookkeeping do not land on whichever contender always comes next.
    """
    rng = random.Random(0)
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            times[name].append(contenders[name]())
            time.sleep(settle)
    return times


def _timed(fn: Callable[[], Any]) -> Callable[[], float]:
    def run() -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return run


def _ttft(start: Callable[[], Any], has_content: Callable[[Any], bool]) -> Callable[[], float]:
    """Time from the call to its first chunk with content; the stream is then drained (untimed)."""
    def run() -> float:
        t = time.perf_counter()
        first: Optional[float] = None
        for chunk in start():
            if first is None and has_content(chunk):
                first = time.perf_counter() - t
        if first is None:
            raise RuntimeError("the stream carried no content")
        return first
    return run


def _atimed(loop: Any, make: Callable[[], Any]) -> Callable[[], float]:
    """An async call timed on ``loop`` (one loop for every round, as in an application)."""
    async def one() -> float:
        t = time.perf_counter()
        await make()
        return time.perf_counter() - t
    return lambda: loop.run_until_complete(one())


def _attft(loop: Any, start: Callable[[], Any], has_content: Callable[[Any], bool]) -> Callable[[], float]:
    """Time from the async call to its first chunk with content; the stream is then drained (untimed)."""
    async def one() -> float:
        t = time.perf_counter()
        first: Optional[float] = None
        stream = start()
        if not hasattr(stream, "__aiter__"):  # a coroutine giving the stream (the SDK's create)
            stream = await stream
        async for chunk in stream:
            if first is None and has_content(chunk):
                first = time.perf_counter() - t
        if first is None:
            raise RuntimeError("the stream carried no content")
        return first
    return lambda: loop.run_until_complete(one())


def print_latency_table(title: str, times: dict[str, list[float]], reference: str) -> None:
    med = {name: statistics.median(ts) for name, ts in times.items()}
    w = max(len(n) for n in times)
    print(f"\n{title}")
    print(f"{'contender':<{w}}  {'median ms':>9}  {'p10 ms':>7}  {'p90 ms':>7}  {'x SDK':>6}")
    print("-" * (w + 40))
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        print(f"{name:<{w}}  {med[name] * 1e3:9.3f}  {q[0] * 1e3:7.3f}  {q[-1] * 1e3:7.3f}  "
              f"{med[name] / med[reference]:6.2f}")


def run_http_section(name: str, reference: str, invoke: dict[str, Callable[[], float]],
                     stream: dict[str, Callable[[], float]], skipped: list[str], rounds: int, warmup: int) -> None:
    """Time the contenders of one provider section and print its two tables (latency, then TTFT)."""
    note = f"; not installed: {', '.join(skipped)}" if skipped else ""
    times = interleaved(invoke, rounds, warmup)
    print_latency_table(f"{name}: latency of one chat completion, {rounds} interleaved rounds after {warmup} "
                        f"warm-up{note}", times, reference)
    times = interleaved(stream, rounds, warmup)
    print_latency_table(f"Streaming: time to the first content chunk, {rounds} interleaved rounds after "
                        f"{warmup} warm-up", times, reference)


def _add_mesh_chat_model(mesh: Mesh, llm_id: str, invoke: dict[str, Callable[[], float]],
                         stream: dict[str, Callable[[], float]], skipped: list[str]) -> None:
    if importlib.util.find_spec("langchain_core") is None:
        skipped.append("MeshChatModel (langchain-core)")
        return
    from langchain_mesh.langchain import MeshChatModel

    chat = MeshChatModel(model=llm_id, mesh=mesh)
    invoke["MeshChatModel.invoke"] = _timed(lambda: chat.invoke(PROMPT))
    stream["MeshChatModel.stream"] = _ttft(lambda: chat.stream(PROMPT), lambda c: bool(c.content))


def _add_litellm(model: str, base_url: str, invoke: dict[str, Callable[[], float]],
                 stream: dict[str, Callable[[], float]], skipped: list[str]) -> None:
    if importlib.util.find_spec("litellm") is None:
        skipped.append("litellm")
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list
    import litellm

    kw = {"model": model, "api_base": base_url, "api_key": "test-key",
          "messages": [{"role": "user", "content": PROMPT}]}
    invoke["litellm.completion"] = _timed(lambda: litellm.completion(**kw))
    stream["litellm.completion(stream=True)"] = _ttft(lambda: litellm.completion(stream=True, **kw),
                                                      lambda c: bool(c.choices and c.choices[0].delta.content))


def bench_openai(rounds: int, warmup: int) -> None:
    if importlib.util.find_spec("openai") is None:
        print("\nopenai SDK is not installed; openai rows skipped (pip install 'langchain-mesh[openai,bench]')")
        return
    import openai

    server = ServerProcess("langchain_mesh.testing.openai", "/v1/models", {"Authorization": "Bearer test-key"})
    try:
        _bench_openai(server.url + "/v1", rounds, warmup, openai)
    finally:
        server.stop()


def _bench_openai(base_url: str, rounds: int, warmup: int, openai: Any) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)
    mesh = Mesh.from_config({"connections": {"oa": {"type": "openai", "api_key": "test-key", "base_url": base_url,
                                                    "max_retries": 0}}})
    llm = mesh.get_llm("openai:oa:gpt-4o")
    invoke: dict[str, Callable[[], float]] = {
        "openai SDK direct": _timed(lambda: client.chat.completions.create(model="gpt-4o", messages=messages)),
        "mesh builder .execute()": _timed(lambda: llm.new_completion().with_message(PROMPT).execute()),
    }
    stream: dict[str, Callable[[], float]] = {
        "openai SDK direct": _ttft(lambda: client.chat.completions.create(model="gpt-4o", messages=messages,
                                                                          stream=True),
                                   lambda c: bool(c.choices and c.choices[0].delta.content)),
        "mesh builder .execute_streamed()": _ttft(lambda: llm.new_completion().with_message(PROMPT).execute_streamed(),
                                                  lambda ev: bool(getattr(ev, "text", None))),
    }
    skipped: list[str] = []
    _add_mesh_chat_model(mesh, "openai:oa:gpt-4o", invoke, stream, skipped)
    if importlib.util.find_spec("langchain_openai") is not None:
        from langchain_openai import ChatOpenAI

        lc_openai = ChatOpenAI(model="gpt-4o", base_url=base_url, api_key="test-key",  # type: ignore[arg-type]
                               max_retries=0)
        invoke["langchain_openai ChatOpenAI.invoke"] = _timed(lambda: lc_openai.invoke(PROMPT))
        stream["langchain_openai ChatOpenAI.stream"] = _ttft(lambda: lc_openai.stream(PROMPT),
                                                             lambda c: bool(c.content))
    else:
        skipped.append("ChatOpenAI (langchain-openai)")
    _add_litellm("openai/gpt-4o", base_url, invoke, stream, skipped)
    try:
        run_http_section("openai connection over HTTP to the local OpenAI server (separate process)",
                         "openai SDK direct", invoke, stream, skipped, rounds, warmup)
        _bench_openai_async(base_url, mesh, rounds, warmup, openai)
    finally:
        client.close()
        mesh.close()


def _bench_openai_async(base_url: str, mesh: Mesh, rounds: int, warmup: int, openai: Any) -> None:
    """The async calls (what an async app or agent runs): the mesh sends them over its own HTTP/1.1
    client (connections/http1.py) where httptools is installed, else over the SDK's async client."""
    import asyncio

    from langchain_mesh.connections.openai_base import lean_transport

    loop = asyncio.new_event_loop()
    messages = [{"role": "user", "content": PROMPT}]
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=0)
    llm = mesh.get_llm("openai:oa:gpt-4o")
    has_delta = lambda c: bool(c.choices and c.choices[0].delta.content)  # noqa: E731
    invoke = {"AsyncOpenAI direct": _atimed(loop, lambda: client.chat.completions.create(model="gpt-4o",
                                                                                         messages=messages)),
              "mesh builder .aexecute()": _atimed(loop, lambda: llm.new_completion().with_message(PROMPT).aexecute())}
    stream = {"AsyncOpenAI direct": _attft(loop, lambda: client.chat.completions.create(
                  model="gpt-4o", messages=messages, stream=True), has_delta),
              "mesh builder .aexecute_streamed()": _attft(
                  loop, lambda: llm.new_completion().with_message(PROMPT).aexecute_streamed(),
                  lambda ev: bool(getattr(ev, "text", None)))}
    skipped: list[str] = []
    if importlib.util.find_spec("langchain_core") is not None:
        from langchain_mesh.langchain import MeshChatModel

        chat = MeshChatModel(model="openai:oa:gpt-4o", mesh=mesh)
        invoke["MeshChatModel.ainvoke"] = _atimed(loop, lambda: chat.ainvoke(PROMPT))
        stream["MeshChatModel.astream"] = _attft(loop, lambda: chat.astream(PROMPT), lambda c: bool(c.content))
    if importlib.util.find_spec("langchain_openai") is not None:
        from langchain_openai import ChatOpenAI

        lc = ChatOpenAI(model="gpt-4o", base_url=base_url, api_key="test-key", max_retries=0)  # type: ignore[arg-type]
        invoke["langchain_openai ChatOpenAI.ainvoke"] = _atimed(loop, lambda: lc.ainvoke(PROMPT))
        stream["langchain_openai ChatOpenAI.astream"] = _attft(loop, lambda: lc.astream(PROMPT),
                                                               lambda c: bool(c.content))
    else:
        skipped.append("ChatOpenAI (langchain-openai)")
    if importlib.util.find_spec("litellm") is not None:
        import litellm

        kw = {"model": "openai/gpt-4o", "api_base": base_url, "api_key": "test-key", "messages": messages}
        invoke["litellm.acompletion"] = _atimed(loop, lambda: litellm.acompletion(**kw))
        stream["litellm.acompletion(stream=True)"] = _attft(loop, lambda: litellm.acompletion(stream=True, **kw),
                                                            has_delta)
    else:
        skipped.append("litellm")
    transport = "its HTTP/1.1 client" if lean_transport() else "the SDK's async client (no httptools, or a proxy)"
    try:
        run_http_section(f"The same, async (the mesh on {transport})", "AsyncOpenAI direct", invoke, stream,
                         skipped, rounds, warmup)
    finally:
        loop.run_until_complete(client.close())
        loop.close()


# the same comparison for one provider that does not speak the OpenAI format

ANTHROPIC_MODEL = "claude-haiku-4-5"
ANTHROPIC_MAX_TOKENS = 8192  # what the mesh sends for this model when the caller sets none: same bodies


def bench_anthropic(rounds: int, warmup: int) -> None:
    if importlib.util.find_spec("anthropic") is None:
        print("\nanthropic SDK is not installed; anthropic rows skipped "
              "(pip install 'langchain-mesh[anthropic,bench]')")
        return
    import anthropic

    server = ServerProcess("langchain_mesh.testing.anthropic", "/v1/models",
                           {"x-api-key": "test-key", "anthropic-version": "2023-06-01"})
    try:
        _bench_anthropic(server.url, rounds, warmup, anthropic)
    finally:
        server.stop()


def _bench_anthropic(base_url: str, rounds: int, warmup: int, anthropic: Any) -> None:
    kw = {"model": ANTHROPIC_MODEL, "max_tokens": ANTHROPIC_MAX_TOKENS,
          "messages": [{"role": "user", "content": PROMPT}]}
    client = anthropic.Anthropic(base_url=base_url, api_key="test-key", max_retries=0)
    llm_id = f"anthropic:claude:{ANTHROPIC_MODEL}"
    mesh = Mesh.from_config({"connections": {"claude": {"type": "anthropic", "api_key": "test-key",
                                                        "base_url": base_url, "max_retries": 0}}})
    llm = mesh.get_llm(llm_id)

    def sdk_text(ev: Any) -> bool:
        return ev.type == "content_block_delta" and ev.delta.type == "text_delta" and bool(ev.delta.text)

    invoke: dict[str, Callable[[], float]] = {
        "anthropic SDK direct": _timed(lambda: client.messages.create(**kw)),
        "mesh builder .execute()": _timed(lambda: llm.new_completion().with_message(PROMPT).execute()),
    }
    stream: dict[str, Callable[[], float]] = {
        "anthropic SDK direct": _ttft(lambda: client.messages.create(stream=True, **kw), sdk_text),
        "mesh builder .execute_streamed()": _ttft(lambda: llm.new_completion().with_message(PROMPT).execute_streamed(),
                                                  lambda ev: bool(getattr(ev, "text", None))),
    }
    skipped: list[str] = []
    _add_mesh_chat_model(mesh, llm_id, invoke, stream, skipped)
    if importlib.util.find_spec("langchain_anthropic") is not None:
        from langchain_anthropic import ChatAnthropic

        lc_anthropic = ChatAnthropic(model=ANTHROPIC_MODEL, base_url=base_url, api_key="test-key",  # type: ignore
                                     max_tokens=ANTHROPIC_MAX_TOKENS, max_retries=0)
        invoke["langchain_anthropic ChatAnthropic.invoke"] = _timed(lambda: lc_anthropic.invoke(PROMPT))
        stream["langchain_anthropic ChatAnthropic.stream"] = _ttft(lambda: lc_anthropic.stream(PROMPT),
                                                                   lambda c: bool(c.content))
    else:
        skipped.append("ChatAnthropic (langchain-anthropic)")
    _add_litellm(f"anthropic/{ANTHROPIC_MODEL}", base_url, invoke, stream, skipped)
    try:
        run_http_section("anthropic connection over HTTP to the local Anthropic server (separate process)",
                         "anthropic SDK direct", invoke, stream, skipped, rounds, warmup)
    finally:
        client.close()
        mesh.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20000, help="calls per timing run (trivial connection)")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs; the best is kept")
    ap.add_argument("--local", action="store_true", help="also measure on the real local models")
    ap.add_argument("--local-iterations", type=int, default=3, help="generations per timing run with --local")
    ap.add_argument("--local-repeat", type=int, default=3, help="timing runs with --local; the best is kept")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads for --local")
    ap.add_argument("--policies-only", action="store_true", help="run only the policy layers' rows")
    oa = ap.add_mutually_exclusive_group()
    oa.add_argument("--openai", action="store_true", default=None,
                    help="measure real HTTP calls to the local OpenAI server "
                         "(default: when the openai SDK is importable)")
    oa.add_argument("--no-openai", dest="openai", action="store_false", help="skip the openai section")
    oa.add_argument("--openai-only", action="store_true", help="run only the openai section")
    ap.add_argument("--openai-rounds", type=int, default=300, help="interleaved rounds of calls with --openai")
    ap.add_argument("--openai-warmup", type=int, default=20, help="warm-up rounds with --openai")
    an = ap.add_mutually_exclusive_group()
    an.add_argument("--anthropic", action="store_true", default=None,
                    help="measure real HTTP calls to the local Anthropic server "
                         "(default: when the anthropic SDK is importable)")
    an.add_argument("--no-anthropic", dest="anthropic", action="store_false", help="skip the anthropic section")
    an.add_argument("--anthropic-only", action="store_true", help="run only the anthropic section")
    ap.add_argument("--anthropic-rounds", type=int, default=300, help="interleaved rounds of calls with --anthropic")
    ap.add_argument("--anthropic-warmup", type=int, default=20, help="warm-up rounds with --anthropic")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}")
    if args.policies_only:
        bench_policies(args.iterations, args.repeat)
        return 0
    only = args.openai_only or args.anthropic_only
    if not only:
        bench_fixed(args.iterations, args.repeat)
        bench_policies(args.iterations, args.repeat)
        if args.local:
            bench_local(args.local_iterations, args.local_repeat, args.torch_threads)

    def wanted(section: str, flag: Optional[bool], only_this: bool) -> bool:
        if only:
            return only_this
        return bool(flag) or (flag is None and importlib.util.find_spec(section) is not None)

    if wanted("openai", args.openai, args.openai_only):
        bench_openai(args.openai_rounds, args.openai_warmup)
    if wanted("anthropic", args.anthropic, args.anthropic_only):
        bench_anthropic(args.anthropic_rounds, args.anthropic_warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
