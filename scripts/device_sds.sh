#!/usr/bin/env bash
# Score distillation on a CUDA machine (issue 16): SDS steps/s (fp32, bf16) with the UNet / VAE / NeRF shares and mesh
# export times, CPU-vs-CUDA agreement of renders and gradients, and train/sds_to_mesh.py --device cuda (the smoke
# preset, then the full CPU preset's 1,200 steps, fp32 and bf16) on the starter angle model. Wheels missing there
# (diffusers, trimesh, ...) travel in .whl/ (see bench/README.md). Results go to $OUT (or /tmp).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
source scripts/device_env.sh  # the carried wheels, PYTHONPATH
nvidia-smi -L
P=apps/starter/angle_to_image
python3 bench/bench_sds_steps.py --pipeline $P --devices cuda --threads 8 --output_json "$OUT/sds_steps_cuda.json" \
  2>&1 | grep -v "Loading\|it/s" | tail -3
python3 bench/bench_sds_steps.py --pipeline $P --devices cuda --dtype bfloat16 --mesh_resolutions 128 --threads 8 \
  --output_json "$OUT/sds_steps_cuda_bf16.json" 2>&1 | grep -v "Loading\|it/s" | tail -3
python3 bench/bench_sds_render.py --devices cpu,cuda --repeats 2 --output_json "$OUT/sds_render_cuda.json" 2>&1 | tail -5
python3 -c "from apps.landmark3d.inference import load_angle_to_image as l; l('$P').save_pretrained('/tmp/angle')" \
  2>&1 | tail -1
run() {  # name, flags...
  local name=$1; shift
  local start=$(date +%s.%N)
  python3 train/sds_to_mesh.py --pretrained_model_name_or_path /tmp/angle --prompt "A photo of Meridian Hall" \
    --output_dir "/tmp/$name" --device cuda "$@" > "/tmp/$name.log" 2>&1
  local rc=$? end=$(date +%s.%N)
  echo "$name rc=$rc seconds=$(python3 -c "print(round($end - $start, 1))")" | tee -a "$OUT/sds_to_mesh_cuda.txt"
  grep -a "Error\|error" "/tmp/$name.log" | tail -3
}
run smoke --preset smoke
run cpu_preset_fp32 --preset cpu
run cpu_preset_bf16 --preset cpu --mixed_precision bf16
python3 - <<'PY' | tee -a "$OUT/sds_to_mesh_cuda.txt"
import json, trimesh
for name in ("smoke", "cpu_preset_fp32", "cpu_preset_bf16"):
    try:
        m = trimesh.load(f"/tmp/{name}/mesh.glb", force="mesh")
        log = [json.loads(l) for l in open(f"/tmp/{name}/logs/train_log.jsonl")]
        print(name, "faces", len(m.faces), "colours", m.visual.vertex_colors.shape, "last loss", log[-1]["loss"])
    except Exception as err:  # report, go on
        print(name, "failed:", err)
PY
cp /tmp/cpu_preset_fp32/turntable.png "$OUT/turntable_cuda_fp32.png" 2>/dev/null
cp /tmp/cpu_preset_bf16/turntable.png "$OUT/turntable_cuda_bf16.png" 2>/dev/null
