"""Samplers of the three objectives (arXiv 2412.06781, sec. 3; PLONK's ``riemannian_flow_sampler``,
``flow_sampler``, ``ddim_sampler`` and ``ddpm_sampler``).

Steps follow PLONK: ``t_i = 1 - i / N`` (noise to data), ``gamma_i = schedule(t_i)`` rising from ~0 to 1, and the
network is evaluated at ``gamma_i`` with classifier-free guidance ``(1 + w) psi_c - w psi_0``.

- ``"riemannian"``: ``"euler"`` steps along the exponential map, ``x <- exp_x(dgamma P_x psi)`` (PLONK takes the R³
  step and projects; both are first order); ``"heun"`` averages the tangent velocities at ``x`` and at the Euler
  point (transported back to ``x``) and steps with the exponential map. Samples never leave the sphere.
- ``"flow_r3"``: Euler / Heun in R³ on ``dx/dgamma = psi``; the endpoint is projected to the sphere.
- ``"diffusion_r3"``: ``"euler"`` is DDIM (the Euler method of the probability-flow ODE in DDIM's variables
  ``x / sqrt(gamma)`` and ``sqrt((1 - gamma) / gamma)``), with PLONK's clipping of the x0 estimate to [-1, 1];
  ``"heun"`` is its second-order (Heun) version, with Euler first and last steps (the ODE is singular at gamma = 0
  and 1); ``"ddpm"`` is ancestral sampling (PLONK's formula). The endpoint is projected to the sphere.
"""

from __future__ import annotations

import math

import torch

from geo_models.checks import (
    MAX_GUIDANCE_SCALE,
    MAX_INFERENCE_STEPS,
    check_generator,
    check_int,
    check_noise,
    check_number,
)
from geo_models.flow.field import GuidedField
from geo_models.flow.modeling import GeoAdaLNMLP
from geo_models.flow.objectives import FlowObjective, get_objective
from geo_models.flow.schedules import SigmoidSchedule

__all__ = ["SAMPLERS", "check_sampling_args", "sample_xyz", "sampling_gammas"]

SAMPLERS = ("euler", "heun", "ddpm")


def check_sampling_args(objective: FlowObjective, num_inference_steps, guidance_scale, sampler: str) -> None:
    """ValueError naming the argument for bad steps (a whole number in [1, 10000]), guidance (a finite number in
    [0, 1000]) or sampler, checked before anything is allocated."""
    check_int(num_inference_steps, "num_inference_steps", 1, MAX_INFERENCE_STEPS)
    check_number(guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE_SCALE)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "ddpm" and objective.name != "diffusion_r3":
        raise ValueError(f"sampler 'ddpm' needs the diffusion_r3 objective, not {objective.name!r}")


def sampling_gammas(schedule: SigmoidSchedule, num_inference_steps: int) -> torch.Tensor:
    """``(N + 1,)`` float64 signal levels ``schedule(1 - i / N)``, from ~0 (noise) to 1 (data)."""
    t = 1 - torch.arange(num_inference_steps + 1, dtype=torch.float64) / num_inference_steps
    return schedule(t)


def _exp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exponential map of S² for unit ``x`` and tangent ``v`` (renormalised against drift)."""
    n = v.norm(dim=-1, keepdim=True)
    y = n.cos() * x + torch.sinc(n / math.pi) * v
    return y / y.norm(dim=-1, keepdim=True)


def _tangent(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v - (x * v).sum(-1, keepdim=True) * x


def _transport(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Parallel transport of ``v`` (tangent at ``x``) to ``y`` along the geodesic (the Sphere.transp of PLONK)."""
    denom = 1 + (x * y).sum(-1, keepdim=True)
    res = v - (y * v).sum(-1, keepdim=True) / denom.clamp_min(1e-3) * (x + y)
    return torch.where(denom > 1e-3, res, -v)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def sample_xyz(
    network: GeoAdaLNMLP,
    objective: str | FlowObjective,
    schedule: SigmoidSchedule,
    image_embeddings: torch.Tensor,
    *,
    num_inference_steps: int = 32,
    guidance_scale: float = 0.0,
    sampler: str = "euler",
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one location per row of ``image_embeddings (B, cond_dim)`` -> ``(B, 3)`` unit vectors.

    Args:
        num_inference_steps: number of steps ``N`` in [1, 10000] (PLONK's demo: 32; its tests: 250).
        guidance_scale: classifier-free guidance ``w`` in [0, 1000] (PLONK's ``cfg``; 0 = none, the paper tests 2).
        sampler: ``"euler"``, ``"heun"`` or (diffusion only) ``"ddpm"``.
        generator: CPU generator for the starting noise (and DDPM's step noise).
        latents: ``(B, 3)`` starting noise instead (unit vectors for the Riemannian objective).
    """
    objective = get_objective(objective)
    check_sampling_args(objective, num_inference_steps, guidance_scale, sampler)
    check_generator(generator)
    param = network.initial_mapper.weight
    b = image_embeddings.shape[0]
    if latents is None:
        latents = objective.sample_base(b, generator=generator)
    else:
        check_noise(latents, (b, 3))
    x = latents.to(device=param.device, dtype=param.dtype)
    if objective.on_sphere:
        x = _unit(x)
    field = GuidedField(network, image_embeddings, guidance_scale)
    gammas = sampling_gammas(schedule, num_inference_steps).tolist()
    last = len(gammas) - 2
    for i, (g, g_next) in enumerate(zip(gammas[:-1], gammas[1:])):
        dg = g_next - g
        if objective.name == "riemannian":
            v = _tangent(x, field(x, g))
            if sampler == "heun":
                x1 = _exp(x, dg * v)
                v = 0.5 * (v + _transport(x1, x, _tangent(x1, field(x1, g_next))))
            x = _exp(x, dg * v)
        elif objective.name == "flow_r3":
            v = field(x, g)
            if sampler == "heun":
                v = 0.5 * (v + field(x + dg * v, g_next))
            x = x + dg * v
        else:
            x = _diffusion_step(field, x, g, g_next, sampler, heun_ok=0 < i < last, generator=generator)
    return _unit(x)


def _x0_and_eps(field: GuidedField, x: torch.Tensor, g: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped data estimate and the noise consistent with it (PLONK's DDIM/DDPM)."""
    eps = field(x, g)
    x0 = ((x - math.sqrt(1 - g) * eps) / math.sqrt(g)).clamp(-1, 1)
    return x0, (x - math.sqrt(g) * x0) / math.sqrt(1 - g)


def _diffusion_step(field, x, g, g_next, sampler, *, heun_ok, generator):
    x0, eps = _x0_and_eps(field, x, g)
    if sampler == "ddpm":
        alpha = min(max(g / g_next, 0.0), 1.0)
        mean = (x - (1 - alpha) / math.sqrt(1 - g) * eps) / math.sqrt(alpha)
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x)
        return mean + math.sqrt(1 - alpha) * noise
    x_next = math.sqrt(g_next) * x0 + math.sqrt(1 - g_next) * eps  # DDIM = Euler in (x/sqrt(g), sigma_bar)
    if sampler == "euler" or not heun_ok:
        return x_next
    _, eps_next = _x0_and_eps(field, x_next, g_next)
    # Heun in DDIM's variables: average the slopes (the noise estimates) at both ends of the step.
    return (
        math.sqrt(g_next) * x0
        + math.sqrt(1 - g_next) * eps
        + (math.sqrt(1 - g_next) - math.sqrt(g_next) * math.sqrt((1 - g) / g)) * 0.5 * (eps_next - eps)
    )
