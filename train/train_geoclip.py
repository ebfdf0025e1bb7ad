"""Train GeoCLIP (paper sec. 3-4) on geotagged images or precomputed embeddings.

The paper's recipe, including what the official code leaves out: contrastive loss over the batch + a dynamic GPS
queue (S = 4096) with Gaussian GPS noise (150 m on positives, 1000 m on the queue), P SimCLR-style augmented views
per image; Adam (lr 3e-5, weight decay 1e-6), step decay 0.87 per epoch, batch 512, temperature initialised at 0.07.
Runs under ``accelerate launch`` (several processes), checkpoints every N steps and resumes exactly.

Examples:
    python train/train_geoclip.py --train_data data/world_emb --output_dir outputs/geoclip
    accelerate launch train/train_geoclip.py --train_data data/photos --backbone ViT-L-14 \
        --backbone_pretrained openai --finetune lora --num_views 2 --output_dir outputs/geoclip-lora \
        --push_to_hub --hub_model_id me/geoclip
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from geo_models.data import GeoImageFolder, dataset_format, read_embedding_parquet
from geo_models.geoclip import GeoCLIP, deduplicate
from geo_models.geoclip.training import GPSQueue, contrastive_step_loss
from geo_models.sphere import geolocation_metrics
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
    check_image_args,
    encode_views,
    finalize_backbone,
    image_source,
    setup_finetuning,
    source_steps_per_epoch,
)

logger = logging.getLogger("train_geoclip")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="embedding parquet (file/folder), imagefolder or .tar shards")
    p.add_argument("--validation_data", default=None, help="held-out data evaluated at the end (metrics -> card)")
    p.add_argument("--validation_steps", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--init_from", default=None, help="'official' (geoclip package weights) or a saved GeoCLIP")
    # model (the backbone, its fine-tuning and the P augmented views: image data only)
    add_image_args(p)
    p.add_argument("--projection_dim", type=int, default=512)
    p.add_argument("--hidden_dim", type=int, default=1024)
    p.add_argument("--num_features", type=int, default=256, help="RFF rows per branch")
    p.add_argument("--num_layers", type=int, default=3, help="Linear+ReLU blocks per location branch")
    p.add_argument("--sigmas", type=float, nargs="+", default=[2.0**0, 2.0**4, 2.0**8])
    # objective
    p.add_argument("--queue_size", type=int, default=4096)
    p.add_argument("--positive_noise_km", type=float, default=0.15)
    p.add_argument("--queue_noise_km", type=float, default=1.0)
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=512, help="per process")
    p.add_argument("--learning_rate", type=float, default=3e-5)
    p.add_argument("--weight_decay", type=float, default=1e-6)
    p.add_argument("--lr_decay", type=float, default=0.87, help="multiply the lr by this once per epoch")
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--num_train_epochs", type=int, default=10)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    add_run_args(p)
    # checkpoints, logging, hub
    p.add_argument("--gallery_max_points", type=int, default=100_000, help="training coordinates kept as gallery")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    for name in ("train_batch_size", "checkpointing_steps", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.queue_size < 0 or args.positive_noise_km < 0 or args.queue_noise_km < 0:
        p.error("--queue_size, --positive_noise_km and --queue_noise_km must be >= 0")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    try:
        args.data_format = dataset_format(args.train_data)
    except ValueError as err:
        p.error(f"--train_data: {err}")
    check_image_args(p, args)
    return args


# ------------------------------------------------------------------------------------------------------ model
def build_model(args, embedding_dim: int | None) -> GeoCLIP:
    if args.init_from == "official":
        model = GeoCLIP.from_official(
            backbone=None if args.data_format == "embeddings" else args.backbone,
            backbone_pretrained=args.backbone_pretrained,
        )
    elif args.init_from:
        model = GeoCLIP.from_pretrained(args.init_from)
    else:
        model = GeoCLIP(
            embedding_dim=embedding_dim,
            projection_dim=args.projection_dim,
            sigmas=tuple(args.sigmas),
            num_features=args.num_features,
            hidden_dim=args.hidden_dim,
            num_layers=args.num_layers,
            backbone=None if args.data_format == "embeddings" and not args.attach_backbone else args.backbone,
            backbone_pretrained=args.backbone_pretrained,
            seed=args.seed,
        )
    if embedding_dim is not None and embedding_dim != model.embedding_dim:
        raise ValueError(f"train_data embeddings are {embedding_dim}-d but the model expects {model.embedding_dim}")
    if model.backbone is not None:
        setup_finetuning(model.backbone, args.finetune, lora_rank=args.lora_rank)
    return model


@torch.no_grad()
def evaluate(model: GeoCLIP, path: str) -> dict[str, float]:
    """Metrics on held-out data with the model's saved gallery (the training coordinates)."""
    if dataset_format(path) == "embeddings":
        emb, latlon, _ = read_embedding_parquet(path)
        pred = model.predict(image_embeddings=emb, top_k=1)
    else:
        ds = GeoImageFolder(path)
        latlon = ds.latlon
        pred = model.predict(images=[ds[i]["image"] for i in range(len(ds))], top_k=1)
    return geolocation_metrics(pred.latlon, latlon)


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> GeoCLIP:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = make_accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
    )
    torch.manual_seed(args.seed + accelerator.process_index)  # noise and augmentations differ per process
    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data and model
    if args.data_format == "embeddings":
        source = EmbeddingSource(args.train_data, args.train_batch_size, args.seed, rank, world)
        model = build_model(args, source.embeddings.shape[1])
    else:
        model = build_model(args, None)
        if model.backbone is None:
            raise ValueError("image training data needs --backbone")
        views = ViewsTransform(model.backbone.train_transform(args.augment_strength), args.num_views)
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
    queue = GPSQueue(args.queue_size, seed=args.seed)
    spe = source_steps_per_epoch(source, args.train_batch_size, world)
    max_steps = args.max_train_steps or args.num_train_epochs * spe

    # 2. Optimizer (Adam), step decay once per epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=spe, gamma=args.lr_decay)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    queue = queue.to(accelerator.device)
    accelerator.register_for_checkpointing(queue)
    if args.report_to:
        accelerator.init_trackers("train_geoclip", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. Resume
    start_step = resume_state(
        accelerator, output_dir, args.resume_from_checkpoint, ignore_rng_state=args.ignore_rng_state
    )
    unwrapped = accelerator.unwrap_model(model)
    logger.info(
        "%d training samples, %d processes, %d steps (%d per epoch), %d trainable parameters",
        len(source.latlon) if source.latlon is not None else -1,
        world,
        max_steps,
        spe,
        sum(p.numel() for p in params),
    )

    # 4. Training loop
    log_path = output_dir / "logs" / "train_log.jsonl"
    log_path.parent.mkdir(exist_ok=True)
    progress = tqdm(
        range(start_step, max_steps),
        initial=start_step,
        total=max_steps,
        disable=not accelerator.is_main_process,
        desc="training",
    )
    batches = source.batches(start_step)
    for step in progress:
        inputs, latlon = next(batches)
        latlon = latlon.to(accelerator.device)
        with accelerator.accumulate(model), accelerator.autocast():
            if args.data_format == "embeddings":
                features = inputs.to(accelerator.device)
            else:  # (B, P, 3, S, S) -> view-major (P * B, D) backbone features
                views = inputs.to(accelerator.device)
                features = encode_views(unwrapped.backbone, views, trainable=args.finetune != "frozen")
            loss = contrastive_step_loss(
                model,
                features.float(),
                latlon,
                queue,
                num_views=args.num_views if args.data_format != "embeddings" else 1,
                positive_noise_km=args.positive_noise_km,
                queue_noise_km=args.queue_noise_km,
            )
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        queue.enqueue(accelerator.gather(latlon))  # every process keeps the same queue
        if step % args.logging_steps == 0 or step + 1 == max_steps:
            logs = {
                "step": step + 1,
                "loss": accelerator.gather(loss.detach()).mean().item(),
                "lr": scheduler.get_last_lr()[0],
                "temperature": 1 / unwrapped.logit_scale.exp().item(),
            }
            log_metrics(accelerator, logs, log_path, progress)
        if (step + 1) % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step + 1, args.checkpoints_total_limit)
        if args.validation_data and args.validation_steps and (step + 1) % args.validation_steps == 0:
            if accelerator.is_main_process and source.latlon is not None:  # learning curve on held-out data
                unwrapped.gallery = deduplicate(source.latlon, args.gallery_max_points, seed=args.seed)
                metrics = {f"val_{k}": v for k, v in evaluate(unwrapped, args.validation_data).items() if k != "n"}
                log_metrics(accelerator, {"step": step + 1, **metrics}, log_path, progress)

    # 5. Save: merged backbone, training coordinates as the default gallery, card with held-out metrics
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        finalize_backbone(model, args.finetune)
        if source.latlon is not None:
            model.gallery = deduplicate(source.latlon, args.gallery_max_points, seed=args.seed)
        metrics = evaluate(model, args.validation_data) if args.validation_data else {}
        if metrics:
            write_json_atomic(output_dir / "eval_results.json", metrics)
            logger.info("validation: %s", metrics)
        card = {"metrics": {k: v for k, v in metrics.items() if k != "n"}, "training_data": str(args.train_data)}
        model.save_pretrained(output_dir, model_card_kwargs=card)
        if args.push_to_hub:
            url = model.push_to_hub(args.hub_model_id, model_card_kwargs=card)
            logger.info("pushed to %s", url)
    accelerator.end_training()
    return accelerator.unwrap_model(model)


if __name__ == "__main__":
    main()
