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

import torch

from geo_models import training
from geo_models.evaluation import evaluate_geolocation
from geo_models.geoclip import GeoCLIP, deduplicate
from geo_models.geoclip.modeling import POINT_ESTIMATES
from geo_models.geoclip.training import GPSQueue, contrastive_step_loss

# --preset cpu: the CPU recipe that beats kNN-1 on the procedural world (bench/README.md "GeoCLIP's CPU recipe"):
# ~1.8 min on one core for 20K training embeddings; a short run with averaged weights (held-out accuracy peaks early
# and the one-hot loss then memorises the training photos) and the coarse-to-fine best guess.
PRESETS = {
    "cpu": {"max_train_steps": 500, "train_batch_size": 256, "learning_rate": 5e-4, "lr_decay": 0.97,
            "weight_decay": 1e-4, "ema_decay": 0.999, "queue_size": 1024, "hidden_dim": 512, "projection_dim": 256,
            "num_features": 128, "num_layers": 2, "point_estimate": "coarse_to_fine"},
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=training.CPU_RECIPES)
    training.add_preset_arg(p, PRESETS, "cpu: the CPU recipe for precomputed embeddings (~1.8 min for 20K on one core;"
                            " it beats kNN-1 on the procedural world); default: the paper's GPU-sized run")
    # data, and the image backbone, its fine-tuning and the P augmented views (image data only)
    training.add_data_args(p, validation="held-out data evaluated at the end (metrics -> card)", images=True)
    p.add_argument("--validation_steps", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
    p.add_argument("--init_from", default=None, help="'official' (geoclip package weights) or a saved GeoCLIP")
    # model
    p.add_argument("--projection_dim", type=int, default=512)
    p.add_argument("--hidden_dim", type=int, default=1024)
    p.add_argument("--num_features", type=int, default=256, help="RFF rows per branch")
    p.add_argument("--num_layers", type=int, default=3, help="Linear+ReLU blocks per location branch")
    p.add_argument("--sigmas", type=float, nargs="+", default=[2.0**0, 2.0**4, 2.0**8])
    # objective
    p.add_argument("--queue_size", type=int, default=4096)
    p.add_argument("--positive_noise_km", type=float, default=0.15)
    p.add_argument("--queue_noise_km", type=float, default=1.0)
    p.add_argument(
        "--haversine_smoothing_km", type=float, default=0.0,
        help="soft targets softmax(-distance / tau) over batch + queue (PIGEON's haversine smoothing; 0: the paper's "
        "one-hot targets)",
    )  # fmt: skip
    # optimisation: Adam (lr 3e-5, weight decay 1e-6), the lr times --lr_decay once per epoch, batch 512
    training.add_optim_args(
        p, train_batch_size=512, learning_rate=3e-5, num_train_epochs=10, lr_scheduler="step_decay",
        weight_decay=1e-6, max_grad_norm=0.0,
        lr_scheduler_help="step_decay (the paper's: times --lr_decay once per epoch) or a get_scheduler name",
    )  # fmt: skip
    p.add_argument("--lr_decay", type=float, default=0.87, help="--lr_scheduler step_decay: lr factor per epoch")
    p.add_argument("--ema_decay", type=float, default=0.0, help="EMA of the weights, saved and validated (0: none)")
    training.add_run_args(p)
    p.add_argument("--gallery_max_points", type=int, default=100_000, help="training coordinates kept as gallery")
    p.add_argument(
        "--point_estimate", choices=POINT_ESTIMATES, default="argmax",
        help="best guess the validation and the saved model use (argmax: the paper's; coarse_to_fine: the mode of the "
        "softmax mass at 2500/750/200/25 km in turn)",
    )  # fmt: skip
    training.add_hub_args(p)
    args = p.parse_args(argv)
    training.apply_preset(p, args, PRESETS)
    training.check_args(p, args, positive=("gallery_max_points",), non_negative=("validation_steps",))
    noises = ("positive_noise_km", "queue_noise_km", "haversine_smoothing_km")
    training.check_args(p, args, non_negative=("queue_size", *noises))
    training.check_data_args(p, args)
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    return args


def build_model(args, embedding_dim: int | None) -> GeoCLIP:
    if args.init_from == "official":  # features other than CLIP ViT-L/14's: a new image head on its location encoder
        model = GeoCLIP.from_official(
            backbone=None if args.data_format == "embeddings" else args.backbone,
            backbone_pretrained=args.backbone_pretrained,
            embedding_dim=embedding_dim,
            seed=args.seed,
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
        training.setup_finetuning(model.backbone, args.finetune, lora_rank=args.lora_rank)
    model.set_point_estimate(args.point_estimate)
    return model


def adam(args):
    """The paper's optimizer: Adam (not AdamW) with --learning_rate, --adam_beta1/2 and --weight_decay."""
    betas = (args.adam_beta1, args.adam_beta2)
    return lambda params: torch.optim.Adam(params, lr=args.learning_rate, betas=betas, weight_decay=args.weight_decay)


def step_decay(args, source, world: int):
    """The paper's schedule: the learning rate times ``--lr_decay`` once per epoch (accelerate steps a prepared
    scheduler once per process, hence ``world`` times per optimizer step)."""
    epoch = max(1, source.steps_per_epoch() // args.gradient_accumulation_steps) * world

    def make(optimizer, num_warmup_steps, num_training_steps):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=epoch, gamma=args.lr_decay)

    return make


def main(argv=None) -> GeoCLIP:
    args = parse_args(argv)
    run = training.start_run(args, "train_geoclip")

    # 1. Model and data (images go through the model's own backbone)
    if args.data_format == "embeddings":
        source, _, dim = training.load_training_data(run)
        geoclip = build_model(args, dim)
    else:
        geoclip = build_model(args, None)
        if geoclip.backbone is None:
            raise ValueError("image training data needs --backbone")
        source, _, _ = training.load_training_data(run, geoclip.backbone)
    queue = GPSQueue(args.queue_size, seed=args.seed).to(run.device)

    # 2. Loss: batch + queue contrastive loss with GPS noise; the P views of an image share its location
    def loss(model, features, latlon, generator):
        num_views = len(features) // len(latlon)
        noise = {"positive_noise_km": args.positive_noise_km, "queue_noise_km": args.queue_noise_km}
        return contrastive_step_loss(
            model.geoclip, features, latlon, queue, num_views=num_views, smoothing_km=args.haversine_smoothing_km,
            **noise,
        )  # fmt: skip

    def enqueue(step, batches):  # every process keeps the same queue
        for _, latlon in batches:
            queue.enqueue(run.accelerator.gather(latlon.to(run.device)))

    def set_gallery(model):
        if source.latlon is not None:  # the training coordinates (unknown for streamed shards)
            model.gallery = deduplicate(source.latlon, args.gallery_max_points, seed=args.seed)

    def evaluate(path):
        return evaluate_geolocation(geoclip, path, top_k=1, skip_nll=True, progress=False)

    def validate(step):  # learning curve on held-out data
        if args.validation_data and source.latlon is not None:
            set_gallery(geoclip)
            return {f"val_{k}": v for k, v in evaluate(args.validation_data).items() if k != "n"}

    # 3. Train
    model = training.FeatureLoss(
        loss, geoclip=geoclip, backbone="geoclip.backbone", train_backbone=args.finetune != "frozen",
        repeat_latlon=False,
    )  # fmt: skip
    training.fit(
        run,
        model,
        source,
        optimizer=adam(args),
        lr_scheduler=step_decay(args, source, run.world) if args.lr_scheduler == "step_decay" else None,
        state=[queue],
        ema=geoclip,
        ema_decay=args.ema_decay,
        after_step=enqueue,
        extra_logs=lambda: {"temperature": 1 / geoclip.logit_scale.exp().item()},
        validate=validate,
    )

    # 4. Save: merged backbone, training coordinates as the default gallery, card with held-out metrics; push
    training.finalize_backbone(geoclip, args.finetune)
    set_gallery(geoclip)
    geoclip.eval()
    training.finish_run(run, geoclip, evaluate=evaluate)
    return geoclip


if __name__ == "__main__":
    main()
