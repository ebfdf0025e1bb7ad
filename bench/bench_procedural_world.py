"""Benchmark of the procedural world data: generation speed and whether location is learnable from the images.

Generates ``--num_images`` world images, then fits a hand-made colour-statistics kNN on 80% and evaluates on the
held-out 20% with ``accuracy_within_km`` / ``median_km``, against two chance baselines: a random training location,
and the training set's most central location (the point with the smallest mean distance to all others).

    python bench/bench_procedural_world.py --num_images 1000 --output_json bench/results/procedural_world.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from geo_models.data.procedural import generate_world
from geo_models.sphere import accuracy_within_km, haversine_km, median_km


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num_images", type=int, default=1000)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_dir", default=None, help="where to write the images (default: a temporary folder)")
    p.add_argument("--output_json", default="bench/results/procedural_world.json")
    return p.parse_args(argv)


def colour_features(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, 88)``: per-channel mean/std of the whole image and 3 horizontal bands,
    plus a normalised 4x4x4 colour histogram."""
    x = images.astype(np.float32) / 255.0
    n, h = len(x), x.shape[1]
    regions = [x, x[:, : h // 3], x[:, h // 3 : 2 * h // 3], x[:, 2 * h // 3 :]]
    stats = [f for r in regions for f in (r.mean(axis=(1, 2)), r.std(axis=(1, 2)))]
    q = np.minimum(images // 64, 3).astype(np.int64)
    bins = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(n, -1)
    hist = np.stack([np.bincount(b, minlength=64) for b in bins]).astype(np.float32) / bins.shape[1]
    return np.concatenate(stats + [np.sqrt(hist)], axis=1)


def knn_predict(train_x, train_ll, test_x, k: int = 1) -> np.ndarray:
    """Standardised Euclidean kNN; ``k > 1`` returns the neighbour closest (haversine) to the other neighbours."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    d = (b**2).sum(1, keepdims=True) - 2 * b @ a.T + (a**2).sum(1)[None]
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    cand = train_ll[nn]  # (M, k, 2)
    if k == 1:
        return cand[:, 0]
    spread = haversine_km(cand[:, :, None], cand[:, None, :]).numpy().sum(-1)  # (M, k)
    return cand[np.arange(len(cand)), spread.argmin(1)]


def evaluate(pred, true) -> dict[str, float]:
    return {**accuracy_within_km(pred, true), "median_km": median_km(pred, true)}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(results.values())))
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or tmp)
        t0 = time.perf_counter()
        meta = generate_world(data_dir, args.num_images, image_size=args.image_size, seed=args.seed, progress=False)
        seconds = time.perf_counter() - t0
        images = np.stack([np.asarray(Image.open(data_dir / f).convert("RGB")) for f in meta["file_name"]])
    latlon = meta[["latitude", "longitude"]].to_numpy(np.float64)
    feats = colour_features(images)
    perm = np.random.default_rng(args.seed).permutation(len(meta))
    n_train = int(0.8 * len(meta))
    tr, te = perm[:n_train], perm[n_train:]
    rng = np.random.default_rng(args.seed + 1)
    mean_dist = haversine_km(latlon[tr][:, None], latlon[tr][None]).numpy().mean(1)
    central = latlon[tr][mean_dist.argmin()]
    results = {
        "kNN k=1 (colour stats)": evaluate(knn_predict(feats[tr], latlon[tr], feats[te], 1), latlon[te]),
        "kNN k=5 medoid (colour stats)": evaluate(knn_predict(feats[tr], latlon[tr], feats[te], 5), latlon[te]),
        "chance: random training location": evaluate(latlon[tr][rng.integers(0, n_train, len(te))], latlon[te]),
        "chance: most central training location": evaluate(np.repeat(central[None], len(te), 0), latlon[te]),
    }
    table = markdown_table(results)
    out = {
        "num_images": args.num_images,
        "image_size": args.image_size,
        "seed": args.seed,
        "generate_seconds": round(seconds, 2),
        "images_per_second": round(args.num_images / seconds, 1),
        "n_train": len(tr),
        "n_test": len(te),
        "land_fraction": float(meta["is_land"].mean()),
        "countries": int(meta["country_code"].nunique()),
        "central_location": [float(c) for c in central],
        "results": results,
    }
    print(f"generated {args.num_images} images of {args.image_size}x{args.image_size} in {seconds:.1f} s")
    print(table)
    path = Path(args.output_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
