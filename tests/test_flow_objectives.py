"""Sigmoid schedule, interpolants and targets of the three objectives, and the training loss."""

import math

import pytest
import torch

from geo_models.flow import OBJECTIVES, SigmoidSchedule, flow_loss, get_objective
from geo_models.sphere import latlon_to_xyz, uniform_sphere_xyz
from geo_models.testing import tiny_sphere_flow_pipeline


def test_sigmoid_schedule_values_and_derivative():
    s = SigmoidSchedule()
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    g = s(t)
    assert g[0] == 1 and g[-1] == 1e-9 and (g[1:] <= g[:-1]).all()
    # PLONK's formula at t = 0.5: (sigmoid(3) - sigmoid(-2)) / (sigmoid(3) - sigmoid(-7))
    sig = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    assert float(s(torch.tensor(0.5, dtype=torch.float64))) == pytest.approx(
        (sig(3) - sig(-2)) / (sig(3) - sig(-7)), rel=1e-12
    )
    h = 1e-6
    fd = (s(t[1:-1] + h) - s(t[1:-1] - h)) / (2 * h)
    assert torch.allclose(s.derivative(t[1:-1]), fd, rtol=1e-6)
    # 1 - gamma without cancellation near the data end
    small = torch.tensor([1e-12, 1e-9, 1e-3, 0.5], dtype=torch.float64)
    assert torch.allclose(s.one_minus_gamma(small)[2:], 1 - s(small)[2:], rtol=1e-9)
    assert torch.allclose(s.one_minus_gamma(small)[:2], -s.derivative(torch.zeros(2, dtype=torch.float64)) * small[:2],
                          rtol=1e-3)  # fmt: skip
    for kwargs, name in [({"start": 3, "end": 3}, "end"), ({"tau": 0}, "tau"), ({"clip_min": 1}, "clip_min")]:
        with pytest.raises(ValueError, match=name):
            SigmoidSchedule(**kwargs)


def test_riemannian_interpolant_is_the_geodesic_and_its_velocity():
    obj = get_objective("riemannian")
    g = torch.Generator().manual_seed(0)
    x = uniform_sphere_xyz(64, generator=g, dtype=torch.float64)
    z = uniform_sphere_xyz(64, generator=g, dtype=torch.float64)
    gamma = torch.rand(64, generator=g, dtype=torch.float64)
    y, u = obj.interpolate(x, z, gamma)
    assert torch.allclose(y.norm(dim=-1), torch.ones(64, dtype=torch.float64))
    assert (y * u).sum(-1).abs().max() < 1e-12  # tangent target
    y0, _ = obj.interpolate(x, z, torch.zeros(64, dtype=torch.float64))
    y1, _ = obj.interpolate(x, z, torch.ones(64, dtype=torch.float64))
    assert torch.allclose(y0, z, atol=1e-12) and torch.allclose(y1, x, atol=1e-12)
    h = 1e-6
    fd = (obj.interpolate(x, z, gamma + h)[0] - obj.interpolate(x, z, gamma - h)[0]) / (2 * h)
    assert torch.allclose(u, fd, atol=1e-7)
    angle = torch.atan2(torch.linalg.cross(x, z).norm(dim=-1), (x * z).sum(-1))
    assert torch.allclose(u.norm(dim=-1), angle)  # constant speed = geodesic distance


def test_r3_interpolants():
    x, n, gamma = torch.randn(8, 3), torch.randn(8, 3), torch.rand(8)
    y, target = get_objective("flow_r3").interpolate(x, n, gamma)
    assert torch.allclose(y, gamma[:, None] * x + (1 - gamma[:, None]) * n) and torch.allclose(target, x - n)
    y, target = get_objective("diffusion_r3").interpolate(x, n, gamma)
    assert torch.allclose(y, gamma[:, None].sqrt() * x + (1 - gamma[:, None]).sqrt() * n) and torch.equal(target, n)
    assert get_objective("diffusion_r3").prediction == "epsilon"
    with pytest.raises(ValueError, match="objective"):
        get_objective("flow_s2")


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_loss_is_finite_seeded_and_trains(objective):
    pipe = tiny_sphere_flow_pipeline(objective)
    latlon = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [40.7, -74.0], [0.0, 0.0]])
    emb = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    a = pipe.loss(latlon, emb, torch.Generator().manual_seed(0))
    b = pipe.loss(latlon_to_xyz(latlon), emb, torch.Generator().manual_seed(0))  # xyz input is the same data
    assert a.ndim == 0 and torch.isfinite(a) and torch.allclose(a, b, atol=1e-6)
    a.backward()
    assert pipe.network.final_linear.weight.grad.abs().sum() > 0


def test_condition_dropout(monkeypatch):
    pipe = tiny_sphere_flow_pipeline()
    seen = []
    forward = pipe.network.forward

    def spy(sample, gamma, image_embeddings, return_dict=True):
        seen.append(image_embeddings.clone())
        return forward(sample, gamma, image_embeddings, return_dict)

    monkeypatch.setattr(pipe.network, "forward", spy)
    emb = torch.ones(2000, 16)
    flow_loss(pipe.network, "riemannian", pipe.schedule, torch.zeros(2000, 2), emb, torch.Generator().manual_seed(0))
    dropped = (seen[0] == 0).all(dim=1).float().mean()
    assert 0.08 < dropped < 0.12 and ((seen[0] == 0).all(1) | (seen[0] == 1).all(1)).all()
    flow_loss(pipe.network, "riemannian", pipe.schedule, torch.zeros(4, 2), emb[:4], cond_drop_prob=1.0)
    assert (seen[1] == 0).all()


def test_loss_bad_inputs():
    pipe = tiny_sphere_flow_pipeline()
    emb = torch.randn(2, 16)
    with pytest.raises(ValueError, match="x0"):
        pipe.loss(torch.tensor([[100.0, 0.0], [0.0, 0.0]]), emb)
    with pytest.raises(ValueError, match="x0"):
        pipe.loss(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]), emb)
    with pytest.raises(ValueError, match="x0"):
        pipe.loss(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]), emb)  # not unit vectors
    with pytest.raises(ValueError, match="image_embeddings"):
        pipe.loss(torch.zeros(2, 2), torch.randn(2, 15))
    with pytest.raises(ValueError, match="image_embeddings"):
        pipe.loss(torch.zeros(3, 2), emb)
    with pytest.raises(ValueError, match="cond_drop_prob"):
        flow_loss(pipe.network, "riemannian", pipe.schedule, torch.zeros(2, 2), emb, cond_drop_prob=1.5)
