"""Is a geolocator's density honest? Negative log-likelihood and coverage of its highest-density regions.

For each test image the model gives a density ``p`` on the sphere (a :class:`~geo_models.sphere.density.DensityGrid`)
and the log-density of the true location. The highest-density region at level ``a`` is the smallest set
``{x : p(x) >= t_a}`` holding mass ``a`` (found on the grid: cells sorted by density, mass accumulated). A calibrated
model's true locations fall inside it a fraction ``a`` of the time; its area (km², median over images) says how sharp
the model is. Well calibrated (issue 18): coverage within 3 points of nominal at 50/90/95%. A reliability plot draws
empirical against nominal coverage at 5%-steps.

Example:
    >>> acc = CalibrationAccumulator()  # doctest: +SKIP
    >>> acc.add(model.density_grid(image_embeddings=x, resolution_deg=1.0), model.log_prob(y, image_embeddings=x))
    >>> acc.metrics()["coverage_90"], reliability_plot(acc, "reliability.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from geo_models.sphere import EARTH_RADIUS_KM
from geo_models.sphere.density import DensityGrid

__all__ = ["CalibrationAccumulator", "LEVELS", "RELIABILITY_LEVELS", "hdr_thresholds", "reliability_plot"]

LEVELS = (0.5, 0.9, 0.95)
RELIABILITY_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95
WELL_CALIBRATED_POINTS = 3.0


def hdr_thresholds(grid: DensityGrid, levels=LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest-density regions of each image's grid -> ``(log-density thresholds (N, L), areas (N, L) in km²)``.

    The grid's cell masses are renormalised to 1 first (quadrature error of the grid must not move the regions)."""
    logp = grid.log_density.double().flatten(1)  # (N, C)
    area = grid.cell_areas().double().flatten()  # (C,)
    order = logp.argsort(dim=1, descending=True)
    sorted_logp = logp.gather(1, order)
    mass = (sorted_logp.exp() * area[order]).cumsum(dim=1)
    mass = mass / mass[:, -1:]
    cum_area = area[order].cumsum(dim=1)
    levels_t = torch.tensor(levels, dtype=torch.float64)
    idx = torch.searchsorted(mass.contiguous(), levels_t.expand(len(mass), -1).contiguous())
    idx = idx.clamp(max=mass.shape[1] - 1)
    thresholds = sorted_logp.gather(1, idx)
    areas = cum_area.gather(1, idx) * EARTH_RADIUS_KM**2
    return thresholds, areas


class CalibrationAccumulator:
    """Collects, batch by batch, whether each true location lies in the model's highest-density regions, the
    regions' areas and the log-likelihoods; :meth:`metrics` summarises them."""

    def __init__(self, levels=LEVELS, reliability_levels=RELIABILITY_LEVELS):
        self.levels = tuple(float(a) for a in levels)
        self.reliability_levels = tuple(float(a) for a in reliability_levels)
        self._all = tuple(sorted(set(self.levels) | set(self.reliability_levels)))
        self._inside: list[torch.Tensor] = []
        self._areas: list[torch.Tensor] = []
        self._log_probs: list[torch.Tensor] = []

    def add(self, grid: DensityGrid, true_log_prob: torch.Tensor) -> None:
        """One batch: the images' density grids and the log-densities of their true locations ``(N,)``."""
        true_log_prob = torch.as_tensor(true_log_prob, dtype=torch.float64).reshape(-1)
        if len(true_log_prob) != grid.log_density.shape[0]:
            raise ValueError(f"true_log_prob has {len(true_log_prob)} rows for {grid.log_density.shape[0]} grids")
        thresholds, areas = hdr_thresholds(grid, self._all)
        self._inside.append(true_log_prob[:, None] >= thresholds)
        self._areas.append(areas)
        self._log_probs.append(true_log_prob)

    def add_samples(self, sample_log_probs: torch.Tensor, true_log_prob: torch.Tensor) -> None:
        """One batch from samples instead of a grid (Hyndman 1996): ``sample_log_probs (N, S)`` are the model's
        log-densities at S of its own samples. The level-``a`` region's threshold is the ``1 - a`` quantile of them
        (``a`` of the mass lies above it); its area is the importance estimate ``mean_s 1[p(x_s) >= t] / p(x_s)``.
        For the sphere flow: S + 1 likelihood solves per image instead of one per grid cell."""
        lp = torch.as_tensor(sample_log_probs, dtype=torch.float64)
        true_log_prob = torch.as_tensor(true_log_prob, dtype=torch.float64).reshape(-1)
        if lp.ndim != 2 or len(lp) != len(true_log_prob):
            raise ValueError(f"sample_log_probs must be (N, S) with N = {len(true_log_prob)}, got {tuple(lp.shape)}")
        levels = torch.tensor(self._all, dtype=torch.float64)
        thresholds = torch.quantile(lp, 1 - levels, dim=1).T  # (N, L)
        above = lp[:, None, :] >= thresholds[..., None]  # (N, L, S)
        areas = (above * torch.exp(-lp)[:, None, :]).mean(dim=-1).clamp(max=4 * math.pi) * EARTH_RADIUS_KM**2
        self._inside.append(true_log_prob[:, None] >= thresholds)
        self._areas.append(areas)
        self._log_probs.append(true_log_prob)

    def __len__(self) -> int:
        return sum(len(x) for x in self._log_probs)

    def coverage(self) -> dict[float, float]:
        """Fraction of true locations inside the region, per level (all levels collected)."""
        inside = torch.cat(self._inside).double().mean(dim=0)
        return {a: float(c) for a, c in zip(self._all, inside)}

    def metrics(self) -> dict[str, float]:
        """``nll`` (mean, nats w.r.t. area on the unit sphere), ``coverage_50/90/95`` (percent),
        ``area_50/90/95_km2`` (median region area), ``max_coverage_gap`` (points, over the 50/90/95 levels) and
        ``well_calibrated`` (1.0 when that gap is within 3 points)."""
        if not len(self):
            raise ValueError("no images added")
        coverage, areas = self.coverage(), torch.cat(self._areas)
        out = {"nll": float(-torch.cat(self._log_probs).mean())}
        gaps = []
        for a in self.levels:
            name = f"{round(100 * a)}"
            out[f"coverage_{name}"] = 100 * coverage[a]
            out[f"area_{name}_km2"] = float(areas[:, self._all.index(a)].median())
            gaps.append(abs(100 * coverage[a] - 100 * a))
        out["max_coverage_gap"] = max(gaps)
        out["well_calibrated"] = float(max(gaps) <= WELL_CALIBRATED_POINTS)
        return out

    def reliability(self) -> list[tuple[float, float]]:
        """``(nominal, empirical)`` coverage at the reliability levels."""
        coverage = self.coverage()
        return [(a, coverage[a]) for a in self.reliability_levels]


def reliability_plot(curves: dict[str, list[tuple[float, float]]], path: str | os.PathLike, *, title: str = "",
                     size: int = 480) -> Path:  # fmt: skip
    """A reliability diagram as a PNG: empirical against nominal coverage of the highest-density regions, one line
    per model of ``curves`` (``{name: [(nominal, empirical), ...]}``), the diagonal dashed (a calibrated model lies
    on it). Written atomically; returns the path."""
    from geo_models.plots import line_plot

    return line_plot(curves, path, x_range=(0.0, 1.0), y_range=(0.0, 1.0), x_label="nominal coverage",
                     y_label="empirical", title=title, diagonal=True, size=(size, size))  # fmt: skip
