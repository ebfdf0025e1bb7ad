#!/usr/bin/env python
"""Evaluate any geolocator (a saved folder or Hub repo of geo_models) on a geotagged test set.

    python train/evaluate_geolocation.py --model runs/geoclip --test_data emb_test/ --output_json results.json
    python train/evaluate_geolocation.py --model user/knn-baseline --test_data photos/ --output_json r.json --top_k 5

The model is loaded with `geo_models.hub.load_model` (dispatching on config.json's `model_type`) and must have
`predict(images=None, image_embeddings=None, *, top_k, ...) -> GeoPrediction`.

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
import inspect
import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from geo_models.data.embeddings import read_embedding_parquet
from geo_models.data.formats import dataset_format
from geo_models.data.imagefolder import GeoImageFolder
from geo_models.data.webdataset import GeoWebDataset, expand_shards
from geo_models.hub import load_model
from geo_models.sphere import geolocation_metrics, haversine_km
from geo_models.training import write_json_atomic

FORMATS = ("embeddings", "imagefolder", "webdataset")


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
    return p


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
    if not Path(args.test_data).exists() and "{" not in args.test_data:
        p.error(f"--test_data {args.test_data} does not exist")
    try:
        args.format = dataset_format(args.test_data)
    except ValueError as err:
        p.error(f"--test_data: {err}")
    if args.format == "webdataset":
        try:
            shards = expand_shards(args.test_data)
        except ValueError as err:
            p.error(f"--test_data: {err}")
        absent = [s for s in shards if not Path(s).is_file()]
        if absent:
            p.error(f"--test_data: {len(absent)} shard(s) not found, e.g. {absent[0]}")
    if args.ten_crop and args.format == "embeddings":
        p.error("--ten_crop needs images (an imagefolder or WebDataset), not precomputed embeddings")
    if args.gallery is not None:
        if args.gallery.isdigit():
            args.gallery = int(args.gallery)
            if args.gallery < 1:
                p.error("--gallery N must be >= 1")
        elif args.gallery != "official" and not Path(args.gallery).is_file():
            p.error(f"--gallery {args.gallery} is neither 'official', an integer, nor an existing CSV file")
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


def accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (explicitly or through ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    return name in params or any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values())


def predict_kwargs(model, args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Keyword arguments of ``model.predict`` from the CLI flags; flags the model cannot take are CLI errors."""
    if not callable(getattr(model, "predict", None)):
        parser.error(f"--model {args.model}: {type(model).__name__} has no predict() (not a geolocator)")
    kwargs: dict[str, Any] = {"top_k": args.top_k}
    if accepts(model.predict, "batch_size"):
        kwargs["batch_size"] = args.batch_size
    if args.ten_crop:
        if not accepts(model.predict, "ten_crop"):
            parser.error(f"--ten_crop: {type(model).__name__}.predict has no ten_crop option")
        kwargs["ten_crop"] = True
    if args.gallery is not None:
        if not accepts(model.predict, "gallery"):
            parser.error(f"--gallery: {type(model).__name__}.predict takes no gallery (not a retrieval model)")
        kwargs["gallery"] = args.gallery
    for key, value in (args.predict_kwargs or {}).items():
        if not accepts(model.predict, key):
            parser.error(f"--predict_kwargs: {type(model).__name__}.predict has no argument {key!r}")
        kwargs[key] = value
    return kwargs


def iter_batches(args: argparse.Namespace):
    """Yield ``(inputs, latlon (B, 2), file_names or None)`` with inputs ``{"image_embeddings": ...}`` or
    ``{"images": [...]}``; and the total count first (None when unknown)."""
    n_max = args.max_samples
    if args.format == "embeddings":
        emb, latlon, frame = read_embedding_parquet(args.test_data)
        names = frame["file_name"].astype(str).tolist() if "file_name" in frame.columns else None
        if n_max is not None:
            emb, latlon, names = emb[:n_max], latlon[:n_max], names[:n_max] if names is not None else None
        yield len(emb)
        for s in range(0, len(emb), args.batch_size):
            e = s + args.batch_size
            yield {"image_embeddings": emb[s:e]}, latlon[s:e], names[s:e] if names is not None else None
        return
    if args.format == "imagefolder":
        dataset = GeoImageFolder(args.test_data)
        n = len(dataset) if n_max is None else min(n_max, len(dataset))
        dataset = torch.utils.data.Subset(dataset, range(n))
        yield n
        items = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=list
        )
    else:
        yield n_max  # unknown length (at most max_samples)
        stream = itertools.islice(iter(GeoWebDataset(args.test_data, split_by_node=False)), n_max)
        items = iter(lambda: list(itertools.islice(stream, args.batch_size)), [])
    for batch in items:
        yield (
            {"images": [b["image"] for b in batch]},
            torch.stack([b["latlon"] for b in batch]),
            [str(b["file_name"]) for b in batch],
        )


def batch_log_prob(model, inputs: dict[str, Any], latlon: torch.Tensor) -> torch.Tensor | None:
    """Per-image log-density (nats) of the true ``latlon (B, 2)``, or None when it cannot be computed for these inputs.

    Called with gradients enabled (exact likelihoods of flow models take Jacobian traces with autograd)."""
    if "image_embeddings" in inputs:
        return model.log_prob(latlon, image_embeddings=inputs["image_embeddings"].to(latlon.device))
    if accepts(model.log_prob, "images"):
        return model.log_prob(latlon, images=inputs["images"])
    if callable(getattr(model, "embed_images", None)):
        with torch.no_grad():
            embeddings = model.embed_images(inputs["images"])
        return model.log_prob(latlon, image_embeddings=embeddings)
    return None


def main(argv=None) -> dict[str, float]:
    parser = build_parser()
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = load_model(args.model, revision=args.revision)
    except (ValueError, OSError, RuntimeError) as err:
        parser.error(f"--model {args.model}: cannot load it: {err}")
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    elif callable(getattr(model, "to", None)):  # pipelines (LocDiff...): not modules, but they move their parts
        model = model.to(device)
    kwargs = predict_kwargs(model, args, parser)
    want_nll = callable(getattr(model, "log_prob", None)) and not args.skip_nll

    batches = iter_batches(args)
    try:
        total = next(batches)
    except ValueError as err:
        parser.error(f"--test_data {args.test_data}: {err}")
    preds, trues, candidates, names, nlls = [], [], [], [], []
    nll_ok = want_nll
    with tqdm(total=total, desc=f"evaluating on {Path(args.test_data).name}", unit="image") as bar:
        for inputs, latlon, file_names in batches:
            try:
                with torch.no_grad():
                    pred = model.predict(**inputs, **kwargs)
            except ValueError as err:
                parser.error(f"--model {args.model} cannot evaluate --test_data {args.test_data}: {err}")
            if len(pred) != len(latlon):
                raise RuntimeError(
                    f"{type(model).__name__}.predict returned {len(pred)} rows for {len(latlon)} inputs"
                )
            preds.append(pred.latlon.detach().float().cpu())
            trues.append(latlon.float())
            candidates.extend(json.dumps(r) for r in pred.to_records())
            names.extend(file_names if file_names is not None else [None] * len(latlon))
            if nll_ok:
                lp = batch_log_prob(model, inputs, latlon.to(device))
                if lp is None:
                    print(f"note: {type(model).__name__}.log_prob needs image_embeddings; no nll for image data")
                    nll_ok = False
                else:
                    nlls.append(-lp.detach().double().cpu().reshape(-1))
            bar.update(len(latlon))
    if not preds:
        parser.error(f"--test_data {args.test_data} has no samples")

    pred_latlon, true_latlon = torch.cat(preds), torch.cat(trues)
    metrics: dict[str, float] = geolocation_metrics(pred_latlon, true_latlon)
    nll = torch.cat(nlls) if nll_ok else None
    if nll is not None:
        metrics["nll"] = float(nll.mean())
    out = Path(args.output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, metrics)

    if args.per_image_csv:
        rows = {}
        if any(n is not None for n in names):
            rows["file_name"] = names
        rows.update(
            true_latitude=true_latlon[:, 0].tolist(),
            true_longitude=true_latlon[:, 1].tolist(),
            pred_latitude=pred_latlon[:, 0].tolist(),
            pred_longitude=pred_latlon[:, 1].tolist(),
            error_km=haversine_km(pred_latlon, true_latlon).tolist(),
            candidates=candidates,
        )
        if nll is not None:
            rows["nll"] = nll.tolist()
        Path(args.per_image_csv).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.per_image_csv, index=False)

    summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"{summary} -> {out}")
    return metrics


if __name__ == "__main__":
    main()
