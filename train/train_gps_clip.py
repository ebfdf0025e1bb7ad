"""Train GPS-CLIP (paper A.1.4, Algorithm 1), the model behind the GPS score of Table 1.

Frozen image backbone + one trainable projection; latitude and longitude, normalised over the training area, through
one shared 6-layer GELU MLP, concatenated and projected; symmetric contrastive loss at a fixed temperature 0.07;
AdamW (lr 1e-4), linear warmup then cosine decay, batch 512. Data: a geotagged imagefolder / WebDataset shards (the
backbone embeds each batch) or an embedding parquet (precomputed backbone features, e.g. train/embed_images.py).
Runs under ``accelerate launch``, checkpoints every N steps and resumes exactly.

Examples:
    python train/train_gps_clip.py --train_data data/city --backbone procedural-clip \
        --backbone_pretrained procedural --output_dir outputs/gps-clip
    accelerate launch train/train_gps_clip.py --train_data data/nyc_emb --attach_backbone \
        --output_dir outputs/gps-clip --push_to_hub --hub_model_id me/gps-clip-nyc
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from geo_models.data import GeoImageFolder, dataset_format, read_embedding_parquet
from geo_models.generation.gps_clip import GPSCLIP, contrastive_loss
from geo_models.training import (
    EmbeddingSource,
    add_run_args,
    log_metrics,
    make_accelerator,
    resume_state,
    save_checkpoint,
    write_json_atomic,
)
from geo_models.training_images import (
    ViewsTransform,
    add_image_args,
    attached_backbone,
    check_data_args,
    encode_views,
    image_source,
    source_steps_per_epoch,
)

logger = logging.getLogger("train_gps_clip")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="embedding parquet (file/folder), imagefolder or .tar shards")
    p.add_argument("--validation_data", default=None, help="held-out data: mean GPS score and loss at the end")
    p.add_argument("--output_dir", required=True)
    add_image_args(p)
    p.add_argument("--lat_range", type=float, nargs=2, default=None, help="training area (default: the data's)")
    p.add_argument("--lon_range", type=float, nargs=2, default=None, help="training area (default: the data's)")
    p.add_argument("--projection_dim", type=int, default=None, help="default: the backbone's width (paper)")
    p.add_argument("--hidden_dim", type=int, default=256, help="width of the shared GPS MLP")
    p.add_argument("--num_layers", type=int, default=6, help="GELU layers of the shared GPS MLP (paper: 6)")
    p.add_argument("--num_frequencies", type=int, default=0, help="positional encoding of lat/lon (paper: 0)")
    p.add_argument("--temperature", type=float, default=0.07, help="fixed (paper: 0.07)")
    p.add_argument("--train_batch_size", type=int, default=512, help="per process")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--weight_decay", type=float, default=1e-2)
    p.add_argument("--lr_warmup_steps", type=int, default=500)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--num_train_epochs", type=int, default=20)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    add_run_args(p)
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    for name in ("train_batch_size", "checkpointing_steps", "gradient_accumulation_steps", "num_layers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.train_batch_size < 2:
        p.error("--train_batch_size must be >= 2 (contrastive loss needs negatives)")
    if args.lr_warmup_steps < 0 or args.num_frequencies < 0:
        p.error("--lr_warmup_steps and --num_frequencies must be >= 0")
    if not args.temperature > 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    check_data_args(p, args)
    if args.finetune != "frozen":
        p.error("--finetune: GPS-CLIP keeps its image backbone frozen (paper A.1.4); only 'frozen' is supported")
    return args


def training_area(latlon: torch.Tensor | None, args) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(lat_range, lon_range)``: the flags, else the data's bounding box with a 2% margin on each side."""
    ranges = []
    for i, flag in enumerate(("lat_range", "lon_range")):
        if getattr(args, flag) is not None:
            ranges.append(tuple(getattr(args, flag)))
            continue
        if latlon is None:
            raise ValueError(f"--{flag} is required for streamed shards (the data's extent is unknown)")
        lo, hi = latlon[:, i].min().item(), latlon[:, i].max().item()
        margin = max(0.02 * (hi - lo), 1e-4)
        bound = 90.0 if i == 0 else 180.0
        ranges.append((max(-bound, lo - margin), min(bound, hi + margin)))
    return ranges[0], ranges[1]


@torch.no_grad()
def evaluate(model: GPSCLIP, path: str) -> dict[str, float]:
    """Held-out mean GPS score with the true location, with a shuffled location, and the contrastive loss."""
    if dataset_format(path) == "embeddings":
        feats, latlon, _ = read_embedding_parquet(path)
    else:
        ds = GeoImageFolder(path)
        feats, latlon = model.embed_images([ds[i]["image"] for i in range(len(ds))]), ds.latlon
    shuffled = latlon[torch.randperm(len(latlon), generator=torch.Generator().manual_seed(0))]
    return {
        "n": len(latlon),
        "gps_score": model.gps_score(image_embeddings=feats, latlon=latlon).mean().item(),
        "gps_score_shuffled": model.gps_score(image_embeddings=feats, latlon=shuffled).mean().item(),
        "loss": model.loss(feats.to(model.device), latlon).item(),
    }


def main(argv=None) -> GPSCLIP:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = make_accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
    )
    torch.manual_seed(args.seed)  # same initial weights on every process
    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data and model (the training area comes from the data unless given)
    common = dict(
        projection_dim=args.projection_dim,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        num_frequencies=args.num_frequencies,
        temperature=args.temperature,
        seed=args.seed,
    )
    if args.data_format == "embeddings":
        source = EmbeddingSource(args.train_data, args.train_batch_size, args.seed, rank, world)
        lat_range, lon_range = training_area(source.latlon, args)
        backbone = attached_backbone(args, source.embeddings.shape[1])
        model = GPSCLIP(
            lat_range=lat_range,
            lon_range=lon_range,
            embedding_dim=source.embeddings.shape[1],
            backbone=args.backbone if backbone is not None else None,
            backbone_pretrained=args.backbone_pretrained if backbone is not None else None,
            **common,
        )
    else:
        from geo_models.encoders.image import OpenCLIPBackbone

        backbone = OpenCLIPBackbone(args.backbone, args.backbone_pretrained, seed=args.seed)
        views = ViewsTransform(backbone.train_transform(args.augment_strength), args.num_views)
        source = image_source(
            args.data_format,
            args.train_data,
            views,
            batch_size=args.train_batch_size,
            seed=args.seed,
            rank=rank,
            world=world,
            num_workers=args.dataloader_num_workers,
        )
        lat_range, lon_range = training_area(source.latlon, args)
        model = GPSCLIP(
            lat_range=lat_range,
            lon_range=lon_range,
            backbone=args.backbone,
            backbone_pretrained=args.backbone_pretrained,
            **common,
        )
    spe = source_steps_per_epoch(source, args.train_batch_size, world)
    max_steps = args.max_train_steps or args.num_train_epochs * spe

    # 2. Optimizer (AdamW), warmup + cosine decay (paper A.1.4)
    from diffusers.optimization import get_scheduler

    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=min(args.lr_warmup_steps, max_steps // 2), num_training_steps=max_steps
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if args.report_to:
        accelerator.init_trackers("train_gps_clip", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. Resume
    start_step = resume_state(
        accelerator, output_dir, args.resume_from_checkpoint, ignore_rng_state=args.ignore_rng_state
    )
    unwrapped = accelerator.unwrap_model(model)
    logger.info(
        "%d training samples, area lat %s lon %s, %d steps (%d per epoch), %d trainable parameters",
        len(source.latlon) if source.latlon is not None else -1,
        lat_range,
        lon_range,
        max_steps,
        spe,
        sum(p.numel() for p in params),
    )

    # 4. Training loop
    log_path = output_dir / "logs" / "train_log.jsonl"
    log_path.parent.mkdir(exist_ok=True)
    progress = tqdm(
        range(start_step, max_steps), initial=start_step, total=max_steps, disable=not accelerator.is_main_process
    )
    batches = source.batches(start_step)
    for step in progress:
        inputs, latlon = next(batches)
        with accelerator.accumulate(model), accelerator.autocast():
            if args.data_format == "embeddings":
                features = inputs.to(accelerator.device)
            else:  # (B, P, 3, S, S) -> (P * B, D) frozen backbone features, each view paired with its location
                features = encode_views(unwrapped.backbone, inputs.to(accelerator.device), trainable=False)
                latlon = latlon.repeat(args.num_views, 1)
            features = accelerator.gather(features.float())  # negatives from every process (features: no grad)
            latlon = accelerator.gather(latlon.to(accelerator.device))
            loss = contrastive_loss(model(features, latlon))
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if step % args.logging_steps == 0 or step + 1 == max_steps:
            logs = {"step": step + 1, "loss": loss.detach().item(), "lr": scheduler.get_last_lr()[0]}
            log_metrics(accelerator, logs, log_path, progress)
        if (step + 1) % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step + 1, args.checkpoints_total_limit)

    # 5. Save, held-out metrics on the card, push
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).eval()
        metrics = evaluate(model, args.validation_data) if args.validation_data else {}
        if metrics:
            write_json_atomic(output_dir / "eval_results.json", metrics)
            logger.info("validation: %s", metrics)
        card = {"metrics": {k: v for k, v in metrics.items() if k != "n"}, "training_data": str(args.train_data)}
        model.save_pretrained(output_dir, model_card_kwargs=card)
        if args.push_to_hub:
            logger.info("pushed to %s", model.push_to_hub(args.hub_model_id, model_card_kwargs=card))
    accelerator.end_training()
    return accelerator.unwrap_model(model)


if __name__ == "__main__":
    main()
