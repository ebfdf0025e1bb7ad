"""The sigmoid noise schedule of "Around the World in 80 Timesteps" (Dufour et al. 2025, arXiv 2412.06781).

Time ``t`` runs from data (``t = 0``) to noise (``t = 1``); the schedule maps it to the signal level ``gamma(t)``,
which falls from 1 to 0 and is what the network sees as its time input (PLONK's ``SigmoidScheduler``):

    gamma(t) = (sigmoid(end / tau) - sigmoid((start + t (end - start)) / tau))
               / (sigmoid(end / tau) - sigmoid(start / tau))

clamped to ``[clip_min, 1]``. ``gamma`` is the interpolation weight of the data in flow matching
(``x_gamma = gamma x_data + (1 - gamma) x_noise`` in R³, the geodesic fraction on S²) and the signal variance
``abar`` of diffusion (``x = sqrt(gamma) x_data + sqrt(1 - gamma) noise``). PLONK uses ``start=-7, end=3, tau=1``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SigmoidSchedule"]


class SigmoidSchedule:
    """``gamma(t)``, its derivative and ``1 - gamma(t)`` (computed without cancellation near ``t = 0``).

    Args:
        start: sigmoid argument at ``t = 0`` (PLONK: -7).
        end: sigmoid argument at ``t = 1`` (PLONK: 3).
        tau: temperature of the sigmoid.
        clip_min: lower clamp of ``gamma`` (the unclamped value is exactly 0 at ``t = 1``).

    Example:
        >>> s = SigmoidSchedule()
        >>> t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
        >>> s(t)
        tensor([1.0000e+00, 8.7570e-01, 1.0000e-09], dtype=torch.float64)
    """

    def __init__(self, *, start: float = -7.0, end: float = 3.0, tau: float = 1.0, clip_min: float = 1e-9):
        for name, value in (("start", start), ("end", end), ("tau", tau), ("clip_min", clip_min)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value}")
        if not float(end) > float(start):
            raise ValueError(f"end must be > start, got start={start}, end={end}")
        if not float(tau) > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0 <= float(clip_min) < 1:
            raise ValueError(f"clip_min must be in [0, 1), got {clip_min}")
        self.start, self.end, self.tau, self.clip_min = float(start), float(end), float(tau), float(clip_min)
        self.v_start = 1 / (1 + math.exp(-self.start / self.tau))
        self.v_end = 1 / (1 + math.exp(-self.end / self.tau))

    def config(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end, "tau": self.tau, "clip_min": self.clip_min}

    def __repr__(self) -> str:
        return f"SigmoidSchedule(start={self.start}, end={self.end}, tau={self.tau}, clip_min={self.clip_min})"

    def _arg(self, t: torch.Tensor) -> torch.Tensor:
        return (t * (self.end - self.start) + self.start) / self.tau

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """``gamma(t)`` in ``[clip_min, 1]``, same shape and dtype as ``t``."""
        out = (self.v_end - torch.sigmoid(self._arg(t))) / (self.v_end - self.v_start)
        return out.clamp(min=self.clip_min, max=1.0)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        """``d gamma / dt`` (< 0), of the unclamped formula (as PLONK)."""
        s = torch.sigmoid(self._arg(t))
        return -(self.end - self.start) * s * (1 - s) / (self.tau * (self.v_end - self.v_start))

    def one_minus_gamma(self, t: torch.Tensor) -> torch.Tensor:
        """``1 - gamma(t)`` without cancellation, from
        ``sigmoid(a) - sigmoid(b) = e^-b (1 - e^-(a-b)) / ((1 + e^-a)(1 + e^-b))`` with ``b = start / tau``, so
        ``sqrt(1 - gamma)`` is accurate for ``t`` down to 1e-12 (the diffusion ODE divides by it)."""
        a, b = self._arg(t), self.start / self.tau
        diff = -torch.expm1(-(a - b)) * math.exp(-b) / ((1 + torch.exp(-a)) * (1 + math.exp(-b)))
        return (diff / (self.v_end - self.v_start)).clamp(min=0.0, max=1.0 - self.clip_min)

    def plonk_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """PLONK's ``alpha(t) = -gamma'(t) / (1e-6 + gamma(t))`` (the ``beta`` of its diffusion likelihood)."""
        return -self.derivative(t) / (1e-6 + self(t))
