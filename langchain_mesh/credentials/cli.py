"""``mesh credentials``: each user's own stored credentials (values are read, never echoed).

::

    mesh credentials set TARGET [--user U] [--field F]   # prompts (no echo), or reads stdin
    mesh credentials list [--user U | --all]
    mesh credentials delete TARGET [--user U] [--field F]
    mesh credentials new-key                             # a fresh store key, for $MESH_CREDENTIALS_KEY

TARGET is a connection whose settings say ``{{user}}`` or a preset whose credential fields each
user fills. The user defaults to the OS user. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser, cli_error: type) -> None:
    global _CliError
    _CliError = cli_error
    cr = sub.add_parser("credentials", help="per-user credentials: set, list, delete (values never shown)",
                        description="Store each user's own credentials for connections and presets that take "
                                    "them ({{user}}), in the encrypted credential store.")
    cs = cr.add_subparsers(dest="credentials_command", metavar="CREDENTIALS_COMMAND", required=True)
    p = cs.add_parser("set", parents=[common], help="store a credential (prompted without echo, or from stdin)")
    p.add_argument("target", help="a connection or preset name")
    p.add_argument("--user", help="whose credential (default: the OS user)")
    p.add_argument("--field", help="which field (default: each field the target takes)")
    p.set_defaults(func=_cmd_set)
    p = cs.add_parser("list", parents=[common], help="list stored credentials (targets and fields, no values)")
    p.add_argument("--user", help="whose credentials (default: the OS user)")
    p.add_argument("--all", action="store_true", help="every user's")
    p.set_defaults(func=_cmd_list)
    p = cs.add_parser("delete", parents=[common], help="delete a stored credential")
    p.add_argument("target")
    p.add_argument("--user", help="whose credential (default: the OS user)")
    p.add_argument("--field", help="only this field")
    p.set_defaults(func=_cmd_delete)
    p = cs.add_parser("new-key", help="print a new key for the credential store ($MESH_CREDENTIALS_KEY)")
    p.set_defaults(func=_cmd_new_key, no_mesh=True)


_CliError: type = Exception


def _fields(mesh: Any, target: str) -> list[str]:
    targets = mesh.credential_targets()
    if target not in targets:
        raise _CliError(f"{target!r} takes no per-user credential; these do: {', '.join(sorted(targets)) or 'none'} "
                        "(a connection setting or a preset value of {{user}}, or a preset's CREDENTIAL_REQUEST field)")
    return targets[target]


def _read_value(field: str, target: str) -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"{target} {field}: ")
    else:
        value = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
    if not value:
        raise _CliError(f"no value given for {field}")
    return value


def _cmd_set(mesh: Any, args: argparse.Namespace) -> int:
    fields = _fields(mesh, args.target)
    if args.field:
        if args.field not in fields:
            raise _CliError(f"{args.target!r} takes the fields {fields}, not {args.field!r}")
        fields = [args.field]
    user = args.user or mesh.caller()
    values = {f: _read_value(f, args.target) for f in fields}
    mesh.credential_store.set(user, args.target, values)
    print(f"stored {', '.join(sorted(values))} of {args.target} for {user}")
    return 0


def _cmd_list(mesh: Any, args: argparse.Namespace) -> int:
    user = None if args.all else (args.user or mesh.caller())
    for e in mesh.credential_store.list(user):
        print(f"{e.user}\t{e.target}\t{','.join(e.fields)}")
    return 0


def _cmd_delete(mesh: Any, args: argparse.Namespace) -> int:
    user = args.user or mesh.caller()
    if not mesh.credential_store.delete(user, args.target, [args.field] if args.field else None):
        raise _CliError(f"{user} has no stored credential for {args.target!r}"
                        + (f" field {args.field!r}" if args.field else ""))
    print(f"deleted {args.target}{' ' + args.field if args.field else ''} for {user}")
    return 0


def _cmd_new_key(mesh: Any, args: argparse.Namespace) -> int:
    from .store import new_key

    print(new_key())
    return 0
