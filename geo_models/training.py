"""Helpers shared by the ``train/`` scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


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
