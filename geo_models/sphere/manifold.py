"""The unit sphere S² as a Riemannian manifold: exp/log maps, tangent projection, geodesics, means, sampling.

Points are unit vectors ``(..., 3)``; tangent vectors at ``x`` are ``(..., 3)`` with ``<x, v> = 0``. These are the
operations of Riemannian flow matching on S² (geodesic interpolant, tangent target velocity) and of LocDiff's
spherical mean of samples. Convenience wrappers take ``latlon`` degrees.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from geo_models.sphere._checks import TensorLike, as_tensor, check_finite, check_last_dim, check_unit_xyz
from geo_models.sphere.coords import latlon_to_xyz, xyz_to_latlon

_EPS = 1e-7


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def project_to_tangent(x: TensorLike, v: TensorLike) -> torch.Tensor:
    """Orthogonal projection of ``v (..., 3)`` onto the tangent plane at ``x (..., 3)``: ``v - <x, v> x``."""
    x, v = check_unit_xyz(x, "x"), as_tensor(v, "v")
    check_last_dim(v, 3, "v", "vectors in R^3")
    return v - _dot(x, v) * x


def tangent_basis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthonormal tangent vectors ``(t1, t2)`` at unit vectors ``x (n, 3)``, ``t2 = x x t1`` (well defined at the
    poles too). No input checks: it runs inside solver loops (LocDiff's decoder, the flow likelihood)."""
    ref = torch.zeros_like(x)
    polar = x[:, 2].abs() > 0.9
    ref[:, 2] = (~polar).to(x.dtype)
    ref[:, 0] = polar.to(x.dtype)
    t1 = torch.linalg.cross(ref, x)
    t1 = t1 / t1.norm(dim=-1, keepdim=True)
    return t1, torch.linalg.cross(x, t1)


def exp_map(x: TensorLike, v: TensorLike) -> torch.Tensor:
    """Exponential map ``exp_x(v) = cos|v| x + sin|v| v/|v|`` -> ``(..., 3)`` on the sphere."""
    x, v = check_unit_xyz(x, "x"), as_tensor(v, "v")
    check_last_dim(v, 3, "v", "tangent vectors in R^3")
    norm = v.norm(dim=-1, keepdim=True)
    # sin|v|/|v| -> 1 as |v| -> 0; torch.sinc(t) = sin(pi t)/(pi t).
    y = norm.cos() * x + torch.sinc(norm / math.pi) * v
    return y / y.norm(dim=-1, keepdim=True)  # re-project: removes float drift


def log_map(x: TensorLike, y: TensorLike) -> torch.Tensor:
    """Logarithm map ``log_x(y)``: the tangent vector at ``x`` pointing to ``y`` with length = geodesic distance.

    Uses ``theta = atan2(|x × y|, <x, y>)`` (accurate for near and far points). For exactly antipodal points the
    direction is undefined and the zero vector is returned.
    """
    x, y = check_unit_xyz(x, "x"), check_unit_xyz(y, "y")
    x, y = torch.broadcast_tensors(x, y)
    u = y - _dot(x, y) * x  # component of y orthogonal to x, |u| = sin(theta)
    sin_theta = torch.linalg.cross(x, y).norm(dim=-1, keepdim=True)
    theta = torch.atan2(sin_theta, _dot(x, y))
    scale = torch.where(sin_theta > _EPS, theta / sin_theta.clamp_min(_EPS), torch.ones_like(theta))
    return scale * u


def geodesic_distance(x: TensorLike, y: TensorLike) -> torch.Tensor:
    """Great-circle angle in radians between unit vectors ``x`` and ``y`` -> ``(...)``."""
    x, y = check_unit_xyz(x, "x"), check_unit_xyz(y, "y")
    return torch.atan2(torch.linalg.cross(*torch.broadcast_tensors(x, y)).norm(dim=-1), (x * y).sum(-1))


def geodesic(x: TensorLike, y: TensorLike, t: TensorLike) -> torch.Tensor:
    """Point at fraction ``t`` along the shortest geodesic from ``x`` (t=0) to ``y`` (t=1): ``exp_x(t log_x(y))``.

    ``t`` broadcasts against the batch shape of ``x``/``y`` (shape ``(...)`` or ``(..., 1)``).
    """
    x = check_unit_xyz(x, "x")
    t = as_tensor(t, "t").to(x.dtype)
    check_finite(t, "t")
    if t.ndim and t.shape[-1] != 1:
        t = t.unsqueeze(-1)
    return exp_map(x, t * log_map(x, y))


def geodesic_interpolate(a: TensorLike, b: TensorLike, t: TensorLike) -> torch.Tensor:
    """``geodesic`` on latlon degrees: the point at fraction ``t`` from ``a (..., 2)`` to ``b (..., 2)``."""
    return xyz_to_latlon(geodesic(latlon_to_xyz(a), latlon_to_xyz(b), t))


def spherical_mean(
    latlon: TensorLike,
    weights: TensorLike | None = None,
    *,
    method: Literal["extrinsic", "karcher"] = "extrinsic",
    iterations: int = 20,
) -> torch.Tensor:
    """Mean of a point set ``(..., N, 2)`` -> ``(..., 2)``.

    ``extrinsic``: the normalised (weighted) mean of unit vectors. ``karcher``: the Fréchet mean (minimiser of the
    sum of squared geodesic distances), by Riemannian gradient steps from the extrinsic mean. When the vectors cancel
    (e.g. two antipodal points) the first point is returned.
    """
    xyz = latlon_to_xyz(latlon)
    if xyz.ndim < 2 or xyz.shape[-2] == 0:
        raise ValueError(f"latlon must have shape (..., N, 2) with N >= 1, got {tuple(xyz.shape[:-1]) + (2,)}")
    w = torch.ones(xyz.shape[:-1], dtype=xyz.dtype) if weights is None else as_tensor(weights, "weights").to(xyz.dtype)
    if w.shape != xyz.shape[:-1]:
        raise ValueError(f"weights must have shape {tuple(xyz.shape[:-1])}, got {tuple(w.shape)}")
    check_finite(w, "weights")
    if (w < 0).any() or (w.sum(-1) <= 0).any():
        raise ValueError("weights must be >= 0 with a positive sum over the points")
    w = (w / w.sum(-1, keepdim=True)).unsqueeze(-1)
    s = (w * xyz).sum(-2)
    norm = s.norm(dim=-1, keepdim=True)
    mean = torch.where(norm > _EPS, s / norm.clamp_min(_EPS), xyz[..., 0, :])
    if method == "karcher":
        for _ in range(iterations):
            step = (w * log_map(mean.unsqueeze(-2), xyz)).sum(-2)
            mean = exp_map(mean, step)
            if step.norm(dim=-1).max() < 1e-9:
                break
    elif method != "extrinsic":
        raise ValueError(f"method must be 'extrinsic' or 'karcher', got {method!r}")
    return xyz_to_latlon(mean)


def uniform_sphere_xyz(
    num_samples: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(num_samples, 3)`` points uniform on S² (normalised Gaussians)."""
    if int(num_samples) < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    g = torch.randn(int(num_samples), 3, generator=generator, dtype=torch.float64)
    return (g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)).to(dtype)


def uniform_sphere(
    num_samples: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(num_samples, 2)`` latlon degrees uniform over the sphere's area."""
    return xyz_to_latlon(uniform_sphere_xyz(num_samples, generator=generator, dtype=torch.float64)).to(dtype)


def fibonacci_lattice(num_points: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(num_points, 2)`` latlon of a Fibonacci (golden-spiral) lattice: near-uniform points, equal area each.

    Point i has ``z = 1 - (2i + 1) / n`` and longitude ``i * golden_angle``; spacing is about ``sqrt(4π/n)`` radians
    (~71 km for 100K points). Used as retrieval galleries and decoder anchor sets.
    """
    n = int(num_points)
    if n < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    i = torch.arange(n, dtype=torch.float64)
    z = 1 - (2 * i + 1) / n
    golden_angle = math.pi * (3 - math.sqrt(5))
    lon = torch.remainder(i * golden_angle + math.pi, 2 * math.pi) - math.pi
    return torch.rad2deg(torch.stack([torch.asin(z), lon], dim=-1)).to(dtype)


def von_mises_fisher_xyz(
    mean: TensorLike, kappa: TensorLike, num_samples: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Samples of the von Mises-Fisher distribution on S² -> ``(..., num_samples, 3)``.

    ``mean (..., 3)`` unit vectors, ``kappa (...)`` concentrations > 0. Exact inversion for S² (Wood 1994):
    ``w = 1 + log(u + (1 - u) e^{-2 kappa}) / kappa`` is the cosine to the mean, the direction around it uniform.
    """
    mu = check_unit_xyz(mean, "mean")
    kappa = as_tensor(kappa, "kappa").to(mu.dtype)
    check_finite(kappa, "kappa")
    if kappa.numel() and kappa.min() <= 0:
        raise ValueError("kappa must be > 0")
    batch = torch.broadcast_shapes(mu.shape[:-1], kappa.shape)
    mu, kappa = mu.expand(*batch, 3), kappa.expand(batch)
    shape = (*batch, int(num_samples))
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    k = kappa.to(torch.float64).unsqueeze(-1)
    w = 1 + torch.log(u + (1 - u) * torch.exp(-2 * k)) / k
    w = w.clamp(-1, 1)
    # Orthonormal basis (e1, e2) of the tangent plane at mu.
    m = mu.to(torch.float64).unsqueeze(-2)
    z_axis, x_axis = m.new_tensor([0.0, 0.0, 1.0]), m.new_tensor([1.0, 0.0, 0.0])
    helper = torch.where(m[..., 2:3].abs() < 0.9, z_axis, x_axis)  # any axis not parallel to mu
    e1 = torch.linalg.cross(m.expand_as(helper), helper)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(m, e1)
    phi = 2 * math.pi * torch.rand(shape, generator=generator, dtype=torch.float64)
    r = (1 - w * w).clamp_min(0).sqrt()
    x = w.unsqueeze(-1) * m + r.unsqueeze(-1) * (phi.cos().unsqueeze(-1) * e1 + phi.sin().unsqueeze(-1) * e2)
    return (x / x.norm(dim=-1, keepdim=True)).to(mu.dtype)


def von_mises_fisher(
    mean: TensorLike, kappa: TensorLike, num_samples: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """von Mises-Fisher samples around ``mean (..., 2)`` latlon degrees -> ``(..., num_samples, 2)``."""
    return xyz_to_latlon(von_mises_fisher_xyz(latlon_to_xyz(mean), kappa, num_samples, generator=generator))


def von_mises_fisher_log_prob(x: TensorLike, mean: TensorLike, kappa: TensorLike) -> torch.Tensor:
    """log density of vMF on S² w.r.t. area on the unit sphere (uniform = 1/4π), unit vectors ``x``, ``mean``.

    ``log p = log kappa - log 2π - log(1 - e^{-2 kappa}) + kappa (<mu, x> - 1)``, stable for large kappa.
    """
    x, mu = check_unit_xyz(x, "x"), check_unit_xyz(mean, "mean")
    kappa = as_tensor(kappa, "kappa").to(x.dtype)
    if kappa.numel() and kappa.min() <= 0:
        raise ValueError("kappa must be > 0")
    return kappa.log() - math.log(2 * math.pi) - torch.log1p(-torch.exp(-2 * kappa)) + kappa * ((x * mu).sum(-1) - 1)
