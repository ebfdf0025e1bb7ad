"""A clickable map of an area, drawn offline as a PIL image (no tile server, no CDN basemap).

``gr.Plot`` has no click event, so the apps show the map in a ``gr.Image`` whose ``select`` event gives the clicked
pixel; :meth:`MapView.to_latlon` turns it into degrees. The projection is equirectangular with the longitude axis
scaled by ``cos(mid latitude)`` (shapes look right at city scale; plain equirectangular for the world).

Background: the procedural city (``geo_models.data.procedural.city``: island, Central Park, neighbourhoods,
landmarks) where the view is city-sized and overlaps it, else the stored coastlines (``apps/common/coastlines.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OCEAN, LAND, PARK, LINE = (207, 227, 243), (239, 233, 220), (185, 220, 160), (31, 59, 87)
GRID, TEXT, MARKER, AREA, TRAINED = (150, 170, 190), (60, 60, 60), (214, 39, 40), (255, 127, 14), (31, 119, 180)
CITY_MAX_SPAN_DEG = 3.0  # views smaller than this (and overlapping the procedural city) draw the city's features


@dataclass(frozen=True)
class MapView:
    """A lat/lon box drawn on ``width x height`` pixels (north up); pixel ``(0, 0)`` is the north-west corner."""

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    width: int
    height: int

    @property
    def lat_span(self) -> float:
        return self.lat_max - self.lat_min

    @property
    def lon_span(self) -> float:
        return self.lon_max - self.lon_min

    def to_pixel(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Degrees (numbers or arrays) -> pixel ``x, y`` (floats; outside the image when outside the view)."""
        x = (np.asarray(lon, dtype=np.float64) - self.lon_min) / self.lon_span * self.width
        y = (self.lat_max - np.asarray(lat, dtype=np.float64)) / self.lat_span * self.height
        return x, y

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        """The centre of pixel ``(x, y)`` -> ``(lat, lon)`` degrees."""
        lon = self.lon_min + (float(x) + 0.5) / self.width * self.lon_span
        lat = self.lat_max - (float(y) + 0.5) / self.height * self.lat_span
        return lat, lon

    def contains(self, lat: float, lon: float) -> bool:
        return self.lat_min <= lat <= self.lat_max and self.lon_min <= lon <= self.lon_max


def map_view(lat_range, lon_range, *, margin: float = 0.15, width: int = 800) -> MapView:
    """The view of an area ``lat_range = (min, max)``, ``lon_range`` plus ``margin`` (fraction of its span) on each
    side, clipped to the world; the height follows the area's shape (between 0.3 and 1.2 times ``width``)."""
    (lat0, lat1), (lon0, lon1) = sorted(map(float, lat_range)), sorted(map(float, lon_range))
    dlat, dlon = max(lat1 - lat0, 1e-3) * margin, max(lon1 - lon0, 1e-3) * margin
    lat0, lat1 = max(lat0 - dlat, -90.0), min(lat1 + dlat, 90.0)
    lon0, lon1 = max(lon0 - dlon, -180.0), min(lon1 + dlon, 180.0)
    cos_lat = max(math.cos(math.radians((lat0 + lat1) / 2)), 0.2) if lat1 - lat0 < 60 else 1.0
    height = width * (lat1 - lat0) / ((lon1 - lon0) * cos_lat)
    return MapView(lat0, lat1, lon0, lon1, int(width), int(round(min(max(height, 0.3 * width), 1.2 * width))))


@lru_cache(maxsize=4)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _nice_step(span: float, target: int = 6) -> float:
    raw = span / target
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)


def _fmt_deg(value: float, step: float) -> str:
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
    if round(step / 10 ** math.floor(math.log10(step)), 6) == 2.5:  # 0.025, 2.5: one more digit
        decimals += 1
    return f"{value:.{decimals}f}°"


def _polygon(view: MapView, latlon) -> list[tuple[float, float]]:
    pts = np.asarray(latlon, dtype=np.float64)
    x, y = view.to_pixel(pts[:, 0], pts[:, 1])
    return list(zip(x.tolist(), y.tolist()))


def shows_city(view: MapView) -> bool:
    """True when the view is city-sized and overlaps the procedural city (Manhattan)."""
    from geo_models.data.procedural.city import MANHATTAN_BBOX

    lat0, lon0, lat1, lon1 = MANHATTAN_BBOX
    small = max(view.lat_span, view.lon_span) <= CITY_MAX_SPAN_DEG
    return small and view.lat_min < lat1 and view.lat_max > lat0 and view.lon_min < lon1 and view.lon_max > lon0


def _overlaps(box, boxes) -> bool:
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes)


def _fits(box, view: MapView, boxes) -> bool:
    """Inside the image and clear of ``boxes``."""
    inside = box[0] >= 0 and box[1] >= 0 and box[2] <= view.width and box[3] <= view.height
    return inside and not _overlaps(box, boxes)


def city_labels(draw: ImageDraw.ImageDraw, view: MapView) -> list[tuple[str, tuple[float, float], str, tuple]]:
    """Where the city's labels go: ``(text, (x, y), anchor, box)`` of each label drawn, inside the image and none
    overlapping another.

    Landmarks are placed first (right of their marker, else left, above or below); a neighbourhood's name is
    centred on it, nudged up or down by a line when that clears the labels placed so far, else left out: at the
    starter's zoom "Murray Hill" sat on "Empire State Building" (issue 17)."""
    from geo_models.data.procedural.city import LANDMARKS, NEIGHBOURHOODS

    font, placed, boxes = _font(14), [], []
    marks = [(float(x), float(y)) for x, y in (view.to_pixel(m.lat, m.lon) for m in LANDMARKS)]
    boxes += [(x - 6, y - 6, x + 6, y + 6) for x, y in marks]  # the markers themselves stay clear
    for mark, (x, y) in zip(LANDMARKS, marks):
        tries = [((x + 8, y), "lm"), ((x - 8, y), "rm"), ((x, y - 8), "mb"), ((x, y + 8), "mt")]
        for xy, anchor in tries:
            box = draw.textbbox(xy, mark.name, font=font, anchor=anchor)
            if _fits(box, view, boxes):
                placed.append((mark.name, xy, anchor, box))
                boxes.append(box)
                break
    for hood in NEIGHBOURHOODS:
        x, y = (float(v) for v in view.to_pixel(hood.lat, hood.lon))
        for dy in (0, -16, 16):
            box = draw.textbbox((x, y + dy), hood.name, font=font, anchor="mm")
            if _fits(box, view, boxes):
                placed.append((hood.name, (x, y + dy), "mm", box))
                boxes.append(box)
                break
    return placed


def _draw_city(draw: ImageDraw.ImageDraw, view: MapView) -> None:
    from geo_models.data.procedural.city import CENTRAL_PARK_POLYGON, LANDMARKS, MANHATTAN_POLYGON

    draw.polygon(_polygon(view, MANHATTAN_POLYGON), fill=LAND, outline=LINE, width=2)
    draw.polygon(_polygon(view, CENTRAL_PARK_POLYGON), fill=PARK, outline=(90, 140, 70))
    landmarks = {m.name for m in LANDMARKS}
    for mark in LANDMARKS:
        x, y = (float(v) for v in view.to_pixel(mark.lat, mark.lon))
        draw.regular_polygon((x, y, 6), 4, rotation=45, fill=(120, 40, 120))
    for text, xy, anchor, _ in city_labels(draw, view):
        colour = (120, 40, 120) if text in landmarks else (120, 120, 120)
        draw.text(xy, text, fill=colour, font=_font(14), anchor=anchor)


def _draw_coastlines(draw: ImageDraw.ImageDraw, view: MapView) -> None:
    from apps.common.coastlines import load_coastlines

    pad_lat, pad_lon = view.lat_span * 0.05, view.lon_span * 0.05
    for line in load_coastlines():
        lat, lon = line[:, 0], line[:, 1]
        if (lat.max() < view.lat_min - pad_lat or lat.min() > view.lat_max + pad_lat
                or lon.max() < view.lon_min - pad_lon or lon.min() > view.lon_max + pad_lon):  # fmt: skip
            continue
        draw.line(_polygon(view, line), fill=LINE, width=1)


def _draw_grid(draw: ImageDraw.ImageDraw, view: MapView) -> None:
    font = _font(13)
    for axis, lo, hi in (("lat", view.lat_min, view.lat_max), ("lon", view.lon_min, view.lon_max)):
        step = _nice_step(hi - lo)
        for value in np.arange(math.ceil(lo / step) * step, hi + 1e-9, step):
            if axis == "lat":
                _, y = view.to_pixel(value, view.lon_min)
                draw.line([(0, float(y)), (view.width, float(y))], fill=GRID, width=1)
                draw.text((3, float(y) - 2), _fmt_deg(value, step), fill=TEXT, font=font, anchor="ls")
            else:
                x, _ = view.to_pixel(view.lat_min, value)
                draw.line([(float(x), 0), (float(x), view.height)], fill=GRID, width=1)
                draw.text((float(x) + 3, view.height - 3), _fmt_deg(value, step), fill=TEXT, font=font, anchor="ls")


def _box_pixels(view: MapView, box) -> list[float]:
    lat0, lat1, lon0, lon1 = box
    x0, y0 = view.to_pixel(lat1, lon0)
    x1, y1 = view.to_pixel(lat0, lon1)
    return [float(x0), float(y0), float(x1), float(y1)]


def render_map(
    view: MapView,
    *,
    point: tuple[float, float] | None = None,
    area: tuple[float, float, float, float] | None = None,
    trained: tuple[float, float, float, float] | None = None,
    title: str = "",
) -> Image.Image:
    """The map as an RGB image of ``view.width x view.height``.

    Args:
        point: the chosen ``(lat, lon)``: a red marker (clipped to the border when outside the view).
        area: an averaging box ``(lat_min, lat_max, lon_min, lon_max)``: orange, translucent.
        trained: the model's training area, same layout: outlined in blue, the rest of the map greyed.
        title: a caption at the top.
    """
    img = Image.new("RGB", (view.width, view.height), OCEAN)
    draw = ImageDraw.Draw(img)
    if shows_city(view):
        _draw_city(draw, view)
    else:
        _draw_coastlines(draw, view)
    _draw_grid(draw, view)
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    odraw = ImageDraw.Draw(overlay)
    if trained is not None:
        odraw.rectangle([0, 0, view.width, view.height], fill=(90, 90, 90, 60))
        odraw.rectangle(_box_pixels(view, trained), fill=(0, 0, 0, 0))
    if area is not None:
        odraw.rectangle(_box_pixels(view, area), fill=AREA + (70,), outline=AREA + (255,), width=2)
    img = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(img)
    if trained is not None:
        box = _box_pixels(view, trained)
        draw.rectangle(box, outline=TRAINED, width=2)
        draw.text((box[0] + 4, box[1] + 4), "trained area", fill=TRAINED, font=_font(15), anchor="lt")
    if point is not None:
        x, y = (float(v) for v in view.to_pixel(*point))
        x, y = min(max(x, 0.0), view.width - 1.0), min(max(y, 0.0), view.height - 1.0)
        draw.line([(x - 14, y), (x + 14, y)], fill=MARKER, width=2)
        draw.line([(x, y - 14), (x, y + 14)], fill=MARKER, width=2)
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill=MARKER, outline="white", width=2)
    if title:
        font = _font(17)
        draw.text((view.width // 2, 6), title, fill=TEXT, font=font, anchor="mt", stroke_width=3, stroke_fill="white")
    return img
