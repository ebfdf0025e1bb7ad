"""GPS-to-image and angle-to-image learning on procedural data, trained on this CPU: Table 1 and Table 2 analogues.

1. Data: ``generate_city`` (Manhattan, 32x32, seed 0) split by location (0.01-degree cells, every 5th cell held out,
   see ``generation_base.split_city``) and ``generate_landmark`` views (32x32, seed 0).
2. Base: a small 2x ``AutoencoderKL`` trained here on the training images (city + landmark), a random tiny CLIP text
   model (width 64) and a random small UNet (32/64/64 channels, 16x16x4 latents) -> an SD-style folder.
3. GPS-CLIP (the GPS score): ``train/embed_images.py`` (procedural-clip features of the training / held-out images),
   then ``train/train_gps_clip.py --attach_backbone``.
4. GPS-to-image: ``train/train_gps_to_image.py --finetune full`` on the training split (checkpointed, resumable).
5. Table 1: ``train/evaluate_generation.py`` on the first ``--eval_pairs`` held-out points (their captions): text +
   GPS, GPS zeroed, text zeroed, GPS-NN training image, real held-out photo; CLIP score with procedural-clip.
6. Angle: ``train/train_angle_to_image.py --finetune full`` on the landmark views (same base), then Table 2 with
   ``train/evaluate_generation.py`` (a linear angle classifier fitted on 80% of the real views, checked on 20%;
   generated views at the 36 bin centres) vs chance.

Every stage is cached under ``--data_dir``; ``--reuse`` keeps trained models and finished evaluations, so stages
can run in separate processes (``--stages gps`` and ``--stages angle`` in parallel) and a last ``--reuse`` run
assembles the JSON, the tables and the sample grid.

    python bench/bench_generation_learning.py --output_json bench/results/generation_learning.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from generation_base import landmark_views, split_city
from procedural_embeddings import load_script

from geo_models.generation.small_base import load_pixels, make_small_base, pretrain_small_base, train_small_vae

STAGES = ("data", "gps_clip", "gps", "gps_eval", "angle", "angle_eval")
TRAIN_FLAGS = (  # constant lr after 50 warm-up steps; checkpoints every 100 steps (resume / time budget)
    "--lr_scheduler constant_with_warmup --lr_warmup_steps 50 --checkpointing_steps 100 --checkpoints_total_limit 1"
    " --validation_steps 100000 --validation_inference_steps 20"
)
CLIP_FLAGS = "--clip_model procedural-clip --clip_pretrained procedural"  # CLIP score / angle features


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="outputs/bench_data/generation")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    p.add_argument("--reuse", action="store_true", help="reuse trained models and finished evaluations")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on the shared 2-core box)")
    p.add_argument("--num_images", type=int, default=4000, help="city images (train + held out)")
    p.add_argument("--landmark_images", type=int, default=1500)
    p.add_argument("--vae_steps", type=int, default=300)
    p.add_argument("--text_length", type=int, default=16, help="text tokens of the base (SD: 77)")
    p.add_argument("--base_steps", type=int, default=1500, help="text-to-image steps of the base UNet (0: random)")
    p.add_argument("--captions", choices=["generic", "location"], default="generic",
                   help="city captions: what the photo shows, or generate_city's neighbourhood names")  # fmt: skip
    p.add_argument("--gps_clip_steps", type=int, default=2000)
    p.add_argument("--gps_steps", type=int, default=2000, help="GPS-to-image optimizer steps")
    p.add_argument("--gps_lr", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--angle_steps", type=int, default=2000)
    p.add_argument("--angle_lr", type=float, default=1e-3)
    p.add_argument("--eval_pairs", type=int, default=64, help="held-out GPS-text pairs of Table 1")
    p.add_argument("--num_inference_steps", type=int, default=20)
    p.add_argument("--text_guidance_scale", type=float, default=3.5)
    p.add_argument("--gps_guidance_scale", type=float, default=7.5)
    p.add_argument("--angle_guidance_scale", type=float, default=7.5)
    p.add_argument("--angle_images_per_bin", type=int, default=2)
    p.add_argument("--angle_features", choices=["colour", "backbone"], default="colour")
    p.add_argument("--tag", default="", help="suffix of the evaluation caches (e.g. for a guidance sweep)")
    p.add_argument("--output_json", default="bench/results/generation_learning.json")
    p.add_argument("--sample_grid", default="bench/results/generation_samples.png")
    return p.parse_args(argv)


def train_log(output_dir: Path) -> list[dict]:
    path = output_dir / "logs" / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_training(script: str, output_dir: Path, argv: list[str], reuse: bool) -> dict:
    """Run a train/ script in-process (resuming its latest checkpoint); cached stats in ``output_dir/bench.json``."""
    stats_path = output_dir / "bench.json"
    if reuse and stats_path.exists() and (output_dir / "model_index.json").exists():
        return json.loads(stats_path.read_text())
    resume = ["--resume_from_checkpoint", "latest"] if any(output_dir.glob("checkpoint-*")) else []
    output_dir.mkdir(parents=True, exist_ok=True)
    started = output_dir / "bench_started.txt"  # wall time over interruptions / resumes (e.g. a time budget)
    if not started.exists():
        started.write_text(f"{time.time()}\n")
    t0, c0 = time.time(), time.process_time()
    load_script(script).main([*argv, "--output_dir", str(output_dir), *resume])
    log = train_log(output_dir)
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    stats = {"seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0,
             "wall_seconds": time.time() - float(started.read_text()),
             "last_checkpoint": checkpoints[-1].name if checkpoints else None,
             "last_checkpoint_wall_seconds": checkpoints[-1].stat().st_mtime - float(started.read_text())
             if checkpoints else None,
             "resumed": bool(resume), "argv": argv, "steps_logged": log[-1]["step"] if log else None,
             "first_loss": log[0]["loss"] if log else None,
             "last_losses": [r["loss"] for r in log[-5:]]}  # fmt: skip
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def run_eval(path: Path, argv: list[str], reuse: bool) -> dict:
    if reuse and path.exists():
        return json.loads(path.read_text())
    t0 = time.time()
    result = load_script("evaluate_generation").main([*argv, "--output_json", str(path)])
    result["seconds"] = time.time() - t0
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def crop_grid(path: Path, columns: int, cell: int = 64, size: int = 32):
    """The first ``columns`` cells of an evaluation grid, at ``size`` px per cell (32: the images' own size)."""
    from PIL import Image

    with Image.open(path) as img:
        part = img.crop((0, 0, min(img.width, columns * cell), img.height))
        return part.resize((part.width * size // cell, part.height * size // cell), Image.BILINEAR)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    stages = set(args.stages.split(","))
    unknown = stages - set(STAGES)
    if unknown:
        raise SystemExit(f"--stages: unknown {sorted(unknown)}")
    d = Path(args.data_dir)
    d.mkdir(parents=True, exist_ok=True)
    bs = str(args.batch_size)
    out: dict = {"config": vars(args)}

    # 1-2. data, VAE, base (always: cached)
    city = split_city(d, num_images=args.num_images, captions=args.captions)
    landmark = landmark_views(d, num_images=args.landmark_images)
    train_px = None
    if not (d / "vae" / "vae_stats.json").exists():
        train_px = load_pixels([city["train"], landmark], 32)
    test_px = load_pixels([city["test"]], 32)[:512] if train_px is not None else None
    vae_stats = train_small_vae(d / "vae", train_px, test_px, steps=args.vae_steps)
    out["vae"] = {k: v for k, v in vae_stats.items() if k != "log"}
    base = make_small_base(d / f"base_t{args.text_length}", d / "vae", text_length=args.text_length)
    run = f"_t{args.text_length}_p{args.base_steps}"  # names the base; the GPS runs also name the captions
    if args.base_steps and ({"gps", "angle"} & stages or (d / f"base{run}" / "pretrain_stats.json").exists()):
        out["base"] = pretrain_small_base(d / f"base{run}", base, [city["train"], landmark], steps=args.base_steps)
        out["base"] = {k: v for k, v in out["base"].items() if k != "log"}
        base = d / f"base{run}"
    import pandas as pd

    n_train, n_test = (len(pd.read_csv(city[s] / "metadata.csv")) for s in ("train", "test"))
    out["data"] = {"city_train": n_train, "city_test": n_test, "landmark_views": args.landmark_images}
    print(json.dumps({"vae": out["vae"], "data": out["data"]}), flush=True)

    # 3. GPS-CLIP
    gps_clip = d / "gps_clip"
    if "gps_clip" in stages or "gps_eval" in stages:
        embed = load_script("embed_images")
        emb = {}
        for split in ("train", "test"):
            emb[split] = d / f"{city[split].name}_procedural-clip"
            embed.main(
                f"--train_data {city[split]} --output_dir {emb[split]} --model_name procedural-clip"
                " --pretrained procedural --batch_size 256".split()
            )
        if not (args.reuse and (gps_clip / "eval_results.json").exists()):
            load_script("train_gps_clip").main(
                f"--train_data {emb['train']} --validation_data {emb['test']} --attach_backbone"
                f" --output_dir {gps_clip} --train_batch_size 256 --learning_rate 1e-3 --lr_warmup_steps 100"
                f" --max_train_steps {args.gps_clip_steps} --checkpointing_steps 100000".split()
            )
        out["gps_clip"] = json.loads((gps_clip / "eval_results.json").read_text())

    # 4. GPS-to-image
    gps_dir = d / f"gps_to_image{run}_{args.captions}"
    if "gps" in stages:
        out["gps_training"] = run_training(
            "train_gps_to_image",
            gps_dir,
            f"--pretrained_model_name_or_path {base} --train_data {city['train']} --finetune full --resolution 32"
            f" --train_batch_size {bs} --max_train_steps {args.gps_steps} --learning_rate {args.gps_lr}"
            f" {TRAIN_FLAGS} --area_name Manhattan".split(),
            args.reuse,
        )

    # 5. Table 1
    if "gps_eval" in stages:
        out["table1"] = run_eval(
            d / f"table1{run}_{args.captions}{args.tag}.json",
            f"--pipeline {gps_dir} --gps_clip {gps_clip} {CLIP_FLAGS} --test_data {city['test']}"
            f" --train_data {city['train']} --max_pairs {args.eval_pairs} --num_inference_steps"
            f" {args.num_inference_steps} --batch_size 16 --text_guidance_scale {args.text_guidance_scale}"
            f" --gps_guidance_scale {args.gps_guidance_scale}"
            f" --sample_grid {d / f'table1{run}_{args.captions}{args.tag}.png'}".split(),
            args.reuse,
        )
        print(out["table1"]["table"], flush=True)

    # 6. Angle-to-image and Table 2
    angle_dir = d / f"angle_to_image{run}"
    if "angle" in stages:
        out["angle_training"] = run_training(
            "train_angle_to_image",
            angle_dir,
            f"--pretrained_model_name_or_path {base} --train_data {landmark} --finetune full --resolution 32"
            f" --train_batch_size {bs} --max_train_steps {args.angle_steps} --learning_rate {args.angle_lr}"
            f" {TRAIN_FLAGS}".split(),
            args.reuse,
        )
    if "angle_eval" in stages:
        out["table2"] = run_eval(
            d / f"table2{run}{args.tag}.json",
            f"--pipeline {angle_dir} --landmark_data {landmark} {CLIP_FLAGS} --angle_features {args.angle_features}"
            f" --num_images_per_pair {args.angle_images_per_bin} --num_inference_steps {args.num_inference_steps}"
            f" --batch_size 36 --guidance_scale {args.angle_guidance_scale}"
            f" --sample_grid {d / f'table2{run}{args.tag}.png'}".split(),
            args.reuse,
        )
        print(out["table2"]["table"], flush=True)

    # 7. Sample grid: the first 12 columns of both evaluation grids
    grids = [d / f"table1{run}_{args.captions}{args.tag}.png", d / f"table2{run}{args.tag}.png"]
    if args.sample_grid and all(g.exists() for g in grids) and {"gps_eval", "angle_eval"} <= stages:
        from PIL import Image

        parts = [crop_grid(g, 12) for g in grids]
        grid = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts) + 4), "white")
        grid.paste(parts[0], (0, 0))
        grid.paste(parts[1], (0, parts[0].height + 4))
        Path(args.sample_grid).parent.mkdir(parents=True, exist_ok=True)
        grid.save(args.sample_grid, optimize=True)
    # other tries (guidance sweeps, shorter runs) evaluated with --tag, cached as table{1,2}_<tag>.json
    for i in (1, 2):
        tries = {f.stem[len(f"table{i}") :]: json.loads(f.read_text()) for f in sorted(d.glob(f"table{i}*.json"))}
        out[f"table{i}_tries"] = {k: {"rows": v["rows"], "args": v.get("args")} for k, v in tries.items()}
    for name, folder in (("gps_to_image", gps_dir), ("angle_to_image", angle_dir)):
        out[f"{name}_runs"] = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("bench*.json"))}
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


if __name__ == "__main__":
    main()
