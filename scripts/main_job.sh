#!/usr/bin/env bash
# The main job on the embedded default (local SmolLM2 + MiniLM, FAISS bank; no config, no network):
# syncs the docs bank with cookbook/docs and answers a question with a RAG chain, printing its sources.
# Installs what the main job needs first (scripts/install.sh main; a no-op once done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh main
source scripts/_env.sh
exec "$MESH_PY" cookbook/rag_bank.py "$@"
