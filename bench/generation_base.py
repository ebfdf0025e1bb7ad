"""Data of the generation learning benchmark: the procedural city split by location and the landmark views (the small
base it trains on them is :mod:`geo_models.generation.small_base`). Everything is cached under ``data_dir``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def split_city(data_dir: Path, *, num_images: int, image_size: int = 32, seed: int = 0, cell_deg: float = 0.01,
               holdout_every: int = 5, captions: str = "generic") -> dict[str, Path]:  # fmt: skip
    """``city_all`` (generate_city) split by location: ``cell_deg`` x ``cell_deg`` cells, every ``holdout_every``-th
    cell (a fixed hash of its indices) held out. Both splits link ``city_all/images``. -> ``{"train", "test"}``.

    ``captions="generic"``: the ``text`` column says only what the photo shows (``GENERIC_CAPTIONS`` of
    ``geo_models.data.procedural.city``), so the location comes from the GPS alone and "GPS zeroed" is a
    real ablation; ``"location"`` keeps generate_city's captions, which name the neighbourhood (its building style)."""
    if captions not in ("generic", "location"):
        raise ValueError(f"captions must be 'generic' or 'location', got {captions!r}")
    from geo_models.data.procedural import generate_city
    from geo_models.data.procedural.city import GENERIC_CAPTIONS

    root = data_dir / f"city_{num_images}_{image_size}px"
    if not (root / "metadata.csv").exists():
        generate_city(root, num_images, image_size=image_size, seed=seed, progress=False)
    meta = pd.read_csv(root / "metadata.csv", dtype={"file_name": str})
    ci = np.floor(meta["latitude"].to_numpy() / cell_deg).astype(np.int64)
    cj = np.floor(meta["longitude"].to_numpy() / cell_deg).astype(np.int64)
    held = ((ci * 73856093) ^ (cj * 19349663)) % holdout_every == 0
    out = {}
    for split, rows in (("train", ~held), ("test", held)):
        folder = data_dir / (f"{root.name}_{split}" + ("" if captions == "location" else f"_{captions}"))
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "images").exists():
            (folder / "images").symlink_to((root / "images").resolve())
        sub = meta[rows].copy()
        if captions == "generic":
            if "location_text" not in sub:  # caches written before generate_city kept it
                sub["location_text"] = sub["text"]
            sub["text"] = sub["kind"].map(GENERIC_CAPTIONS)
        if split == "test":  # a fixed shuffle, so --max_pairs takes a spread of held-out cells
            sub = sub.sample(frac=1.0, random_state=0)
        tmp = folder / f"metadata.{os.getpid()}.tmp"  # atomic: stages run in parallel processes
        sub.to_csv(tmp, index=False, float_format="%.6f")
        os.replace(tmp, folder / "metadata.csv")
        out[split] = folder
    return out


def landmark_views(data_dir: Path, *, num_images: int, image_size: int = 32, seed: int = 0) -> Path:
    from geo_models.data.procedural import generate_landmark

    root = data_dir / f"landmark_{num_images}_{image_size}px"
    if not (root / "metadata.csv").exists():
        generate_landmark(root, num_images, image_size=image_size, seed=seed, progress=False)
    return root
