"""Paper Table 3 in miniature (issue 16): angle-guided SDS against DreamFusion with view prompts, on the procedural
landmark with its ground-truth mesh, at equal steps, 3 seeds, with an untrained NeRF as the floor.

    python bench/bench_sds_table3.py --angle_model outputs/angle_starter/angle_to_image \
        --baseline_model outputs/angle_starter/view_prompts --landmark_data outputs/angle_starter/landmark \
        --output_dir outputs/sds_table3 --workers 2

Each (method, seed) is one ``train/sds_to_mesh.py --preset cpu`` run (the baseline adds ``--baseline text_view``; the
same NeRF, cameras, budget and seed), then ``train/evaluate_3d.py`` against the landmark's ``mesh.glb``: (a) silhouette
IoU over 12 azimuths, (b) octant accuracy of 36 renders under Table 2's angle classifier (fitted on the real views).
The floor: the same NeRF untrained (``NeRFField`` with the run's config and seed, its mesh at the same grid). Runs go
``--workers`` at a time, one torch thread each. Writes ``bench/results/sds_table3.json`` and a figure of the seed-0
turntables next to real views at the same azimuths (``bench/results/sds_table3.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "A photo of Meridian Hall"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--angle_model", required=True, help="AngleToImagePipeline (train_angle_to_image.py)")
    p.add_argument("--baseline_model", required=True, help="the same, trained with --view_prompts")
    p.add_argument("--landmark_data", required=True, help="generate_landmark folder (mesh.glb, real views)")
    p.add_argument("--output_dir", default="outputs/sds_table3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--extra", default="", help="more sds_to_mesh flags for every run, e.g. '--max_train_steps 600'")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--output_json", default="bench/results/sds_table3.json")
    p.add_argument("--figure", default="bench/results/sds_table3.png")
    return p.parse_args(argv)


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as f:
        subprocess.run([sys.executable, *cmd], check=True, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def lift(args, method: str, seed: int) -> dict:
    out = Path(args.output_dir) / f"{method}-seed{seed}"
    model = args.angle_model if method == "angle" else args.baseline_model
    if not (out / "mesh.glb").is_file():
        cmd = ["train/sds_to_mesh.py", "--pretrained_model_name_or_path", model, "--prompt", PROMPT,
               "--output_dir", str(out), "--preset", args.preset, "--seed", str(seed),
               "--resume_from_checkpoint", "latest", *args.extra.split()]  # fmt: skip
        if method == "text_view":
            cmd += ["--baseline", "text_view"]
        out.mkdir(parents=True, exist_ok=True)
        run(cmd, out / "run.log")
    return evaluate(args, out)


def floor(args, seed: int) -> dict:
    """The untrained NeRF of a run's config (seed ``seed``) and its mesh."""
    out = Path(args.output_dir) / f"untrained-seed{seed}"
    if not (out / "mesh.glb").is_file():
        config = json.loads((Path(args.output_dir) / f"angle-seed{seed}" / "nerf" / "config.json").read_text())
        code = (
            "import json, sys; from geo_models.sds import NeRFField, export_glb, extract_mesh; "
            "c = {k: v for k, v in json.loads(sys.argv[1]).items() if not k.startswith('_')}; "
            "c['seed'] = int(sys.argv[2]); "
            "f = NeRFField(**c).eval(); f.save_pretrained(sys.argv[3] + '/nerf'); "
            "export_glb(extract_mesh(f, bound=f.bound, resolution=int(sys.argv[4])), sys.argv[3] + '/mesh.glb'); "
            "sys.path.insert(0, 'train'); from sds_to_mesh import save_turntable; from pathlib import Path; "
            "from geo_models.sds import CameraSampler; "
            "save_turntable(f, CameraSampler(resolution=32), Path(sys.argv[3]) / 'turntable.png')"
        )
        out.mkdir(parents=True, exist_ok=True)
        run(["-c", code, json.dumps(config), str(seed), str(out), str(mesh_resolution(args))], out / "run.log")
    return evaluate(args, out)


def mesh_resolution(args) -> int:
    """The runs' marching-cubes grid: ``--mesh_resolution`` in ``--extra``, else the preset's."""
    extra = args.extra.split()
    if "--mesh_resolution" in extra:
        return int(extra[extra.index("--mesh_resolution") + 1])
    sys.path.insert(0, str(REPO / "train"))
    from sds_to_mesh import PRESETS

    return PRESETS[args.preset]["mesh_resolution"]


def evaluate(args, out: Path) -> dict:
    if not (out / "eval_3d.json").is_file():
        reference = Path(args.landmark_data) / "mesh.glb"
        run(["train/evaluate_3d.py", "--run", str(out), "--reference", str(reference)], out / "eval.log")
    return json.loads((out / "eval_3d.json").read_text())


def summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("iou_mean", "octant_acc", "angle_acc"):
        values = [r[key] for r in rows]
        out[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}  # fmt: skip
    return out


def figure(args, seeds) -> None:
    """Seed-0 turntables (8 azimuths from north) of each method under real views at the same azimuths."""
    import pandas as pd
    from PIL import Image, ImageDraw

    rows = []
    for method in ("untrained", "text_view", "angle"):
        path = Path(args.output_dir) / f"{method}-seed{seeds[0]}" / "turntable.png"
        if path.is_file():
            rows.append((method, Image.open(path).convert("RGB")))
    if not rows:
        return
    meta = pd.read_csv(Path(args.landmark_data) / "metadata.csv")
    height = rows[0][1].height
    real = Image.new("RGB", (8 * height, height))
    for k in range(8):
        diff = ((meta["azimuth_deg"] - 45 * k + 180) % 360 - 180).abs()
        photo = Image.open(Path(args.landmark_data) / meta.loc[diff.idxmin(), "file_name"]).convert("RGB")
        real.paste(photo.resize((height, height)), (k * height, 0))
    rows.append(("real views", real))
    label_w = 90
    canvas = Image.new("RGB", (label_w + rows[0][1].width, height * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, image) in enumerate(rows):
        canvas.paste(image, (label_w, i * height))
        draw.text((4, i * height + height // 2 - 5), name, fill="black")
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST).save(args.figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(method, seed) for seed in seeds for method in ("angle", "text_view")]
    with ThreadPoolExecutor(args.workers) as pool:
        results = dict(zip(jobs, pool.map(lambda job: lift(args, *job), jobs)))
        floors = list(pool.map(lambda seed: floor(args, seed), seeds))
    table = {
        "angle (ours, GPS-guided SDS)": summary([results["angle", s] for s in seeds]),
        "text_view (DreamFusion, view prompts)": summary([results["text_view", s] for s in seeds]),
        "untrained NeRF (floor)": summary(floors),
    }
    result = {"seeds": seeds, "preset": args.preset, "extra": args.extra, "table": table,
              "classifier_real_views": results["angle", seeds[0]]["classifier_real_views"]}  # fmt: skip
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    figure(args, seeds)
    print("| method | silhouette IoU | octant acc. (%) | 10-degree bin acc. (%) |\n|---|---|---|---|")
    for name, row in table.items():
        digits = {"iou_mean": 3, "octant_acc": 1, "angle_acc": 1}
        cells = [f"{row[k]['mean']:.{d}f} ± {row[k]['std']:.{d}f}" for k, d in digits.items()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return result


if __name__ == "__main__":
    main()
