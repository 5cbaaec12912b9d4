"""How long ``import langchain_mesh`` takes, next to pydantic and (when installed) openai and litellm.

The ratio column is against ``from pydantic import BaseModel``, the floor for any pydantic-based library.

Each statement runs in a fresh interpreter (best of N, default 7), timed inside that interpreter
around the statement alone, so interpreter start-up is not counted. Also reports which heavy modules
the statement pulled in: ``import langchain_mesh`` must pull in none of them.

    python bench/import_time.py [-n 7] [--limit 0.25]

Exits non-zero if ``import langchain_mesh`` takes longer than the limit (seconds) or imports a
heavy module.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "transformers", "langchain_core", "openai", "anthropic", "boto3", "numpy", "yaml")

# (label, statement, module that must be installed or None)
CASES = [
    ("import langchain_mesh", "import langchain_mesh", None),
    ("from langchain_mesh import Mesh", "from langchain_mesh import Mesh; Mesh", None),
    ("from langchain_mesh.cli import main", "from langchain_mesh.cli import main", None),
    # `import pydantic` alone is lazy in pydantic 2; BaseModel is what any pydantic-based library pays.
    ("import pydantic", "import pydantic", "pydantic"),
    ("from pydantic import BaseModel (baseline)", "from pydantic import BaseModel", "pydantic"),
    ("import openai", "import openai", "openai"),
    ("import litellm", "import litellm", "litellm"),
]

_PROBE = """
import sys, time, json
before = len(sys.modules)
t = time.perf_counter()
exec(compile({stmt!r}, "<bench>", "exec"))
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "modules": len(sys.modules) - before,
                  "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(stmt: str, runs: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("MESH_CONFIG", None)
    best = None
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", _PROBE.format(stmt=stmt, heavy=HEAVY)],
                              capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{stmt!r} failed:\n{proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    assert best is not None
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=7, help="fresh interpreters per statement (best is kept)")
    ap.add_argument("--limit", type=float, default=0.25, help="seconds allowed for `import langchain_mesh`")
    args = ap.parse_args()

    rows = []
    for label, stmt, needs in CASES:
        if needs is not None and importlib.util.find_spec(needs) is None:
            rows.append((label, None))
            continue
        rows.append((label, measure(stmt, args.runs)))

    baseline = next((r["seconds"] for label, r in rows if label.endswith("(baseline)") and r), None)
    print(f"python {sys.version.split()[0]}, best of {args.runs} fresh interpreters\n")
    w = max(len(label) for label, _ in rows)
    print(f"{'statement':<{w}}  {'ms':>8}  {'x baseline':>10}  {'modules':>7}  heavy modules imported")
    print("-" * (w + 58))
    for label, r in rows:
        if r is None:
            print(f"{label:<{w}}  {'-':>8}  {'-':>10}  {'-':>7}  (not installed: skipped)")
            continue
        ratio = f"{r['seconds'] / baseline:.2f}" if baseline else "-"
        print(f"{label:<{w}}  {r['seconds'] * 1e3:8.1f}  {ratio:>10}  {r['modules']:>7}  "
              f"{', '.join(r['heavy']) or 'none'}")

    ours = dict(rows)["import langchain_mesh"]
    failures = []
    if ours["heavy"]:
        failures.append(f"`import langchain_mesh` imported heavy modules: {', '.join(ours['heavy'])}")
    if ours["seconds"] > args.limit:
        failures.append(f"`import langchain_mesh` took {ours['seconds']:.3f} s > {args.limit} s")
    print()
    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print(f"OK: `import langchain_mesh` {ours['seconds'] * 1e3:.1f} ms (limit {args.limit * 1e3:.0f} ms), "
              "no heavy module imported")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
