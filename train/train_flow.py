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
``--validation_data`` is evaluated at the end by ``train/evaluate_geolocation.py`` (accuracies, GeoScore and the
exact NLL), and the metrics go into the model card.

Examples:
    python train/train_flow.py --train_data data/world_emb --output_dir outputs/flow
    accelerate launch train/train_flow.py --train_data data/yfcc_emb --output_dir outputs/flow --objective flow_r3 \
        --mixed_precision bf16 --validation_data data/test_emb --push_to_hub --hub_model_id me/sphere-flow
    python train/train_flow.py --train_data data/world --backbone procedural-clip --backbone_pretrained procedural \
        --finetune lora --num_views 2 --output_dir outputs/flow-lora
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from geo_models.encoders.image import OpenCLIPBackbone
from geo_models.flow import OBJECTIVES, GeoAdaLNMLP, SigmoidSchedule, SphereFlowPipeline, flow_loss, get_objective
from geo_models.flow.sampling import SAMPLERS
from geo_models.training import (
    EmbeddingSource,
    add_run_args,
    log_metrics,
    make_accelerator,
    resume_state,
    save_checkpoint,
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

logger = logging.getLogger("train_flow")
EVALUATE_SCRIPT = Path(__file__).resolve().parent / "evaluate_geolocation.py"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_data", required=True, help="embedding parquet (file/folder), imagefolder or .tar shards")
    p.add_argument(
        "--validation_data", default=None, help="held-out embedding parquet or imagefolder evaluated at the end"
    )
    p.add_argument("--output_dir", required=True)
    # image backbone, its fine-tuning and the P augmented views (image data only)
    add_image_args(p)
    # model and objective
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default="riemannian")
    p.add_argument("--dim", type=int, default=512, help="width of the adaLN residual MLP")
    p.add_argument("--depth", type=int, default=12, help="residual blocks")
    p.add_argument("--expansion", type=int, default=4, help="hidden width of each block's MLP, in multiples of dim")
    p.add_argument("--schedule_start", type=float, default=-7.0, help="sigmoid schedule start (PLONK: -7)")
    p.add_argument("--schedule_end", type=float, default=3.0, help="sigmoid schedule end (PLONK: 3)")
    p.add_argument("--schedule_tau", type=float, default=1.0)
    p.add_argument("--cond_drop_prob", type=float, default=0.1, help="classifier-free guidance dropout")
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=1024, help="per process")
    p.add_argument("--learning_rate", type=float, default=8e-4)
    p.add_argument("--lr_warmup_steps", type=int, default=500, help="linear warmup, then cosine decay to 0")
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping (0: none)")
    p.add_argument("--ema_decay", type=float, default=0.999, help="EMA of the network weights (0: no averaging)")
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--num_train_epochs", type=int, default=100)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    add_run_args(p)
    # validation (train/evaluate_geolocation.py)
    p.add_argument("--validation_num_samples", type=int, default=16, help="samples per image (best of N)")
    p.add_argument("--validation_inference_steps", type=int, default=32)
    p.add_argument("--validation_guidance_scale", type=float, default=2.0)
    p.add_argument("--validation_sampler", choices=SAMPLERS, default="euler")
    p.add_argument("--validation_skip_nll", action="store_true", help="no exact NLL (it solves an ODE per image)")
    # hub
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    for name in (
        "dim",
        "depth",
        "expansion",
        "train_batch_size",
        "checkpointing_steps",
        "gradient_accumulation_steps",
        "logging_steps",
        "validation_num_samples",
        "validation_inference_steps",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        p.error(f"--max_train_steps must be >= 1, got {args.max_train_steps}")
    if args.num_train_epochs < 1:
        p.error(f"--num_train_epochs must be >= 1, got {args.num_train_epochs}")
    if not args.learning_rate > 0:
        p.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    if args.lr_warmup_steps < 0 or args.weight_decay < 0 or args.max_grad_norm < 0:
        p.error("--lr_warmup_steps, --weight_decay and --max_grad_norm must be >= 0")
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if not 0 <= args.cond_drop_prob <= 1:
        p.error(f"--cond_drop_prob must be in [0, 1], got {args.cond_drop_prob}")
    if args.validation_guidance_scale < 0:
        p.error(f"--validation_guidance_scale must be >= 0, got {args.validation_guidance_scale}")
    if args.validation_sampler == "ddpm" and args.objective != "diffusion_r3":
        p.error("--validation_sampler ddpm needs --objective diffusion_r3")
    try:
        SigmoidSchedule(start=args.schedule_start, end=args.schedule_end, tau=args.schedule_tau)
    except ValueError as err:
        p.error(f"--schedule_start/--schedule_end/--schedule_tau: {err}")
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    check_data_args(p, args)
    return args


class EMAWeights:
    """Exponential moving average of a module's parameters, checkpointed with ``accelerator.save_state``
    (``register_for_checkpointing``). Decay at update ``n`` (from 0): ``min(decay, (1 + n) / (10 + n))``, diffusers'
    ``EMAModel`` default, so short runs are not stuck at the initial weights."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = [p.detach().clone().float() for p in module.parameters()]
        self.num_updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, module.parameters()):
            s.lerp_(p.detach().float(), 1 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters()):
            p.copy_(s.to(p.dtype))

    def to(self, device) -> EMAWeights:
        self.shadow = [s.to(device) for s in self.shadow]
        return self

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        device = self.shadow[0].device if self.shadow else "cpu"
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        self.shadow = [s.to(device) for s in state["shadow"]]


def cosine_with_warmup(warmup_steps: int, total_steps: int):
    """``lr multiplier(step)``: linear warmup over ``warmup_steps``, then cosine from 1 to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class FlowTrainingModel(nn.Module):
    """What accelerate prepares, trains and checkpoints: the denoiser and the image backbone (None on embeddings).

    Its forward is the whole loss, so that under DDP each step runs one forward through the wrapper.
    """

    def __init__(self, network: GeoAdaLNMLP, backbone: OpenCLIPBackbone | None = None, *, train_backbone=False):
        super().__init__()
        self.network, self.backbone, self.train_backbone = network, backbone, train_backbone

    def forward(self, inputs, latlon, *, objective, schedule, cond_drop_prob: float, generator) -> torch.Tensor:
        """``inputs``: embeddings ``(B, D)`` or views ``(B, P, 3, S, S)`` (each view a sample at its image's
        ``latlon (B, 2)``) -> the objective's loss."""
        if self.backbone is None:
            features = inputs
        else:  # view-major (P * B, D) features; the locations repeated to match
            features = encode_views(self.backbone, inputs, trainable=self.train_backbone)
            latlon = latlon.repeat(inputs.shape[1], 1)
        return flow_loss(
            self.network, objective, schedule, latlon, features.float(), generator, cond_drop_prob=cond_drop_prob
        )


def evaluate(output_dir: Path, path: str, args) -> dict[str, float]:
    """``train/evaluate_geolocation.py`` on the saved pipeline: accuracies, GeoScore and (unless
    ``--validation_skip_nll``) the mean exact NLL in nats; writes ``output_dir/eval_results.json`` (+ per-image
    CSV)."""
    spec = importlib.util.spec_from_file_location("evaluate_geolocation", EVALUATE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predict = {
        "num_samples": args.validation_num_samples,
        "num_inference_steps": args.validation_inference_steps,
        "guidance_scale": args.validation_guidance_scale,
        "sampler": args.validation_sampler,
    }
    torch.manual_seed(args.seed)  # predict draws from the global RNG (a generator is not JSON)
    argv = ["--model", str(output_dir), "--test_data", str(path)]
    argv += ["--output_json", str(output_dir / "eval_results.json")]
    argv += ["--predict_kwargs", json.dumps(predict), "--top_k", "1"]
    if args.validation_skip_nll:
        argv.append("--skip_nll")
    return module.main(argv)


def main(argv=None) -> SphereFlowPipeline:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = make_accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
    )
    torch.manual_seed(args.seed + accelerator.process_index)
    rank, world = accelerator.process_index, accelerator.num_processes
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data (and backbone), objective, schedule and network
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
    objective = get_objective(args.objective)
    schedule = SigmoidSchedule(start=args.schedule_start, end=args.schedule_end, tau=args.schedule_tau)
    torch.manual_seed(args.seed)  # same initial weights on every process
    network = GeoAdaLNMLP(
        input_dim=3, dim=args.dim, depth=args.depth, expansion=args.expansion, cond_dim=condition_dim
    )
    torch.manual_seed(args.seed + rank)
    model = FlowTrainingModel(network, backbone, train_backbone=args.finetune != "frozen")
    ema = EMAWeights(network, args.ema_decay)
    spe = source_steps_per_epoch(source, args.train_batch_size, world)
    max_steps = args.max_train_steps or args.num_train_epochs * spe

    # 2. Optimizer (AdamW, lr 8e-4), warmup + cosine, over the network and a trained backbone
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay
    )
    # accelerate steps a prepared scheduler once per process per optimizer step (diffusers scales the same way)
    updates = max(1, max_steps // args.gradient_accumulation_steps)
    schedule_fn = cosine_with_warmup(args.lr_warmup_steps * world, updates * world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    if args.report_to:
        accelerator.init_trackers("train_flow", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. Resume
    start_step = resume_state(
        accelerator, output_dir, args.resume_from_checkpoint, ignore_rng_state=args.ignore_rng_state
    )
    logger.info(
        "%d training samples, %d processes, %d steps (%d per epoch), %d trainable parameters, objective %s",
        len(source.latlon) if source.latlon is not None else -1,
        world,
        max_steps,
        spe,
        sum(p.numel() for p in params),
        objective.name,
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
    unwrapped = accelerator.unwrap_model(model)
    model.train()
    for step in progress:
        inputs, latlon = next(batches)
        # times, noise and dropped conditions: a function of (seed, step, rank), so resuming is exact
        generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 1009 + rank)
        with accelerator.accumulate(model), accelerator.autocast():
            loss = model(
                inputs.to(accelerator.device),
                latlon.to(accelerator.device),
                objective=objective,
                schedule=schedule,
                cond_drop_prob=args.cond_drop_prob,
                generator=generator,
            )
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            ema.update(unwrapped.network)
        if step % args.logging_steps == 0 or step + 1 == max_steps:
            logs = {
                "step": step + 1,
                "loss": accelerator.gather(loss.detach()).mean().item(),
                "lr": scheduler.get_last_lr()[0],
            }
            log_metrics(accelerator, logs, log_path, progress)
        if (step + 1) % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step + 1, args.checkpoints_total_limit)

    # 5. Save the pipeline with the EMA weights (network/, config.json, merged backbone, card), evaluate, push
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model)
    ema.copy_to(trained.network)
    pipe = SphereFlowPipeline(
        trained.network.eval(),
        objective=objective,
        schedule=schedule,
        backbone=trained.backbone or attached_backbone(args, condition_dim),
        cond_drop_prob=args.cond_drop_prob,
    )
    if accelerator.is_main_process:
        if pipe.backbone is not None:
            finalize_backbone(pipe, args.finetune)
        card = {"training_data": str(args.train_data)}
        pipe.save_pretrained(output_dir, model_card_kwargs=card)
        if args.validation_data:
            metrics = evaluate(output_dir, args.validation_data, args)
            logger.info("validation: %s", metrics)
            card["metrics"] = {k: v for k, v in metrics.items() if k != "n"}
            pipe.save_pretrained(output_dir, model_card_kwargs=card)  # again, with the metrics in the card
        if args.push_to_hub:
            url = pipe.push_to_hub(args.hub_model_id, model_card_kwargs=card)
            logger.info("pushed to %s", url)
    accelerator.end_training()
    return pipe


if __name__ == "__main__":
    main()
