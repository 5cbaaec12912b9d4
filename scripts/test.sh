#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
# pytest exits 5 when it collected no test: with set -e that fails the run, as it should.
exec "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
