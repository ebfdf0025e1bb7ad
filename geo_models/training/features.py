"""How images become trainable features, for the image-conditioned trainers (GeoCLIP, LocDiff, sphere flow,
GPS-CLIP): the training data (precomputed embeddings, or images through an open_clip backbone, P augmented views
each), the backbone's fine-tuning (frozen, LoRA with peft, full), and :class:`FeatureLoss`, the one module every
trainer hands to accelerate: its forward turns a batch into features and returns the model's loss, so under DDP a
step is one forward through the wrapper whatever the backbone does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from geo_models.training.sources import EmbeddingSource, image_source

__all__ = [
    "FINETUNE_MODES",
    "LORA_TARGETS",
    "FeatureLoss",
    "ViewsTransform",
    "attached_backbone",
    "encode_views",
    "finalize_backbone",
    "load_training_data",
    "setup_finetuning",
]

FINETUNE_MODES = ("frozen", "lora", "full")
# The MLP Linear layers of open_clip's vision transformer blocks. Not the attention's ``out_proj``: open_clip's
# nn.MultiheadAttention reads ``out_proj.weight`` directly, so adapters there would get no gradient (dead weights, and
# a DDP error about unused parameters).
LORA_TARGETS = ["c_fc", "c_proj"]


class ViewsTransform:
    """P augmented views of one image -> ``(P, 3, S, S)``."""

    def __init__(self, transform, num_views: int):
        self.transform, self.num_views = transform, num_views

    def __call__(self, image):
        return torch.stack([self.transform(image) for _ in range(self.num_views)])


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
    if model.backbone is None:
        return
    if finetune == "lora":
        model.backbone.model.visual = model.backbone.model.visual.merge_and_unload()
    if finetune != "frozen":
        model.backbone.set_trainable(False)
        model.mark_backbone_finetuned()


def attached_backbone(args, feature_dim: int):
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


def load_training_data(run, backbone=None):
    """``(source, backbone, feature_dim)`` of ``--train_data``: an :class:`EmbeddingSource` (backbone None unless
    given), or images through ``backbone`` (default: a new ``--backbone``, set up for ``--finetune``) as
    ``--num_views`` augmented views per image."""
    args = run.args
    if args.data_format == "embeddings":
        source = EmbeddingSource(args.train_data, args.train_batch_size, args.seed, run.rank, run.world)
        return source, backbone, source.embeddings.shape[1]
    if backbone is None:
        from geo_models.encoders.image import OpenCLIPBackbone

        backbone = OpenCLIPBackbone(args.backbone, args.backbone_pretrained, seed=args.seed)
        setup_finetuning(backbone, args.finetune, lora_rank=args.lora_rank)
    views = ViewsTransform(backbone.train_transform(args.augment_strength), args.num_views)
    source = image_source(
        args.data_format,
        args.train_data,
        views,
        batch_size=args.train_batch_size,
        seed=args.seed,
        rank=run.rank,
        world=run.world,
        num_workers=args.dataloader_num_workers,
    )
    return source, backbone, backbone.output_dim


class FeatureLoss(nn.Module):
    """What accelerate prepares, trains and checkpoints: the trained ``modules`` (keyword arguments, e.g.
    ``network=...``) and ``loss_fn(self, features, latlon, generator) -> loss``.

    The forward takes a batch of the training data: embeddings ``(B, D)`` are the features; views
    ``(B, P, 3, S, S)`` go through the backbone (view-major ``(P * B, D)``, with gradients when ``train_backbone``),
    and each view becomes a sample at its image's location unless ``repeat_latlon=False`` (losses that pair the
    views themselves, e.g. GeoCLIP's).

    Args:
        backbone: the image backbone, or the dotted name of a submodule of ``modules`` that is one (e.g.
            ``"geoclip.backbone"``), or None (embeddings only).
    """

    def __init__(
        self,
        loss_fn: Callable,
        *,
        backbone: nn.Module | str | None = None,
        train_backbone: bool = False,
        repeat_latlon: bool = True,
        **modules: nn.Module | None,
    ):
        super().__init__()
        for name, module in modules.items():
            setattr(self, name, module)
        if not isinstance(backbone, str):
            self.backbone = backbone
        self._backbone_name = backbone if isinstance(backbone, str) else "backbone"
        self.loss_fn, self.train_backbone, self.repeat_latlon = loss_fn, train_backbone, repeat_latlon

    def features(self, inputs: torch.Tensor, latlon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (N, D) float32, latlon (N, 2))`` of a batch (module docstring)."""
        if inputs.ndim == 2:
            return inputs.float(), latlon
        backbone = self.get_submodule(self._backbone_name)
        features = encode_views(backbone, inputs, trainable=self.train_backbone).float()
        return features, latlon.repeat(inputs.shape[1], 1) if self.repeat_latlon else latlon

    def forward(self, inputs: torch.Tensor, latlon: torch.Tensor, generator: torch.Generator | None = None):
        features, latlon = self.features(inputs, latlon)
        return self.loss_fn(self, features, latlon, generator)
