"""A light 2-D map for geolocation results: the world view and a regional view fitted to the answer.

It replaces a 3-D plotly globe that sent ~1.2 MB of figure per answer and held the browser's main thread for ~20 s
drawing it with WebGL (issue 17). This map is an equirectangular plot in plain SVG/canvas plotly traces: our offline
coastlines (``apps.common.coastlines``, ~6K points, rounded to 0.01 degree) as one line trace, a coarse heatmap
(cells of at least ``HEAT_CELL_DEG``) for densities, and scatter markers with scalar sizes (samples, candidates, the
best guess, the photo's GPS). A figure is a few hundred KB at most.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import plotly.graph_objects as go

from apps.common.coastlines import load_coastlines

LAND_LINE = "#1f3b57"
TEXT_COLOR = "#7d8a97"  # axis labels, legend and colour bar: legible on white and on a dark page
COLORS = {"candidates": "#d62728", "best": "#8b0000", "samples": "#ff7f0e", "true": "#2ca02c"}
HEAT_RANGE_NATS = 8.0  # cells more than this below the densest one (e^-8 ~ 3e-4 of its density) are not drawn
HEAT_CELL_DEG = 3.0  # the heatmap's cells are at least this coarse: fine enough to read, light to send
MIN_REGION_DEG = 1.0  # the regional view spans at least this many degrees of latitude
REGION_ASPECT = 1.6  # the regional view is at least this much wider than tall, on screen
VIEWS = ("world", "region")


@lru_cache(maxsize=1)
def _coast_points() -> np.ndarray:
    """All coastline polylines in one ``(P, 2)`` latlon array, NaN rows between them, rounded to 0.01 degree: built
    once, not for each map (callers only read it)."""
    sep = np.full((1, 2), np.nan, np.float32)
    pts = np.concatenate([part for line in load_coastlines() for part in (line, sep)]).astype(np.float64).round(2)
    pts.flags.writeable = False
    return pts


def _coastlines(box: tuple[float, float, float, float] | None = None) -> go.Scatter:
    """The coastlines as one line trace (NaN rows break it); with ``box`` (lat0, lat1, lon0, lon1) only the points
    within it (plus a margin), so a regional figure does not carry the whole world."""
    pts = _coast_points()
    if box is not None:
        lat0, lat1, lon0, lon1 = box
        m = 0.1 * max(lat1 - lat0, lon1 - lon0)
        inside = (pts[:, 0] >= lat0 - m) & (pts[:, 0] <= lat1 + m) & (pts[:, 1] >= lon0 - m) & (pts[:, 1] <= lon1 + m)
        pts = np.where(inside[:, None], pts, np.nan)
        keep = ~np.isnan(pts[:, 0])
        keep[1:] |= keep[:-1]  # one NaN after each kept run breaks the line; runs of NaN collapse
        pts = pts[keep]
    pts = pts.astype(np.float32)  # sent as typed binary: float32 holds 0.01 degree exactly enough, half the bytes
    return go.Scatter(x=pts[:, 1], y=pts[:, 0], mode="lines", line=dict(color=LAND_LINE, width=1), hoverinfo="skip",
                      name="coastlines", showlegend=False, connectgaps=False)  # fmt: skip


def _coarse(values: np.ndarray, cell_deg: float) -> np.ndarray:
    """``(H, W)`` cells over the globe, averaged in blocks (NaN cells, not solved, left out) while a block stays
    within ``cell_deg``: finer grids are coarsened to about ``cell_deg``, coarser ones kept."""
    h, w = values.shape
    factor = max(1, math.floor(cell_deg / (180.0 / h) + 1e-9))
    while h % factor or w % factor:  # the largest block size <= factor that tiles the grid
        factor -= 1
    if factor == 1:
        return values
    blocks = values.reshape(h // factor, factor, w // factor, factor)
    with warnings.catch_warnings():  # an all-NaN block stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def _heatmap(heat: dict, box: tuple[float, float, float, float] | None = None) -> go.Heatmap:
    values = _coarse(np.asarray(heat["values"], dtype=np.float64), HEAT_CELL_DEG)  # north to south, west to east
    h, w = values.shape
    lats = 90 - (np.arange(h) + 0.5) * 180 / h
    lons = -180 + (np.arange(w) + 0.5) * 360 / w
    if box is not None:  # the cells that reach into the box
        lat0, lat1, lon0, lon1 = box
        half_lat, half_lon = 90 / h, 180 / w
        rows = (lats + half_lat >= lat0) & (lats - half_lat <= lat1)
        cols = (lons + half_lon >= lon0) & (lons - half_lon <= lon1)
        if rows.any() and cols.any():
            values, lats, lons = values[rows][:, cols], lats[rows], lons[cols]
    if np.isfinite(values).any():  # the far tail is left transparent: the map stays readable under a density
        values = np.where(values >= np.nanmax(values) - HEAT_RANGE_NATS, values, np.nan)
    colorbar = dict(title=dict(text=heat.get("title", ""), side="right"), len=0.8, thickness=12)
    # cell centres as a start and a step: with one row or column in a small region, plotly cannot infer the cell
    # size from x/y arrays and draws nothing
    # float32: plotly sends numpy arrays as typed binary, so 4 bytes a cell instead of 8 (a log-density to 1e-7)
    return go.Heatmap(z=values[::-1].astype(np.float32), x0=float(lons[0]), dx=360 / w, y0=float(lats[-1]), dy=180 / h,
                      colorscale=heat.get("colorscale", "Viridis"), showscale=True, colorbar=colorbar, opacity=0.75,
                      hoverinfo="skip", name="density", zsmooth=False)  # fmt: skip


def _markers(latlon, name: str, color: str, size: float, text=None, symbol: str = "circle", line_width: float = 1,
             **kw) -> go.Scatter:  # fmt: skip
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    hover = text or [f"{a:.3f}, {b:.3f}" for a, b in latlon]
    return go.Scatter(x=latlon[:, 1].round(5), y=latlon[:, 0].round(5), mode="markers", name=name, text=hover,
                      hoverinfo="text+name", marker=dict(size=size, color=color, symbol=symbol,
                      line=dict(width=line_width, color="white")), **kw)  # fmt: skip


def region_bounds(points: np.ndarray, pad: float = 0.25) -> tuple[float, float, float, float]:
    """``(lat_min, lat_max, lon_min, lon_max)`` around ``points (N, 2)`` with ``pad`` of the span on each side, at
    least ``MIN_REGION_DEG`` tall, at least ``REGION_ASPECT`` times as wide as tall on the map (so it fills its
    panel); the dateline is not wrapped
    (points on both sides of it give a wide view)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lat_lo, lat_hi = pts[:, 0].min(), pts[:, 0].max()
    lon_lo, lon_hi = pts[:, 1].min(), pts[:, 1].max()
    span_lat = max(lat_hi - lat_lo, MIN_REGION_DEG) * (1 + 2 * pad)
    mid_lat, mid_lon = (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2
    stretch = 1 / max(math.cos(math.radians(mid_lat)), 0.2)  # a degree of longitude is shorter away from the equator
    span_lon = max((lon_hi - lon_lo) * (1 + 2 * pad), REGION_ASPECT * span_lat * stretch)
    lat0, lat1 = max(-90.0, mid_lat - span_lat / 2), min(90.0, mid_lat + span_lat / 2)
    lon0, lon1 = max(-180.0, mid_lon - span_lon / 2), min(180.0, mid_lon + span_lon / 2)
    return lat0, lat1, lon0, lon1


def map_figure(
    *,
    candidates: np.ndarray | None = None,
    candidate_labels: list[str] | None = None,
    samples: np.ndarray | None = None,
    true_latlon: tuple[float, float] | None = None,
    heat: dict | None = None,
    view: str = "world",
    title: str = "",
) -> go.Figure:
    """The map figure.

    Args:
        candidates: ``(K, 2)`` latlon, best first (the best one is drawn again, larger, as the "best guess" trace).
        candidate_labels: hover texts of the candidates.
        samples: ``(S, 2)`` sample cloud of a generative model.
        true_latlon: the photo's GPS position.
        heat: ``{"values": (H, W) on a north-to-south, west-to-east cell grid over the globe, "title", "colorscale"}``;
            drawn at cells of at least ``HEAT_CELL_DEG`` degrees.
        view: ``"world"`` or ``"region"`` (fitted to the candidates and the true location, with the samples that lie
            within 2,000 km of the best guess).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    focus = []
    markers = []
    if samples is not None and len(samples):
        markers.append(_markers(samples, "samples", COLORS["samples"], 5, opacity=0.7))
    if candidates is not None and len(candidates):
        cands = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
        markers.append(_markers(cands, "candidates", COLORS["candidates"], 9, candidate_labels))
        best_label = candidate_labels[:1] if candidate_labels else None
        best = _markers(cands[:1], "best guess", COLORS["best"], 15, best_label, symbol="star")
        focus.append(cands)
        if samples is not None and len(samples):
            import torch

            from geo_models.sphere import haversine_km  # imports torch: only when drawing a region

            pts = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
            near = haversine_km(torch.from_numpy(pts), torch.from_numpy(cands[0])).numpy() <= 2000
            focus.append(pts[near])
    if true_latlon is not None:
        # an open diamond: a good best guess lies under it at world scale, and its star must still show (issue 17)
        true_marker = _markers(np.array(true_latlon), "photo GPS", COLORS["true"], 17, symbol="diamond-open",
                               line_width=2.5)  # fmt: skip
        markers.append(true_marker)
        focus.append(np.asarray(true_latlon, dtype=np.float64).reshape(1, 2))
    box = region_bounds(np.concatenate(focus)) if view == "region" and focus else None
    lat0, lat1, lon0, lon1 = box or (-90.0, 90.0, -180.0, 180.0)
    if candidates is not None and len(candidates):
        markers.append(best)  # drawn last: on top of everything
    traces = ([_heatmap(heat, box)] if heat is not None else []) + [_coastlines(box)] + markers
    fig = go.Figure(traces)
    fig.update_layout(
        title=dict(text=title, x=0.5) if title else None,
        # constrain="domain": keeping the aspect ratio shrinks the plot area instead of widening the ranges
        xaxis=dict(range=[lon0, lon1], showgrid=False, zeroline=False, title=None, ticksuffix="°", constrain="domain"),
        yaxis=dict(range=[lat0, lat1], showgrid=False, zeroline=False, title=None, ticksuffix="°", constrain="domain",
                   scaleanchor="x", scaleratio=1 / max(math.cos(math.radians((lat0 + lat1) / 2)), 0.2)),
        margin=dict(l=30, r=10, t=30 if title else 8, b=20),
        height=360 if view == "world" else 320,
        legend=dict(orientation="h", x=0, y=-0.08),
        plot_bgcolor="#dbe9f6",
        # a transparent paper and mid-grey text read on the page's light and dark themes alike
        paper_bgcolor="rgba(0,0,0,0)",
        font=dict(color=TEXT_COLOR),
        dragmode="pan",
    )  # fmt: skip
    return fig
