#!/usr/bin/env bash
# Install pachy with its test tools into REPO/.venv, then lint and run the tests.
#
#   installers/test.sh                 # ruff check . && pytest -q
#   installers/test.sh -k objstore -x  # extra arguments go to pytest
#
# Exits non-zero if the install, ruff or pytest fails (pytest's own exit code
# when it is the one failing; 5 means it collected no tests).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash "$REPO/installers/install.sh" --test

echo "==> ruff check ."
lint=0
.venv/bin/ruff check . || lint=$?

echo "==> pytest -q $*"
tests=0
.venv/bin/pytest -q "$@" || tests=$?

if [ "$tests" -eq 5 ]; then
    echo "test.sh: pytest collected no tests (exit 5)" >&2
fi
if [ "$tests" -ne 0 ] || [ "$lint" -ne 0 ]; then
    echo "test.sh: FAILED (ruff exit $lint, pytest exit $tests)" >&2
    if [ "$tests" -ne 0 ]; then exit "$tests"; fi
    exit "$lint"
fi
echo "==> all checks passed"
