"""LocDiff-H vs LocDiff vs GeoCLIP on the procedural world (LocDiff paper sec. 5.2): same embeddings, same test images.

Trains GeoCLIP (train/train_geoclip.py) and LocDiff (train/train_locdiff.py) on the procedural-clip embeddings of the
20K training images, then predicts the test images with each and with the hybrid (GeoCLIP retrieval restricted to
200 km around LocDiff's 16 samples or around its point estimate, gallery = GeoCLIP's saved training coordinates).
LocDiff is decoded with a Fibonacci grid of 21K and of 1M anchors (the paper's Table 2 robustness claim).

    python bench/bench_locdiff_hybrid.py --output_json bench/results/locdiff_hybrid.json

``--landmark_fraction 0.2``: the world with landmark photos (exact repeat locations, see
``geo_models.data.procedural.world_landmarks``); metrics are also reported on the landmark photos alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from diffusers import DDIMScheduler
from procedural_embeddings import load_script, markdown_table, world_embeddings

from geo_models.data.embeddings import read_embedding_parquet
from geo_models.geoclip import GeoCLIP
from geo_models.locdiff.pipeline import LocDiffPipeline
from geo_models.sphere import geolocation_metrics

COLUMNS = ["acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="outputs/bench_data", help="cache of generated images, embeddings, models")
    p.add_argument("--num_test", type=int, default=500, help="test images evaluated (first N)")
    p.add_argument("--geoclip_steps", type=int, default=1500)
    p.add_argument("--locdiff_steps", type=int, default=2000)
    p.add_argument("--degree", type=int, default=15)
    p.add_argument("--radius_km", type=float, default=200.0)
    p.add_argument("--anchors", default="21000,1000000", help="decoding anchor-set sizes compared for LocDiff")
    p.add_argument("--landmark_fraction", type=float, default=0.0, help="world photos taken at landmark sites")
    p.add_argument("--pretrained", default="procedural", help="backbone weights of the features ('none': random)")
    p.add_argument("--reuse", action="store_true", help="reuse models trained by an earlier run in data_dir")
    p.add_argument("--output_json", default="bench/results/locdiff_hybrid.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    data_dir = Path(args.data_dir)
    paths = world_embeddings(data_dir, pretrained=args.pretrained, landmark_fraction=args.landmark_fraction)
    test_emb, test_ll, test_other = read_embedding_parquet(paths["test"])
    test_emb, test_ll = test_emb[: args.num_test], test_ll[: args.num_test]
    subsets = {"all": torch.ones(len(test_ll), dtype=torch.bool)}
    if args.landmark_fraction:
        meta = pd.read_csv(paths["test_images"] / "metadata.csv").set_index("file_name")
        landmark = meta.loc[test_other["file_name"][: args.num_test], "landmark"].to_numpy()
        subsets["landmark photos"] = torch.from_numpy(landmark >= 0)
    seconds = {}
    # 1. Train both models on the same embedding parquet
    default_data = not args.landmark_fraction and args.pretrained == "procedural"
    tag = "" if default_data else "_" + paths["train"].name  # models of other data in their own folders
    geoclip_dir, locdiff_dir = data_dir / f"hybrid_geoclip{tag}", data_dir / f"hybrid_locdiff{tag}"
    t0 = time.time()
    train = not (args.reuse and (geoclip_dir / "config.json").exists())
    train and load_script("train_geoclip").main(
        ["--train_data", str(paths["train"]), "--output_dir", str(geoclip_dir), "--max_train_steps",
         str(args.geoclip_steps), "--train_batch_size", "256", "--learning_rate", "5e-4", "--lr_decay", "0.97",
         "--queue_size", "1024", "--hidden_dim", "512", "--projection_dim", "256", "--num_features", "128",
         "--num_layers", "2", "--checkpointing_steps", "1000000", "--logging_steps", "100"]
    )  # fmt: skip
    seconds["train_geoclip"] = time.time() - t0
    t0 = time.time()
    train = not (args.reuse and (locdiff_dir / "config.json").exists())
    train and load_script("train_locdiff").main(
        ["--train_data", str(paths["train"]), "--output_dir", str(locdiff_dir), "--degree", str(args.degree),
         "--max_train_steps", str(args.locdiff_steps), "--train_batch_size", "256", "--learning_rate", "1e-3",
         "--dropout", "0.1", "--decode_anchors", "20000", "--checkpointing_steps", "1000000", "--logging_steps", "100"]
    )  # fmt: skip
    seconds["train_locdiff"] = time.time() - t0
    geoclip = GeoCLIP.from_pretrained(geoclip_dir)
    pipe = LocDiffPipeline.from_pretrained(locdiff_dir)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    # 2. Predict the same test images with each method
    results = {}

    def report(name: str, latlon: torch.Tensor) -> None:
        for subset, keep in subsets.items():
            key = name if subset == "all" else f"{name} [{subset}]"
            results[key] = geolocation_metrics(latlon[keep], test_ll[keep])

    t0 = time.time()
    report("GeoCLIP", geoclip.predict(image_embeddings=test_emb, top_k=1).latlon)
    seconds["predict_geoclip"] = time.time() - t0
    anchors = [int(a) for a in args.anchors.split(",")]
    for n in anchors:
        pipe.shdd.decode_anchors = n
        t0 = time.time()
        seed = torch.Generator().manual_seed(0)
        pred = pipe.predict(image_embeddings=test_emb, num_inference_steps=20, generator=seed)
        seconds[f"predict_locdiff_{n}_anchors"] = time.time() - t0
        report(f"LocDiff (DDIM 20, mean of 16, {n:,} anchors)", pred.latlon)
    pipe.shdd.decode_anchors = anchors[0]
    for around in ("samples", "estimate"):
        t0 = time.time()
        hybrid = pipe.predict_hybrid(
            geoclip, test_emb, radius_km=args.radius_km, around=around, top_k=1, num_inference_steps=20,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        seconds[f"predict_hybrid_{around}"] = time.time() - t0
        where = "the 16 samples" if around == "samples" else "the point estimate"
        report(f"LocDiff-H (GeoCLIP within {args.radius_km:g} km of {where})", hybrid.latlon)
    results = dict(sorted(results.items(), key=lambda kv: "[" in kv[0]))  # all photos first, then subsets
    table = markdown_table(results, COLUMNS)
    print(table)
    out = {"args": vars(args), "results": results, "seconds": seconds, "table": table}
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
