"""Every geolocator's density on the procedural world (issue 18): NLL, coverage and median area of the 50/90/95%
highest-density regions, the integral on a 1-degree grid, and the best guess from the aggregated density against
each paper's own point estimate.

    python bench/bench_densities.py --output_json bench/results/densities.json

Models: the starter GeoCLIP, LocDiff (and LocDiff-H: GeoCLIP within 200 km of LocDiff's samples) and sphere flow of
``apps/starter/``, and a kNN-1 baseline whose memory is the 20K training embeddings. Data: procedural world photos
(``bench/procedural_embeddings.py``: 20K train, seed 0; 2K test, seed 1; ``--num_val`` validation photos, seed 2)
through the frozen procedural-clip backbone; the validation photos fit each kernel (``fit_kernel``: maximum
likelihood, or with ``--calibrate`` the likely kernel whose regions cover the validation truths at nominal rates),
the first ``--num_eval`` test photos are scored. The highest-density regions come from each model's own samples and
their log-densities (Hyndman's sample quantiles, :meth:`CalibrationAccumulator.add_samples`): ``--samples`` draws of
each kernel mixture (GeoCLIP, kNN, LocDiff, LocDiff-H), ``--flow_samples`` unguided samples of the flow with exact
likelihoods, on its first ``--flow_eval`` images (each is a likelihood solve). The flow's normalisation is exact by
construction (its integral on a 1-degree grid is checked on a tiny model in ``tests/test_flow_likelihood.py``: a grid
of the starter flow's sharp density needs 64,800 solves per image, minutes here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (1, 25, 200, 750, 2500)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="outputs/density_bench")
    p.add_argument("--starter_dir", default="apps/starter")
    p.add_argument("--num_val", type=int, default=1000)
    p.add_argument("--num_eval", type=int, default=2000)
    p.add_argument("--calibrate", action="store_true", help="fit the kernels for coverage (fit_kernel(calibrate=))")
    p.add_argument("--integrals_only", action="store_true",
                   help="only the 1-degree integrals of the kernels in --output_json (20 photos)")  # fmt: skip
    p.add_argument("--samples", type=int, default=256, help="samples per image that place the regions")
    p.add_argument("--locdiff_steps", type=int, default=50)
    p.add_argument("--flow_eval", type=int, default=200)
    p.add_argument("--flow_samples", type=int, default=64)
    p.add_argument("--output_json", default="bench/results/densities.json")
    return p.parse_args(argv)


def accuracies(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    from geo_models.sphere import haversine_km

    d = haversine_km(pred.double(), truth.double())
    return {f"acc_{t}km": float((d <= t).double().mean() * 100) for t in THRESHOLDS}


def chunks(n: int, size: int = 250):
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    torch.set_num_threads(1)
    from procedural_embeddings import world_embeddings

    from geo_models.baselines import KNNGeolocator
    from geo_models.calibration import CalibrationAccumulator, reliability_plot
    from geo_models.data.embeddings import read_embedding_parquet
    from geo_models.flow import SphereFlowPipeline
    from geo_models.geoclip import GeoCLIP
    from geo_models.locdiff.pipeline import LocDiffPipeline
    from geo_models.sphere.density import DensityKernel
    from geo_models.sphere.kernel_fit import fit_kernel

    # 1. Data and models
    paths = world_embeddings(REPO / args.data_dir, num_val=args.num_val)
    train_x, train_y, _ = read_embedding_parquet(paths["train"])
    test_x, test_y, _ = read_embedding_parquet(paths["test"])
    val_x, val_y, _ = read_embedding_parquet(paths["val"])
    ev_x, ev_y = test_x[: args.num_eval], test_y[: args.num_eval]
    starter = REPO / args.starter_dir
    geoclip = GeoCLIP.from_pretrained(starter / "geoclip").eval()
    locdiff = LocDiffPipeline.from_pretrained(starter / "locdiff")
    flow = SphereFlowPipeline.from_pretrained(starter / "sphere_flow")
    knn = KNNGeolocator(embedding_dim=train_x.shape[1]).fit(train_x, train_y)
    steps = {"num_inference_steps": args.locdiff_steps}

    def hybrid_components(x):  # LocDiff-H: GeoCLIP's softmax restricted to 200 km around LocDiff's samples
        samples, _ = locdiff._kernel_components(x, **steps)
        return geoclip._kernel_components(x, prior_latlon=samples, prior_radius_km=200.0, prior_fallback=True)

    kernel_models = {  # each model's weighted points (what its paper predicts), spread by a fitted kernel
        "GeoCLIP": geoclip._kernel_components,
        "kNN-1": knn._kernel_components,
        "LocDiff": lambda x: locdiff._kernel_components(x, **steps),
        "LocDiff-H": hybrid_components,
    }
    results, curves = {}, {}
    if args.integrals_only:
        record = json.loads(Path(args.output_json).read_text())
        for name, components in kernel_models.items():
            kernel = DensityKernel.from_dict(record["results"][name]["kernel"])
            centres, weights = components(ev_x[:20])
            integrals = kernel.mixture(centres.double(), weights.double()).grid(1.0).integral().tolist()
            record["results"][name].update(integral_1deg_min=min(integrals), integral_1deg_max=max(integrals))
            print(name, min(integrals), max(integrals), flush=True)
        Path(args.output_json).write_text(json.dumps(record, indent=2) + "\n")
        return record

    # 2. Kernel densities: fit kappa on validation, score the eval set
    for name, components in kernel_models.items():
        start = time.perf_counter()
        parts = [components(val_x[s]) for s in chunks(len(val_x))]
        centres, weights = torch.cat([c for c, _ in parts]).double(), torch.cat([w for _, w in parts]).double()
        kernel = fit_kernel(centres, weights, val_y, calibrate=args.calibrate)
        acc, modes, integrals = CalibrationAccumulator(), [], []
        generator = torch.Generator().manual_seed(0)
        for s in chunks(len(ev_x)):
            centres, weights = components(ev_x[s])
            mix = kernel.mixture(centres.double(), weights.double())
            acc.add_samples(mix.log_prob(mix.sample(args.samples, generator=generator)), mix.log_prob(ev_y[s]))
            modes.append(mix.mode_among_centres())
            if not integrals:  # the density is normalised: its integral on a 1-degree grid (first 20 images)
                first = kernel.mixture(centres[:20].double(), weights[:20].double())
                integrals = first.grid(1.0).integral().tolist()
        results[name] = {
            "kernel": kernel.to_dict(),
            "kernel_km": 6371.0088 / kernel.kappa**0.5,
            "floor_km": 6371.0088 / kernel.floor_kappa**0.5 if kernel.floor_kappa else None,
            **acc.metrics(),
            "integral_1deg_min": min(integrals),
            "integral_1deg_max": max(integrals),
            "best_guess_density_mode": accuracies(torch.cat(modes), ev_y),
            "seconds": time.perf_counter() - start,
        }
        curves[name] = acc.reliability()
        print(name, json.dumps(results[name]), flush=True)

    # 3. The papers' own point estimates on the same images
    paper = {
        "GeoCLIP": torch.cat([geoclip.predict(image_embeddings=ev_x[s], top_k=1).latlon for s in chunks(len(ev_x))]),
        "kNN-1": knn.predict(image_embeddings=ev_x, top_k=1).latlon,
        "LocDiff": torch.cat([
            locdiff.predict(image_embeddings=ev_x[s], num_samples=64, generator=torch.Generator().manual_seed(0),
                            **steps).latlon for s in chunks(len(ev_x))
        ]),  # fmt: skip
        "LocDiff-H": torch.cat([
            locdiff.predict_hybrid(geoclip, ev_x[s], top_k=1, num_samples=64,
                                   generator=torch.Generator().manual_seed(0), **steps).latlon
            for s in chunks(len(ev_x))
        ]),  # fmt: skip
    }
    for name, pred in paper.items():
        results[name]["best_guess_paper"] = accuracies(pred, ev_y)

    # 4. The sphere flow: exact likelihoods; regions from its own unguided samples
    start = time.perf_counter()
    fx, fy = ev_x[: args.flow_eval], ev_y[: args.flow_eval]
    acc = CalibrationAccumulator()
    for s in chunks(len(fx), 50):
        samples = flow.sample(image_embeddings=fx[s], num_samples=args.flow_samples, guidance_scale=0.0,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
        sample_lp = flow.log_prob(samples, image_embeddings=fx[s], atol=1e-4, rtol=1e-4)
        acc.add_samples(sample_lp, flow.log_prob(fy[s], image_embeddings=fx[s], atol=1e-4, rtol=1e-4))
    results["Sphere flow"] = {
        **acc.metrics(),
        "n": len(fx),
        "seconds": time.perf_counter() - start,
    }
    curves["Sphere flow"] = acc.reliability()
    print("Sphere flow", json.dumps(results["Sphere flow"]), flush=True)

    out = Path(args.output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "n_eval": len(ev_x), "results": results}
    out.write_text(json.dumps(record, indent=2) + "\n")
    reliability_plot(curves, out.with_suffix(".reliability.png"), title="HDR coverage, procedural world")
    return record


if __name__ == "__main__":
    main()
