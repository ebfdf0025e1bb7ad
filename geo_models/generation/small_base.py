"""A small Stable-Diffusion-like base trained from scratch on the CPU: the offline stand-in for the pretrained SD that
the GPS-to-image paper fine-tunes (sec. 4.1), used by the learning benchmark and the demo's starter checkpoint.

1. :func:`train_small_vae`: a 2x-downsampling ``AutoencoderKL`` (32x32x3 images <-> 16x16x4 latents) trained for
   minutes on the images themselves (a random VAE does not reconstruct, so no latent diffusion could draw
   recognisable images), ``scaling_factor`` = 1 / latent std (SD's unit-variance convention).
2. :func:`make_small_base`: an SD folder (``model_index.json`` + ``vae/ text_encoder/ tokenizer/ unet/ scheduler/``)
   with that VAE, a random tiny CLIP text model, the offline CLIP tokenizer, :func:`small_unet` and DDIM.
3. :func:`pretrain_small_base`: its UNet trained text-to-image on captioned imagefolders (plain SD objective), so the
   GPS / angle fine-tuning starts, like the paper's, from a model that already draws the domain.

Every step caches its output folder and is reused when it exists.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["TEXT_WIDTH", "load_pixels", "make_small_base", "pretrain_small_base", "psnr", "small_unet",
           "train_small_vae"]  # fmt: skip

TEXT_WIDTH = 64


def load_pixels(folders: list[Path], image_size: int) -> torch.Tensor:
    """All images of imagefolders -> ``(N, 3, S, S)`` in [-1, 1]."""
    from PIL import Image

    arrays = []
    for folder in folders:
        meta = pd.read_csv(folder / "metadata.csv", dtype={"file_name": str})
        for name in meta["file_name"]:
            with Image.open(folder / name) as img:
                arrays.append(np.asarray(img.convert("RGB").resize((image_size, image_size)), dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return x / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b) ** 2).mean().item() / 4  # on the [0, 1] scale
    return 10 * math.log10(1 / max(mse, 1e-12))


def _optimise(model: torch.nn.Module, batch_loss, *, steps: int, lr: float, weight_decay: float, log_every: int,
              label: str) -> list[dict]:  # fmt: skip
    """``steps`` AdamW steps on ``batch_loss()`` (draws its own batch) with a one-cycle learning rate (5% warm-up);
    returns the loss log (every ``log_every`` steps and the last), also printed."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0, log = time.time(), []
    for step in range(steps):
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step + 1 == steps:
            log.append({"step": step + 1, "loss": loss.item(), "seconds": time.time() - t0})
            print(f"{label} step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    return log


def train_small_vae(out: Path, train: torch.Tensor, test: torch.Tensor, *, steps: int, batch_size: int = 32,
                    lr: float = 2e-3, kl_weight: float = 1e-6, seed: int = 0) -> dict:  # fmt: skip
    """A small 2x AutoencoderKL trained on ``train`` pixels; saved to ``out`` with ``scaling_factor`` = 1 / latent
    std. Returns its stats (held-out PSNR, steps, seconds). Reused if ``out/vae_stats.json`` exists."""
    from diffusers import AutoencoderKL

    stats_path = out / "vae_stats.json"
    if stats_path.exists():
        return json.loads(stats_path.read_text())
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=train.shape[-1],
    )
    g = torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        x = train[torch.randint(0, len(train), (batch_size,), generator=g)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        return torch.nn.functional.mse_loss(rec, x) + kl_weight * post.kl().mean()

    t0 = time.time()
    vae.train()
    log = _optimise(vae, batch_loss, steps=steps, lr=lr, weight_decay=0.0, log_every=50, label="vae")
    seconds = time.time() - t0
    vae.eval()
    with torch.no_grad():
        lat = torch.cat(
            [vae.encode(train[i : i + 256]).latent_dist.mode() for i in range(0, min(len(train), 2048), 256)]
        )
        rec = torch.cat(
            [vae.decode(vae.encode(test[i : i + 256]).latent_dist.mode()).sample for i in range(0, len(test), 256)]
        )
    std = lat.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(out)
    stats = {"steps": steps, "batch_size": batch_size, "lr": lr, "seconds": seconds, "latent_std": std,
             "latent_mean": lat.mean().item(), "test_psnr_db": psnr(rec, test), "n_train": len(train),
             "n_test": len(test), "log": log}  # fmt: skip
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def small_unet(sample_size: int = 16, cross_attention_dim: int = TEXT_WIDTH, seed: int = 0, *,
               block_out_channels: tuple[int, int, int] = (32, 64, 64), norm_num_groups: int = 16):  # fmt: skip
    """A small SD-like UNet (3 levels, default 32/64/64 channels, cross-attention at the two upper levels, one layer
    per block, head dim 8), seeded."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=norm_num_groups,
    )


def make_small_base(out: Path, vae_dir: Path, *, seed: int = 0, text_length: int = 77) -> Path:
    """A Stable-Diffusion-style folder: the trained VAE, a random tiny CLIP text model (width 64), the offline CLIP
    tokenizer padding to ``text_length`` tokens, :func:`small_unet` (random) and a DDIM scheduler with SD's betas.

    ``text_length``: SD pads every prompt to 77 tokens; the short captions here fit in 16, and with 16 text tokens the
    appended GPS / angle tokens get ~1/9 of a fresh cross-attention's weight instead of ~1/40, so a UNet trained from
    scratch for minutes starts using them."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from geo_models.encoders.text import clip_tokenizer, small_clip_text_config

    if (out / "model_index.json").exists():
        return out
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(small_clip_text_config(TEXT_WIDTH))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              beta_schedule="scaled_linear", set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(vae_dir),
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(text_length),
        unet=small_unet(seed=seed),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    return out


def pretrain_small_base(out: Path, base: Path, folders: list[Path], *, steps: int, batch_size: int = 32,
                        lr: float = 1e-3, caption_drop: float = 0.1, seed: int = 0) -> dict:  # fmt: skip
    """A text-to-image base: ``base``'s UNet trained on the captioned images of ``folders`` (the stand-in for the
    pretrained Stable Diffusion the paper fine-tunes; sec. 4.1). Plain SD objective (noise prediction on VAE latents,
    captions dropped to "" with ``caption_drop`` for classifier-free guidance), AdamW, one-cycle schedule. Latents
    and text tokens are encoded once (the VAE and the text encoder stay frozen). Saved to ``out`` as an SD folder;
    reused if ``out/pretrain_stats.json`` exists. Returns stats (steps, seconds, loss log)."""
    from diffusers import StableDiffusionPipeline

    stats_path = out / "pretrain_stats.json"
    if stats_path.exists():
        return json.loads(stats_path.read_text())
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    captions = [c for f in folders for c in pd.read_csv(f / "metadata.csv")["text"].fillna("").astype(str)]
    pixels = load_pixels(folders, pipe.unet.config.sample_size * 2)
    with torch.no_grad():
        latents = torch.cat(
            [pipe.vae.encode(pixels[i : i + 256]).latent_dist.mode() for i in range(0, len(pixels), 256)]
        )
        latents = latents * pipe.vae.config.scaling_factor
        unique = sorted(set(captions)) + [""]
        ids = pipe.tokenizer(unique, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids  # fmt: skip
        tokens = pipe.text_encoder(ids)[0]
    caption_index = torch.tensor([unique.index(c) for c in captions])
    unet, sched = pipe.unet, pipe.scheduler
    g = torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(latents), (batch_size,), generator=g)
        x0, cap = latents[idx], caption_index[idx].clone()
        cap[torch.rand(batch_size, generator=g) < caption_drop] = len(unique) - 1
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=g)
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=tokens[cap]).sample
        return torch.nn.functional.mse_loss(pred, noise)

    t0, c0 = time.time(), time.process_time()
    unet.train()
    log = _optimise(unet, batch_loss, steps=steps, lr=lr, weight_decay=1e-2, log_every=100, label="base")
    unet.eval()
    pipe.save_pretrained(out)
    stats = {"steps": steps, "batch_size": batch_size, "lr": lr, "seconds": time.time() - t0,
             "cpu_seconds": time.process_time() - c0, "n_images": len(latents), "log": log}  # fmt: skip
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
