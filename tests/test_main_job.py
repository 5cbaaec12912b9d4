"""The README's main job, end to end on the embedded default: real MiniLM, real SmolLM2, a FAISS bank."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
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
    # a first run that looks like a product: no library warnings, deprecations or tracebacks
    for noise in ("warning", "deprecat", "traceback", "loading weights", "de-quantizing"):
        assert noise not in run.stderr.lower(), run.stderr[-2000:]
    answer = out.split("A: ", 1)[1]
    words = answer.split()
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    assert max(grams.values(), default=0) <= 2, answer  # the local model no longer loops

    # the second run re-embeds nothing and makes no new version
    again = subprocess.run([sys.executable, str(ROOT / "cookbook" / "rag_bank.py")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    chunks = int(out.split("Bank docs: ", 1)[1].split(" chunks", 1)[0])
    assert f"(all {chunks} unchanged, nothing embedded, no new version)" in again.stdout
    assert (bank / "CURRENT").read_text().strip() == "v000001"
    assert sorted(p.name for p in (bank / "versions").iterdir()) == ["v000001"]
