#!/usr/bin/env bash
# Set up everything (see scripts/setup.sh), lint, run the default (fast) test suite, then run the `numerics` tests
# again under another MKL code path. Extra arguments go to both pytest runs, e.g. `bash scripts/test.sh -k sphere`.
#
# Why the second pass: MKL picks memory-alignment- and ISA-dependent kernels, so a float32 result can differ in its
# last bits between machines (AMD EPYC with AVX2 only: a pipeline before and after save/load differs by ~1e-7). A
# test that asserts bit-equality of such results passes on the machine that wrote it and fails on the next. The
# second pass runs on the other kind of path than the first on any machine: where the CPU has AVX-512 (alignment-
# independent kernels by default) it forces MKL's AVX2 kernels; elsewhere (already on AVX2) it uses MKL's
# reproducible "COMPATIBLE" kernels, which round differently. Set GEO_MODELS_SECOND_PASS=0 to skip it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
ruff check .
python -m pytest -q "$@"
if [ "${GEO_MODELS_SECOND_PASS:-1}" != "0" ]; then
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    second=(MKL_ENABLE_INSTRUCTIONS=AVX2)
  else
    second=(MKL_CBWR=COMPATIBLE)
  fi
  echo "[test] numerics tests again with ${second[*]}"
  env "${second[@]}" python -m pytest -q -m numerics "$@"
fi
