#!/usr/bin/env bash
# The training package on a CUDA machine: the harness tests and the trainers' resume / bf16 tests, on the GPU that
# accelerate picks. Where diffusers / open_clip / webdataset are missing, carry their wheels in .whl/ (see
# bench/README.md, "Training package on a GPU"). Logs go to $OUT (or /tmp).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
source scripts/device_env.sh  # the carried wheels, PYTHONPATH
nvidia-smi -L
python3 -c "import torch; from geo_models.training import make_accelerator; print('accelerate device:', \
make_accelerator(mixed_precision='bf16').device, torch.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/training/test_harness.py 2>&1 | tee "$OUT/harness.log" | tail -15
python3 -m pytest -q -p no:cacheprovider tests/training/test_trainers.py -k "${SMOKE_K:-resume or bf16}" 2>&1 \
  | tee "$OUT/trainers.log" | tail -25
