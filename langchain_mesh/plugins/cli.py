"""``mesh plugin new <name> [--dir D]``: scaffold a folder plugin (see :mod:`.scaffold`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser, cli_error: type) -> None:
    pl = sub.add_parser("plugin", help="folder plugins: scaffold a custom LLM connection",
                        description="Work with folder plugins (python-llms/<component>/llm.json + llm.py).")
    ps = pl.add_subparsers(dest="plugin_command", metavar="PLUGIN_COMMAND", required=True)
    p = ps.add_parser("new", help="write a working plugin (OpenAI SDK example) with a test file")
    p.add_argument("name", help="plugin and component name (lower-case, digits, '-')")
    p.add_argument("--dir", default=".", help="where to create it (default: the current directory)")
    p.set_defaults(func=_cmd_new, no_mesh=True, cli_error=cli_error)


def _cmd_new(mesh: Any, args: argparse.Namespace) -> int:
    from .scaffold import new_plugin

    try:
        root = new_plugin(args.name, Path(args.dir))
    except (ValueError, FileExistsError) as e:
        raise args.cli_error(str(e)) from None
    print(f"created {root}")
    print(f"  try it: pytest {root / 'tests'}")
    print(f"  use it: add the connection of {root / 'mesh.yaml'} to your mesh config")
    return 0
