"""Shared set-up of the generation benchmarks: procedural city / landmark data, a small trained VAE and a tiny SD-like
base folder (``model_index.json`` + ``vae/ text_encoder/ tokenizer/ unet/ scheduler/``) for ``train/`` scripts.

Why a trained VAE: a randomly initialised ``AutoencoderKL`` does not reconstruct, so a diffusion model in its latent
space cannot produce recognisable images. Here a 2x-downsampling ``AutoencoderKL`` (32x32x3 images <-> 16x16x4
latents, 2 blocks of 32/64 channels) is trained for a few minutes (MSE + a tiny KL term) on the benchmark's own
training images (city + landmark), and its ``scaling_factor`` is set to 1 / std of the latents (SD's convention of
unit-variance latents). The text encoder is a random tiny CLIP text model (captions still map to different tokens).
Everything is cached under ``data_dir``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

TEXT_WIDTH = 64


def split_city(data_dir: Path, *, num_images: int, image_size: int = 32, seed: int = 0, cell_deg: float = 0.01,
               holdout_every: int = 5) -> dict[str, Path]:  # fmt: skip
    """``city_all`` (generate_city) split by location: ``cell_deg`` x ``cell_deg`` cells, every ``holdout_every``-th
    cell (a fixed hash of its indices) held out. Both splits link ``city_all/images``. -> ``{"train", "test"}``."""
    from geo_models.data.procedural import generate_city

    root = data_dir / f"city_{num_images}_{image_size}px"
    if not (root / "metadata.csv").exists():
        generate_city(root, num_images, image_size=image_size, seed=seed, progress=False)
    meta = pd.read_csv(root / "metadata.csv", dtype={"file_name": str})
    ci = np.floor(meta["latitude"].to_numpy() / cell_deg).astype(np.int64)
    cj = np.floor(meta["longitude"].to_numpy() / cell_deg).astype(np.int64)
    held = ((ci * 73856093) ^ (cj * 19349663)) % holdout_every == 0
    out = {}
    for split, rows in (("train", ~held), ("test", held)):
        folder = data_dir / f"{root.name}_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "images").exists():
            (folder / "images").symlink_to((root / "images").resolve())
        sub = meta[rows]
        if split == "test":  # a fixed shuffle, so --max_pairs takes a spread of held-out cells
            sub = sub.sample(frac=1.0, random_state=0)
        sub.to_csv(folder / "metadata.csv", index=False, float_format="%.6f")
        out[split] = folder
    return out


def landmark_views(data_dir: Path, *, num_images: int, image_size: int = 32, seed: int = 0) -> Path:
    from geo_models.data.procedural import generate_landmark

    root = data_dir / f"landmark_{num_images}_{image_size}px"
    if not (root / "metadata.csv").exists():
        generate_landmark(root, num_images, image_size=image_size, seed=seed, progress=False)
    return root


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


def train_vae(out: Path, train: torch.Tensor, test: torch.Tensor, *, steps: int, batch_size: int = 32,
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
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    t0, log = time.time(), []
    vae.train()
    for step in range(steps):
        x = train[torch.randint(0, len(train), (batch_size,), generator=g)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = torch.nn.functional.mse_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step + 1 == steps:
            log.append({"step": step + 1, "loss": loss.item(), "seconds": time.time() - t0})
            print(f"vae step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
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


def learning_unet(sample_size: int = 16, cross_attention_dim: int = TEXT_WIDTH, seed: int = 0):
    """The benchmark's small SD-like UNet (3 levels 32/64/64, cross-attention at the two upper levels)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def make_base(out: Path, vae_dir: Path, *, seed: int = 0) -> Path:
    """A Stable-Diffusion-style folder: the trained VAE, a random tiny CLIP text model (width 64), the offline CLIP
    tokenizer, :func:`learning_unet` (random) and a DDIM scheduler with SD's betas."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from geo_models.testing.tiny import clip_tokenizer, tiny_text_encoder_config

    if (out / "model_index.json").exists():
        return out
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(tiny_text_encoder_config(TEXT_WIDTH))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              beta_schedule="scaled_linear", set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(vae_dir),
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(77),
        unet=learning_unet(seed=seed),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    return out
