"""The flags every trainer shares (diffusers' names where diffusers has one), with their checks.

Each group has ``add_*_args(parser, **defaults)`` (a script keeps its paper's defaults by passing them) and the checks
run by :func:`check_args` (``parser.error`` naming the flag). ``--max_train_steps`` counts optimizer steps in every
script (each of ``--gradient_accumulation_steps`` micro-batches), as in diffusers' training examples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = [
    "add_data_args",
    "add_hub_args",
    "add_image_args",
    "add_optim_args",
    "add_run_args",
    "check_args",
    "check_data_args",
    "open_clip_models",
]


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Precision, seed, checkpoints, logging."""
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument(
        "--ignore_rng_state",
        action="store_true",
        help="resume even if the checkpoint's RNG states are missing or corrupt (the run then differs from an "
        "uninterrupted one)",
    )
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--report_to", default=None, help="accelerate tracker (tensorboard, wandb, ...)")


def add_optim_args(
    parser: argparse.ArgumentParser,
    *,
    train_batch_size: int,
    learning_rate: float,
    num_train_epochs: int,
    lr_scheduler: str = "constant",
    lr_warmup_steps: int = 0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    weight_decay: float = 1e-2,
    max_grad_norm: float = 1.0,
    max_train_steps: int | None = None,
    lr_scheduler_help: str = "diffusers.optimization.get_scheduler name",
) -> None:
    """Batch, optimizer (AdamW unless the script says otherwise), learning-rate schedule (diffusers'
    ``get_scheduler`` names, or what ``lr_scheduler_help`` says), clipping and length; defaults are the script's
    paper's."""
    p = parser
    p.add_argument("--train_batch_size", type=int, default=train_batch_size, help="per process")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--max_train_steps", type=int, default=max_train_steps, help="optimizer steps (default: epochs)")
    p.add_argument("--num_train_epochs", type=int, default=num_train_epochs)
    p.add_argument("--learning_rate", type=float, default=learning_rate)
    p.add_argument("--lr_scheduler", default=lr_scheduler, help=lr_scheduler_help)
    p.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps)
    p.add_argument("--adam_beta1", type=float, default=adam_beta1)
    p.add_argument("--adam_beta2", type=float, default=adam_beta2)
    p.add_argument("--weight_decay", "--adam_weight_decay", dest="weight_decay", type=float, default=weight_decay)
    p.add_argument("--max_grad_norm", type=float, default=max_grad_norm, help="gradient clipping (0: none)")


def add_data_args(parser: argparse.ArgumentParser, *, validation: str | None = None, images: bool = False) -> None:
    """``--train_data``, ``--output_dir``, (with a help text) ``--validation_data`` and (``images``) the flags of
    training from images (:func:`add_image_args`)."""
    parser.add_argument(
        "--train_data", required=True, help="embedding parquet (file/folder), imagefolder or .tar shards"
    )
    if validation:
        parser.add_argument("--validation_data", default=None, help=validation)
    parser.add_argument("--output_dir", required=True)
    if images:
        add_image_args(parser)


def add_hub_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """The flags of training from images: backbone, fine-tuning, augmented views, data-loading workers."""
    from geo_models.training.features import FINETUNE_MODES

    parser.add_argument("--backbone", default="ViT-L-14", help="open_clip architecture (image data only)")
    parser.add_argument(
        "--backbone_pretrained", default="openai", help="open_clip tag or weights file ('none': random)"
    )
    parser.add_argument("--finetune", choices=FINETUNE_MODES, default="frozen", help="backbone training")
    parser.add_argument("--lora_rank", type=int, default=8)
    parser.add_argument("--num_views", type=int, default=1, help="P augmented views per image (image data)")
    parser.add_argument("--augment_strength", type=float, default=0.5, help="SimCLR colour-jitter strength")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument(
        "--attach_backbone",
        action="store_true",
        help="embedding data: save the model with the frozen backbone that computed the features (read from the "
        "data's embedding_info.json), so it predicts from images",
    )


# ------------------------------------------------------------------------------------------------------ checks
_POSITIVE = (
    "train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "checkpointing_steps",
    "logging_steps",
    "num_views",
    "lora_rank",
)
_NON_NEGATIVE = ("lr_warmup_steps", "weight_decay", "max_grad_norm", "dataloader_num_workers", "augment_strength")


CPU_RECIPES = (
    "Defaults are the papers' (GPU-sized). CPU-sized flags, their time on one core and what they reach on the "
    "procedural data: README.md, 'Training on a CPU'."
)


def add_preset_arg(parser: argparse.ArgumentParser, presets: dict[str, dict], help: str) -> None:
    """``--preset NAME``: a named set of flag values (e.g. a CPU-sized run) that :func:`apply_preset` puts in place
    of the defaults; flags given explicitly still win."""
    parser.add_argument("--preset", choices=tuple(presets), default=None, help=help)


def apply_preset(parser: argparse.ArgumentParser, args: argparse.Namespace, presets: dict[str, dict]) -> None:
    """Set the preset's values on ``args`` for every flag left at its default (after ``parse_args``)."""
    for key, value in presets.get(getattr(args, "preset", None), {}).items():
        if getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace, *, positive=(), non_negative=()) -> None:
    """``parser.error`` naming the flag for the shared groups' out-of-range values and for the script's own
    ``positive`` (>= 1) / ``non_negative`` (>= 0) flags; ``--push_to_hub`` needs ``--hub_model_id``."""
    names = [n for n in (*_POSITIVE, *positive) if getattr(args, n, None) is not None]
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if getattr(args, "max_train_steps", None) is not None and args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be >= 1, got {args.max_train_steps}")
    for name in (*_NON_NEGATIVE, *non_negative):
        if getattr(args, name, None) is not None and getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if hasattr(args, "learning_rate") and not args.learning_rate > 0:
        parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    if getattr(args, "push_to_hub", False) and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")


def check_data_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.data_format`` from ``--train_data`` and validate ``--validation_data`` (embedding parquet or
    imagefolder; images need image training) and the image flags (a known ``--backbone`` for image data; ``--finetune``
    and ``--num_views`` need images; ``--backbone_pretrained none`` becomes None; ``--attach_backbone``)."""
    from geo_models.data import dataset_format

    formats = {}
    for flag in ("train_data", "validation_data"):
        try:
            formats[flag] = dataset_format(getattr(args, flag)) if getattr(args, flag, None) else None
        except ValueError as err:
            parser.error(f"--{flag}: {err}")
    args.data_format = formats["train_data"]
    if args.data_format == "embeddings" and (args.finetune != "frozen" or args.num_views != 1):
        parser.error("--finetune lora/full and --num_views > 1 need images, not precomputed embeddings")
    args.backbone_pretrained = None if str(args.backbone_pretrained).lower() == "none" else args.backbone_pretrained
    if args.attach_backbone:
        _attach_backbone_args(parser, args)
    if formats["validation_data"] == "webdataset":
        parser.error(
            "--validation_data: pass an embedding parquet or an imagefolder (evaluate shards afterwards with "
            "train/evaluate_geolocation.py)"
        )
    if formats["validation_data"] == "imagefolder" and args.data_format == "embeddings" and not args.attach_backbone:
        parser.error("--validation_data: images need a backbone; train on images too, or validate on embeddings")
    if args.data_format != "embeddings" and args.backbone not in open_clip_models():
        parser.error(f"--backbone {args.backbone!r} is not an open_clip architecture (see open_clip.list_models())")


def _attach_backbone_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--attach_backbone``: set ``--backbone``/``--backbone_pretrained`` from the embedding folder's
    ``embedding_info.json`` (written by train/embed_images.py), the backbone whose features the model learns from."""
    if args.data_format != "embeddings":
        parser.error("--attach_backbone is for embedding data (training on images keeps its backbone already)")
    root = Path(args.train_data)
    info_path = (root if root.is_dir() else root.parent) / "embedding_info.json"
    if not info_path.exists():
        parser.error(f"--attach_backbone: {info_path} not found (write embeddings with train/embed_images.py)")
    info = json.loads(info_path.read_text())
    if not info.get("pretrained"):
        parser.error("--attach_backbone: the embeddings come from random backbone weights, which cannot be attached")
    args.backbone, args.backbone_pretrained = info["model_name"], info["pretrained"]


def open_clip_models() -> list[str]:
    """open_clip's architectures, with the ones shipped in geo_models."""
    import open_clip

    from geo_models.encoders.image import register_open_clip_configs

    register_open_clip_configs()
    return open_clip.list_models()
