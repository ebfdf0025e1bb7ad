"""Train LocDiff (arXiv 2503.18142, sec. 4.6): DDPM with a CS-UNet on SHDD vectors, conditioned on image embeddings.

Defaults follow the paper's Table 3: SHDD degree L in {15, 23, 31} (23 here), time embedding 200, batch 512, Adam(W)
lr 1e-4 with betas (0.9, 0.99) and weight decay 5e-4, dropout 0.3, 2048 random anchors per step for the SHDD KL loss,
500 epochs; bottleneck width 32 (Table 9). Trains on precomputed embeddings (a parquet with ``embedding``,
``latitude``, ``longitude``, from ``train/embed_images.py``) or on images (an imagefolder or WebDataset shards) through
an open_clip backbone, frozen or fine-tuned (``--finetune lora`` merges the adapters at the end, ``full``), with P
augmented views per image (each view a training sample with the image's location); the saved pipeline then
holds the backbone and predicts from images. Runs under ``accelerate launch``, checkpoints every N steps and resumes
exactly (batches, augmentations, noise, timesteps and anchors are functions of (seed, step, rank); streamed shards
resume at the right batch).

Examples:
    python train/train_locdiff.py --train_data data/world_emb --output_dir outputs/locdiff --degree 23
    accelerate launch train/train_locdiff.py --train_data data/mp16_emb --output_dir outputs/locdiff \
        --mixed_precision bf16 --push_to_hub --hub_model_id me/locdiff-l23
    python train/train_locdiff.py --train_data data/world --backbone procedural-clip --backbone_pretrained procedural \
        --finetune lora --num_views 2 --output_dir outputs/locdiff-lora
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from geo_models.data import GeoImageFolder, dataset_format, read_embedding_parquet
from geo_models.encoders.image import OpenCLIPBackbone
from geo_models.locdiff.modeling import PREDICTION_TYPES, CSUNet
from geo_models.locdiff.pipeline import LOSSES, LocDiffPipeline, locdiff_loss, make_scheduler
from geo_models.locdiff.shdd import SHDD
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
    attached_backbone,
    check_data_args,
    encode_views,
    finalize_backbone,
    image_source,
    setup_finetuning,
    source_steps_per_epoch,
)

logger = logging.getLogger("train_locdiff")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="embedding parquet (file/folder), imagefolder or .tar shards")
    p.add_argument(
        "--validation_data", default=None, help="held-out embedding parquet or imagefolder evaluated at the end"
    )
    p.add_argument("--output_dir", required=True)
    # image backbone, its fine-tuning and the P augmented views (image data only)
    add_image_args(p)
    # model (Table 3 / Table 9)
    p.add_argument("--degree", type=int, default=23, help="SHDD max degree L (latent dim (L+1)^2)")
    p.add_argument("--block_out_dims", type=int, nargs="+", default=[512, 256, 128, 64, 32], help="U down widths")
    p.add_argument("--time_embed_dim", type=int, default=200)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--prediction_type", choices=PREDICTION_TYPES, default="sample")
    p.add_argument("--num_train_timesteps", type=int, default=1000)
    # objective and decoder
    p.add_argument("--loss", choices=LOSSES, default="kl", help="kl (paper), cosine/l2 (ablations), mse (DDPM)")
    p.add_argument("--num_anchors", type=int, default=2048, help="random anchors per step for the KL loss")
    p.add_argument("--rho_km", type=float, default=None, help="decoder radius (default 5000 / L km)")
    p.add_argument("--decode_anchors", type=int, default=100_000, help="decoder's Fibonacci anchors")
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=512, help="per process")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.99)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--num_train_epochs", type=int, default=500)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    add_run_args(p)
    # validation
    p.add_argument("--validation_num_samples", type=int, default=16)
    p.add_argument("--validation_inference_steps", type=int, default=100)
    # checkpoints, logging, hub
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    for name in (
        "degree",
        "train_batch_size",
        "checkpointing_steps",
        "gradient_accumulation_steps",
        "num_anchors",
        "decode_anchors",
        "validation_num_samples",
        "validation_inference_steps",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    check_data_args(p, args)
    return args


class LocDiffTrainingModel(nn.Module):
    """What accelerate prepares, trains and checkpoints: the CS-UNet and the image backbone (None on embeddings).

    Its forward is the whole loss, so that under DDP each step runs one forward through the wrapper.
    """

    def __init__(self, unet: CSUNet, backbone: OpenCLIPBackbone | None = None, *, train_backbone: bool = False):
        super().__init__()
        self.unet, self.backbone, self.train_backbone = unet, backbone, train_backbone

    def forward(self, inputs, latlon, *, noise_scheduler, shdd, loss: str, generator) -> torch.Tensor:
        """``inputs``: embeddings ``(B, D)`` or views ``(B, P, 3, S, S)`` (each view a sample at its image's
        ``latlon (B, 2)``) -> the LocDiff loss."""
        if self.backbone is None:
            features = inputs
        else:  # view-major (P * B, D) features; the locations repeated to match
            features = encode_views(self.backbone, inputs, trainable=self.train_backbone)
            latlon = latlon.repeat(inputs.shape[1], 1)
        return locdiff_loss(self.unet, noise_scheduler, shdd, features.float(), latlon, loss=loss, generator=generator)


def build_pipeline(args, unet: CSUNet, backbone: OpenCLIPBackbone | None = None) -> LocDiffPipeline:
    shdd = {"max_degree": args.degree, "num_anchors": args.num_anchors, "decode_anchors": args.decode_anchors}
    if args.rho_km is not None:
        shdd["rho_km"] = args.rho_km
    scheduler = make_scheduler(prediction_type=args.prediction_type, num_train_timesteps=args.num_train_timesteps)
    return LocDiffPipeline(unet, scheduler, shdd, backbone=backbone)


@torch.no_grad()
def evaluate(pipe: LocDiffPipeline, path: str, args, *, batch_size: int = 256) -> dict[str, float]:
    """Metrics on held-out embeddings or (with a backbone) an imagefolder, ``batch_size`` images at a time."""
    kwargs = {
        "num_samples": args.validation_num_samples,
        "num_inference_steps": args.validation_inference_steps,
        "generator": torch.Generator().manual_seed(args.seed),
    }
    if dataset_format(path) == "embeddings":
        emb, latlon, _ = read_embedding_parquet(path)
        return geolocation_metrics(pipe.predict(image_embeddings=emb, **kwargs).latlon, latlon)
    ds = GeoImageFolder(path)
    preds = [
        pipe.predict(images=[ds[i]["image"] for i in range(s, min(s + batch_size, len(ds)))], **kwargs).latlon
        for s in range(0, len(ds), batch_size)
    ]
    return geolocation_metrics(torch.cat(preds), ds.latlon)


def main(argv=None) -> LocDiffPipeline:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = make_accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
    )
    torch.manual_seed(args.seed + accelerator.process_index)  # dropout differs per process
    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data (and backbone), SHDD, scheduler and model
    if args.data_format == "embeddings":
        source = EmbeddingSource(args.train_data, args.train_batch_size, args.seed, rank, world)
        backbone, condition_dim = None, source.embeddings.shape[1]
    else:
        backbone = OpenCLIPBackbone(args.backbone, args.backbone_pretrained, seed=args.seed)
        setup_finetuning(backbone, args.finetune, lora_rank=args.lora_rank)
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
        condition_dim = backbone.output_dim
    shdd = SHDD(args.degree, num_anchors=args.num_anchors, decode_anchors=args.decode_anchors)
    noise_scheduler = make_scheduler(
        prediction_type=args.prediction_type, num_train_timesteps=args.num_train_timesteps
    )
    torch.manual_seed(args.seed)  # same initial weights on every process
    unet = CSUNet(
        sample_dim=shdd.output_dim,
        condition_dim=condition_dim,
        block_out_dims=tuple(args.block_out_dims),
        time_embed_dim=args.time_embed_dim,
        dropout=args.dropout,
        num_train_timesteps=args.num_train_timesteps,
        prediction_type=args.prediction_type,
    )
    torch.manual_seed(args.seed + rank)
    model = LocDiffTrainingModel(unet, backbone, train_backbone=args.finetune != "frozen")
    spe = source_steps_per_epoch(source, args.train_batch_size, world)
    max_steps = args.max_train_steps or args.num_train_epochs * spe

    # 2. Optimizer (Table 3: lr 1e-4, betas (0.9, 0.99), weight decay 5e-4), over the unet and a trained backbone
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    shdd = shdd.to(accelerator.device)
    if args.report_to:
        accelerator.init_trackers("train_locdiff", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. Resume
    start_step = resume_state(
        accelerator, output_dir, args.resume_from_checkpoint, ignore_rng_state=args.ignore_rng_state
    )
    logger.info(
        "%d training samples, %d processes, %d steps (%d per epoch), %d trainable parameters, L=%d (%d-d latents), "
        "loss %s",
        len(source.latlon) if source.latlon is not None else -1,
        world,
        max_steps,
        spe,
        sum(p.numel() for p in params),
        args.degree,
        shdd.output_dim,
        args.loss,
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
    model.train()
    for step in progress:
        inputs, latlon = next(batches)
        # noise, timesteps and KL anchors: a function of (seed, step, rank), so resuming is exact
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 1009 + rank)
        with accelerator.accumulate(model), accelerator.autocast():
            loss = model(
                inputs.to(accelerator.device),
                latlon.to(accelerator.device),
                noise_scheduler=noise_scheduler,
                shdd=shdd,
                loss=args.loss,
                generator=generator,
            )
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if step % args.logging_steps == 0 or step + 1 == max_steps:
            logs = {"step": step + 1, "loss": accelerator.gather(loss.detach()).mean().item()}
            log_metrics(accelerator, logs, log_path, progress)
        if (step + 1) % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step + 1, args.checkpoints_total_limit)

    # 5. Save the pipeline (unet/, scheduler/, config.json, merged backbone, card with held-out metrics), push
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model)
    pipe = build_pipeline(args, trained.unet.eval(), trained.backbone or attached_backbone(args, condition_dim))
    if accelerator.is_main_process:
        if pipe.backbone is not None:
            finalize_backbone(pipe, args.finetune)
        metrics = evaluate(pipe, args.validation_data, args) if args.validation_data else {}
        if metrics:
            write_json_atomic(output_dir / "eval_results.json", metrics)
            logger.info("validation: %s", metrics)
        card = {"metrics": {k: v for k, v in metrics.items() if k != "n"}, "training_data": str(args.train_data)}
        pipe.save_pretrained(output_dir, model_card_kwargs=card)
        if args.push_to_hub:
            url = pipe.push_to_hub(args.hub_model_id, model_card_kwargs=card)
            logger.info("pushed to %s", url)
    accelerator.end_training()
    return pipe


if __name__ == "__main__":
    main()
