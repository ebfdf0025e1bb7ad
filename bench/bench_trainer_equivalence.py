"""Does a refactor of the training code change what the trainers compute? Every ``train/train_*.py`` script runs the
same tiny training twice, once from an older checkout (``--old``, e.g. ``git worktree add /tmp/old <commit>``) and
once from this one, each in a fresh single-threaded process on the same data and flags; the saved weights and the
logged losses are compared.

    git worktree add /tmp/old 5fea188
    python bench/bench_trainer_equivalence.py --old /tmp/old --output_json bench/results/trainer_equivalence.json

Per trainer: ``identical`` (every saved tensor bit-equal), else the largest absolute weight difference relative to
the weights' scale, and the first / last logged loss of both runs. A difference is expected only where the
arithmetic changed on purpose; the report says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
STEPS = ["--max_train_steps", "6", "--logging_steps", "1", "--checkpointing_steps", "1000", "--seed", "1"]
TRAINERS = {  # name -> (data, flags, saved weight files)
    "train_flow": ("embeddings", ["--dim", "32", "--depth", "2", "--expansion", "2", "--train_batch_size", "16",
                                  "--learning_rate", "1e-3", "--lr_warmup_steps", "2"],
                   ["network/diffusion_pytorch_model.safetensors"]),
    "train_locdiff": ("embeddings", ["--degree", "3", "--block_out_dims", "16", "8", "--time_embed_dim", "16",
                                     "--num_anchors", "128", "--decode_anchors", "500", "--train_batch_size", "16",
                                     "--learning_rate", "1e-3"], ["unet/diffusion_pytorch_model.safetensors"]),
    "train_geoclip": ("embeddings", ["--projection_dim", "16", "--hidden_dim", "32", "--num_features", "16",
                                     "--num_layers", "2", "--queue_size", "64", "--train_batch_size", "16",
                                     "--learning_rate", "1e-3"], ["model.safetensors"]),
    "train_gps_clip": ("embeddings", ["--hidden_dim", "16", "--train_batch_size", "16", "--lr_warmup_steps", "2",
                                      "--learning_rate", "1e-3"], ["model.safetensors"]),
    "train_clip": ("captioned", ["--model_name", "tiny-vit", "--train_batch_size", "4", "--learning_rate", "1e-3",
                                 "--warmup_steps", "1"], ["open_clip_model.safetensors"]),
    "train_gps_to_image": ("city", ["--resolution", "32", "--train_batch_size", "4", "--learning_rate", "1e-3",
                                    "--finetune", "full", "--validation_steps", "100", "--validation_inference_steps",
                                    "2"], ["unet/diffusion_pytorch_model.safetensors",
                                           "gps_embedder/diffusion_pytorch_model.safetensors"]),
    "train_angle_to_image": ("landmark", ["--resolution", "32", "--train_batch_size", "4", "--learning_rate", "1e-3",
                                          "--lora_rank", "2", "--validation_steps", "100",
                                          "--validation_inference_steps", "2"],
                             ["unet/diffusion_pytorch_model.safetensors",
                              "angle_embedder/diffusion_pytorch_model.safetensors"]),
}  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="checkout of the older code (a git worktree)")
    p.add_argument("--trainers", default=",".join(TRAINERS))
    p.add_argument("--workdir", default=None, help="where data and runs go (default: a temporary folder)")
    p.add_argument("--output_json", default="bench/results/trainer_equivalence.json")
    return p.parse_args(argv)


def make_data(root: Path) -> dict[str, list[str]]:
    """The tiny inputs, built once with this checkout: ``--train_data`` (and base) flags per data kind."""
    from geo_models.data.embeddings import write_embedding_parquet
    from geo_models.data.imagefolder import write_imagefolder_metadata
    from geo_models.data.procedural import generate_city, generate_landmark
    from geo_models.testing.tiny import tiny_stable_diffusion_pipeline

    g = torch.Generator().manual_seed(0)
    latlon = torch.rand(96, 2, generator=g) * torch.tensor([140.0, 340.0]) - torch.tensor([70.0, 170.0])
    write_embedding_parquet(root / "emb.parquet", torch.cat([latlon / 90, torch.randn(96, 6, generator=g)], 1), latlon)
    (root / "captioned" / "images").mkdir(parents=True)
    rng, rows = np.random.default_rng(0), []
    for i in range(12):
        pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "captioned" / f"images/{i}.png")
        rows.append({"file_name": f"images/{i}.png", "latitude": -50.0 + 8 * i, "longitude": 20.0 * i - 100,
                     "text": ["a photo of Krakow", "a photo of Tokyo", "the open ocean"][i % 3]})  # fmt: skip
    write_imagefolder_metadata(root / "captioned", pd.DataFrame(rows))
    tiny_stable_diffusion_pipeline().save_pretrained(root / "sd")
    generate_city(root / "city", num_images=16, image_size=32, seed=0, progress=False)
    generate_landmark(root / "landmark", num_images=16, image_size=32, seed=0, progress=False)
    base = ["--pretrained_model_name_or_path", str(root / "sd")]
    return {
        "embeddings": ["--train_data", str(root / "emb.parquet")],
        "captioned": ["--train_data", str(root / "captioned")],
        "city": [*base, "--train_data", str(root / "city")],
        "landmark": [*base, "--train_data", str(root / "landmark")],
    }


def run(checkout: Path, name: str, argv: list[str]) -> subprocess.CompletedProcess:
    """``python <checkout>/train/<name>.py argv`` with that checkout's geo_models first on the path, one thread."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(checkout / "train" / f"{name}.py"), *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def losses(folder: Path) -> list[float]:
    lines = (folder / "logs" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def compare(a: Path, b: Path, files: list[str]) -> dict:
    diff, scale, identical = 0.0, 0.0, True
    for f in files:
        wa, wb = load_file(str(a / f)), load_file(str(b / f))
        if wa.keys() != wb.keys():
            return {"identical": False, "note": f"{f}: other tensors ({sorted(wa.keys() ^ wb.keys())[:3]})"}
        for k in wa:
            if wa[k].is_floating_point():
                identical &= torch.equal(wa[k], wb[k])
                diff = max(diff, (wa[k].double() - wb[k].double()).abs().max().item())
                scale = max(scale, wa[k].double().abs().max().item())
    return {"identical": identical, "max_abs_diff": diff, "relative_diff": diff / max(scale, 1e-12)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    old = Path(args.old).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = make_data(root / "data")
        results = {"old": str(old), "steps": STEPS, "trainers": {}}
        for name in args.trainers.split(","):
            kind, flags, files = TRAINERS[name]
            row = {}
            for label, checkout in (("old", old), ("new", REPO)):
                out = root / f"{name}-{label}"
                done = run(checkout, name, [*data[kind], "--output_dir", str(out), *flags, *STEPS])
                if done.returncode != 0:
                    raise RuntimeError(f"{name} ({label}) failed:\n{done.stderr[-3000:]}")
                row[f"loss_{label}"] = [round(x, 6) for x in losses(out)]
            row.update(compare(root / f"{name}-old", root / f"{name}-new", files))
            results["trainers"][name] = row
            print(name, {k: v for k, v in row.items() if not k.startswith("loss")},
                  "losses old/new:", row["loss_old"][-1], row["loss_new"][-1], flush=True)  # fmt: skip
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
