#!/usr/bin/env bash
# Set up everything (see scripts/setup.sh), lint, then run the default (fast) test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh --runslow -k sphere`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
ruff check .
python -m pytest -q "$@"
