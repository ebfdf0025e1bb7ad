"""Peak memory of GeoCLIP retrieval on many images: ``GeoCLIP.predict`` (one reused logits buffer, in-place softmax)
against the same retrieval written with fresh per-chunk temporaries (what ``predict`` did before), each in a fresh
process (peak RSS only grows within a process), same model, gallery, inputs and chunk size.

    python bench/bench_geoclip_memory.py --num_images 100000 --output_json bench/results/geoclip_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from geo_models.geoclip import GeoCLIP

variant, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = GeoCLIP.from_official()
feats = torch.randn(n, 768, generator=torch.Generator().manual_seed(0))
gallery = model.resolve_gallery(None)
model.gallery_embeddings(gallery)  # cached before timing, in both variants
ready_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.no_grad():
    if variant == "library":
        pred = model.predict(image_embeddings=feats, top_k=5, batch_size=batch)
        scores = pred.scores
    else:  # the former predict loop: fresh (batch, G) logits, softmax and top-k per chunk
        emb, out = model.gallery_embeddings(gallery), []
        for i in range(0, n, batch):
            logits = model.logit_scale.exp() * model.encode_image_embeddings(feats[i : i + batch]) @ emb.T
            out.append(logits.softmax(dim=-1).topk(5, dim=-1).values)
        scores = torch.cat(out)
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mb": peak_kb / 1024, "before_retrieval_mb": ready_kb / 1024, "seconds": seconds,
                  "checksum": float(scores[:, 0].double().sum())}))
"""


def run(variant: str, n: int, batch: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, variant, str(n), str(batch)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=100_000)
    parser.add_argument("--batch_size", type=int, default=256, help="images per chunk (predict's default)")
    parser.add_argument("--output_json", default="bench/results/geoclip_memory.json")
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.batch_size < 1:
        parser.error("--num_images and --batch_size must be >= 1")
    started = time.perf_counter()
    rows = {v: run(v, args.num_images, args.batch_size) for v in ("per_chunk_temporaries", "library")}
    lib, old = rows["library"], rows["per_chunk_temporaries"]
    result = {
        "num_images": args.num_images,
        "gallery": "official 100K",
        "batch_size": args.batch_size,
        "threads": 1,
        "rows": rows,
        "peak_rss_ratio_old_over_library": old["peak_rss_mb"] / lib["peak_rss_mb"],
        "same_top1_scores": abs(old["checksum"] - lib["checksum"]) < 1e-3 * max(1.0, abs(old["checksum"])),
        "bench_seconds": time.perf_counter() - started,
    }
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    print("| variant | peak RSS (MB) | RSS before retrieval (MB) | retrieval s |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['peak_rss_mb']:.0f} | {row['before_retrieval_mb']:.0f} | {row['seconds']:.1f} |")
    print(f"ratio {result['peak_rss_ratio_old_over_library']:.2f}x, same top-1 scores: {result['same_top1_scores']}")
    return result


if __name__ == "__main__":
    main()
