#!/usr/bin/env bash
# Set up everything (see scripts/setup.sh), then start the demo hub on 127.0.0.1:7860.
# Extra arguments go to apps/hub/app.py (see `python apps/hub/app.py --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec python apps/hub/app.py "$@"
