"""The README's main job, end to end on the embedded default: real MiniLM, real SmolLM2, a FAISS bank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("faiss")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.local_model
def test_main_job_builds_the_bank_and_answers_with_sources(tmp_path):
    env = {**os.environ, "MESH_BANKS_DIR": str(tmp_path / "banks"), "PYTHONPATH": str(ROOT)}
    env.pop("MESH_CONFIG", None)
    run = subprocess.run([sys.executable, str(ROOT / "cookbook" / "rag_bank.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    n_files = len(list((ROOT / "cookbook" / "docs").glob("*.md")))
    assert f"from {n_files} files" in out
    sources = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(sources) == 2
    assert "llm-ids.md" in sources[0]  # hybrid search puts the doc about `mesh models --purpose` first
    assert out.split("A: ", 1)[1].strip()
    bank = tmp_path / "banks" / "docs"
    assert (bank / "CURRENT").read_text().strip() == "v000001"
    assert (bank / "versions" / "v000001" / "store" / "manifest.json").is_file()
