"""Pretrain a small CLIP (image-text contrastive) on a captioned imagefolder, e.g. the procedural world images.

Symmetric InfoNCE (Radford et al. 2021) with a learnable logit scale (initialised at 1 / 0.07, clamped at 100); rows
of the batch with the same caption (two photos of the same city) count as positives of each other rather than as
negatives. Light augmentation only: a random resized crop (scale 0.7-1, batched, of the image resized to the model's
input) without flips or colour jitter, because colour is the signal of location. AdamW (no weight decay on gains,
biases, embeddings and the logit scale) with a linear warmup and a cosine decay. Runs under ``accelerate launch``
(each process contrasts its own batch), checkpoints every N steps and resumes exactly (batches are a function of the
step, the augmentation RNG is restored). ``--cache_images`` decodes small datasets into memory once.

The model is any open_clip architecture built by name (``model_configs/*.json`` of ``geo_models.encoders`` are
registered, e.g. ``procedural-clip``, ``tiny-vit``). Output: ``open_clip_model.safetensors`` (the whole model's
state dict: ``open_clip.create_model_and_transforms(name, pretrained=<file>)`` or
``OpenCLIPBackbone(name, pretrained=<file>)`` load it), ``open_clip_config.json`` (``model_name``, ``model_cfg``,
``preprocess_cfg``: the folder also loads as ``open_clip.create_model_and_transforms("local-dir:<folder>")``) and
``logs/train_log.jsonl``.

Examples:
    python -c "from geo_models.data.procedural import generate_world; generate_world('/tmp/world', 20000, seed=0)"
    python train/train_clip.py --train_data /tmp/world --output_dir outputs/procedural-clip \
        --model_name procedural-clip --max_train_steps 1500 --train_batch_size 256 --cache_images
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from geo_models.data import GeoImageFolder
from geo_models.encoders.image import register_open_clip_configs
from geo_models.io import write_json_atomic
from geo_models.training import StepIndexedSource, add_optim_args, add_run_args, check_args, finish_run, fit, start_run
from geo_models.training.args import CPU_RECIPES

WEIGHTS_NAME, CONFIG_NAME = "open_clip_model.safetensors", "open_clip_config.json"
MAX_LOGIT_SCALE = 100.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=CPU_RECIPES)
    p.add_argument("--train_data", required=True, help="imagefolder whose metadata has a `text` column")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--model_name", default="procedural-clip", help="open_clip architecture")
    p.add_argument("--pretrained", default=None, help="initial weights: open_clip tag or file (default: random)")
    p.add_argument("--crop_scale", type=float, nargs=2, default=[0.7, 1.0], help="random resized crop area range")
    # AdamW (betas 0.9, 0.98), linear warmup then cosine decay to --min_lr_ratio x the learning rate
    add_optim_args(
        p, train_batch_size=256, learning_rate=1e-3, num_train_epochs=1, max_train_steps=3000, lr_scheduler="cosine",
        lr_warmup_steps=100, adam_beta2=0.98, weight_decay=0.1,
    )  # fmt: skip
    p.add_argument("--warmup_steps", dest="lr_warmup_steps", type=int, help=argparse.SUPPRESS)  # the old name
    p.add_argument("--min_lr_ratio", type=float, default=0.0, help="cosine decays to learning_rate * this")
    add_run_args(p)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--cache_images", action="store_true", help="decode all images into memory once (small data)")
    args = p.parse_args(argv)
    check_args(p, args)
    if not 0 < args.crop_scale[0] <= args.crop_scale[1] <= 1:
        p.error(f"--crop_scale must satisfy 0 < min <= max <= 1, got {args.crop_scale}")
    if not 0 <= args.min_lr_ratio <= 1:
        p.error(f"--min_lr_ratio must be in [0, 1], got {args.min_lr_ratio}")
    return args


# ------------------------------------------------------------------------------------------------------ pieces
def load_transform(image_size: int):
    """PIL image -> ``(3, S, S)`` uint8: bicubic resize of the short side + centre crop (augmentation is batched)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.PILToTensor(),
        ]
    )


def random_resized_crop(images: torch.Tensor, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Batched random resized crop of ``(B, C, H, W)`` float images back to ``(B, C, H, W)`` (bilinear).

    Per image: crop area ~ U(scale) of the image, aspect ratio log-uniform in ``ratio``, position uniform; no flip,
    no colour change. Uses the global torch RNG (restored on resume).
    """
    b = images.shape[0]
    area = torch.empty(b).uniform_(*scale)
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)  # crop width / image width
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(b) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates
    cy = (torch.rand(b) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Augment:
    """uint8 ``(B, 3, S, S)`` -> random resized crop -> the model's normalisation (float)."""

    def __init__(self, mean, std, crop_scale=(0.7, 1.0)):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.crop_scale = tuple(crop_scale)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if self.crop_scale != (1.0, 1.0):
            x = random_resized_crop(x, self.crop_scale)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class CaptionedImages(StepIndexedSource):
    """Batches ``(uint8 images (B, 3, S, S), captions)`` of an imagefolder in step-indexed order. ``cache()``
    decodes the whole folder once into memory (small images: 20,000 at 64x64 take 250 MB) so later steps skip PNG
    decoding."""

    def __init__(self, dataset: GeoImageFolder, batch_size: int, seed: int, rank: int, world: int, num_workers: int):
        super().__init__(batch_size, seed, rank, world, num_workers)
        self.dataset, self.latlon = dataset, dataset.latlon
        self.texts = ["" if not isinstance(t, str) else t for t in dataset.metadata["text"].tolist()]
        self.images: torch.Tensor | None = None

    def cache(self, disable_progress: bool = False) -> None:
        from tqdm.auto import tqdm

        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=256, num_workers=self.num_workers, generator=torch.Generator()
        )
        self.images = torch.cat([b["image"] for b in tqdm(loader, desc="caching images", disable=disable_progress)])

    def take(self, rows):
        return self.images[rows], [self.texts[i] for i in rows.tolist()]

    def batches(self, start: int):
        if self.images is not None:
            yield from super().batches(start)
            return
        rows = (self.indices(step).tolist() for step in range(start, 2**62))
        loader = torch.utils.data.DataLoader(  # its own generator: iterating must not draw from the global RNG
            self.dataset, batch_sampler=rows, num_workers=self.num_workers, generator=torch.Generator()
        )
        for batch in loader:
            yield batch["image"], batch["text"]


def clip_loss(image_features, text_features, logit_scale, tokens) -> torch.Tensor:
    """Symmetric InfoNCE over the batch; rows with identical ``tokens`` (same caption) share the target mass."""
    image_features = F.normalize(image_features.float(), dim=-1)
    text_features = F.normalize(text_features.float(), dim=-1)
    logits = logit_scale * image_features @ text_features.T
    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1).float()
    targets = same / same.sum(1, keepdim=True)  # symmetric, so it serves both directions
    loss_i = -(targets * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on 1-d parameters (gains, biases, logit scale) and embeddings."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith("class_embedding")
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_model(model_name: str, pretrained: str | None, seed: int):
    """``(open_clip model, tokenizer)``; random weights are seeded."""
    import open_clip

    register_open_clip_configs()
    if model_name not in open_clip.list_models():
        raise ValueError(f"--model_name {model_name!r} is not an open_clip architecture")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    return model, open_clip.get_tokenizer(model_name)


def save_open_clip(model, model_name: str, output_dir: str | Path, extra: dict | None = None) -> Path:
    """Write ``open_clip_model.safetensors`` + ``open_clip_config.json`` (open_clip's hub / local-dir layout)."""
    import open_clip
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(output_dir / WEIGHTS_NAME), metadata={"format": "pt", "model_name": model_name})
    size = model.visual.image_size
    config = {
        "model_name": model_name,
        "model_cfg": open_clip.get_model_config(model_name),
        "preprocess_cfg": {
            "image_size": list(size) if isinstance(size, (tuple, list)) else int(size),
            "mean": list(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
            "std": list(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
        },
        **(extra or {}),
    }
    write_json_atomic(output_dir / CONFIG_NAME, config)
    return output_dir / WEIGHTS_NAME


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None):
    """Train; returns the (unwrapped) open_clip model."""
    import open_clip
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    args = parse_args(argv)
    run = start_run(args, "train_clip")

    # 1. Model and data
    model, tokenizer = build_model(args.model_name, args.pretrained, args.seed)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    dataset = GeoImageFolder(args.train_data, transform=load_transform(size))
    if not dataset.has_text:
        raise ValueError(f"--train_data {args.train_data}: the metadata has no `text` column (captions)")
    augment = Augment(mean, std, args.crop_scale)
    workers = args.dataloader_num_workers
    source = CaptionedImages(dataset, args.train_batch_size, args.seed, run.rank, run.world, workers)
    if args.cache_images:
        source.cache(disable_progress=not run.is_main_process)

    # 2. Loss: symmetric InfoNCE on augmented crops (the crops use the global RNG, restored on resume)
    def compute_loss(model, batch, generator):
        images, texts = batch
        tokens = tokenizer(texts).to(run.device)
        image_features, text_features, logit_scale = model(augment(images.to(run.device)), tokens)[:3]
        return clip_loss(image_features, text_features, logit_scale, tokens)

    def clamp_logit_scale(step, batches):
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))

    # 3. Train: AdamW without decay on gains, biases, embeddings and the logit scale
    fit(
        run,
        model,
        source,
        compute_loss,
        optimizer=lambda params: torch.optim.AdamW(
            param_groups(model, args.weight_decay), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2)
        ),
        lr_scheduler=lambda o, warmup, total: get_cosine_with_min_lr_schedule_with_warmup(
            o, warmup, total, min_lr_rate=args.min_lr_ratio
        ),
        after_step=clamp_logit_scale,
        extra_logs=lambda: {"logit_scale": model.logit_scale.exp().item()},
    )

    # 4. Save the open_clip model
    model.eval()
    training = {k: v for k, v in vars(args).items() if k not in ("output_dir", "report_to")}
    finish_run(run, lambda card: save_open_clip(model, args.model_name, run.output_dir, {"training": training}))
    return model


if __name__ == "__main__":
    main()
