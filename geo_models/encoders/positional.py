"""Positional encodings of coordinates. Each is an ``nn.Module`` exposing ``output_dim`` to size what follows.

Kept apart from the networks (as in MarcCoru/locationencoder): a location encoder is an encoding + a network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geo_models.checks import check_int, check_number
from geo_models.sphere import equal_earth

MAX_FREQUENCIES = 64  # NeRF frequencies 2^k pi, k < 64: beyond float precision long before that
GEOCLIP_EQUAL_EARTH_SCALE = 66.50336  # GeoCLIP rescales Equal Earth x/y by 66.50336 / 180 into [-1, 1]


class EqualEarthProjection(nn.Module):
    """``latlon (..., 2)`` degrees -> Equal Earth ``(..., 2)`` [x, y] times ``scale / 180``: in [-1, 1] for GeoCLIP's
    scale 66.50336 (eq. 1)."""

    output_dim = 2

    def __init__(self, scale: float = GEOCLIP_EQUAL_EARTH_SCALE):
        super().__init__()
        self.scale = scale

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        return (equal_earth(latlon) * self.scale) / 180  # this order: bitwise equal to the official encoder


class RandomFourierFeatures(nn.Module):
    """Random Fourier features ``[cos(2π v Bᵀ), sin(2π v Bᵀ)]`` with ``B ~ N(0, sigma²)`` (Tancik et al. 2020).

    ``B`` is a buffer of shape ``(num_features, in_features)`` saved with the weights (pretrained matrices are loaded,
    never resampled). Drawn from a private generator seeded by ``seed`` so a config always builds the same ``B``.

    Args:
        in_features: width of the input ``v``.
        num_features: rows of ``B``; the output has ``2 * num_features`` columns.
        sigma: standard deviation of ``B``; larger = higher frequencies = finer spatial resolution.
        seed: seed of ``B``.
    """

    def __init__(self, in_features: int = 2, num_features: int = 256, *, sigma: float = 1.0, seed: int = 0):
        super().__init__()
        in_features, num_features = check_int(in_features, "in_features"), check_int(num_features, "num_features")
        if in_features * num_features > 2**31:  # the (num_features, in_features) matrix: 8 GiB in float32
            raise ValueError(f"in_features x num_features must be <= 2^31, got {in_features} x {num_features}")
        sigma = check_number(sigma, "sigma", 0.0, low_open=True)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", -(2**63), 2**64 - 1))
        self.register_buffer("b", torch.randn(num_features, in_features, generator=gen) * sigma)
        self.output_dim = 2 * num_features

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * v.to(self.b.dtype) @ self.b.T
        return torch.cat([proj.cos(), proj.sin()], dim=-1)


class NeRFPositionalEncoding(nn.Module):
    """NeRF encoding ``[sin(2^k π x), cos(2^k π x)]`` for k < ``num_frequencies``, per input column.

    Used by the GPS / angle embedders of GPS-to-image diffusion (10 frequencies, inputs normalised to [-1, 1]);
    ``num_frequencies`` in [1, 64].
    Output ``(..., in_features * 2 * num_frequencies [+ in_features])``.
    """

    def __init__(self, in_features: int = 2, num_frequencies: int = 10, *, include_input: bool = False):
        super().__init__()
        in_features = check_int(in_features, "in_features")
        num_frequencies = check_int(num_frequencies, "num_frequencies", 1, MAX_FREQUENCIES)
        self.register_buffer("freqs", (2.0 ** torch.arange(num_frequencies)) * math.pi, persistent=False)
        self.include_input = include_input
        self.output_dim = in_features * 2 * num_frequencies + (in_features if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.unsqueeze(-1) * self.freqs  # (..., in, F)
        out = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return torch.cat([x, out], dim=-1) if self.include_input else out
