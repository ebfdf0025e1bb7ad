"""Helpers shared by the ``train/`` scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

# checkpoints live in their own module; the scripts import them from here
from geo_models.checkpointing import (  # noqa: F401
    list_checkpoints,
    prune_checkpoints,
    resolve_checkpoint,
    resume_state,
    save_checkpoint,
)


def distributed_without_accelerator() -> bool:
    """True when launched as several processes (``accelerate launch --multi_gpu`` / torchrun) on a machine without a
    GPU or other accelerator: accelerate then needs ``cpu=True`` to set up the gloo backend.

    (``accelerate launch --cpu --num_processes 2`` starts a single process in accelerate 1.x unless run by mpirun.)
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    acc = getattr(torch, "accelerator", None)
    return not (acc.is_available() if acc is not None else torch.cuda.is_available())


def make_accelerator(**kwargs: Any):
    """``accelerate.Accelerator(**kwargs)`` that also works for several CPU processes (see above)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # One process: forget a previous run's settings (accelerate keeps a singleton), so scripts' main() can be
        # called again in the same interpreter (tests, notebooks) with e.g. another --mixed_precision.
        AcceleratorState._reset_state(reset_partial_state=True)
    if distributed_without_accelerator():
        kwargs["cpu"] = True
    return Accelerator(**kwargs)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON via a temporary file + rename, so readers (and resumed runs) never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def enable_xformers_if_available(model: Any) -> bool:
    """Turn on xformers attention for a diffusers model/pipeline, only on CUDA with the optional ``gpu`` extra.

    xformers has no CPU kernels, so on CPU (and without the package) this does nothing and returns False.
    """
    if not torch.cuda.is_available():
        return False
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    model.enable_xformers_memory_efficient_attention()
    return True


def step_batch_indices(step: int, num_samples: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1):
    """Indices of this process's batch at global ``step``: a deterministic function of (step, seed).

    Each epoch is a permutation seeded by ``seed + epoch``; a global batch of ``batch_size * world`` rows is cut
    from it (drop-last), and process ``rank`` takes its slice. Resuming at any step therefore sees exactly the
    batches an uninterrupted run would, without replaying the data loader.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
    global_batch = batch_size * world
    steps_per_epoch = max(1, num_samples // global_batch)
    epoch, j = divmod(step, steps_per_epoch)
    perm = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed + epoch))
    if num_samples < global_batch:  # tiny datasets: wrap around
        perm = perm.repeat(-(-global_batch // num_samples))
    rows = perm[j * global_batch : (j + 1) * global_batch]
    return rows[rank * batch_size : (rank + 1) * batch_size]


def steps_per_epoch(num_samples: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per epoch under :func:`step_batch_indices`."""
    return max(1, num_samples // (batch_size * world))


def log_metrics(accelerator, logs: dict[str, Any], log_path: str | os.PathLike, progress=None) -> None:
    """Report ``logs`` (must hold ``step``) to the trackers, the progress bar and ``log_path`` (JSON lines, main
    process only; what the loss plots read)."""
    if progress is not None and "loss" in logs:
        progress.set_postfix(loss=f"{logs['loss']:.4f}")
    accelerator.log(logs, step=logs["step"])
    if accelerator.is_main_process:
        with Path(log_path).open("a") as f:
            f.write(json.dumps(logs) + "\n")


class EmbeddingSource:
    """An embedding parquet held in memory, served in step-indexed batches (:func:`step_batch_indices`), so a
    resumed run sees exactly the batches of an uninterrupted one.

    Attributes:
        embeddings: ``(N, D)`` float32. latlon: ``(N, 2)`` degrees.
    """

    def __init__(self, path, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        from geo_models.data.embeddings import read_embedding_parquet

        self.embeddings, self.latlon, _ = read_embedding_parquet(path)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world

    def __len__(self) -> int:
        return len(self.latlon)

    def batches(self, start_step: int):
        """Endless iterator of ``(embeddings (B, D), latlon (B, 2))`` from global step ``start_step`` on."""
        step = start_step
        while True:
            idx = step_batch_indices(
                step, len(self), self.batch_size, seed=self.seed, rank=self.rank, world=self.world
            )
            yield self.embeddings[idx], self.latlon[idx]
            step += 1


def add_run_args(parser) -> None:
    """The flags every training script shares (diffusers' names): precision, seed, checkpoints, logging."""
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument(
        "--ignore_rng_state",
        action="store_true",
        help="resume even if the checkpoint's RNG states are missing or corrupt (the run then differs from an "
        "uninterrupted one)",
    )
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--report_to", default=None, help="accelerate tracker (tensorboard, wandb, ...)")
