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
