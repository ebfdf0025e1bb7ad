"""GPS galleries for image-to-GPS retrieval: the official 100K, a Fibonacci grid, a user's CSV, training coordinates.

A gallery is a plain ``(G, 2)`` float32 latlon tensor; :func:`gallery_hash` keys the cache of its embeddings.
"""

from __future__ import annotations

import hashlib
import importlib.util
from os import PathLike
from pathlib import Path

import pandas as pd
import torch

from geo_models.sphere import check_latlon, fibonacci_lattice

LAT_COLUMNS = ("latitude", "lat", "LAT", "Latitude")
LON_COLUMNS = ("longitude", "lon", "LON", "Longitude", "lng")


def official_package_dir() -> Path:
    """Folder of the ``geoclip`` PyPI package's shipped files (weights, gallery), found without importing it."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The official GeoCLIP weights and gallery come with the `geoclip` PyPI package. Install it without its "
            "dependencies (it pins Pillow>=13, gradio needs <13): pip install --no-deps geoclip==1.3.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def official_gallery() -> torch.Tensor:
    """The 100K GPS gallery shipped with GeoCLIP, ``(100000, 2)``, as is (5,877 rows are duplicates)."""
    return gallery_from_csv(official_package_dir() / "gps_gallery" / "coordinates_100K.csv")


def fibonacci_gallery(num_points: int = 100_000) -> torch.Tensor:
    """A near-uniform grid of ``num_points`` over the whole sphere (no prior on where photos are taken)."""
    return fibonacci_lattice(num_points)


def gallery_from_csv(path: str | PathLike) -> torch.Tensor:
    """Gallery from a CSV with latitude/longitude columns (``latitude``/``lat``/``LAT``, ``longitude``/``lon``...)."""
    frame = pd.read_csv(path)
    lat = next((c for c in LAT_COLUMNS if c in frame.columns), None)
    lon = next((c for c in LON_COLUMNS if c in frame.columns), None)
    if lat is None or lon is None:
        raise ValueError(f"gallery CSV {path} needs latitude and longitude columns, has {list(frame.columns)}")
    return as_gallery(frame[[lat, lon]].to_numpy(dtype="float32"), f"gallery CSV {path}")


def deduplicate(latlon: torch.Tensor, max_points: int | None = None, *, seed: int = 0) -> torch.Tensor:
    """Unique coordinates (first occurrence order), randomly subsampled to ``max_points`` if given."""
    latlon = as_gallery(latlon)
    _, inverse = torch.unique(latlon, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(latlon), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(latlon)), reduce="amin"
    )
    unique = latlon[first.sort().values]
    if max_points is not None and len(unique) > max_points:
        keep = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))[:max_points]
        unique = unique[keep.sort().values]
    return unique


def as_gallery(latlon, name: str = "gallery") -> torch.Tensor:
    """Validate a ``(G, 2)`` latlon gallery -> float32 tensor."""
    t = check_latlon(latlon, name).to(torch.float32)
    if t.ndim != 2 or len(t) == 0:
        raise ValueError(f"{name} must have shape (G, 2) with G >= 1, got {tuple(t.shape)}")
    return t


def gallery_hash(latlon: torch.Tensor) -> str:
    """Content hash of a gallery (same coordinates in the same order -> same key)."""
    return hashlib.sha1(latlon.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
