"""Helpers shared by the procedural generators (world, world landmarks, city, landmark): argument checks, float
images to uint8, and writing an imagefolder (``images/%06d.png`` + ``metadata.csv`` + ``dataset_info.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024


def check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_image_size(value) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not (MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE)
    ):
        raise ValueError(f"image_size must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {value!r}")
    return int(value)


def check_seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def write_imagefolder(
    output_dir,
    meta: pd.DataFrame,
    batches: Iterable[np.ndarray],
    info: dict,
    *,
    progress: bool = True,
    desc: str = "images",
) -> pd.DataFrame:
    """Save uint8 image batches as ``images/%06d.png`` + ``metadata.csv`` + ``dataset_info.json``."""
    from tqdm.auto import tqdm

    root = Path(output_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = [f"images/{i:06d}.png" for i in range(len(meta))]
    bar = tqdm(total=len(names), desc=desc, disable=not progress)
    k = 0
    for batch in batches:
        for arr in batch:
            Image.fromarray(arr).save(root / names[k], format="PNG")
            k += 1
        bar.update(len(batch))
    bar.close()
    meta = meta.reset_index(drop=True)
    meta.insert(0, "file_name", names)
    meta.to_csv(root / "metadata.csv", index=False, float_format="%.6f")
    info = {**info, "columns": list(meta.columns), "format": "imagefolder (metadata.csv)"}
    (root / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return meta


__all__ = [
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "check_count",
    "check_image_size",
    "check_seed",
    "to_uint8",
    "write_imagefolder",
]
