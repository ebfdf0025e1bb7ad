"""Multi-scale location encoder: Equal Earth -> random Fourier features at several sigmas -> MLPs -> sum.

This is the GeoCLIP location encoder (GeoCLIP paper, sec. 3.1, eq. 1-3): each branch sees the same projected point
through RFF of its own sigma (2^0, 2^4, 2^8 by default: coarse to fine), an MLP and a linear head; the branch outputs
are summed (not normalised), so the embedding is hierarchical over scales.
"""

from __future__ import annotations

import torch
from torch import nn

from geo_models.checks import check_int, check_number, check_parameter_budget, linear_parameters
from geo_models.encoders.networks import MLP, mlp_parameters
from geo_models.encoders.positional import EqualEarthProjection, RandomFourierFeatures
from geo_models.hub import GeoModelHubMixin
from geo_models.sphere import check_latlon


def check_sigmas(sigmas) -> tuple[float, ...]:
    """A non-empty sequence of finite RFF standard deviations > 0 -> tuple of floats (ValueError naming ``sigmas``)."""
    if isinstance(sigmas, (str, bytes)) or not hasattr(sigmas, "__len__") or not len(sigmas):
        raise ValueError(f"sigmas must list at least one scale (numbers > 0), got {sigmas!r}")
    return tuple(check_number(s, f"sigmas[{i}]", 0.0, low_open=True) for i, s in enumerate(sigmas))


def location_encoder_parameters(sigmas, num_features: int, hidden_dim: int, num_layers: int, output_dim: int) -> int:
    """Parameters (and RFF buffer entries) of a :class:`LocationEncoder` config, without building it."""
    branch = 2 * num_features + mlp_parameters(2 * num_features, hidden_dim, num_layers=num_layers)
    return len(sigmas) * (branch + linear_parameters(hidden_dim, output_dim))


class LocationBranch(nn.Module):
    """One scale: RFF(sigma) -> MLP -> linear head."""

    def __init__(
        self, *, sigma: float, num_features: int, hidden_dim: int, num_layers: int, output_dim: int, seed: int
    ):
        super().__init__()
        self.rff = RandomFourierFeatures(2, num_features, sigma=sigma, seed=seed)
        self.mlp = MLP(self.rff.output_dim, hidden_dim, num_layers=num_layers)
        self.head = nn.Linear(hidden_dim, output_dim)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.rff(projected)))


class LocationEncoder(nn.Module, GeoModelHubMixin):
    """``latlon (N, 2)`` degrees -> ``(N, output_dim)`` location embeddings (unnormalised).

    Args:
        sigmas: RFF standard deviations, one branch each (GeoCLIP: 2^0, 2^4, 2^8).
        num_features: RFF rows per branch (GeoCLIP: 256, so 512 encoded features).
        hidden_dim: MLP width (GeoCLIP: 1024).
        num_layers: ``Linear + ReLU`` blocks per branch (GeoCLIP: 3).
        output_dim: embedding width (GeoCLIP: 512).
        seed: seed of the RFF matrices (each branch offsets it by its index).
    """

    model_type = "location_encoder"

    def __init__(
        self,
        *,
        sigmas: tuple[float, ...] = (2**0, 2**4, 2**8),
        num_features: int = 256,
        hidden_dim: int = 1024,
        num_layers: int = 3,
        output_dim: int = 512,
        seed: int = 0,
    ):
        super().__init__()
        sigmas = check_sigmas(sigmas)
        num_features, hidden_dim = check_int(num_features, "num_features"), check_int(hidden_dim, "hidden_dim")
        num_layers, output_dim = check_int(num_layers, "num_layers"), check_int(output_dim, "output_dim")
        check_parameter_budget(
            location_encoder_parameters(sigmas, num_features, hidden_dim, num_layers, output_dim),
            "sigmas, num_features, hidden_dim, num_layers, output_dim",
            "location encoder",
        )
        seed = check_int(seed, "seed", -(2**63), 2**64 - 1 - len(sigmas))
        self.projection = EqualEarthProjection()
        self.branches = nn.ModuleList(
            LocationBranch(
                sigma=s,
                num_features=num_features,
                hidden_dim=hidden_dim,
                num_layers=num_layers,
                output_dim=output_dim,
                seed=seed + i,
            )
            for i, s in enumerate(sigmas)
        )
        self.output_dim = output_dim

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        latlon = check_latlon(latlon)
        if latlon.ndim != 2:
            raise ValueError(f"latlon must have shape (N, 2), got {tuple(latlon.shape)}")
        param = next(self.parameters())
        projected = self.projection(latlon.to(param.device)).to(param.dtype)
        return sum(branch(projected) for branch in self.branches)
