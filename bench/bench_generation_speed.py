"""GPS-to-image speed: two-condition guidance vs text CFG, GPS LoRA vs text LoRA training step, average-image memory.

Same small-but-not-tiny SD-like UNet (random weights, seed 0) for every measurement: block_out_channels
(64, 128, 256), 2 cross-attention levels, cross-attention width 256, 32x32x4 latents; a 2-layer CLIP text model of
width 256 and the CLIP tokenizer (77 tokens); DDIM. One torch thread; the two variants of each comparison are timed
interleaved in one process and compared by the ratio of their median CPU times (``time.process_time``: with one thread
that is the work itself; wall times, inflated by waits for a core on the shared machine, are in the JSON too).

(a) One denoising step. GPS: ``GPSToImagePipeline._predict_noise`` on the 3 contexts of eq. 4 (unconditional, text
    only, text + GPS: one batched UNet call of 3B) + eq. 4's combination + the scheduler step. Text CFG: what
    diffusers' ``StableDiffusionPipeline`` does per step (one UNet call of 2B on [negative, prompt], CFG, scheduler
    step). Also end to end: ``GPSToImagePipeline(...)`` vs ``StableDiffusionPipeline(...)`` with
    ``num_inference_steps`` steps, ``output_type="latent"`` (text encoding included, no VAE decode).
(b) One LoRA training step (rank 4 on the UNet attention, ``setup_unet_finetuning``), batch B: GPS = the training
    script's step (text tokens + 2 GPS tokens from a trained ``GPSEmbedder``, ``ConditionedDenoiser``, condition
    dropout), text = a plain text LoRA step (text tokens only); both: frozen text encoder, forward, MSE, backward,
    gradient clipping, AdamW step. Latents are random (the VAE encode, the same for both, is left out).
(c) Average-image mode (eq. 8): peak RSS (``VmHWM``, reset with ``/proc/self/clear_refs`` after building the models)
    of one pipeline call with M GPS points (2 denoising steps) above the RSS before it, each setting in a fresh
    subprocess, with the default ``gps_chunk_size=16`` and without chunking (``gps_chunk_size=M``).

    python bench/bench_generation_speed.py --output_json bench/results/generation_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

TEXT_WIDTH = 256
AREA = {"lat_range": (40.70, 40.88), "lon_range": (-74.02, -73.91)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="interleaved repeats of each step timing")
    p.add_argument("--batch_sizes", default="1,4", help="images per denoising step (a)")
    p.add_argument("--pipeline_steps", type=int, default=10, help="denoising steps of the end-to-end calls (a)")
    p.add_argument("--pipeline_repeats", type=int, default=5)
    p.add_argument("--train_batch_size", type=int, default=4, help="(b)")
    p.add_argument("--train_repeats", type=int, default=12, help="(b)")
    p.add_argument("--points", default="4,16,64,256", help="(c) numbers of GPS points")
    p.add_argument("--memory_steps", type=int, default=2, help="(c) denoising steps per call")
    p.add_argument(
        "--skip", default="", help="comma-separated parts to skip (a,b,c); the JSON keeps their old results"
    )
    p.add_argument("--output_json", default="bench/results/generation_speed.json")
    p.add_argument("--_memory_child", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def components(seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel

    from geo_models.generation import GPSEmbedder
    from geo_models.generation.small_base import small_unet
    from geo_models.testing.tiny import clip_tokenizer, tiny_text_encoder_config

    unet = small_unet(32, TEXT_WIDTH, seed, block_out_channels=(64, 128, 256), norm_num_groups=32).eval()
    vae = AutoencoderKL(  # only its config is used here (scale factor 4; never decoded)
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    ).eval()
    text_encoder = CLIPTextModel(tiny_text_encoder_config(TEXT_WIDTH)).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              beta_schedule="scaled_linear", set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    embedder = GPSEmbedder(hidden_size=TEXT_WIDTH, **AREA).eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": clip_tokenizer(77),
            "scheduler": scheduler, "gps_embedder": embedder}  # fmt: skip


def gps_pipeline(c):
    from geo_models.generation import GPSToImagePipeline

    pipe = GPSToImagePipeline(**c)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_pipeline(c):
    from diffusers import StableDiffusionPipeline

    keys = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
    pipe = StableDiffusionPipeline(**{k: c[k] for k in keys}, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, dict[str, list[float]]]:
    """``{name: {"cpu": [...], "wall": [...]}}``: CPU time (``time.process_time``; one torch thread, so the work
    itself, not the waits for a core on the shared machine) and wall time of each repeat, variants interleaved."""
    times = {k: {"cpu": [], "wall": []} for k in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            if r >= warmup:
                times[name]["cpu"].append(time.process_time() - c0)
                times[name]["wall"].append(time.perf_counter() - t0)
    return times


def summary(times: dict, num: str, den: str) -> dict:
    """Ratio ``num / den`` of the median CPU times (and of the median wall times)."""
    med = {k: {kind: statistics.median(v[kind]) for kind in ("cpu", "wall")} for k, v in times.items()}
    return {"median_s": med, "ratio": med[num]["cpu"] / med[den]["cpu"],
            "ratio_wall": med[num]["wall"] / med[den]["wall"], "times_s": times}  # fmt: skip


# ------------------------------------------------------------------------------------------------ (a)
def one_step_times(gps, c, sched, t, b: int, repeats: int) -> dict:
    """Interleaved timings of one eq. 4 step (3 predictions) and one text-CFG step (2 predictions), batch ``b``."""
    prompts = ["a street in Midtown, Manhattan"] * b
    text, null = gps._encode_text(prompts), gps._encode_text([""] * b)
    g = gps._gps_tokens(torch.tensor([[40.75, -73.98]] * b))
    zero = torch.zeros_like(g)
    contexts = [torch.cat([null, zero], 1), torch.cat([text, zero], 1), torch.cat([text, g], 1)]
    latents = torch.randn(b, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    wp, wg, s = 3.5, 7.5, 7.5

    def gps_step():  # eq. 4, as GPSToImagePipeline.__call__'s guided_noise (M = 1)
        n_null, n_text, n_gps = gps._predict_noise(latents, t, contexts)
        noise = n_null + wp * (n_text - n_null) + wg * (n_gps - n_text)
        return sched.step(noise, t, latents).prev_sample

    def text_step():  # StableDiffusionPipeline's CFG step
        model_input = sched.scale_model_input(torch.cat([latents] * 2), t)
        pred = c["unet"](model_input, t, encoder_hidden_states=torch.cat([null, text])).sample
        n_null, n_text = pred.chunk(2)
        return sched.step(n_null + s * (n_text - n_null), t, latents).prev_sample

    return interleaved({"gps_two_condition": gps_step, "text_cfg": text_step}, repeats)


@torch.no_grad()
def guidance_step(c, batch_sizes, repeats, pipeline_steps, pipeline_repeats) -> dict:
    gps, sd = gps_pipeline(c), sd_pipeline(c)
    sched = copy.deepcopy(c["scheduler"])
    sched.set_timesteps(50)
    t = sched.timesteps[10]
    out = {}
    for b in batch_sizes:
        out[f"step_b{b}"] = summary(one_step_times(gps, c, sched, t, b, repeats), "gps_two_condition", "text_cfg")
        print(f"(a) step B={b}: ratio {out[f'step_b{b}']['ratio']:.3f} {out[f'step_b{b}']['median_s']}", flush=True)

    def gps_call():
        gps("a street in Midtown, Manhattan", latitude=40.75, longitude=-73.98, num_inference_steps=pipeline_steps,
            output_type="latent", generator=torch.Generator().manual_seed(0))  # fmt: skip

    def sd_call():
        sd("a street in Midtown, Manhattan", num_inference_steps=pipeline_steps, guidance_scale=7.5,
           output_type="latent", generator=torch.Generator().manual_seed(0))  # fmt: skip

    times = interleaved({"gps_pipeline": gps_call, "sd_pipeline": sd_call}, pipeline_repeats, warmup=1)
    out["pipeline_b1"] = summary(times, "gps_pipeline", "sd_pipeline")
    out["pipeline_b1"]["num_inference_steps"] = pipeline_steps
    print(f"(a) pipelines: ratio {out['pipeline_b1']['ratio']:.3f} {out['pipeline_b1']['median_s']}", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ (b)
def lora_step(c, batch_size, repeats) -> dict:
    from diffusers import DDPMScheduler

    from geo_models.generation import GPSEmbedder
    from geo_models.training.stable_diffusion import (
        ConditionedDenoiser,
        condition_dropout_masks,
        drop_tokens,
        setup_unet_finetuning,
    )

    gps = gps_pipeline(c)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                    beta_schedule="scaled_linear")  # fmt: skip
    captions = ["a street in Midtown, Manhattan", "A photo of Central Park", "The Hudson River", "a building"]
    captions = (captions * batch_size)[:batch_size]
    null_text = gps._encode_text([""])

    def make_unet():
        unet = copy.deepcopy(c["unet"])
        torch.manual_seed(0)
        setup_unet_finetuning(unet, "lora", lora_rank=4)
        return unet

    unet_gps, unet_text = make_unet(), make_unet()
    torch.manual_seed(0)
    embedder = GPSEmbedder(hidden_size=TEXT_WIDTH, **AREA).train()
    pipe_gps = gps_pipeline({**c, "unet": unet_gps, "gps_embedder": embedder})
    model = ConditionedDenoiser(unet_gps, embedder, pipe_gps._gps_tokens)
    params_gps = [p for p in model.parameters() if p.requires_grad]
    params_text = [p for p in unet_text.parameters() if p.requires_grad]
    opt_gps, opt_text = torch.optim.AdamW(params_gps, lr=1e-4), torch.optim.AdamW(params_text, lr=1e-4)
    latlon = torch.tensor([[40.75, -73.98]] * batch_size) + torch.rand(batch_size, 2) * 0.05
    step = {"n": 0}

    def batch():
        g = torch.Generator().manual_seed(step["n"])
        step["n"] += 1
        latents = torch.randn(batch_size, 4, 32, 32, generator=g)
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, 1000, (batch_size,), generator=g)
        return noise_scheduler.add_noise(latents, noise, t), t, noise, g

    def gps_step():  # train_gps_to_image.py's compute_loss + fit's optimizer step
        noisy, t, target, g = batch()
        text_dropped, gps_dropped = condition_dropout_masks(batch_size, drop_text=0.05, drop_cond=0.05,
                                                            drop_both=0.05, generator=g)  # fmt: skip
        text = drop_tokens(pipe_gps._encode_text(captions), text_dropped, null_text)
        loss = model(noisy, t, text, latlon, gps_dropped, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params_gps, 1.0)
        opt_gps.step()
        opt_gps.zero_grad()

    def text_step():  # a plain text LoRA step (diffusers' train_text_to_image_lora)
        noisy, t, target, g = batch()
        text_dropped = torch.rand(batch_size, generator=g) < 0.1
        text = drop_tokens(pipe_gps._encode_text(captions), text_dropped, null_text)
        pred = unet_text(noisy, t, encoder_hidden_states=text).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params_text, 1.0)
        opt_text.step()
        opt_text.zero_grad()

    times = interleaved({"gps_lora": gps_step, "text_lora": text_step}, repeats)
    out = summary(times, "gps_lora", "text_lora")
    out.update(batch_size=batch_size, trainable_gps=sum(p.numel() for p in params_gps),
               trainable_text=sum(p.numel() for p in params_text))  # fmt: skip
    print(f"(b) LoRA step B={batch_size}: ratio {out['ratio']:.3f} {out['median_s']}", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ (c)
def rss_mb(field: str = "VmRSS") -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def memory_child(num_points: int, chunk: int, steps: int) -> None:
    torch.set_num_threads(1)
    pipe = gps_pipeline(components())
    points = torch.stack([torch.linspace(40.72, 40.86, num_points), torch.linspace(-74.0, -73.93, num_points)], -1)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS: the set-up's
        f.write("5")  # own peak (building the models) must not hide the call's
    before = rss_mb()
    t0 = time.perf_counter()
    pipe("a building", gps_points=points, gps_chunk_size=chunk, num_inference_steps=steps, output_type="latent",
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    seconds = time.perf_counter() - t0
    peak = rss_mb("VmHWM")
    print(json.dumps({"points": num_points, "chunk": chunk, "rss_before_mb": before, "peak_mb": peak,
                      "peak_delta_mb": peak - before, "seconds": seconds}))  # fmt: skip


def average_memory(points, steps) -> list[dict]:
    rows = []
    for m in points:
        for chunk in sorted({16, m}):
            cmd = [sys.executable, __file__, "--_memory_child", str(m), str(chunk), "--memory_steps", str(steps)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"(c) M={m} chunk={chunk}: peak {row['peak_mb']:.0f} MB, +{row['peak_delta_mb']:.0f} MB", flush=True)
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args._memory_child:
        memory_child(*args._memory_child, args.memory_steps)
        return {}
    torch.set_num_threads(1)
    skip = set(filter(None, args.skip.split(",")))
    c = components()
    out_path = Path(args.output_json)
    result = {"threads": 1}
    result.setdefault("config", {})[",".join(p for p in "abc" if p not in skip)] = {
        k: v for k, v in vars(args).items() if not k.startswith("_")
    }
    result["unet_parameters"] = sum(p.numel() for p in c["unet"].parameters())
    if "a" not in skip:
        bs = [int(b) for b in args.batch_sizes.split(",")]
        result["guidance"] = guidance_step(c, bs, args.repeats, args.pipeline_steps, args.pipeline_repeats)
    if "b" not in skip:
        result["lora"] = lora_step(c, args.train_batch_size, args.train_repeats)
    if "c" not in skip:
        result["average_memory"] = average_memory([int(m) for m in args.points.split(",")], args.memory_steps)
    if skip and out_path.exists():  # skipped parts keep their earlier results
        result = {
            **json.loads(out_path.read_text()),
            **result,
            "config": {**json.loads(out_path.read_text()).get("config", {}), **result["config"]},
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
