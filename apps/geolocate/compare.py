"""Compare mode (issue 18): every available geolocator on one photo, their densities on one map.

Each geolocator's answer is a density (``inference._run``'s heatmap: kernel densities for GeoCLIP, LocDiff and
LocDiff-H, the flow's exact likelihood). The map draws, per geolocator, the outline of its 90% highest-density region
(the smallest area holding 90% of its probability, found on its grid) and its best guess; the table gives each one's
best guess, the region's area and, with the photo's GPS, the distance and the density there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from apps.common.geocode import place_names
from apps.common.models import ModelStore
from apps.common.wording import format_latlon
from apps.common.worldmap import map_figure
from apps.geolocate.inference import GEOLOCATORS, GeolocateOptions, _run, unavailable
from geo_models.calibration import hdr_thresholds
from geo_models.sphere import haversine_km
from geo_models.sphere.density import DensityGrid

COMPARE_COLORS = {"GeoCLIP": "#1f77b4", "LocDiff": "#ff7f0e", "LocDiff-H": "#9467bd", "Sphere flow": "#e377c2"}
REGION_LEVEL = 0.9


def _grid(values: np.ndarray) -> DensityGrid:
    """A heatmap (north to south, west to east cell centres) as a DensityGrid of one image."""
    h, w = values.shape
    lats = torch.tensor(90 - (np.arange(h) + 0.5) * 180 / h, dtype=torch.float32)
    lons = torch.tensor(-180 + (np.arange(w) + 0.5) * 360 / w, dtype=torch.float32)
    return DensityGrid(lats, lons, torch.as_tensor(values, dtype=torch.float32)[None])


def _region_outline(values: np.ndarray, threshold: float, name: str, color: str) -> go.Contour:
    """The ``log p >= threshold`` region's outline as a one-level contour on the heatmap's cells."""
    h, w = values.shape
    return go.Contour(z=values[::-1].astype(np.float32), x0=-180 + 180 / w, dx=360 / w, y0=-90 + 90 / h, dy=180 / h,
                      contours=dict(start=threshold, end=threshold, size=1, coloring="lines"), showscale=False,
                      colorscale=[[0, color], [1, color]], line=dict(width=2), name=f"{name}: 90% region",
                      hoverinfo="skip", showlegend=True)  # fmt: skip


def _best_marker(latlon: np.ndarray, name: str, color: str, label: str) -> go.Scatter:
    return go.Scatter(x=[float(latlon[1])], y=[float(latlon[0])], mode="markers", name=f"{name}: best guess",
                      text=[label], hoverinfo="text+name", marker=dict(size=14, symbol="star", color=color,
                      line=dict(width=1, color="white")))  # fmt: skip


def compare(store: ModelStore, image, options: GeolocateOptions | None = None,
            true_latlon: tuple[float, float] | None = None, on_stage=None):  # fmt: skip
    """Run every available geolocator on one PIL image -> (map figure, table, JSON-able result).

    The best guess of each is its top distinct place (as in the single-geolocator view: the app's merged
    candidates); the region is its 90% highest-density region on its own heatmap grid."""
    stage = on_stage or (lambda fraction, description: None)
    opt = (options or GeolocateOptions()).checked()
    names = [n for n in GEOLOCATORS if not unavailable(store, n)]
    if not names:
        raise ValueError("no geolocator is available")
    fig = map_figure(true_latlon=true_latlon)
    rows, records = [], []
    for i, name in enumerate(names):
        stage(i / len(names), f"Running {name} ({i + 1} of {len(names)})")
        res = _run(store.key, image, name, opt)
        values = np.asarray(res["heat"]["values"], dtype=np.float64)
        grid = _grid(values)
        threshold, area = hdr_thresholds(grid, (REGION_LEVEL,))
        best = np.asarray(res["candidates"][0], dtype=np.float64)
        color = COMPARE_COLORS[name]
        place = place_names(best[None])[0]
        fig.add_trace(_region_outline(values, float(threshold[0, 0]), name, color))
        fig.add_trace(_best_marker(best, name, color, f"{place}<br>{format_latlon(*best)}"))
        record = {"geolocator": name, "latitude": float(best[0]), "longitude": float(best[1]), "place": place,
                  "region_90_km2": float(area[0, 0]), "heat_resolution_deg": 180 / values.shape[0]}  # fmt: skip
        row = {"geolocator": name, "best guess": place, "coordinates": format_latlon(*best),
               "90% region (km²)": f"{area[0, 0]:,.0f}"}  # fmt: skip
        if true_latlon is not None:
            d = float(haversine_km(torch.tensor(best), torch.tensor(true_latlon, dtype=torch.float64)))
            record["error_km"] = row["km from photo GPS"] = round(d, 1)
            lat_i = int(np.clip((90 - true_latlon[0]) * values.shape[0] / 180, 0, values.shape[0] - 1))
            lon_i = int(np.clip((true_latlon[1] + 180) * values.shape[1] / 360, 0, values.shape[1] - 1))
            inside = values[lat_i, lon_i] >= float(threshold[0, 0])
            record["photo_gps_in_region"] = row["GPS in 90% region"] = bool(inside)
        rows.append(row)
        records.append(record)
    stage(0.95, "Drawing the map")
    fig.update_layout(height=420, legend=dict(orientation="h", x=0, y=-0.1, font=dict(size=11)))
    result = {"compare": records, "region_level": REGION_LEVEL, "starter_models": store.uses_starter()}
    return fig, pd.DataFrame(rows), result
