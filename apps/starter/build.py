"""Rebuild the demo's starter checkpoints: small geolocators trained here, on the CPU, on procedural world photos.

    python apps/starter/build.py --threads 1   # ~90 min on 2 CPU cores; data cached in outputs/starter_data

1. Procedural world photos (``generate_world``, 20K training photos, 20% of them at the fixed landmark sites so
   the 1 km scale is learnable) embedded with the shipped ``procedural-clip`` backbone.
2. GeoCLIP, LocDiff and a Riemannian sphere flow trained on those embeddings by the project's own scripts
   (``train/train_*.py``) with ``--attach_backbone``: each checkpoint names the frozen backbone, so it predicts from
   images, and stays a few MB (the backbone's weights ship inside geo_models).
3. A GPS-to-image pipeline for the generate tab: 4,000 procedural Manhattan photos (32 px, captions without place
   names), a small SD-like base trained from scratch (``geo_models.generation.small_base``: VAE, then text-to-image),
   fine-tuned by ``train/train_gps_to_image.py`` (see bench/README.md "GPS-to-image learning" for what it learns).
4. An angle-to-image model of the procedural landmark (``generate_landmark``, 1,500 views at 32 px): LoRA (rank 32)
   + angle embedder trained by ``train/train_angle_to_image.py`` on the GPS-to-image starter's base, shipped as the
   LoRA and the embedder alone (``lora_base.json`` names the base; ``apps/landmark3d/inference.py`` loads it), and
   the landmark's 3D model lifted from it by ``train/sds_to_mesh.py --preset cpu`` (``landmark3d/``: mesh.glb
   decimated to 20K faces, turntable, card).
5. Held-out example photos with their GPS in EXIF (the app shows the distance to the truth).
6. ``densities``: GeoCLIP's and LocDiff's density kernels (``fit_density(calibrate=True)``: the vMF concentration, a
   temperature on the weights, a floor for misses; the likely kernel whose 50/90/95% regions hold the truths at those
   rates) fitted on 1,000 held-out procedural photos (seed 2) and written into their configs (``density_kernel``),
   so the app's heatmaps and the calibration are those of a fitted density (issue 18).

Everything lands in ``apps/starter/{geoclip,locdiff,sphere_flow,gps_to_image,angle_to_image,landmark3d,examples}``
(``--models`` picks; ``angle_to_image`` needs ``gps_to_image`` built first); training logs and
checkpoints are left in the cache. ``tests/apps/test_starter.py`` loads what is committed, so the checkpoints cannot
go stale silently.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
STARTER = Path(__file__).resolve().parent
MODELS = ("geoclip", "locdiff", "sphere_flow", "gps_to_image", "angle_to_image", "densities")
DENSITY_VAL = {"num_images": 1000, "seed": 2}  # held-out photos that fit the geolocators' density kernels
# plus the model folders below; pipeline.py: the no-install route of diffusers pipelines
KEEP = {"config.json", "README.md", "model.safetensors", "model_index.json", "pipeline.py"}

TRAIN = {
    "geoclip": ("train_geoclip", [
        "--max_train_steps", "1500", "--train_batch_size", "256", "--learning_rate", "5e-4", "--lr_decay", "0.97",
        "--queue_size", "1024", "--hidden_dim", "512", "--projection_dim", "256", "--num_features", "128",
        "--num_layers", "2", "--gallery_max_points", "20000",
    ]),
    "locdiff": ("train_locdiff", [
        "--degree", "15", "--max_train_steps", "2000", "--train_batch_size", "256", "--learning_rate", "1e-3",
        "--dropout", "0.1", "--decode_anchors", "20000",
    ]),
    "sphere_flow": ("train_flow", [
        "--objective", "riemannian", "--dim", "128", "--depth", "4", "--expansion", "2", "--max_train_steps", "3000",
        "--train_batch_size", "512", "--lr_warmup_steps", "200",
    ]),
}  # fmt: skip
# GPS-to-image: Manhattan street photos with generic captions (the location comes from the GPS alone), a small SD-like
# base trained here (VAE, then text-to-image; geo_models.generation.small_base), then train_gps_to_image (full).
GPS_TO_IMAGE = {"num_images": 4000, "image_size": 32, "vae_steps": 300, "base_steps": 1500, "text_length": 16}
GPS_TO_IMAGE_TRAIN = [
    "--finetune", "full", "--resolution", "32", "--train_batch_size", "16", "--max_train_steps", "2000",
    "--learning_rate", "1e-3", "--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", "50",
    "--area_name", "Manhattan", "--validation_steps", "100000",
]  # fmt: skip


# Angle-to-image: the landmark's views, LoRA on the GPS-to-image starter's base (keeps the starter set small)
LANDMARK = {"num_images": 1500, "image_size": 32}
ANGLE_TO_IMAGE_TRAIN = [
    "--finetune", "lora", "--lora_rank", "32", "--resolution", "32", "--train_batch_size", "16",
    "--max_train_steps", "1500", "--learning_rate", "1e-3", "--lr_scheduler", "constant_with_warmup",
    "--lr_warmup_steps", "50", "--validation_steps", "750",
]  # fmt: skip
LANDMARK3D_KEEP = ("mesh.glb", "turntable.png", "README.md")


def load_script(name: str):
    """A ``train/`` script as a module (its ``main(argv)`` runs it in this process), imported by name from train/."""
    if str(REPO / "train") not in sys.path:
        sys.path.insert(0, str(REPO / "train"))
    return importlib.import_module(name)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default=str(REPO / "outputs" / "starter_data"), help="cache: photos, runs")
    p.add_argument("--output_dir", default=str(STARTER), help="where the checkpoints and examples go")
    p.add_argument("--num_train", type=int, default=20000)
    p.add_argument("--landmark_fraction", type=float, default=0.2)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--num_examples", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine; default: torch's)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    return args


def copy_checkpoint(run: Path, dest: Path) -> None:
    """The saved model without the run's checkpoints, logs and metrics files."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in run.iterdir():
        if item.is_dir() and not item.name.startswith("checkpoint") and item.name not in ("logs", "validation"):
            shutil.copytree(item, dest / item.name)
        elif item.name == "validation" and (item / "final.png").exists():  # the model card's sample grid
            (dest / "validation").mkdir()
            shutil.copy2(item / "final.png", dest / "validation" / "final.png")
        elif item.is_file() and (item.name in KEEP or item.suffix == ".safetensors"):
            shutil.copy2(item, dest / item.name)


def build_gps_to_image(data: Path, output: Path) -> None:
    """City photos -> small base (trained VAE + text-to-image UNet) -> GPS-to-image fine-tuning -> ``output``."""
    from geo_models.data.procedural import generate_city
    from geo_models.generation.small_base import load_pixels, make_small_base, pretrain_small_base, train_small_vae

    cfg, city = GPS_TO_IMAGE, data / "city"
    if not (city / "metadata.csv").exists():
        generate_city(city, cfg["num_images"], image_size=cfg["image_size"], captions="generic", seed=0)
    pixels = None if (data / "city_vae" / "vae_stats.json").exists() else load_pixels([city], cfg["image_size"])
    train_small_vae(data / "city_vae", pixels, pixels if pixels is None else pixels[:256], steps=cfg["vae_steps"])
    base = make_small_base(data / "city_base", data / "city_vae", text_length=cfg["text_length"])
    pretrain_small_base(data / "city_base_pretrained", base, [city], steps=cfg["base_steps"])
    run = data / "run_gps_to_image"
    load_script("train_gps_to_image").main(
        ["--pretrained_model_name_or_path", str(data / "city_base_pretrained"), "--train_data", str(city),
         "--output_dir", str(run), "--checkpointing_steps", "500", "--checkpoints_total_limit", "1",
         "--resume_from_checkpoint", "latest", *GPS_TO_IMAGE_TRAIN]
    )  # fmt: skip
    copy_checkpoint(run, output / "gps_to_image")


def build_angle_to_image(data: Path, output: Path) -> None:
    """Landmark views -> LoRA + angle embedder on the GPS starter's base -> ``output/angle_to_image`` (the adapters,
    the embedder, ``lora_base.json``, the card), then SDS -> ``output/landmark3d`` (mesh, NeRF, turntable, card)."""
    from geo_models.data.procedural import generate_landmark

    views, base = data / "landmark", output / "gps_to_image"
    if not (base / "model_index.json").is_file():
        raise FileNotFoundError(f"{base}: build gps_to_image first (the angle model is a LoRA on its base)")
    if not (views / "metadata.csv").exists():
        generate_landmark(views, LANDMARK["num_images"], image_size=LANDMARK["image_size"], seed=0, progress=False)
    run = data / "run_angle_to_image"
    load_script("train_angle_to_image").main(
        ["--pretrained_model_name_or_path", str(base), "--train_data", str(views), "--output_dir", str(run),
         "--checkpointing_steps", "250", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest",
         *ANGLE_TO_IMAGE_TRAIN]
    )  # fmt: skip
    dest = output / "angle_to_image"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run / "angle_embedder", dest / "angle_embedder")
    for name in ("pytorch_lora_weights.safetensors", "README.md"):
        shutil.copy2(run / name, dest / name)
    (dest / "lora_base.json").write_text(json.dumps({"base_model": "../gps_to_image"}) + "\n")

    lifted = data / "run_landmark3d"
    load_script("sds_to_mesh").main(
        ["--pretrained_model_name_or_path", str(run), "--prompt", "A photo of Meridian Hall", "--output_dir",
         str(lifted), "--preset", "cpu", "--resume_from_checkpoint", "latest", "--mesh_faces", "20000",
         "--mesh_keep_largest"]
    )  # fmt: skip
    dest = output / "landmark3d"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in LANDMARK3D_KEEP:  # the NeRF (2.7 MB) stays in the cache: the app shows the mesh
        shutil.copy2(lifted / name, dest / name)
    with open(dest / "README.md", "a") as card:
        card.write("\nThe starter bundles the mesh and the turntable only; `python apps/starter/build.py --models "
                   "angle_to_image` leaves the NeRF (`nerf/`) in its cache, `outputs/starter_data`.\n")
    for path in dest.rglob("*"):  # safetensors are written 0600 by the atomic saver
        path.chmod(0o755 if path.is_dir() else 0o644)


def fit_densities(data: Path, output: Path) -> dict:
    """Fit the starter GeoCLIP's and LocDiff's density kernels on held-out photos and write them into their
    ``config.json`` (the weights do not change)."""
    from geo_models.data.embeddings import read_embedding_parquet
    from geo_models.data.procedural import generate_world
    from geo_models.geoclip import GeoCLIP
    from geo_models.locdiff.pipeline import LocDiffPipeline

    val, emb_dir = data / "density_val", data / "density_val_emb"
    metadata = val / "metadata.csv"
    if metadata.exists() and len(metadata.read_text().splitlines()) - 1 != DENSITY_VAL["num_images"]:
        shutil.rmtree(val)  # a cache of another size: DENSITY_VAL changed since
        shutil.rmtree(emb_dir, ignore_errors=True)
    if not metadata.exists():
        generate_world(val, DENSITY_VAL["num_images"], seed=DENSITY_VAL["seed"])
    flags = ["--model_name", "procedural-clip", "--pretrained", "procedural", "--batch_size", "256"]
    load_script("embed_images").main(["--train_data", str(val), "--output_dir", str(emb_dir), *flags])
    emb, latlon, _ = read_embedding_parquet(emb_dir)
    kernels = {}
    for name, cls in (("geoclip", GeoCLIP), ("locdiff", LocDiffPipeline)):
        model = cls.from_pretrained(output / name)
        kernels[name] = model.fit_density(emb, latlon, calibrate=True).to_dict()
        config_file = output / name / "config.json"
        config = json.loads(config_file.read_text())
        config["density_kernel"] = kernels[name]
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    print("density kernels:", json.dumps(kernels))
    return kernels


def write_examples(test_dir: Path, dest: Path, n: int) -> None:
    """The first landmark and plain test photos, with their GPS in EXIF, and a CSV of where they were taken."""
    from geo_models.data.exif import gps_exif

    meta = pd.read_csv(test_dir / "metadata.csv")
    on = meta["landmark"] >= 0 if "landmark" in meta else pd.Series(False, index=meta.index)
    rows = pd.concat([meta[on].head(n // 2), meta[~on].head(n - min(n // 2, int(on.sum())))])
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for i, row in enumerate(rows.itertuples()):
        with Image.open(test_dir / row.file_name) as im:
            im.convert("RGB").save(dest / f"{i:02d}.jpg", quality=95, exif=gps_exif(row.latitude, row.longitude))
    out = rows[["latitude", "longitude", "text"]].assign(file_name=[f"{i:02d}.jpg" for i in range(len(rows))])
    out.to_csv(dest / "examples.csv", index=False)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from geo_models.data.procedural import generate_world

    if args.threads:
        torch.set_num_threads(args.threads)

    data, output = Path(args.data_dir), Path(args.output_dir)
    data.mkdir(parents=True, exist_ok=True)
    # 1. Photos (cached) and their procedural-clip embeddings (resumable)
    splits = {"train": (args.num_train, 0), "test": (max(200, args.num_examples), 1)}
    geolocators = set(args.models) & set(TRAIN)
    for split, (n, seed) in splits.items():
        if (split == "test" or geolocators) and not (data / split / "metadata.csv").exists():
            generate_world(data / split, n, seed=seed, landmark_fraction=args.landmark_fraction)
    if geolocators:
        embed = load_script("embed_images")
        flags = ["--model_name", "procedural-clip", "--pretrained", "procedural", "--batch_size", "256"]
        embed.main(["--train_data", str(data / "train"), "--output_dir", str(data / "train_embeddings"), *flags])
    # 2. The three geolocators, each with the backbone attached; the GPS-to-image pipeline
    for name in args.models:
        if name == "gps_to_image":
            build_gps_to_image(data / "gps_to_image", output)
            continue
        if name == "angle_to_image":
            build_angle_to_image(data / "angle_to_image", output)
            continue
        if name == "densities":
            fit_densities(data, output)
            continue
        script, extra = TRAIN[name]
        run = data / f"run_{name}"
        load_script(script).main(
            ["--train_data", str(data / "train_embeddings"), "--output_dir", str(run), "--attach_backbone",
             "--checkpointing_steps", "500", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest",
             "--logging_steps", "100", *extra]
        )  # fmt: skip
        copy_checkpoint(run, output / name)
    if set(args.models) == {"densities"}:  # the configs changed, not the build: its record stays
        return {}
    # 3. Example photos for the app
    write_examples(data / "test", output / "examples", args.num_examples)
    folders = [p for p in output.iterdir() if p.is_dir() and p.name != "__pycache__"]
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in folders}
    rel = {k: (os.path.relpath(v, REPO) if k.endswith("_dir") else v) for k, v in vars(args).items()}
    summary = {"bytes": sizes, "total_mb": round(sum(sizes.values()) / 2**20, 2), "args": rel}
    (output / "build_info.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary["bytes"]), f"total {summary['total_mb']} MB")
    return summary


if __name__ == "__main__":
    main()
