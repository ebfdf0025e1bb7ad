"""Procedural street-level "photos" of a city bounding box (default Manhattan) with captions.

The map is hand-written and APPROXIMATE (a dozen-vertex island, a 4-corner Central Park, neighbourhood seed points
whose Voronoi cells set the building style, and a few landmarks): good enough for learning "where in the city"
at a few hundred metres, not a GIS. Everything outside the island polygon is drawn as river/harbour water, so a
``bbox`` away from Manhattan gives water only. Same seed -> byte-identical images and ``metadata.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from geo_models.data.procedural.common import check_count, check_image_size, check_seed, to_uint8, write_imagefolder
from geo_models.sphere import destination, haversine_km

MANHATTAN_BBOX = (40.68, -74.05, 40.88, -73.90)  # (lat_min, lon_min, lat_max, lon_max), degrees
# (lat, lon), clockwise from the Battery up the Hudson shore, round Inwood and down the Harlem / East River.
MANHATTAN_POLYGON = (
    (40.7003, -74.0161),
    (40.7130, -74.0190),
    (40.7420, -74.0100),
    (40.7720, -73.9940),
    (40.8000, -73.9720),
    (40.8350, -73.9490),
    (40.8700, -73.9300),
    (40.8780, -73.9130),
    (40.8350, -73.9340),
    (40.8000, -73.9290),
    (40.7750, -73.9430),
    (40.7580, -73.9580),
    (40.7280, -73.9720),
    (40.7110, -73.9770),
    (40.7070, -73.9980),
    (40.7010, -74.0110),
)
CENTRAL_PARK_POLYGON = ((40.7644, -73.9730), (40.7681, -73.9819), (40.8006, -73.9582), (40.7968, -73.9492))


class Neighbourhood(NamedTuple):
    name: str
    lat: float
    lon: float
    facade: tuple[float, float, float]  # RGB in [0, 1]
    height: float  # building height as a fraction of the sky above the street
    window: tuple[float, float, float]
    windows: int  # window columns per building
    trees: float  # street trees per image (expected)


NEIGHBOURHOODS = (
    Neighbourhood("Financial District", 40.7075, -74.0090, (0.55, 0.60, 0.68), 0.95, (0.70, 0.82, 0.95), 5, 0.0),
    Neighbourhood("Tribeca", 40.7180, -74.0090, (0.55, 0.30, 0.22), 0.45, (0.15, 0.12, 0.10), 3, 0.3),
    Neighbourhood("SoHo", 40.7233, -74.0020, (0.78, 0.74, 0.66), 0.40, (0.20, 0.22, 0.25), 3, 0.3),
    Neighbourhood("Chinatown", 40.7158, -73.9970, (0.70, 0.62, 0.50), 0.35, (0.85, 0.15, 0.12), 2, 0.0),
    Neighbourhood("Lower East Side", 40.7170, -73.9860, (0.62, 0.35, 0.25), 0.35, (0.12, 0.12, 0.14), 3, 0.5),
    Neighbourhood("Greenwich Village", 40.7336, -74.0027, (0.50, 0.30, 0.24), 0.30, (0.95, 0.90, 0.75), 2, 2.0),
    Neighbourhood("East Village", 40.7265, -73.9815, (0.58, 0.42, 0.35), 0.35, (0.20, 0.18, 0.16), 3, 1.0),
    Neighbourhood("Chelsea", 40.7465, -74.0014, (0.48, 0.40, 0.40), 0.45, (0.25, 0.25, 0.28), 4, 0.5),
    Neighbourhood("Midtown", 40.7549, -73.9840, (0.62, 0.64, 0.66), 1.0, (0.95, 0.90, 0.60), 6, 0.0),
    Neighbourhood("Murray Hill", 40.7479, -73.9757, (0.72, 0.66, 0.58), 0.60, (0.30, 0.30, 0.32), 4, 0.5),
    Neighbourhood("Hell's Kitchen", 40.7638, -73.9918, (0.55, 0.38, 0.30), 0.50, (0.20, 0.20, 0.20), 3, 0.3),
    Neighbourhood("Upper West Side", 40.7870, -73.9754, (0.66, 0.56, 0.44), 0.55, (0.22, 0.22, 0.25), 4, 1.5),
    Neighbourhood("Upper East Side", 40.7736, -73.9566, (0.85, 0.82, 0.74), 0.60, (0.25, 0.25, 0.30), 4, 1.5),
    Neighbourhood("Harlem", 40.8116, -73.9465, (0.45, 0.26, 0.20), 0.35, (0.12, 0.12, 0.12), 2, 1.5),
    Neighbourhood("Washington Heights", 40.8417, -73.9394, (0.60, 0.45, 0.36), 0.45, (0.18, 0.18, 0.20), 3, 1.0),
    Neighbourhood("Inwood", 40.8677, -73.9212, (0.55, 0.50, 0.40), 0.35, (0.18, 0.18, 0.20), 3, 3.0),
)


class Landmark(NamedTuple):
    name: str
    lat: float
    lon: float
    radius_m: float  # drawn (and captioned) when the camera is this close
    text: str


LANDMARKS = (
    Landmark("Empire State Building", 40.7484, -73.9857, 300, "A photo of the Empire State Building"),
    Landmark("Statue of Liberty", 40.6892, -74.0445, 400, "A photo of the Statue of Liberty"),
    Landmark("Brooklyn Bridge", 40.7061, -73.9969, 400, "A photo of the Brooklyn Bridge"),
    Landmark("Flatiron Building", 40.7411, -73.9897, 200, "A photo of the Flatiron Building"),
    Landmark("Central Park Reservoir", 40.7851, -73.9627, 350, "A photo of the Central Park Reservoir"),
    Landmark("Times Square", 40.7580, -73.9855, 200, "A photo of Times Square"),
    Landmark("One World Trade Center", 40.7127, -74.0134, 300, "A photo of One World Trade Center"),
)


def points_in_polygon(latlon: np.ndarray, polygon) -> np.ndarray:
    """Even-odd rule on plain lat/lon (fine at city scale): ``(N, 2)`` points, ``(V, 2)`` polygon -> ``(N,)``."""
    y, x = latlon[:, :1], latlon[:, 1:]
    p = np.asarray(polygon, dtype=np.float64)
    y0, x0, y1, x1 = p[:, 0], p[:, 1], np.roll(p[:, 0], -1), np.roll(p[:, 1], -1)
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never count as crossings
        cross = ((y0 > y) != (y1 > y)) & (x < x0 + (x1 - x0) * (y - y0) / (y1 - y0))
    return cross.sum(1) % 2 == 1


def check_bbox(bbox) -> tuple[float, float, float, float]:
    try:
        b = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bbox must be 4 numbers (lat_min, lon_min, lat_max, lon_max), got {bbox!r}") from err
    if len(b) != 4 or not np.isfinite(b).all() or not (-90 <= b[0] < b[2] <= 90 and -180 <= b[1] < b[3] <= 180):
        raise ValueError(
            f"bbox must be (lat_min, lon_min, lat_max, lon_max) with -90 <= lat_min < lat_max <= 90 "
            f"and -180 <= lon_min < lon_max <= 180, got {bbox!r}"
        )
    return b


# Captions that say what a photo shows but not where (``captions="generic"``): with them the location comes from the
# GPS alone, so a GPS-to-image model's "GPS zeroed" ablation really lacks it (the neighbourhood names of the default
# captions set the building style).
GENERIC_CAPTIONS = {
    "street": "A street in Manhattan",
    "park": "A photo of a park in Manhattan",
    "landmark": "A photo of a landmark in Manhattan",
    "water": "A photo of the water around Manhattan",
}
CAPTION_STYLES = ("location", "generic")


def describe_city_locations(latlon: np.ndarray) -> pd.DataFrame:
    """``latlon (N, 2)`` -> columns ``kind`` (landmark/park/street/water), ``name``, ``text`` (the caption)."""
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    marks = np.array([[m.lat, m.lon] for m in LANDMARKS])
    d_m = haversine_km(latlon[:, None], marks[None]).numpy() * 1000 / [m.radius_m for m in LANDMARKS]
    hoods = np.array([[h.lat, h.lon] for h in NEIGHBOURHOODS])
    hood = haversine_km(latlon[:, None], hoods[None]).numpy().argmin(1)  # Voronoi cell
    island, park = points_in_polygon(latlon, MANHATTAN_POLYGON), points_in_polygon(latlon, CENTRAL_PARK_POLYGON)
    centre_lon = -74.013 + (latlon[:, 0] - 40.700) * 0.52  # the island's axis: west of it is the Hudson
    rows = []
    for i, (lat, lon) in enumerate(latlon):
        if d_m[i].min() <= 1:
            m = LANDMARKS[int(d_m[i].argmin())]
            rows.append(("landmark", m.name, m.text))
        elif park[i]:
            rows.append(("park", "Central Park", "A photo of Central Park"))
        elif island[i]:
            name = NEIGHBOURHOODS[hood[i]].name
            rows.append(("street", name, f"A street in {name}, Manhattan"))
        else:
            river = (
                "New York Harbor"
                if lat < 40.700
                else "the Hudson River"
                if lon < centre_lon[i]
                else "the Harlem River"
                if lat > 40.800
                else "the East River"
            )
            rows.append(("water", river, "The " + river[4:] if river.startswith("the ") else river))
    return pd.DataFrame(rows, columns=["kind", "name", "text"])


def sample_city_locations(num_images: int, seed: int = 0, *, bbox=MANHATTAN_BBOX) -> np.ndarray:
    """``(num_images, 2)`` latlon in ``bbox``: ~20% near landmarks, ~65% on the island, the rest anywhere."""
    check_count(num_images, "num_images")
    check_seed(seed)
    lat0, lon0, lat1, lon1 = check_bbox(bbox)
    rng = np.random.default_rng([seed, 0])
    kind = rng.random(num_images)
    pts = np.stack([rng.uniform(lat0, lat1, num_images), rng.uniform(lon0, lon1, num_images)], -1)
    # Tourists: photos cluster around the landmarks inside the box.
    marks = [m for m in LANDMARKS if lat0 <= m.lat <= lat1 and lon0 <= m.lon <= lon1]
    if marks:
        pick = [marks[j] for j in rng.integers(0, len(marks), num_images)]
        start = np.array([[m.lat, m.lon] for m in pick])
        dist = np.array([m.radius_m for m in pick]) * 0.9e-3 * np.sqrt(rng.random(num_images))
        near = destination(start, rng.uniform(0, 360, num_images), dist).numpy()
        pts = np.where((kind < 0.2)[:, None], near, pts)
    # Street photos: rejection-sample the island within the box (skipped if the box misses the island).
    want = np.flatnonzero((kind >= 0.2) & (kind < 0.85))
    for _ in range(50):
        if not len(want):
            break
        cand = np.stack([rng.uniform(lat0, lat1, 4 * len(want)), rng.uniform(lon0, lon1, 4 * len(want))], -1)
        cand = cand[points_in_polygon(cand, MANHATTAN_POLYGON)][: len(want)]
        pts[want[: len(cand)]] = cand
        want = want[len(cand) :]
    return np.round(np.clip(pts, [lat0, lon0], [lat1, lon1]), 6)


# ------------------------------------------------------------------------------------------------- drawing
class _Canvas:
    """A float RGB image with fractional coordinates (x right, y down, both in [0, 1])."""

    def __init__(self, s: int, rng: np.random.Generator, horizon: float):
        self.s, self.rng, self.horizon = s, rng, horizon
        self.ys, self.xs = (np.arange(s)[:, None] + 0.5) / s, (np.arange(s)[None, :] + 0.5) / s
        tod = rng.choice(3, p=[0.75, 0.15, 0.10])  # day, dusk, overcast: nuisance
        top, low = [
            ((0.20, 0.45, 0.85), (0.70, 0.82, 0.95)),
            ((0.30, 0.30, 0.55), (0.95, 0.65, 0.40)),
            ((0.60, 0.62, 0.65), (0.78, 0.78, 0.80)),
        ][tod]
        t = np.clip(self.ys / horizon, 0, 1)[..., None]
        self.img = np.broadcast_to(np.array(top) * (1 - t) + np.array(low) * t, (s, s, 3)).copy()

    def rect(self, x0, y0, x1, y1, colour):
        m = (self.xs >= x0) & (self.xs < x1) & (self.ys >= y0) & (self.ys < y1)
        self.img[m] = colour
        return m

    def trapezoid(self, cx, y0, y1, half_top, half_bottom, colour):
        half = half_top + (half_bottom - half_top) * np.clip((self.ys - y0) / (y1 - y0), 0, 1)
        self.img[(np.abs(self.xs - cx) < half) & (self.ys >= y0) & (self.ys < y1)] = colour

    def disc(self, cx, cy, r, colour):
        self.img[(self.xs - cx) ** 2 + (self.ys - cy) ** 2 < r * r] = colour

    def line(self, x0, y0, x1, y1, width, colour):
        d = np.array([x1 - x0, y1 - y0])
        t = np.clip(((self.xs - x0) * d[0] + (self.ys - y0) * d[1]) / max(d @ d, 1e-12), 0, 1)
        self.img[np.hypot(self.xs - x0 - t * d[0], self.ys - y0 - t * d[1]) < width] = colour

    def buildings(self, style: Neighbourhood, scale: float = 1.0):
        rng = self.rng
        x = rng.uniform(-0.15, 0)
        while x < 1:
            w = rng.uniform(0.12, 0.3)
            top = self.horizon * (1 - style.height * scale * rng.uniform(0.5, 1.0))
            m = self.rect(x, top, x + w - 0.01, self.horizon, np.array(style.facade) * rng.uniform(0.85, 1.15, 3))
            grid = (((self.xs - x) / w * style.windows) % 1 < 0.45) & (((self.ys - top) * self.s / 3) % 1 < 0.5)
            self.img[m & grid] = np.array(style.window) * rng.uniform(0.7, 1.1)
            x += w

    def street(self, style: Neighbourhood):
        self.buildings(style)
        h = self.horizon
        self.rect(0, h, 1, 1, (0.30, 0.30, 0.32))
        self.rect(0, h, 1, h + 0.05, (0.55, 0.55, 0.55))  # sidewalk
        for _ in range(self.rng.poisson(style.trees)):
            self.disc(self.rng.uniform(0, 1), h - 0.05, self.rng.uniform(0.06, 0.12), (0.15, 0.40, 0.15))
        if self.rng.random() < 0.5:  # a yellow cab
            x = self.rng.uniform(0, 0.8)
            self.rect(x, h + 0.1, x + 0.2, h + 0.18, (0.95, 0.80, 0.10))

    def park(self):
        self.buildings(NEIGHBOURHOODS[12], scale=0.5)  # the skyline behind the trees
        self.rect(0, self.horizon, 1, 1, (0.25, 0.50, 0.20))
        for _ in range(12):
            self.disc(self.rng.uniform(0, 1), self.horizon - 0.02, self.rng.uniform(0.05, 0.1), (0.12, 0.35, 0.12))
        self.trapezoid(self.rng.uniform(0.3, 0.7), self.horizon + 0.05, 1, 0.01, 0.15, (0.80, 0.72, 0.55))

    def water(self, shore_height: float = 0.15):
        far = Neighbourhood("", 0, 0, (0.45, 0.45, 0.50), shore_height, (0.3, 0.3, 0.35), 3, 0)
        self.buildings(far)
        ripple = 1 + 0.1 * np.sin(self.ys * self.s * 2.0)[..., None]
        below = self.ys[:, 0] >= self.horizon
        self.img[below] = np.array([0.15, 0.30, 0.42]) * ripple[below]
        if self.rng.random() < 0.3:
            x = self.rng.uniform(0, 0.8)
            self.rect(x, self.horizon + 0.08, x + 0.15, self.horizon + 0.12, (0.95, 0.95, 0.95))


def _draw_landmark(c: _Canvas, name: str, closeness: float):
    cx, k, h = c.rng.uniform(0.3, 0.7), 0.6 + 0.4 * closeness, c.horizon
    if name == "Empire State Building":
        c.street(NEIGHBOURHOODS[8])
        stone = (0.80, 0.76, 0.64)
        c.rect(cx - 0.16 * k, h - 0.35 * k, cx + 0.16 * k, h, stone)
        c.rect(cx - 0.10 * k, h - 0.65 * k, cx + 0.10 * k, h, stone)
        c.rect(cx - 0.05 * k, h - 0.8 * k, cx + 0.05 * k, h, (0.85, 0.82, 0.70))
        c.line(cx, h - 0.8 * k, cx, max(h - 1.0 * k, 0.02), 0.012, (0.90, 0.90, 0.92))
    elif name == "One World Trade Center":
        c.street(NEIGHBOURHOODS[0])
        c.trapezoid(cx, max(h - 0.95 * k, 0.05), h, 0.04 * k, 0.14 * k, (0.55, 0.72, 0.88))
        c.line(cx, max(h - 0.95 * k, 0.05), cx, 0.0, 0.008, (0.85, 0.85, 0.85))
    elif name == "Flatiron Building":
        c.street(NEIGHBOURHOODS[7])
        top = h - 0.7 * k
        c.rect(cx - 0.18 * k, top, cx, h, (0.88, 0.80, 0.62))
        c.rect(cx, top, cx + 0.12 * k, h, (0.70, 0.62, 0.48))
        c.img[(np.abs(c.xs - cx) < 0.18 * k) & (c.ys > top) & (c.ys < h) & (((c.ys - top) * c.s / 2) % 1 < 0.4)] *= 0.6
    elif name == "Times Square":
        c.street(NEIGHBOURHOODS[8])
        for _ in range(10):
            x, y = c.rng.uniform(0, 0.9), c.rng.uniform(0.1, h - 0.1)
            c.rect(
                x,
                y,
                x + c.rng.uniform(0.08, 0.2),
                y + c.rng.uniform(0.05, 0.15),
                c.rng.choice([0.0, 1.0], 3) * 0.7 + 0.3,
            )
    elif name == "Statue of Liberty":
        c.water(0.08)
        c.rect(cx - 0.08 * k, h - 0.25 * k, cx + 0.08 * k, h, (0.62, 0.56, 0.45))
        c.trapezoid(cx, h - 0.6 * k, h - 0.25 * k, 0.03 * k, 0.07 * k, (0.45, 0.70, 0.60))
        c.disc(cx, h - 0.63 * k, 0.035 * k, (0.45, 0.70, 0.60))
        c.line(cx + 0.05 * k, h - 0.5 * k, cx + 0.07 * k, h - 0.8 * k, 0.015, (0.45, 0.70, 0.60))
        c.disc(cx + 0.07 * k, h - 0.82 * k, 0.025, (0.95, 0.75, 0.20))
    elif name == "Brooklyn Bridge":
        c.water(0.2)
        deck = h + 0.05
        for tx in (cx - 0.25, cx + 0.25):
            c.rect(tx - 0.06, h - 0.45 * k, tx + 0.06, deck + 0.1, (0.62, 0.52, 0.40))
            for ax in (tx - 0.03, tx + 0.03):
                c.rect(ax - 0.012, h - 0.3 * k, ax + 0.012, deck, (0.25, 0.22, 0.20))
            for end in (tx - 0.35, tx + 0.35):
                c.line(tx, h - 0.45 * k, end, deck, 0.006, (0.30, 0.30, 0.30))
        c.rect(0, deck, 1, deck + 0.03, (0.35, 0.30, 0.28))
    else:  # Central Park Reservoir
        c.park()
        c.rect(0, h + 0.02, 1, h + 0.25, (0.30, 0.45, 0.62))
        c.rect(0, h + 0.25, 1, h + 0.27, (0.35, 0.35, 0.35))  # the fence


def render_city_image(lat: float, lon: float, rng: np.random.Generator | None = None, image_size: int = 64):
    """One procedural photo of ``(lat, lon)`` as a ``PIL.Image``."""
    latlon = np.array([[lat, lon]], dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng()
    return Image.fromarray(_render(latlon[0], describe_city_locations(latlon).iloc[0], rng, image_size))


def _render(latlon, row, rng: np.random.Generator, image_size: int) -> np.ndarray:
    c = _Canvas(check_image_size(image_size), rng, rng.uniform(0.55, 0.72))
    if row["kind"] == "landmark":
        m = next(m for m in LANDMARKS if m.name == row["name"])
        d = float(haversine_km(latlon, [m.lat, m.lon])) * 1000 / m.radius_m
        _draw_landmark(c, m.name, 1 - d)
    elif row["kind"] == "park":
        c.park()
    elif row["kind"] == "street":
        c.street(next(h for h in NEIGHBOURHOODS if h.name == row["name"]))
    else:
        c.water()
    img = c.img * np.exp(rng.normal(0, 0.15)) * rng.normal(1, 0.04, 3)  # exposure, white balance
    return to_uint8(img + rng.normal(0, 0.03, img.shape))


def generate_city(
    output_dir: str | Path,
    num_images: int = 500,
    *,
    bbox=MANHATTAN_BBOX,
    image_size: int = 64,
    seed: int = 0,
    captions: str = "location",
    progress: bool = True,
) -> pd.DataFrame:
    """Write ``num_images`` city photos as an imagefolder (``images/``, ``metadata.csv`` with ``file_name,
    latitude, longitude, text, kind, name, location_text``, ``dataset_info.json``) and return the metadata.

    ``captions``: ``"location"`` (default) names the place ("A street in SoHo, Manhattan"); ``"generic"`` only says
    what the photo shows (:data:`GENERIC_CAPTIONS`). ``location_text`` always holds the place caption."""
    if captions not in CAPTION_STYLES:
        raise ValueError(f"captions must be one of {CAPTION_STYLES}, got {captions!r}")
    check_count(num_images, "num_images")
    check_image_size(image_size)
    bbox = check_bbox(bbox)
    latlon = sample_city_locations(num_images, seed, bbox=bbox)
    desc = describe_city_locations(latlon)
    rng = np.random.default_rng([seed, 1])
    batches = (_render(latlon[i], desc.iloc[i], rng, image_size)[None] for i in range(num_images))
    meta = pd.DataFrame(
        {
            "latitude": latlon[:, 0],
            "longitude": latlon[:, 1],
            "text": desc["text"] if captions == "location" else desc["kind"].map(GENERIC_CAPTIONS),
            "kind": desc["kind"],
            "name": desc["name"],
            "location_text": desc["text"],
        }
    )
    kinds = {k: int(v) for k, v in desc["kind"].value_counts().sort_index().items()}
    info = {
        "generator": "geo_models.data.procedural.generate_city",
        "seed": seed,
        "image_size": image_size,
        "captions": captions,
        "bbox": list(bbox),
        "counts": {"images": num_images, **kinds},
    }
    return write_imagefolder(output_dir, meta, batches, info, progress=progress, desc="city images")
