#!/usr/bin/env bash
# Install everything (scripts/install.sh all) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh all
source scripts/_env.sh
# pytest exits 5 when it collected no test: with set -e that fails the run, as it should.
exec "$MESH_PY" -m pytest -q -p no:cacheprovider "$@"
