"""Angle-to-image diffusion (paper sec. 3.2, A.2.1): a landmark prompt + the camera's azimuth -> a view of it."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring
from transformers import CLIPTextModel, CLIPTokenizer

from geo_models.generation.conditioning import AngleEmbedder
from geo_models.generation.pipeline_gps_to_image import check_coordinates
from geo_models.generation.pipeline_utils import (
    GeoConditionedDiffusionPipeline,
    GeoImagePipelineOutput,
    as_prompts,
    check_scale,
)

__all__ = ["AngleToImagePipeline"]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from geo_models.testing import tiny_angle_to_image_pipeline
        >>> pipe = tiny_angle_to_image_pipeline()  # yours: AngleToImagePipeline.from_pretrained("outputs/angle")
        >>> views = pipe("A photo of the landmark", azimuth=[0, 90, 180, 270], num_inference_steps=2).images
        >>> from_gps = pipe("A photo of the landmark", latitude=48.8590, longitude=2.2945, num_inference_steps=2)
        ```
"""


class AngleToImagePipeline(GeoConditionedDiffusionPipeline):
    r"""Stable Diffusion conditioned on a text prompt and the camera's azimuth around a landmark (paper sec. 3.2).

    The azimuth (given, or computed from the camera's GPS around ``angle_embedder.config.centre_latlon``) becomes
    ``num_tokens`` tokens ``g'`` (:class:`AngleEmbedder`) appended to the prompt's CLIP tokens.

    Args:
        vae: the latent autoencoder.
        text_encoder: CLIP text model, hidden size ``D``.
        tokenizer: its tokenizer.
        unet: the (fine-tuned) denoiser, cross-attention width ``D``.
        scheduler: a diffusers scheduler.
        angle_embedder: :class:`AngleEmbedder` with ``hidden_size = D`` and the landmark centre in its config.
    """

    model_cpu_offload_seq = "text_encoder->angle_embedder->unet->vae"

    card_type = "angle_to_image"

    def card_kwargs(self) -> dict:
        cfg = self.angle_embedder.config
        base = super().card_kwargs()
        return {**base, "tags": [*base["tags"], "angle-to-image"], "landmark_name": "the landmark",
                "centre": [round(float(c), 6) for c in cfg.centre_latlon], "num_tokens": cfg.num_tokens,
                "bin_deg": cfg.bin_deg, "example_prompt": "A photo of the landmark"}  # fmt: skip

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        angle_embedder: AngleEmbedder,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            angle_embedder=angle_embedder,
        )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str],
        latitude: float | list[float] | torch.Tensor | None = None,
        longitude: float | list[float] | torch.Tensor | None = None,
        *,
        azimuth: float | list[float] | torch.Tensor | None = None,
        guidance_scale: float = 7.5,
        num_inference_steps: int = 50,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> GeoImagePipelineOutput | tuple:
        r"""Generate views of the landmark from camera positions (GPS) or azimuths.

        The guided noise estimate is eq. 7::

            e = (1 + w) e(z; p, g') - w e(z; ∅, ∅),   w = guidance_scale - 1

        (diffusers' ``guidance_scale`` convention, ``e(∅, ∅) + s (e(p, g') - e(∅, ∅))``), where the unconditional
        prediction zeroes both the text and the angle tokens (sec. 3.2). Its two predictions are one batched UNet
        call of ``2 B`` per step.

        Args:
            prompt: the text prompt (paper: ``"A photo of {landmark name}"``), or a list of ``B`` prompts.
            latitude: camera latitude(s), degrees; the azimuth is taken around the landmark centre.
            longitude: camera longitude(s), degrees.
            azimuth: camera azimuth(s) around the landmark, degrees clockwise from north (instead of GPS).
            guidance_scale: classifier-free guidance scale ``s = 1 + w`` of eq. 7, ``|s| <= 1000``.
            num_inference_steps: denoising steps, at most 10,000 (and what the scheduler allows).
            height: image height in pixels, at most 2048 and divisible by the VAE scale factor (default
                ``unet.config.sample_size * vae_scale_factor``).
            width: image width in pixels (same bounds and default).
            generator: torch generator(s) for the initial noise (a list: one per image).
            latents: initial noise ``(B, C, height / f, width / f)`` instead of sampling it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return a :class:`GeoImagePipelineOutput` (else a tuple ``(images,)``).

        Examples:

        Returns:
            :class:`GeoImagePipelineOutput` with ``images`` (one per prompt / view), or ``(images,)``.
        """
        # 1. Check inputs
        num_inference_steps, height, width = self._check_common(num_inference_steps, height, width, output_type)
        prompts = as_prompts(prompt)
        guidance_scale = check_scale(guidance_scale, "guidance_scale")
        if azimuth is not None:
            if latitude is not None or longitude is not None:
                raise ValueError("give either azimuth or latitude/longitude, not both")
            try:
                angles = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"azimuth must be a number or a 1-D sequence of numbers, got {azimuth!r}") from err
            if angles.numel() == 0 or not torch.isfinite(angles).all():
                raise ValueError(f"azimuth must be finite degrees (no NaN or inf), got {azimuth!r}")
        else:
            angles = self.angle_embedder.azimuth(check_coordinates(latitude, longitude))
        batch_size = max(len(prompts), len(angles))
        if len(angles) not in (1, batch_size) or len(prompts) not in (1, batch_size):
            raise ValueError(f"got {len(prompts)} prompts for {len(angles)} views: give 1 or the same number")
        prompts = prompts * (batch_size // len(prompts))
        angles = angles.expand(batch_size)
        self._check_noise_args(batch_size, height, width, generator, latents)

        # 2. Encode the prompts and the angles: context [p, g'] (B, L + K, D)
        text = self._encode_text(prompts)
        angle = self.angle_embedder(angles.to(self._execution_device)).to(text.dtype)
        context = torch.cat([text, angle], dim=1)
        null_context = torch.zeros_like(context)  # eq. 7: text and angle both zeroed

        # 3. Prepare the initial noise
        latents = self._prepare_latents(batch_size, height, width, generator, latents)

        # 4. Guided noise of eq. 7, one batched UNet call
        def guided_noise(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            noise_null, noise_cond = self._predict_noise(latents, t, [null_context, context])
            return noise_null + guidance_scale * (noise_cond - noise_null)

        # 5. Denoising loop
        latents = self._denoise(latents, num_inference_steps, guided_noise)

        # 6. Decode
        images = self._decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return GeoImagePipelineOutput(images=images)
