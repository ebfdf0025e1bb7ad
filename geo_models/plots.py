"""Small PNG line plots drawn with PIL (no plotting library is a dependency): reliability diagrams and learning
curves. Written atomically."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["line_plot"]

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / 4 for i in range(5)]


def line_plot(
    curves: dict[str, list[tuple[float, float]]],
    path: str | os.PathLike,
    *,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_label: str = "",
    y_label: str = "",
    title: str = "",
    dashed: dict[str, list[tuple[float, float]]] | None = None,
    diagonal: bool = False,
    size: tuple[int, int] = (480, 480),
    legend_at: tuple[float, float] | None = None,
    dashed_legend: str | None = None,
) -> Path:
    """One line (with dots) per entry of ``curves`` (``{name: [(x, y), ...]}``), one dashed line per entry of
    ``dashed`` (e.g. a baseline; the k-th in the colour of the k-th curve), optionally the dashed diagonal
    ``y = x``; legend at ``legend_at`` (data coordinates; default top left), the dashed lines named there one by
    one or, with ``dashed_legend``, by that one line. Returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, top, right, bottom = 50, 30, width - 30, height - 50
    (x0, x1), (y0, y1) = x_range, y_range

    def xy(u: float, v: float) -> tuple[float, float]:
        return left + (u - x0) / (x1 - x0) * (right - left), bottom - (v - y0) / (y1 - y0) * (bottom - top)

    def dashes(points, colour):
        for (ua, va), (ub, vb) in zip(points, points[1:]):
            for i in range(0, 20, 2):
                a, b = i / 20, (i + 1) / 20
                draw.line([xy(ua + a * (ub - ua), va + a * (vb - va)), xy(ua + b * (ub - ua), va + b * (vb - va))],
                          fill=colour, width=1)  # fmt: skip

    draw.rectangle([left, top, right, bottom], outline=(80, 80, 80))
    for t in _ticks(x0, x1):
        draw.text((xy(t, y0)[0], bottom + 6), f"{t:g}", fill=(60, 60, 60), font=font, anchor="mt")
    for t in _ticks(y0, y1):
        draw.text((left - 6, xy(x0, t)[1]), f"{t:g}", fill=(60, 60, 60), font=font, anchor="rm")
    if diagonal:
        dashes([(x0, y0), (x1, y1)], (150, 150, 150))
    draw.text((width / 2, height - 8), x_label, fill=(0, 0, 0), font=font, anchor="mb")
    draw.text((4, 12), y_label, fill=(0, 0, 0), font=font, anchor="lm")
    if title:
        draw.text((width / 2, 4), title, fill=(0, 0, 0), font=font, anchor="mt")
    entries = [(k, name, pts, False) for k, (name, pts) in enumerate(curves.items())]
    entries += [(k, name, pts, True) for k, (name, pts) in enumerate((dashed or {}).items())]
    legend_x, legend_y = xy(*legend_at) if legend_at is not None else (left + 8, top + 8)
    row = 0
    for k, name, points, is_dashed in entries:
        colour = COLOURS[k % len(COLOURS)]
        pts = sorted(points)
        if is_dashed:
            dashes(pts, colour)
        else:
            draw.line([xy(u, v) for u, v in pts], fill=colour, width=2)
            for u, v in pts:
                x, y = xy(u, v)
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        if not (is_dashed and dashed_legend):
            label = name + (" (dashed)" if is_dashed else "")
            draw.text((legend_x, legend_y + 14 * row), label, fill=colour, font=font, anchor="lt")
            row += 1
    if dashed_legend and dashed:
        draw.text((legend_x, legend_y + 14 * row), dashed_legend, fill=(60, 60, 60), font=font, anchor="lt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
