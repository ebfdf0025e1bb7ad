"""Geotagged WebDataset tar shards: per sample an image (``jpg``/``jpeg``/``png``/``webp``) and a ``json`` with
``latitude`` and ``longitude`` (degrees) and optional ``text``."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset

from geo_models.data.imagefolder import read_imagefolder_metadata
from geo_models.sphere import check_latlon

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(urls: str | PathLike | Sequence[str | PathLike]) -> list[str]:
    """Shard list from a brace pattern (``data-{000..009}.tar``), a folder of ``*.tar``, a file or a list."""
    if isinstance(urls, (list, tuple)):
        return [str(u) for u in urls]
    path = Path(urls)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
        if not shards:
            raise ValueError(f"urls: no .tar shards in folder {path}")
        return shards
    return list(wds.shardlists.expand_urls(str(urls)))


def _decode_sample(sample: dict[str, Any], transform: Callable | None) -> dict[str, Any]:
    key = sample.get("__key__", "?")
    image_key = next((k for k in IMAGE_KEYS if k in sample), None)
    if image_key is None or "json" not in sample:
        raise ValueError(f"webdataset sample {key!r} needs an image ({'/'.join(IMAGE_KEYS)}) and a json entry")
    meta = json.loads(sample["json"])
    try:
        latlon = check_latlon(torch.tensor([float(meta["latitude"]), float(meta["longitude"])]), "latlon")
    except (KeyError, TypeError) as err:
        raise ValueError(f"webdataset sample {key!r}: json must have numeric latitude and longitude") from err
    except ValueError as err:
        raise ValueError(f"webdataset sample {key!r}: {err}") from err
    image = Image.open(io.BytesIO(sample[image_key])).convert("RGB")
    item = {"image": transform(image) if transform else image, "latlon": latlon, "file_name": key}
    if "text" in meta:
        item["text"] = str(meta["text"])
    return item


class GeoWebDataset(IterableDataset):
    """Iterable dataset over geotagged WebDataset shards; items as :class:`GeoImageFolder`'s.

    Args:
        urls: shard pattern, folder, file or list (see :func:`expand_shards`).
        transform: applied to the RGB PIL image.
        split_by_node: give each distributed process (accelerate / torchrun) its own shards.
        shuffle_shards: shuffle the shard order (training); items stay in file order within a shard.
    """

    def __init__(
        self,
        urls: str | PathLike | Sequence[str | PathLike],
        transform: Callable | None = None,
        *,
        split_by_node: bool = True,
        shuffle_shards: bool = False,
        seed: int = 0,
    ):
        self.shards = expand_shards(urls)
        self.transform = transform
        self.pipeline = wds.WebDataset(
            self.shards,
            shardshuffle=100 if shuffle_shards else False,
            nodesplitter=wds.split_by_node if split_by_node else wds.single_node_only,
            seed=seed,
            empty_check=False,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for sample in self.pipeline:
            yield _decode_sample(sample, self.transform)


def write_webdataset(
    imagefolder: str | PathLike, output_dir: str | PathLike, *, shard_size: int = 1000, prefix: str = "shard"
) -> list[Path]:
    """Convert a geotagged imagefolder to WebDataset shards ``output_dir/{prefix}-000000.tar`` ...; returns them."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    root, out = Path(imagefolder), Path(output_dir)
    frame = read_imagefolder_metadata(root)
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / f"{prefix}-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for i, row in enumerate(frame.itertuples(index=False)):
            ext = Path(row.file_name).suffix.lower().lstrip(".")
            ext = "jpg" if ext == "jpeg" else ext
            if ext not in IMAGE_KEYS:
                raise ValueError(f"imagefolder: unsupported image type {row.file_name!r}")
            meta = {"latitude": float(row.latitude), "longitude": float(row.longitude)}
            if "text" in frame.columns and isinstance(getattr(row, "text", None), str):
                meta["text"] = row.text
            sink.write({"__key__": f"{i:08d}", ext: (root / row.file_name).read_bytes(), "json": json.dumps(meta)})
    return sorted(out.glob(f"{prefix}-*.tar"))
