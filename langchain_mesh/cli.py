"""The ``mesh`` command: list the mesh's LLMs, chat with one, embed a text.

::

    mesh models [--purpose P] [--json]
    mesh chat "prompt" [--llm ID] [--system S] [--stream] [--temperature T] [--max-tokens N]
    mesh embed "text" [--llm ID]
    mesh image "prompt" -o out.png [--llm ID] [--negative T] [--size WxH | --aspect-ratio 16:9] [-n N] [--seed S]
               [--quality Q] [--style S] [--fidelity F] [--image IN.png [--mode M] [--weight W]
               [--mask MASK.png | --mask-alpha]] [--lenient]
    mesh kb list | ingest --kb ID PATH... | search --kb ID "query" [--type hybrid] | versions | rollback
    mesh serve [--host H] [--port P] [--workers N] [--usage-log]
    mesh credentials set TARGET [--user U] [--field F] | list [--user U | --all] | delete TARGET | new-key
    mesh plugin new NAME [--dir D]
    mesh finetune create NAME [--connection C] [--base-model M] | train NAME --data PATH [--method lora|qlora|dpo]
                  | list | versions NAME | activate NAME VERSION | rollback NAME

Every subcommand takes ``--config PATH``; without it the mesh is read from ``$MESH_CONFIG``, and
without that it is the embedded default (``Mesh()``: local models). Without ``--llm``, ``chat`` and
``embed`` use the first LLM of the mesh with the right purpose.

Exit codes: 0 done; 2 bad input (usage, config, LLM id, credential, setting: any mesh error that is
the caller's to fix); 1 the provider failed (:class:`~langchain_mesh.errors.ProviderError`). Errors
are one line on stderr, ``mesh: error: <reason>``, never a traceback.

Only the standard library is imported at module level, so ``mesh --help`` answers at once; the
mesh itself (pydantic, YAML, a connection's SDK) loads when a subcommand runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from .mesh import Mesh
    from .queries import LLM

__all__ = ["main", "build_parser"]

PROG = "mesh"
# The values of langchain_mesh.schema.Purpose, spelt out so that building the parser imports no
# pydantic (a test keeps the two in step).
PURPOSES = ("GENERIC_COMPLETION", "TEXT_EMBEDDING_EXTRACTION", "IMAGE_GENERATION")

EXIT_OK = 0
EXIT_PROVIDER = 1
EXIT_USAGE = 2


class _CliError(Exception):
    """A problem found by the CLI itself (no LLM of the needed purpose...): exit code 2."""


# --------------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    config_help = "mesh config YAML (default: $MESH_CONFIG, else the embedded default of local models)"
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="One connection layer over every LLM: list the mesh's LLMs, chat with one, embed a text.",
        epilog="Exit codes: 0 ok, 1 the provider failed, 2 bad input (usage, config, LLM id, credential, setting).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="PATH", default=None, help=config_help)

    # --config is also accepted after the subcommand. SUPPRESS keeps a subcommand's unset --config from
    # overwriting one given before it (argparse copies sub-parser defaults over the parent's values).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("models", parents=[common], help="list the LLMs of the mesh",
                       description="List the LLMs of the mesh, one per line: id, purposes, description.")
    p.add_argument("--purpose", type=str.upper, choices=PURPOSES,
                   help="only LLMs with this purpose")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("chat", parents=[common], help="send one prompt to a completion LLM",
                       description="Send one prompt to a completion LLM and print its answer. "
                                   "Use '-' as the prompt to read it from standard input.")
    p.add_argument("prompt", help="the user message ('-' reads standard input)")
    p.add_argument("--llm", metavar="ID", help="LLM id (default: the first GENERIC_COMPLETION LLM of the mesh)")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0 to 2)")
    p.add_argument("--max-tokens", type=int, metavar="N", dest="max_tokens",
                   help="maximum number of tokens in the answer (maxOutputTokens)")
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("embed", parents=[common], help="print the embedding of a text as JSON",
                       description="Print the embedding vector of a text as a JSON array. "
                                   "Use '-' as the text to read it from standard input.")
    p.add_argument("text", help="the text to embed ('-' reads standard input)")
    p.add_argument("--llm", metavar="ID",
                   help="LLM id (default: the first TEXT_EMBEDDING_EXTRACTION LLM of the mesh)")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("image", parents=[common], help="generate an image and write it to a file",
                       description="Generate images with an IMAGE_GENERATION LLM and write them (several images: "
                                   "OUT-1.png, OUT-2.png...). Settings a model does not take are refused unless "
                                   "--lenient. Use '-' as the prompt to read it from standard input.")
    p.add_argument("prompt", nargs="?", help="the prompt ('-' reads standard input; none for --mode VARY)")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="where to write the image")
    p.add_argument("--llm", metavar="ID", help="LLM id (default: the first IMAGE_GENERATION LLM of the mesh)")
    p.add_argument("--negative", metavar="TEXT", help="negative prompt")
    p.add_argument("--size", metavar="WxH", help="width x height (or give --aspect-ratio)")
    p.add_argument("--aspect-ratio", metavar="R", dest="aspect_ratio", help="aspect ratio: 16:9, or a number (2.33)")
    p.add_argument("-n", type=int, default=1, metavar="N", help="images to generate (default: 1)")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--quality", metavar="Q", help="model-specific: standard, hd, premium, high...")
    p.add_argument("--style", metavar="S", help="model-specific: vivid, natural, anime, photographic...")
    p.add_argument("--fidelity", type=float, metavar="F", help="0.1-1: how strongly to adhere to the prompt")
    p.add_argument("--image", metavar="PATH", help="original image (image-to-image)")
    p.add_argument("--mode", type=str.upper, metavar="MODE",
                   choices=("MASK_FREE", "VARY", "INPAINTING", "CONTROLNET_STRUCTURE", "CONTROLNET_SKETCH"),
                   help="image-to-image mode (default MASK_FREE; INPAINTING with --mask or --mask-alpha)")
    p.add_argument("--weight", type=float, metavar="W", help="0-1: how much the original image counts")
    p.add_argument("--mask", metavar="PATH", help="inpainting mask: black pixels are filled")
    p.add_argument("--mask-alpha", action="store_true", dest="mask_alpha",
                   help="inpaint the original image's transparent pixels")
    p.add_argument("--lenient", action="store_true", help="drop settings the model does not take instead of failing")
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser("serve", parents=[common], help="serve the mesh's LLMs through the OpenAI HTTP API",
                       description="Serve every LLM of the mesh through the OpenAI HTTP API (/v1/chat/completions, "
                                   "/v1/completions, /v1/embeddings, /v1/images/generations|edits|variations, "
                                   "/v1/models) with uvicorn. API keys "
                                   "come from server.api_keys in the config; without any, only a loopback "
                                   "address may be used. Needs the server extra: pip install 'langchain-mesh[server]'.")
    p.add_argument("--host", metavar="H", help="address to bind (default: server.host, else 127.0.0.1)")
    p.add_argument("--port", type=int, metavar="P", help="port (default: server.port, else 8000)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)")
    p.add_argument("--log-level", default="info", dest="log_level",
                   choices=("critical", "error", "warning", "info", "debug"), help="uvicorn's log level")
    p.add_argument("--access-log", action="store_true", dest="access_log", help="log every request (uvicorn)")
    p.add_argument("--usage-log", action="store_true", dest="usage_log",
                   help="one JSON line per request on stderr: key name, endpoint, LLM, status, tokens, ms")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("usage", parents=[common], help="totals from the usage and cost ledger (by key, LLM, day)",
                       description="Totals from the usage ledger (usage: in the config): requests, errors, "
                                   "refusals, tokens and cost, grouped. Cost 'unknown' (CSV/JSON: empty/null) "
                                   "means no price is known for some calls; 'unpriced' counts them.")
    p.add_argument("--by", default="key,llm,day", metavar="G,..",
                   help="group by any of key, user, team, llm, target, day, op, status (default key,llm,day; "
                        "'' for one grand total)")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="first day (UTC) to count")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="last day (UTC) to count")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")
    p.add_argument("--db", metavar="PATH", help="a ledger SQLite file (default: the config's usage.path or url)")
    p.set_defaults(func=_cmd_usage)

    kb = sub.add_parser("kb", help="knowledge banks: list, ingest, search, versions, rollback",
                        description="Work with the knowledge banks declared in the mesh config.")
    kb_sub = kb.add_subparsers(dest="kb_command", metavar="KB_COMMAND", required=True)
    p = kb_sub.add_parser("list", parents=[common], help="list the knowledge banks")
    p.set_defaults(func=_cmd_kb_list)
    p = kb_sub.add_parser("ingest", parents=[common], help="chunk files and write them to a bank (all or nothing)",
                          description="Read text, Markdown and PDF files (folders are walked), split them into "
                                      "chunks and write them to the bank in one atomic commit.")
    p.add_argument("--kb", required=True, metavar="ID", help="knowledge bank id")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--chunk-size", type=int, default=1000, dest="chunk_size", metavar="N")
    p.add_argument("--chunk-overlap", type=int, default=150, dest="chunk_overlap", metavar="N")
    p.add_argument("--clear", action="store_true", help="start from an empty bank and embed everything again")
    p.add_argument("--mirror", action="store_true",
                   help="also remove stored chunks these paths no longer produce (the bank mirrors PATHs)")
    p.set_defaults(func=_cmd_kb_ingest)
    p = kb_sub.add_parser("search", parents=[common], help="search a bank")
    p.add_argument("--kb", required=True, metavar="ID", help="knowledge bank id")
    p.add_argument("query")
    p.add_argument("--type", dest="search_type", default="similarity",
                   choices=("similarity", "hybrid", "keyword", "mmr", "semantic_hybrid"),
                   help="search type (default: similarity; semantic_hybrid: Azure AI Search banks)")
    p.add_argument("-k", type=int, default=4, help="number of results (default: 4)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_kb_search)
    p = kb_sub.add_parser("versions", parents=[common], help="list a bank's versions")
    p.add_argument("--kb", required=True, metavar="ID", help="knowledge bank id")
    p.set_defaults(func=_cmd_kb_versions)
    p = kb_sub.add_parser("rollback", parents=[common], help="make an earlier version current")
    p.add_argument("--kb", required=True, metavar="ID", help="knowledge bank id")
    p.add_argument("version", help="a version id from `mesh kb versions`")
    p.set_defaults(func=_cmd_kb_rollback)

    from .credentials.cli import add_parser as add_credentials
    from .plugins.cli import add_parser as add_plugin

    add_credentials(sub, common, _CliError)
    add_plugin(sub, common, _CliError)
    _add_finetune(sub, common)
    return parser


def _add_finetune(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", common: argparse.ArgumentParser) -> None:
    ft = sub.add_parser("finetune", help="fine-tuned saved models: create, train, list, versions, activate",
                        description="Fine-tune local models (LoRA, QLoRA, DPO) into versioned saved models "
                                    "served as huggingfacelocal:<connection>:<name>[@<version>]. Training "
                                    "needs the finetune extra: pip install 'langchain-mesh[finetune]'.")
    ft_sub = ft.add_subparsers(dest="ft_command", metavar="FINETUNE_COMMAND", required=True)
    p = ft_sub.add_parser("create", parents=[common], help="create an empty saved model")
    p.add_argument("name")
    p.add_argument("--connection", default="local", help="a huggingfacelocal connection (default: local)")
    p.add_argument("--base-model", dest="base_model", metavar="MODEL",
                   help="the connection's chat model to fine-tune (default: its first chat model)")
    p.add_argument("--description", default="")
    p.set_defaults(func=_cmd_ft_create)
    p = ft_sub.add_parser("train", parents=[common], help="train a new version (all or nothing) and activate it",
                          description="Train a new version of a saved model from JSONL or CSV data (chat "
                                      "examples, or prompt/chosen/rejected pairs for --method dpo).")
    p.add_argument("name")
    p.add_argument("--data", required=True, metavar="PATH", help="training data (.jsonl or .csv)")
    p.add_argument("--validation", metavar="PATH", help="validation data (.jsonl or .csv)")
    p.add_argument("--method", default="lora", choices=("lora", "qlora", "dpo"))
    p.add_argument("--epochs", type=float, metavar="N", help="num_train_epochs")
    p.add_argument("--max-steps", type=int, dest="max_steps", metavar="N", help="max_steps (overrides --epochs)")
    p.add_argument("--learning-rate", type=float, dest="learning_rate", metavar="LR")
    p.add_argument("--batch-size", type=int, dest="batch_size", metavar="N", help="per_device_train_batch_size")
    p.add_argument("--lora-r", type=int, dest="lora_r", metavar="R", help="LoRA rank")
    p.add_argument("--trainer-arg", action="append", default=[], dest="trainer_arg", metavar="KEY=VALUE",
                   help="any other trainer argument (value read as JSON, else text); repeatable")
    p.add_argument("--merge", action="store_true", help="save merged weights instead of the adapter")
    p.add_argument("--no-activate", action="store_false", dest="activate",
                   help="keep the active version as it is")
    p.add_argument("--connection", help="the saved model's connection (default: found by name)")
    p.set_defaults(func=_cmd_ft_train)
    p = ft_sub.add_parser("list", parents=[common], help="list the saved models")
    p.add_argument("--connection")
    p.set_defaults(func=_cmd_ft_list)
    p = ft_sub.add_parser("versions", parents=[common], help="list a saved model's versions")
    p.add_argument("name")
    p.add_argument("--connection")
    p.set_defaults(func=_cmd_ft_versions)
    p = ft_sub.add_parser("activate", parents=[common], help="make a version the active one (or roll back)")
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--connection")
    p.set_defaults(func=_cmd_ft_activate)
    p = ft_sub.add_parser("rollback", parents=[common], help="activate the version before the active one")
    p.add_argument("name")
    p.add_argument("--connection")
    p.set_defaults(func=_cmd_ft_rollback)


# --------------------------------------------------------------------------------------------------
# Commands


def _open_mesh(config: Optional[str]) -> "Mesh":
    from .mesh import Mesh

    source = config or os.environ.get("MESH_CONFIG") or None
    return Mesh(source) if source else Mesh()


def _pick_llm(mesh: "Mesh", llm_id: Optional[str], purpose: str) -> "LLM":
    if llm_id:
        return mesh.get_llm(llm_id)
    items = mesh.list_llms(purpose)
    if not items:
        raise _CliError(f"this mesh has no {purpose} LLM; add one to the config or pass --llm ID "
                        "(list the ids with `mesh models`)")
    return mesh.get_llm(items[0].id)


def _read_arg(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _cmd_models(mesh: "Mesh", args: argparse.Namespace) -> int:
    items = mesh.list_llms(args.purpose)
    if args.json:
        import json

        rows = [{"id": i.id, "type": i.type, "connection": i.connection, "purposes": i.purposes,
                 "description": i.description, "capabilities": i.capabilities.model_dump()} for i in items]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = [("ID", "PURPOSES", "DESCRIPTION")]
    table += [(i.id, ",".join(i.purposes), i.description) for i in items]
    w0 = max(len(r[0]) for r in table)
    w1 = max(len(r[1]) for r in table)
    for a, b, c in table:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip())
    return EXIT_OK


def _cmd_chat(mesh: "Mesh", args: argparse.Namespace) -> int:
    llm = _pick_llm(mesh, args.llm, "GENERIC_COMPLETION")
    completion = llm.new_completion()
    if args.system:
        completion.with_message(args.system, role="system")
    completion.with_message(_read_arg(args.prompt))
    if args.temperature is not None:
        completion.settings["temperature"] = args.temperature
    if args.max_tokens is not None:
        completion.settings["maxOutputTokens"] = args.max_tokens

    out = sys.stdout
    if args.stream:
        from .schema import StreamChunk

        for event in completion.execute_streamed():
            if isinstance(event, StreamChunk):
                if event.text:
                    out.write(event.text)
                    out.flush()
        out.write("\n")
        out.flush()
        return EXIT_OK

    resp = completion.execute()
    if not resp.success:
        print(f"{PROG}: error: {llm.id} failed: {resp.error or 'no reason given'}", file=sys.stderr)
        return EXIT_PROVIDER
    out.write(resp.text + "\n")
    return EXIT_OK


def _cmd_embed(mesh: "Mesh", args: argparse.Namespace) -> int:
    import json

    llm = _pick_llm(mesh, args.llm, "TEXT_EMBEDDING_EXTRACTION")
    resp = llm.new_embeddings().add_text(_read_arg(args.text)).execute()
    print(json.dumps(resp.embeddings[0]))
    return EXIT_OK


def _cmd_image(mesh: "Mesh", args: argparse.Namespace) -> int:
    llm = _pick_llm(mesh, args.llm, "IMAGE_GENERATION")
    gen = llm.new_images_generation()
    if args.prompt is not None:
        gen.with_prompt(_read_arg(args.prompt))
    if args.negative:
        gen.with_negative_prompt(args.negative)
    if args.size:
        w, sep, h = args.size.lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise _CliError(f"--size takes WIDTHxHEIGHT (1024x1024), not {args.size!r}")
        gen.width, gen.height = int(w), int(h)
    if args.aspect_ratio:
        try:
            gen.aspect_ratio = float(args.aspect_ratio)
        except ValueError:
            gen.aspect_ratio = args.aspect_ratio
    gen.images_to_generate, gen.seed, gen.lenient = args.n, args.seed, args.lenient
    gen.quality, gen.style, gen.fidelity = args.quality, args.style, args.fidelity
    if args.image:
        gen.with_original_image(_read_file(args.image), mode=args.mode, weight=args.weight)
    elif args.mode or args.weight is not None:
        raise _CliError("--mode and --weight need --image")
    if args.mask or args.mask_alpha:
        gen.with_mask("ORIGINAL_IMAGE_ALPHA" if args.mask_alpha else "MASK_IMAGE_BLACK",
                      image=_read_file(args.mask) if args.mask else None)
    resp = gen.execute()
    for path, image in zip(_outputs(args.output, len(resp.images)), resp.images, strict=True):
        with open(path, "wb") as f:
            f.write(image.data)
        print(path)
    if resp.ignored_settings:
        print(f"{PROG}: warning: {llm.id} does not take {', '.join(resp.ignored_settings)}; not sent (--lenient)",
              file=sys.stderr)
    return EXIT_OK


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _CliError(f"cannot read {path}: {e.strerror}") from None


def _outputs(path: str, count: int) -> list[str]:
    """OUT.png for one image; OUT-1.png, OUT-2.png... for several."""
    if count == 1:
        return [path]
    stem, ext = os.path.splitext(path)
    return [f"{stem}-{i}{ext}" for i in range(1, count + 1)]


def _cmd_serve(mesh: "Mesh", args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise _CliError("--workers must be at least 1")
    from .server import serve

    serve(mesh, args.config or os.environ.get("MESH_CONFIG"), host=args.host, port=args.port,
          workers=args.workers, log_level=args.log_level, access_log=args.access_log, usage_log=args.usage_log)
    return EXIT_OK


def _cmd_usage(mesh: "Mesh", args: argparse.Namespace) -> int:
    from .usage.report import totals

    source = args.db or mesh.config.usage
    if source is None:
        raise _CliError("this mesh has no usage ledger: add a usage: section to the config, or pass --db PATH")
    by = tuple(b.strip() for b in args.by.split(",") if b.strip())
    rows = totals(source, by=by, since=args.since, until=args.until)
    if args.format == "json":
        import json

        print(json.dumps(rows, indent=2))
        return EXIT_OK
    names = list(by) + ["requests", "errors", "refused", "input_tokens", "output_tokens", "cached_tokens",
                        "reasoning_tokens", "cost", "unpriced", "avg_latency_ms"]
    if args.format == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow(["" if r[n] is None else r[n] for n in names])
        return EXIT_OK
    shown = [n for n in names if n not in ("cached_tokens", "reasoning_tokens")]
    table = [shown] + [[_usage_cell(n, r[n]) for n in shown] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(shown))]
    for row in table:
        print("  ".join(c.ljust(w) if i < len(by) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return EXIT_OK


def _usage_cell(name: str, value: object) -> str:
    if value is None:
        return "unknown" if name == "cost" else "-"
    if name == "cost":
        return f"{value:.6f}"
    return str(value)


def _cmd_kb_list(mesh: "Mesh", args: argparse.Namespace) -> int:
    for item in mesh.list_knowledge_banks():
        print(f"{item.id}\t{item.backend}\t{item.description}".rstrip())
    return EXIT_OK


def _cmd_kb_ingest(mesh: "Mesh", args: argparse.Namespace) -> int:
    from knowledge_banks.ingest import describe_counts, ingest

    # pypdf logs each defect of a damaged PDF on stderr before failing; the command's own one-line error
    # says what matters (the file and why), so those lines are not printed here
    logging.getLogger("pypdf").addHandler(logging.NullHandler())
    kb = mesh.get_knowledge_bank(args.kb)
    counts = ingest(kb, args.paths, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, clear=args.clear,
                    mirror=args.mirror)
    current = next((v.id for v in kb.versions() if v.current), "?")
    print(f"ingested {counts['chunks']} chunks from {counts['files']} files into {kb.id} (version {current}): "
          f"{describe_counts(counts)}")
    return EXIT_OK


def _cmd_kb_search(mesh: "Mesh", args: argparse.Namespace) -> int:
    kb = mesh.get_knowledge_bank(args.kb)
    docs = kb.as_langchain_retriever(search_type=args.search_type, search_kwargs={"k": args.k}).invoke(args.query)
    if args.json:
        import json

        print(json.dumps([{"id": d.id, "text": d.page_content, "metadata": d.metadata} for d in docs], indent=2))
        return EXIT_OK
    for i, d in enumerate(docs, 1):
        src = d.metadata.get("source", "")
        text = " ".join(d.page_content.split())
        print(f"{i}. [{src}] {text[:200]}")
    return EXIT_OK


def _cmd_kb_versions(mesh: "Mesh", args: argparse.Namespace) -> int:
    import datetime

    for v in mesh.get_knowledge_bank(args.kb).versions():
        when = datetime.datetime.fromtimestamp(v.created_at).isoformat(timespec="seconds")
        print(f"{'*' if v.current else ' '} {v.id}  {when}  {v.documents} documents")
    return EXIT_OK


def _cmd_kb_rollback(mesh: "Mesh", args: argparse.Namespace) -> int:
    kb = mesh.get_knowledge_bank(args.kb)
    try:
        kb.rollback(args.version)
    except ValueError as e:
        raise _CliError(str(e)) from None
    print(f"{kb.id}: version {args.version} is current")
    return EXIT_OK


def _cmd_ft_create(mesh: "Mesh", args: argparse.Namespace) -> int:
    sm = mesh.create_finetuned_saved_model(args.name, connection=args.connection, base_model=args.base_model,
                                           description=args.description)
    print(f"created saved model {sm.name} (base {sm.base_model}) in {sm.path}")
    return EXIT_OK


def _trainer_args(args: argparse.Namespace) -> dict:
    import json

    out: dict = {}
    for item in args.trainer_arg:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise _CliError(f"--trainer-arg {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    for flag, key in (("epochs", "num_train_epochs"), ("max_steps", "max_steps"),
                      ("learning_rate", "learning_rate"), ("batch_size", "per_device_train_batch_size")):
        value = getattr(args, flag)
        if value is not None:
            out[key] = value
    return out


def _cmd_ft_train(mesh: "Mesh", args: argparse.Namespace) -> int:
    sm = mesh.get_saved_model(args.name, args.connection)
    lora = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r} if args.lora_r else None
    v = sm.create_finetuned_version(args.data, validation=args.validation, method=args.method, lora=lora,
                                    trainer_args=_trainer_args(args), merge=args.merge, activate=args.activate)
    m = v.metrics
    losses = f"train loss {m.get('train_loss_first')} -> {m.get('train_loss_last')}"
    if "eval_loss" in m:
        losses += f", validation loss {m['eval_loss']:.4f}"
    print(f"{sm.name} {v.id} ({v.method}, {v.kind}{', active' if v.active else ''}): {losses}, "
          f"{m.get('steps')} steps in {m.get('runtime_s')} s. LLM id: {sm.llm_id(v.id)}")
    return EXIT_OK


def _cmd_ft_list(mesh: "Mesh", args: argparse.Namespace) -> int:
    for sm in mesh.list_saved_models(args.connection):
        print(f"{sm.llm_id()}\tbase {sm.base_model}\tactive {sm.active_version or '-'}\t"
              f"{len(sm.list_versions())} versions")
    return EXIT_OK


def _cmd_ft_versions(mesh: "Mesh", args: argparse.Namespace) -> int:
    import datetime

    for v in mesh.get_saved_model(args.name, args.connection).list_versions():
        when = datetime.datetime.fromtimestamp(v.created_at).isoformat(timespec="seconds")
        loss = v.metrics.get("eval_loss", v.metrics.get("train_loss"))
        print(f"{'*' if v.active else ' '} {v.id}  {when}  {v.method}/{v.kind}  loss {loss}  {v.data_fingerprint}")
    return EXIT_OK


def _cmd_ft_activate(mesh: "Mesh", args: argparse.Namespace) -> int:
    sm = mesh.get_saved_model(args.name, args.connection)
    sm.activate(args.version)
    print(f"{sm.name}: version {args.version} is active ({sm.llm_id()})")
    return EXIT_OK


def _cmd_ft_rollback(mesh: "Mesh", args: argparse.Namespace) -> int:
    sm = mesh.get_saved_model(args.name, args.connection)
    print(f"{sm.name}: version {sm.rollback()} is active ({sm.llm_id()})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# Entry point


def _one_line(exc: BaseException) -> str:
    """Multi-line reasons (a config with several problems) folded onto one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    return lines[0] + " " + "; ".join(lines[1:])


def _fail(exc: BaseException, code: int) -> int:
    print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``mesh`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse printed them already)
        return e.code if isinstance(e.code, int) else EXIT_USAGE

    from .errors import MeshError, ProviderError

    try:
        if getattr(args, "no_mesh", False):  # commands that need no mesh (scaffolding, a new key)
            return args.func(None, args)
        with _open_mesh(args.config) as mesh:
            return args.func(mesh, args)
    except ProviderError as e:
        return _fail(e, EXIT_PROVIDER)
    except (MeshError, _CliError) as e:
        return _fail(e, EXIT_USAGE)
    except ImportError as e:
        # A connection type whose optional dependencies are missing (pip install 'langchain-mesh[EXTRA]').
        return _fail(e, EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mesh models | head`: the reader went away. Point stdout at devnull so that the interpreter's
        # final flush does not complain too (the recipe of the `signal` module's docs).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
