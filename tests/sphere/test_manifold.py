import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_models.sphere import (
    exp_map,
    geodesic,
    geodesic_distance,
    geodesic_interpolate,
    haversine_km,
    latlon_to_xyz,
    log_map,
    project_to_tangent,
    spherical_mean,
    uniform_sphere,
    uniform_sphere_xyz,
    von_mises_fisher,
    von_mises_fisher_log_prob,
    von_mises_fisher_xyz,
)

point = st.tuples(st.floats(-90, 90), st.floats(-180, 180))


def xyz(p):
    return latlon_to_xyz(torch.tensor(p, dtype=torch.float64))


@settings(max_examples=200, deadline=None)
@given(point, point)
def test_exp_log_inverse(a, b):
    x, y = xyz(a), xyz(b)
    if geodesic_distance(x, y) > math.pi - 1e-3:  # log is undefined at the antipode
        return
    v = log_map(x, y)
    assert abs(torch.dot(v, x).item()) < 1e-9  # tangent
    assert v.norm().item() == pytest.approx(geodesic_distance(x, y).item(), abs=1e-9)
    assert torch.allclose(exp_map(x, v), y, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(point, st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3)))
def test_log_exp_inverse_inside_injectivity_radius(a, w):
    x = xyz(a)
    v = project_to_tangent(x, torch.tensor(w, dtype=torch.float64))
    if v.norm() >= math.pi - 1e-3:
        return
    assert torch.allclose(log_map(x, exp_map(x, v)), v, atol=1e-7)


@settings(max_examples=200, deadline=None)
@given(point, point, st.floats(0, 1))
def test_geodesic_endpoints_and_constant_speed(a, b, t):
    x, y = xyz(a), xyz(b)
    if geodesic_distance(x, y) > math.pi - 1e-3:
        return
    assert torch.allclose(geodesic(x, y, 0.0), x, atol=1e-9)
    assert torch.allclose(geodesic(x, y, 1.0), y, atol=1e-9)
    mid = geodesic(x, y, t)
    total = geodesic_distance(x, y)
    assert geodesic_distance(x, mid).item() == pytest.approx(t * total.item(), abs=1e-7)
    assert geodesic_distance(mid, y).item() == pytest.approx((1 - t) * total.item(), abs=1e-7)


def test_geodesic_interpolate_crosses_antimeridian():
    mid = geodesic_interpolate([0.0, 170.0], [0.0, -170.0], 0.5)
    assert abs(abs(mid[1].item()) - 180.0) < 1e-3 and abs(mid[0].item()) < 1e-3


def test_geodesic_batched_t():
    x = uniform_sphere_xyz(5, generator=torch.Generator().manual_seed(0))
    y = uniform_sphere_xyz(5, generator=torch.Generator().manual_seed(1))
    out = geodesic(x, y, torch.rand(5))
    assert out.shape == (5, 3) and torch.allclose(out.norm(dim=-1), torch.ones(5))


def test_spherical_mean():
    pts = torch.tensor([[10.0, 179.0], [10.0, -179.0], [12.0, 180.0], [8.0, 180.0]])
    for method in ("extrinsic", "karcher"):
        m = spherical_mean(pts, method=method)
        assert haversine_km(m, [10.0, 180.0]).item() < 1.0
    # Weights pull the mean; batch dims are kept.
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert haversine_km(spherical_mean(pts[None], w), pts[0]).item() < 1e-3
    with pytest.raises(ValueError, match="weights"):
        spherical_mean(pts, torch.zeros(4))


def test_karcher_mean_minimises_squared_distances():
    pts = von_mises_fisher([40.0, 10.0], 5.0, 50, generator=torch.Generator().manual_seed(0)).double()
    m = spherical_mean(pts, method="karcher", iterations=100)
    cost = lambda c: (haversine_km(pts, c) ** 2).sum()  # noqa: E731
    for dlat, dlon in [(0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)]:
        assert cost(m) <= cost(m + torch.tensor([dlat, dlon], dtype=m.dtype))


def test_uniform_sampling_is_uniform():
    x = uniform_sphere_xyz(100_000, generator=torch.Generator().manual_seed(0))
    assert x.mean(0).abs().max() < 0.01
    # Archimedes: z is uniform on [-1, 1] for area-uniform points.
    hist = torch.histc(x[:, 2], bins=10, min=-1, max=1) / x.shape[0]
    assert (hist - 0.1).abs().max() < 0.005
    assert uniform_sphere(3).shape == (3, 2)


def test_von_mises_fisher_moments_and_density():
    g = torch.Generator().manual_seed(0)
    mu = xyz([30.0, -60.0])
    for kappa in (1.0, 50.0, 5000.0):
        s = von_mises_fisher_xyz(mu, kappa, 50_000, generator=g)
        # E[<mu, x>] = coth(kappa) - 1/kappa on S^2.
        expected = 1 / math.tanh(kappa) - 1 / kappa
        assert (s.double() @ mu).mean().item() == pytest.approx(expected, abs=3e-3)
    # Density integrates to 1 over the sphere (Monte Carlo with uniform points: E_u[p] * 4 pi).
    u = uniform_sphere_xyz(400_000, generator=g, dtype=torch.float64)
    integral = von_mises_fisher_log_prob(u, mu, 3.0).exp().mean() * 4 * math.pi
    assert integral.item() == pytest.approx(1.0, abs=0.01)
    assert von_mises_fisher([0.0, 0.0], torch.tensor([1.0, 2.0]), 7).shape == (2, 7, 2)
    with pytest.raises(ValueError, match="kappa"):
        von_mises_fisher([0.0, 0.0], -1.0, 3)


def test_unit_vector_checks():
    with pytest.raises(ValueError, match="unit vectors"):
        exp_map(torch.tensor([2.0, 0.0, 0.0]), torch.zeros(3))
    with pytest.raises(ValueError, match="^v"):
        exp_map(torch.tensor([1.0, 0.0, 0.0]), torch.zeros(2))


def test_fibonacci_lattice_is_near_uniform():
    from geo_models.sphere import fibonacci_lattice

    pts = fibonacci_lattice(10_000)
    assert pts.shape == (10_000, 2) and pts[:, 0].abs().max() <= 90 and pts[:, 1].abs().max() <= 180
    xyz = latlon_to_xyz(pts.double())
    assert xyz.mean(0).abs().max() < 1e-3
    hist = torch.histc(xyz[:, 2], bins=10, min=-1, max=1) / len(xyz)  # equal area bands, equal counts
    assert (hist - 0.1).abs().max() < 1e-3
    # Nearest-neighbour spacing close to sqrt(4 pi / n) radians.
    d = torch.cdist(xyz[:500], xyz).topk(2, largest=False).values[:, 1]
    assert d.median().item() == pytest.approx(math.sqrt(4 * math.pi / 10_000), rel=0.2)
    with pytest.raises(ValueError, match="num_points"):
        fibonacci_lattice(0)
