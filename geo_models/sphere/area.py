"""A geographic area: a latitude / longitude box, e.g. the training area of a model conditioned on GPS.

:class:`GeoArea` is the one definition of "the area the GPS data covers" (the data's bounding box plus a margin,
:meth:`GeoArea.from_points`) and of "is this point inside it" (:meth:`GeoArea.contains`). Boxes do not cross the
antimeridian: ``lon_min < lon_max`` always.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from geo_models.sphere._checks import TensorLike, check_latlon


def _check_bounds(name: str, bounds, limit: float) -> tuple[float, float]:
    """``bounds`` as ``(min, max)`` floats with ``-limit <= min < max <= limit``; ``ValueError`` naming ``name``."""
    try:
        if isinstance(bounds, (str, bytes)):
            raise TypeError
        values = tuple(float(b) for b in bounds)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be two finite numbers (min, max), got {bounds!r}") from err
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be two finite numbers (min, max), got {bounds!r}")
    if not -limit <= values[0] < values[1] <= limit:
        raise ValueError(f"{name} must satisfy {-limit} <= min < max <= {limit}, got {values}")
    return values


@dataclass(frozen=True)
class GeoArea:
    """The box ``lat_range x lon_range`` (degrees, ``(min, max)`` each, edges included).

    ``lat_range`` must lie within [-90, 90] and ``lon_range`` within [-180, 180], with ``min < max``; anything else
    (also NaN, infinities, or not two numbers) raises ``ValueError`` naming the field. Both are stored as tuples of
    floats, so areas compare, hash and print by value.
    """

    lat_range: tuple[float, float]
    lon_range: tuple[float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "lat_range", _check_bounds("lat_range", self.lat_range, 90.0))
        object.__setattr__(self, "lon_range", _check_bounds("lon_range", self.lon_range, 180.0))

    @classmethod
    def from_points(cls, latlon: TensorLike, margin: float = 0.05, min_pad_deg: float = 1e-3) -> GeoArea:
        """The bounding box of ``latlon (N, 2)`` degrees widened on each side by ``margin`` of its extent (at least
        ``min_pad_deg`` degrees), per coordinate, then clipped to the globe. ``N >= 1``; the box is computed in
        float64."""
        t = check_latlon(latlon).reshape(-1, 2)
        if not len(t):
            raise ValueError("latlon must hold at least one point to span an area")
        for value, name in ((margin, "margin"), (min_pad_deg, "min_pad_deg")):
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        lo, hi = t.min(0).values.double(), t.max(0).values.double()
        pad = torch.clamp((hi - lo) * margin, min=min_pad_deg)
        lo, hi = (lo - pad).tolist(), (hi + pad).tolist()
        return cls((max(lo[0], -90.0), min(hi[0], 90.0)), (max(lo[1], -180.0), min(hi[1], 180.0)))

    def contains(self, latlon: TensorLike, name: str = "latlon") -> torch.Tensor | bool:
        """Whether ``latlon (..., 2)`` degrees lie in the area (edges included): a bool tensor ``(...)``, or a
        ``bool`` for a single ``(lat, lon)`` pair. Tensors and arrays are compared in their precision (float64, else
        float32: a float32 copy of an edge counts as inside), Python numbers in float64.
        Coordinates off the globe or not finite raise ``ValueError`` naming ``name``."""
        if not isinstance(latlon, (torch.Tensor, np.ndarray)):  # Python numbers: compared exactly (float64)
            try:
                latlon = np.asarray(latlon, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name} must be (..., 2) numbers (latitude, longitude), got {latlon!r}") from err
        t = check_latlon(latlon, name)
        lat, lon = t[..., 0], t[..., 1]
        inside = (lat >= self.lat_range[0]) & (lat <= self.lat_range[1])
        inside &= (lon >= self.lon_range[0]) & (lon <= self.lon_range[1])
        return bool(inside) if t.ndim == 1 else inside

    def as_list(self) -> list[float]:
        """``[lat_min, lat_max, lon_min, lon_max]`` (the ``gps_area`` layout of the GPS-to-image pipelines)."""
        return [*self.lat_range, *self.lon_range]

    @property
    def center(self) -> tuple[float, float]:
        """``(lat, lon)`` of the box's centre, degrees."""
        return (self.lat_range[0] + self.lat_range[1]) / 2, (self.lon_range[0] + self.lon_range[1]) / 2


__all__ = ["GeoArea"]
