"""How a training run starts: the accelerator (one process, several GPUs, or several CPU processes), the output
folder, logging, and the seeds every trainer derives from ``--seed``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Run",
    "distributed_without_accelerator",
    "enable_xformers_if_available",
    "make_accelerator",
    "start_run",
    "step_seed",
]


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


def step_seed(seed: int, index: int, rank: int = 0) -> int:
    """The seed of micro-batch ``index`` on process ``rank``: noise, times, dropped conditions and anchors are drawn
    from ``torch.Generator().manual_seed(step_seed(...))``, so a resumed run draws exactly what an uninterrupted one
    would, and processes draw differently."""
    return seed * 1_000_003 + index * 1009 + rank


@dataclass
class Run:
    """A started run: ``accelerator``, the parsed ``args``, ``output_dir`` (created), this process's ``rank`` of
    ``world`` processes, and ``name`` (progress bar, trackers, logger)."""

    accelerator: Any
    args: Any
    output_dir: Path
    name: str

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process


def start_run(args, name: str) -> Run:
    """Step 0 of every trainer: logging, the accelerator (``--mixed_precision``, ``--gradient_accumulation_steps``,
    ``--report_to``), ``--output_dir`` created, and the global RNG seeded by ``--seed`` (the same initial weights on
    every process; :func:`~geo_models.training.harness.fit` reseeds per process before training)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = make_accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=getattr(args, "gradient_accumulation_steps", 1),
        log_with=args.report_to,
        cpu=getattr(args, "device", None) == "cpu",  # --device cpu where a script offers it (else: accelerate's)
    )
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    return Run(accelerator, args, output_dir, name)
