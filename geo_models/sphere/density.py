"""Densities on the sphere as data: lat/lon density grids and von Mises-Fisher kernel mixtures.

- :class:`DensityGrid`: log-densities at the centres of a lat/lon grid, with exact cell areas, so
  ``grid.integral()`` (the sum of density x area) is a quadrature of the density's total mass (1 for a density).
- :class:`KernelMixture`: ``p(x) = sum_j w_j vMF(x; mu_j, kappa) + w_0 / (4 pi)``, the density a point-based
  geolocator implies once each of its weighted points is spread by a spherical kernel (GeoCLIP's gallery softmax,
  LocDiff's samples, kNN's neighbours; issue 18). Weights that do not sum to 1 leave ``w_0 = 1 - sum_j w_j`` spread
  uniformly over the sphere (e.g. the gallery's mass beyond the components kept), so it is always a density.
- :class:`DensityKernel`: how the points become a density (the kernel's concentration, a temperature on the
  weights, a uniform or broad floor for misses); :mod:`geo_models.sphere.kernel_fit` fits it on held-out truths.

Densities are w.r.t. area on the unit sphere (nats; the uniform density is ``1 / (4 pi)``), as the flow's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from geo_models.checks import MIN_GRID_RESOLUTION_DEG, check_number
from geo_models.sphere._checks import check_latlon
from geo_models.sphere.coords import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon
from geo_models.sphere.manifold import uniform_sphere_xyz, von_mises_fisher_xyz

__all__ = [
    "DensityGrid",
    "DensityKernel",
    "KernelMixture",
    "coarse_to_fine_mode",
    "density_grid_points",
    "kappa_for_km",
    "temper",
    "vmf_log_kernel",
]

LOG_4PI = math.log(4 * math.pi)
KAPPA_RANGE = (1.0, 1e7)  # ~6,400 km to ~2 km kernels
MAX_OVERSAMPLE = 4  # points per cell side when a grid averages a density narrower than its cells


@dataclass
class DensityGrid:
    """``log_density (N, H, W)`` nats at the cell centres ``latitudes (H,)`` (north to south) x ``longitudes (W,)``."""

    latitudes: torch.Tensor
    longitudes: torch.Tensor
    log_density: torch.Tensor

    def cell_areas(self) -> torch.Tensor:
        """``(H, W)`` areas of the cells on the unit sphere (steradians; they sum to 4 pi)."""
        dlat = float(self.latitudes[0] - self.latitudes[1]) if len(self.latitudes) > 1 else 180.0
        dlon = float(self.longitudes[1] - self.longitudes[0]) if len(self.longitudes) > 1 else 360.0
        lat = torch.deg2rad(self.latitudes.double())
        half = math.radians(dlat) / 2
        band = torch.sin((lat + half).clamp(max=math.pi / 2)) - torch.sin((lat - half).clamp(min=-math.pi / 2))
        return (band[:, None] * math.radians(dlon)).expand(len(self.latitudes), len(self.longitudes)).float()

    def probabilities(self) -> torch.Tensor:
        """``(N, H, W)`` probability of each cell (density x area, midpoint rule)."""
        return self.log_density.exp() * self.cell_areas()

    def integral(self) -> torch.Tensor:
        """``(N,)`` total mass by the midpoint rule (1 up to quadrature error for a normalised density)."""
        return self.probabilities().sum(dim=(-2, -1))


def density_grid_points(resolution_deg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell centres of a ``resolution_deg`` grid (in [0.25, 90] degrees, dividing 180): ``latitudes (H,)``,
    ``longitudes (W,)``, ``latlon (H * W, 2)``."""
    res = check_number(resolution_deg, "resolution_deg", MIN_GRID_RESOLUTION_DEG, 90.0)  # <= 720 x 1440 cells
    if abs(180 / res - round(180 / res)) > 1e-6:
        raise ValueError(f"resolution_deg must be in [{MIN_GRID_RESOLUTION_DEG}, 90] and divide 180, got {res!r}")
    h, w = round(180 / res), round(360 / res)
    lats = 90 - res / 2 - res * torch.arange(h, dtype=torch.float64)
    lons = -180 + res / 2 + res * torch.arange(w, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lats, lons, indexing="ij"), dim=-1).reshape(-1, 2)
    return lats.float(), lons.float(), grid.float()


def kappa_for_km(km: float) -> float:
    """The vMF concentration whose kernel has a standard deviation of about ``km`` per axis on Earth: for large
    kappa a vMF is a Gaussian of angular variance ``1 / kappa``, so ``kappa = (R / km)^2``."""
    return (EARTH_RADIUS_KM / check_number(km, "km", 0.0, low_open=True)) ** 2


def vmf_log_kernel(cos_angle: torch.Tensor, kappa: float | torch.Tensor) -> torch.Tensor:
    """log vMF density on S² (w.r.t. area) at points whose cosine to the mean is ``cos_angle``:
    ``log kappa - log 2 pi - log(1 - e^{-2 kappa}) + kappa (cos - 1)``, stable for any kappa > 0."""
    kappa = torch.as_tensor(kappa, dtype=cos_angle.dtype, device=cos_angle.device)
    return kappa.log() - math.log(2 * math.pi) - torch.log1p(-torch.exp(-2 * kappa)) + kappa * (cos_angle - 1)


@dataclass
class KernelMixture:
    """``p(x) = sum_j w_j vMF(x; mu_j, kappa_j) + (1 - sum_j w_j) / (4 pi)`` per image.

    Args:
        centres: ``(N, M, 2)`` latlon of the components (degrees).
        weights: ``(N, M)`` non-negative, summing to at most 1 per row (within 1e-4; rows above 1 are rescaled).
        kappa: the kernels' concentration: one for all, or an ``(M,)`` tensor (one per component).
    """

    centres: torch.Tensor
    weights: torch.Tensor
    kappa: float | torch.Tensor

    def __post_init__(self):
        centres = check_latlon(self.centres, "centres")
        if centres.ndim != 3 or self.weights.shape != centres.shape[:2]:
            raise ValueError(f"centres (N, M, 2) and weights (N, M) must match, got {tuple(centres.shape)} and "
                             f"{tuple(self.weights.shape)}")  # fmt: skip
        weights = torch.as_tensor(self.weights, dtype=torch.float64)
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and >= 0")
        total = weights.sum(dim=1, keepdim=True)
        self.weights = torch.where(total > 1, weights / total, weights)
        self.centres = centres.double()
        if isinstance(self.kappa, torch.Tensor) and self.kappa.numel() > 1:
            kappa = self.kappa.double().reshape(-1)
            if len(kappa) != centres.shape[1] or not ((kappa >= KAPPA_RANGE[0]) & (kappa <= KAPPA_RANGE[1])).all():
                raise ValueError(f"kappa must be one number or {centres.shape[1]} numbers in {list(KAPPA_RANGE)}")
            self.kappa = kappa
        else:
            self.kappa = check_number(float(self.kappa), "kappa", *KAPPA_RANGE)
        self._xyz = latlon_to_xyz(self.centres)  # (N, M, 3)

    @property
    def uniform_weight(self) -> torch.Tensor:
        """``(N,)`` mass spread uniformly (what the components do not carry)."""
        return (1 - self.weights.sum(dim=1)).clamp_min(0)

    def _log_prob_xyz(self, xyz: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """``(N, K, 3)`` unit vectors -> ``(N, K)`` log-densities, ``chunk`` points at a time (N x chunk x M)."""
        log_w = self.weights.log()  # -inf for empty components: they drop out of the logsumexp
        log_u = (self.uniform_weight.log() - LOG_4PI)[:, None]
        out = []
        for start in range(0, xyz.shape[1], chunk):
            cos = torch.einsum("nkd,nmd->nkm", xyz[:, start : start + chunk], self._xyz).clamp(-1, 1)
            comp = torch.logsumexp(log_w[:, None] + vmf_log_kernel(cos, self.kappa), dim=-1)
            out.append(torch.logaddexp(comp, log_u.expand_as(comp)))
        return torch.cat(out, dim=1)

    def log_prob(self, latlon: torch.Tensor) -> torch.Tensor:
        """Log-density (nats) at ``latlon (N, 2)`` (one point per image) or ``(N, K, 2)`` -> ``(N,)`` or ``(N, K)``."""
        pts = check_latlon(latlon, "latlon").double()
        single = pts.ndim == 2
        pts = pts[:, None] if single else pts
        if pts.ndim != 3 or pts.shape[0] != len(self.centres):
            raise ValueError(f"latlon must have shape ({len(self.centres)}, 2) or ({len(self.centres)}, K, 2), got "
                             f"{tuple(latlon.shape)}")  # fmt: skip
        out = self._log_prob_xyz(latlon_to_xyz(pts))
        return out[:, 0] if single else out

    def grid(self, resolution_deg: float = 1.0, oversample: int | None = None) -> DensityGrid:
        """The density on a lat/lon grid of ``resolution_deg`` cells: each cell's value is the density averaged
        over ``oversample x oversample`` points spread evenly in it (area-weighted), so a kernel narrower than a
        cell keeps its mass on the grid (the value at the cell centre alone can miss it, and the grid would not
        integrate to 1). ``None``: enough points for the sharpest kernel, ``ceil(cell / kernel width)``, at most
        ``MAX_OVERSAMPLE``."""
        lats, lons, pts = density_grid_points(resolution_deg)
        res = float(lats[0] - lats[1]) if len(lats) > 1 else 180.0
        if oversample is None:
            kernel_deg = math.degrees(1 / math.sqrt(float(torch.as_tensor(self.kappa).max())))
            oversample = min(MAX_OVERSAMPLE, max(1, math.ceil(res / kernel_deg)))
        n = int(oversample)
        offsets = ((torch.arange(n, dtype=torch.float64) + 0.5) / n - 0.5) * res
        sub_lat = (pts[:, 0].double()[:, None, None] + offsets[None, :, None]).expand(-1, n, n)
        sub_lon = (pts[:, 1].double()[:, None, None] + offsets[None, None, :]).expand(-1, n, n)
        sub = torch.stack([sub_lat, sub_lon], dim=-1).reshape(-1, 2)  # (C * n * n, 2)
        xyz = latlon_to_xyz(sub)[None].expand(len(self.centres), -1, -1)
        logp = self._log_prob_xyz(xyz).view(len(self.centres), len(pts), n * n)
        log_w = torch.log(torch.cos(torch.deg2rad(sub_lat.reshape(len(pts), n * n))).clamp_min(1e-12))
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
        logp = torch.logsumexp(logp + log_w[None], dim=-1).float()
        return DensityGrid(latitudes=lats, longitudes=lons, log_density=logp.view(len(self.centres), len(lats), -1))

    def sample(self, num_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(N, num_samples, 2)`` latlon drawn from each image's mixture: a component by weight (the uniform part
        included), then a vMF draw around it (exact, Wood 1994)."""
        n, m = self.weights.shape
        probs = torch.cat([self.weights, self.uniform_weight[:, None]], dim=1).clamp_min(0)
        pick = torch.multinomial(probs, int(num_samples), replacement=True, generator=generator)  # (N, S)
        centre = self._xyz[torch.arange(n)[:, None], pick.clamp(max=m - 1)]  # (N, S, 3)
        kappa = torch.as_tensor(self.kappa, dtype=centre.dtype)
        kappa = kappa[pick.clamp(max=m - 1)] if kappa.ndim else kappa
        xyz = von_mises_fisher_xyz(centre, kappa, 1, generator=generator)[..., 0, :]
        uniform = uniform_sphere_xyz(n * int(num_samples), generator=generator, dtype=xyz.dtype).view_as(xyz)
        return xyz_to_latlon(torch.where((pick == m)[..., None], uniform, xyz))

    def mode_among_centres(self) -> torch.Tensor:
        """``(N, 2)``: the component centre of highest density. Unlike the heaviest single component (a gallery
        argmax), a centre gathers the mass of the near-duplicates around it: the aggregated density's mode."""
        logp = self._log_prob_xyz(self._xyz)
        logp = logp.masked_fill(self.weights <= 0, float("-inf"))
        return xyz_to_latlon(self._xyz[torch.arange(len(logp)), logp.argmax(dim=1)]).float()


def temper(weights: torch.Tensor, power: float) -> torch.Tensor:
    """``w^power`` renormalised to each row's original total: ``power < 1`` spreads a too confident softmax, ``> 1``
    sharpens it (a temperature on the model's scores)."""
    total = weights.sum(dim=1, keepdim=True)
    tempered = weights.clamp_min(0) ** power
    return tempered / tempered.sum(dim=1, keepdim=True).clamp_min(1e-300) * total


@dataclass(frozen=True)
class DensityKernel:
    """How a geolocator's weighted points become its density: weights tempered by ``power``, each point spread by a
    vMF of concentration ``kappa``, and a ``floor`` of the mass for the model's misses, spread uniformly
    (``floor_kappa = 0``) or by a broad vMF of concentration ``floor_kappa`` around the same points (misses land
    near the model's guesses more often than on the far side of the Earth):
    ``p(x) = (1 - floor) sum_j w_j vMF(x; mu_j, kappa) + floor sum_j w_j vMF(x; mu_j, floor_kappa)
    + the weights' own remainder / (4 pi)`` with ``w = temper(weights, power)``."""

    kappa: float
    power: float = 1.0
    floor: float = 0.0
    floor_kappa: float = 0.0

    def __post_init__(self):
        check_number(self.kappa, "kappa", *KAPPA_RANGE)
        check_number(self.power, "power", 0.05, 20.0)
        check_number(self.floor, "floor", 0.0, 0.99)
        if self.floor_kappa:
            check_number(self.floor_kappa, "floor_kappa", *KAPPA_RANGE)

    def mixture(self, centres: torch.Tensor, weights: torch.Tensor) -> KernelMixture:
        weights = temper(torch.as_tensor(weights, dtype=torch.float64), self.power)
        if not self.floor_kappa:
            return KernelMixture(centres, (1 - self.floor) * weights, self.kappa)
        m = weights.shape[1]
        kappa = torch.tensor([self.kappa] * m + [self.floor_kappa] * m, dtype=torch.float64)
        both = torch.cat([(1 - self.floor) * weights, self.floor * weights], dim=1)
        return KernelMixture(torch.cat([centres, centres], dim=1), both, kappa)

    def to_dict(self) -> dict[str, float]:
        out = {"kappa": float(self.kappa), "power": float(self.power), "floor": float(self.floor)}
        return {**out, "floor_kappa": float(self.floor_kappa)} if self.floor_kappa else out

    @classmethod
    def from_dict(cls, config: dict | None, name: str = "density_kernel") -> DensityKernel | None:
        """``None`` -> ``None``; a dict with ``kappa`` (and optionally ``power``, ``floor``, ``floor_kappa``) -> the
        kernel."""
        if config is None:
            return None
        fields = {"kappa", "power", "floor", "floor_kappa"}
        if not isinstance(config, dict) or "kappa" not in config or set(config) - fields:
            raise ValueError(f"{name} must be a dict with kappa (and power, floor, floor_kappa), got {config!r}")
        try:
            return cls(**{k: float(v) for k, v in config.items()})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {err}") from None


def coarse_to_fine_mode(centres: torch.Tensor, weights: torch.Tensor, scales_km=(1000.0, 200.0, 25.0), *,
                        batch_size: int = 64) -> torch.Tensor:  # fmt: skip
    """``(N, 2)``: annealed mode seeking among weighted points ``centres (N, M, 2)`` / ``weights (N, M)``.

    At each scale (coarse to fine) the point of highest density under a vMF kernel of that width (the weights'
    mass within about that distance added up) is found among the points within the previous scale of the previous
    mode. The first scale picks the region holding the most mass (a continent's worth of scattered guesses outweighs
    one sharp but isolated point), the last one the exact place inside it: a best guess that is good at every
    distance threshold at once, where a single-scale mode trades coarse accuracy against fine (the idea of
    predicting a cell, then refining within it, as in PlaNet / PIGEON; here on the model's own weighted points).
    """
    centres = check_latlon(centres, "centres").double()
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if centres.ndim != 3 or weights.shape != centres.shape[:2]:
        raise ValueError(f"centres (N, M, 2) and weights (N, M) must match, got {tuple(centres.shape)} and "
                         f"{tuple(weights.shape)}")  # fmt: skip
    scales = [check_number(km, "scales_km", 0.0, low_open=True) for km in scales_km]
    if not scales:
        raise ValueError("scales_km must hold at least one scale")
    out = []
    for start in range(0, len(centres), batch_size):
        xyz = latlon_to_xyz(centres[start : start + batch_size])  # (b, M, 3)
        w = weights[start : start + batch_size]
        cos = torch.einsum("bmd,bkd->bmk", xyz, xyz).clamp(-1, 1)
        rows = torch.arange(len(xyz))
        allowed = torch.ones_like(w, dtype=torch.bool)
        for km in scales:
            density = torch.einsum("bk,bmk->bm", w, torch.exp(kappa_for_km(km) * (cos - 1)))
            best = density.masked_fill(~allowed, -1.0).argmax(dim=1)
            near = cos[rows, best] >= math.cos(km / EARTH_RADIUS_KM)  # within this scale of the mode
            allowed &= near
            allowed[rows, best] = True
        out.append(centres[start : start + batch_size][rows, best])
    return torch.cat(out).float()
