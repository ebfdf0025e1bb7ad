"""Input conversion and validation shared by the sphere functions (DESIGN.md: ValueError naming the argument)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

TensorLike = Any  # torch.Tensor | np.ndarray | sequence of floats


def as_tensor(x: TensorLike, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Floating tensor from a tensor, array or list; float64 tensors/arrays stay float64, the rest is float32."""
    if isinstance(x, torch.Tensor):
        t = x
    elif not isinstance(x, np.ndarray):  # Python numbers and lists: float32, like torch.tensor
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric tensor or array, got {type(x).__name__}") from err
    else:
        arr = x if x.flags.writeable else x.copy()  # torch warns on read-only arrays (e.g. from pandas)
        try:
            t = torch.as_tensor(arr)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric tensor or array, got {type(x).__name__}") from err
    if dtype is not None:
        return t.to(dtype)
    if t.dtype == torch.float64:
        return t
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    return t.to(torch.float32)


def check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")


def check_last_dim(t: torch.Tensor, size: int, name: str, what: str) -> None:
    if t.ndim == 0 or t.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}) ({what}), got {tuple(t.shape)}")


def check_latlon(x: TensorLike, name: str = "latlon") -> torch.Tensor:
    """Validate a ``(..., 2)`` array of [latitude, longitude] in degrees and return it as a tensor."""
    t = as_tensor(x, name)
    check_last_dim(t, 2, name, "latitude, longitude in degrees")
    check_finite(t, name)
    lat, lon = t[..., 0], t[..., 1]
    if t.numel() and (lat.abs().max() > 90):
        bad = lat[lat.abs() > 90].flatten()[0].item()
        raise ValueError(f"{name}: latitude must be in [-90, 90] degrees, got {bad}")
    if t.numel() and (lon.abs().max() > 180):
        bad = lon[lon.abs() > 180].flatten()[0].item()
        raise ValueError(f"{name}: longitude must be in [-180, 180] degrees, got {bad}")
    return t


def check_unit_xyz(x: TensorLike, name: str = "x", *, atol: float = 1e-3) -> torch.Tensor:
    """Validate a ``(..., 3)`` array of points on the unit sphere."""
    t = as_tensor(x, name)
    check_last_dim(t, 3, name, "unit vectors in R^3")
    check_finite(t, name)
    if t.numel() and ((t.norm(dim=-1) - 1).abs().max() > atol):
        raise ValueError(f"{name} must be unit vectors (norm 1 within {atol}); normalise or use latlon_to_xyz")
    return t
