#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: apt packages, a venv with pinned requirements, the package itself.
# Sourced by scripts/demo.sh and scripts/test.sh; re-runs are cheap (a stamp keyed by the requirement files).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GEO_MODELS_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
APT_PACKAGES=(chromium)  # headless browser tests of the Gradio apps (never `playwright install`)

install_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "[setup] apt-get install ${missing[*]}"
  local started=$SECONDS
  if ! ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}") >/dev/null; then
    echo "[setup] WARNING: could not install ${missing[*]} with apt; browser tests will be skipped" >&2
  fi
  echo "[setup] apt done in $((SECONDS - started)) s"
}

install_python() {
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  local stamp="$VENV/.geo_models_stamp"
  local want
  want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    local started=$SECONDS
    echo "[setup] installing pinned requirements into $VENV (first run: a few minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements-test.txt"
    # geoclip ships the official GeoCLIP weights; it declares Pillow>=13 while gradio needs Pillow<13.
    "$VENV/bin/python" -m pip install -q --no-deps geoclip==1.3.0
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
    echo "[setup] requirements installed in $((SECONDS - started)) s"
  fi
}

install_apt
install_python
export PATH="$VENV/bin:$PATH"
