"""What the GPS-to-image and angle-to-image pipelines share: input checks, text encoding, latents, the denoising
loop and decoding. Each pipeline only says how it builds its conditions and combines its noise predictions."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from geo_models.checks import (
    MAX_GUIDANCE_SCALE,
    MAX_IMAGE_SIDE,
    MAX_INFERENCE_STEPS,
    check_generator,
    check_int,
    check_noise,
    check_number,
)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class GeoImagePipelineOutput(BaseOutput):
    """Output of :class:`GPSToImagePipeline` and :class:`AngleToImagePipeline`.

    Attributes:
        images: a list of PIL images, a ``(N, H, W, 3)`` numpy array in [0, 1] or a ``(N, 3, H, W)`` tensor in [0, 1]
            (``output_type="latent"``: the ``(N, 4, H / 8, W / 8)`` latents), one image per prompt.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def as_prompts(prompt) -> list[str]:
    """``str`` or list of ``str`` (empty strings allowed, as in diffusers) -> list; anything else -> ValueError."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise ValueError(f"prompt must be a string or a non-empty list of strings, got {type(prompt).__name__}")


def check_positive_int(value, name: str, high: int | None = None) -> int:
    """A whole number in ``[1, high]`` (ValueError naming ``name``); see :func:`geo_models.checks.check_int`."""
    return check_int(value, name, 1, high)


def check_scale(value, name: str) -> float:
    """A guidance scale: a finite number with ``|value| <= MAX_GUIDANCE_SCALE`` (1000; papers use 1-15)."""
    return check_number(value, name, -MAX_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE)


class GeoConditionedDiffusionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Base class: a Stable-Diffusion-style pipeline whose condition is text tokens + extra (GPS or angle) tokens.

    ``load_lora_weights(dir_or_repo)`` (diffusers' LoRA loader) adds UNet LoRA weights saved by the training scripts
    (``pytorch_lora_weights.safetensors``) to a base pipeline.

    Subclasses register ``vae, text_encoder, tokenizer, unet, scheduler`` and their embedder, and call
    :meth:`_check_common`, :meth:`_encode_text`, :meth:`_prepare_latents`, :meth:`_denoise` and :meth:`_decode`.
    """

    card_type: str = "default"  # hub_cards/<card_type>.md

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' ``save_pretrained``, plus the generated code that loads the folder without geo_models
        (``trust_remote_code=True``; see :mod:`geo_models.generation.standalone`) and a ``README.md`` model card
        from ``hub_cards/`` when the folder has none (a trainer writes a fuller one)."""
        from geo_models.generation.standalone import write_standalone_files  # here: import cycle
        from geo_models.hub import render_model_card

        write_standalone_files(self, save_directory)  # first: save_pretrained(push_to_hub=True) uploads at its end
        card = Path(save_directory) / "README.md"
        if not card.exists():  # before the push too: diffusers would upload its own generic card otherwise
            Path(save_directory).mkdir(parents=True, exist_ok=True)
            render_model_card(self.card_type, **self.card_kwargs()).save(card)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def card_kwargs(self) -> dict:
        """Metadata and template variables of the default model card (subclasses add theirs)."""
        return {"pipeline_tag": "text-to-image", "tags": ["diffusers", "stable-diffusion", "text-to-image"]}

    def to_json_string(self) -> str:
        """``model_index.json``: diffusers' text, with ``_class_name`` naming the generated ``pipeline.py`` as
        ``[module, class]`` (how diffusers finds a repo's own pipeline code with ``trust_remote_code=True``; with
        geo_models imported the installed class is used, see :mod:`geo_models.generation`), without the
        ``_name_or_path`` of the machine that saved it."""
        from geo_models.generation.standalone import STANDALONE_PIPELINE_MODULE  # here: import cycle

        text = super().to_json_string()
        if type(self).__module__.split(".")[0] != "geo_models":  # no generated code for outside subclasses
            return text
        data = json.loads(text)
        data["_class_name"] = [STANDALONE_PIPELINE_MODULE, type(self).__name__]
        data.pop("_name_or_path", None)  # where it was loaded from on the machine that saved it: nothing to publish
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _check_common(self, num_inference_steps, height, width, output_type) -> tuple[int, int, int]:
        """Validate the arguments every pipeline shares; returns ``(num_inference_steps, height, width)``.

        ``num_inference_steps`` in [1, 10000]; ``height`` and ``width`` in [1, 2048] pixels and divisible by the VAE
        scale factor."""
        num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps", MAX_INFERENCE_STEPS)
        default = self.unet.config.sample_size * self.vae_scale_factor
        height = default if height is None else check_positive_int(height, "height", MAX_IMAGE_SIDE)
        width = default if width is None else check_positive_int(width, "width", MAX_IMAGE_SIDE)
        for name, value in (("height", height), ("width", width)):
            if value % self.vae_scale_factor:
                raise ValueError(f"{name} must be divisible by {self.vae_scale_factor}, got {value}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        return num_inference_steps, height, width

    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        """``B`` prompts -> CLIP text tokens ``(B, L, D)`` (``L = tokenizer.model_max_length``)."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self._execution_device))[0].to(self.unet.dtype)

    def _check_noise_args(self, batch_size, height, width, generator, latents) -> tuple[int, ...]:
        """Validate ``generator`` (None, a generator or one per image) and ``latents`` (None or a finite tensor of the
        latent shape); returns that shape ``(B, C, height / f, width / f)``."""
        shape = (
            batch_size,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        check_generator(generator, batch_size=batch_size)
        if latents is not None:
            check_noise(latents, shape)
        return shape

    def _prepare_latents(self, batch_size, height, width, generator, latents) -> torch.Tensor:
        shape = self._check_noise_args(batch_size, height, width, generator, latents)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        latents = latents.to(device=self._execution_device, dtype=self.unet.dtype)
        return latents * self.scheduler.init_noise_sigma

    def _predict_noise(self, latents: torch.Tensor, t, contexts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One batched UNet call for several conditions.

        ``latents (B, C, h, w)`` and ``contexts``: K tensors ``(B, T, D)`` (same ``T``) -> K noise predictions
        ``(B, C, h, w)``, computed as one batch of ``K * B``.
        """
        model_input = self.scheduler.scale_model_input(torch.cat([latents] * len(contexts)), t)
        noise = self.unet(model_input, t, encoder_hidden_states=torch.cat(list(contexts))).sample
        return list(noise.chunk(len(contexts)))

    def _denoise(
        self,
        latents: torch.Tensor,
        num_inference_steps: int,
        guided_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The reverse process: at every timestep ``t``, ``guided_noise(latents, t)`` then a scheduler step."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        with self.progress_bar(total=len(self.scheduler.timesteps)) as progress:
            for t in self.scheduler.timesteps:
                noise = guided_noise(latents, t)
                latents = self.scheduler.step(noise, t, latents).prev_sample
                progress.update()
        return latents

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return VaeImageProcessor(vae_scale_factor=self.vae_scale_factor).postprocess(image, output_type=output_type)
