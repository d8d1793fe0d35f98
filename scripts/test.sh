#!/usr/bin/env bash
# Set up everything and run the whole test suite: lint, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/vhd -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check sm srtypes tests benchmarks bin
echo "== mypy" && mypy
echo "== pytest"
set +e
python -m pytest -n "${SM_TEST_WORKERS:-auto}" "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit $rc
