# Sourced by the scripts in this folder: picks the Python environment langchain-mesh lives in and sets
# MESH_PY to its interpreter.
#
#   $VIRTUAL_ENV set (an activated virtualenv)  -> that environment
#   $PYTHON set                                  -> that interpreter, as it is (your environment, your pip)
#   otherwise                                    -> the virtualenv $MESH_VENV (default: .venv in the repo),
#                                                   created with the stock `python3 -m venv` when missing
#
# Nothing is ever installed into the system Python, and pip is upgraded only inside a virtualenv.

mesh_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    MESH_PY="$VIRTUAL_ENV/bin/python"
elif [[ -n "${PYTHON:-}" ]]; then
    MESH_PY="$PYTHON"
else
    mesh_venv="${MESH_VENV:-$mesh_repo/.venv}"
    if [[ ! -x "$mesh_venv/bin/python" ]]; then
        base="$(command -v python3 || command -v python)"
        echo "langchain-mesh: creating the virtualenv $mesh_venv ($("$base" --version 2>&1), python3 -m venv)"
        "$base" -m venv "$mesh_venv"
    fi
    MESH_PY="$mesh_venv/bin/python"
fi
export MESH_PY
