"""Benchmark: our sphere flow vs PLONK's own code (PyPI ``diff-plonk``) on the same weights, same machine (issue 5).

1. PLONK's side (``bench/plonk_side.py``, run with PLONK's venv python) builds its ``GeoAdaLNMLP`` at the YFCC size
   (dim 512, depth 12, expansion 4, cond_dim 1024) with random weights and saves it with its own ``save_pretrained``
   (config.json + model.safetensors); we load that folder with ``SphereFlowPipeline.from_pretrained``.
2. Exact log-likelihood of random points on the sphere given random 1024-d embeddings, dopri5 at atol = rtol = 1e-6,
   no guidance: PLONK's ``compute_likelihood`` vs ours with ``convention="plonk"`` (PLONK's quantity: ambient
   divergence, base ``-log 4 pi`` at the projected endpoint; nats). Max abs difference, wall time, NFE, ratio.
   PLONK runs on the first ``--plonk_points`` points (its 256-point run takes tens of minutes here); ours runs on
   those and on all ``--num_points``. PLONK's likelihood runs in a background process while ours runs, so both are
   timed in CPU seconds (``time.process_time``; wall times are recorded too).
3. Sampling throughput, Riemannian Euler, 32 steps, guidance 2: PLONK's ``riemannian_flow_sampler`` (what its pipeline
   runs after embedding the images; it repeats each image's embedding per sample) vs our ``pipe.sample``.

``--network DIR --embeddings PARQUET`` runs the same comparison on a trained Riemannian pipeline instead (exported
in PLONK's format), with real features and their true locations as inputs, e.g. the demo's starter model on the
procedural test embeddings (written by ``bench/bench_flow_world.py``'s data step):

    python bench/bench_flow_plonk.py --network apps/starter/sphere_flow \
        --embeddings outputs/bench_data/world_test_2000_procedural-clip --workdir /tmp/flow_plonk_starter \
        --plonk_points 256 --num_points 256 --fast_steps 32 64 128 --output_json bench/results/flow_plonk_starter.json

Everything with one thread. PLONK's venv (it pins scipy 1.13, so not the project venv):

    python -m venv /tmp/plonk_venv && /tmp/plonk_venv/bin/pip install torch==2.14.1 torchvision==0.29.1 diff-plonk
    python bench/bench_flow_plonk.py --plonk_python /tmp/plonk_venv/bin/python --plonk_points 64 --num_points 64 \
        --repeats 2 --output_json bench/results/flow_plonk.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from geo_models.flow import SphereFlowPipeline
from geo_models.sphere import uniform_sphere_xyz, xyz_to_latlon

HERE = Path(__file__).resolve().parent
VENV_HELP = (
    "PLONK's own venv is needed (PyPI diff-plonk pins scipy 1.13, so it cannot share the project venv):\n"
    "    python -m venv /tmp/plonk_venv\n"
    "    /tmp/plonk_venv/bin/pip install torch==2.14.1 torchvision==0.29.1 diff-plonk\n"
    "then pass --plonk_python /tmp/plonk_venv/bin/python"
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plonk_python", default="/tmp/plonk_venv/bin/python", help="python of PLONK's venv")
    p.add_argument("--workdir", default="/tmp/flow_plonk_bench", help="checkpoint, inputs, PLONK's raw outputs")
    p.add_argument("--network", default=None,
                   help="a trained Riemannian SphereFlowPipeline folder to compare on instead of PLONK's random "
                        "YFCC-size network (exported in PLONK's format)")  # fmt: skip
    p.add_argument("--embeddings", default=None,
                   help="embedding parquet (file or folder) whose rows (features + true location) are the "
                        "likelihood inputs; default: random points and N(0, 1) features")  # fmt: skip
    p.add_argument("--num_points", type=int, default=256, help="points for our likelihood")
    p.add_argument("--plonk_points", type=int, default=64, help="first points also run through PLONK's likelihood")
    p.add_argument("--tol", type=float, default=1e-6, help="dopri5 atol = rtol")
    p.add_argument("--fast_steps", type=int, nargs="*", default=[256, 384],
                   help="also time method='gamma_trapezoid' with these numbers of steps")  # fmt: skip
    p.add_argument("--likelihood_cfg", type=float, default=0.0, help="guidance in the likelihood (0 = the model's)")
    p.add_argument("--sample_images", type=int, default=64)
    p.add_argument("--samples_per_image", type=int, default=16)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3, help="timed sampling repeats (best)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_json", default="bench/results/flow_plonk.json")
    p.add_argument("--solver_check", type=int, default=0, metavar="N",
                   help="only re-solve the first N points of a finished run (its --workdir) in float64 with "
                        "dopri5 and dopri8; compare with PLONK's values")  # fmt: skip
    return p.parse_args(argv)


def solver_check(args) -> list[dict]:
    """Evaluation counts of dopri5 / dopri8 in float64 (no rounding noise for the step control) on the first
    ``args.solver_check`` points of a finished run, and their distance to PLONK's log-likelihoods."""
    work = Path(args.workdir)
    inputs = torch.load(work / "inputs.pt")
    ref = torch.tensor(json.loads((work / "plonk_likelihood.json").read_text())["log_prob"], dtype=torch.float64)
    pipe = SphereFlowPipeline.from_pretrained(work / "ckpt")
    pipe.network.to(torch.float64)
    n, rows = args.solver_check, []
    for method in ("dopri5", "dopri8"):
        c0 = time.process_time()
        out = pipe.likelihood(inputs["latlon"][:n].double(), inputs["emb"][:n].double(), convention="plonk",
                              method=method, atol=args.tol, rtol=args.tol)  # fmt: skip
        rows.append({"method": method, "dtype": "float64", "tol": args.tol, "points": n, "nfe": out.nfe,
                     "cpu_seconds": time.process_time() - c0,
                     "max_abs_diff_to_plonk": (out.log_prob.double() - ref[:n]).abs().max().item()})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    for steps in args.fast_steps:
        c0 = time.process_time()
        out = pipe.likelihood(inputs["latlon"][:n].double(), inputs["emb"][:n].double(), convention="plonk",
                              method="gamma_trapezoid", num_steps=steps)  # fmt: skip
        rows.append({"method": "gamma_trapezoid", "dtype": "float64", "num_steps": steps, "points": n, "nfe": out.nfe,
                     "cpu_seconds": time.process_time() - c0,
                     "max_abs_diff_to_plonk": (out.log_prob.double() - ref[:n]).abs().max().item()})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def export_for_plonk(network_dir: str, ckpt: Path) -> dict:
    """Write a trained pipeline's network in PLONK's format: ``config.json`` with PLONK's keys and
    ``model.safetensors`` (our ``GeoAdaLNMLP`` has PLONK's parameter names)."""
    from safetensors.torch import save_file

    from geo_models.flow.modeling import PLONK_CONFIG_KEYS

    pipe = SphereFlowPipeline.from_pretrained(network_dir)
    if pipe.objective.name != "riemannian":
        sys.exit(f"--network {network_dir}: PLONK's likelihood is for the riemannian objective, not {pipe.objective}")
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps({k: int(pipe.network.config[k]) for k in PLONK_CONFIG_KEYS}))
    save_file({k: v.contiguous() for k, v in pipe.network.state_dict().items()}, str(ckpt / "model.safetensors"))
    return {"saved": str(ckpt), "parameters": sum(p.numel() for p in pipe.network.parameters())}


def plonk(args, *cmd) -> dict:
    """Run ``plonk_side.py`` in PLONK's venv; its last stdout line is JSON."""
    proc = subprocess.run([args.plonk_python, str(HERE / "plonk_side.py"), *map(str, cmd)], capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode:
        sys.exit(f"plonk_side.py {cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_plonk_venv(args) -> str:
    if not Path(args.plonk_python).exists():
        sys.exit(f"--plonk_python {args.plonk_python} does not exist.\n{VENV_HELP}")
    probe = "import plonk.pipe, torch, importlib.metadata as m; print(m.version('diff-plonk'), torch.__version__)"
    proc = subprocess.run([args.plonk_python, "-c", probe], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{args.plonk_python} cannot import PLONK:\n{proc.stderr[-1500:]}\n{VENV_HELP}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.solver_check:
        return {"solver_check": solver_check(args)}
    versions = check_plonk_venv(args)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, inputs = work / "ckpt", work / "inputs.pt"

    # ---- same weights (PLONK's save), same inputs
    saved = export_for_plonk(args.network, ckpt) if args.network else plonk(args, "save", ckpt, "--seed", args.seed)
    cond_dim = json.loads((ckpt / "config.json").read_text())["cond_dim"]
    g = torch.Generator().manual_seed(args.seed)
    n, m = args.num_points, min(args.plonk_points, args.num_points)
    if args.embeddings:  # real inputs: each row's features and its true location
        from geo_models.data.embeddings import read_embedding_parquet

        emb, latlon, _ = read_embedding_parquet(args.embeddings)
        emb, latlon, sample_emb = emb[:n], latlon[:n], emb[: args.sample_images]
        n, m = len(emb), min(m, len(emb))
    else:
        latlon = xyz_to_latlon(uniform_sphere_xyz(n, generator=g)).float()
        emb = torch.randn(n, cond_dim, generator=g)
        sample_emb = torch.randn(args.sample_images, cond_dim, generator=g)
    x_n = uniform_sphere_xyz(len(sample_emb) * args.samples_per_image, generator=g).float()
    torch.save({"latlon": latlon, "emb": emb, "x_N": x_n,
                "sample_emb": sample_emb.repeat_interleave(args.samples_per_image, 0)}, inputs)  # fmt: skip
    pipe = SphereFlowPipeline.from_pretrained(ckpt)
    print(f"PLONK {versions}; network {saved['parameters'] / 1e6:.1f}M parameters; objective {pipe.objective.name}")

    # ---- likelihood: PLONK's run in the background (its own process) while ours runs; compared by CPU time
    plonk_cmd = ["likelihood", ckpt, "--inputs", inputs, "--num_points", m, "--cfg", args.likelihood_cfg,
                 "--atol", args.tol, "--rtol", args.tol]  # fmt: skip
    background = subprocess.Popen([args.plonk_python, str(HERE / "plonk_side.py"), *map(str, plonk_cmd)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    kw = dict(guidance_scale=args.likelihood_cfg, convention="plonk", atol=args.tol, rtol=args.tol)
    ours = {}
    for k in sorted({m, n}):
        t0, c0 = time.perf_counter(), time.process_time()
        out = pipe.likelihood(latlon[:k], emb[:k], **kw)
        ours[k] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "nfe": out.nfe,
                   "log_prob": out.log_prob.double()}  # fmt: skip
        print(f"ours likelihood, {k} points: {ours[k]['cpu_seconds']:.1f} s CPU, {out.nfe} NFE", flush=True)
    fast = {}
    for steps in args.fast_steps:  # the fixed grid in gamma, on PLONK's points
        t0, c0 = time.perf_counter(), time.process_time()
        out = pipe.likelihood(latlon[:m], emb[:m], guidance_scale=args.likelihood_cfg, convention="plonk",
                              method="gamma_trapezoid", num_steps=steps)  # fmt: skip
        fast[steps] = {"num_points": m, "num_steps": steps, "seconds": time.perf_counter() - t0,
                       "cpu_seconds": time.process_time() - c0, "nfe": out.nfe,
                       "log_prob": out.log_prob.double()}  # fmt: skip
        print(f"ours gamma_trapezoid, {steps} steps: {fast[steps]['cpu_seconds']:.1f} s CPU", flush=True)
    stdout, stderr = background.communicate()
    if background.returncode:
        sys.exit(f"plonk_side.py likelihood failed:\n{stderr[-3000:]}")
    pl = json.loads(stdout.strip().splitlines()[-1])
    (work / "plonk_likelihood.json").write_text(json.dumps(pl))
    print(f"PLONK likelihood, {m} points: {pl['cpu_seconds']:.1f} s CPU, {pl['nfe']} NFE", flush=True)
    ref = torch.tensor(pl["log_prob"], dtype=torch.float64)
    diff_same = (ours[m]["log_prob"] - ref).abs().max().item()
    diff_full = (ours[n]["log_prob"][:m] - ref).abs().max().item()

    # ---- sampling throughput
    ps = plonk(args, "sample", ckpt, "--inputs", inputs, "--steps", args.steps, "--cfg", args.guidance,
               "--repeats", args.repeats)  # fmt: skip
    times, cpu = [], []
    for r in range(args.repeats):
        gen = torch.Generator().manual_seed(r)
        t0, c0 = time.perf_counter(), time.process_time()
        pipe.sample(image_embeddings=sample_emb, num_samples=args.samples_per_image, num_inference_steps=args.steps,
                    guidance_scale=args.guidance, generator=gen)  # fmt: skip
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ns = args.sample_images * args.samples_per_image
    sampling = {
        "plonk_seconds": ps["seconds"],
        "ours_seconds": min(times),
        "plonk_cpu_seconds": ps["cpu_seconds"],
        "ours_cpu_seconds": min(cpu),
        "plonk_images_per_cpu_s": args.sample_images / ps["cpu_seconds"],
        "ours_images_per_cpu_s": args.sample_images / min(cpu),
        "plonk_samples_per_cpu_s": ns / ps["cpu_seconds"],
        "ours_samples_per_cpu_s": ns / min(cpu),
        "speedup_cpu": ps["cpu_seconds"] / min(cpu),
    }
    print(f"sampling {args.sample_images} images x {args.samples_per_image}: PLONK {ps['cpu_seconds']:.2f} s CPU, "
          f"ours {min(cpu):.2f} s CPU ({sampling['speedup_cpu']:.1f}x)")  # fmt: skip

    result = {
        "config": {k: v for k, v in vars(args).items() if k not in ("output_json",)},
        "plonk_version_torch": versions,
        "network": {
            **json.loads((ckpt / "config.json").read_text()),
            "parameters": saved["parameters"],
            "source": args.network or "PLONK's GeoAdaLNMLP, random weights",
        },  # fmt: skip
        "likelihood": {
            "convention": "plonk",
            "solver": f"dopri5 atol=rtol={args.tol}",
            "plonk": {k: pl[k] for k in ("num_points", "seconds", "cpu_seconds", "nfe")},
            "ours_same_points": {"num_points": m, **{k: ours[m][k] for k in ("seconds", "cpu_seconds", "nfe")}},
            "ours_all_points": {"num_points": n, **{k: ours[n][k] for k in ("seconds", "cpu_seconds", "nfe")}},
            "speedup_cpu_same_points": pl["cpu_seconds"] / ours[m]["cpu_seconds"],
            "plonk_cpu_seconds_per_nfe": pl["cpu_seconds"] / pl["nfe"],
            "ours_cpu_seconds_per_nfe_same_points": ours[m]["cpu_seconds"] / ours[m]["nfe"],
            "max_abs_diff_same_solve": diff_same,
            "max_abs_diff_ours_all_points_solve": diff_full,
            "mean_log_prob_plonk": ref.mean().item(),
            "log_prob_plonk_first8": ref[:8].tolist(),
            "log_prob_ours_first8": ours[m]["log_prob"][:8].tolist(),
        },
        "sampling": {
            "images": args.sample_images,
            "samples_per_image": args.samples_per_image,
            "steps": args.steps,
            "guidance": args.guidance,
            **sampling,
        },
    }
    result["likelihood"]["ours_gamma_trapezoid"] = [
        {
            **{k: f[k] for k in ("num_points", "num_steps", "seconds", "cpu_seconds", "nfe")},
            "speedup_cpu_vs_plonk": pl["cpu_seconds"] / f["cpu_seconds"],
            "speedup_cpu_vs_ours_dopri5": ours[m]["cpu_seconds"] / f["cpu_seconds"],
            "max_abs_diff_to_plonk": (f["log_prob"] - ref).abs().max().item(),
            "mean_abs_diff_to_plonk": (f["log_prob"] - ref).abs().mean().item(),
            "max_abs_diff_to_ours_dopri5": (f["log_prob"] - ours[m]["log_prob"]).abs().max().item(),
        }
        for f in fast.values()
    ]
    print(json.dumps(result["likelihood"], indent=1))
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
