"""Tiny, offline, deterministic components for tests and CPU demos.

Nothing here downloads anything: open_clip architectures come from JSON configs shipped in
`geo_models/encoders/model_configs/`, the CLIP tokenizer is rebuilt from open_clip's bundled BPE merges, and
the Stable Diffusion parts are built from small configs with seeded random weights.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from geo_models.encoders.image import LOCAL_OPEN_CLIP_MODELS as TINY_OPEN_CLIP_MODELS
from geo_models.encoders.image import register_open_clip_configs as register_tiny_open_clip_configs
from geo_models.encoders.text import clip_tokenizer, save_clip_tokenizer  # noqa: F401 (part of this module's API)
from geo_models.encoders.text import small_clip_text_config as tiny_text_encoder_config


@contextmanager
def _seeded(seed: int):
    """Run a block with `torch.manual_seed(seed)` without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------------------------- open_clip
def tiny_open_clip(name: str = "tiny-vit", seed: int = 0):
    """Build a randomly initialised (seeded, deterministic) tiny open_clip model.

    `tiny-vit`: 32x32 RGB images, patch 8, 2 layers of width 32, `encode_image` -> (N, 32); text tower with the
    standard 49408 vocab and context length 77 (works with `open_clip.tokenize`).

    Returns:
        `(model, preprocess)`: model in eval mode and the eval image transform (PIL -> (3, 32, 32) tensor).
    """
    import open_clip

    register_tiny_open_clip_configs()
    if name not in TINY_OPEN_CLIP_MODELS:
        raise ValueError(f"name must be one of {TINY_OPEN_CLIP_MODELS}, got {name!r}")
    with _seeded(seed):
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model.eval(), preprocess


# ----------------------------------------------------------------------------------------------- diffusers
def tiny_sd_components(seed: int = 0) -> dict:
    """Tiny Stable Diffusion components with seeded random weights.

    - `vae`: AutoencoderKL, 3 blocks (4x downsampling), 4 latent channels: (N, 3, 32, 32) <-> (N, 4, 8, 8).
    - `unet`: UNet2DConditionModel on (N, 4, 8, 8) latents, channels (8, 16), cross-attention dim 32
      (takes any number of context tokens of width 32).
    - `text_encoder`: CLIPTextModel, hidden 32, (N, 77) ids -> (N, 77, 32).
    - `tokenizer`: the real CLIP tokenizer (`clip_tokenizer()`), model_max_length 77.
    - `scheduler`: DDIMScheduler with the Stable Diffusion betas (scaled_linear 0.00085 -> 0.012).

    The pipeline's default output size is 32x32 (`unet.sample_size` 8 x `vae_scale_factor` 4).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=4,
        )
    with _seeded(seed + 1):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=32,
        )
    with _seeded(seed + 2):
        text_encoder = CLIPTextModel(tiny_text_encoder_config())
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": clip_tokenizer(77),
        "scheduler": scheduler,
    }


def tiny_stable_diffusion_pipeline(seed: int = 0):
    """A `StableDiffusionPipeline` from `tiny_sd_components(seed)` (no safety checker), default output 32x32."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **tiny_sd_components(seed), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------------- sphere flow
def tiny_sphere_flow_pipeline(objective: str = "riemannian", seed: int = 0, *, embedding_dim: int = 16):
    """A seeded, untrained `SphereFlowPipeline` (width 32, 2 blocks, `cond_dim=embedding_dim`), no backbone.

    Every weight is random, including the layers a fresh `GeoAdaLNMLP` zero-initialises (the block outputs and the
    output layer, std 0.05 here), so samples and densities are non-trivial: the Riemannian density of an image
    varies ~15x over the globe. The time embedding's output layer is scaled by 0.05, so the field changes slowly
    with time and the exact likelihood needs ~60-100 function evaluations (tolerance 1e-5) instead of the ~1000 of
    a network whose 1000-gamma sinusoids are fully used.
    """
    from geo_models.flow import GeoAdaLNMLP, SphereFlowPipeline

    with _seeded(seed):
        network = GeoAdaLNMLP(input_dim=3, dim=32, depth=2, expansion=2, cond_dim=embedding_dim)
        with torch.no_grad():
            for layer in [block.mlp[3] for block in network.blocks] + [network.final_linear]:
                layer.weight.normal_(std=0.05)
                layer.bias.normal_(std=0.05)
            network.time_embedder.map_time[2].weight.mul_(0.05)
    return SphereFlowPipeline(network.eval(), objective=objective)


# ----------------------------------------------------------------------------------------------- GPS-to-image
TINY_GPS_AREA = {"lat_range": (40.70, 40.88), "lon_range": (-74.02, -73.91)}  # Manhattan
TINY_LANDMARK_CENTRE = (48.8584, 2.2945)  # the Eiffel Tower


def tiny_gps_to_image_pipeline(seed: int = 0):
    """A seeded, untrained `GPSToImagePipeline` on `tiny_sd_components(seed)`: 32x32 images, text width 32, a
    `GPSEmbedder` over Manhattan (lat 40.70-40.88, lon -74.02 - -73.91). Progress bar off."""
    from geo_models.generation import GPSEmbedder, GPSToImagePipeline

    with _seeded(seed + 3):
        gps_embedder = GPSEmbedder(hidden_size=32, **TINY_GPS_AREA)
    pipe = GPSToImagePipeline(**tiny_sd_components(seed), gps_embedder=gps_embedder.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_angle_to_image_pipeline(seed: int = 0, *, num_tokens: int = 1):
    """A seeded, untrained `AngleToImagePipeline` on `tiny_sd_components(seed)`: 32x32 images, an `AngleEmbedder`
    (width 32, `num_tokens` tokens) around the Eiffel Tower (48.8584, 2.2945). Progress bar off."""
    from geo_models.generation import AngleEmbedder, AngleToImagePipeline

    with _seeded(seed + 4):
        angle_embedder = AngleEmbedder(hidden_size=32, centre_latlon=TINY_LANDMARK_CENTRE, num_tokens=num_tokens)
    pipe = AngleToImagePipeline(**tiny_sd_components(seed), angle_embedder=angle_embedder.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe
