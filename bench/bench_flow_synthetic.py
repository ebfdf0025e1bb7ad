"""Sphere flow learns a known conditional density: vMF mixtures on S² (issue 5, synthetic acceptance).

1. Data: :class:`~geo_models.data.procedural.vmf_mixture.VMFMixtureTask`, C conditions (one-hot embeddings), each a
   mixture of K von Mises-Fisher components (kappa in [10, 50]); a training parquet of fresh samples.
2. Train the Riemannian objective with ``train/train_flow.py`` (a small network; AdamW, warmup + cosine, EMA).
3. Check, against the true density:
   - test NLL (exact likelihood of the model, guidance 0, on fresh test samples) within 0.1 nats of the true
     conditional entropy (Monte Carlo, 200K samples per condition); also ``KL = mean(log p_true - log p_model)`` on
     the same points;
   - the learned density of every condition integrates to 1 +- 0.01 over a lat/lon grid (midpoint rule);
   - model samples (Heun, guidance 0) vs true samples: MMD two-sample test with a vMF kernel (kappa 20, the data's
     scale; the median heuristic's much wider kernel cannot even tell kappa x 0.7 from the truth), joint over
     (condition, location), permutation p-value > 0.05 (with a true-vs-true row and a true-vs-perturbed row, kappa
     x 0.7, to show the test's size and power).

    python bench/bench_flow_synthetic.py --output_json bench/results/flow_synthetic.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from geo_models.data.embeddings import write_embedding_parquet
from geo_models.data.procedural.vmf_mixture import VMFMixtureTask, sphere_mmd_test
from geo_models.flow import SphereFlowPipeline
from geo_models.sphere import latlon_to_xyz, xyz_to_latlon

NLL_TOLERANCE, INTEGRAL_TOLERANCE, MMD_ALPHA = 0.1, 0.01, 0.05
TRAIN_DIR = Path(__file__).resolve().parents[1] / "train"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_conditions", type=int, default=3)
    p.add_argument("--num_components", type=int, default=3)
    p.add_argument("--kappa_range", type=float, nargs=2, default=[10.0, 50.0])
    p.add_argument("--num_train", type=int, default=200_000, help="training samples (a parquet)")
    p.add_argument("--max_train_steps", type=int, default=4000)
    p.add_argument("--train_batch_size", type=int, default=512)
    p.add_argument("--learning_rate", type=float, default=8e-4)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--expansion", type=int, default=2)
    p.add_argument("--num_test", type=int, default=2000, help="test points of the NLL")
    p.add_argument("--num_mmd", type=int, default=1000, help="samples per condition and side of the MMD test")
    p.add_argument("--num_permutations", type=int, default=500)
    p.add_argument(
        "--mmd_kernel_kappa", type=float, default=20.0, help="vMF kernel concentration (~13 degrees, the data's scale)"
    )
    p.add_argument("--sample_steps", type=int, default=64, help="Heun steps of the model's samples")
    p.add_argument("--grid_deg", type=float, default=6.0, help="resolution of the integral's lat/lon grid")
    p.add_argument("--tolerance", type=float, default=1e-5, help="ODE atol = rtol of the exact likelihoods")
    p.add_argument("--entropy_samples", type=int, default=200_000, help="Monte-Carlo samples per condition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_json", default="bench/results/flow_synthetic.json")
    return p.parse_args(argv)


def load_train_flow():
    """``train/train_flow.py`` as a module (its ``main(argv)`` trains in this process), imported by name."""
    if str(TRAIN_DIR) not in sys.path:
        sys.path.insert(0, str(TRAIN_DIR))
    return importlib.import_module("train_flow")


def run(args) -> dict:
    """Train and evaluate; returns the results dict (also what the slow test checks)."""
    torch.set_num_threads(1)
    task = VMFMixtureTask(
        args.num_conditions, args.num_components, kappa_range=tuple(args.kappa_range), seed=args.seed
    )
    g = torch.Generator().manual_seed(args.seed + 1)
    out: dict = {"config": {k: v for k, v in vars(args).items() if k != "output_json"}}
    out["task"] = {"kappas": task.kappas.tolist(), "weights": task.weights.tolist()}
    with tempfile.TemporaryDirectory() as tmp:
        # 1. Training data
        cond, xyz = task.sample(args.num_train, generator=g)
        train = Path(tmp) / "train.parquet"
        write_embedding_parquet(train, task.embeddings(cond), xyz_to_latlon(xyz.double()).float())
        # 2. Train
        t0 = time.perf_counter()
        load_train_flow().main(
            ["--train_data", str(train), "--output_dir", str(Path(tmp) / "flow"), "--objective", "riemannian",
             "--dim", str(args.dim), "--depth", str(args.depth), "--expansion", str(args.expansion),
             "--train_batch_size", str(args.train_batch_size), "--learning_rate", str(args.learning_rate),
             "--max_train_steps", str(args.max_train_steps), "--lr_warmup_steps", str(args.max_train_steps // 20),
             "--checkpointing_steps", str(10 * args.max_train_steps), "--logging_steps", "100",
             "--seed", str(args.seed)]
        )  # fmt: skip
        out["train_seconds"] = time.perf_counter() - t0
        log = [json.loads(x) for x in (Path(tmp) / "flow" / "logs" / "train_log.jsonl").read_text().splitlines()]
        out["final_loss"] = sum(r["loss"] for r in log[-5:]) / len(log[-5:])
        pipe = SphereFlowPipeline.from_pretrained(Path(tmp) / "flow")
    tol = {"atol": args.tolerance, "rtol": args.tolerance}

    # 3a. Test NLL vs the true conditional entropy (conditions uniform: the mean of the per-condition entropies)
    t0 = time.perf_counter()
    entropy, entropy_se = task.entropy(num_samples=args.entropy_samples, seed=args.seed + 2)
    cond, xyz = task.sample(args.num_test, generator=g)
    model_lp = pipe.likelihood(xyz, image_embeddings=task.embeddings(cond), **tol)
    true_lp = task.log_prob(xyz, cond)
    diff = true_lp - model_lp.log_prob.double()
    nll = -model_lp.log_prob.double()
    out["nll"] = {
        "test_nll": float(nll.mean()),
        "test_nll_se": float(nll.std() / len(nll) ** 0.5),
        "true_entropy": float(entropy.mean()),
        "true_entropy_se": float((entropy_se**2).mean().sqrt() / len(entropy) ** 0.5),
        "true_nll_same_points": float(-true_lp.mean()),
        "gap": float(nll.mean() - entropy.mean()),
        "kl": float(diff.mean()),
        "kl_se": float(diff.std() / len(diff) ** 0.5),
        "per_condition": {
            str(c): {
                "test_nll": float(nll[cond == c].mean()),
                "true_entropy": float(entropy[c]),
                "kl": float(diff[cond == c].mean()),
            }
            for c in range(task.num_conditions)
        },
        "nfe": model_lp.nfe,
        "seconds": time.perf_counter() - t0,
    }

    # 3b. Integral of the learned density over the sphere (and of the true density on the same grid)
    t0 = time.perf_counter()
    onehot = task.embeddings(torch.arange(task.num_conditions))
    grid = pipe.density_grid(image_embeddings=onehot, resolution_deg=args.grid_deg, **tol)
    pts = latlon_to_xyz(torch.stack(torch.meshgrid(grid.latitudes, grid.longitudes, indexing="ij"), -1).view(-1, 2))
    true_grid = [
        float((task.log_prob(pts, torch.full((len(pts),), c)).exp().view_as(grid.cell_areas()) * grid.cell_areas())
              .sum())
        for c in range(task.num_conditions)
    ]  # fmt: skip
    out["integral"] = {
        "model": grid.integral().tolist(),
        "true_density_same_grid": true_grid,
        "max_abs_error": float((grid.integral() - 1).abs().max()),
        "grid_deg": args.grid_deg,
        "seconds": time.perf_counter() - t0,
    }

    # 3c. Two-sample test: model samples vs true samples, joint over (condition, location)
    t0 = time.perf_counter()
    n, c_all = args.num_mmd, torch.arange(task.num_conditions).repeat_interleave(args.num_mmd)
    sample_gen = torch.Generator().manual_seed(args.seed + 3)
    model_xyz = latlon_to_xyz(
        pipe.sample(image_embeddings=onehot, num_samples=n, num_inference_steps=args.sample_steps,
                    guidance_scale=0.0, sampler="heun", generator=sample_gen).reshape(-1, 2).double()
    ).float()  # fmt: skip
    _, true_a = task.sample(len(c_all), cond=c_all, generator=g)
    _, true_b = task.sample(len(c_all), cond=c_all, generator=g)
    perturbed = VMFMixtureTask(
        args.num_conditions, args.num_components, kappa_range=tuple(args.kappa_range), seed=args.seed
    )
    perturbed.kappas = perturbed.kappas * 0.7
    _, wide = perturbed.sample(len(c_all), cond=c_all, generator=g)
    mmd = {}
    for name, x in (("model vs true", model_xyz), ("true vs true", true_b), ("kappa x 0.7 vs true", wide)):
        stat, pval = sphere_mmd_test(
            x,
            true_a,
            cond_x=c_all,
            cond_y=c_all,
            kappa=args.mmd_kernel_kappa,
            num_permutations=args.num_permutations,
            seed=args.seed,
        )
        mmd[name] = {"mmd2": stat, "p_value": pval}
    per_cond = {}
    for c in range(task.num_conditions):
        rows = c_all == c
        per_cond[str(c)] = sphere_mmd_test(
            model_xyz[rows], true_a[rows], kappa=args.mmd_kernel_kappa, num_permutations=args.num_permutations
        )[1]
    out["mmd"] = {**mmd, "per_condition_p_value": per_cond, "seconds": time.perf_counter() - t0}
    out["passed"] = {
        "nll": abs(out["nll"]["gap"]) < NLL_TOLERANCE,
        "integral": out["integral"]["max_abs_error"] < INTEGRAL_TOLERANCE,
        "mmd": mmd["model vs true"]["p_value"] > MMD_ALPHA,
    }
    return out


def markdown_table(out: dict) -> str:
    nll, integ, mmd = out["nll"], out["integral"], out["mmd"]
    ok = {True: "yes", False: "**no**"}
    ints = ", ".join(f"{v:.4f}" for v in integ["model"])
    true_ints = ", ".join(f"{v:.4f}" for v in integ["true_density_same_grid"])
    lines = [
        "| check | measured | bar | passed |",
        "|---|---|---|---|",
        f"| test NLL vs true entropy (nats) | {nll['test_nll']:.4f} ± {nll['test_nll_se']:.4f} vs "
        f"{nll['true_entropy']:.4f} ± {nll['true_entropy_se']:.4f}: gap {nll['gap']:+.4f} | within "
        f"{NLL_TOLERANCE} | {ok[out['passed']['nll']]} |",
        f"| KL(true ‖ model) on the test points (nats) | {nll['kl']:.4f} ± {nll['kl_se']:.4f} | — | — |",
        f"| integral of the density, {integ['grid_deg']:g}° grid, per condition | {ints} (true density: "
        f"{true_ints}) | 1 ± {INTEGRAL_TOLERANCE} | {ok[out['passed']['integral']]} |",
    ]
    for name in ("model vs true", "true vs true", "kappa x 0.7 vs true"):
        bar = f"p > {MMD_ALPHA}" if name == "model vs true" else "(reference)"
        passed = ok[out["passed"]["mmd"]] if name == "model vs true" else "—"
        lines.append(f"| MMD test, {name} | MMD² {mmd[name]['mmd2']:.2e}, p = {mmd[name]['p_value']:.3f} | "
                     f"{bar} | {passed} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = run(args)
    path = Path(args.output_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(markdown_table(out))
    print(
        f"train {out['train_seconds']:.0f} s (final loss {out['final_loss']:.3f}); NLL {out['nll']['seconds']:.0f} s "
        f"(nfe {out['nll']['nfe']}); grid {out['integral']['seconds']:.0f} s; MMD {out['mmd']['seconds']:.0f} s; "
        f"per-condition MMD p-values {out['mmd']['per_condition_p_value']}"
    )
    return out


if __name__ == "__main__":
    main()
