"""Landmarks in the procedural world: photos taken again and again at the same spot.

The plain world photos are spread ~8 km around their city and nothing in a picture says where inside that disk it
was taken, so no method can place them within 1 km. Real benchmarks (MP16, Im2GPS) are full of famous sites
photographed from (almost) the same coordinates, which is what makes the 1 km column of the LocDiff / GeoCLIP tables
non-zero. ``generate_world(..., landmark_fraction=f)`` turns a fraction of the photos into landmark photos:

* the landmark set is fixed (independent of the dataset seed, so train and test splits share it): one site 20-40 km
  outside each of the ``num_landmarks`` most populous GeoNames cities, on land when one of 16 bearings allows;
* a landmark photo is taken within ~50 m (exponential, at most 300 m) of its site;
* it shows the site's monument over the usual geography: a shape (tower, spire, dome, arch, stepped pyramid), two
  colours and proportions hashed from the landmark id, with position, scale and lighting as nuisance.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pandas as pd

from geo_models.data.procedural.common import check_count
from geo_models.data.procedural.geonames import SIGN_COLOURS, country_names, geonames_cities
from geo_models.sphere import destination

SHAPES = ("tower", "spire", "dome", "arch", "pyramid")
_STONE = np.array([[0.85, 0.80, 0.70], [0.55, 0.50, 0.45], [0.75, 0.45, 0.30], [0.92, 0.92, 0.88]])
_COLOURS = np.concatenate([SIGN_COLOURS, _STONE])


def _style(landmark: int) -> tuple[int, int, int, float, float, int]:
    """Shape, body colour, accent colour, width, height (fractions of the image) and stripe count of a landmark."""
    h = hashlib.sha256(f"landmark-{landmark}".encode()).digest()
    body = h[1] % len(_COLOURS)
    accent = (body + 1 + h[2] % (len(_COLOURS) - 1)) % len(_COLOURS)
    return h[0] % len(SHAPES), body, accent, 0.15 + 0.2 * h[3] / 255, 0.3 + 0.3 * h[4] / 255, 1 + h[5] % 3


@functools.lru_cache(maxsize=4)
def world_landmarks(num_landmarks: int = 200) -> pd.DataFrame:
    """The landmark sites: ``landmark, latitude, longitude, city, country_code, shape, name`` (one row each)."""
    from global_land_mask import globe

    num_landmarks = check_count(num_landmarks, "num_landmarks")
    c = geonames_cities()
    if num_landmarks > len(c["pop"]):
        raise ValueError(f"num_landmarks must be at most {len(c['pop'])}, got {num_landmarks}")
    order = np.argsort(-c["pop"], kind="stable")[:num_landmarks]
    # One fixed generator per landmark: every split, seed and num_landmarks sees the same site for landmark i.
    draws = np.array(
        [np.random.default_rng([20261122, i]).uniform([0.0, 20.0], [360.0, 40.0]) for i in range(num_landmarks)]
    )
    start = np.stack([c["lat"][order], c["lon"][order]], -1)
    bearings = (draws[:, :1] + np.arange(16) * 22.5) % 360
    dist = draws[:, 1]
    cand = destination(np.repeat(start, 16, 0), bearings.ravel(), np.repeat(dist, 16)).numpy().reshape(-1, 16, 2)
    on_land = globe.is_land(cand[..., 0], cand[..., 1])
    pick = np.where(on_land.any(1), on_land.argmax(1), 0)
    site = np.round(cand[np.arange(num_landmarks), pick], 5)
    countries = country_names()
    shapes = [SHAPES[_style(i)[0]] for i in range(num_landmarks)]
    cities = [c["name"][j] for j in order]
    ccs = [c["country_code"][j] for j in order]
    names = [f"the {s} near {city}, {countries.get(cc, (cc,))[0]}" for s, city, cc in zip(shapes, cities, ccs)]
    return pd.DataFrame(
        {
            "landmark": np.arange(num_landmarks),
            "latitude": site[:, 0],
            "longitude": site[:, 1],
            "city": cities,
            "country_code": ccs,
            "shape": shapes,
            "name": names,
        }
    )


def place_landmark_photos(
    latlon: np.ndarray, seed: int, *, landmark_fraction: float, num_landmarks: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Move ``landmark_fraction`` of the photos ``latlon (N, 2)`` to landmark sites.

    Returns the new ``(N, 2)`` coordinates (rounded to 1e-5 degrees) and the landmark id per photo (-1: none).
    """
    if not 0.0 <= landmark_fraction <= 1.0:
        raise ValueError(f"landmark_fraction must be in [0, 1], got {landmark_fraction}")
    n = len(latlon)
    rng = np.random.default_rng([seed, 2])
    ids = np.where(rng.random(n) < landmark_fraction, rng.integers(0, num_landmarks, n), -1)
    dist_km = np.minimum(rng.exponential(0.05, n), 0.3)
    bearing = rng.uniform(0.0, 360.0, n)
    sites = world_landmarks(num_landmarks)[["latitude", "longitude"]].to_numpy()
    on = ids >= 0
    out = np.array(latlon, dtype=np.float64, copy=True)
    if on.any():
        out[on] = destination(sites[ids[on]], bearing[on], dist_km[on]).numpy()
    return np.round(out, 5), ids


def draw_landmarks(
    img: np.ndarray, landmark: np.ndarray, horizon: np.ndarray, bright: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Paint each photo's monument (``landmark[i] >= 0``) onto ``img (N, S, S, 3)`` standing on its horizon."""
    idx = np.flatnonzero(landmark >= 0)
    if len(idx) == 0:
        return img
    s = img.shape[1]
    ys = ((np.arange(s) + 0.5) / s)[None, :, None]
    xs = ((np.arange(s) + 0.5) / s)[None, None, :]
    style = np.array([_style(int(i)) for i in landmark[idx]], dtype=np.float64)
    shape, body, accent, width, height, stripes = (style[:, k] for k in range(6))
    scale = rng.uniform(0.8, 1.2, len(idx))  # camera distance
    w, h = (width * scale)[:, None, None], (height * scale)[:, None, None]
    x0 = rng.uniform(0.2, 0.8, len(idx))[:, None, None] - w / 2
    bottom = np.reshape(horizon, (-1, 1, 1))[idx] + rng.uniform(0.0, 0.1, len(idx))[:, None, None]
    u, v = (xs - x0) / w, (ys - (bottom - h)) / h  # v = 0 at the top of the monument, 1 at its foot
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    k = shape.astype(int)[:, None, None]
    masks = [
        np.ones_like(inside),  # tower
        np.abs(u - 0.5) < 0.5 * v,  # spire
        (v >= 0.5) | ((u - 0.5) ** 2 / 0.25 + ((v - 0.5) / 0.5) ** 2 < 1),  # dome
        ~((np.abs(u - 0.5) < 0.22) & (v > 0.45)),  # arch
        np.abs(u - 0.5) < (np.floor(v * 4) + 1) / 8,  # stepped pyramid
    ]
    mask = inside & np.choose(k, masks)
    band = (np.floor(v * (2 * stripes[:, None, None] + 1)).astype(int) % 2) == 1
    colour = np.where(
        band[..., None], _COLOURS[accent.astype(int)][:, None, None], _COLOURS[body.astype(int)][:, None, None]
    )
    lit = colour * (0.55 + 0.45 * np.ravel(bright)[idx])[:, None, None, None] * (1 + 0.12 * (u < 0.5))[..., None]
    out = img.copy()
    out[idx] = np.where(mask[..., None], lit, img[idx])
    return out


__all__ = ["SHAPES", "draw_landmarks", "place_landmark_photos", "world_landmarks"]
