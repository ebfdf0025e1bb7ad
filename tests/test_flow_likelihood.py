"""Exact likelihoods: closed-form cases, normalisation over the sphere for every objective, conventions, errors."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from geo_models.flow import GeoAdaLNMLP, SphereFlowPipeline
from geo_models.sphere import fibonacci_lattice, latlon_to_xyz
from geo_models.testing import tiny_sphere_flow_pipeline

LOG_4PI = math.log(4 * math.pi)
TOL = dict(atol=1e-5, rtol=1e-5)
TIGHT = dict(atol=1e-6, rtol=1e-6)
POINTS = torch.tensor([[89.0, 0.0], [45.0, 10.0], [0.0, 0.0], [-45.0, 20.0], [-89.0, 0.0]])
EMB = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))


def constant_field_pipeline(objective, b):
    """A network whose output is the constant ``b`` (zero weights, bias ``b``)."""
    net = GeoAdaLNMLP(dim=16, depth=1, expansion=1, cond_dim=16)
    with torch.no_grad():
        net.final_linear.bias.copy_(torch.as_tensor(b))
    return SphereFlowPipeline(net, objective=objective)


def test_zero_field_gives_the_base_density():
    pipe = constant_field_pipeline("riemannian", [0.0, 0.0, 0.0])
    out = pipe.likelihood(POINTS, image_embeddings=EMB)
    assert torch.allclose(out.log_prob, torch.full((5,), -LOG_4PI)) and out.nfe < 50
    assert torch.allclose(out.bits_per_dim, torch.full((5,), LOG_4PI / (2 * math.log(2))))
    assert torch.allclose(out.base, latlon_to_xyz(POINTS), atol=1e-6)  # nothing moves
    r3 = constant_field_pipeline("flow_r3", [0.0, 0.0, 0.0])
    gauss = -0.5 - 1.5 * math.log(2 * math.pi)  # N(0, I_3) on the unit sphere, w.r.t. volume (PLONK's number)
    assert torch.allclose(r3.log_prob(POINTS, image_embeddings=EMB, convention="plonk"), torch.full((5,), gauss))
    # Its radial marginal, the density of the projected samples on S², is uniform.
    assert torch.allclose(r3.log_prob(POINTS, image_embeddings=EMB), torch.full((5,), -LOG_4PI), atol=1e-4)


def test_riemannian_constant_field_matches_closed_form():
    """v = P_x (k e_z): tan(theta/2) shrinks by e^{-k}; p = e^{2k} (1 + u^2)^2 / (1 + e^{2k} u^2)^2 / 4 pi,
    u = tan(theta/2). The Riemannian divergence is -2 k z; PLONK's ambient trace of the constant is 0."""
    k = 1.5
    pipe = constant_field_pipeline("riemannian", [0.0, 0.0, k])
    u = torch.tan(torch.deg2rad(90 - POINTS[:, 0]) / 2)
    expected = -LOG_4PI + 2 * k + 2 * torch.log1p(u**2) - 2 * torch.log1p(math.exp(2 * k) * u**2)
    assert torch.allclose(pipe.log_prob(POINTS, image_embeddings=EMB), expected, atol=2e-4)
    assert torch.allclose(pipe.log_prob(POINTS, image_embeddings=EMB, convention="plonk"), torch.full((5,), -LOG_4PI))


def test_flow_r3_constant_field_matches_closed_form():
    """v = b: the data are N(b, I) in R³; on S² their directions have density int_0^inf r^2 N(r u - b) dr."""
    b = np.array([0.3, -0.2, 0.8])
    pipe = constant_field_pipeline("flow_r3", b)
    xyz = latlon_to_xyz(POINTS).double()
    gauss = -0.5 * ((xyz.numpy() - b) ** 2).sum(-1) - 1.5 * math.log(2 * math.pi)
    assert np.allclose(pipe.log_prob(POINTS, image_embeddings=EMB, convention="plonk").numpy(), gauss, atol=1e-4)

    def radial(u):
        f = lambda r: r * r * math.exp(-0.5 * float(((r * u - b) ** 2).sum())) / (2 * math.pi) ** 1.5  # noqa: E731
        return math.log(quad(f, 0, 50)[0])

    expected = np.array([radial(u) for u in xyz.numpy()])
    assert np.allclose(pipe.log_prob(POINTS, image_embeddings=EMB, **TOL).numpy(), expected, atol=1e-3)


@pytest.mark.parametrize("guidance_scale", [0.0, 2.0])
def test_plonk_convention_is_plonks_algorithm(guidance_scale):
    """PLONK's compute_likelihood (plonk/pipe.py), rewritten from its source: ambient ODE on the raw output,
    vmap(jacrev) trace, schedule in float32, base -log 4 pi at the projected end point."""
    from torch.func import jacrev, vmap
    from torchdiffeq import odeint

    pipe = tiny_sphere_flow_pipeline()
    net, sched, w = pipe.network, pipe.schedule, guidance_scale
    emb = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    x1 = latlon_to_xyz(POINTS[:4])

    def odefunc(t, state):
        t = t.to(state)
        gamma = sched(t)

        def vecfield(x, y):
            out = net(x.reshape(-1, 3), gamma.reshape(-1), y.reshape(-1, 16)).sample
            if w > 0:
                out = out + w * (
                    out - net(x.reshape(-1, 3), gamma.reshape(-1), torch.zeros_like(y).reshape(-1, 16)).sample
                )
            return sched.derivative(t).reshape(-1, 1) * out

        x = state[:, :3]
        div = vmap(lambda xi, yi: torch.trace(jacrev(vecfield)(xi, yi).squeeze(0)))(x, emb)
        return torch.cat([vecfield(x, emb), div[:, None]], dim=-1)

    def plonk(method, **options):
        with torch.no_grad():
            end = odeint(odefunc, torch.cat([x1, torch.zeros(4, 1)], -1), torch.tensor([0.0, 1.0]), **TIGHT,
                         method=method, options=options)[-1]  # fmt: skip
        return -LOG_4PI + end[:, 3]

    # Same fixed-step solver on both sides: the same arithmetic, equal up to float32 rounding.
    expected = plonk("rk4")
    ours = pipe.likelihood(POINTS[:4], image_embeddings=emb, convention="plonk", guidance_scale=w, method="rk4")
    torch.testing.assert_close(ours.log_prob, expected, rtol=0, atol=1e-5)
    # PLONK's own dopri5: adaptive steps accepted or rejected by the last bits of float32 sums, so two correct
    # implementations differ by the solver's global error at tolerance 1e-6 (up to 7e-4 measured on an AVX2 CPU).
    expected = plonk("dopri5", min_step=1e-5)
    ours = pipe.likelihood(POINTS[:4], image_embeddings=emb, convention="plonk", guidance_scale=w, **TIGHT)
    torch.testing.assert_close(ours.log_prob, expected, rtol=0, atol=2e-3)
    sphere = pipe.log_prob(POINTS[:4], image_embeddings=emb, guidance_scale=w, **TIGHT)
    assert (sphere - expected).abs().max() > 1e-2  # the tiny network is not tangent: the conventions differ


@pytest.mark.parametrize("objective, num_points", [("riemannian", 1000), ("flow_r3", 100), ("diffusion_r3", 50)])
def test_tiny_model_density_integrates_to_one(objective, num_points):
    """Quasi-Monte-Carlo over a Fibonacci lattice: mean density x 4 pi = total mass."""
    pipe = tiny_sphere_flow_pipeline(objective)
    logp = pipe.log_prob(fibonacci_lattice(num_points), image_embeddings=EMB, **TOL, batch_size=10**6)
    assert logp.max() - logp.min() > 1.0  # not uniform
    assert abs(float(logp.exp().mean()) * 4 * math.pi - 1) < 0.01


@pytest.mark.parametrize(
    "objective, convention", [("riemannian", "sphere"), ("riemannian", "plonk"), ("flow_r3", "plonk")]
)
def test_gamma_trapezoid_converges_to_the_adaptive_solution(objective, convention):
    """The fixed grid in gamma solves the same ODE: it converges to the tight dopri5 value."""
    pipe = tiny_sphere_flow_pipeline(objective)
    emb = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(image_embeddings=emb, convention=convention, dtype=torch.float64)
    exact = pipe.log_prob(POINTS[:4], atol=1e-9, rtol=1e-9, **kw)
    err = {n: (pipe.log_prob(POINTS[:4], method="gamma_trapezoid", num_steps=n, **kw) - exact).abs().max().item()
           for n in (8, 128)}  # fmt: skip
    assert err[128] < 1e-4 and err[128] < err[8] / 3  # (not monotone in between: the time sinusoids alias)
    out = pipe.likelihood(POINTS[:4], method="gamma_trapezoid", num_steps=32, **kw)
    assert out.nfe == 33 and out.base.shape == (4, 3)
    if objective == "riemannian":
        assert torch.allclose(out.base.norm(dim=-1), torch.ones(4, dtype=torch.float64))


def test_gamma_trapezoid_density_integrates_to_one():
    pipe = tiny_sphere_flow_pipeline()
    logp = pipe.log_prob(fibonacci_lattice(1000), image_embeddings=EMB, method="gamma_trapezoid", num_steps=64)
    assert logp.max() - logp.min() > 1.0 and abs(float(logp.exp().mean()) * 4 * math.pi - 1) < 0.01


def test_grid_quadrature_and_guided_density():
    pipe = tiny_sphere_flow_pipeline()
    grid = pipe.density_grid(image_embeddings=EMB, resolution_deg=6.0, **TOL)
    assert grid.log_density.shape == (1, 30, 60) and grid.latitudes[0] == 87 and grid.longitudes[0] == -177
    assert abs(float(grid.cell_areas().sum()) - 4 * math.pi) < 1e-4
    assert abs(float(grid.integral()[0]) - 1) < 0.01
    guided = pipe.density_grid(image_embeddings=EMB, resolution_deg=6.0, guidance_scale=2.0, **TOL)
    assert abs(float(guided.integral()[0]) - 1) < 0.01  # the guided field is a flow too
    assert not torch.allclose(guided.log_density, grid.log_density, atol=1e-2)


def test_batching_dtypes_conventions_and_shapes():
    pipe = tiny_sphere_flow_pipeline()
    emb = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    latlon = torch.tensor([[10.0, 20.0], [-30.0, 100.0], [60.0, -120.0]])
    one = pipe.likelihood(latlon, image_embeddings=emb, **TOL)
    assert one.log_prob.shape == (3,) and one.nfe > 0
    # dopri5's global error is ~1e-3 nats at tolerance 1e-5 here (a few 1e-4 at 1e-6): other step sequences (dtype,
    # chunking) differ by about that much.
    f64 = pipe.log_prob(latlon, image_embeddings=emb, dtype=torch.float64, **TOL)
    assert f64.dtype == torch.float64 and pipe.network.dtype == torch.float32  # a float64 copy solved it
    assert torch.allclose(one.log_prob.double(), f64, atol=5e-3)
    chunked = pipe.log_prob(latlon, image_embeddings=emb, batch_size=1, **TOL)
    assert torch.allclose(one.log_prob, chunked, atol=5e-3)
    many = pipe.log_prob(latlon[None].expand(3, -1, -1), image_embeddings=emb, **TOL)  # (N, K, 2): K per image
    assert many.shape == (3, 3) and torch.allclose(many.diagonal(), one.log_prob, atol=5e-3)
    broadcast = pipe.log_prob(latlon, image_embeddings=emb[:1], **TOL)  # one image for all rows
    assert torch.allclose(broadcast[0], one.log_prob[0], atol=5e-3)
    plonk = pipe.likelihood(latlon, image_embeddings=emb, convention="plonk", **TOL)
    assert torch.allclose(plonk.bits_per_dim, -plonk.log_prob / (3 * math.log(2)))
    assert (plonk.log_prob - one.log_prob).abs().max() > 1e-3  # the tiny network is not tangent: conventions differ


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"latlon": [[100.0, 0.0]]}, "latlon"),
        ({"latlon": [[float("nan"), 0.0]]}, "latlon"),
        ({"latlon": torch.zeros(0, 2)}, "latlon"),
        ({"latlon": torch.zeros(2, 4)}, "latlon"),
        ({"image_embeddings": torch.randn(1, 15)}, "image_embeddings"),
        ({"image_embeddings": torch.randn(2, 16)}, "image_embeddings"),
        ({"image_embeddings": torch.full((1, 16), float("nan"))}, "image_embeddings"),
        ({"image_embeddings": torch.zeros(0, 16)}, "image_embeddings"),
        ({"convention": "geoopt"}, "convention"),
        ({"atol": 0.0}, "atol"),
        ({"batch_size": 0}, "batch_size"),
        ({"radial_nodes": 0, "objective": "flow_r3"}, "radial_nodes"),
        ({"method": "gamma_trapezoid", "num_steps": 0}, "num_steps"),
        ({"method": "gamma_trapezoid", "num_steps": 2.5}, "num_steps"),
        ({"method": "gamma_trapezoid", "objective": "diffusion_r3"}, "method"),
    ],
)
def test_bad_inputs(kwargs, name):
    pipe = tiny_sphere_flow_pipeline(kwargs.pop("objective", "riemannian"))
    args = {"latlon": [[0.0, 0.0]], "image_embeddings": EMB, **kwargs}
    with pytest.raises(ValueError, match=name):
        pipe.log_prob(args.pop("latlon"), **args)
