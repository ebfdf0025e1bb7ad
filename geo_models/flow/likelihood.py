"""Exact log-likelihoods of the three objectives by the probability-flow ODE (arXiv 2412.06781, sec. 3.4).

The ODE runs from the data (``t = 0``) to the noise (``t = 1``) with the log-density change
``log p_data(x) = log p_base(z) + int_0^1 div f(x_t, t) dt`` carried as a 4th state coordinate, solved for all points
in one batched call (torchdiffeq, ``dopri5`` by default). The 3x3 Jacobian comes with every field evaluation from one
fused forward-mode pass (:meth:`GeoAdaLNMLP.trunk_with_jacobian`), so the divergence is exact (no Hutchinson).

``convention="sphere"`` (default): densities with respect to **area on the unit sphere** (uniform = 1 / 4 pi):

- ``"riemannian"``: ``f = gamma'(t) P_x psi(x)`` on S² (``P_x = I - x x^T``). Its divergence is the Riemannian
  (surface) divergence ``div_S f = gamma' (tr(P J) - 2 <x, psi>)`` with ``J = d psi / d x`` (for a field ``V`` in
  R³ restricted to the unit sphere, ``div_S (P V) = tr(P J_V) - 2 <x, V>``; the second term is the mean curvature
  of S² times the normal part of ``V``). ``tr(P J) = u_1^T J u_1 + u_2^T J u_2`` over a tangent-plane basis, so an
  evaluation pushes 2 tangents through the network, not 3. The field is evaluated at ``x / |x|`` so solver drift
  off the sphere does not change it. Base: ``-log 4 pi``.
- ``"flow_r3"`` / ``"diffusion_r3"``: the models live in R³ and their samples are projected to the sphere, so their
  density on S² is the radial marginal ``p_S(u) = int_0^inf p(r u) r^2 dr`` of the R³ density, computed by
  composite Gauss-Legendre quadrature in ``log r`` over ``r`` in [1e-3, 1e3] (:data:`RADIAL_EDGES`, 22 panels,
  ``radial_nodes`` per panel; every node is one more row of the same batched ODE, so this costs ~88x a Riemannian
  likelihood). Exact up to that quadrature: the panels around ``r = 1`` are 0.02 wide, so a trained model whose
  mass sits on a thinner shell needs more nodes per panel (pass ``radial_nodes``). The R³ density: flow
  ``f = gamma' psi``, base N(0, I_3); diffusion the probability-flow ODE of the VP SDE
  ``f = -1/2 beta (x - eps / sqrt(1 - gamma))``, ``beta = -gamma' / gamma``, integrated in ``s = sqrt(t)`` (which
  removes the ``1 / sqrt(t)`` singularity at the data end) from ``t = 1e-8`` to the ``t_max`` where
  ``gamma = 1e-4``, base N(0, I_3) there (the true marginal up to O(1e-4); the ODE is singular at ``gamma = 0``).
  Any such density integrates to 1 over S² (a flow pushes a normalised base forward), but an untrained diffusion
  model, whose noise prediction is not ``x`` at ``gamma -> 0``, expands the base by ``~1 / sqrt(gamma_min)`` (its
  mass sits at ``r ~ 100``, hence the panels out to 1000).

``convention="plonk"`` reproduces PLONK's ``compute_likelihood`` (``plonk/pipe.py``, in nats): the ODE in R³ on the
unprojected network output (``f = gamma' psi``, or for diffusion its ``-1/2 (alpha x - |alpha| psi)`` with
``alpha = -gamma' / (1e-6 + gamma)``), the ambient trace ``tr(J)`` as divergence, and base ``-log 4 pi`` at the
projected endpoint (Riemannian) or the standard Gaussian in R³ (R³ objectives: a density w.r.t. volume in R³ at a
point of the sphere, not a density on S²; its diffusion drift omits the ``1 / sqrt(1 - gamma)`` of the exact
probability-flow ODE). Use it to compare with PLONK's numbers; its Riemannian value equals the S² density only
when ``psi`` is tangent and radially constant.

Bits per dimension: ``bits_per_dim = -log_prob / (d ln 2)`` with ``d = 2`` (S² is 2-dimensional) for "sphere" and
``d = 3`` for "plonk" (PLONK returns ``+log_prob / (3 ln 2)`` by default).

Accuracy: the sinusoidal time embedding (of ``1000 gamma``) makes the field oscillate in time, so at
``atol = rtol = 1e-6`` dopri5's global error in ``log p`` is a few 1e-4 nats (1e-3 at 1e-5) on a random network and
up to ~3e-3 on the demo's trained starter model (float32, against float64 at 1e-9; ~4e-5 at 1e-7, which takes ~1.8x
the evaluations); two solvers with different step sequences (dtype, chunking, another implementation) agree to about
that. ``method="gamma_trapezoid"`` trades the adaptive steps for a fixed grid uniform in ``gamma``
(:func:`_trapezoid_in_gamma`).
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from geo_models.checks import MAX_GUIDANCE_SCALE, check_int, check_number
from geo_models.flow.field import GuidedField
from geo_models.flow.modeling import GeoAdaLNMLP
from geo_models.flow.objectives import FlowObjective, get_objective
from geo_models.flow.schedules import SigmoidSchedule
from geo_models.sphere.manifold import tangent_basis

__all__ = [
    "CONVENTIONS",
    "GAMMA_GRID_METHOD",
    "MAX_ODE_STEPS",
    "MAX_RADIAL_NODES",
    "RADIAL_EDGES",
    "LikelihoodOutput",
    "exact_log_prob",
    "radial_quadrature",
]

CONVENTIONS = ("sphere", "plonk")
GAMMA_GRID_METHOD = "gamma_trapezoid"  # fixed uniform grid in gamma (:func:`_trapezoid_in_gamma`), not torchdiffeq
# Panel edges in r of the radial quadrature (Gauss-Legendre in log r): fine around the unit sphere, where trained R³
# models put their mass, and out to r = 1000, where an untrained diffusion model puts it (its probability-flow ODE
# expands the base by ~1 / sqrt(gamma_min) when the noise prediction is inconsistent).
RADIAL_EDGES = (
    1e-3,
    1e-2,
    0.1,
    0.3,
    0.6,
    0.8,
    0.9,
    0.95,
    0.98,
    1.0,
    1.02,
    1.05,
    1.1,
    1.25,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
    100.0,
    300.0,
    1000.0,
)
MAX_RADIAL_NODES = 64  # Gauss-Legendre nodes per radial panel: 22 panels x 64 = 1408 ODE rows per point at most
MAX_ODE_STEPS = 100_000  # fixed steps of "gamma_trapezoid" (its docs: 1024 steps reach 0.016 nats)
DIFFUSION_T_MIN = 1e-8
DIFFUSION_GAMMA_MIN = 1e-4  # gamma at the noise end of the exact diffusion ODE (it is singular at 0)


@dataclass
class LikelihoodOutput(BaseOutput):
    """``log_prob (N,)`` nats; ``bits_per_dim (N,)`` = ``-log_prob / (d ln 2)``; ``nfe``: network evaluations
    (field + Jacobian) of the solver; ``base (N, 3)``: where each point lands at the noise end (first radial node
    for radial marginals)."""

    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int
    base: torch.Tensor


def radial_quadrature(nodes_per_panel: int = 4, edges=RADIAL_EDGES) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``r (K,)`` and log-weights ``(K,)`` (float64) with ``int g(r) r^2 dr ~ sum exp(log_w) g(r)`` over
    ``[edges[0], edges[-1]]``: composite Gauss-Legendre in ``log r`` (``r^2 dr = r^3 d log r``)."""
    if isinstance(nodes_per_panel, bool) or not isinstance(nodes_per_panel, int) or nodes_per_panel < 1:
        raise ValueError(f"radial_nodes must be an integer >= 1, got {nodes_per_panel!r}")
    if nodes_per_panel > MAX_RADIAL_NODES:
        raise ValueError(f"radial_nodes must be <= {MAX_RADIAL_NODES} (nodes per panel), got {nodes_per_panel}")
    x, w = np.polynomial.legendre.leggauss(nodes_per_panel)
    s, ws = [], []
    for a, b in zip(np.log(edges[:-1]), np.log(edges[1:])):
        s.append((b - a) / 2 * x + (a + b) / 2)
        ws.append((b - a) / 2 * w)
    s, ws = np.concatenate(s), np.concatenate(ws)
    return torch.from_numpy(np.exp(s)), torch.from_numpy(np.log(ws) + 3 * s)


def _t_for_gamma(schedule: SigmoidSchedule, gamma: float) -> float:
    """``t`` with ``schedule(t) = gamma`` (inverting the sigmoid)."""
    s = schedule.v_end - gamma * (schedule.v_end - schedule.v_start)
    return (schedule.tau * math.log(s / (1 - s)) - schedule.start) / (schedule.end - schedule.start)


class _Drift:
    """``d(x, logdet)/d(time)`` of one objective and convention; counts evaluations."""

    def __init__(self, field: GuidedField, objective: FlowObjective, schedule: SigmoidSchedule, convention: str):
        self.field, self.objective, self.schedule, self.convention = field, objective, schedule, convention
        self.sqrt_time = objective.name == "diffusion_r3" and convention == "sphere"  # time variable s = sqrt(t)
        self.nfe = 0

    def per_gamma(self, x: torch.Tensor, gamma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dx / dgamma (B, 3), d logdet / dgamma (B,))`` of the objectives whose drift is ``gamma'(t)`` times the
        field (Riemannian, flow_r3); one field + Jacobian evaluation."""
        self.nfe += 1
        if self.objective.name == "riemannian" and self.convention == "sphere":
            xh = x / x.norm(dim=-1, keepdim=True)
            u = torch.stack(tangent_basis(xh), dim=1)  # tr(P J) = u_1^T J u_1 + u_2^T J u_2: 2 tangents instead of 3
            v, ju = self.field.with_jacobian(xh, gamma, directions=u)
            xv = (xh * v).sum(-1)
            div = torch.einsum("bki,bik->b", u, ju) - 2 * xv
            return v - xv[:, None] * xh, div
        v, jac = self.field.with_jacobian(x, gamma)
        return v, jac.diagonal(dim1=1, dim2=2).sum(-1)

    def __call__(self, time: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # PLONK evaluates the schedule in the state's dtype; so does its convention here (same steps, same numbers).
        t = time.to(state.dtype) if self.convention == "plonk" else time.double()
        t = t**2 if self.sqrt_time else t
        gamma, dgamma = self.schedule(t), self.schedule.derivative(t)
        x = state[:, :3]
        if self.objective.name != "diffusion_r3":
            v, div = self.per_gamma(x, gamma)
            return torch.cat([float(dgamma) * v, float(dgamma) * div[:, None]], dim=1)
        self.nfe += 1
        if self.convention == "plonk":
            eps, jac = self.field.with_jacobian(x, gamma)
            alpha = float(self.schedule.plonk_alpha(t))
            dx = -0.5 * (alpha * x - abs(alpha) * eps)
            ddiv = -0.5 * (3 * alpha - abs(alpha) * jac.diagonal(dim1=1, dim2=2).sum(-1))
        else:
            eps, jac = self.field.with_jacobian(x, gamma)
            beta = float(-dgamma / gamma)
            inv_sigma = float(self.schedule.one_minus_gamma(t).rsqrt())
            dx = -0.5 * beta * (x - inv_sigma * eps)
            ddiv = -0.5 * beta * (3 - inv_sigma * jac.diagonal(dim1=1, dim2=2).sum(-1))
            if self.sqrt_time:  # dt = 2 s ds
                dx, ddiv = 2 * float(time) * dx, 2 * float(time) * ddiv
        return torch.cat([dx, ddiv[:, None]], dim=1)


def _trapezoid_in_gamma(drift: _Drift, xyz: torch.Tensor, schedule: SigmoidSchedule, num_steps: int):
    """Integrate ``d(x, logdet)/dgamma`` over a uniform grid of ``num_steps`` steps in ``gamma``, from
    ``gamma(0) = 1`` (data) to ``gamma(1)`` (noise): trapezoidal predictor-corrector for ``x`` (Euler predictor,
    trapezoidal corrector, one field + Jacobian evaluation per node, PEC) and the trapezoidal rule for ``logdet`` on
    the same nodes -> ``(x_end, logdet)``.

    Why ``gamma`` and a uniform grid: the field depends on time only through sinusoids of ``1000 gamma`` (PLONK's
    time embedding), so along a trajectory it is band-limited in ``gamma`` (fastest channel ~159 cycles over
    [0, 1]; on a random YFCC-size network its spectrum falls ~10x above 256 cycles), and equispaced samples are
    the efficient quadrature for band-limited integrands; an adaptive Runge-Kutta pair in ``t`` spends ~6.8
    evaluations per cycle of that channel. The trajectory itself barely sees the fast sinusoids (their integral
    moves ``x`` by ~1e-5), so the trapezoidal corrector tracks it at the same nodes."""
    g0 = float(schedule(torch.tensor(0.0, dtype=torch.float64)))
    g1 = float(schedule(torch.tensor(1.0, dtype=torch.float64)))
    grid = torch.linspace(g0, g1, num_steps + 1, dtype=torch.float64)
    h = (g1 - g0) / num_steps  # < 0: gamma falls from data to noise
    x = xyz
    f, div = drift.per_gamma(x, grid[0])
    logdet = 0.5 * h * div.double()
    for n in range(1, num_steps + 1):
        x_pred = x + h * f
        f_next, div = drift.per_gamma(x_pred, grid[n])
        x = x + (0.5 * h) * (f + f_next)
        f = f_next
        logdet = logdet + (0.5 * h if n == num_steps else h) * div.double()
    return x, logdet.to(xyz.dtype)


@torch.no_grad()
def _solve(
    network, objective, schedule, xyz, image_embeddings, *, guidance_scale, convention, method, atol, rtol, num_steps
):
    """Pointwise log-density at ``xyz (M, 3)`` (on S² for the Riemannian "sphere" case, else in R³) -> ``(M,)``."""
    from torchdiffeq import odeint

    field = GuidedField(network, image_embeddings, guidance_scale)
    drift = _Drift(field, objective, schedule, convention)
    if method == GAMMA_GRID_METHOD:
        z, logdet = _trapezoid_in_gamma(drift, xyz, schedule, num_steps)
    else:
        if drift.sqrt_time:
            t_max = _t_for_gamma(schedule, DIFFUSION_GAMMA_MIN)
            span = [math.sqrt(DIFFUSION_T_MIN), math.sqrt(t_max)]
        else:
            span = [0.0, 1.0]
        state = torch.cat([xyz, torch.zeros_like(xyz[:, :1])], dim=1)
        adaptive = method in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
        options = {"min_step": 1e-5} if convention == "plonk" and adaptive else {}
        end = odeint(
            drift, state, torch.tensor(span, dtype=torch.float64), method=method, atol=atol, rtol=rtol, options=options
        )[-1]
        z, logdet = end[:, :3], end[:, 3]
    if objective.on_sphere:
        z = z / z.norm(dim=-1, keepdim=True)
    return objective.base_log_prob(z) + logdet, z, drift.nfe


def exact_log_prob(
    network: GeoAdaLNMLP,
    objective: str | FlowObjective,
    schedule: SigmoidSchedule,
    xyz: torch.Tensor,
    image_embeddings: torch.Tensor,
    *,
    guidance_scale: float = 0.0,
    convention: str = "sphere",
    method: str = "dopri5",
    atol: float = 1e-6,
    rtol: float = 1e-6,
    radial_nodes: int = 4,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    num_steps: int = 256,
) -> LikelihoodOutput:
    """Exact log-density of unit vectors ``xyz (N, 3)`` given ``image_embeddings (N, cond_dim)`` (module docstring).

    Args:
        guidance_scale: evaluate the guided field ``(1 + w) psi_c - w psi_0`` (0: the model's own density).
        convention: ``"sphere"`` (densities on S² w.r.t. area) or ``"plonk"`` (PLONK's numbers).
        method, atol, rtol: torchdiffeq solver and tolerances (PLONK: dopri5, 1e-6, 1e-6), or
            ``method="gamma_trapezoid"``: ``num_steps`` fixed steps, uniform in ``gamma`` (:func:`_trapezoid_in_gamma`;
            tolerances unused; Riemannian and flow_r3 objectives). On PLONK's YFCC-size network with random weights
            (``bench/bench_flow_plonk.py``), 256 steps land within 4.5e-4 nats of the 512-step values with ~4x
            fewer evaluations than dopri5 at 1e-6; fewer steps alias the fast sinusoids (192 steps: 2e-3 off).
            Not a default: on a *trained* model it converges slowly (the demo's starter model: 0.27 nats off at 256
            steps, 0.016 at 1024, where dopri5 at 1e-6 is within 2e-3 with ~1100 evaluations, a quarter of them in
            the last tenth of ``gamma`` before the data); check a few points against dopri5 before relying on it.
        num_steps: steps of ``"gamma_trapezoid"`` (``num_steps + 1`` field + Jacobian evaluations), at most 100,000.
        radial_nodes: Gauss-Legendre nodes per radial panel (R³ objectives, "sphere" convention), at most 64.
        batch_size: ODE rows per solve (default: all points in one solve); a point of an R³ objective under the
            "sphere" convention is one row per radial node.
        dtype: solve in this dtype (e.g. ``torch.float64``; a converted copy of the network is used).
    """
    objective = get_objective(objective)
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if method == GAMMA_GRID_METHOD:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= MAX_ODE_STEPS:
            raise ValueError(f"num_steps must be an integer in [1, {MAX_ODE_STEPS}], got {num_steps!r}")
        if objective.name == "diffusion_r3":
            raise ValueError(
                f"method={GAMMA_GRID_METHOD!r} needs an ODE that is gamma'(t) times the network's field (riemannian, "
                f"flow_r3); the {objective.name} probability-flow ODE is singular at gamma = 0: use method='dopri5'"
            )
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"atol and rtol must be finite numbers > 0, got {name}={tol!r}")
    guidance_scale = check_number(guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE_SCALE)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be None or a floating-point torch.dtype (torch.float64), got {dtype!r}")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size")
    if dtype is not None and dtype != network.dtype:
        network = torch.nn.Module.to(copy.deepcopy(network), dtype)  # (ModelMixin.to warns about fp32 modules)
    param = network.initial_mapper.weight
    xyz, emb = xyz.to(param.device, param.dtype), image_embeddings.to(param.device, param.dtype)
    n = len(xyz)
    radial = not objective.on_sphere and convention == "sphere"
    k = 1
    if radial:
        r, log_w = radial_quadrature(radial_nodes)
        r, log_w, k = r.to(param.device, param.dtype), log_w.to(param.device, param.dtype), len(r)
    step = n if batch_size is None else max(1, int(batch_size) // k)  # points per solve
    kwargs = dict(
        guidance_scale=guidance_scale, convention=convention, method=method, atol=atol, rtol=rtol, num_steps=num_steps
    )
    logps, bases, nfe = [], [], 0
    for s in range(0, n, step):
        x, e = xyz[s : s + step], emb[s : s + step]
        if radial:  # rows point-major: (b * K, 3)
            pts = (x[:, None] * r[None, :, None]).reshape(-1, 3)
            lp, z, calls = _solve(network, objective, schedule, pts, e.repeat_interleave(k, 0), **kwargs)
            lp = torch.logsumexp(lp.view(-1, k) + log_w, dim=1)
            z = z.view(-1, k, 3)[:, 0]
        else:
            lp, z, calls = _solve(network, objective, schedule, x, e, **kwargs)
        logps.append(lp)
        bases.append(z)
        nfe += calls
    log_prob = torch.cat(logps)
    d = 2 if convention == "sphere" else 3
    return LikelihoodOutput(
        log_prob=log_prob, bits_per_dim=-log_prob / (d * math.log(2)), nfe=nfe, base=torch.cat(bases)
    )
