"""Per-call overhead of the mesh: the builder + registry path next to calling the connection directly.

The connection here is a trivial one registered in this script (``register_connection_type``): it
returns prebuilt responses, so the "direct" column is the cost of a method call and the difference
between the columns is the mesh's own work (building and validating the request, dispatch, the
stream's footer guard).

    python bench/overhead.py [--iterations 20000] [--repeat 5]
    python bench/overhead.py --local      # also the real local models of the embedded default

With ``--local``, the same comparison runs on SmolLM2-135M-Instruct (maxOutputTokens=8) and
all-MiniLM-L6-v2, few iterations: there the overhead is a share of a real call.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20000, help="calls per timing run (trivial connection)")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs; the best is kept")
    ap.add_argument("--local", action="store_true", help="also measure on the real local models")
    ap.add_argument("--local-iterations", type=int, default=3, help="generations per timing run with --local")
    ap.add_argument("--local-repeat", type=int, default=3, help="timing runs with --local; the best is kept")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads for --local")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}")
    bench_fixed(args.iterations, args.repeat)
    if args.local:
        bench_local(args.local_iterations, args.local_repeat, args.torch_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
