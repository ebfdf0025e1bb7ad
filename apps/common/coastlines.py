"""Offline coastlines for the globe: polylines derived once from ``global_land_mask`` and stored in ``data/``.

Rebuild (a few seconds, ~1 GB RAM): ``python -m apps.common.coastlines`` from the repository root.
The 1 km land mask is averaged over 0.5-degree blocks, contoured at 0.5 (``skimage.measure.find_contours``) and
simplified (``approximate_polygon``, tolerance 0.05 degrees); rings shorter than 4 points are dropped.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).resolve().parent / "data" / "coastlines.npz"
CELL_DEG = 0.5


def build_coastlines(cell_deg: float = CELL_DEG, tolerance_deg: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """-> ``points (P, 2)`` float32 latlon degrees of all polylines, and ``offsets (L + 1,)`` int32 starts."""
    from global_land_mask import globe
    from skimage.measure import approximate_polygon, find_contours

    mask = globe._mask  # (21600, 43200) bool, north to south, 1/120 degree cells
    block = round(cell_deg * 120)
    h, w = mask.shape[0] // block, mask.shape[1] // block
    frac = np.zeros((h, w), np.float32)
    for i in range(h):  # row by row: keeps memory at one band of the mask
        band = mask[i * block : (i + 1) * block, : w * block].reshape(block, w, block)
        frac[i] = band.mean(axis=(0, 2))
    padded = np.pad(frac, 1, mode="edge")  # closes rings at the map edges
    lines = []
    for contour in find_contours(padded, 0.5):
        contour = approximate_polygon(contour - 1, tolerance=tolerance_deg / cell_deg)
        if len(contour) >= 4:
            lat = 90 - (contour[:, 0] + 0.5) * cell_deg
            lon = -180 + (contour[:, 1] + 0.5) * cell_deg
            lines.append(np.stack([lat.clip(-90, 90), lon.clip(-180, 180)], -1).astype(np.float32))
    offsets = np.cumsum([0] + [len(line) for line in lines]).astype(np.int32)
    return np.concatenate(lines), offsets


@lru_cache(maxsize=1)
def load_coastlines() -> list[np.ndarray]:
    """The stored coastlines: a list of ``(n_i, 2)`` float32 latlon polylines."""
    with np.load(DATA_FILE) as data:
        points, offsets = data["points"], data["offsets"]
    return [points[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


if __name__ == "__main__":
    pts, offs = build_coastlines()
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DATA_FILE, points=pts, offsets=offs)
    print(f"{DATA_FILE}: {len(offs) - 1} polylines, {len(pts)} points, {DATA_FILE.stat().st_size / 1e3:.0f} kB")
