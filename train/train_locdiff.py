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

import torch

from geo_models import training
from geo_models.evaluation import evaluate_geolocation
from geo_models.locdiff.modeling import PREDICTION_TYPES, CSUNet
from geo_models.locdiff.pipeline import LOSSES, LocDiffPipeline, locdiff_loss, make_scheduler
from geo_models.locdiff.shdd import SHDD


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=training.CPU_RECIPES)
    # data, and the image backbone, its fine-tuning and the P augmented views (image data only)
    training.add_data_args(p, validation="held-out embedding parquet or imagefolder evaluated at the end", images=True)
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
    # optimisation (Table 3: AdamW lr 1e-4, betas (0.9, 0.99), weight decay 5e-4, constant lr, no clipping)
    training.add_optim_args(
        p, train_batch_size=512, learning_rate=1e-4, num_train_epochs=500, adam_beta2=0.99, weight_decay=5e-4,
        max_grad_norm=0.0,
    )  # fmt: skip
    training.add_run_args(p)
    # validation
    p.add_argument("--validation_num_samples", type=int, default=16)
    p.add_argument("--validation_inference_steps", type=int, default=100)
    training.add_hub_args(p)
    args = p.parse_args(argv)
    positive = ("degree", "num_anchors", "decode_anchors", "validation_num_samples", "validation_inference_steps")
    training.check_args(p, args, positive=positive)
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    training.check_data_args(p, args)
    return args


def build_pipeline(args, unet: CSUNet, backbone=None) -> LocDiffPipeline:
    shdd = {"max_degree": args.degree, "num_anchors": args.num_anchors, "decode_anchors": args.decode_anchors}
    if args.rho_km is not None:
        shdd["rho_km"] = args.rho_km
    scheduler = make_scheduler(prediction_type=args.prediction_type, num_train_timesteps=args.num_train_timesteps)
    return LocDiffPipeline(unet, scheduler, shdd, backbone=backbone)


def main(argv=None) -> LocDiffPipeline:
    args = parse_args(argv)
    run = training.start_run(args, "train_locdiff")

    # 1. Data (and backbone), SHDD, scheduler and the CS-UNet
    source, backbone, condition_dim = training.load_training_data(run)
    shdd = SHDD(args.degree, num_anchors=args.num_anchors, decode_anchors=args.decode_anchors).to(run.device)
    noise_scheduler = make_scheduler(
        prediction_type=args.prediction_type, num_train_timesteps=args.num_train_timesteps
    )
    unet = CSUNet(
        sample_dim=shdd.output_dim,
        condition_dim=condition_dim,
        block_out_dims=tuple(args.block_out_dims),
        time_embed_dim=args.time_embed_dim,
        dropout=args.dropout,
        num_train_timesteps=args.num_train_timesteps,
        prediction_type=args.prediction_type,
    )

    # 2. Loss: noise, timesteps and KL anchors drawn from the step's generator (exact resume)
    def loss(model, features, latlon, generator):
        return locdiff_loss(model.unet, noise_scheduler, shdd, features, latlon, loss=args.loss, generator=generator)

    # 3. Train
    model = training.FeatureLoss(loss, unet=unet, backbone=backbone, train_backbone=args.finetune != "frozen")
    trained = training.fit(run, model, source)

    # 4. Save the pipeline (unet/, scheduler/, config.json, merged backbone, card with held-out metrics), push
    backbone = trained.backbone or training.attached_backbone(args, condition_dim)
    pipe = build_pipeline(args, trained.unet.eval(), backbone)
    training.finalize_backbone(pipe, args.finetune)

    def evaluate(path):
        kwargs = {"num_samples": args.validation_num_samples, "num_inference_steps": args.validation_inference_steps}
        kwargs["generator"] = torch.Generator().manual_seed(args.seed)
        return evaluate_geolocation(pipe, path, top_k=1, skip_nll=True, predict_kwargs=kwargs, progress=False)

    training.finish_run(run, pipe, evaluate=evaluate)
    return pipe


if __name__ == "__main__":
    main()
