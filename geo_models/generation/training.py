"""Fine-tuning Stable Diffusion with extra (GPS or angle) tokens, shared by ``train/train_gps_to_image.py`` and
``train/train_angle_to_image.py`` (paper sec. 3.1, 4.1, A.2.1).

- Base model: :func:`load_sd_components` (an SD-1.x/2.x diffusers folder / Hub id or a saved geo pipeline).
- Data: :class:`CaptionedImageSource`, a geotagged imagefolder in step-indexed batches (exact resume).
- Condition dropout (sec. 3.1): :func:`condition_dropout_masks` draws per sample "text dropped only", "condition
  dropped only" or "both dropped"; :func:`drop_tokens` replaces the dropped rows by the pipeline's null condition.
- Model: :func:`setup_unet_finetuning` (LoRA with peft on the UNet attention, or full) and :class:`ConditionedDenoiser`
  (UNet + embedder, whose forward is the noise-prediction MSE of eq. 3); :func:`noisy_latents` for the forward process.
- Checkpoints: :mod:`geo_models.checkpointing` (LoRA runs checkpoint only the trainable weights); saving:
  :func:`save_unet_lora` (diffusers' LoRA format) and :func:`merge_lora`; :func:`save_image_grid` for validation
  images.
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

from geo_models.training import make_accelerator, step_batch_indices

__all__ = [
    "LORA_TARGETS",
    "CaptionedImageSource",
    "ConditionedDenoiser",
    "check_drop_probs",
    "condition_dropout_masks",
    "drop_tokens",
    "load_sd_components",
    "merge_lora",
    "noisy_latents",
    "save_image_grid",
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
class CaptionedImageSource:
    """A geotagged imagefolder (``metadata.csv``/``.jsonl``: ``file_name, latitude, longitude`` + optional caption
    column) served as ``(pixels (B, 3, R, R) in [-1, 1], latlon (B, 2), captions)`` batches.

    Batch ``i`` of this process is a function of ``(seed, i, rank)`` (:func:`~geo_models.training.step_batch_indices`,
    random crops / flips seeded per item), so a resumed run reads exactly the batches of an uninterrupted one.

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
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: tuple[int, int]):
        from geo_models.training_images import seeded_call

        index, seed = key
        pixels = seeded_call(self.transform, self.images[index]["image"], seed)
        return pixels, self.latlon[index], self.captions[index]

    def batches(self, start: int):
        """Endless iterator of batches ``start, start + 1, ...`` (micro-batches, not optimizer steps)."""

        def index_lists():
            i = start
            while True:
                rows = step_batch_indices(
                    i, len(self), self.batch_size, seed=self.seed, rank=self.rank, world=self.world
                )
                yield [(int(r), hash((self.seed, i, self.rank, j))) for j, r in enumerate(rows)]
                i += 1

        loader = torch.utils.data.DataLoader(
            self, batch_sampler=index_lists(), num_workers=self.num_workers, collate_fn=_collate
        )
        yield from loader


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
    """Flags every SD fine-tuning script shares (diffusers' names): base model, data, fine-tuning, optimisation,
    validation cadence, Hub, plus :func:`geo_models.training.add_run_args` (precision, seed, checkpoints, logging)."""
    from geo_models.training import add_run_args

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
    p.add_argument("--train_batch_size", type=int, default=16, help="per process")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--max_train_steps", type=int, default=None, help="optimizer steps (default: from epochs)")
    p.add_argument("--num_train_epochs", type=int, default=100)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--lr_scheduler", default="constant", help="diffusers.optimization.get_scheduler name")
    p.add_argument("--lr_warmup_steps", type=int, default=0)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--adam_weight_decay", type=float, default=1e-2)
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0: none)")
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--validation_prompt", default=None, help="default: the captions of the validation points")
    p.add_argument("--validation_steps", type=int, default=500, help="validation grid every N steps (and at the end)")
    p.add_argument("--validation_inference_steps", type=int, default=30)
    add_run_args(p)
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)


def check_finetune_args(parser, args, template_fields: dict[str, str] | None = None) -> None:
    """``parser.error`` naming the flag for out-of-range values of :func:`add_finetune_args`' flags;
    ``--prompt_template`` may use the keys of ``template_fields`` (default: ``{area_name}``)."""
    positive = [
        "resolution",
        "lora_rank",
        "train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "validation_steps",
        "validation_inference_steps",
        "checkpointing_steps",
        "logging_steps",
    ]
    for name in positive + ["max_train_steps"] * (args.max_train_steps is not None):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    for name in ("lr_warmup_steps", "adam_weight_decay", "max_grad_norm", "dataloader_num_workers"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    fields = {"area_name": args.area_name} if template_fields is None else template_fields
    try:
        args.prompt_template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        parser.error(f"--prompt_template may only use {', '.join(f'{{{k}}}' for k in fields)}: {err!r}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")


# ------------------------------------------------------------------------------------------------ loop
def fit(
    accelerator,
    args,
    model: nn.Module,
    source: CaptionedImageSource,
    compute_loss,
    validate=None,
    *,
    name: str = "train",
) -> nn.Module:
    """The training loop: AdamW over ``model``'s trainable parameters, ``args.lr_scheduler``, ``accelerate.prepare``,
    resume, then ``args.max_train_steps`` optimizer steps of ``gradient_accumulation_steps`` micro-batches each.

    ``compute_loss(prepared_model, batch, generator) -> loss``; the generator is seeded by (seed, micro-batch, rank),
    so noise, timesteps and dropped conditions replay exactly after a resume. ``validate(step)`` runs on the main
    process every ``validation_steps`` steps. Checkpoints (LoRA: trainable weights only) every
    ``checkpointing_steps``; metrics to ``output_dir/logs/train_log.jsonl``. Returns the unwrapped model.
    """
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from geo_models.training import log_metrics, resume_state, save_checkpoint, steps_per_epoch

    output_dir, world, rank = Path(args.output_dir), accelerator.num_processes, accelerator.process_index
    ga = args.gradient_accumulation_steps
    max_steps = args.max_train_steps or args.num_train_epochs * max(
        1, steps_per_epoch(len(source), args.train_batch_size, world) // ga
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * world,
        num_training_steps=max_steps * world,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    lora = args.finetune == "lora"
    if args.report_to:
        accelerator.init_trackers(
            name, config={k: v for k, v in vars(args).items() if isinstance(v, int | float | str)}
        )
    start = resume_state(
        accelerator,
        output_dir,
        args.resume_from_checkpoint,
        trainable_only=lora,
        ignore_rng_state=args.ignore_rng_state,
    )
    logger.info(
        "%d images, %d processes, %d steps x %d micro-batches of %d, %d trainable parameters",
        len(source),
        world,
        max_steps,
        ga,
        args.train_batch_size,
        sum(p.numel() for p in params),
    )
    log_path = output_dir / "logs" / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress = tqdm(
        range(start, max_steps), initial=start, total=max_steps, desc=name, disable=not accelerator.is_main_process
    )
    batches = source.batches(start * ga)
    model.train()
    for step in progress:
        losses = []
        for micro in range(ga):
            i = step * ga + micro
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + i * 1009 + rank)
            with accelerator.accumulate(model), accelerator.autocast():
                loss = compute_loss(model, next(batches), generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
        if step % args.logging_steps == 0 or step + 1 == max_steps:
            loss = accelerator.gather(torch.stack(losses).mean()[None]).mean().item()
            log_metrics(
                accelerator, {"step": step + 1, "loss": loss, "lr": lr_scheduler.get_last_lr()[0]}, log_path, progress
            )
        if (step + 1) % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step + 1, args.checkpoints_total_limit, trainable_only=lora)
        if validate is not None and (step + 1) % args.validation_steps == 0 and step + 1 < max_steps:
            if accelerator.is_main_process:
                validate(step + 1)
            model.train()
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model)


def save_trained_pipeline(
    accelerator, args, pipe, validate: Callable, write_card: Callable[[str], None], *, what: str
):
    """Step 5 of the trainers: LoRA adapters alone in diffusers' format, then merged into the UNet; the pipeline; the
    final validation grid; the card (``write_card(grid path relative to output_dir)``); the push."""
    from geo_models.hub import push_folder

    output_dir = Path(args.output_dir)
    for module in pipe.components.values():
        if isinstance(module, nn.Module):
            module.eval()
    if accelerator.is_main_process:
        if args.finetune == "lora":
            save_unet_lora(pipe.unet, output_dir)
            merge_lora(pipe.unet)
        pipe.save_pretrained(output_dir)
        write_card(validate("final").relative_to(output_dir).as_posix())
        if args.push_to_hub:
            ignore = ["checkpoint-*", "checkpoint-*/**", "logs/**"]
            url = push_folder(output_dir, args.hub_model_id, commit_message=f"Upload {what}", ignore_patterns=ignore)
            logger.info("pushed to %s", url)
    accelerator.end_training()
    return pipe


def start_run(args) -> tuple:
    """The trainers' common start -> ``(accelerator, output_dir, components)``: the accelerator, the output folder,
    and the base's components with the VAE and text encoder frozen on the accelerator's device."""
    accelerator = make_accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    components = load_sd_components(args.pretrained_model_name_or_path, revision=args.revision)
    for name in ("vae", "text_encoder"):
        components[name].requires_grad_(False).eval().to(accelerator.device)
    return accelerator, output_dir, components
