"""What a density over the globe gives besides samples: density maps, localizability, the density mode.

- :class:`DensityGrid` (``geo_models.sphere.density``, shared with the kernel densities of the other geolocators):
  log-densities at the centres of a lat/lon grid, with exact cell areas.
- Localizability (PLONK's ``compute_localizability``): ``mean_i log p(x_i) / (4 pi ln 2)`` over samples ``x_i ~ p``,
  a Monte-Carlo estimate of the negative entropy ``E_p[log p]`` (nats, w.r.t. area) scaled by ``1 / (4 pi ln 2)``.
  The uniform distribution scores ``-log(4 pi) / (4 pi ln 2) = -0.2906``; sharper densities score higher.
- :func:`density_mode`: hill-climbing on the exact density from the best sample, over shrinking caps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from geo_models.sphere import xyz_to_latlon
from geo_models.sphere.density import DensityGrid, density_grid_points  # re-exported: they lived here first

__all__ = ["DensityGrid", "cap_lattice", "density_grid_points", "density_mode", "localizability_from_log_probs"]

_GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))


def localizability_from_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """PLONK's localizability ``(N,)`` from log-densities ``(N, S)`` (nats) of S model samples per image."""
    return log_probs.mean(dim=-1) / (4 * math.pi * math.log(2))


def cap_lattice(center: torch.Tensor, radius: torch.Tensor, num_points: int) -> torch.Tensor:
    """``(N, M, 3)`` Fibonacci points covering the caps of angular ``radius (N,)`` around ``center (N, 3)``."""
    i = torch.arange(num_points, dtype=center.dtype, device=center.device) + 0.5
    cos_t = 1 - (1 - radius.cos())[:, None] * i / num_points  # (N, M), equal-area rings
    sin_t = (1 - cos_t * cos_t).clamp_min(0).sqrt()
    phi = i * _GOLDEN_ANGLE
    z_axis, x_axis = center.new_tensor([0.0, 0.0, 1.0]), center.new_tensor([1.0, 0.0, 0.0])
    helper = torch.where(center[:, 2:3].abs() < 0.9, z_axis, x_axis)  # any axis not parallel to the centre
    e1 = torch.linalg.cross(center, helper)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(center, e1)
    ring = phi.cos()[None, :, None] * e1[:, None] + phi.sin()[None, :, None] * e2[:, None]
    return cos_t[..., None] * center[:, None] + sin_t[..., None] * ring


def density_mode(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    samples: torch.Tensor,
    start_log_prob: torch.Tensor,
    *,
    rounds: int = 3,
    num_points: int = 64,
) -> torch.Tensor:
    """Mode of each image's density -> ``(N, 2)`` latlon, by ``rounds`` of ``num_points``-point cap lattices around
    the current best point, the cap radius starting at the median distance from ``start (N, 3)`` to the image's
    ``samples (N, S, 3)`` (within [0.005, 1] rad) and shrinking 4x per round; ``log_prob`` maps ``(N, M, 3)`` unit
    vectors to ``(N, M)`` nats. The result is never worse than ``start`` (its log-density ``start_log_prob``)."""
    best, best_lp = start.clone(), start_log_prob.clone()
    dist = torch.atan2(torch.linalg.cross(samples, start[:, None].expand_as(samples)).norm(dim=-1),
                       (samples * start[:, None]).sum(-1))  # fmt: skip
    radius = dist.median(dim=1).values.clamp(0.005, 1.0)
    for _ in range(int(rounds)):
        pts = cap_lattice(best, radius, num_points)
        lp = log_prob(pts)
        top, idx = lp.max(dim=1)
        better = top > best_lp
        best = torch.where(better[:, None], pts[torch.arange(len(pts)), idx], best)
        best_lp = torch.maximum(top, best_lp)
        radius = radius / 4
    return xyz_to_latlon(best)
