"""Benchmark: LocDiff SHDD encoding/decoding at L=47 (issue 4).

1. Encoding speed: ``real_spherical_harmonics`` (the SHDD encoding, stable vectorised recurrence) in float32 and
   float64 vs SciPy's ``sph_harm_y`` looped over (l, m >= 0) in the same process (real parts assembled as in the
   tests), on the same random points; also the largest difference to SciPy.
2. Spatial drift (paper Table 7: 5.3 km): decode ``encode(x) + N(0, variance)`` and measure the distance to ``x``.
3. Decoding speed with 100K and 1M Fibonacci anchors (points/s) and the clean round-trip error.

    python bench/bench_shdd.py --output_json bench/results/shdd.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from geo_models.locdiff import SHDD
from geo_models.sphere import haversine_km, real_spherical_harmonics, uniform_sphere


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max_degree", type=int, default=47)
    p.add_argument("--encode_points", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of our encoding (median)")
    p.add_argument("--drift_points", type=int, default=1000)
    p.add_argument("--noise_variance", type=float, default=0.01)
    p.add_argument("--decode_points", type=int, nargs=2, default=[1000, 200], help="points for 100K and 1M anchors")
    p.add_argument("--anchor_counts", type=int, nargs=2, default=[100_000, 1_000_000])
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_json", default="bench/results/shdd.json")
    return p.parse_args(argv)


def scipy_encode(latlon: torch.Tensor, L: int) -> np.ndarray:
    from scipy.special import sph_harm_y

    theta = np.deg2rad(90 - latlon[:, 0].double().numpy())
    phi = np.deg2rad(latlon[:, 1].double().numpy())
    out = np.empty((len(theta), (L + 1) ** 2))
    for l in range(L + 1):
        out[:, l * (l + 1)] = sph_harm_y(l, 0, theta, phi).real
        for m in range(1, l + 1):
            y = sph_harm_y(l, m, theta, phi) * (math.sqrt(2) * (-1) ** m)
            out[:, l * (l + 1) + m], out[:, l * (l + 1) - m] = y.real, y.imag
    return out


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def distances(pred, true) -> dict:
    d = haversine_km(pred, true).double()
    return {"median_km": d.median().item(), "mean_km": d.mean().item(), "p90_km": d.quantile(0.9).item()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    gen = torch.Generator().manual_seed(args.seed)
    L = args.max_degree
    results: dict = {"max_degree": L, "dim": (L + 1) ** 2, "num_threads": args.num_threads}

    # 1. encoding speed vs SciPy
    pts = uniform_sphere(args.encode_points, generator=gen, dtype=torch.float64)
    real_spherical_harmonics(pts[:10].float(), L)  # warm-up (plans are cached per degree and dtype)
    t32, _ = timed(lambda: real_spherical_harmonics(pts.float(), L), args.repeats)
    t64, ours = timed(lambda: real_spherical_harmonics(pts, L), args.repeats)
    t_scipy, ref = timed(lambda: scipy_encode(pts, L), 1)
    results["encode"] = {
        "points": args.encode_points,
        "ours_float32_s": t32,
        "ours_float64_s": t64,
        "scipy_s": t_scipy,
        "speedup_float32": t_scipy / t32,
        "speedup_float64": t_scipy / t64,
        "max_abs_diff_float64": float(np.abs(ours.numpy() - ref).max()),
        "max_abs_diff_float32": float(np.abs(real_spherical_harmonics(pts.float(), L).double().numpy() - ref).max()),
    }
    print(json.dumps(results["encode"], indent=1), flush=True)

    # 2. drift under Gaussian noise on the encoding (Table 7)
    shdd = SHDD(L, decode_anchors=args.anchor_counts[0])
    truth = uniform_sphere(args.drift_points, generator=gen)
    noise = torch.randn(args.drift_points, (L + 1) ** 2, generator=gen) * math.sqrt(args.noise_variance)
    drift = {}
    for name, kwargs in (("newton", {"refine": "newton"}), ("mean", {"refine": "mean"}), ("none", {"refine": False})):
        t, pred = timed(lambda kw=kwargs: shdd.decode(shdd.encode(truth) + noise, **kw), 1)
        drift[f"refine={name}"] = {**distances(pred, truth), "seconds": t}
    for lowpass in ("hann", "lanczos", "gaussian"):
        filtered = SHDD(L, decode_anchors=args.anchor_counts[0], lowpass=lowpass)
        t, pred = timed(lambda f=filtered: f.decode(f.encode(truth) + noise), 1)
        drift[f"lowpass={lowpass}, refine=newton"] = {**distances(pred, truth), "seconds": t}
    results["drift"] = {"points": args.drift_points, "noise_variance": args.noise_variance, "results": drift}
    print(json.dumps(results["drift"], indent=1), flush=True)

    # 3. decoding speed and round trip with 100K / 1M anchors
    results["decode"] = []
    for n_points, n_anchors in zip(args.decode_points, args.anchor_counts):
        shdd = SHDD(L, decode_anchors=n_anchors)
        truth = uniform_sphere(n_points, generator=gen)
        e = shdd.encode(truth)
        t, pred = timed(lambda s=shdd, e=e: s.decode(e), 1)
        row = {"anchors": n_anchors, "points": n_points, "seconds": t, "points_per_s": n_points / t}
        results["decode"].append({**row, **distances(pred, truth), "max_km": haversine_km(pred, truth).max().item()})
        print(json.dumps(results["decode"][-1]), flush=True)

    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
