"""An orthographic 3D globe drawn with plotly, no basemap download (``scattergeo`` fetches its topojson from a CDN).

A ``go.Surface`` sphere (ocean colour, or a lat/lon heatmap as ``surfacecolor``), coastlines as ``Scatter3d`` lines
and markers for candidates, sample clouds and the true location; the camera looks at ``center``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from apps.common.coastlines import load_coastlines

OCEAN, LAND_LINE = "#dbe9f6", "#1f3b57"
COLORS = {"candidates": "#d62728", "best": "#8b0000", "samples": "#ff7f0e", "true": "#2ca02c"}


def xyz(latlon: np.ndarray, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(..., 2)`` degrees -> x, y, z on a sphere of ``radius`` (NaN rows stay NaN: line breaks)."""
    lat, lon = np.deg2rad(latlon[..., 0]), np.deg2rad(latlon[..., 1])
    return radius * np.cos(lat) * np.cos(lon), radius * np.cos(lat) * np.sin(lon), radius * np.sin(lat)


def _sphere(heat: dict | None, step_deg: float = 2.0) -> go.Surface:
    lats = np.linspace(90, -90, round(180 / step_deg) + 1)
    lons = np.linspace(-180, 180, round(360 / step_deg) + 1)
    grid = np.stack(np.meshgrid(lats, lons, indexing="ij"), -1)
    x, y, z = xyz(grid)
    common = dict(x=x, y=y, z=z, hoverinfo="skip", showscale=False, lighting=dict(ambient=0.9, diffuse=0.2))
    if heat is None:
        return go.Surface(**common, surfacecolor=np.zeros_like(x), colorscale=[[0, OCEAN], [1, OCEAN]], cmin=0, cmax=1)
    values = np.asarray(heat["values"], dtype=np.float64)  # (H, W) at cell centres, north to south, west to east
    h, w = values.shape
    rows = np.clip(((90 - lats) / 180 * h).astype(int), 0, h - 1)
    cols = np.clip(((lons + 180) / 360 * w).astype(int), 0, w - 1)
    color = values[rows][:, cols]
    colorbar = dict(title=dict(text=heat.get("title", ""), side="right"), len=0.6, thickness=12)
    scale = heat.get("colorscale", "Viridis")
    return go.Surface(**{**common, "showscale": True}, surfacecolor=color, colorscale=scale, colorbar=colorbar)


def _coastlines() -> go.Scatter3d:
    lines = load_coastlines()
    sep = np.full((1, 2), np.nan, np.float32)
    pts = np.concatenate([part for line in lines for part in (line, sep)])
    x, y, z = xyz(pts.astype(np.float64), radius=1.003)
    return go.Scatter3d(x=x, y=y, z=z, mode="lines", line=dict(color=LAND_LINE, width=2), hoverinfo="skip",
                        name="coastlines", showlegend=False, connectgaps=False)  # fmt: skip


def _markers(latlon: np.ndarray, name: str, color: str, size: float, text: list[str] | None = None, **kw):
    latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    x, y, z = xyz(latlon, radius=1.015)
    hover = text or [f"{a:.3f}, {b:.3f}" for a, b in latlon]
    return go.Scatter3d(x=x, y=y, z=z, mode="markers", name=name, text=hover, hoverinfo="text+name",
                        marker=dict(size=size, color=color, line=dict(width=1, color="white")), **kw)  # fmt: skip


def globe_figure(
    *,
    candidates: np.ndarray | None = None,
    candidate_labels: list[str] | None = None,
    samples: np.ndarray | None = None,
    true_latlon: tuple[float, float] | None = None,
    heat: dict | None = None,
    center: tuple[float, float] | None = None,
    title: str = "",
) -> go.Figure:
    """The globe figure.

    Args:
        candidates: ``(K, 2)`` latlon, best first (the best one is drawn again, larger, as the "best guess" trace);
            candidate_labels: hover texts.
        samples: ``(S, 2)`` sample cloud of a generative model.
        true_latlon: the photo's GPS position.
        heat: ``{"values": (H, W) array on a north-to-south, west-to-east cell grid, "title", "colorscale"}``.
        center: latlon the camera looks at (default: the best candidate, else (20, 0)).
    """
    traces = [_sphere(heat), _coastlines()]
    if samples is not None and len(samples):
        traces.append(_markers(samples, "samples", COLORS["samples"], 4, opacity=0.8))
    if candidates is not None and len(candidates):
        cands = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
        # scalar marker sizes only: a Scatter3d trace given a per-point size list drew no markers at all (issue 17),
        # so the best guess is a second, larger trace over the candidates
        traces.append(_markers(cands, "candidates", COLORS["candidates"], 6, candidate_labels))
        best_label = candidate_labels[:1] if candidate_labels else None
        traces.append(_markers(cands[:1], "best guess", COLORS["best"], 10, best_label))
        center = center if center is not None else tuple(cands[0])
    if true_latlon is not None:
        traces.append(_markers(np.array(true_latlon), "photo GPS", COLORS["true"], 6, marker_symbol="diamond"))
    lat, lon = center if center is not None else (20.0, 0.0)
    ex, ey, ez = xyz(np.array([lat, lon], dtype=np.float64), radius=2.0)
    hidden = dict(visible=False, showbackground=False, range=[-1.05, 1.05])
    fig = go.Figure(traces)
    fig.update_layout(
        title=dict(text=title, x=0.5) if title else None,
        scene=dict(
            xaxis=hidden,
            yaxis=hidden,
            zaxis=hidden,
            aspectmode="manual",
            aspectratio=dict(x=1.7, y=1.7, z=1.7),  # orthographic zoom: the globe fills the plot
            camera=dict(projection=dict(type="orthographic"), eye=dict(x=float(ex), y=float(ey), z=float(ez))),
        ),
        margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        height=520,
        legend=dict(x=0.01, y=0.99, bgcolor="rgba(255,255,255,0.6)"),
        paper_bgcolor="white",
    )
    return fig
