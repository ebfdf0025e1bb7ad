"""Training from images, shared by the ``train/`` scripts of image-conditioned models (GeoCLIP, LocDiff).

- Flags: :func:`add_image_args` (``--backbone``, ``--finetune {frozen,lora,full}``, ``--num_views``...) and
  :func:`check_image_args`.
- Data: P augmented views per image (:class:`ViewsTransform`) from an imagefolder in step-indexed batches
  (:class:`ImageFolderSource`) or streamed WebDataset shards (:class:`WebDatasetSource`). Augmentations are drawn
  from a seed per (seed, step, rank, item), not from the global RNG, so a resumed run sees the same views as an
  uninterrupted one (imagefolders) and dropout etc. keep the RNG state accelerate checkpoints.
- Backbone: :func:`setup_finetuning` (LoRA with peft on the vision tower, or full), :func:`encode_views`, and
  :func:`finalize_backbone` (merge LoRA, mark the weights to be saved) for any model with a ``.backbone``
  (:class:`~geo_models.encoders.image.OpenCLIPBackbone`) and a ``mark_backbone_finetuned()`` method.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from geo_models.data import GeoImageFolder, GeoWebDataset, dataset_format
from geo_models.training import EmbeddingSource, step_batch_indices, steps_per_epoch

__all__ = [
    "FINETUNE_MODES",
    "LORA_TARGETS",
    "STREAM_STEPS_PER_EPOCH",
    "ImageFolderSource",
    "ViewsTransform",
    "WebDatasetSource",
    "add_image_args",
    "check_image_args",
    "encode_views",
    "finalize_backbone",
    "image_source",
    "setup_finetuning",
    "source_steps_per_epoch",
]

FINETUNE_MODES = ("frozen", "lora", "full")
# The MLP Linear layers of open_clip's vision transformer blocks. Not the attention's ``out_proj``: open_clip's
# nn.MultiheadAttention reads ``out_proj.weight`` directly, so adapters there would get no gradient (dead weights, and
# a DDP error about unused parameters).
LORA_TARGETS = ["c_fc", "c_proj"]
STREAM_STEPS_PER_EPOCH = 1000  # "epoch" length assumed for streamed shards (their size is unknown)


# ------------------------------------------------------------------------------------------------------ flags
def add_image_args(parser: argparse.ArgumentParser) -> None:
    """The flags of training from images: backbone, fine-tuning, augmented views, data-loading workers."""
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


def check_image_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate :func:`add_image_args`' flags (``args.data_format`` must be set); ``--backbone_pretrained none``
    becomes None."""
    for name in ("num_views", "lora_rank"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.dataloader_num_workers < 0:
        parser.error(f"--dataloader_num_workers must be >= 0, got {args.dataloader_num_workers}")
    if args.augment_strength < 0:
        parser.error(f"--augment_strength must be >= 0, got {args.augment_strength}")
    if args.data_format == "embeddings" and (args.finetune != "frozen" or args.num_views != 1):
        parser.error("--finetune lora/full and --num_views > 1 need images, not precomputed embeddings")
    args.backbone_pretrained = None if str(args.backbone_pretrained).lower() == "none" else args.backbone_pretrained
    if args.attach_backbone:
        attach_backbone_args(parser, args)


def check_data_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.data_format`` from ``--train_data`` and validate ``--validation_data`` (embedding parquet or
    imagefolder; images need image training) and the image flags (:func:`check_image_args`, a known ``--backbone``)."""
    formats = {}
    for flag in ("train_data", "validation_data"):
        try:
            formats[flag] = dataset_format(getattr(args, flag)) if getattr(args, flag) else None
        except ValueError as err:
            parser.error(f"--{flag}: {err}")
    args.data_format = formats["train_data"]
    check_image_args(parser, args)
    if formats["validation_data"] == "webdataset":
        parser.error(
            "--validation_data: pass an embedding parquet or an imagefolder (evaluate shards afterwards with "
            "train/evaluate_geolocation.py)"
        )
    if formats["validation_data"] == "imagefolder" and args.data_format == "embeddings":
        parser.error("--validation_data: images need a backbone; train on images too, or validate on embeddings")
    if args.data_format != "embeddings" and args.backbone not in open_clip_models():
        parser.error(f"--backbone {args.backbone!r} is not an open_clip architecture (see open_clip.list_models())")


def attach_backbone_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
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


def attached_backbone(args: argparse.Namespace, feature_dim: int):
    """The frozen backbone of ``--attach_backbone`` (None without it), checked against the features' width."""
    if not getattr(args, "attach_backbone", False):
        return None
    from geo_models.encoders.image import OpenCLIPBackbone

    backbone = OpenCLIPBackbone(args.backbone, args.backbone_pretrained)
    if backbone.output_dim != feature_dim:
        raise ValueError(
            f"--attach_backbone: {args.backbone} gives {backbone.output_dim}-d features, the data has {feature_dim}"
        )
    return backbone


def open_clip_models() -> list[str]:
    """open_clip's architectures, with the ones shipped in geo_models."""
    import open_clip

    from geo_models.encoders.image import register_open_clip_configs

    register_open_clip_configs()
    return open_clip.list_models()


# ------------------------------------------------------------------------------------------------------ data
class ViewsTransform:
    """P augmented views of one image -> ``(P, 3, S, S)``."""

    def __init__(self, transform, num_views: int):
        self.transform, self.num_views = transform, num_views

    def __call__(self, image):
        return torch.stack([self.transform(image) for _ in range(self.num_views)])


def seeded_call(transform, image, seed: int):
    """``transform(image)`` with the torch RNG seeded by ``seed``, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


class _SeededItems(torch.utils.data.Dataset):
    """Items ``(index, seed)`` of an imagefolder -> ``{"image": transform(image) drawn with seed, "latlon"}``."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        item = self.dataset[index]
        return {"image": seeded_call(self.transform, item["image"], seed), "latlon": item["latlon"]}


class ImageFolderSource(EmbeddingSource):
    """An imagefolder read in the same step-indexed order as :class:`~geo_models.training.EmbeddingSource`; items
    are ``transform(image)`` (e.g. ``(P, 3, S, S)`` views) with augmentations seeded by (seed, step, rank, item)."""

    def __init__(self, path, transform, batch_size, seed, rank, world, num_workers):
        self.dataset = _SeededItems(GeoImageFolder(path), transform)
        self.latlon = self.dataset.dataset.latlon
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.num_workers = num_workers

    def batches(self, start_step):
        def index_lists():
            step = start_step
            while True:
                rows = step_batch_indices(
                    step, len(self), self.batch_size, seed=self.seed, rank=self.rank, world=self.world
                )
                yield [(int(i), hash((self.seed, step, self.rank, j))) for j, i in enumerate(rows)]
                step += 1

        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=index_lists(),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),  # not the global RNG (resumed runs stay exact)
        )
        for batch in loader:
            yield batch["image"], batch["latlon"]


class _SeededStream(torch.utils.data.IterableDataset):
    """A WebDataset's items with ``transform`` seeded by (``seed``, worker, position in the worker's stream)."""

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for i, item in enumerate(self.dataset):
            image = seeded_call(self.transform, item["image"], hash((self.seed, worker, i)))
            yield {"image": image, "latlon": item["latlon"]}


class WebDatasetSource:
    """WebDataset shards streamed epoch after epoch (each process reads its own shards); resuming skips the batches
    already trained on."""

    def __init__(self, path, transform, batch_size, num_workers, *, seed: int = 0, rank: int = 0):
        self.dataset = GeoWebDataset(path, shuffle_shards=True, seed=seed)
        self.transform, self.seed, self.rank = transform, seed, rank
        self.batch_size, self.num_workers = batch_size, num_workers
        self.latlon = None  # unknown until streamed; the gallery is collected while training

    def batches(self, start_step):
        seen, epoch = 0, 0
        while True:
            stream = _SeededStream(self.dataset, self.transform, hash((self.seed, self.rank, epoch)))
            loader = torch.utils.data.DataLoader(
                stream,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                generator=torch.Generator().manual_seed(self.seed + epoch),
            )
            for batch in loader:
                seen += 1
                if seen > start_step:  # resume: skip the batches already trained on
                    yield batch["image"], batch["latlon"]
            epoch += 1


def image_source(
    data_format: str,
    path,
    transform,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
):
    """The training source of an ``imagefolder`` or ``webdataset`` (``data_format``): ``.batches(start_step)``
    yields ``(transform(images) (B, ...), latlon (B, 2))``; ``.latlon`` is None for streamed shards."""
    if data_format == "imagefolder":
        return ImageFolderSource(path, transform, batch_size, seed, rank, world, num_workers)
    if data_format == "webdataset":
        return WebDatasetSource(path, transform, batch_size, num_workers, seed=seed, rank=rank)
    raise ValueError(f"data_format must be 'imagefolder' or 'webdataset', got {data_format!r}")


def source_steps_per_epoch(source, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per epoch of a source (:data:`STREAM_STEPS_PER_EPOCH` for streamed shards)."""
    if source.latlon is None:
        return STREAM_STEPS_PER_EPOCH
    return steps_per_epoch(len(source.latlon), batch_size, world)


# ------------------------------------------------------------------------------------------------------ backbone
def setup_finetuning(backbone, finetune: str, *, lora_rank: int = 8) -> None:
    """Make an :class:`~geo_models.encoders.image.OpenCLIPBackbone` trainable: ``"full"`` (every weight of the
    vision tower), ``"lora"`` (rank-``lora_rank`` adapters on :data:`LORA_TARGETS` of the vision tower, with peft) or
    ``"frozen"`` (nothing). The text tower stays frozen: image features give it no gradient (and DDP refuses
    trainable parameters without one)."""
    if finetune not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {finetune!r}")
    if finetune == "full":
        backbone.set_trainable(True)
        backbone.model.requires_grad_(False)
        backbone.model.visual.requires_grad_(True)
    elif finetune == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=LORA_TARGETS)
        backbone.model.visual = get_peft_model(backbone.model.visual, config)
        backbone.trainable = True
        backbone.train()


def encode_views(backbone, views: torch.Tensor, *, trainable: bool) -> torch.Tensor:
    """``(B, P, 3, S, S)`` views -> view-major ``(P * B, D)`` backbone features (row ``v * B + b`` is view v of
    image b), with gradients only when the backbone is ``trainable``."""
    pixels = views.transpose(0, 1).flatten(0, 1)
    with torch.set_grad_enabled(trainable):
        return backbone.encode_image(pixels)


def finalize_backbone(model, finetune: str) -> None:
    """After training: merge LoRA into the backbone weights, freeze them, and record on ``model`` (which has a
    ``.backbone`` and ``mark_backbone_finetuned()``) that they must be saved with it."""
    if finetune == "lora":
        model.backbone.model.visual = model.backbone.model.visual.merge_and_unload()
    if finetune != "frozen":
        model.backbone.set_trainable(False)
        model.mark_backbone_finetuned()
