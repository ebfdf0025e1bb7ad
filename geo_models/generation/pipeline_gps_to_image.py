"""GPS-to-image diffusion (paper sec. 3.1, 4.3, A.1.3): a text prompt + a GPS tag -> a photo "taken here"."""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import replace_example_docstring
from transformers import CLIPTextModel, CLIPTokenizer

from geo_models.generation.conditioning import GPSEmbedder
from geo_models.generation.pipeline_utils import (
    GeoConditionedDiffusionPipeline,
    GeoImagePipelineOutput,
    as_prompts,
    check_positive_int,
    check_scale,
)

__all__ = ["MAX_GPS_SAMPLES", "GPSToImagePipeline", "check_coordinates"]

MAX_GPS_SAMPLES = 10_000  # points of one average image (each one is a UNet pass per step; the paper uses tens)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from geo_models.testing import tiny_gps_to_image_pipeline
        >>> pipe = tiny_gps_to_image_pipeline()  # yours: GPSToImagePipeline.from_pretrained("outputs/gps-to-image")
        >>> image = pipe("a building", latitude=40.7484, longitude=-73.9857, num_inference_steps=2).images[0]
        >>> average = pipe(  # eq. 8: one image likely under every location of the area
        ...     "a building", gps_area=(40.74, 40.76, -74.0, -73.97), num_gps_samples=32, num_inference_steps=2
        ... ).images[0]
        ```
"""


def check_coordinates(latitude, longitude) -> torch.Tensor:
    """``latitude``, ``longitude``: numbers or 1-D sequences of the same length (or one of length 1) -> ``(N, 2)``
    float32 ``latlon``. NaN / infinite or out-of-range values raise ``ValueError`` naming the argument."""
    values = {}
    for name, value, bound in (("latitude", latitude, 90.0), ("longitude", longitude, 180.0)):
        if value is None:
            raise ValueError(f"{name} is required (degrees, or pass gps_points= / gps_area= for an average image)")
        try:
            t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a number or a 1-D sequence of numbers, got {value!r}") from err
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} must be finite (no NaN or inf), got {t.tolist()}")
        if t.abs().max() > bound:
            raise ValueError(f"{name} must be in [-{bound:g}, {bound:g}] degrees, got {t[t.abs() > bound][0].item()}")
        values[name] = t
    lat, lon = values["latitude"], values["longitude"]
    if lat.numel() != lon.numel() and 1 not in (lat.numel(), lon.numel()):
        raise ValueError(f"latitude and longitude have different lengths: {lat.numel()} and {lon.numel()}")
    return torch.stack(torch.broadcast_tensors(lat, lon), dim=-1)


def sample_area(gps_area, num_samples: int, generator=None) -> torch.Tensor:
    """``num_samples`` points uniform in the box ``gps_area = (lat_min, lat_max, lon_min, lon_max)`` -> ``(M, 2)``."""
    try:
        box = [float(v) for v in gps_area]
    except (TypeError, ValueError) as err:
        raise ValueError(f"gps_area must be (lat_min, lat_max, lon_min, lon_max), got {gps_area!r}") from err
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"gps_area must be 4 finite numbers (lat_min, lat_max, lon_min, lon_max), got {gps_area!r}")
    lat_min, lat_max, lon_min, lon_max = box
    if not (-90 <= lat_min <= lat_max <= 90 and -180 <= lon_min <= lon_max <= 180):
        raise ValueError(
            "gps_area must satisfy -90 <= lat_min <= lat_max <= 90 and -180 <= lon_min <= lon_max <= 180, "
            f"got {gps_area!r}"
        )
    if isinstance(generator, list):
        generator = generator[0]
    if generator is not None and generator.device.type != "cpu":
        generator = None  # area samples are drawn on the CPU
    u = torch.rand(num_samples, 2, generator=generator)
    lo, hi = torch.tensor([lat_min, lon_min]), torch.tensor([lat_max, lon_max])
    return lo + u * (hi - lo)


class GPSToImagePipeline(GeoConditionedDiffusionPipeline):
    r"""Stable Diffusion conditioned on a text prompt and a GPS tag (paper sec. 3.1).

    The GPS tag ``(lat, lon)`` becomes two tokens ``g = [f(lon), f(lat)]`` (:class:`GPSEmbedder`) appended to the
    prompt's CLIP tokens ``p``: the UNet's ``encoder_hidden_states`` is ``concat([p, g], dim=1)``, ``(B, L + 2, D)``.
    Works with any SD-1.x/2.x-style base (``gps_embedder.config.hidden_size`` = the text encoder's width).

    Args:
        vae: the latent autoencoder.
        text_encoder: CLIP text model, hidden size ``D``.
        tokenizer: its tokenizer.
        unet: the (fine-tuned) denoiser, cross-attention width ``D``.
        scheduler: a diffusers scheduler (DDIM, PNDM, Euler, ...).
        gps_embedder: :class:`GPSEmbedder` with ``hidden_size = D`` and the training area in its config.
    """

    model_cpu_offload_seq = "text_encoder->gps_embedder->unet->vae"

    card_type = "gps_to_image"

    def card_kwargs(self) -> dict:
        cfg = self.gps_embedder.config
        area = [*cfg.lat_range, *cfg.lon_range]
        centre = [(area[0] + area[1]) / 2, (area[2] + area[3]) / 2]
        base = super().card_kwargs()
        return {**base, "tags": [*base["tags"], "gps-to-image"], "gps_area": [round(v, 5) for v in area],
                "example_latlon": [round(v, 5) for v in centre], "example_prompt": "A photo taken here"}  # fmt: skip

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        gps_embedder: GPSEmbedder,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            gps_embedder=gps_embedder,
        )

    def _gps_tokens(self, latlon: torch.Tensor) -> torch.Tensor:
        return self.gps_embedder(latlon.to(self._execution_device)).to(self.unet.dtype)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str],
        latitude: float | list[float] | torch.Tensor | None = None,
        longitude: float | list[float] | torch.Tensor | None = None,
        *,
        gps_points: list[tuple[float, float]] | torch.Tensor | None = None,
        gps_area: tuple[float, float, float, float] | None = None,
        num_gps_samples: int = 16,
        gps_chunk_size: int = 16,
        text_guidance_scale: float = 3.5,
        gps_guidance_scale: float = 7.5,
        num_inference_steps: int = 50,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> GeoImagePipelineOutput | tuple:
        r"""Generate images for prompts at GPS locations, or the average image of an area (eq. 8).

        The guided noise estimate is eq. 4 (InstructPix2Pix-style guidance for two conditions)::

            e = e(z; ∅, ∅) + w_p (e(z; p, ∅) - e(z; ∅, ∅)) + w_g (e(z; p, g) - e(z; p, ∅))

        with its three predictions — unconditional ``(∅, ∅)``, text-only ``(p, ∅)`` and text + GPS ``(p, g)`` —
        computed in one batched UNet call of ``3 B`` per step. ``∅`` for the text is the empty prompt's tokens (Stable
        Diffusion's convention for dropped captions); ``∅`` for the GPS is two zero tokens.

        Average-image mode (eq. 8, sec. 4.3): with ``gps_points`` (or ``gps_area`` + ``num_gps_samples``) the GPS
        prediction is replaced by the mean over the M points, ``(1 / M) sum_i e(z; p, g_i)``, all points sharing one
        initial noise; the points go through the UNet ``gps_chunk_size`` at a time, so memory does not grow with M.

        Args:
            prompt: the text prompt, or a list of ``B`` prompts. An empty string is allowed.
            latitude: degrees in [-90, 90]; a number or ``B`` numbers (a single prompt is repeated for several points).
            longitude: degrees in [-180, 180]; same length as ``latitude``.
            gps_points: average-image mode: ``M`` locations ``(lat, lon)`` (list of pairs or an ``(M, 2)`` tensor),
                shared by every prompt. Exclusive with ``latitude`` / ``longitude`` and ``gps_area``.
            gps_area: average-image mode over ``(lat_min, lat_max, lon_min, lon_max)``: ``num_gps_samples`` points
                drawn uniformly in the box (with ``generator``, after the initial noise).
            num_gps_samples: number of points drawn in ``gps_area`` (at most 10,000).
            gps_chunk_size: GPS points per UNet call in average-image mode (bounds memory; does not change the result).
            text_guidance_scale: ``w_p`` of eq. 4 (paper: 3.5), ``|w_p| <= 1000``.
            gps_guidance_scale: ``w_g`` of eq. 4 (paper: 7.5), ``|w_g| <= 1000``.
            num_inference_steps: denoising steps, at most 10,000 (and what the scheduler allows).
            height: image height in pixels, at most 2048 and divisible by the VAE scale factor (default
                ``unet.config.sample_size * vae_scale_factor``).
            width: image width in pixels (same bounds and default).
            generator: torch generator(s) for the initial noise (a list: one per prompt).
            latents: initial noise ``(B, C, height / f, width / f)`` instead of sampling it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return a :class:`GeoImagePipelineOutput` (else a tuple ``(images,)``).

        Examples:

        Returns:
            :class:`GeoImagePipelineOutput` with ``images`` (one per prompt / location), or ``(images,)``.
        """
        # 1. Check inputs
        num_inference_steps, height, width = self._check_common(num_inference_steps, height, width, output_type)
        prompts = as_prompts(prompt)
        text_guidance_scale = check_scale(text_guidance_scale, "text_guidance_scale")
        gps_guidance_scale = check_scale(gps_guidance_scale, "gps_guidance_scale")
        average = gps_points is not None or gps_area is not None
        if sum(x is not None for x in (gps_points, gps_area)) + (latitude is not None or longitude is not None) > 1:
            raise ValueError("give one of latitude/longitude, gps_points or gps_area")
        if average:
            gps_chunk_size = check_positive_int(gps_chunk_size, "gps_chunk_size")
            if gps_points is not None:
                try:
                    points = torch.as_tensor(gps_points, dtype=torch.float32)
                except (TypeError, ValueError, RuntimeError) as err:
                    raise ValueError(f"gps_points must be a list of (lat, lon) pairs, got {gps_points!r}") from err
                if points.ndim != 2 or points.shape[-1] != 2 or points.shape[0] == 0:
                    raise ValueError(
                        f"gps_points must be a non-empty list of (lat, lon), got shape {tuple(points.shape)}"
                    )
                points = check_coordinates(points[:, 0], points[:, 1])
            else:
                num_gps_samples = check_positive_int(num_gps_samples, "num_gps_samples", MAX_GPS_SAMPLES)
            batch_size = len(prompts)
        else:
            latlon = check_coordinates(latitude, longitude)
            batch_size = max(len(prompts), len(latlon))
            if len(latlon) not in (1, batch_size) or len(prompts) not in (1, batch_size):
                raise ValueError(f"got {len(prompts)} prompts for {len(latlon)} locations: give 1 or the same number")
            latlon = latlon.expand(batch_size, 2)
        prompts = prompts * (batch_size // len(prompts))
        self._check_noise_args(batch_size, height, width, generator, latents)

        # 2. Encode the prompts: p (B, L, D) and the empty prompt for the unconditional prediction
        text = self._encode_text(prompts)
        null_text = self._encode_text([""]).expand_as(text)

        # 3. Prepare the initial noise
        latents = self._prepare_latents(batch_size, height, width, generator, latents)

        # 4. Encode the GPS tags: g (B, M, 2, D), M = 1 outside average-image mode
        if not average:
            gps = self._gps_tokens(latlon)[:, None]
        else:
            if gps_points is None:
                points = sample_area(gps_area, num_gps_samples, generator)
            gps = self._gps_tokens(points)[None].expand(batch_size, -1, -1, -1)
        num_points = gps.shape[1]
        chunk = gps_chunk_size if average else 1

        # 5. Conditions: [p, g_i] per point; (∅, ∅) and (p, ∅) with zero GPS tokens
        zero_gps = torch.zeros_like(gps[:, 0])
        null_context = torch.cat([null_text, zero_gps], dim=1)
        text_context = torch.cat([text, zero_gps], dim=1)

        # 6. Guided noise of eq. 4 (M = 1) / eq. 8 (M > 1)
        def guided_noise(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            gps_sum = 0.0
            for start in range(0, num_points, chunk):
                contexts = [torch.cat([text, gps[:, i]], dim=1) for i in range(start, min(start + chunk, num_points))]
                if start == 0:
                    contexts = [null_context, text_context, *contexts]
                noise = self._predict_noise(latents, t, contexts)
                if start == 0:
                    noise_null, noise_text, noise = noise[0], noise[1], noise[2:]
                for n in noise:
                    gps_sum = gps_sum + n
            noise_gps = gps_sum / num_points
            return (
                noise_null
                + text_guidance_scale * (noise_text - noise_null)
                + gps_guidance_scale * (noise_gps - noise_text)
            )

        # 7. Denoising loop
        latents = self._denoise(latents, num_inference_steps, guided_noise)

        # 8. Decode
        images = self._decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return GeoImagePipelineOutput(images=images)
