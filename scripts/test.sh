#!/usr/bin/env bash
# Install everything (scripts/install.sh all) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh all
source scripts/_env.sh
# pytest exits 5 when it collected no test: with set -e that fails the run, as it should.
# One pytest worker per core (pytest-xdist; at most 4), each test file kept on one worker (its module
# fixtures, a local model or a server, are built once): much of the suite waits on servers, subprocesses
# and models, so two workers on CI's two cores took the suite from 22 to 14 minutes on a 2-core VM.
# MESH_TEST_WORKERS=N runs exactly N workers (0: the suite in this process); the cap of 4 is only the
# default's, since xdist's --maxprocesses would also cut an -n given here.
if [[ -n "${MESH_TEST_WORKERS:-}" ]]; then
    workers=(-n "$MESH_TEST_WORKERS")
else
    workers=(-n auto --maxprocesses 4)
fi
exec "$MESH_PY" -m pytest -q -p no:cacheprovider "${workers[@]}" --dist loadfile "$@"
