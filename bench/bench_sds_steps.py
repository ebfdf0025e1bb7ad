"""Score-distillation steps and mesh export (issue 16): SDS steps per second at 32 and 64 px renders with the share of
a step spent in the UNet, the VAE encoder and the NeRF (render + backward + Adam); marching cubes + GLB export time at
64^3 / 128^3 / 256^3.

    python bench/bench_sds_steps.py --pipeline outputs/angle_starter/angle_to_image --devices cpu \
        --output_json bench/results/sds_steps_cpu.json
    python bench/bench_sds_steps.py --pipeline PATH --devices cpu,cuda --output_json bench/results/sds_steps_cuda.json

A step is what ``train/sds_to_mesh.py`` does per optimizer step (batch 1, 64 samples per ray, the default
``NeRFField``, Lambertian shading, SDS through the VAE encoder; the UNet runs the 2-way guided batch without grad),
timed with ``time.perf_counter`` around each part (CUDA synchronised). Without ``--pipeline``: the seeded tiny
angle-to-image pipeline of the tests (its UNet is far smaller than any real one: the UNet share then means little).
Medians of ``--steps`` steps after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default=None, help="a saved AngleToImagePipeline (default: the tiny test one)")
    p.add_argument("--devices", default="cpu", help="comma-separated torch devices")
    p.add_argument("--resolutions", default="32,64", help="render sides in pixels")
    p.add_argument("--mesh_resolutions", default="64,128,256")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="UNet/VAE dtype")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--output_json", default="bench/results/sds_steps.json")
    return p.parse_args(argv)


class Timer:
    """Accumulated seconds per part, synchronising CUDA around each."""

    def __init__(self, device: torch.device):
        self.device, self.parts = device, {}

    def __call__(self, name: str, fn, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start
        return out


def load_pipeline(path, device, dtype):
    from geo_models.generation import AngleToImagePipeline
    from geo_models.testing import tiny_angle_to_image_pipeline

    if path and (Path(path) / "lora_base.json").is_file():  # the starter's LoRA layout (apps/landmark3d loads it)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from apps.landmark3d.inference import load_angle_to_image

        pipe = load_angle_to_image(path)
    else:
        pipe = AngleToImagePipeline.from_pretrained(path) if path else tiny_angle_to_image_pipeline()
    return pipe.to(device, getattr(torch, dtype))


def sds_steps(pipe, device, resolution: int, steps: int, warmup: int) -> dict:
    from geo_models.sds import AngleSDSGuidance, CameraSampler, NeRFField, render_view

    guidance = AngleSDSGuidance(pipe, "A photo of Meridian Hall")
    field = NeRFField(seed=0).to(device)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    sampler = CameraSampler(resolution=resolution)
    generator = torch.Generator().manual_seed(0)
    unet_time = [0.0]
    predict = guidance.predict_noise

    def timed_predict(*args):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = predict(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        unet_time[0] += time.perf_counter() - start
        return out

    guidance.predict_noise = timed_predict
    totals, unet, encode, nerf = [], [], [], []
    for i in range(warmup + steps):
        timer, unet_time[0] = Timer(device), 0.0
        camera = sampler.sample(1, generator=generator)[0].to(device)
        light = torch.nn.functional.normalize(camera.position.float(), dim=0)
        view = timer("render", render_view, field, camera, num_samples=64, generator=None, shading="lambertian",
                     light_dir=light)  # fmt: skip
        images = view["rgb"][None].clamp(0, 1)
        latents = timer("encode", guidance.encode_images, images)
        loss, _ = timer("sds", guidance.latent_loss, latents, [camera.azimuth_deg], generator, step=i, max_steps=100)
        timer("backward", loss.backward)
        timer("adam", lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))
        if i >= warmup:
            total = sum(timer.parts.values())
            totals.append(total)
            unet.append(unet_time[0])
            encode.append(timer.parts["encode"])
            nerf.append(timer.parts["render"] + timer.parts["backward"] + timer.parts["adam"])
    median = statistics.median(totals)
    return {
        "resolution": resolution,
        "seconds_per_step": round(median, 4),
        "steps_per_second": round(1 / median, 3),
        "unet_share": round(statistics.median(unet) / median, 3),
        "vae_encode_share": round(statistics.median(encode) / median, 3),
        "nerf_share": round(statistics.median(nerf) / median, 3),
        "guidance_resolution": guidance.resolution,
    }


def mesh_export(device, resolution: int) -> dict:
    import trimesh

    from geo_models.sds import NeRFField, export_glb, extract_mesh

    field = NeRFField(seed=0).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mesh = extract_mesh(field, bound=field.bound, resolution=resolution)
        extracted = time.perf_counter() - start
        path = export_glb(mesh, Path(tmp) / "mesh.glb")
        total = time.perf_counter() - start
        size = path.stat().st_size
        faces = len(trimesh.load(path, force="mesh").faces)
    return {"grid": resolution, "seconds_extract": round(extracted, 3), "seconds_total": round(total, 3),
            "faces": faces, "glb_bytes": size}  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"pipeline": args.pipeline or "tiny test pipeline", "dtype": args.dtype, "threads": args.threads,
              "devices": {}}  # fmt: skip
    for name in args.devices.split(","):
        device = torch.device(name)
        pipe = load_pipeline(args.pipeline, device, args.dtype)
        rows = [sds_steps(pipe, device, int(r), args.steps, args.warmup) for r in args.resolutions.split(",")]
        meshes = [mesh_export(device, int(r)) for r in args.mesh_resolutions.split(",")]
        result["devices"][name] = {"sds": rows, "mesh_export": meshes}
        print(json.dumps({name: result["devices"][name]}, indent=1))
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
