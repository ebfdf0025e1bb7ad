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

from geo_models.data import GeoImageFolder, GeoWebDataset, dataset_format, read_embedding_parquet
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
    step_batch_indices,
    steps_per_epoch,
    write_json_atomic,
)

logger = logging.getLogger("train_geoclip")
LORA_TARGETS = ["out_proj", "c_fc", "c_proj"]  # Linear layers of open_clip's vision transformer blocks


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="embedding parquet (file/folder), imagefolder or .tar shards")
    p.add_argument("--validation_data", default=None, help="held-out data evaluated at the end (metrics -> card)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--init_from", default=None, help="'official' (geoclip package weights) or a saved GeoCLIP")
    # model
    p.add_argument("--backbone", default="ViT-L-14", help="open_clip architecture (image data only)")
    p.add_argument("--backbone_pretrained", default="openai", help="open_clip tag or weights file ('none': random)")
    p.add_argument("--finetune", choices=["frozen", "lora", "full"], default="frozen", help="backbone training")
    p.add_argument("--lora_rank", type=int, default=8)
    p.add_argument("--projection_dim", type=int, default=512)
    p.add_argument("--hidden_dim", type=int, default=1024)
    p.add_argument("--num_features", type=int, default=256, help="RFF rows per branch")
    p.add_argument("--num_layers", type=int, default=3, help="Linear+ReLU blocks per location branch")
    p.add_argument("--sigmas", type=float, nargs="+", default=[2.0**0, 2.0**4, 2.0**8])
    # objective
    p.add_argument("--queue_size", type=int, default=4096)
    p.add_argument("--positive_noise_km", type=float, default=0.15)
    p.add_argument("--queue_noise_km", type=float, default=1.0)
    p.add_argument("--num_views", type=int, default=1, help="P augmented views per image (image data)")
    p.add_argument("--augment_strength", type=float, default=0.5, help="SimCLR colour-jitter strength")
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=512, help="per process")
    p.add_argument("--learning_rate", type=float, default=3e-5)
    p.add_argument("--weight_decay", type=float, default=1e-6)
    p.add_argument("--lr_decay", type=float, default=0.87, help="multiply the lr by this once per epoch")
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--num_train_epochs", type=int, default=10)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    add_run_args(p)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    # checkpoints, logging, hub
    p.add_argument("--gallery_max_points", type=int, default=100_000, help="training coordinates kept as gallery")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    for name in ("train_batch_size", "num_views", "lora_rank", "checkpointing_steps", "gradient_accumulation_steps"):
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
    if args.data_format == "embeddings" and (args.finetune != "frozen" or args.num_views != 1):
        p.error("--finetune lora/full and --num_views > 1 need images, not precomputed embeddings")
    args.backbone_pretrained = None if str(args.backbone_pretrained).lower() == "none" else args.backbone_pretrained
    return args


# ------------------------------------------------------------------------------------------------------ data
class ViewsTransform:
    """P augmented views of one image -> ``(P, 3, S, S)``."""

    def __init__(self, transform, num_views: int):
        self.transform, self.num_views = transform, num_views

    def __call__(self, image):
        return torch.stack([self.transform(image) for _ in range(self.num_views)])


class ImageFolderSource(EmbeddingSource):
    """An imagefolder read in the same step-indexed order; items are ``(P, 3, S, S)`` augmented views."""

    def __init__(self, path, transform, batch_size, seed, rank, world, num_workers):
        self.dataset = GeoImageFolder(path, transform=transform)
        self.latlon = self.dataset.latlon
        self.batch_size, self.seed, self.rank, self.world, self.num_workers = (
            batch_size,
            seed,
            rank,
            world,
            num_workers,
        )

    def batches(self, start_step):
        def index_lists():
            step = start_step
            while True:
                yield step_batch_indices(
                    step, len(self), self.batch_size, seed=self.seed, rank=self.rank, world=self.world
                ).tolist()
                step += 1

        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=index_lists(), num_workers=self.num_workers)
        for batch in loader:
            yield batch["image"], batch["latlon"]


class WebDatasetSource:
    """WebDataset shards streamed epoch after epoch (each process reads its own shards)."""

    def __init__(self, path, transform, batch_size, num_workers):
        self.dataset = GeoWebDataset(path, transform=transform, shuffle_shards=True)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.latlon = None  # unknown until streamed; the gallery is collected while training

    def batches(self, start_step):
        seen = 0
        while True:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.batch_size, num_workers=self.num_workers
            )
            for batch in loader:
                seen += 1
                if seen > start_step:  # resume: skip the batches already trained on
                    yield batch["image"], batch["latlon"]


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
            backbone=None if args.data_format == "embeddings" else args.backbone,
            backbone_pretrained=args.backbone_pretrained,
            seed=args.seed,
        )
    if embedding_dim is not None and embedding_dim != model.embedding_dim:
        raise ValueError(f"train_data embeddings are {embedding_dim}-d but the model expects {model.embedding_dim}")
    if args.finetune == "full":
        model.backbone.set_trainable(True)
    elif args.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank, target_modules=LORA_TARGETS)
        model.backbone.model.visual = get_peft_model(model.backbone.model.visual, config)
        model.backbone.trainable = True
        model.backbone.train()
    return model


def finalize_backbone(model: GeoCLIP, finetune: str) -> None:
    """Merge LoRA into the backbone weights and record that the backbone must be saved with the model."""
    if finetune == "lora":
        model.backbone.model.visual = model.backbone.model.visual.merge_and_unload()
    if finetune != "frozen":
        model.backbone.set_trainable(False)
        model.mark_backbone_finetuned()


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
        if args.data_format == "imagefolder":
            source = ImageFolderSource(
                args.train_data, views, args.train_batch_size, args.seed, rank, world, args.dataloader_num_workers
            )
        else:
            source = WebDatasetSource(args.train_data, views, args.train_batch_size, args.dataloader_num_workers)
    queue = GPSQueue(args.queue_size, seed=args.seed)
    spe = steps_per_epoch(len(source.latlon), args.train_batch_size, world) if source.latlon is not None else 1000
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
    start_step = resume_state(accelerator, output_dir, args.resume_from_checkpoint)
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
            else:  # (B, P, 3, S, S) -> view-major (P * B, 3, S, S) -> backbone features
                pixels = inputs.transpose(0, 1).flatten(0, 1).to(accelerator.device)
                with torch.set_grad_enabled(args.finetune != "frozen"):
                    features = unwrapped.backbone.encode_image(pixels)
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
