"""Train a sphere flow (arXiv 2412.06781, PLONK): a GeoAdaLNMLP denoiser on locations, conditioned on image features.

One of the paper's three objectives (``--objective riemannian``: flow matching on S², its best; ``flow_r3``;
``diffusion_r3``) with the sigmoid schedule (start -7, end 3) and the condition dropped to zeros with probability 0.1
(classifier-free guidance). Paper-like defaults: network dim 512, depth 12, expansion 4 (PLONK's YFCC size); AdamW,
lr 8e-4, linear warmup then cosine decay; an exponential moving average (EMA, decay 0.999, diffusers' warmup
``min(decay, (1 + step) / (10 + step))``) of the network weights, which is what gets saved. Trains on precomputed
embeddings (a parquet with ``embedding``, ``latitude``, ``longitude``, from ``train/embed_images.py``) or on images
(an imagefolder or WebDataset shards) through an open_clip backbone, frozen or fine-tuned (``--finetune lora|full``;
the backbone is saved as trained, LoRA merged, not averaged), with P augmented views per image. Runs under
``accelerate launch``, with mixed precision; checkpoints every N steps (model, optimizer, lr schedule, EMA, RNG) and
resumes exactly (batches, augmentations, times, noise and dropped conditions are functions of (seed, step, rank)).
``--validation_data`` is evaluated at the end by ``geo_models.evaluation`` (accuracies, GeoScore and the exact NLL),
and the metrics go into the model card.

Examples:
    python train/train_flow.py --train_data data/world_emb --output_dir outputs/flow
    accelerate launch train/train_flow.py --train_data data/yfcc_emb --output_dir outputs/flow --objective flow_r3 \
        --mixed_precision bf16 --validation_data data/test_emb --push_to_hub --hub_model_id me/sphere-flow
    python train/train_flow.py --train_data data/world --backbone procedural-clip --backbone_pretrained procedural \
        --finetune lora --num_views 2 --output_dir outputs/flow-lora
"""

from __future__ import annotations

import argparse

import torch

from geo_models import training
from geo_models.evaluation import evaluate_geolocation
from geo_models.flow import OBJECTIVES, GeoAdaLNMLP, SigmoidSchedule, SphereFlowPipeline, flow_loss, get_objective
from geo_models.flow.sampling import SAMPLERS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=training.CPU_RECIPES)
    # data, and the image backbone, its fine-tuning and the P augmented views (image data only)
    training.add_data_args(p, validation="held-out embedding parquet or imagefolder evaluated at the end", images=True)
    # model and objective
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default="riemannian")
    p.add_argument("--dim", type=int, default=512, help="width of the adaLN residual MLP")
    p.add_argument("--depth", type=int, default=12, help="residual blocks")
    p.add_argument("--expansion", type=int, default=4, help="hidden width of each block's MLP, in multiples of dim")
    p.add_argument("--schedule_start", type=float, default=-7.0, help="sigmoid schedule start (PLONK: -7)")
    p.add_argument("--schedule_end", type=float, default=3.0, help="sigmoid schedule end (PLONK: 3)")
    p.add_argument("--schedule_tau", type=float, default=1.0)
    p.add_argument("--cond_drop_prob", type=float, default=0.1, help="classifier-free guidance dropout")
    # optimisation: AdamW lr 8e-4, linear warmup then cosine decay to 0, EMA of the network
    training.add_optim_args(
        p, train_batch_size=1024, learning_rate=8e-4, num_train_epochs=100, lr_scheduler="cosine", lr_warmup_steps=500
    )
    p.add_argument("--ema_decay", type=float, default=0.999, help="EMA of the network weights (0: no averaging)")
    training.add_run_args(p)
    # validation (geo_models.evaluation)
    p.add_argument("--validation_num_samples", type=int, default=16, help="samples per image (best of N)")
    p.add_argument("--validation_inference_steps", type=int, default=32)
    p.add_argument("--validation_guidance_scale", type=float, default=2.0)
    p.add_argument("--validation_sampler", choices=SAMPLERS, default="euler")
    p.add_argument("--validation_skip_nll", action="store_true", help="no exact NLL (it solves an ODE per image)")
    training.add_hub_args(p)
    args = p.parse_args(argv)
    positive = ("dim", "depth", "expansion", "validation_num_samples", "validation_inference_steps")
    training.check_args(p, args, positive=positive, non_negative=("validation_guidance_scale",))
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if not 0 <= args.cond_drop_prob <= 1:
        p.error(f"--cond_drop_prob must be in [0, 1], got {args.cond_drop_prob}")
    if args.validation_sampler == "ddpm" and args.objective != "diffusion_r3":
        p.error("--validation_sampler ddpm needs --objective diffusion_r3")
    try:
        SigmoidSchedule(start=args.schedule_start, end=args.schedule_end, tau=args.schedule_tau)
    except ValueError as err:
        p.error(f"--schedule_start/--schedule_end/--schedule_tau: {err}")
    training.check_data_args(p, args)
    return args


def main(argv=None) -> SphereFlowPipeline:
    args = parse_args(argv)
    run = training.start_run(args, "train_flow")

    # 1. Data (and backbone), objective, schedule and network
    source, backbone, condition_dim = training.load_training_data(run)
    objective = get_objective(args.objective)
    schedule = SigmoidSchedule(start=args.schedule_start, end=args.schedule_end, tau=args.schedule_tau)
    network = GeoAdaLNMLP(
        input_dim=3, dim=args.dim, depth=args.depth, expansion=args.expansion, cond_dim=condition_dim
    )

    # 2. Loss: times, noise and dropped conditions drawn from the step's generator (exact resume)
    def loss(model, features, latlon, generator):
        return flow_loss(
            model.network, objective, schedule, latlon, features, generator, cond_drop_prob=args.cond_drop_prob
        )

    # 3. Train, averaging the network's weights (the EMA is what gets saved; a fine-tuned backbone is not averaged)
    model = training.FeatureLoss(loss, network=network, backbone=backbone, train_backbone=args.finetune != "frozen")
    trained = training.fit(run, model, source, ema=network, ema_decay=args.ema_decay)

    # 4. Save the pipeline (network/, config.json, merged backbone, card with held-out metrics), push
    pipe = SphereFlowPipeline(
        trained.network.eval(),
        objective=objective,
        schedule=schedule,
        backbone=trained.backbone or training.attached_backbone(args, condition_dim),
        cond_drop_prob=args.cond_drop_prob,
    )
    training.finalize_backbone(pipe, args.finetune)

    def evaluate(path):
        kwargs = {
            "num_samples": args.validation_num_samples,
            "num_inference_steps": args.validation_inference_steps,
            "guidance_scale": args.validation_guidance_scale,
            "sampler": args.validation_sampler,
            "generator": torch.Generator().manual_seed(args.seed),
        }
        out = run.output_dir / "eval_results.json"
        return evaluate_geolocation(
            pipe, path, top_k=1, skip_nll=args.validation_skip_nll, predict_kwargs=kwargs, output_json=out
        )

    training.finish_run(run, pipe, evaluate=evaluate)
    return pipe


if __name__ == "__main__":
    main()
