"""Embedding datasets: parquet files with columns `embedding`, `latitude`, `longitude` (+ optional others).

Format (written by `write_embedding_parquet`, read by `read_embedding_parquet`):
- `embedding`: `list<float32>`, every row the same length D (backbone features, before any trainable head).
- `latitude`, `longitude`: `float64`, degrees.
- anything else (e.g. `file_name`, `text`) is kept and returned as a pandas frame.
A dataset is one such file or a folder of them (`*.parquet`, read in sorted name order, e.g. `part-00000.parquet`).
Reading accepts `list`, `large_list` or `fixed_size_list` of any float type; 100k x 768 reads in ~1.5 s (no Python
loop: the list values are flattened straight to numpy).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from geo_models.sphere import check_latlon

REQUIRED_COLUMNS = ("embedding", "latitude", "longitude")


def _as_numpy(x, name: str, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {e}") from e


def _check_latlon(latlon: np.ndarray, name: str = "latlon") -> None:
    """(N, 2) finite degrees in range, else ValueError naming `name` (shared rules: `geo_models.sphere`)."""
    if latlon.ndim != 2 or latlon.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) [lat, lon in degrees], got {latlon.shape}")
    check_latlon(latlon, name)


def write_embedding_parquet(
    path: str | os.PathLike,
    embeddings,
    latlon,
    extra_columns: dict | None = None,
    file_name=None,
) -> Path:
    """Write one embedding parquet file atomically (temp file in the same folder, then `os.replace`).

    Args:
        path: output `.parquet` file; parent folders are created.
        embeddings: (N, D) array/tensor, stored as `list<float32>`.
        latlon: (N, 2) degrees, latitude first; stored as float64 `latitude`, `longitude`.
        extra_columns: optional `{name: length-N sequence}` stored as extra columns.
        file_name: optional length-N sequence of str, stored as column `file_name`.
    """
    path = Path(path)
    emb = _as_numpy(embeddings, "embeddings", np.float32)
    ll = _as_numpy(latlon, "latlon", np.float64)
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise ValueError(f"embeddings must have shape (N, D) with D > 0, got {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings must be finite (found NaN or inf)")
    _check_latlon(ll)
    n, d = emb.shape
    if ll.shape[0] != n:
        raise ValueError(f"latlon has {ll.shape[0]} rows but embeddings has {n}")
    # list<float32> (int32 offsets); only > 2^31 values in one file need large_list
    list_cls, off = (pa.ListArray, np.int32) if n * d < 2**31 else (pa.LargeListArray, np.int64)
    columns = {
        "embedding": list_cls.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=off)), pa.array(emb.reshape(-1))),
        "latitude": pa.array(ll[:, 0]),
        "longitude": pa.array(ll[:, 1]),
    }
    extra = dict(extra_columns or {})
    if file_name is not None:
        extra["file_name"] = [str(f) for f in file_name]
    for key, values in extra.items():
        if key in columns:
            raise ValueError(f"extra_columns may not redefine {key!r}")
        values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
        if len(values) != n:
            raise ValueError(f"extra column {key!r} has {len(values)} rows, expected {n}")
        columns[key] = pa.array(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def embedding_parquet_files(path: str | os.PathLike) -> list[Path]:
    """The parquet files of a dataset: `[path]` for a file, sorted `*.parquet` for a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise ValueError(f"path {str(path)!r} is a folder without *.parquet files")
        return files
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} does not exist")
    return [path]


def _embedding_matrix(col: pa.ChunkedArray, source: str) -> np.ndarray:
    """`list`/`large_list`/`fixed_size_list` column of N rows -> (N, D) float32 numpy, no Python loop."""
    col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise ValueError(f"column 'embedding' in {source} must be a list of floats, got {t}")
    if not pa.types.is_floating(t.value_type):
        raise ValueError(f"column 'embedding' in {source} must hold floats, got {t.value_type}")
    n = len(col)
    if col.null_count:
        raise ValueError(f"column 'embedding' in {source} has {col.null_count} null rows")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=np.int64)
    if n and (lengths.min() != lengths.max() or lengths[0] == 0):
        raise ValueError(
            f"column 'embedding' in {source} must have one length D > 0 in every row, "
            f"got lengths {lengths.min()}..{lengths.max()}"
        )
    d = int(lengths[0]) if n else 0
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(n, d)


def read_embedding_parquet(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Read an embedding dataset (a parquet file or a folder of them, concatenated in sorted name order).

    Returns:
        embeddings: (N, D) float32 tensor.
        latlon: (N, 2) float32 tensor, degrees, latitude first.
        other: pandas frame (N rows) with the remaining columns (e.g. `file_name`, `text`), index 0..N-1.
    Raises:
        ValueError naming the file and the problem (missing column, ragged/empty embeddings, NaN/inf,
        latitude/longitude out of range, mismatching D between files).
    """
    embs, lls, others = [], [], []
    for f in embedding_parquet_files(path):
        table = pq.read_table(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{f} is missing required column(s) {missing}; has {table.column_names}")
        emb = _embedding_matrix(table.column("embedding"), str(f))
        if embs and emb.shape[0] and embs[0].shape[0] and emb.shape[1] != embs[0].shape[1]:
            raise ValueError(f"embedding dim in {f} is {emb.shape[1]}, but earlier files have {embs[0].shape[1]}")
        if not np.isfinite(emb).all():
            raise ValueError(f"column 'embedding' in {f} contains NaN or inf")
        try:
            ll = np.stack(
                [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("latitude", "longitude")],
                axis=1,
            )
        except (pa.ArrowInvalid, TypeError, ValueError) as e:
            raise ValueError(f"columns 'latitude'/'longitude' in {f} must be numeric without nulls: {e}") from e
        _check_latlon(ll, name=f"latitude/longitude in {f}")
        embs.append(emb)
        lls.append(ll)
        others.append(table.drop_columns(list(REQUIRED_COLUMNS)).to_pandas())
    d = next((e.shape[1] for e in embs if e.shape[0]), 0)
    emb = np.concatenate([e.reshape(-1, d) for e in embs]) if d else np.zeros((0, 0), np.float32)
    other = pd.concat(others, ignore_index=True) if len(others) > 1 else others[0]
    return torch.from_numpy(emb), torch.from_numpy(np.concatenate(lls).astype(np.float32)), other


class EmbeddingDataset(torch.utils.data.Dataset):
    """Map-style dataset over an embedding parquet file/folder, held in memory.

    Item `i`: `{"embedding": (D,) float32, "latlon": (2,) float32 degrees}`. Attributes: `embeddings` (N, D),
    `latlon` (N, 2), `frame` (other columns), `dim` (D).
    """

    def __init__(self, path: str | os.PathLike):
        self.embeddings, self.latlon, self.frame = read_embedding_parquet(path)
        self.dim = self.embeddings.shape[1]

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"embedding": self.embeddings[i], "latlon": self.latlon[i]}
