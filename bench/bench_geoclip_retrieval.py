"""Benchmark: GeoCLIP retrieval speed over the official 100K gallery, given backbone features (issue 3).

1. Per query: our ``GeoCLIP.predict`` (gallery embeddings cached once, then one image per call) vs the official
   ``geoclip`` 1.3.0 ``GeoCLIP.predict`` in the same process, which re-encodes the whole gallery on every call. The
   official model is built from its own classes and weight files; only CLIP ViT-L/14 (not available offline) is
   replaced by a stub whose ``preprocess_image`` hands the query's 768-d backbone features to the official
   ``forward`` (image mlp, location encoder over the gallery, normalise, logits, softmax, top-k). Both sides' top-k are
   compared, too.
2. Batched throughput: ours with batches of B images vs a plain ``torch.matmul`` of the same size
   ``(B, 512) @ (512, 100K)``, timed interleaved in the same process (median of repeats).

    python bench/bench_geoclip_retrieval.py --output_json bench/results/geoclip_retrieval.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from geo_models.geoclip import GeoCLIP


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=50, help="single-image queries timed for ours")
    p.add_argument("--official_queries", type=int, default=3, help="single-image queries timed for the official path")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats per batch size")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_json", default="bench/results/geoclip_retrieval.json")
    return p.parse_args(argv)


def official_model():
    """The official ``GeoCLIP`` (own classes, ``_load_weights``, gallery) without its ViT-L/14: ``preprocess_image``
    returns ``model.query_features`` (the backbone features of the current query) in place of CLIP pixels, and the
    stand-in CLIP passes them through ``get_image_features``."""
    from geoclip.model.GeoCLIP import GeoCLIP as OfficialGeoCLIP
    from geoclip.model.image_encoder import ImageEncoder
    from geoclip.model.location_encoder import LocationEncoder
    from geoclip.model.misc import file_dir, load_gps_data

    class FeaturesAsCLIP(nn.Module):
        def get_image_features(self, pixel_values):
            return pixel_values

    model = OfficialGeoCLIP.__new__(OfficialGeoCLIP)
    nn.Module.__init__(model)
    image_encoder = ImageEncoder.__new__(ImageEncoder)
    nn.Module.__init__(image_encoder)
    image_encoder.CLIP = FeaturesAsCLIP()
    image_encoder.mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))
    image_encoder.preprocess_image = lambda image: model.query_features
    model.image_encoder = image_encoder
    model.location_encoder = LocationEncoder(from_pretrained=False)
    model.register_buffer("gps_gallery", load_gps_data(f"{file_dir}/gps_gallery/coordinates_100K.csv"))
    model.weights_folder = f"{file_dir}/weights"
    model._load_weights()
    return model.eval()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def markdown_tables(out: dict) -> str:
    q = out["per_query"]
    off_s, ours_s = q["official_seconds"], q["ours_seconds"]
    lines = [
        "| per-query retrieval, 100K gallery | median time/query | queries/s |",
        "|---|---|---|",
        f"| official `predict` (re-encodes the gallery) | {off_s:.1f} s | {1 / off_s:.3f} |",
        f"| ours `predict` (cached gallery) | {ours_s * 1e3:.1f} ms | {1 / ours_s:.1f} |",
        f"| **speed-up** | **{q['speedup']:.0f}x** | |",
        f"| ours one-time gallery encoding (100K points) | {out['cache_seconds']:.1f} s | |",
        "",
        "| batch B | ours images/s | ours s/batch | matmul (B,512)@(512,100K) s | ours / matmul speed |",
        "|---|---|---|---|---|",
    ]
    for b in out["batched"]:
        lines.append(
            f"| {b['batch_size']} | {b['images_per_second']:.1f} | {b['ours_seconds']:.4f} | "
            f"{b['matmul_seconds']:.4f} | {100 * b['fraction_of_matmul']:.0f}% |"
        )
    return "\n".join(lines)


@torch.no_grad()
def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    generator = torch.Generator().manual_seed(args.seed)
    features = torch.randn(max(args.queries, max(args.batch_sizes)), 768, generator=generator)

    ours = GeoCLIP.from_official()  # default gallery: the official 100K
    cache_seconds, gallery_emb = timed(lambda: ours.gallery_embeddings(ours.gallery))
    print(f"ours: encoded the {len(ours.gallery)}-point gallery once in {cache_seconds:.1f} s")

    # 1. Per query
    ours_times = [
        timed(lambda i=i: ours.predict(image_embeddings=features[i : i + 1], top_k=args.top_k))[0]
        for i in range(args.queries)
    ]
    official = official_model()
    official_times, same_topk, max_prob_diff = [], True, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "query.png"
        Image.new("RGB", (8, 8)).save(image_path)
        for i in range(args.official_queries):
            official.query_features = features[i : i + 1]
            seconds, (gps, prob) = timed(lambda: official.predict(str(image_path), args.top_k))
            official_times.append(seconds)
            mine = ours.predict(image_embeddings=features[i : i + 1], top_k=args.top_k)
            same_topk &= torch.equal(mine.candidates[0], gps)
            max_prob_diff = max(max_prob_diff, float((mine.scores[0] - prob).abs().max()))
            print(f"official query {i}: {seconds:.1f} s")
    ours_s, official_s = statistics.median(ours_times), statistics.median(official_times)

    # 2. Batched throughput vs a plain matmul of the same size, interleaved
    batched = []
    for b in args.batch_sizes:
        x = features[:b]
        a = torch.randn(b, gallery_emb.shape[1], generator=generator)
        ours.predict(image_embeddings=x, top_k=args.top_k)  # warm-up
        torch.matmul(a, gallery_emb.T)
        t_ours, t_mm = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(lambda x=x: ours.predict(image_embeddings=x, top_k=args.top_k))[0])
            t_mm.append(timed(lambda a=a: torch.matmul(a, gallery_emb.T))[0])
        mo, mm = statistics.median(t_ours), statistics.median(t_mm)
        batched.append(
            dict(
                batch_size=b,
                ours_seconds=mo,
                matmul_seconds=mm,
                images_per_second=b / mo,
                fraction_of_matmul=mm / mo,
            )
        )
        print(f"batch {b}: ours {mo:.4f} s ({b / mo:.1f} images/s), matmul {mm:.4f} s")

    out = {
        "gallery_size": len(ours.gallery),
        "top_k": args.top_k,
        "num_threads": args.num_threads,
        "torch": torch.__version__,
        "cache_seconds": cache_seconds,
        "per_query": {
            "ours_seconds": ours_s,
            "ours_queries": args.queries,
            "official_seconds": official_s,
            "official_queries": args.official_queries,
            "official_all_seconds": official_times,
            "speedup": official_s / ours_s,
            "same_topk_coordinates": same_topk,
            "max_probability_diff": max_prob_diff,
        },
        "batched": batched,
    }
    out["table_markdown"] = markdown_tables(out)
    print(out["table_markdown"])
    path = Path(args.output_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
