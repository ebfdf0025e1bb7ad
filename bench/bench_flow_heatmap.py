"""The app's fast flow heatmap against the full grid (issue 18): seconds, cells solved, the mass they hold, error.

    python bench/bench_flow_heatmap.py   # ~4 min per photo (the reference grid), one thread

For test photos 1500, 1600, 1700 of the procedural world (``bench/procedural_embeddings.py``, procedural-clip
features) and the starter sphere flow: the answer's 32 guided samples (32 steps, as the app), then
``apps.geolocate.inference.flow_heat_grid`` at 3 degrees against ``density_grid`` at 3 degrees with dopri5 at 1e-5
(7,200 solves; cached in ``outputs/density_bench/flow_ref_<i>.pt``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(photos=(1500, 1600, 1700)) -> list[dict]:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    torch.set_num_threads(1)
    from procedural_embeddings import world_embeddings

    from apps.geolocate.inference import flow_heat_grid
    from geo_models.data.embeddings import read_embedding_parquet
    from geo_models.flow import SphereFlowPipeline

    flow = SphereFlowPipeline.from_pretrained(REPO / "apps" / "starter" / "sphere_flow")
    x, _, _ = read_embedding_parquet(world_embeddings(REPO / "outputs" / "density_bench")["test"])
    rows = []
    for i in photos:
        f = x[i : i + 1]
        pred = flow.predict(image_embeddings=f, num_samples=32, num_inference_steps=32, top_k=5, atol=1e-4,
                            rtol=1e-4, generator=torch.Generator().manual_seed(0))  # fmt: skip
        start = time.perf_counter()
        fast = flow_heat_grid(flow, f, pred.extras["samples"], 3.0)
        fast_s = time.perf_counter() - start
        cache = REPO / "outputs" / "density_bench" / f"flow_ref_{i}.pt"
        if os.path.exists(cache):
            ref = torch.load(cache)
        else:
            ref = flow.density_grid(image_embeddings=f, resolution_deg=3.0, atol=1e-5, rtol=1e-5).log_density[0]
            torch.save(ref, cache)
        solved = ~torch.isnan(fast.log_density[0])
        err = (fast.log_density[0][solved] - ref[solved]).abs()
        mass = ref.exp() * fast.cell_areas()
        rows.append({"photo": i, "seconds": fast_s, "cells": int(solved.sum()), "mass_solved": float(mass[solved].sum()
                     / mass.sum()), "err_median": float(err.median()), "err_max": float(err.max()),
                     "colour_range": float(ref.max() - ref.min())})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
