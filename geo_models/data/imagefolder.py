"""Geotagged imagefolders: a folder of images + ``metadata.csv`` or ``metadata.jsonl``.

Columns: ``file_name`` (relative to the folder), ``latitude``, ``longitude`` (degrees), optional ``text``. This is the
Hugging Face ``imagefolder`` layout, so ``datasets.load_dataset("imagefolder", data_dir=...)`` reads it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from geo_models.sphere import check_latlon

REQUIRED_COLUMNS = ("file_name", "latitude", "longitude")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")


def find_metadata_file(root: str | PathLike) -> Path | None:
    """The imagefolder's metadata file, or ``None`` when ``root`` is not a geotagged imagefolder."""
    root = Path(root)
    for name in METADATA_FILES:
        if (root / name).is_file():
            return root / name
    return None


def read_imagefolder_metadata(root: str | PathLike, *, check_files: bool = True) -> pd.DataFrame:
    """Read and validate an imagefolder's metadata -> DataFrame (``file_name``, ``latitude``, ``longitude``, ...).

    Raises:
        ValueError: no metadata file, missing columns, coordinates out of range, or (``check_files``) missing images.
    """
    root = Path(root)
    meta_path = find_metadata_file(root)
    if meta_path is None:
        raise ValueError(f"root: {root} has no metadata.csv or metadata.jsonl (an imagefolder with GPS is expected)")
    if meta_path.suffix == ".csv":
        frame = pd.read_csv(meta_path, dtype={"file_name": str})
    else:
        frame = pd.read_json(meta_path, lines=True, dtype={"file_name": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{meta_path}: missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}")
    try:
        latlon = frame[["latitude", "longitude"]].to_numpy(dtype="float64")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{meta_path}: latitude/longitude must be numbers") from err
    try:
        check_latlon(latlon, "latlon")
    except ValueError as err:
        raise ValueError(f"{meta_path}: {err}") from err
    if check_files:
        absent = [f for f in frame["file_name"] if not (root / f).is_file()]
        if absent:
            raise ValueError(f"{meta_path}: {len(absent)} listed image(s) not found, e.g. {absent[0]!r}")
    return frame


class GeoImageFolder(Dataset):
    """Map-style dataset over a geotagged imagefolder.

    Each item is ``{"image": PIL RGB image or transform(image), "latlon": float32 (2,), "file_name": str}`` plus
    ``"text"`` when the metadata has captions.

    Args:
        root: the imagefolder.
        transform: applied to the RGB PIL image (e.g. an open_clip preprocess).
    """

    def __init__(self, root: str | PathLike, transform: Callable[[Image.Image], Any] | None = None):
        self.root = Path(root)
        self.metadata = read_imagefolder_metadata(self.root)
        self.transform = transform
        self.latlon = torch.tensor(self.metadata[["latitude", "longitude"]].to_numpy(), dtype=torch.float32)
        self.has_text = "text" in self.metadata.columns

    def __len__(self) -> int:
        return len(self.metadata)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.metadata.iloc[index]
        with Image.open(self.root / row["file_name"]) as img:
            image = img.convert("RGB")
        item = {
            "image": self.transform(image) if self.transform else image,
            "latlon": self.latlon[index],
            "file_name": row["file_name"],
        }
        if self.has_text:
            item["text"] = "" if pd.isna(row["text"]) else str(row["text"])
        return item


def write_imagefolder_metadata(root: str | PathLike, frame: pd.DataFrame) -> Path:
    """Validate ``frame`` and write ``root/metadata.csv`` (the format the readers above expect)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing column(s) {missing}")
    check_latlon(frame[["latitude", "longitude"]].to_numpy(dtype="float64"), "frame latitude/longitude")
    path = Path(root) / "metadata.csv"
    tmp = path.with_name(f".metadata.csv.tmp-{os.getpid()}")  # readers never see a half-written file
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
