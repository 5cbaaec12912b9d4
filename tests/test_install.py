"""The install path a fresh machine takes: every extra resolves with the pip this machine's Python
ships (23.2 here), and the scripts put the project in its own virtualenv.

The resolution test asks the package index (the one registry CI can reach) and takes about a minute:
it is what caught ``elasticsearch[async]>=8.13`` (dev) admitting 9.x while langchain-elasticsearch
requires <9, which pip 23.2 cannot backtrack out of. Where no index answers, it skips, except in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # scripts/install.sh pins it: a bare torch range pulls the CUDA build


def _stock_venv(where: Path) -> Path:
    """A virtualenv with the pip that ships with this Python (ensurepip), not upgraded."""
    venv.EnvBuilder(with_pip=True).create(where)
    return where / "bin" / "python"


def _extras() -> list[str]:
    return sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _dry_run(python: Path, requirement: str, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-input", "--progress-bar",
         "off", "--disable-pip-version-check", "--report", str(report), TORCH, requirement],
        cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_every_extra_resolves_with_the_stock_pip(tmp_path):
    python = _stock_venv(tmp_path / "venv")
    pip_version = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True).stdout
    done = _dry_run(python, f".[{','.join(_extras())}]", tmp_path / "report.json")
    if done.returncode != 0 and not os.environ.get("CI") and "No matching distribution" not in done.stderr \
            and ("ConnectionError" in done.stderr or "NewConnectionError" in done.stderr):
        pytest.skip(f"no package index reachable: {done.stderr[-300:]}")
    assert done.returncode == 0, f"{pip_version}\n{done.stderr[-3000:]}"
    installed = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                 for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert installed["torch"].startswith("2.13.0"), installed["torch"]  # never a CUDA build by the back door
    assert not any(name.startswith("nvidia-") for name in installed), "a CUDA package was pulled in"
    assert installed["langchain-mesh"]


def test_extras_agree_on_shared_requirements():
    """No extra may admit a version another extra refuses: the same package is bounded the same way."""
    from packaging.requirements import Requirement

    bounds: dict[str, dict[str, str]] = {}
    for extra, reqs in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"].items():
        for raw in reqs:
            r = Requirement(raw)
            bounds.setdefault(r.name.lower(), {})[extra] = str(r.specifier)
    disagree = {name: by_extra for name, by_extra in bounds.items() if len(set(by_extra.values())) > 1}
    assert not disagree, f"requirements bounded differently across extras: {disagree}"


def test_the_scripts_create_and_use_their_own_virtualenv(tmp_path):
    """scripts/_env.sh: .venv (here $MESH_VENV) made with `python3 -m venv`, unless VIRTUAL_ENV/PYTHON say."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON")}
    env["MESH_VENV"] = str(tmp_path / "env")
    probe = 'source scripts/_env.sh >/dev/null && echo "$MESH_PY"'
    out = subprocess.run(["bash", "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    made = Path(out.stdout.strip())
    assert made == tmp_path / "env" / "bin" / "python" and made.exists()
    assert (tmp_path / "env" / "pyvenv.cfg").exists()
    out = subprocess.run(["bash", "-c", probe], cwd=ROOT, env={**env, "VIRTUAL_ENV": "/opt/other"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "/opt/other/bin/python"
    out = subprocess.run(["bash", "-c", probe], cwd=ROOT, env={**env, "PYTHON": sys.executable},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == sys.executable
