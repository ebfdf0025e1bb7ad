"""Evaluate GPS-to-image / angle-to-image generation: Table 1 (CLIP score, GPS score) and Table 2 (angle accuracy).

GPS mode (a ``GPSToImagePipeline``): for each (latitude, longitude, text) pair of ``--pairs`` (CSV) or of a held-out
imagefolder (``--test_data``, its metadata's ``text``), generate N images and score them. Rows: the model with text +
GPS; the same model with GPS zeroed (``gps_guidance_scale = 0``: eq. 4 keeps only the text-only and unconditional
predictions, whose GPS tokens are zeros); the model with text zeroed (empty prompt: GPS only, "Ours (w/o text)");
the GPS nearest-neighbour training image (``--train_data``); and the real held-out photos (``--test_data``).
CLIP score = ``max(100 cos, 0)`` with ``--clip_model``; GPS score = ``100 cos`` with ``--gps_clip`` (both averaged).

Angle mode (an ``AngleToImagePipeline``): fit a linear angle classifier (36 ten-degree bins) on real views of
``--landmark_data`` (or load ``--angle_classifier``), then report the accuracy of generated views at ``--azimuths``.

Examples:
    python train/evaluate_generation.py --pipeline outputs/gps-to-image --gps_clip outputs/gps-clip \
        --clip_model ViT-L-14 --clip_pretrained openai --pairs eval_pairs.csv --train_data data/city \
        --num_images_per_pair 4 --output_json outputs/table1.json --sample_grid outputs/table1.png
    python train/evaluate_generation.py --pipeline outputs/angle --landmark_data data/landmark \
        --clip_model procedural-clip --clip_pretrained procedural --output_json outputs/table2.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import torch

from geo_models.generation.evaluation import (
    AngleClassifier,
    angle_accuracy,
    chance_angle_accuracy,
    clip_score,
    colour_features,
    fit_angle_classifier,
    generate_images,
    image_grid,
    markdown_table,
    nearest_neighbour_indices,
    paired_difference,
)
from geo_models.io import write_json_atomic

logger = logging.getLogger("evaluate_generation")
TABLE1_COLUMNS = [("method", "Method"), ("clip_score", "CLIP Score"), ("gps_score", "GPS Score"), ("avg", "Avg")]
TABLE2_COLUMNS = [("method", "Method"), ("angle_acc", "Angle acc (%)"), ("octant_acc", "Octant acc (%)"), ("n", "n")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", required=True, help="saved GPSToImagePipeline / AngleToImagePipeline (dir or repo)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--clip_model", default="ViT-L-14", help="open_clip architecture for the CLIP score / features")
    p.add_argument("--clip_pretrained", default="openai", help="its open_clip tag or weights file")
    p.add_argument("--num_images_per_pair", type=int, default=1, help="images per GPS-text pair / per azimuth")
    p.add_argument("--num_inference_steps", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=8, help="images generated per pipeline call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample_grid", default=None, help="also write a PNG grid of samples (rows = methods)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g = p.add_argument_group("GPS mode (Table 1)")
    g.add_argument("--gps_clip", default=None, help="saved GPS-CLIP (dir or repo id), with an image backbone")
    g.add_argument("--pairs", default=None, help="CSV with columns latitude, longitude, text")
    g.add_argument("--test_data", default=None, help="held-out imagefolder (pairs from its metadata) instead")
    g.add_argument("--train_data", default=None, help="training imagefolder: the GPS nearest-neighbour baseline")
    g.add_argument("--max_pairs", type=int, default=None, help="use only the first N pairs")
    g.add_argument("--text_guidance_scale", type=float, default=3.5)
    g.add_argument("--gps_guidance_scale", type=float, default=7.5)
    g.add_argument("--no_gps_only", action="store_true", help="skip the text-zeroed (GPS-only) row")
    a = p.add_argument_group("angle mode (Table 2)")
    a.add_argument("--landmark_data", default=None, help="imagefolder of real views with azimuth_deg (classifier)")
    a.add_argument("--angle_classifier", default=None, help="load a saved classifier instead of fitting one")
    a.add_argument("--save_angle_classifier", default=None, help="save the fitted classifier here")
    a.add_argument("--angle_features", choices=["backbone", "colour"], default="backbone")
    a.add_argument("--holdout_fraction", type=float, default=0.2, help="real views held out to check the classifier")
    a.add_argument("--azimuths", type=float, nargs="+", default=None, help="default: the 36 bin centres")
    a.add_argument("--prompt", default=None, help="default: 'A photo of {name}' from landmark.json")
    a.add_argument("--guidance_scale", type=float, default=7.5)
    args = p.parse_args(argv)
    for name in ("num_images_per_pair", "num_inference_steps", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_pairs is not None and args.max_pairs < 1:
        p.error(f"--max_pairs must be >= 1, got {args.max_pairs}")
    if not 0 <= args.holdout_fraction < 1:
        p.error(f"--holdout_fraction must be in [0, 1), got {args.holdout_fraction}")
    for flag in ("pairs", "test_data", "train_data", "landmark_data", "angle_classifier"):
        if getattr(args, flag) and not Path(getattr(args, flag)).exists():
            p.error(f"--{flag}: {getattr(args, flag)} does not exist")
    return args


def load_pairs(args) -> tuple[pd.DataFrame, list | None]:
    """``(frame with latitude, longitude, text; real images or None)`` from ``--pairs`` or ``--test_data``."""
    from geo_models.data import GeoImageFolder
    from geo_models.generation import check_coordinates

    if (args.pairs is None) == (args.test_data is None):
        raise ValueError("GPS mode needs exactly one of --pairs (CSV) or --test_data (imagefolder)")
    real = None
    if args.pairs:
        frame = pd.read_csv(args.pairs)
    else:
        ds = GeoImageFolder(args.test_data)
        frame = ds.metadata.copy()
        real = list(range(len(ds)))
    missing = [c for c in ("latitude", "longitude", "text") if c not in frame.columns]
    if missing:
        raise ValueError(f"--{'pairs' if args.pairs else 'test_data'}: missing column(s) {missing}")
    frame = frame.head(args.max_pairs) if args.max_pairs else frame
    if not len(frame):
        raise ValueError("--pairs / --test_data: no GPS-text pairs")
    try:
        check_coordinates(frame["latitude"].tolist(), frame["longitude"].tolist())
    except ValueError as err:
        raise ValueError(f"--{'pairs' if args.pairs else 'test_data'}: {err}") from err
    frame["text"] = frame["text"].fillna("").astype(str)
    if real is not None:
        real = [ds[i]["image"] for i in range(len(frame))]
    return frame.reset_index(drop=True), real


def score_row(method, images, texts, latlon, gps_clip, backbone, *, with_text=True, per_point=1) -> dict:
    """Mean CLIP / GPS scores, and the GPS score of each point (mean of its ``per_point`` images) for paired tests."""
    cs = clip_score(backbone, images, texts).mean().item() if with_text else None
    gs = gps_clip.gps_score(images, latlon).float()
    return {
        "method": method,
        "clip_score": cs,
        "gps_score": gs.mean().item(),
        "avg": (cs + gs.mean().item()) / 2 if cs is not None else None,
        "n": len(images),
        "gps_score_per_point": [round(v, 4) for v in gs.view(-1, per_point).mean(1).tolist()],
    }


PAIRED = (  # (a, b): is a's GPS score higher than b's on the same points (and, for generated rows, the same noise)?
    ("Ours (text + GPS)", "Ours, GPS zeroed (text only)"),
    ("Ours, text zeroed (GPS only)", "Ours, GPS zeroed (text only)"),
    ("Ours (text + GPS)", "GPS NN (training image)"),
    ("Ours, text zeroed (GPS only)", "GPS NN (training image)"),
)


def paired_gps_scores(rows: list[dict]) -> list[dict]:
    """:func:`paired_difference` of the per-point GPS scores for the pairs of :data:`PAIRED` present in ``rows``."""
    by = {r["method"]: r["gps_score_per_point"] for r in rows if "gps_score_per_point" in r}
    return [{"a": a, "b": b, **paired_difference(by[a], by[b])} for a, b in PAIRED if a in by and b in by]


def evaluate_gps(args, pipe, backbone) -> tuple[list[dict], list[list]]:
    from geo_models.data import GeoImageFolder
    from geo_models.hub import load_model

    if not args.gps_clip:
        raise ValueError("--gps_clip is required for a GPSToImagePipeline (the GPS score)")
    gps_clip = load_model(args.gps_clip).to(args.device)
    if getattr(gps_clip, "backbone", None) is None:
        raise ValueError(f"--gps_clip: {args.gps_clip} has no image backbone (train it with --attach_backbone)")
    frame, real = load_pairs(args)
    n = args.num_images_per_pair
    texts = frame["text"].tolist()
    latlon = torch.tensor(frame[["latitude", "longitude"]].to_numpy(), dtype=torch.float32)
    rep_texts, rep_latlon = [t for t in texts for _ in range(n)], latlon.repeat_interleave(n, 0)
    cond = {"latitude": frame["latitude"].tolist(), "longitude": frame["longitude"].tolist()}
    common = dict(
        num_images_per_pair=n,
        batch_size=args.batch_size,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        text_guidance_scale=args.text_guidance_scale,
    )
    rows, samples = [], []
    if args.train_data:  # GPS NN: the training photo nearest to the query point
        train = GeoImageFolder(args.train_data)
        idx = nearest_neighbour_indices(latlon, train.latlon)
        nn_images = [train[int(i)]["image"] for i in idx]
        rows.append(score_row("GPS NN (training image)", nn_images, texts, latlon, gps_clip, backbone))
        samples.append(nn_images)
    variants = [("Ours (text + GPS)", texts, args.gps_guidance_scale, True)]
    variants.append(("Ours, GPS zeroed (text only)", texts, 0.0, True))
    if not args.no_gps_only:
        variants.append(("Ours, text zeroed (GPS only)", [""] * len(texts), args.gps_guidance_scale, False))
    for method, prompts, w_g, with_text in variants:
        images = generate_images(pipe, prompts, cond, gps_guidance_scale=w_g, desc=method, **common)
        rows.append(
            score_row(method, images, rep_texts, rep_latlon, gps_clip, backbone, with_text=with_text, per_point=n)
        )
        samples.append(images[::n])
    if real is not None:
        rows.append(score_row("Real held-out photo", real, texts, latlon, gps_clip, backbone))
        samples.append(real)
    return rows, samples


def landmark_prompt(args) -> str:
    if args.prompt:
        return args.prompt
    info = Path(args.landmark_data or "") / "landmark.json"
    if args.landmark_data and info.is_file():
        return f"A photo of {json.loads(info.read_text())['name']}"
    raise ValueError("--prompt is required (no landmark.json in --landmark_data to take the name from)")


def evaluate_angle(args, pipe, backbone) -> tuple[list[dict], list[list]]:
    from geo_models.data import GeoImageFolder

    def features(images, kind):
        return colour_features(images) if kind == "colour" else backbone.embed_images(images).float().cpu()

    rows = [{"method": "Random chance", **chance_angle_accuracy(), "n": None}]
    samples = []
    if args.angle_classifier:
        classifier = AngleClassifier.load(args.angle_classifier)
        kind = classifier.config.get("features", "backbone")
    else:
        if not args.landmark_data:
            raise ValueError(
                "angle mode needs --landmark_data (real views to fit the classifier) or --angle_classifier"
            )
        ds = GeoImageFolder(args.landmark_data)
        if "azimuth_deg" not in ds.metadata.columns:
            raise ValueError(f"--landmark_data: {args.landmark_data} has no azimuth_deg column")
        kind = args.angle_features
        if len(ds) - int(round(args.holdout_fraction * len(ds))) < 2:  # before embedding every view
            raise ValueError(f"--landmark_data: too few views ({len(ds)}) to fit the classifier on >= 2")
        images = [ds[i]["image"] for i in range(len(ds))]
        config = {"features": kind, "clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained}
        classifier, check, test = fit_angle_classifier(
            features(images, kind), ds.metadata["azimuth_deg"].to_numpy(), holdout_fraction=args.holdout_fraction,
            seed=args.seed, config=config,
        )  # fmt: skip
        if test:
            rows.append({"method": "Real views (held out, classifier check)", **check, "n": len(test)})
            samples.append([images[i] for i in test[:12]])
        if args.save_angle_classifier:
            classifier.save(args.save_angle_classifier)
    azimuths = args.azimuths or [10.0 * b + 5.0 for b in range(36)]
    prompt = landmark_prompt(args)
    images = generate_images(
        pipe,
        [prompt] * len(azimuths),
        {"azimuth": azimuths},
        num_images_per_pair=args.num_images_per_pair,
        batch_size=args.batch_size,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        desc="generating views",
    )
    target = torch.tensor(azimuths).repeat_interleave(args.num_images_per_pair)
    acc = angle_accuracy(classifier.predict(features(images, kind)), target)
    rows.append({"method": "Ours (generated views)", **acc, "n": len(images)})
    samples.append(images[:: args.num_images_per_pair][:12])
    return rows, samples


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from diffusers import DiffusionPipeline

    from geo_models.encoders.image import OpenCLIPBackbone
    from geo_models.generation import AngleToImagePipeline, GPSToImagePipeline

    pipe = DiffusionPipeline.from_pretrained(args.pipeline).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    backbone = OpenCLIPBackbone(args.clip_model, args.clip_pretrained).to(args.device)
    if isinstance(pipe, GPSToImagePipeline):
        mode, columns = "gps", TABLE1_COLUMNS
        rows, samples = evaluate_gps(args, pipe, backbone)
    elif isinstance(pipe, AngleToImagePipeline):
        mode, columns = "angle", TABLE2_COLUMNS
        rows, samples = evaluate_angle(args, pipe, backbone)
    else:
        raise ValueError(f"--pipeline: {type(pipe).__name__} is neither a GPSToImagePipeline nor AngleToImagePipeline")
    table = markdown_table(rows, columns)
    print(table)
    result = {"mode": mode, "rows": rows, "table": table, "args": {k: v for k, v in vars(args).items()}}
    if mode == "gps":
        result["paired"] = paired_gps_scores(rows)
        for p in result["paired"]:
            ci = f"95% CI {p['ci95_low']:+.2f} to {p['ci95_high']:+.2f}"
            print(f"GPS score, {p['a']} - {p['b']}: {p['mean_diff']:+.2f} ({ci}; higher on "
                  f"{100 * p['share_positive']:.0f}% of {p['n']} points)")  # fmt: skip
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output_json, result)
    if args.sample_grid:
        image_grid(samples).save(args.sample_grid)
    return result


if __name__ == "__main__":
    main()
