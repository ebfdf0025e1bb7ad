"""GeoCLIP learns on the procedural world data: held-out accuracy before/after training vs kNN on the same embeddings.

1. Generate world images (train and test with different seeds) and embed them with a frozen backbone.
2. Baselines on the same embeddings: kNN (top-1 and medoid of 5) with the training set as memory, and an untrained
   GeoCLIP.
3. Train GeoCLIP with train/train_geoclip.py on the embedding parquet (optionally also from the images) and evaluate
   on the test set with the training coordinates as gallery.

    python bench/bench_geoclip_learning.py --output_json bench/results/geoclip_learning.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from procedural_embeddings import load_script, markdown_table, world_embeddings

from geo_models.baselines import KNNGeolocator
from geo_models.data.embeddings import read_embedding_parquet
from geo_models.geoclip import GeoCLIP, deduplicate
from geo_models.sphere import geolocation_metrics

COLUMNS = ["acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_train", type=int, default=20000)
    p.add_argument("--num_test", type=int, default=2000)
    p.add_argument("--backbone", default="procedural-clip")
    p.add_argument("--backbone_pretrained", default="procedural")
    p.add_argument("--data_dir", default="outputs/bench_data", help="cache of generated images and embeddings")
    p.add_argument("--max_train_steps", type=int, default=3000)
    p.add_argument("--train_batch_size", type=int, default=256)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--lr_decay", type=float, default=0.97, help="per epoch (an epoch here is ~80 steps)")
    p.add_argument("--queue_size", type=int, default=4096)
    p.add_argument("--sigmas", default="1,4,16", help="comma-separated RFF sigmas")
    p.add_argument("--projection_dim", type=int, default=128)
    p.add_argument("--hidden_dim", type=int, default=256)
    p.add_argument("--num_features", type=int, default=128)
    p.add_argument("--from_images_steps", type=int, default=0, help="also train from the images (frozen backbone)")
    p.add_argument("--output_json", default="bench/results/geoclip_learning.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = world_embeddings(
        data_dir, num_train=args.num_train, num_test=args.num_test, backbone=args.backbone,
        pretrained=args.backbone_pretrained,
    )  # fmt: skip
    train_emb, train_ll, _ = read_embedding_parquet(paths["train"])
    test_emb, test_ll, _ = read_embedding_parquet(paths["test"])
    results = {}
    knn = KNNGeolocator(embedding_dim=train_emb.shape[1]).fit(train_emb, train_ll)
    results["kNN top-1 (same embeddings)"] = geolocation_metrics(
        knn.predict(image_embeddings=test_emb, top_k=1).latlon, test_ll
    )
    medoid = knn.predict(image_embeddings=test_emb, top_k=5, aggregate="medoid").latlon
    results["kNN medoid of 5 (same embeddings)"] = geolocation_metrics(medoid, test_ll)
    model_args = [
        "--projection_dim", str(args.projection_dim), "--hidden_dim", str(args.hidden_dim),
        "--num_features", str(args.num_features), "--num_layers", "2", "--sigmas", *args.sigmas.split(","),
        "--queue_size", str(args.queue_size), "--train_batch_size", str(args.train_batch_size),
        "--learning_rate", str(args.learning_rate), "--lr_decay", str(args.lr_decay),
        "--checkpointing_steps", "100000", "--logging_steps", "100",
    ]  # fmt: skip
    untrained = GeoCLIP(
        embedding_dim=train_emb.shape[1], projection_dim=args.projection_dim, hidden_dim=args.hidden_dim,
        num_features=args.num_features, num_layers=2, sigmas=tuple(float(s) for s in args.sigmas.split(",")),
    )  # fmt: skip
    untrained.gallery = deduplicate(train_ll)
    results["GeoCLIP untrained"] = geolocation_metrics(
        untrained.predict(image_embeddings=test_emb, top_k=1).latlon, test_ll
    )
    train = load_script("train_geoclip")
    timings = {}
    runs = [("embeddings", paths["train"], args.max_train_steps, [])]
    if args.from_images_steps:
        bb = ["--backbone", args.backbone, "--backbone_pretrained", args.backbone_pretrained]
        runs.append(("images", paths["train_images"], args.from_images_steps, bb))
    for kind, data, steps, extra in runs:
        out_dir = data_dir / f"geoclip_{kind}"
        t0 = time.perf_counter()
        model = train.main(
            ["--train_data", str(data), "--output_dir", str(out_dir), "--max_train_steps", str(steps),
             *model_args, *extra]
        )  # fmt: skip
        timings[kind] = time.perf_counter() - t0
        pred = model.predict(image_embeddings=test_emb, top_k=1).latlon
        results[f"GeoCLIP trained from {kind} ({steps} steps, {timings[kind] / 60:.1f} min)"] = geolocation_metrics(
            pred, test_ll
        )
    table = markdown_table(results, COLUMNS)
    print(table)
    out = {"args": vars(args), "results": results, "train_seconds": timings, "table": table}
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
