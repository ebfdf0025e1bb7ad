"""Which kind of geotagged dataset a path holds (training and evaluation scripts accept all three)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Literal

from geo_models.data.imagefolder import find_metadata_file

DatasetFormat = Literal["embeddings", "imagefolder", "webdataset"]


def dataset_format(path: str | PathLike) -> DatasetFormat:
    """``embeddings`` (a parquet file or a folder of them), ``imagefolder`` (a folder with metadata.csv/jsonl) or
    ``webdataset`` (a .tar shard, a folder of them, or a brace pattern such as ``shards-{000..009}.tar``)."""
    text, p = str(path), Path(path)
    if p.is_file() and p.suffix == ".parquet":
        return "embeddings"
    if p.is_file() and p.suffix == ".tar":
        return "webdataset"
    if p.is_dir():
        if find_metadata_file(p) is not None:
            return "imagefolder"
        if any(p.glob("*.parquet")):
            return "embeddings"
        if any(p.glob("*.tar")):
            return "webdataset"
    if "{" in text and text.endswith(".tar"):
        return "webdataset"
    raise ValueError(
        f"{text!r} is not a dataset: expected an embedding parquet (file or folder), an imagefolder with "
        "metadata.csv, or WebDataset .tar shards"
    )
