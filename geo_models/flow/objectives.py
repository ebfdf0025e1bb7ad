"""The three generative objectives of "Around the World in 80 Timesteps" (arXiv 2412.06781, sec. 3), one interface.

All three train the same network ``psi(y, gamma, c)`` on points ``x`` (unit vectors) with ``gamma = schedule(t)``,
``t ~ U(0, 1)``, and drop the condition to zeros with probability ``cond_drop_prob`` (0.1) for classifier-free
guidance:

- ``"riemannian"``: Riemannian flow matching on S². Base: uniform on the sphere. ``y = exp_z(gamma log_z(x))`` is
  the point at fraction ``gamma`` of the geodesic from the noise ``z`` to the data ``x``; the target is its velocity
  ``d y / d gamma = theta (-sin(gamma theta) z + cos(gamma theta) e)`` (``theta`` the angle, ``e`` the unit tangent
  at ``z`` towards ``x``), a tangent vector at ``y``.
- ``"flow_r3"``: flow matching in R³. Base: N(0, I_3); ``y = gamma x + (1 - gamma) n``; target ``x - n``.
- ``"diffusion_r3"``: DDPM in R³ (noise prediction). ``y = sqrt(gamma) x + sqrt(1 - gamma) n``; target ``n``.

The loss is the mean squared error over batch and coordinates (PLONK's losses; for the Riemannian objective
the full R³ output is compared with the tangent target, so the normal component is trained to zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from geo_models.flow.schedules import SigmoidSchedule
from geo_models.sphere import check_latlon, latlon_to_xyz, log_map, uniform_sphere_xyz
from geo_models.sphere._checks import as_tensor, check_unit_xyz

__all__ = ["OBJECTIVES", "FlowObjective", "as_xyz", "flow_loss", "get_objective"]

LOG_4PI = math.log(4 * math.pi)


@dataclass(frozen=True)
class FlowObjective:
    """One of :data:`OBJECTIVES`: base distribution, interpolant and regression target.

    Attributes:
        name: ``"riemannian"``, ``"flow_r3"`` or ``"diffusion_r3"``.
        on_sphere: trajectories stay on S² (Riemannian) rather than in R³.
        prediction: what the network predicts, ``"velocity"`` (d y / d gamma) or ``"epsilon"`` (the noise).
    """

    name: str
    on_sphere: bool
    prediction: str

    def sample_base(self, num: int, *, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """``(num, 3)`` noise on the CPU: uniform on S² (Riemannian) or N(0, I_3)."""
        if self.on_sphere:
            return uniform_sphere_xyz(num, generator=generator, dtype=dtype)
        return torch.randn(int(num), 3, generator=generator, dtype=torch.float64).to(dtype)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the base at ``z (N, 3)``: ``-log 4 pi`` (w.r.t. area on the unit sphere) or the standard
        Gaussian in R³ (w.r.t. volume)."""
        if self.on_sphere:
            return torch.full(z.shape[:-1], -LOG_4PI, dtype=z.dtype, device=z.device)
        return -0.5 * (z * z).sum(-1) - 1.5 * math.log(2 * math.pi)

    def interpolate(
        self, x: torch.Tensor, noise: torch.Tensor, gamma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pair at signal level ``gamma (B,)``: ``(y (B, 3), target (B, 3))`` for data ``x`` and ``noise``."""
        g = gamma[:, None]
        if self.name == "riemannian":
            v = log_map(noise, x)  # tangent at the noise, |v| = angle
            theta = v.norm(dim=-1, keepdim=True)
            e = v / theta.clamp_min(1e-12)
            y = torch.cos(g * theta) * noise + torch.sin(g * theta) * e
            target = theta * (-torch.sin(g * theta) * noise + torch.cos(g * theta) * e)
            return y / y.norm(dim=-1, keepdim=True), target
        if self.name == "flow_r3":
            return g * x + (1 - g) * noise, x - noise
        return g.sqrt() * x + (1 - g).sqrt() * noise, noise


OBJECTIVES: dict[str, FlowObjective] = {
    "riemannian": FlowObjective("riemannian", on_sphere=True, prediction="velocity"),
    "flow_r3": FlowObjective("flow_r3", on_sphere=False, prediction="velocity"),
    "diffusion_r3": FlowObjective("diffusion_r3", on_sphere=False, prediction="epsilon"),
}


def get_objective(objective: str | FlowObjective) -> FlowObjective:
    """The :class:`FlowObjective` named ``objective`` (ValueError naming the allowed values)."""
    if isinstance(objective, FlowObjective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {objective!r}")
    return OBJECTIVES[objective]


def as_xyz(points, name: str = "latlon") -> torch.Tensor:
    """``(B, 2)`` latlon degrees or ``(B, 3)`` unit vectors -> ``(B, 3)`` unit vectors (ValueError naming ``name``)."""
    t = as_tensor(points, name)
    if t.ndim != 2 or t.shape[-1] not in (2, 3):
        raise ValueError(
            f"{name} must have shape (B, 2) (latlon degrees) or (B, 3) (unit vectors), got {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if t.shape[-1] == 2:
        return latlon_to_xyz(check_latlon(t, name))
    t = check_unit_xyz(t, name)
    return t / t.norm(dim=-1, keepdim=True)


def flow_loss(
    network,
    objective: str | FlowObjective,
    schedule: SigmoidSchedule,
    x0: torch.Tensor,
    image_embeddings: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    cond_drop_prob: float = 0.1,
) -> torch.Tensor:
    """One training loss (paper sec. 3; PLONK's ``RiemannianFlowMatchingLoss`` / ``FlowMatchingLoss`` / ``DDPMLoss``).

    1. ``t ~ U(0, 1)``, ``gamma = schedule(t)``; noise from the objective's base.
    2. ``(y, target) = objective.interpolate(x0, noise, gamma)``.
    3. Conditions replaced by zeros with probability ``cond_drop_prob`` (classifier-free guidance training).
    4. ``mean((network(y, gamma, c) - target)^2)``.

    Args:
        network: a :class:`~geo_models.flow.modeling.GeoAdaLNMLP`.
        x0: ``(B, 2)`` latlon degrees or ``(B, 3)`` unit vectors.
        image_embeddings: ``(B, cond_dim)``.
        generator: CPU generator for ``t``, the noise and the dropped conditions (reproducible losses).
        cond_drop_prob: probability of the unconditional (zero) condition, in [0, 1].

    Returns:
        A scalar loss.
    """
    objective = get_objective(objective)
    x = as_xyz(x0, "x0")
    cond = torch.as_tensor(image_embeddings)
    if cond.ndim != 2 or cond.shape[0] != x.shape[0]:
        raise ValueError(f"image_embeddings must have shape ({x.shape[0]}, cond_dim) like x0, got {tuple(cond.shape)}")
    if not 0 <= float(cond_drop_prob) <= 1:
        raise ValueError(f"cond_drop_prob must be in [0, 1], got {cond_drop_prob}")
    device, b = cond.device, x.shape[0]
    # 1. Times and noise (drawn on the CPU with the generator)
    t = torch.rand(b, generator=generator, dtype=torch.float64)
    gamma = schedule(t).to(device=device, dtype=torch.float32)
    noise = objective.sample_base(b, generator=generator).to(device)
    # 2. Interpolant and target
    y, target = objective.interpolate(x.to(device=device, dtype=torch.float32), noise, gamma)
    # 3. Classifier-free guidance: drop conditions
    drop = (torch.rand(b, generator=generator) < float(cond_drop_prob)).to(device)
    cond = torch.where(drop[:, None], torch.zeros_like(cond), cond).to(torch.float32)
    # 4. Regression
    out = network(y, gamma, cond).sample
    return (out.float() - target).pow(2).mean()
