"""Real orthonormal spherical harmonics ``Y_lm`` on the unit sphere and the Legendre (addition-theorem) kernel.

Convention (used by LocDiff's SHDD encoding, ``geo_models.locdiff``):

- colatitude ``theta = 90° - lat``, azimuth ``phi = lon``; coefficient ``(l, m)``, ``l = 0..L``, ``m = -l..l``, sits at
  index ``l * (l + 1) + m``, so degree ``L`` gives ``(L + 1)^2`` columns.
- ``Y_lm = sqrt(2) N_l|m| P_l^|m|(cos theta) cos(m phi)`` for ``m > 0``, ``sqrt(2) N_l|m| P_l^|m| sin(|m| phi)`` for
  ``m < 0`` and ``N_l0 P_l(cos theta)`` for ``m = 0``, with ``N_lm = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!)`` and ``P_l^m``
  *without* the Condon-Shortley phase. So ``Y_{1,1} ∝ x``, ``Y_{1,-1} ∝ y``, ``Y_{1,0} ∝ z`` (all with a positive
  factor) and ``∫ Y_lm Y_l'm' dΩ = δ δ``. In terms of SciPy's complex ``sph_harm_y(l, m, theta, phi)`` (which includes
  the Condon-Shortley phase ``(-1)^m``): ``m > 0: sqrt(2) (-1)^m Re Y_l^m``, ``m < 0: sqrt(2) (-1)^m Im Y_l^|m|``,
  ``m = 0: Y_l^0``; this equals the LocDiff paper's eq. 19 (its eq. 20 ``P_l^m`` carries ``(-1)^m`` too, and the two
  phases cancel).

No factorials: ``N_lm P_l^m`` is computed by the standard fully-normalised recurrences (e.g. Holmes & Featherstone
2002), vectorised over all orders ``m`` at once:

- diagonal ``q_00 = 1/sqrt(4 pi)``, ``q_mm = sqrt((2m+1)/(2m)) sin(theta) q_{m-1,m-1}`` (a cumulative product);
- ``q_lm = a_lm cos(theta) q_{l-1,m} + b_lm q_{l-2,m}`` with ``a_lm = sqrt((4l^2-1)/(l^2-m^2))`` and
  ``b_lm = -a_lm / a_{l-1,m} = -sqrt((2l+1)((l-1)^2-m^2)/((2l-3)(l^2-m^2)))``
  (so ``q_{m+1,m} = sqrt(2m+3) cos(theta) q_mm``).

Every ``|q_lm| <= sqrt((2l+1)/(4 pi))`` (addition theorem), so nothing overflows at any degree in float32 or
float64; near the poles ``sin(theta)^m`` underflows only where the true value is below the dtype's range.
"""

from __future__ import annotations

import functools
import math

import torch

from geo_models.sphere._checks import TensorLike, as_tensor, check_finite, check_latlon


def num_sh_coefficients(max_degree: int) -> int:
    """``(L + 1)^2``: the number of real harmonics of degree ``0..L``."""
    return (_check_degree(max_degree) + 1) ** 2


def sh_index(degree: int, order: int) -> int:
    """Column of ``Y_lm`` in ``real_spherical_harmonics``: ``l * (l + 1) + m`` (``|m| <= l``)."""
    if degree < 0 or abs(order) > degree:
        raise ValueError(f"need degree >= 0 and |order| <= degree, got degree={degree}, order={order}")
    return degree * (degree + 1) + order


def sh_degrees_orders(max_degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(degrees, orders)``: two ``((L+1)^2,)`` long tensors giving ``l`` and ``m`` of every column."""
    L = _check_degree(max_degree)
    degrees = torch.cat([torch.full((2 * l + 1,), l) for l in range(L + 1)])
    orders = torch.cat([torch.arange(-l, l + 1) for l in range(L + 1)])
    return degrees, orders


def real_spherical_harmonics(latlon: TensorLike, max_degree: int) -> torch.Tensor:
    """Real orthonormal ``Y_lm`` at ``latlon (..., 2)`` degrees -> ``(..., (L+1)^2)`` (column ``l (l+1) + m``).

    float64 input is computed in float64, anything else in float32. Differentiable with respect to ``latlon``.
    """
    t = check_latlon(latlon)
    lat, lon = torch.deg2rad(t[..., 0]), torch.deg2rad(t[..., 1])
    return _real_sh(lat.sin(), lat.cos().clamp_min(0), lon, _check_degree(max_degree))


def legendre_kernel(cos_angle: TensorLike, max_degree: int, degree_weights: TensorLike | None = None) -> torch.Tensor:
    """``K(γ) = Σ_l w_l (2l+1)/(4π) P_l(cos γ)`` at ``cos_angle (...)`` -> ``(...)``.

    By the addition theorem ``Σ_m Y_lm(a) Y_lm(b) = (2l+1)/(4π) P_l(a·b)``, this is ``Σ_lm w_l Y_lm(a) Y_lm(b)``: the
    truncated (optionally windowed, weights ``(L+1,)``) Dirac delta at ``a`` evaluated at ``b``. Uses the three-term
    recurrence ``l P_l = (2l-1) x P_{l-1} - (l-1) P_{l-2}``.
    """
    L = _check_degree(max_degree)
    x = as_tensor(cos_angle, "cos_angle")
    check_finite(x, "cos_angle")
    x = x.clamp(-1, 1)
    w = torch.ones(L + 1, dtype=x.dtype) if degree_weights is None else as_tensor(degree_weights, "degree_weights")
    if w.shape != (L + 1,):
        raise ValueError(f"degree_weights must have shape ({L + 1},), got {tuple(w.shape)}")
    w = w.to(x.dtype)
    p_prev, p = torch.ones_like(x), x
    out = w[0] / (4 * math.pi) * p_prev + w[1] * 3 / (4 * math.pi) * p
    for l in range(2, L + 1):
        p_prev, p = p, ((2 * l - 1) * x * p - (l - 1) * p_prev) / l
        out = out + w[l] * (2 * l + 1) / (4 * math.pi) * p
    return out


def _check_degree(max_degree: int) -> int:
    if isinstance(max_degree, bool) or not float(max_degree).is_integer() or int(max_degree) < 0:
        raise ValueError(f"max_degree must be an integer >= 0, got {max_degree!r}")
    return int(max_degree)


@functools.lru_cache(maxsize=32)
def _plan(L: int):
    """Recurrence coefficients (float64) and target rows for degree ``L``; ``sqrt(2)`` (m > 0) folded into ``q_mm``."""
    m = torch.arange(L + 1, dtype=torch.float64)
    diag = torch.ones(L + 1, dtype=torch.float64)  # q_mm = cumprod(diag * sin); first entry 1/sqrt(4 pi)
    diag[0] = 1 / math.sqrt(4 * math.pi)
    diag[1:] = torch.sqrt((2 * m[1:] + 1) / (2 * m[1:]))
    diag[1] *= math.sqrt(2.0)  # the real harmonics' sqrt(2) for every m > 0 (the recurrence is linear in q)
    steps = []  # k = l - m >= 1: (a, b) for m = 0..L-k, l = m + k
    for k in range(1, L + 1):
        mk = m[: L + 1 - k]
        l = mk + k
        a = torch.sqrt((4 * l**2 - 1) / (l**2 - mk**2))
        b = -torch.sqrt((2 * l + 1) * ((l - 1) ** 2 - mk**2).clamp_min(0) / ((2 * l - 3) * (l**2 - mk**2)))
        steps.append((a[:, None], b[:, None]))
    rows = []  # for k = 0..L: target rows of the cos part (m = 0..L-k) and of the sin part (m = 1..L-k)
    for k in range(L + 1):
        mk = torch.arange(L + 1 - k)
        l = mk + k
        rows.append((l * (l + 1) + mk, (l * (l + 1) - mk)[1:]))
    return diag[:, None], steps, rows


@functools.lru_cache(maxsize=64)
def _plan_as(L: int, dtype: torch.dtype, device: torch.device):
    diag, steps, rows = _plan(L)
    return (
        diag.to(dtype=dtype, device=device),
        [(a.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)) for a, b in steps],
        [(c.to(device), s.to(device)) for c, s in rows],
        torch.arange(L + 1, dtype=dtype, device=device)[:, None],
    )


def _real_sh_rows(cos_theta: torch.Tensor, sin_theta: torch.Tensor, phi: torch.Tensor, L: int) -> torch.Tensor:
    """``Y_lm`` as rows: ``cos/sin`` of the colatitude and azimuth ``phi`` (radians), ``(n,)`` each -> ``(D, n)``.

    Points lie on the contiguous axis, so every recurrence step works on whole rows; ``coeffs @ rows`` is then a
    plain matrix product.
    """
    diag, steps, rows, mrange = _plan_as(L, cos_theta.dtype, cos_theta.device)
    x, s, phi = cos_theta.reshape(1, -1), sin_theta.reshape(1, -1), phi.reshape(1, -1)
    n = x.shape[1]
    factors = torch.cat([diag[:1].expand(1, n), diag[1:] * s], dim=0)
    angles = mrange * phi  # (L+1, n)
    cos_m, sin_m = angles.cos(), angles.sin()
    out = x.new_empty((L + 1) ** 2, n)
    q_prev, q = None, torch.cumprod(factors, dim=0)  # (L+1, n): q_mm
    for k in range(L + 1):
        if k >= 1:
            a, b = steps[k - 1]
            nxt = a * (x * q[: L + 1 - k])
            q_prev, q = q, (nxt if k == 1 else nxt + b * q_prev[: L + 1 - k])
        cos_rows, sin_rows = rows[k]
        out.index_copy_(0, cos_rows, q * cos_m[: L + 1 - k])
        out.index_copy_(0, sin_rows, q[1:] * sin_m[1 : L + 1 - k])
    return out


def _real_sh(cos_theta: torch.Tensor, sin_theta: torch.Tensor, phi: torch.Tensor, L: int) -> torch.Tensor:
    """``Y_lm`` from ``cos/sin`` of the colatitude and the azimuth ``phi`` (radians), all ``(...)`` -> ``(..., D)``."""
    out = _real_sh_rows(cos_theta, sin_theta, phi, L)
    return out.T.contiguous().reshape(*cos_theta.shape, (L + 1) ** 2)
