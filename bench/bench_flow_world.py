"""Sphere flow on the procedural world: the three objectives vs kNN, NLL, and accuracy vs sampling steps / guidance.

1. Procedural world embeddings (procedural-clip, 20K train / 2K test, shared cache with the other benchmarks).
2. kNN top-1 on the same embeddings; the uniform density's NLL (log 4π = 2.531 nats) as the density baseline.
3. Train one network per objective with train/train_flow.py (same size, steps and seed), then on the first
   ``--num_test`` test images: accuracy of one guided sample (Euler, 32 steps, guidance 2), and the exact NLL of the
   true locations (nats w.r.t. area on the unit sphere, unguided model) on the first ``--num_nll`` images.
4. Riemannian model: accuracy of one guided sample vs sampling steps and vs guidance scale.

    python bench/bench_flow_world.py --output_json bench/results/flow_world.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from procedural_embeddings import load_script, markdown_table, world_embeddings

from geo_models.baselines import KNNGeolocator
from geo_models.data.embeddings import read_embedding_parquet
from geo_models.sphere import geolocation_metrics

COLUMNS = ["acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "nll"]
SWEEP_COLUMNS = ["acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "seconds"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="outputs/bench_data", help="cache of generated images, embeddings, models")
    p.add_argument("--objectives", default="riemannian,flow_r3,diffusion_r3")
    p.add_argument("--max_train_steps", type=int, default=3000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--num_test", type=int, default=1000, help="test images for the accuracies")
    p.add_argument("--num_nll", type=int, default=100, help="test images for the exact NLL")
    p.add_argument("--steps", default="8,16,32,64,250", help="sampling-step sweep (Riemannian model)")
    p.add_argument("--guidance", default="0,1,2,4", help="guidance-scale sweep (Riemannian model)")
    p.add_argument("--reuse", action="store_true", help="reuse models trained by an earlier run in data_dir")
    p.add_argument("--output_json", default="bench/results/flow_world.json")
    return p.parse_args(argv)


def sample_metrics(pipe, emb, latlon, *, steps=32, guidance=2.0) -> dict[str, float]:
    t0 = time.time()
    samples = pipe.sample(  # one guided sample per image (no likelihood: predict() would also score it)
        image_embeddings=emb, num_samples=1, num_inference_steps=steps, guidance_scale=guidance,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return {**geolocation_metrics(samples[:, 0], latlon), "seconds": time.time() - t0}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    data_dir = Path(args.data_dir)
    paths = world_embeddings(data_dir)
    train_emb, train_ll, _ = read_embedding_parquet(paths["train"])
    test_emb, test_ll, _ = read_embedding_parquet(paths["test"])
    emb, ll = test_emb[: args.num_test], test_ll[: args.num_test]
    knn = KNNGeolocator(embedding_dim=train_emb.shape[1]).fit(train_emb, train_ll)
    results = {
        "kNN top-1 (same embeddings)": {**geolocation_metrics(knn.predict(image_embeddings=emb).latlon, ll)},
        "uniform density": {"nll": math.log(4 * math.pi)},
    }
    seconds, pipes = {}, {}
    train = load_script("train_flow")
    from geo_models.flow import SphereFlowPipeline

    for objective in args.objectives.split(","):
        out = data_dir / f"flow_{objective}"
        t0 = time.time()
        if args.reuse and (out / "config.json").exists():
            pipe = SphereFlowPipeline.from_pretrained(out)
        else:
            pipe = train.main(
                ["--train_data", str(paths["train"]), "--output_dir", str(out), "--objective", objective,
                 "--dim", str(args.dim), "--depth", str(args.depth), "--expansion", "2",
                 "--max_train_steps", str(args.max_train_steps), "--train_batch_size", "512",
                 "--lr_warmup_steps", "200", "--checkpointing_steps", "1000000", "--logging_steps", "500"]
            )  # fmt: skip
        seconds[f"train_{objective}"] = time.time() - t0
        pipes[objective] = pipe
        row = sample_metrics(pipe, emb, ll)
        t0 = time.time()
        nll = -pipe.log_prob(test_ll[: args.num_nll], image_embeddings=test_emb[: args.num_nll], atol=1e-5, rtol=1e-5)
        seconds[f"nll_{objective}"] = time.time() - t0
        results[f"{objective}: one guided sample (32 steps, cfg 2)"] = {**row, "nll": nll.mean().item()}
    filled = {name: {c: row.get(c, float("nan")) for c in COLUMNS} for name, row in results.items()}
    table = markdown_table(filled, COLUMNS).replace("| nan", "| -")
    # Sweeps on the Riemannian model
    pipe = pipes.get("riemannian") or next(iter(pipes.values()))
    steps_rows = {f"{s} steps": sample_metrics(pipe, emb, ll, steps=int(s)) for s in args.steps.split(",")}
    guidance_rows = {
        f"guidance {g}": sample_metrics(pipe, emb, ll, guidance=float(g)) for g in args.guidance.split(",")
    }
    tables = [table, markdown_table(steps_rows, SWEEP_COLUMNS), markdown_table(guidance_rows, SWEEP_COLUMNS)]
    print("\n\n".join(tables))
    out = {
        "args": vars(args), "results": results, "steps": steps_rows, "guidance": guidance_rows,
        "seconds": seconds, "tables": tables,
    }  # fmt: skip
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
