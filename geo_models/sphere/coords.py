"""Coordinates on the Earth: conversions, great-circle distance, bearings, destinations, Equal Earth.

All functions take ``latlon`` arrays of shape ``(..., 2)`` in degrees, latitude first (torch tensors, numpy arrays
or lists), broadcast like torch, and return torch tensors (float64 in -> float64 out, otherwise float32).
"""

from __future__ import annotations

import math

import torch

from geo_models.sphere._checks import TensorLike, as_tensor, check_finite, check_last_dim, check_latlon

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius R1


def latlon_to_xyz(latlon: TensorLike) -> torch.Tensor:
    """``(..., 2)`` degrees -> ``(..., 3)`` unit vectors (x towards (0, 0), z towards the north pole)."""
    t = torch.deg2rad(check_latlon(latlon))
    lat, lon = t[..., 0], t[..., 1]
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


def xyz_to_latlon(xyz: TensorLike) -> torch.Tensor:
    """``(..., 3)`` non-zero vectors (normalised here) -> ``(..., 2)`` degrees; longitude in [-180, 180]."""
    t = as_tensor(xyz, "xyz")
    check_last_dim(t, 3, "xyz", "vectors in R^3")
    check_finite(t, "xyz")
    norm = t.norm(dim=-1)
    if t.numel() and norm.min() <= 0:
        raise ValueError("xyz must be non-zero vectors")
    lat = torch.asin((t[..., 2] / norm).clamp(-1, 1))
    lon = torch.atan2(t[..., 1], t[..., 0])
    return torch.rad2deg(torch.stack([lat, lon], dim=-1))


def haversine_km(a: TensorLike, b: TensorLike, *, radius_km: float = EARTH_RADIUS_KM) -> torch.Tensor:
    """Great-circle distance in km between ``a (..., 2)`` and ``b (..., 2)`` (broadcasting) -> ``(...)``."""
    a, b = check_latlon(a, "a"), check_latlon(b, "b")
    out_dtype = _common_dtype(a, b)[0].dtype
    # float64 inside: in float32, asin(sqrt(h)) loses ~5 km near the antipode and ~1 m near zero.
    a, b = torch.deg2rad(a.double()), torch.deg2rad(b.double())
    dlat, dlon = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    h = torch.sin(dlat / 2) ** 2 + a[..., 0].cos() * b[..., 0].cos() * torch.sin(dlon / 2) ** 2
    return (2 * radius_km * torch.asin(h.clamp(0, 1).sqrt())).to(out_dtype)


def initial_bearing(a: TensorLike, b: TensorLike) -> torch.Tensor:
    """Initial bearing (forward azimuth) from ``a`` to ``b`` in degrees clockwise from north, in [0, 360)."""
    a, b = torch.deg2rad(check_latlon(a, "a")), torch.deg2rad(check_latlon(b, "b"))
    a, b = torch.broadcast_tensors(*_common_dtype(a, b))
    dlon = b[..., 1] - a[..., 1]
    y = dlon.sin() * b[..., 0].cos()
    x = a[..., 0].cos() * b[..., 0].sin() - a[..., 0].sin() * b[..., 0].cos() * dlon.cos()
    return torch.remainder(torch.rad2deg(torch.atan2(y, x)), 360.0)


def azimuth_around(points: TensorLike, centre: TensorLike) -> torch.Tensor:
    """Azimuth of ``points (..., 2)`` seen from ``centre (2,)``: the bearing centre -> point, degrees in [0, 360).

    This is the camera angle around a landmark used by angle-to-image diffusion (0 = camera due north of it).
    """
    return initial_bearing(check_latlon(centre, "centre"), check_latlon(points, "points"))


def destination(
    latlon: TensorLike, bearing_deg: TensorLike, distance_km: TensorLike, *, radius_km: float = EARTH_RADIUS_KM
) -> torch.Tensor:
    """Point reached from ``latlon (..., 2)`` along ``bearing_deg (...)`` after ``distance_km (...)``: ``(..., 2)``."""
    start = torch.deg2rad(check_latlon(latlon))
    bearing = torch.deg2rad(as_tensor(bearing_deg, "bearing_deg"))
    dist = as_tensor(distance_km, "distance_km")
    check_finite(bearing, "bearing_deg")
    check_finite(dist, "distance_km")
    if dist.numel() and dist.min() < 0:
        raise ValueError("distance_km must be >= 0")
    start, bearing, dist = _common_dtype(start, bearing, dist)
    delta = dist / radius_km
    lat1, lon1 = start[..., 0], start[..., 1]
    lat2 = torch.asin((lat1.sin() * delta.cos() + lat1.cos() * delta.sin() * bearing.cos()).clamp(-1, 1))
    lon2 = lon1 + torch.atan2(bearing.sin() * delta.sin() * lat1.cos(), delta.cos() - lat1.sin() * lat2.sin())
    lon2 = torch.remainder(lon2 + math.pi, 2 * math.pi) - math.pi
    return torch.rad2deg(torch.stack(torch.broadcast_tensors(lat2, lon2), dim=-1))


# Equal Earth polynomial coefficients (Šavrič, Patterson & Jenny 2018), as in PROJ and GeoCLIP.
_EE_A1, _EE_A2, _EE_A3, _EE_A4 = 1.340264, -0.081106, 0.000893, 0.003796


def equal_earth(latlon: TensorLike) -> torch.Tensor:
    """Spherical Equal Earth projection on the unit sphere (PROJ ``+proj=eqearth +R=1``) -> ``(..., 2)`` [x, y].

    x is in about [-2.706, 2.706] and y in about [-1.317, 1.317]. GeoCLIP rescales both by ``66.50336 / 180`` to
    land in [-1, 1].
    """
    t = torch.deg2rad(check_latlon(latlon))
    lat, lon = t[..., 0], t[..., 1]
    # Expression order of GeoCLIP eq. 1 / the official code: float32 rounding then matches bit for bit, which
    # matters because the finest RFF branch (sigma = 2^8) amplifies 1-ulp differences into ~1e-3 rad phases.
    sqrt3 = torch.sqrt(torch.tensor(3.0, dtype=t.dtype))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat))
    denominator = 3 * (9 * _EE_A4 * theta**8 + 7 * _EE_A3 * theta**6 + 3 * _EE_A2 * theta**2 + _EE_A1)
    x = (2 * sqrt3 * lon * torch.cos(theta)) / denominator
    y = _EE_A4 * theta**9 + _EE_A3 * theta**7 + _EE_A2 * theta**3 + _EE_A1 * theta
    return torch.stack([x, y], dim=-1)


def _common_dtype(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
    return tuple(t.to(dtype) for t in ts)
