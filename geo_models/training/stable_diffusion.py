"""The Stable Diffusion part of training, shared by ``train/train_gps_to_image.py`` and
``train/train_angle_to_image.py`` (paper sec. 3.1, 4.1, A.2.1): fine-tuning SD with extra (GPS or angle) tokens on
the shared loop of :mod:`geo_models.training` (``fit``, ``finish_run``).

- Base model: :func:`load_sd_components` (an SD-1.x/2.x diffusers folder / Hub id or a saved geo pipeline).
- Data: :class:`CaptionedImageSource`, a geotagged imagefolder in step-indexed batches (exact resume).
- Condition dropout (sec. 3.1): :func:`condition_dropout_masks` draws per sample "text dropped only", "condition
  dropped only" or "both dropped"; :func:`drop_tokens` replaces the dropped rows by the pipeline's null condition.
- Model: :func:`setup_unet_finetuning` (LoRA with peft on the UNet attention, or full) and :class:`ConditionedDenoiser`
  (UNet + embedder, whose forward is the noise-prediction MSE of eq. 3); :func:`noisy_latents` for the forward process.
- Saving: :func:`save_unet_lora` (diffusers' LoRA format), :func:`merge_lora`, :func:`save_trained_pipeline`;
  :func:`save_image_grid` for validation images. (LoRA runs checkpoint only the trainable weights.)
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from geo_models.training.args import add_hub_args, add_optim_args, add_run_args, check_args
from geo_models.training.harness import finish_run
from geo_models.training.launch import enable_xformers_if_available
from geo_models.training.sources import StepIndexedSource, seeded_call

__all__ = [
    "LORA_TARGETS",
    "CaptionedImageSource",
    "ConditionedDenoiser",
    "add_finetune_args",
    "build_finetuned_pipeline",
    "captioned_source",
    "check_drop_probs",
    "check_finetune_args",
    "condition_dropout_masks",
    "drop_tokens",
    "grid_validator",
    "load_frozen_base",
    "load_sd_components",
    "merge_lora",
    "noisy_latents",
    "save_image_grid",
    "save_trained_pipeline",
    "save_unet_lora",
    "setup_unet_finetuning",
]

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # the UNet's attention projections (diffusers' LoRA examples)
logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ base model
def load_sd_components(name_or_path: str, *, revision: str | None = None) -> dict:
    """Components of an SD-style diffusers folder or Hub repo: ``vae, text_encoder, tokenizer, unet`` (fp32),
    ``noise_scheduler`` (a ``DDPMScheduler`` from the base's scheduler config, for training), ``scheduler`` (the
    base's own scheduler class, for sampling) and ``model_index`` (its ``model_index.json``: a saved
    GPS-/angle-to-image pipeline also lists its embedder there)."""
    import diffusers
    from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"revision": revision}
    model_index = DiffusionPipeline.load_config(name_or_path, **kw)
    scheduler_cls = getattr(diffusers, model_index.get("scheduler", [None, "DDIMScheduler"])[1], None)
    scheduler_cls = scheduler_cls or diffusers.DDIMScheduler
    return {
        "vae": AutoencoderKL.from_pretrained(name_or_path, subfolder="vae", **kw),
        "text_encoder": CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder", **kw),
        "tokenizer": CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer", **kw),
        "unet": UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet", **kw),
        "noise_scheduler": DDPMScheduler.from_pretrained(name_or_path, subfolder="scheduler", **kw),
        "scheduler": scheduler_cls.from_pretrained(name_or_path, subfolder="scheduler", **kw),
        "model_index": dict(model_index),
    }


# ------------------------------------------------------------------------------------------------ data
class CaptionedImageSource(StepIndexedSource):
    """A geotagged imagefolder (``metadata.csv``/``.jsonl``: ``file_name, latitude, longitude`` + optional caption
    column) served as ``(pixels (B, 3, R, R) in [-1, 1], latlon (B, 2), captions)`` batches.

    Batch ``i`` of this process is a function of ``(seed, i, rank)`` (a step-indexed source, random crops / flips
    seeded per item), so a resumed run reads exactly the batches of an uninterrupted one.

    Args:
        root: the imagefolder.
        resolution: side ``R`` of the square training images (resize the short side, then crop).
        caption_column: the metadata column of captions (None: ``text`` or ``caption`` when present). Rows without
            a caption, or every row when there is no such column, get ``prompt_template.format(area_name=...)``.
        center_crop: centre crops (else random crops). random_flip: random horizontal flips.
    """

    def __init__(
        self,
        root,
        resolution: int,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        caption_column: str | None = None,
        prompt_template: str = "a photo taken in {area_name}",
        area_name: str = "the area",
        center_crop: bool = True,
        random_flip: bool = False,
        num_workers: int = 0,
    ):
        from torchvision import transforms

        from geo_models.data import GeoImageFolder

        super().__init__(batch_size, seed, rank, world, num_workers)
        self.images = GeoImageFolder(root)
        meta = self.images.metadata
        if caption_column is None:
            caption_column = next((c for c in ("text", "caption") if c in meta.columns), None)
        elif caption_column not in meta.columns:
            raise ValueError(f"caption_column: {caption_column!r} is not a column of {root}'s metadata")
        default = prompt_template.format(area_name=area_name)
        raw = meta[caption_column] if caption_column else pd.Series([None] * len(meta))
        self.captions = [default if pd.isna(c) or not str(c).strip() else str(c) for c in raw]
        self.latlon = self.images.latlon
        crop = transforms.CenterCrop(resolution) if center_crop else transforms.RandomCrop(resolution)
        self.transform = transforms.Compose(
            [
                transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
                crop,
                transforms.RandomHorizontalFlip() if random_flip else transforms.Lambda(lambda x: x),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        pixels = seeded_call(self.transform, self.images[index]["image"], seed)
        return pixels, self.latlon[index], self.captions[index]

    def batches(self, start: int):
        """Endless iterator of batches ``start, start + 1, ...`` (micro-batches, not optimizer steps)."""
        yield from self.loader(self, start, collate_fn=_collate)


def _collate(items):
    pixels, latlon, captions = zip(*items)
    return torch.stack(pixels), torch.stack(latlon), list(captions)


# ------------------------------------------------------------------------------------------------ dropout
def check_drop_probs(**probs: float) -> None:
    """Each probability in [0, 1] and their sum <= 1; ValueError naming them (pass the flag names as keywords)."""
    for name, p in probs.items():
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if sum(probs.values()) > 1 + 1e-9:
        raise ValueError(f"{' + '.join(probs)} must be <= 1 (disjoint cases per sample), got {sum(probs.values())}")


def condition_dropout_masks(
    batch_size: int, *, drop_text: float, drop_cond: float, drop_both: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample condition dropout of sec. 3.1 / 4.1: with probability ``drop_text`` only the text is dropped, with
    ``drop_cond`` only the GPS (angle) condition, with ``drop_both`` both (disjoint cases, paper: 5% each).

    Returns ``(text_dropped (B,), cond_dropped (B,))`` bool masks, drawn from ``generator`` (one uniform per sample).
    """
    check_drop_probs(drop_text=drop_text, drop_cond=drop_cond, drop_both=drop_both)
    u = torch.rand(batch_size, generator=generator)
    text_only = u < drop_text
    cond_only = (u >= drop_text) & (u < drop_text + drop_cond)
    both = (u >= drop_text + drop_cond) & (u < drop_text + drop_cond + drop_both)
    return text_only | both, cond_only | both


def drop_tokens(tokens: torch.Tensor, dropped: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
    """``tokens (B, T, D)`` with the rows where ``dropped (B,)`` replaced by ``null`` (``(T, D)`` or ``(1, T, D)``;
    None: zeros, the pipelines' null GPS / angle tokens)."""
    null = torch.zeros_like(tokens[:1]) if null is None else null.reshape(1, *tokens.shape[1:]).to(tokens)
    return torch.where(dropped.to(tokens.device)[:, None, None], null, tokens)


# ------------------------------------------------------------------------------------------------ model
def setup_unet_finetuning(unet, finetune: str, *, lora_rank: int = 4, gradient_checkpointing: bool = False) -> None:
    """``"lora"``: freeze the UNet and add rank-``lora_rank`` adapters (``lora_alpha = rank``) to its attention
    projections (:data:`LORA_TARGETS`, diffusers' ``unet.add_adapter`` convention); ``"full"``: train every weight."""
    if finetune not in ("lora", "full"):
        raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    unet.requires_grad_(finetune == "full")
    if finetune == "lora":
        from peft import LoraConfig

        unet.add_adapter(
            LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
        )
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()


class ConditionedDenoiser(nn.Module):
    """What accelerate prepares, trains and checkpoints: the UNet and the embedder. Its forward is the loss (eq. 3,
    noise-prediction MSE), so under DDP each step is one forward through the wrapper.

    Args:
        unet: the denoiser. embedder: the GPS / angle embedder (trained in full).
        embed: ``condition (B, ...) -> tokens (B, K, D)``, the pipeline's own helper (e.g. ``pipe._gps_tokens``), so
            training and sampling build the tokens the same way.
    """

    def __init__(self, unet: nn.Module, embedder: nn.Module, embed: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.unet, self.embedder = unet, embedder
        self.embed = embed

    def forward(self, latents, timesteps, text, condition, cond_dropped, target, reduction="mean") -> torch.Tensor:
        """``latents (B, C, h, w)`` noisy, ``timesteps (B,)``, ``text (B, L, D)`` tokens (dropout applied),
        ``condition`` the embedder's input, ``cond_dropped (B,)`` bool, ``target`` noise or velocity -> MSE
        (``reduction="none"``: per sample, ``(B,)``, e.g. to weigh prior-preservation examples)."""
        tokens = drop_tokens(self.embed(condition), cond_dropped)
        context = torch.cat([text.to(tokens.dtype), tokens], dim=1)
        pred = self.unet(latents, timesteps, encoder_hidden_states=context).sample
        if reduction == "none":
            return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
        return F.mse_loss(pred.float(), target.float())


@torch.no_grad()
def noisy_latents(vae, noise_scheduler, pixels: torch.Tensor, generator: torch.Generator):
    """Forward process on VAE latents: ``pixels (B, 3, R, R)`` in [-1, 1] -> ``(noisy latents, timesteps (B,),
    target)``, the target being the noise (``epsilon``) or the velocity (``v_prediction``) per the scheduler config.
    All randomness comes from ``generator`` (CPU)."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    latents = dist.sample(generator=generator) * vae.config.scaling_factor
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {kind!r}")
    return noisy, t, target


# ------------------------------------------------------------------------------------------------ saving
def save_unet_lora(unet, save_directory: str | os.PathLike) -> Path:
    """The UNet's adapters in diffusers' LoRA format: ``save_directory/pytorch_lora_weights.safetensors``, loadable
    with ``pipe.load_lora_weights(save_directory)``."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionLoraLoaderMixin.save_lora_weights(save_directory, unet_lora_layers=layers, safe_serialization=True)
    return Path(save_directory) / "pytorch_lora_weights.safetensors"


def merge_lora(unet) -> None:
    """Fuse the adapters into the UNet's weights and remove them (a plain ``UNet2DConditionModel`` again)."""
    unet.fuse_lora()
    unet.unload_lora()


def save_image_grid(images, path: str | os.PathLike) -> Path:
    """PIL images in one row -> a PNG at ``path`` (parents created)."""
    from diffusers.utils import make_image_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image_grid(list(images), rows=1, cols=len(images)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ flags
def add_finetune_args(parser) -> None:
    """Flags every SD fine-tuning script shares (diffusers' names): base model, data, fine-tuning, validation
    cadence, plus :mod:`geo_models.training.args`' optimisation (AdamW, constant lr 1e-4, batch 16), run and Hub
    flags."""
    p = parser
    p.add_argument("--pretrained_model_name_or_path", required=True, help="SD-1.x/2.x diffusers folder or Hub id")
    p.add_argument("--revision", default=None)
    p.add_argument("--train_data", required=True, help="imagefolder: metadata.csv/.jsonl with latitude, longitude")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--center_crop", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--random_flip", action="store_true")
    p.add_argument("--caption_column", default=None, help="default: 'text' or 'caption' when present")
    p.add_argument("--prompt_template", default="a photo taken in {area_name}", help="for images without caption")
    p.add_argument("--area_name", default="the area", help="fills {area_name} in --prompt_template")
    p.add_argument("--finetune", choices=("lora", "full"), default="lora", help="UNet training (embedder: full)")
    p.add_argument("--lora_rank", type=int, default=4)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--enable_xformers_memory_efficient_attention", action="store_true", help="CUDA only")
    add_optim_args(p, train_batch_size=16, learning_rate=1e-4, num_train_epochs=100)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--validation_prompt", default=None, help="default: the captions of the validation points")
    p.add_argument("--validation_steps", type=int, default=500, help="validation grid every N steps (and at the end)")
    p.add_argument("--validation_inference_steps", type=int, default=30)
    add_run_args(p)
    add_hub_args(p)


def check_finetune_args(parser, args, template_fields: dict[str, str] | None = None) -> None:
    """``parser.error`` naming the flag for out-of-range values of :func:`add_finetune_args`' flags, a
    ``--train_data`` without readable metadata or a missing ``--caption_column``; ``--prompt_template`` may use the
    keys of ``template_fields`` (default: ``{area_name}``)."""
    check_args(parser, args, positive=("resolution", "validation_steps", "validation_inference_steps"))
    from geo_models.data import read_imagefolder_metadata

    try:
        meta = read_imagefolder_metadata(args.train_data)
    except ValueError as err:
        parser.error(f"--train_data: {err}")
    if args.caption_column is not None and args.caption_column not in meta.columns:
        parser.error(f"--caption_column: {args.caption_column!r} is not a column of {args.train_data}'s metadata")
    fields = {"area_name": args.area_name} if template_fields is None else template_fields
    try:
        args.prompt_template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        parser.error(f"--prompt_template may only use {', '.join(f'{{{k}}}' for k in fields)}: {err!r}")


# ------------------------------------------------------------------------------------------------ run
def load_frozen_base(run) -> dict:
    """The base's components (:func:`load_sd_components`) with the VAE and text encoder frozen on the run's device."""
    args = run.args
    components = load_sd_components(args.pretrained_model_name_or_path, revision=args.revision)
    for name in ("vae", "text_encoder"):
        components[name].requires_grad_(False).eval().to(run.device)
    return components


def captioned_source(run, root, *, seed: int, **kwargs) -> CaptionedImageSource:
    """A :class:`CaptionedImageSource` of ``root`` with the run's resolution, batch, crops, flips and workers."""
    args = run.args
    return CaptionedImageSource(
        root,
        args.resolution,
        batch_size=args.train_batch_size,
        seed=seed,
        rank=run.rank,
        world=run.world,
        center_crop=args.center_crop,
        random_flip=args.random_flip,
        num_workers=args.dataloader_num_workers,
        **kwargs,
    )


def build_finetuned_pipeline(run, pipeline_cls, components: dict, embedder: nn.Module):
    """The pipeline being trained: the UNet set up for ``--finetune`` (:func:`setup_unet_finetuning`, xformers on
    CUDA when asked), the frozen VAE / text encoder, ``embedder``; on the run's device, progress bars off."""
    args, unet = run.args, components["unet"]
    setup_unet_finetuning(
        unet, args.finetune, lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing
    )
    if args.enable_xformers_memory_efficient_attention:
        enable_xformers_if_available(unet)
    names = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
    pipe = pipeline_cls(*(components[n] for n in names), embedder)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(run.device)


def grid_validator(run, pipe, **call_kwargs) -> Callable:
    """``validate(step) -> path``: ``pipe(**call_kwargs)`` at the run's resolution, ``--validation_inference_steps``
    and a fixed seed, saved as one row under ``output_dir/validation/step-<step>.png`` (or ``<step>.png``)."""
    args = run.args

    def validate(step) -> Path:
        pipe.unet.eval()
        images = pipe(
            **call_kwargs,
            num_inference_steps=args.validation_inference_steps,
            height=args.resolution,
            width=args.resolution,
            generator=torch.Generator().manual_seed(args.seed),
        ).images
        name = f"step-{step}" if isinstance(step, int) else step
        return save_image_grid(images, run.output_dir / "validation" / f"{name}.png")

    return validate


def save_trained_pipeline(run, pipe, validate: Callable, write_card: Callable[[str], None], *, what: str):
    """The end of the SD trainers (:func:`~geo_models.training.finish_run`): LoRA adapters alone in diffusers'
    format, then merged into the UNet; the pipeline; the final validation grid; the card (``write_card(grid path
    relative to output_dir)``); the push."""
    output_dir = run.output_dir
    for module in pipe.components.values():
        if isinstance(module, nn.Module):
            module.eval()

    def save(card_kwargs):
        if run.args.finetune == "lora":
            save_unet_lora(pipe.unet, output_dir)
            merge_lora(pipe.unet)
        pipe.save_pretrained(output_dir)
        write_card(validate("final").relative_to(output_dir).as_posix())

    finish_run(run, save, what=what)
    return pipe
