"""Benchmark of the shipped procedural CLIP backbone: kNN geolocation on its image embeddings vs colour statistics.

A training world set (memory) and a held-out world set generated with another seed; each test image is located at
its nearest training image (top-1) under: cosine similarity of the trained ``procedural-clip`` image embeddings,
cosine similarity of the same architecture with random weights, and the standardised-Euclidean colour-statistics
kNN of ``bench_procedural_world.py``; plus a random training location as chance.

    python bench/bench_procedural_clip.py --num_train 20000 --num_test 2000 \
        --output_json bench/results/procedural_clip.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geo_models.data.procedural import generate_world
from geo_models.encoders.image import OpenCLIPBackbone
from geo_models.sphere import accuracy_within_km, median_km

BENCH = Path(__file__).resolve().parent


def _world_bench():
    """``bench_procedural_world`` (colour_features, knn_predict), imported by name from bench/ (not a package; on
    sys.path already when this runs as ``python bench/bench_procedural_clip.py``, not when imported by a test)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("bench_procedural_world")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train_data", default=None, help="existing world imagefolder as kNN memory (else generated)")
    p.add_argument("--test_data", default=None, help="existing held-out world imagefolder (else generated)")
    p.add_argument("--num_train", type=int, default=20000)
    p.add_argument("--num_test", type=int, default=2000)
    p.add_argument("--train_seed", type=int, default=0)
    p.add_argument("--test_seed", type=int, default=1)
    p.add_argument("--model_name", default="procedural-clip")
    p.add_argument("--pretrained", default="procedural", help="shipped tag, open_clip tag or weights file")
    p.add_argument("--random_seed", type=int, default=0, help="seed of the random-weight backbone")
    p.add_argument("--batch_size", type=int, default=500)
    p.add_argument("--data_dir", default=None, help="where generated sets are written (default: temporary)")
    p.add_argument("--output_json", default="bench/results/procedural_clip.json")
    args = p.parse_args(argv)
    if args.train_seed == args.test_seed and not (args.train_data or args.test_data):
        p.error("--train_seed and --test_seed must differ (held-out images)")
    return args


def load_world(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Imagefolder -> ``(uint8 images (N, H, W, 3), latlon (N, 2) float64)``."""
    import pandas as pd

    root = Path(root)
    meta = pd.read_csv(root / "metadata.csv", dtype={"file_name": str})
    images = np.stack([np.asarray(Image.open(root / f).convert("RGB")) for f in meta["file_name"]])
    return images, meta[["latitude", "longitude"]].to_numpy(np.float64)


@torch.no_grad()
def embed(backbone: OpenCLIPBackbone, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, D)`` L2-normalised ``encode_image`` features (backbone preprocessing)."""
    out = []
    for i in range(0, len(images), batch_size):
        pixels = backbone.preprocess_images([Image.fromarray(a) for a in images[i : i + batch_size]])
        out.append(torch.nn.functional.normalize(backbone.encode_image(pixels).float(), dim=-1))
    return torch.cat(out)


def knn_cosine(train_x: torch.Tensor, train_ll: np.ndarray, test_x: torch.Tensor, chunk: int = 1024) -> np.ndarray:
    """Top-1 cosine neighbour's location for each row of ``test_x`` (rows are L2-normalised)."""
    idx = torch.cat([(test_x[i : i + chunk] @ train_x.T).argmax(1) for i in range(0, len(test_x), chunk)])
    return train_ll[idx.numpy()]


def evaluate(pred, true) -> dict[str, float]:
    return {**accuracy_within_km(pred, true), "median_km": median_km(pred, true)}


def compare(
    train_images,
    train_ll,
    test_images,
    test_ll,
    *,
    model_name: str = "procedural-clip",
    pretrained: str = "procedural",
    random_seed: int = 0,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """The kNN table: method -> metrics (accuracy within km in %, median km)."""
    world = _world_bench()
    trained = OpenCLIPBackbone(model_name, pretrained)
    random = OpenCLIPBackbone(model_name, None, seed=random_seed)
    results = {}
    for name, backbone in ((f"{model_name} ({pretrained})", trained), (f"{model_name} (random weights)", random)):
        tr, te = embed(backbone, train_images, batch_size), embed(backbone, test_images, batch_size)
        results[f"kNN cosine: {name}"] = evaluate(knn_cosine(tr, train_ll, te), test_ll)
    ctr, cte = world.colour_features(train_images), world.colour_features(test_images)
    results["kNN: colour stats"] = evaluate(world.knn_predict(ctr, train_ll, cte, 1), test_ll)
    rng = np.random.default_rng(seed)
    results["chance: random training location"] = evaluate(
        train_ll[rng.integers(0, len(train_ll), len(test_ll))], test_ll
    )
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or tmp)
        timings = {}
        sets = {}
        for split, given, num, seed in (
            ("train", args.train_data, args.num_train, args.train_seed),
            ("test", args.test_data, args.num_test, args.test_seed),
        ):
            root = Path(given) if given else data_dir / f"world_{split}_seed{seed}"
            if not given:
                t0 = time.perf_counter()
                generate_world(root, num, seed=seed, progress=False)
                timings[f"generate_{split}_seconds"] = round(time.perf_counter() - t0, 1)
            sets[split] = load_world(root)
        t0 = time.perf_counter()
        results = compare(
            *sets["train"],
            *sets["test"],
            model_name=args.model_name,
            pretrained=args.pretrained,
            random_seed=args.random_seed,
            batch_size=args.batch_size,
        )
        timings["compare_seconds"] = round(time.perf_counter() - t0, 1)
    table = _world_bench().markdown_table(results)
    out = {
        "model_name": args.model_name,
        "pretrained": args.pretrained,
        "train_data": args.train_data or f"generate_world(n={args.num_train}, seed={args.train_seed})",
        "test_data": args.test_data or f"generate_world(n={args.num_test}, seed={args.test_seed})",
        "n_train": len(sets["train"][1]),
        "n_test": len(sets["test"][1]),
        **timings,
        "results": results,
    }
    print(table)
    path = Path(args.output_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
