"""NeRF rendering for score distillation (issue 16): seconds per render + backward at 32 and 64 px, per shading, on
each device, and whether a GPU gives the CPU's images and gradients (float32 tolerance).

    python bench/bench_sds_render.py --devices cpu --output_json bench/results/sds_render_cpu.json
    python bench/bench_sds_render.py --devices cpu,cuda --output_json bench/results/sds_render_cuda.json

A fresh ``NeRFField(seed=0)`` (the default size) seen by the first camera of a turntable, 64 samples per ray, no
jitter; the loss is the mean of the image (what SDS backpropagates through is the rendered image). Times are the
median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from geo_models.sds import CameraSampler, NeRFField, render_image


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="cpu", help="comma-separated torch devices")
    p.add_argument("--resolutions", default="32,64")
    p.add_argument("--shadings", default="albedo,lambertian")
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--output_json", default="bench/results/sds_render.json")
    return p.parse_args(argv)


def render_and_backward(field, camera, shading: str, num_samples: int):
    field.zero_grad(set_to_none=True)
    image = render_image(field, camera, perturb=False, shading=shading, num_samples=num_samples)
    image.mean().backward()
    grads = torch.cat([p.grad.flatten() for p in field.parameters() if p.grad is not None])
    return image.detach(), grads


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict = {"config": vars(args), "runs": {}, "agreement": {}}
    reference: dict = {}
    for name in args.devices.split(","):
        device = torch.device(name)
        field = NeRFField(seed=0).to(device)
        for res in map(int, args.resolutions.split(",")):
            camera = CameraSampler(resolution=res).turntable(1)[0].to(device)
            for shading in args.shadings.split(","):
                render_and_backward(field, camera, shading, args.num_samples)  # warm-up
                seconds = []
                for _ in range(args.repeats):
                    sync(device)
                    t0 = time.perf_counter()
                    image, grads = render_and_backward(field, camera, shading, args.num_samples)
                    sync(device)
                    seconds.append(time.perf_counter() - t0)
                key = f"{shading} {res}px"
                results["runs"][f"{name}: {key}"] = {"seconds": statistics.median(seconds)}
                print(f"{name}: {key}: {statistics.median(seconds):.3f} s per render + backward", flush=True)
                if key in reference:
                    ref_image, ref_grads = reference[key]
                    results["agreement"][f"{name} vs {args.devices.split(',')[0]}: {key}"] = {
                        "image_max_abs_diff": (image.cpu() - ref_image).abs().max().item(),
                        "grad_max_abs_diff": (grads.cpu() - ref_grads).abs().max().item(),
                        "grad_max_abs": ref_grads.abs().max().item(),
                    }
                else:
                    reference[key] = (image.cpu(), grads.cpu())
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results["agreement"].items():
        print(key, value)
    return results


if __name__ == "__main__":
    main()
