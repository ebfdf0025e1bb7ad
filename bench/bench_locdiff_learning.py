"""LocDiff learns on the procedural world embeddings: held-out accuracy vs kNN on the same embeddings.

1. Procedural world images (20K train, 2K test) embedded with the shipped procedural-clip backbone (cached).
2. Baseline: kNN top-1 with the training set as memory.
3. Train LocDiff with train/train_locdiff.py (SHDD degree L, KL loss, Table 3 optimiser) for a fixed number of steps,
   then predict the test set (16 samples, spherical mean) with DDPM 100 steps and DDIM 20 steps.

    python bench/bench_locdiff_learning.py --output_json bench/results/locdiff_learning.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from procedural_embeddings import load_script, world_embeddings

from geo_models.baselines import KNNGeolocator
from geo_models.data.embeddings import read_embedding_parquet
from geo_models.locdiff.pipeline import LocDiffPipeline
from geo_models.sphere import geolocation_metrics

COLUMNS = ["acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="outputs/bench_data", help="cache of generated images and embeddings")
    p.add_argument("--num_train", type=int, default=20000)
    p.add_argument("--num_test", type=int, default=500, help="test images evaluated (first N)")
    p.add_argument("--degree", type=int, default=15)
    p.add_argument("--max_train_steps", type=int, default=2000)
    p.add_argument("--train_batch_size", type=int, default=256)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--loss", choices=["kl", "cosine", "l2", "mse"], default="kl", help="training loss (Table 8)")
    p.add_argument("--decode_anchors", type=int, default=20_000)
    p.add_argument("--output_json", default="bench/results/locdiff_learning.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    paths = world_embeddings(Path(args.data_dir), num_train=args.num_train)
    args.train_data = str(paths["train"])
    train_emb, train_ll, _ = read_embedding_parquet(paths["train"])
    test_emb, test_ll, _ = read_embedding_parquet(paths["test"])
    test_emb, test_ll = test_emb[: args.num_test], test_ll[: args.num_test]
    results: dict = {"config": vars(args), "methods": {}}
    knn = KNNGeolocator(embedding_dim=train_emb.shape[1]).fit(train_emb, train_ll)
    results["methods"]["kNN top-1"] = geolocation_metrics(
        knn.predict(image_embeddings=test_emb, top_k=1).latlon, test_ll
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        load_script("train_locdiff").main(
            ["--train_data", args.train_data, "--output_dir", out, "--degree", str(args.degree),
             "--max_train_steps", str(args.max_train_steps), "--train_batch_size", str(args.train_batch_size),
             "--learning_rate", str(args.learning_rate), "--dropout", str(args.dropout), "--loss", args.loss,
             "--decode_anchors", str(args.decode_anchors), "--checkpointing_steps", "1000000",
             "--logging_steps", "100"]
        )  # fmt: skip
        results["train_seconds"] = time.time() - t0
        log = [json.loads(line) for line in (Path(out) / "logs" / "train_log.jsonl").read_text().splitlines()]
        results["loss_first_last"] = [log[0]["loss"], log[-1]["loss"]]
        pipe = LocDiffPipeline.from_pretrained(out)
    for name, steps, ddim in (("LocDiff DDPM 100 steps", 100, False), ("LocDiff DDIM 20 steps", 20, True)):
        if ddim:
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        t0 = time.time()
        pred = pipe.predict(
            image_embeddings=test_emb, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)
        )
        seconds = time.time() - t0
        results["methods"][name] = {**geolocation_metrics(pred.latlon, test_ll), "seconds": seconds}
        results["methods"][name + " (densest sample)"] = geolocation_metrics(pred.candidates[:, 0], test_ll)
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(results, indent=2))
    print("| method | " + " | ".join(COLUMNS) + " |")
    for name, m in results["methods"].items():
        print(f"| {name} | " + " | ".join(f"{m[c]:.1f}" for c in COLUMNS) + " |")
    print(f"train {results['train_seconds']:.0f} s, loss {results['loss_first_last']}")
    return results


if __name__ == "__main__":
    main()
