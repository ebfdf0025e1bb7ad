"""Mode-seeking SHDD decoding (LocDiff eq. 15 and 17) and refinement inside the kernel.

The spherical function of a coefficient vector ``e`` is ``f_e(x) = Σ_lm e_lm Y_lm(x)``; its (unnormalised) density
is ``exp(f_e)`` (eq. 11). Everything here is memory-bounded: anchors and queries are processed in chunks, and the
``(N, num_anchors)`` score matrix is never materialised.
"""

from __future__ import annotations

import math

import torch

from geo_models.sphere import EARTH_RADIUS_KM, exp_map, latlon_to_xyz, spherical_mean, xyz_to_latlon
from geo_models.sphere.harmonics import _real_sh_rows
from geo_models.sphere.manifold import tangent_basis

_GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))


def harmonic_rows_latlon(latlon: torch.Tensor, max_degree: int, dtype: torch.dtype) -> torch.Tensor:
    """``(M, 2)`` validated latlon degrees -> ``Y`` as rows ``(D, M)`` in ``dtype``."""
    rad = torch.deg2rad(latlon.to(dtype))
    return _real_sh_rows(rad[:, 0].sin(), rad[:, 0].cos().clamp_min(0), rad[:, 1], max_degree)


def harmonic_rows_xyz(xyz: torch.Tensor, max_degree: int) -> torch.Tensor:
    """``(M, 3)`` unit vectors -> ``Y`` as rows ``(D, M)`` (no latitude/longitude round trip)."""
    s = xyz[:, :2].norm(dim=-1)
    return _real_sh_rows(xyz[:, 2].clamp(-1, 1), s, torch.atan2(xyz[:, 1], xyz[:, 0]), max_degree)


def field_at_xyz(coeffs: torch.Tensor, xyz: torch.Tensor, max_degree: int) -> torch.Tensor:
    """``f_e`` of each query at its own points: ``coeffs (n, D)``, ``xyz (n, M, 3)`` -> ``(n, M)``."""
    n, m = xyz.shape[:2]
    rows = harmonic_rows_xyz(xyz.reshape(-1, 3), max_degree).reshape(-1, n, m)  # (D, n, M)
    return torch.einsum("dnm,nd->nm", rows, coeffs)


def top_anchors(
    coeffs: torch.Tensor, anchors: torch.Tensor, max_degree: int, k: int, chunk_size: int, query_chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` anchors with the largest ``f_e`` per query: values and indices, ``(N, k)`` each.

    ``Y`` of each anchor chunk is computed once and shared by all queries; memory is
    ``O(chunk_size * D + query_chunk * chunk_size + N * k)``.
    """
    n = coeffs.shape[0]
    best_v = coeffs.new_full((n, k), -math.inf)
    best_i = torch.zeros(n, k, dtype=torch.long, device=coeffs.device)
    for a0 in range(0, anchors.shape[0], chunk_size):
        rows = harmonic_rows_latlon(anchors[a0 : a0 + chunk_size], max_degree, coeffs.dtype)  # (D, c)
        ids = torch.arange(a0, a0 + rows.shape[1], device=coeffs.device)
        for q0 in range(0, n, query_chunk):
            f = coeffs[q0 : q0 + query_chunk] @ rows  # (nq, c)
            v = torch.cat([best_v[q0 : q0 + query_chunk], f], dim=1)
            i = torch.cat([best_i[q0 : q0 + query_chunk], ids.expand(f.shape[0], -1)], dim=1)
            top_v, pos = v.topk(k, dim=1)
            best_v[q0 : q0 + query_chunk], best_i[q0 : q0 + query_chunk] = top_v, i.gather(1, pos)
    return best_v, best_i


def mass_argmax(values: torch.Tensor, xyz: torch.Tensor, rho_rad: float, query_chunk: int = 64) -> torch.Tensor:
    """Eq. 17 among candidates: ``argmax_j log Σ_{i: d(j, i) < rho} exp(f_i)`` -> ``(N,)`` positions in ``K``.

    ``values (N, K)`` are ``f_e`` at the candidate anchors ``xyz (N, K, 3)`` (the top-K anchors by ``f_e``); the
    mass of anchors outside the top K is neglected (their ``exp(f)`` is below every counted one).
    """
    cos_rho = math.cos(rho_rad)
    out = []
    for q0 in range(0, values.shape[0], query_chunk):
        v, x = values[q0 : q0 + query_chunk], xyz[q0 : q0 + query_chunk]
        near = x @ x.transpose(1, 2) >= cos_rho  # (n, K, K); the diagonal is always in
        score = torch.where(near, v[:, None, :], torch.full_like(v[:, None, :], -math.inf)).logsumexp(-1)
        out.append(score.argmax(dim=1))
    return torch.cat(out)


def _offsets_to_xyz(c: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Points ``exp_c(u t1 + v t2)``: centres ``(n, 3)``, tangent offsets ``(n, M, 2)`` radians -> ``(n, M, 3)``."""
    t1, t2 = tangent_basis(c)
    v = uv[..., :1] * t1[:, None] + uv[..., 1:] * t2[:, None]
    return exp_map(c[:, None].expand_as(v), v)


_STENCIL = torch.tensor(
    [[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.float64
)


def refine_newton(
    coeffs: torch.Tensor, start: torch.Tensor, max_degree: int, *, step_km: float, iterations: int = 10
) -> torch.Tensor:
    """Local maximum of ``f_e`` near ``start (n, 3)`` by Newton steps on a 9-point finite-difference stencil.

    The stencil spacing ``h`` starts at ``step_km / 2`` and halves every iteration (not below 50 m); gradient and
    Hessian in the tangent plane come from central differences. The step is ``-H^-1 g`` where ``H`` is negative
    definite, else a gradient step of length ``h``, capped at ``step_km`` (per-query cap). A step that lowers ``f`` is
    undone and that query's cap halved. Runs in float64; returns ``(n, 3)``.
    """
    e, c = coeffs.double(), start.double()
    n = c.shape[0]
    best_c, best_f = c, torch.full((n,), -math.inf, dtype=torch.float64, device=c.device)
    h = step_km / 2 / EARTH_RADIUS_KM
    cap = torch.full((n, 1), step_km / EARTH_RADIUS_KM, dtype=torch.float64, device=c.device)
    stencil = _STENCIL.to(c.device)
    for _ in range(iterations):
        f = field_at_xyz(e, _offsets_to_xyz(c, stencil * h), max_degree)  # (n, 9)
        improved = f[:, 0] >= best_f
        best_c = torch.where(improved[:, None], c, best_c)
        best_f = torch.where(improved, f[:, 0], best_f)
        g = torch.stack([f[:, 1] - f[:, 2], f[:, 3] - f[:, 4]], dim=-1) / (2 * h)
        huu = (f[:, 1] - 2 * f[:, 0] + f[:, 2]) / h**2
        hvv = (f[:, 3] - 2 * f[:, 0] + f[:, 4]) / h**2
        huv = (f[:, 5] - f[:, 6] - f[:, 7] + f[:, 8]) / (4 * h**2)
        det = huu * hvv - huv**2
        concave = (huu < 0) & (det > 0)
        det = torch.where(concave, det, torch.ones_like(det))
        newton = -torch.stack([hvv * g[:, 0] - huv * g[:, 1], huu * g[:, 1] - huv * g[:, 0]], dim=-1) / det[:, None]
        step = torch.where(concave[:, None], newton, g / g.norm(dim=-1, keepdim=True).clamp_min(1e-300) * h)
        cap = torch.where(improved[:, None], cap, cap / 2)
        step = step * (cap / step.norm(dim=-1, keepdim=True).clamp_min(1e-300)).clamp(max=1.0)
        step = torch.where(improved[:, None], step, torch.zeros_like(step))  # rejected: retry from best_c
        c = _offsets_to_xyz(best_c, step[:, None])[:, 0]
        h = max(h / 2, 0.05 / EARTH_RADIUS_KM)
    f_last = field_at_xyz(e, c[:, None], max_degree)[:, 0]
    return torch.where((f_last >= best_f)[:, None], c, best_c)


def refine_mean(
    coeffs: torch.Tensor,
    start: torch.Tensor,
    max_degree: int,
    *,
    radius_km: float,
    iterations: int = 10,
    num_samples: int = 64,
    shrink: float = 0.6,
) -> torch.Tensor:
    """Mass-weighted spherical mean of ``exp(f_e)`` over a shrinking cap around ``start (n, 3)`` (mean shift).

    Each iteration places ``num_samples`` equal-area samples (a Vogel spiral and its point reflection) in the cap of
    radius ``r`` around the current estimate, moves to their ``exp(f)``-weighted spherical mean, and shrinks ``r`` by
    ``shrink`` (from ``radius_km``, not below 0.1 km). Runs in float64; returns ``(n, 3)``.
    """
    e, c = coeffs.double(), start.double()
    half = max(num_samples // 2, 1)
    i = torch.arange(half, dtype=torch.float64, device=c.device)
    radius, angle = torch.sqrt((i + 0.5) / half), i * _GOLDEN_ANGLE
    disk = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)  # unit disk, equal area
    disk = torch.cat([disk, -disk])  # point-symmetric: a flat density leaves the centre where it is
    r = radius_km / EARTH_RADIUS_KM
    for _ in range(iterations):
        pts = _offsets_to_xyz(c, disk * r)  # (n, M, 3)
        w = torch.softmax(field_at_xyz(e, pts, max_degree), dim=-1)
        c = latlon_to_xyz(spherical_mean(xyz_to_latlon(pts), w))
        r = max(r * shrink, 0.1 / EARTH_RADIUS_KM)
    return c
