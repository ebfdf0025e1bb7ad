#!/usr/bin/env python
"""Evaluate any geolocator (a saved folder or Hub repo of geo_models) on a geotagged test set.

    python train/evaluate_geolocation.py --model runs/geoclip --test_data emb_test/ --output_json results.json
    python train/evaluate_geolocation.py --model user/knn-baseline --test_data photos/ --output_json r.json --top_k 5

The model is loaded with `geo_models.hub.load_model` (dispatching on config.json's `model_type`) and must have
`predict(images=None, image_embeddings=None, *, top_k, ...) -> GeoPrediction`. This script only parses and checks
the flags: the evaluation itself is `geo_models.evaluation.evaluate_geolocation` (call it from Python on a loaded
model, e.g. with a `torch.Generator` in `predict_kwargs`).

--test_data is one of:
- an embedding dataset: a `.parquet` file or a folder of them (`embedding`, `latitude`, `longitude`, optional
  `file_name`): rows go to `predict(image_embeddings=...)`;
- a geotagged imagefolder (`metadata.csv` / `metadata.jsonl`) or WebDataset shards (a `.tar`, a folder of them or a
  brace pattern `shards-{000..009}.tar`): images go to `predict(images=...)` in batches (the model needs a backbone).

Writes --output_json with exactly {"n", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km",
"geoscore"} (+ "nll", the mean negative log-likelihood in nats over images, when the model has
`log_prob(latlon, image_embeddings=...)`), and a per-image CSV (file_name when known, true and predicted
latitude/longitude, error_km, the top-k candidates as a JSON string, nll when computed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geo_models.evaluation import (  # noqa: F401  (accepts, batch_log_prob, iter_batches: importable from here)
    FORMATS,
    EvaluationInputError,
    accepts,
    batch_log_prob,
    check_gallery,
    check_test_data,
    evaluate_geolocation,
    iter_batches,
)
from geo_models.hub import load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="saved model folder or Hub repo id (any registered model_type)")
    p.add_argument("--revision", default=None, help="Hub revision of --model")
    p.add_argument(
        "--test_data",
        required=True,
        help="embedding parquet file/folder, geotagged imagefolder, or WebDataset shards (.tar, folder, pattern)",
    )
    p.add_argument("--output_json", required=True, help="metrics file to write")
    p.add_argument(
        "--per_image_csv",
        default=None,
        help="per-image results (default: next to --output_json, <name>.per_image.csv; 'none' to skip)",
    )
    p.add_argument("--batch_size", type=int, default=256, help="images (or embeddings) per predict call")
    p.add_argument("--top_k", type=int, default=5, help="candidates per image (kept in the per-image CSV)")
    p.add_argument("--ten_crop", action="store_true", help="ten-crop test-time augmentation (image datasets only)")
    p.add_argument(
        "--gallery",
        default=None,
        help="for retrieval models: 'official', an int N (Fibonacci grid of N points) or a CSV of latitude,longitude",
    )
    p.add_argument("--max_samples", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--skip_nll", action="store_true", help="do not compute the NLL even if the model has log_prob")
    p.add_argument(
        "--predict_kwargs",
        default=None,
        help='extra keyword arguments of the model\'s predict as JSON, e.g. \'{"aggregate": "medoid"}\'',
    )
    p.add_argument("--num_workers", type=int, default=0, help="image-loading workers (imagefolder only)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--calibration",
        action="store_true",
        help="also score the model's density: NLL, coverage and median area of its 50/90/95%% highest-density "
        "regions, and a reliability plot (<output_json stem>.reliability.png); the regions come from "
        "--calibration_samples of the model's own samples per image (a sphere flow: as many likelihood solves)",
    )
    p.add_argument(
        "--calibration_samples", type=int, default=256, help="samples per image for --calibration (>= 16)"
    )
    return p


def flag_message(err: EvaluationInputError, args: argparse.Namespace) -> str:
    """The library's message ``"<argument>...: ..."`` with the argument as its flag (``--model`` with its value)."""
    message, name = str(err), err.argument
    rest = message[len(name) :] if message.startswith(name) else f": {message}"
    return f"--{name} {args.model}{rest}" if name == "model" else f"--{name}{rest}"


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("batch_size", "top_k", "max_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1, got {value}")
    if args.num_workers < 0:
        p.error(f"--num_workers must be >= 0, got {args.num_workers}")
    model = Path(args.model).expanduser()
    if model.exists() and not model.is_dir():
        p.error(f"--model {args.model} is a file; pass the folder written by save_pretrained (with config.json)")
    if model.is_dir() and not (model / "config.json").is_file():
        p.error(f"--model {args.model} has no config.json (not a saved geo_models model)")
    if not model.exists() and (args.model.startswith((".", "/", "~")) or args.model.count("/") > 1):
        p.error(f"--model {args.model}: no such folder (and not a Hub repo id like 'user/name')")
    try:
        args.format = check_test_data(args.test_data)
        args.gallery = check_gallery(args.gallery)
    except EvaluationInputError as err:
        p.error(flag_message(err, args))
    if args.ten_crop and args.format == "embeddings":
        p.error("--ten_crop needs images (an imagefolder or WebDataset), not precomputed embeddings")
    if args.predict_kwargs is not None:
        try:
            args.predict_kwargs = json.loads(args.predict_kwargs)
        except json.JSONDecodeError as err:
            p.error(f"--predict_kwargs must be a JSON object: {err}")
        if not isinstance(args.predict_kwargs, dict):
            p.error("--predict_kwargs must be a JSON object")
    if args.per_image_csv is None:
        out = Path(args.output_json)
        args.per_image_csv = str(out.with_name(f"{out.stem}.per_image.csv"))
    elif args.per_image_csv.lower() == "none":
        args.per_image_csv = None
    return args


def main(argv=None) -> dict[str, float]:
    parser = build_parser()
    args = parse_args(argv)
    try:
        model = load_model(args.model, revision=args.revision)
    except (ValueError, OSError, RuntimeError) as err:
        parser.error(f"--model {args.model}: cannot load it: {err}")
    try:
        metrics = evaluate_geolocation(
            model,
            args.test_data,
            top_k=args.top_k,
            batch_size=args.batch_size,
            ten_crop=args.ten_crop,
            gallery=args.gallery,
            max_samples=args.max_samples,
            skip_nll=args.skip_nll,
            predict_kwargs=args.predict_kwargs,
            num_workers=args.num_workers,
            device=args.device,
            output_json=args.output_json,
            per_image_csv=args.per_image_csv,
            calibration=args.calibration,
            calibration_samples=args.calibration_samples,
        )
    except EvaluationInputError as err:
        parser.error(flag_message(err, args))
    summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"{summary} -> {args.output_json}")
    return metrics


if __name__ == "__main__":
    main()
