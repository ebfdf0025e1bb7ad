"""PLONK's side of bench_flow_plonk.py: runs in PLONK's own venv (PyPI ``diff-plonk``), never in the project venv.

Subcommands (each prints one JSON line on stdout, the last line):

    save DIR [--dim 512 --depth 12 --expansion 4 --cond_dim 1024 --seed 0]
        PLONK's ``Plonk`` network (its ``GeoAdaLNMLP`` + Hub mixin) with random weights, saved with PLONK's own
        ``save_pretrained`` (config.json + model.safetensors). PLONK zero-initialises every block's last layer; those
        are drawn from N(0, 0.02^2) too, so the field is not trivial.
    likelihood DIR --inputs FILE [--num_points N --cfg 0 --atol 1e-6 --rtol 1e-6]
        ``PlonkPipeline.compute_likelihood`` (PLONK's exact likelihood: dopri5 with torchdiffeq, divergence by
        ``vmap(jacrev)``) on the first N rows of FILE's ``latlon`` / ``emb``; nats (``normalize_logp=False``),
        wall and CPU time (``time.process_time``) and its own NFE count.
    sample DIR --inputs FILE [--steps 32 --cfg 2 --repeats 3]
        PLONK's ``riemannian_flow_sampler`` (what ``PlonkPipeline.__call__`` runs after embedding the images) from
        FILE's ``x_N`` / ``sample_emb``; best-of-repeats wall and CPU time.

The pipeline is built without its image preprocessing (``PlonkPipeline.__new__`` + the attributes its
``__init__`` sets for a Hub checkpoint: sigmoid schedule -7 / 3 / tau 1, DDPM preconditioning, the sphere), because
the bench passes image embeddings, not images. One thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import time

import torch


def _pipeline(ckpt: str):
    from plonk.models.preconditioning import DDPMPrecond
    from plonk.models.pretrained_models import Plonk
    from plonk.pipe import PlonkPipeline, scheduler_fn
    from plonk.utils.manifolds import Sphere

    pipe = PlonkPipeline.__new__(PlonkPipeline)
    pipe.network = Plonk.from_pretrained(ckpt).eval().requires_grad_(False)
    pipe.scheduler = scheduler_fn("sigmoid", -7, 3, 1.0)
    pipe.preconditioning, pipe.device, pipe.manifold, pipe.input_dim = DDPMPrecond(), torch.device("cpu"), Sphere(), 3
    return pipe


def save(args) -> dict:
    from plonk.models.pretrained_models import Plonk

    torch.manual_seed(args.seed)
    net = Plonk(input_dim=3, dim=args.dim, depth=args.depth, expansion=args.expansion, cond_dim=args.cond_dim)
    with torch.no_grad():
        for block in net.blocks:
            block.mlp[-1].weight.normal_(std=0.02)
            block.mlp[-1].bias.normal_(std=0.02)
    net.save_pretrained(args.dir)
    return {"saved": args.dir, "parameters": sum(p.numel() for p in net.parameters())}


def likelihood(args) -> dict:
    pipe = _pipeline(args.dir)
    data = torch.load(args.inputs)
    n = args.num_points
    latlon, emb = data["latlon"][:n].numpy(), data["emb"][:n]
    log = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(log):  # PLONK prints "Likelihood NFE: ..."
        lp = pipe.compute_likelihood(
            emb=emb, coordinates=latlon, cfg=args.cfg, atol=args.atol, rtol=args.rtol, normalize_logp=False
        )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    nfe = int(re.findall(r"Likelihood NFE: (\d+)", log.getvalue())[-1])
    return {
        "log_prob": lp.double().tolist(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "nfe": nfe,
        "num_points": len(latlon),
    }


def sample(args) -> dict:
    from plonk.models.samplers.riemannian_flow_sampler import riemannian_flow_sampler

    pipe = _pipeline(args.dir)
    data = torch.load(args.inputs)
    times, cpu, out = [], [], None
    for _ in range(args.repeats):
        batch = {"y": data["x_N"].clone(), "emb": data["sample_emb"].clone()}
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = riemannian_flow_sampler(pipe.model, batch, conditioning_keys="emb", scheduler=pipe.scheduler,
                                          num_steps=args.steps, cfg_rate=args.cfg)  # fmt: skip
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"seconds": min(times), "cpu_seconds": min(cpu), "all_seconds": times, "num_samples": len(out)}


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("dir")
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--depth", type=int, default=12)
    s.add_argument("--expansion", type=int, default=4)
    s.add_argument("--cond_dim", type=int, default=1024)
    s.add_argument("--seed", type=int, default=0)
    lk = sub.add_parser("likelihood")
    lk.add_argument("dir")
    lk.add_argument("--inputs", required=True)
    lk.add_argument("--num_points", type=int, default=256)
    lk.add_argument("--cfg", type=float, default=0.0)
    lk.add_argument("--atol", type=float, default=1e-6)
    lk.add_argument("--rtol", type=float, default=1e-6)
    sm = sub.add_parser("sample")
    sm.add_argument("dir")
    sm.add_argument("--inputs", required=True)
    sm.add_argument("--steps", type=int, default=32)
    sm.add_argument("--cfg", type=float, default=2.0)
    sm.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    result = {"save": save, "likelihood": likelihood, "sample": sample}[args.cmd](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
