"""Would compiling the gateway's hot modules make it faster? Cython, on the same sources, measured.

Issue 24 names "compiling the hot loop" as fair game. This answers it for Cython (3.x, pure-Python
mode: the ``.py`` files compiled as they are, so there is still one code path): it copies the
checkout to a temporary folder, compiles there the modules a pass-through request runs (``MODULES``:
the ones ``bench/gateway_micro.py OPS=file`` lists with every policy on), and runs
``gateway_micro.py`` on both trees in alternation, ``ROUNDS`` times each, printing each run's µs a
request and the median ratio compiled / interpreted. Above 1.0, the compiled gateway is slower.

    pip install "cython>=3"
    python bench/compiled.py                       # plain, LIMITS=1 and POLICIES=1 (needs redis-server)
    python bench/compiled.py --config LIMITS=1 --directives binding=False

Nothing here is installed or imported by the package: the result decides whether a compiled build
is worth having, and so far it is not (see the README's gateway section).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: what a pass-through request runs with every policy on (gateway_micro.py POLICIES=1 OPS=file)
MODULES = [
    "_loop", "mesh", "connections/openai/base", "connections/transport/http1",
    "policies/breaker", "policies/budgets", "policies/chain", "policies/limits", "policies/redis_pipe",
    "policies/routes", "policies/scope", "policies/state", "policies/usage_of", "policies/windows",
    "server/app", "server/auth", "server/forward", "server/limits", "server/protocol", "server/validated",
    "usage/layer", "usage/ledger", "usage/prices",
]


def compile_copy(dest: Path, directives: list[str]) -> None:
    """The checkout's package and bench copied to ``dest``, ``MODULES`` compiled there in place."""
    shutil.copytree(ROOT / "langchain_mesh", dest / "langchain_mesh")
    shutil.copytree(ROOT / "bench", dest / "bench")
    files = [str(dest / "langchain_mesh" / f"{m}.py") for m in MODULES]
    # annotation_typing=False: the annotations stay hints, as in CPython (Cython would otherwise
    # treat `x: float` as a C double and `x: dict` as a check that refuses None)
    flags = ["-X", "annotation_typing=False"] + [a for d in directives for a in ("-X", d)]
    done = subprocess.run([sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "-j", str(os.cpu_count() or 1),
                           "-q", *flags, *files], cwd=dest, capture_output=True, text=True)
    if done.returncode:  # (the C compiler's warnings are many and say nothing here: shown only on failure)
        raise SystemExit(f"cythonize failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")


def micro(tree: Path, config: str, n: int) -> float:
    """gateway_micro.py's median µs a request, run from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "CONC": "16", "N": str(n)}
    if config != "plain":
        key, _, value = config.partition("=")
        env[key] = value
    out = subprocess.run([sys.executable, str(tree / "bench" / "gateway_micro.py")], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    got = re.search(r"us/req min [\d.]+ med ([\d.]+)", out)
    if got is None:
        raise SystemExit(f"gateway_micro.py printed no timing:\n{out}")
    return float(got.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", help="plain, or a gateway_micro.py setting (LIMITS=1, POLICIES=1); "
                                                       "repeatable (default: all three)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternating (default 3)")
    ap.add_argument("--n", type=int, default=2000, help="gateway_micro.py's N (default 2000)")
    ap.add_argument("--directives", nargs="*", default=[], help="more Cython directives, e.g. binding=False")
    args = ap.parse_args()
    try:
        import Cython
    except ImportError:
        raise SystemExit('this needs Cython: pip install "cython>=3"') from None
    configs = args.config or ["plain", "LIMITS=1", "POLICIES=1"]
    bad = [c for c in configs if c != "plain" and not re.fullmatch(r"[A-Z_]+=\S+", c)]
    if args.rounds < 1 or args.n < 1:
        ap.error("--rounds and --n must be at least 1")
    if bad:  # (a bare name would reach gateway_micro.py as an empty setting: the plain gateway, unsaid)
        ap.error(f"--config takes plain or NAME=VALUE (LIMITS=1, POLICIES=1...), not {', '.join(bad)}")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        print(f"compiling {len(MODULES)} modules with Cython {Cython.__version__} "
              f"({', '.join(['annotation_typing=False', *args.directives])})...", flush=True)
        compile_copy(tree, args.directives)
        for config in configs:
            runs: dict[str, list[float]] = {"interpreted": [], "compiled": []}
            for _ in range(args.rounds):
                runs["interpreted"].append(micro(ROOT, config, args.n))
                runs["compiled"].append(micro(tree, config, args.n))
            ratio = statistics.median(c / i for c, i in zip(runs["compiled"], runs["interpreted"]))
            print(f"{config:11s} interpreted {' '.join(f'{x:.1f}' for x in runs['interpreted'])} us/req | "
                  f"compiled {' '.join(f'{x:.1f}' for x in runs['compiled'])} us/req | compiled / interpreted "
                  f"{ratio:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
