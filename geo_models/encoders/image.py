"""Image (and text) backbones: open_clip models, frozen by default, with their preprocessing.

open_clip's one factory is used (``create_model_and_transforms``); extra architectures ship as JSON data in
``model_configs/`` (e.g. ``tiny-vit`` for tests and CPU demos) and are registered with ``open_clip.add_model_config``.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from geo_models.checks import check_int

OPEN_CLIP_CONFIG_DIR = Path(__file__).parent / "model_configs"
LOCAL_OPEN_CLIP_MODELS = tuple(sorted(p.stem for p in OPEN_CLIP_CONFIG_DIR.glob("*.json")))
WEIGHTS_DIR = Path(__file__).parent / "weights"
# Weights shipped inside the package, by (architecture, tag): usable offline as ``OpenCLIPBackbone(name, tag)``.
# procedural-clip/procedural: a small CLIP pretrained here on procedural world images (see its README.md).
LOCAL_PRETRAINED: dict[tuple[str, str], Path] = {
    ("procedural-clip", "procedural"): WEIGHTS_DIR / "procedural-clip" / "open_clip_model.safetensors",
}


def register_open_clip_configs() -> tuple[str, ...]:
    """Make the architectures of ``model_configs/`` known to open_clip (idempotent); returns their names."""
    import open_clip

    if not set(LOCAL_OPEN_CLIP_MODELS) <= set(open_clip.list_models()):
        open_clip.add_model_config(OPEN_CLIP_CONFIG_DIR)
    return LOCAL_OPEN_CLIP_MODELS


def resolve_pretrained(model_name: str, pretrained: str | None) -> str | None:
    """The weights file of a shipped ``(model_name, pretrained)`` pair (:data:`LOCAL_PRETRAINED`); any other value
    (an open_clip tag, a file, None) is returned unchanged for open_clip."""
    path = LOCAL_PRETRAINED.get((model_name, pretrained)) if pretrained is not None else None
    if path is None:
        return pretrained
    if not path.is_file():
        raise FileNotFoundError(f"shipped weights {model_name!r}/{pretrained!r} missing: {path} (broken install?)")
    return str(path)


def is_open_clip_tag(model_name: str, pretrained: str | None) -> bool:
    """``pretrained`` names weights any install can rebuild: None (seeded random), a tag open_clip fetches for
    ``model_name`` (``openai``) or a tag shipped with geo_models (:data:`LOCAL_PRETRAINED`); not a local file."""
    import open_clip

    if pretrained is None or (model_name, pretrained) in LOCAL_PRETRAINED:
        return True
    return str(pretrained).lower() in open_clip.list_pretrained_tags_by_model(model_name)


def backbone_weights_saved(model_name: str, pretrained: str | None, *, finetuned: bool = False) -> bool:
    """Whether a model must save its backbone's weights: they were trained (``finetuned``: LoRA merged or full), or
    they come from a local file; a named tag or seeded random weights are rebuilt from the config instead."""
    return finetuned or not is_open_clip_tag(model_name, pretrained)


class ImageBackboneMixin:
    """The optional open_clip image backbone of a pipeline: needs ``self.backbone`` (an :class:`OpenCLIPBackbone` or
    None), ``self.backbone_finetuned`` and ``self.device``."""

    def mark_backbone_finetuned(self) -> None:
        """Record that the backbone was trained, so its weights are saved with the pipeline."""
        self.backbone_finetuned = True

    def backbone_is_rebuilt_from_config(self) -> bool:
        """True when ``from_pretrained`` rebuilds the backbone from config alone (a named open_clip tag or seeded
        random weights, not fine-tuned); its weights are then not saved."""
        if self.backbone is None:
            return False
        return not backbone_weights_saved(
            self.backbone.model_name, self.backbone.pretrained, finetuned=self.backbone_finetuned
        )

    @torch.no_grad()
    def embed_images(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        """PIL images, image paths or a preprocessed ``(N, 3, S, S)`` tensor -> ``(N, D)`` float32 features on the
        pipeline's device, embedded ``batch_size`` at a time (needs a backbone)."""
        if self.backbone is None:
            raise ValueError(
                f"images: this {type(self).__name__} has no backbone; pass image_embeddings (train/embed_images.py)"
            )
        return self.backbone.embed_images(images, batch_size=batch_size).to(self.device, torch.float32)


def simclr_transform(image_size: int, mean: Sequence[float], std: Sequence[float], *, strength: float = 0.5):
    """SimCLR-style augmentation (Chen et al. 2020, appendix A) for the P augmented views of GeoCLIP training.

    Random resized crop, horizontal flip, colour jitter (``0.8 * strength`` for brightness/contrast/saturation,
    ``0.2 * strength`` hue, applied w.p. 0.8) and greyscale w.p. 0.2; then the backbone's normalisation.
    """
    from torchvision import transforms as T

    jitter = T.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.RandomApply([jitter], p=0.8 if strength > 0 else 0.0),
            T.RandomGrayscale(p=0.2 if strength > 0 else 0.0),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class OpenCLIPBackbone(nn.Module):
    """An open_clip model used as image encoder (``encode_image``) and, for text queries, text encoder.

    Args:
        model_name: open_clip architecture, e.g. ``ViT-L-14`` or ``tiny-vit``.
        pretrained: open_clip tag (``openai``), a tag of weights shipped with geo_models (:data:`LOCAL_PRETRAINED`,
            e.g. ``OpenCLIPBackbone("procedural-clip", "procedural")``), a local weights file, or ``None`` for seeded
            random weights.
        seed: seed of the random weights when ``pretrained`` is None.
        trainable: leave the weights trainable (full fine-tuning); frozen backbones are kept in eval mode.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, *, seed: int = 0, trainable: bool = False):
        super().__init__()
        import open_clip

        register_open_clip_configs()
        if model_name not in open_clip.list_models():
            raise ValueError(
                f"model_name {model_name!r} is not an open_clip architecture (see open_clip.list_models())"
            )
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                weights = resolve_pretrained(model_name, pretrained)
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights)
        except FileNotFoundError:
            raise
        except (RuntimeError, OSError, ValueError) as err:
            raise RuntimeError(
                f"could not load open_clip {model_name!r} weights {pretrained!r}: {err}. Without internet pass a "
                "local weights file as pretrained=..., or use precomputed image embeddings (backbone=None)."
            ) from err
        self.model = model
        self.model_name, self.pretrained, self.seed = model_name, pretrained, seed
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.output_dim = int(model.visual.output_dim)
        self.image_size = model.visual.image_size
        self.image_size = self.image_size[0] if isinstance(self.image_size, (tuple, list)) else int(self.image_size)
        self.mean = tuple(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self.set_trainable(trainable)

    def set_trainable(self, trainable: bool) -> None:
        self.model.requires_grad_(trainable)
        self.trainable = trainable
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if not getattr(self, "trainable", False):
            self.model.eval()  # frozen: no dropout / batch-stat updates even when the owner trains
        return self

    def train_transform(self, strength: float = 0.5):
        """SimCLR-style augmentation at this backbone's input size and normalisation."""
        return simclr_transform(self.image_size, self.mean, self.std, strength=strength)

    def preprocess_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """PIL images -> ``(N, 3, S, S)`` normalised pixels; tensors pass through (already preprocessed: shape
        ``(N >= 1, 3, S, S)`` at the backbone's input size ``S``, finite floats)."""
        if isinstance(images, torch.Tensor):
            s = self.image_size
            if images.ndim != 4 or images.shape[0] == 0 or tuple(images.shape[1:]) != (3, s, s):
                raise ValueError(
                    f"images tensor must have shape (N >= 1, 3, {s}, {s}) (pixels preprocessed for this backbone; "
                    f"or pass PIL images / file paths), got {tuple(images.shape)}"
                )
            if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
                raise ValueError("images tensor must hold finite floating-point pixels (no NaN or inf)")
            return images
        if not len(images):
            raise ValueError("images must not be empty")
        pixels = []
        for i, img in enumerate(images):
            if not isinstance(img, Image.Image):
                raise ValueError(f"images[{i}] must be a PIL image or a preprocessed tensor, got {type(img).__name__}")
            pixels.append(self.preprocess(img.convert("RGB")))
        return torch.stack(pixels)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` -> ``(N, output_dim)`` projected image features (not normalised)."""
        param = next(self.model.parameters())
        return self.model.encode_image(pixel_values.to(param.device, param.dtype))

    def embed_images(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        """Images (PIL, file paths, or a preprocessed ``(N, 3, S, S)`` tensor) -> features ``(N, output_dim)``,
        ``batch_size`` images at a time."""
        batch_size = check_int(batch_size, "batch_size")
        pixels = self.preprocess_images(load_images(images))
        return torch.cat([self.encode_image(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> ``(N, output_dim)`` projected text features (not normalised)."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not len(texts):
            raise ValueError("texts must be a non-empty list of strings")
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty list of strings")
        tokens = self.tokenizer(list(texts)).to(next(self.model.parameters()).device)
        return self.model.encode_text(tokens)


IMAGES_ACCEPTED = "a PIL image, an image file path, a list of them, or a preprocessed (N, 3, S, S) tensor"


def max_image_pixels() -> int | None:
    """Pixels above which an image is refused as a decompression bomb: Pillow's error limit,
    ``2 * Image.MAX_IMAGE_PIXELS`` (179 M by default; None when the caller disabled Pillow's check)."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


def check_image_size(img: Image.Image, name: str) -> None:
    """ValueError naming ``name`` for an image whose size is over :func:`max_image_pixels` (before decoding it)."""
    limit = max_image_pixels()
    if limit is not None and img.width * img.height > limit:
        raise ValueError(
            f"{name}: {img.width} x {img.height} = {img.width * img.height:,} pixels is over the limit of {limit:,} "
            "(a possible decompression bomb; Pillow's Image.MAX_IMAGE_PIXELS sets the limit)"
        )


def load_images(images: Any) -> Any:
    """PIL image(s) or file path(s) -> list of RGB PIL images; tensors pass through. Unreadable files, images over
    Pillow's decompression-bomb limit (:func:`max_image_pixels`) and anything else -> ValueError naming ``images``."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, (Image.Image, str, PathLike)):
        images = [images]
    if isinstance(images, (bytes, dict)) or not hasattr(images, "__len__") or not hasattr(images, "__iter__"):
        raise ValueError(f"images must be {IMAGES_ACCEPTED}, got {type(images).__name__}")
    if not len(images):
        raise ValueError("images must not be empty")
    out = []
    for i, img in enumerate(images):
        if isinstance(img, (str, PathLike)):
            try:
                with Image.open(img) as opened:
                    check_image_size(opened, f"images[{i}] ({str(img)!r})")
                    img = opened.convert("RGB")
            except Image.DecompressionBombError as err:
                raise ValueError(f"images[{i}]: {str(img)!r} is too large (a decompression bomb?): {err}") from err
            except (OSError, UnidentifiedImageError) as err:
                raise ValueError(f"images[{i}]: cannot read image file {str(img)!r}: {err}") from err
        elif isinstance(img, Image.Image):
            check_image_size(img, f"images[{i}]")
        else:
            raise ValueError(f"images[{i}] must be a PIL image or an image file path, got {type(img).__name__}")
        out.append(img)
    return out


# ---------------------------------------------------------------------------------------------- saving in pipelines
BACKBONE_WEIGHTS_NAME = "open_clip_model.safetensors"  # open_clip's state dict: also loadable as pretrained=<file>


def backbone_config(backbone: OpenCLIPBackbone, *, finetuned: bool = False) -> dict:
    """``{"model_name", "pretrained", "seed", "finetuned"}``: how :func:`load_backbone` rebuilds the backbone."""
    return {
        "model_name": backbone.model_name,
        "pretrained": backbone.pretrained,
        "seed": backbone.seed,
        "finetuned": bool(finetuned),
    }


def save_backbone(backbone: OpenCLIPBackbone, directory: str | PathLike, *, finetuned: bool = False) -> dict:
    """Save a pipeline's backbone: ``directory/open_clip_model.safetensors`` when :func:`backbone_weights_saved`
    (nothing otherwise); returns :func:`backbone_config`, which :func:`load_backbone` reads back."""
    from safetensors.torch import save_file

    config = backbone_config(backbone, finetuned=finetuned)
    file = Path(directory) / BACKBONE_WEIGHTS_NAME
    if backbone_weights_saved(backbone.model_name, backbone.pretrained, finetuned=finetuned):
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in backbone.model.state_dict().items()}, str(file))
    elif file.is_file():
        file.unlink()  # stale weights of an earlier save
    return config


def load_backbone(config: dict, directory: str | PathLike, *, map_location: str = "cpu") -> OpenCLIPBackbone:
    """Inverse of :func:`save_backbone`: saved weights are loaded into a randomly initialised backbone (their source
    may be unreachable here: offline, another machine), and ``pretrained`` keeps naming that source."""
    from safetensors.torch import load_file

    name, pretrained, seed = config["model_name"], config.get("pretrained"), int(config.get("seed", 0))
    if not backbone_weights_saved(name, pretrained, finetuned=bool(config.get("finetuned", False))):
        return OpenCLIPBackbone(name, pretrained, seed=seed).to(map_location)
    file = Path(directory) / BACKBONE_WEIGHTS_NAME
    if not file.is_file():
        raise ValueError(f"backbone: {file} is missing (the backbone's weights are saved with the model)")
    backbone = OpenCLIPBackbone(name, None, seed=seed)
    backbone.model.load_state_dict(load_file(str(file)), strict=True)
    backbone.pretrained = pretrained
    return backbone.to(map_location)
