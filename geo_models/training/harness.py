"""The one training loop every ``train/train_*.py`` script runs (open_clip's ``train_one_epoch``, lucidrains'
``Trainer``): :func:`fit` takes a model whose forward is the loss, a step-indexed source and a few hooks, and does
what each script used to write again: optimizer and learning-rate schedule, ``accelerate.prepare``, trackers,
resume, ``--max_train_steps`` optimizer steps of ``--gradient_accumulation_steps`` micro-batches under autocast with
clipping, an exponential moving average of some weights (diffusers' ``EMAModel``), the log line, checkpoints and
validation. :func:`finish_run` is the end of every run: held-out metrics, the saved model with its card, the push.

Exactness: micro-batch ``i`` of process ``r`` reads the source's batch ``i`` and draws its noise from
``torch.Generator().manual_seed(step_seed(seed, i, r))``; checkpoints hold every state (model, optimizer, schedule,
EMA, the hooks' ``state``, RNGs), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geo_models.io import write_json_atomic
from geo_models.training import checkpoints
from geo_models.training.launch import Run, step_seed

__all__ = ["EMAState", "adamw", "finish_run", "fit", "log_metrics", "max_train_steps"]

logger = logging.getLogger(__name__)


def log_metrics(accelerator, logs: dict[str, Any], log_path: str | Path, progress=None) -> None:
    """Report ``logs`` (must hold ``step``) to the trackers, the progress bar and ``log_path`` (JSON lines, main
    process only; what the loss plots read)."""
    if progress is not None and "loss" in logs:
        progress.set_postfix(loss=f"{logs['loss']:.4f}")
    accelerator.log(logs, step=logs["step"])
    if accelerator.is_main_process:
        with Path(log_path).open("a") as f:
            f.write(json.dumps(logs) + "\n")


def adamw(args) -> Callable:
    """The default optimizer factory: AdamW with ``--learning_rate``, ``--adam_beta1/2``, ``--weight_decay``."""

    def make(params):
        betas = (args.adam_beta1, args.adam_beta2)
        return torch.optim.AdamW(params, lr=args.learning_rate, betas=betas, weight_decay=args.weight_decay)

    return make


def max_train_steps(args, source) -> int:
    """``--max_train_steps``, else ``--num_train_epochs`` epochs of the source, in optimizer steps."""
    if args.max_train_steps:
        return args.max_train_steps
    return args.num_train_epochs * max(1, source.steps_per_epoch() // args.gradient_accumulation_steps)


class EMAState:
    """diffusers' ``EMAModel`` over ``module``'s parameters (decay at update n: ``min(decay, (1 + n) / (10 + n))``,
    the first update a copy), checkpointed with the run; a checkpoint without its EMA weights is refused rather than
    resumed with fresh averages."""

    def __init__(self, module: nn.Module, decay: float):
        from diffusers.training_utils import EMAModel

        self.module = module
        self.ema = EMAModel(module.parameters(), decay=decay)

    def to(self, device) -> EMAState:
        self.ema.to(device)
        return self

    def step(self) -> None:
        self.ema.step(self.module.parameters())

    def copy_to_module(self) -> None:
        self.ema.copy_to(self.module.parameters())

    @contextlib.contextmanager
    def averaged_weights(self):
        """The averaged weights in the module for the ``with`` block (e.g. a validation), the trained ones after."""
        self.ema.store(self.module.parameters())
        self.copy_to_module()
        try:
            yield
        finally:
            self.ema.restore(self.module.parameters())

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or "shadow_params" not in state:
            raise checkpoints.CheckpointError(
                "resume_from_checkpoint: the checkpoint's EMA state is not diffusers' EMAModel's (a checkpoint of "
                "train_flow.py from before 2026-12-04?); it cannot be resumed: start the run again"
            )
        self.ema.load_state_dict(state)


def fit(
    run: Run,
    model: nn.Module,
    source,
    compute_loss: Callable[[nn.Module, Any, torch.Generator], torch.Tensor] | None = None,
    *,
    params: Iterable[nn.Parameter] | None = None,
    optimizer: Callable | None = None,
    lr_scheduler: Callable | None = None,
    ema: nn.Module | None = None,
    ema_decay: float = 0.0,
    state: Iterable[Any] = (),
    after_step: Callable[[int, list], None] | None = None,
    extra_logs: Callable[[], dict] | None = None,
    validate: Callable[[int], Any] | None = None,
    trainable_only: bool = False,
) -> nn.Module:
    """Train ``model`` for ``--max_train_steps`` optimizer steps; returns it unwrapped.

    Args:
        run: from :func:`~geo_models.training.launch.start_run` (its ``args`` hold the shared flags).
        model: the module to prepare; its parameters that require grad are trained (``params`` to choose others).
        source: ``.batches(start)`` (micro-batches from ``start`` on) and ``.steps_per_epoch()``.
        compute_loss: ``(prepared model, batch, generator) -> loss``; default ``model(*batch, generator)``.
        optimizer: ``params -> optimizer`` (default :func:`adamw`).
        lr_scheduler: ``(optimizer, num_warmup_steps, num_training_steps) -> scheduler`` (default diffusers'
            ``get_scheduler(--lr_scheduler)``); the step counts are multiplied by the number of processes, as
            accelerate steps a prepared scheduler once per process.
        ema, ema_decay: average ``ema``'s weights (a submodule of ``model``) with diffusers' ``EMAModel``; they are
            copied into ``ema`` at the end (``ema_decay`` 0: no averaging).
        state: objects with ``state_dict``/``load_state_dict`` checkpointed with the run (e.g. GeoCLIP's queue).
        after_step: ``(step, micro-batches)`` after each optimizer step (e.g. to enqueue the batch's locations).
        extra_logs: ``() -> dict`` added to each log line. validate: ``step -> ...`` on the main process every
            ``--validation_steps`` (when the script has that flag and it is > 0), not at the last step, with the
            averaged weights when ``ema_decay > 0`` (what the run saves); a returned dict is logged.
        trainable_only: checkpoint only trainable weights (LoRA runs: the frozen base is reloaded from its files).
    """
    from tqdm.auto import tqdm

    accelerator, args = run.accelerator, run.args
    ga, rank, world = args.gradient_accumulation_steps, run.rank, run.world
    max_steps = max_train_steps(args, source)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = (optimizer or adamw(args))(params)
    if lr_scheduler is None:
        from diffusers.optimization import get_scheduler

        def lr_scheduler(o, num_warmup_steps, num_training_steps):
            return get_scheduler(
                args.lr_scheduler, o, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
            )

    sched = lr_scheduler(opt, min(args.lr_warmup_steps, max_steps) * world, max_steps * world)
    model, opt, sched = accelerator.prepare(model, opt, sched)
    averaged = EMAState(ema, ema_decay).to(accelerator.device) if ema is not None and ema_decay > 0 else None
    for obj in [averaged, *state]:
        if obj is not None:
            accelerator.register_for_checkpointing(obj)
    if args.report_to:
        config = {k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool)}
        accelerator.init_trackers(run.name, config=config)
    torch.manual_seed(args.seed + rank)  # dropout, GPS noise, crops: per process (a resume restores the states)
    start = checkpoints.resume_state(
        accelerator,
        run.output_dir,
        args.resume_from_checkpoint,
        trainable_only=trainable_only,
        ignore_rng_state=args.ignore_rng_state,
    )
    size = len(source.latlon) if getattr(source, "latlon", None) is not None else None
    logger.info(
        "%s%d processes, %d steps of %d x %d (%d batches per epoch), %d trainable parameters",
        "" if size is None else f"{size} training rows, ",  # generated batches (e.g. SDS cameras) have no rows
        world,
        max_steps,
        ga,
        args.train_batch_size,
        source.steps_per_epoch(),
        sum(p.numel() for p in params),
    )
    log_path = run.output_dir / "logs" / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress = tqdm(
        range(start, max_steps), initial=start, total=max_steps, desc=run.name, disable=not run.is_main_process
    )
    compute_loss = compute_loss or _forward_is_loss(accelerator)
    batches = source.batches(start * ga)
    validation_steps = getattr(args, "validation_steps", 0) or 0
    model.train()
    for step in progress:
        losses, seen = [], []
        for micro in range(ga):
            batch = next(batches)
            generator = torch.Generator().manual_seed(step_seed(args.seed, step * ga + micro, rank))
            with accelerator.accumulate(model), accelerator.autocast():
                loss = compute_loss(model, batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, args.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad()
            losses.append(loss.detach())
            seen.append(batch)
        if averaged is not None:
            averaged.step()
        if after_step is not None:
            after_step(step, seen)
        if step % args.logging_steps == 0 or step + 1 == max_steps:
            logs = {
                "step": step + 1,
                "epoch": round((step + 1) * ga / source.steps_per_epoch(), 3),
                "loss": accelerator.gather(torch.stack(losses).mean()[None]).mean().item(),
                "lr": sched.get_last_lr()[0],
                **(extra_logs() if extra_logs is not None else {}),
            }
            log_metrics(accelerator, logs, log_path, progress)
        if (step + 1) % args.checkpointing_steps == 0:
            checkpoints.save_checkpoint(
                accelerator, run.output_dir, step + 1, args.checkpoints_total_limit, trainable_only=trainable_only
            )
        last = step + 1 == max_steps  # the final validation is the script's, after saving
        if validate is not None and validation_steps > 0 and (step + 1) % validation_steps == 0 and not last:
            if run.is_main_process:
                with averaged.averaged_weights() if averaged is not None else contextlib.nullcontext():
                    out = validate(step + 1)
                if isinstance(out, dict):  # e.g. held-out metrics: a learning curve in the log
                    log_metrics(accelerator, {"step": step + 1, **out}, log_path, progress)
            model.train()
    accelerator.wait_for_everyone()
    if averaged is not None:
        averaged.copy_to_module()
    return accelerator.unwrap_model(model)


def _forward_is_loss(accelerator):
    def compute_loss(model, batch, generator):
        inputs, latlon = batch[0], batch[1]
        return model(inputs.to(accelerator.device), latlon.to(accelerator.device), generator)

    return compute_loss


def describe_training_data(train_data) -> str:
    """How a model card names its training data: a local folder or file by its name (a card is published: a path
    on the machine that trained it means nothing on the Hub and leaks its layout), anything else (a Hub dataset id,
    a shard pattern) as given."""
    text = str(train_data)
    path = Path(text).expanduser()
    if path.exists():
        return f"`{path.resolve().name}` (a local dataset)"
    return text


def finish_run(
    run: Run,
    save: Any,
    *,
    evaluate: Callable[[str], dict] | None = None,
    card: dict | None = None,
    what: str = "model",
) -> dict:
    """The end of every run, on the main process: held-out metrics (``evaluate(--validation_data)`` when given,
    written to ``output_dir/eval_results.json``), the model and its card (training data, the metrics without ``n``,
    and ``card``), then ``--push_to_hub`` of the output folder (without checkpoints and logs). Returns the metrics
    ({} without validation data).

    Args:
        save: a model or pipeline, saved with ``save.save_pretrained(output_dir, model_card_kwargs=...)``, or a
            callable ``save(card_kwargs)`` that writes the output folder.
    """
    from geo_models.hub import push_folder

    args, output_dir = run.args, run.output_dir
    run.accelerator.wait_for_everyone()
    metrics: dict = {}
    if run.is_main_process:
        if evaluate is not None and getattr(args, "validation_data", None):
            metrics = evaluate(args.validation_data)
            write_json_atomic(output_dir / "eval_results.json", metrics)
            logger.info("validation: %s", metrics)
        train_data = getattr(args, "train_data", None)
        card_kwargs = {"training_data": describe_training_data(train_data)} if train_data else {}
        card_kwargs.update(card or {})
        if metrics:
            card_kwargs["metrics"] = {k: v for k, v in metrics.items() if k != "n"}
        if callable(getattr(save, "save_pretrained", None)):
            save.save_pretrained(output_dir, model_card_kwargs=card_kwargs)
        else:
            save(card_kwargs)
        if getattr(args, "push_to_hub", False):
            ignore = ["checkpoint-*", "checkpoint-*/**", ".checkpoint-*/**", "logs/**"]
            url = push_folder(output_dir, args.hub_model_id, commit_message=f"Upload {what}", ignore_patterns=ignore)
            logger.info("pushed to %s", url)
    run.accelerator.end_training()
    return metrics
