"""GeoCLIP's CPU recipe against kNN-1 on the procedural world (issue 18): test accuracy and the learning curve.

1. Procedural world photos through the frozen procedural-clip backbone (``procedural_embeddings``: 20K train,
   seed 0; 2K test, seed 1; 1K validation, seed 2).
2. kNN-1 on the training embeddings: the baseline.
3. GeoCLIP trained by ``train/train_geoclip.py`` with the documented CPU recipe (``RECIPE``, ``--max_train_steps``
   steps), and the same run continued to ``--curve_steps`` with validation every ``--curve_every`` steps: the
   learning curve (the schedule decays per epoch, so the long run passes through the recipe's model). Both evaluated
   with the paper's argmax and with the coarse-to-fine best guess; kNN gets the coarse-to-fine guess over its 64
   neighbours' softmax too (is it the model or the decoding?).
4. ``--output_json`` and a PNG of the curve next to it (validation accuracy at 25 / 200 / 750 / 2500 km per step,
   kNN-1's as dashed lines).

    python bench/bench_geoclip_recipe.py --output_json bench/results/geoclip_recipe.json
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
from geo_models.geoclip import GeoCLIP
from geo_models.geoclip.modeling import COARSE_TO_FINE_KM
from geo_models.plots import line_plot
from geo_models.sphere import geolocation_metrics
from geo_models.sphere.density import coarse_to_fine_mode

COLUMNS = ["acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km"]
THRESHOLDS = (25, 200, 750, 2500)
# the documented CPU recipe (train_geoclip.py --preset cpu: a short run, averaged weights, the coarse-to-fine guess)
RECIPE = ["--preset", "cpu", "--checkpointing_steps", "100000", "--logging_steps", "50"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="outputs/density_bench", help="cache of generated images and embeddings")
    p.add_argument("--output_dir", default="outputs/geoclip_recipe/bench")
    p.add_argument("--max_train_steps", type=int, default=500, help="the recipe's steps")
    p.add_argument("--curve_steps", type=int, default=2000)
    p.add_argument("--curve_every", type=int, default=100)
    p.add_argument("--output_json", default="bench/results/geoclip_recipe.json")
    return p.parse_args(argv)


def knn_coarse_to_fine(knn: KNNGeolocator, x: torch.Tensor) -> torch.Tensor:
    centres, weights = knn._kernel_components(x)
    return coarse_to_fine_mode(centres, weights, COARSE_TO_FINE_KM)


def plot_curve(curves: dict, flat: dict, path: Path, steps: int) -> Path:
    """Validation accuracy per step at each threshold, kNN-1's as dashed lines in the same colours."""
    return line_plot(curves, path, x_range=(0, steps), y_range=(0, 100), x_label="training step",
                     y_label="val acc %", dashed=flat, legend_at=(0.45 * steps, 60),
                     dashed_legend="dashed: kNN-1 at the same distance",
                     title="GeoCLIP (coarse-to-fine) on 1K validation photos vs kNN-1", size=(640, 420))  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    paths = world_embeddings(Path(args.data_dir), num_val=1000)
    train_x, train_y, _ = read_embedding_parquet(paths["train"])
    test_x, test_y, _ = read_embedding_parquet(paths["test"])
    val_x, val_y, _ = read_embedding_parquet(paths["val"])
    knn = KNNGeolocator(embedding_dim=train_x.shape[1]).fit(train_x, train_y)
    results = {
        "kNN-1 (the baseline)": geolocation_metrics(knn.predict(image_embeddings=test_x, top_k=1).latlon, test_y),
        "kNN, coarse-to-fine over its 64 neighbours": geolocation_metrics(knn_coarse_to_fine(knn, test_x), test_y),
    }
    knn_val = geolocation_metrics(knn.predict(image_embeddings=val_x, top_k=1).latlon, val_y)

    train = load_script("train_geoclip")
    out = Path(args.output_dir)
    timings = {}
    validation = ["--validation_data", str(paths["val"]), "--validation_steps", str(args.curve_every)]
    for name, steps, extra in [("recipe", args.max_train_steps, []), ("curve", args.curve_steps, validation)]:
        start = time.perf_counter()
        train.main(["--train_data", str(paths["train"]), "--output_dir", str(out / name), "--max_train_steps",
                    str(steps), *RECIPE, *extra])  # fmt: skip
        timings[name] = time.perf_counter() - start
    model = GeoCLIP.from_pretrained(out / "recipe").eval()
    for rule, label in [("argmax", "the paper's argmax"), ("coarse_to_fine", "coarse-to-fine (the recipe)")]:
        pred = torch.cat([model.predict(image_embeddings=test_x[i : i + 250], top_k=1, point_estimate=rule).latlon
                          for i in range(0, len(test_x), 250)])  # fmt: skip
        results[f"GeoCLIP, {args.max_train_steps} steps, {label}"] = geolocation_metrics(pred, test_y)
    beats = {
        f"acc_{t}km": results[f"GeoCLIP, {args.max_train_steps} steps, coarse-to-fine (the recipe)"][f"acc_{t}km"]
        > results["kNN-1 (the baseline)"][f"acc_{t}km"]
        for t in THRESHOLDS
    }

    # the learning curve, from the long run's validation log
    log = [json.loads(line) for line in (out / "curve" / "logs" / "train_log.jsonl").read_text().splitlines()]
    curve = [row for row in log if "val_acc_25km" in row]
    curves = {f"{t} km": [(row["step"], row[f"val_acc_{t}km"]) for row in curve] for t in THRESHOLDS}
    flat = {f"kNN-1 {t} km": [(0, knn_val[f"acc_{t}km"]), (args.curve_steps, knn_val[f"acc_{t}km"])]
            for t in THRESHOLDS}  # fmt: skip
    png = plot_curve(curves, flat, Path(args.output_json).with_suffix(".curve.png"), args.curve_steps)

    table = markdown_table(results, COLUMNS)
    print(table)
    record = {"args": vars(args), "recipe": RECIPE, "results": results, "beats_knn": beats, "knn_val": knn_val,
              "curve": curve, "train_seconds": timings, "table": table, "curve_png": str(png)}  # fmt: skip
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
