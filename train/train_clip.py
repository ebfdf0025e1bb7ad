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
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from geo_models.data import GeoImageFolder
from geo_models.encoders.image import register_open_clip_configs
from geo_models.training import (
    add_run_args,
    log_metrics,
    make_accelerator,
    resume_state,
    save_checkpoint,
    step_batch_indices,
    steps_per_epoch,
    write_json_atomic,
)

logger = logging.getLogger("train_clip")
WEIGHTS_NAME, CONFIG_NAME = "open_clip_model.safetensors", "open_clip_config.json"
MAX_LOGIT_SCALE = 100.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="imagefolder whose metadata has a `text` column")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--model_name", default="procedural-clip", help="open_clip architecture")
    p.add_argument("--pretrained", default=None, help="initial weights: open_clip tag or file (default: random)")
    p.add_argument("--crop_scale", type=float, nargs=2, default=[0.7, 1.0], help="random resized crop area range")
    p.add_argument("--train_batch_size", type=int, default=256, help="per process")
    p.add_argument("--max_train_steps", type=int, default=3000)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--min_lr_ratio", type=float, default=0.0, help="cosine decays to learning_rate * this")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0: off)")
    add_run_args(p)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--cache_images", action="store_true", help="decode all images into memory once (small data)")
    args = p.parse_args(argv)
    for name in ("train_batch_size", "max_train_steps", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.learning_rate <= 0 or args.weight_decay < 0 or args.warmup_steps < 0 or args.max_grad_norm < 0:
        p.error("--learning_rate must be > 0 and --weight_decay, --warmup_steps, --max_grad_norm >= 0")
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


class ImageSource:
    """Batches ``(uint8 images (B, 3, S, S), captions)`` of an imagefolder; the batch at a step is a function of
    (step, seed) (see ``step_batch_indices``), so a resumed run sees the same data. ``cache()`` decodes the whole
    folder once into memory (small images: 20,000 at 64x64 take 250 MB) so later steps skip PNG decoding."""

    def __init__(self, dataset: GeoImageFolder, batch_size: int, seed: int, rank: int, world: int, num_workers: int):
        self.dataset, self.batch_size, self.seed, self.rank, self.world = dataset, batch_size, seed, rank, world
        self.num_workers = num_workers
        self.texts = ["" if not isinstance(t, str) else t for t in dataset.metadata["text"].tolist()]
        self.images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def cache(self, disable_progress: bool = False) -> None:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=256, num_workers=self.num_workers, generator=torch.Generator()
        )
        chunks = [b["image"] for b in tqdm(loader, desc="caching images", disable=disable_progress)]
        self.images = torch.cat(chunks)

    def _indices(self, start_step: int):
        step = start_step
        while True:
            yield step_batch_indices(
                step, len(self), self.batch_size, seed=self.seed, rank=self.rank, world=self.world
            ).tolist()
            step += 1

    def batches(self, start_step: int):
        if self.images is not None:
            for idx in self._indices(start_step):
                yield self.images[idx], [self.texts[i] for i in idx]
            return
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self._indices(start_step),
            num_workers=self.num_workers,
            generator=torch.Generator(),  # not the global RNG: the augmentation stream stays exact on resume
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


def cosine_with_warmup(warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


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

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = make_accelerator(mixed_precision=args.mixed_precision, log_with=args.report_to)
    torch.manual_seed(args.seed + accelerator.process_index)  # augmentations differ per process
    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

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
    spe = steps_per_epoch(len(dataset), args.train_batch_size, world)

    # 2. Optimizer, schedule
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.learning_rate, betas=(0.9, 0.98))
    factor = cosine_with_warmup(args.warmup_steps, args.max_train_steps, args.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    if args.report_to:
        accelerator.init_trackers("train_clip", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. Resume
    start_step = resume_state(
        accelerator, output_dir, args.resume_from_checkpoint, ignore_rng_state=args.ignore_rng_state
    )
    logger.info(
        "%d captioned images (%d distinct captions), %d processes, %d steps (%d per epoch), %d parameters",
        len(dataset),
        dataset.metadata["text"].nunique(),
        world,
        args.max_train_steps,
        spe,
        sum(p.numel() for p in unwrapped.parameters()),
    )

    source = ImageSource(dataset, args.train_batch_size, args.seed, rank, world, args.dataloader_num_workers)
    if args.cache_images:
        source.cache(disable_progress=not accelerator.is_main_process)
    batches = source.batches(start_step)

    # 4. Training loop
    log_path = output_dir / "logs" / "train_log.jsonl"
    log_path.parent.mkdir(exist_ok=True)
    progress = tqdm(
        range(start_step, args.max_train_steps),
        initial=start_step,
        total=args.max_train_steps,
        disable=not accelerator.is_main_process,
        desc="training",
    )
    model.train()
    for step in progress:
        images, texts = next(batches)
        pixels = augment(images.to(accelerator.device))
        tokens = tokenizer(texts).to(accelerator.device)
        with accelerator.autocast():
            image_features, text_features, logit_scale = model(pixels, tokens)[:3]
            loss = clip_loss(image_features, text_features, logit_scale, tokens)
        accelerator.backward(loss)
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        with torch.no_grad():
            unwrapped.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        if step % args.logging_steps == 0 or step + 1 == args.max_train_steps:
            logs = {
                "step": step + 1,
                "epoch": round((step + 1) / spe, 3),
                "loss": accelerator.gather(loss.detach()).mean().item(),
                "lr": scheduler.get_last_lr()[0],
                "logit_scale": unwrapped.logit_scale.exp().item(),
            }
            log_metrics(accelerator, logs, log_path, progress)
        if (step + 1) % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step + 1, args.checkpoints_total_limit)

    # 5. Save the open_clip model
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    model.eval()
    if accelerator.is_main_process:
        training = {k: v for k, v in vars(args).items() if k not in ("output_dir", "report_to")}
        path = save_open_clip(model, args.model_name, output_dir, {"training": training})
        logger.info("saved %s", path)
    accelerator.end_training()
    return model


if __name__ == "__main__":
    main()
