import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import sph_harm_y

from geo_models.locdiff import SHDD, decoding, lowpass_window
from geo_models.locdiff import shdd as shdd_module
from geo_models.sphere import (
    haversine_km,
    latlon_to_xyz,
    legendre_kernel,
    num_sh_coefficients,
    real_spherical_harmonics,
    sh_degrees_orders,
    sh_index,
    uniform_sphere,
)


def scipy_real_sh(latlon: torch.Tensor, L: int) -> np.ndarray:
    """Reference: real harmonics from SciPy's complex ones (Condon-Shortley phase included, removed by (-1)^m)."""
    theta = np.deg2rad(90 - latlon[:, 0].double().numpy())
    phi = np.deg2rad(latlon[:, 1].double().numpy())
    out = np.zeros((len(theta), (L + 1) ** 2))
    for l in range(L + 1):
        out[:, l * (l + 1)] = sph_harm_y(l, 0, theta, phi).real
        for m in range(1, l + 1):
            y = sph_harm_y(l, m, theta, phi)
            out[:, l * (l + 1) + m] = math.sqrt(2) * (-1) ** m * y.real
            out[:, l * (l + 1) - m] = math.sqrt(2) * (-1) ** m * y.imag
    return out


def make_points(n=200, seed=0, dtype=torch.float64):
    pts = uniform_sphere(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    special = [[90, 0], [-90, 45], [89.999, 179.999], [-89.9, -179.99], [0.5, 180], [-12, -180], [45, 179.9999]]
    pts[: len(special)] = torch.tensor(special[:n], dtype=dtype)
    return pts


def test_matches_scipy_float64_and_float32_at_L47():
    pts = make_points()
    ref = scipy_real_sh(pts, 47)
    ours = real_spherical_harmonics(pts, 47)
    assert ours.dtype == torch.float64 and ours.shape == (200, 2304)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-6, atol=1e-10)
    ours32 = real_spherical_harmonics(pts.float(), 47)
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.double().numpy(), ref, rtol=0, atol=5e-4)


def test_sign_convention_low_degrees():
    pts = make_points(50)
    y = real_spherical_harmonics(pts, 2)
    xyz = latlon_to_xyz(pts)
    c1 = math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(y[:, 0], torch.full((50,), 1 / math.sqrt(4 * math.pi), dtype=torch.float64))
    torch.testing.assert_close(y[:, sh_index(1, 1)], c1 * xyz[:, 0])
    torch.testing.assert_close(y[:, sh_index(1, -1)], c1 * xyz[:, 1])
    torch.testing.assert_close(y[:, sh_index(1, 0)], c1 * xyz[:, 2])
    c2 = 0.5 * math.sqrt(15 / math.pi)
    torch.testing.assert_close(y[:, sh_index(2, -2)], c2 * xyz[:, 0] * xyz[:, 1])
    torch.testing.assert_close(y[:, sh_index(2, 1)], c2 * xyz[:, 0] * xyz[:, 2])


def test_orthonormal_by_quadrature():
    L = 8
    nodes, weights = np.polynomial.legendre.leggauss(L + 2)  # exact for the degree-2L products in cos(theta)
    n_phi = 2 * L + 3
    lat = np.rad2deg(np.arcsin(nodes))
    lon = np.rad2deg(np.arange(n_phi) * 2 * np.pi / n_phi - np.pi)
    grid = torch.tensor(np.stack(np.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2))
    w = torch.tensor(np.repeat(weights, n_phi) * 2 * np.pi / n_phi)
    y = real_spherical_harmonics(grid, L)
    gram = y.T @ (w[:, None] * y)
    torch.testing.assert_close(gram, torch.eye((L + 1) ** 2, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_and_bounded_at_the_poles_L63(dtype):
    pts = torch.tensor([[90, 0], [-90, 0], [89.99999, 10], [-89.99999, -170], [0, 0]], dtype=dtype)
    y = real_spherical_harmonics(pts, 63)
    assert torch.isfinite(y).all()
    degrees, orders = sh_degrees_orders(63)
    bound = torch.sqrt((2 * degrees + 1) / (4 * math.pi)).to(dtype)
    assert (y.abs() <= bound * (1 + 1e-5)).all()  # Σ_m Y_lm^2 = (2l+1)/4π
    # at the north pole only m = 0 survives, with the full value sqrt((2l+1)/4π); at the south pole (-1)^l of it
    tol = {"rtol": 3e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(y[0][orders == 0], bound[orders == 0], **tol)
    torch.testing.assert_close(y[1][orders == 0], bound[orders == 0] * (-1.0) ** degrees[orders == 0].to(dtype), **tol)
    assert y[0][orders != 0].abs().max() < 1e-5


def test_index_helpers_and_shapes():
    assert num_sh_coefficients(47) == 2304
    degrees, orders = sh_degrees_orders(3)
    for i, (l, m) in enumerate(zip(degrees.tolist(), orders.tolist())):
        assert sh_index(l, m) == i
    assert real_spherical_harmonics(torch.zeros(4, 3, 2), 3).shape == (4, 3, 16)
    with pytest.raises(ValueError, match="max_degree"):
        real_spherical_harmonics(torch.zeros(1, 2), -1)
    with pytest.raises(ValueError, match="latlon"):
        real_spherical_harmonics(torch.tensor([[91.0, 0.0]]), 3)


@settings(max_examples=30, deadline=None)
@given(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), st.tuples(st.floats(-90, 90), st.floats(-180, 180)))
def test_addition_theorem(a, b):
    """``encode(a) · Y(b)`` is the truncated delta ``Σ (2l+1)/4π P_l(cos γ)``: depends only on the distance."""
    shdd = SHDD(12)
    a, b = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    cos_gamma = (latlon_to_xyz(a) * latlon_to_xyz(b)).sum(-1)
    field = shdd.field(shdd.encode(a), b)[0, 0]
    assert field.item() == pytest.approx(legendre_kernel(cos_gamma, 12)[0].item(), abs=1e-9)


def test_truncated_delta_width_at_L47():
    gamma = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    k = legendre_kernel(gamma.cos(), 47)
    assert k[0].item() == pytest.approx(48**2 / (4 * math.pi))
    fwhm_km = 2 * gamma[(k < k[0] / 2).nonzero()[0]].item() * 6371.0088
    assert 560 < fwhm_km < 620
    assert -0.15 < (k.min() / k[0]).item() < -0.11


def test_round_trip_median_below_1km_at_L47():
    pts = make_points(200, seed=1, dtype=torch.float32)
    shdd = SHDD(47)
    e = shdd.encode(pts)
    assert e.shape == (200, 2304) and shdd.output_dim == 2304
    d = haversine_km(shdd.decode(e), pts)
    assert d.median() < 1.0
    assert d.max() < 1.0  # poles and antimeridian included; the default lattice's spacing is ~71 km


def test_round_trip_batch_shape_dtype_mean_refine_and_lowpass():
    pts = make_points(12, seed=2).reshape(3, 4, 2)
    for shdd in (SHDD(31, decode_anchors=20_000), SHDD(31, decode_anchors=20_000, lowpass="hann")):
        out = shdd.decode(shdd.encode(pts))
        assert out.shape == (3, 4, 2) and out.dtype == torch.float64
        assert haversine_km(out, pts).max() < 1.0
    out = SHDD(31, decode_anchors=20_000).decode(SHDD(31).encode(pts), refine="mean")
    assert haversine_km(out, pts).max() < 1.0


def test_lowpass_windows():
    assert torch.equal(lowpass_window(None, 5), torch.ones(6, dtype=torch.float64))
    for name in ("hann", "lanczos", "gaussian"):
        w = lowpass_window(name, 47)
        assert w[0] == 1 and (w[1:] < w[:-1]).all() and w[-1] > 0
        pts = make_points(5)
        torch.testing.assert_close(
            SHDD(47, lowpass=name).encode(pts), real_spherical_harmonics(pts, 47) * w[sh_degrees_orders(47)[0]]
        )
        gamma = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
        k = legendre_kernel(gamma.cos(), 47, w)
        assert k.min() / k[0] > -0.05  # Gibbs sidelobes suppressed (-13% unfiltered)


def test_decode_with_gallery_returns_gallery_points_and_refines_off_gallery(monkeypatch):
    gallery = uniform_sphere(3000, generator=torch.Generator().manual_seed(3))
    shdd = SHDD(31)
    truth = gallery[:20] + 0.3  # ~40 km off the gallery points
    e = shdd.encode(truth)
    out = shdd.decode(e, anchors=gallery, refine=False)
    assert (out[:, None] == gallery[None]).all(-1).any(-1).all()
    # eq. 17 picks an anchor whose rho-cap holds the most mass: within rho of the truth, itself when rho is tiny
    e_gallery = shdd.encode(gallery[:20])
    assert haversine_km(shdd.decode(e_gallery, anchors=gallery, refine=False), gallery[:20]).max() < shdd.rho_km
    torch.testing.assert_close(shdd.decode(e_gallery, anchors=gallery, refine=False, rho_km=1.0), gallery[:20])
    assert haversine_km(shdd.decode(e, anchors=gallery), truth).max() < 1.0
    # chunking over anchors does not change the result
    torch.testing.assert_close(shdd.decode(e, anchors=gallery, refine=False, chunk_size=257), out)
    monkeypatch.setattr(shdd_module, "_QUERY_BLOCK", 7)  # nor does blocking over queries
    torch.testing.assert_close(shdd.decode(e, anchors=gallery, refine=False), out)


def test_eq17_mass_beats_a_lone_peak():
    """A lone anchor with the highest f loses to a cluster of slightly lower anchors within rho."""
    xyz = latlon_to_xyz(torch.tensor([[0.0, 0.0], [30, 30], [30.1, 30], [30, 30.1], [29.9, 30]], dtype=torch.float64))
    values = torch.tensor([[10.0, 9.0, 9.0, 9.0, 9.0]], dtype=torch.float64)
    assert decoding.mass_argmax(values, xyz[None], 50 / 6371.0088).item() in (1, 2, 3, 4)
    assert decoding.mass_argmax(values, xyz[None], 1 / 6371.0088).item() == 0


def test_kl_loss_zero_at_truth_positive_elsewhere_and_decreasing():
    shdd = SHDD(15, num_anchors=1024)
    truth = make_points(8, seed=4, dtype=torch.float32)
    other = uniform_sphere(8, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(0)
    assert shdd.kl_loss(shdd.encode(truth), truth, generator=gen).abs() < 1e-4
    anchors = uniform_sphere(1024, generator=torch.Generator().manual_seed(1))
    e_true, e_other = shdd.encode(truth), shdd.encode(other)
    mix = [(1 - t) * e_other + t * e_true for t in np.linspace(0, 1, 6)]
    losses = [shdd.kl_loss(e, truth, anchors=anchors).item() for e in mix]
    assert losses[0] > 1 and losses[-1] < 1e-4
    assert all(a > b for a, b in zip(losses, losses[1:]))
    per_item = shdd.kl_loss(e_other, truth, anchors=anchors, reduction="none")
    assert per_item.shape == (8,) and (per_item > 0).all()
    # same generator seed -> same anchors -> same value
    a = shdd.kl_loss(e_other, truth, generator=torch.Generator().manual_seed(7))
    b = shdd.kl_loss(e_other, truth, generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()


@pytest.mark.parametrize("loss", ["kl_loss", "cosine_loss", "l2_loss", "l1_loss"])
def test_losses_zero_at_truth_and_gradients_flow(loss):
    shdd = SHDD(15)
    truth = make_points(6, seed=6, dtype=torch.float32)
    fn = getattr(shdd, loss)
    assert fn(shdd.encode(truth), truth).abs() < 1e-4
    pred = torch.randn(6, 256, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = fn(pred, truth)
    assert value.ndim == 0 and value > 0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_validation_errors():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_degree"):
            SHDD(bad)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="rho_km"):
            SHDD(3, rho_km=bad)
    with pytest.raises(ValueError, match="lowpass"):
        SHDD(3, lowpass="boxcar")
    with pytest.raises(ValueError, match="num_anchors"):
        SHDD(3, num_anchors=0)
    shdd = SHDD(3, decode_anchors=100)
    with pytest.raises(ValueError, match="latlon"):
        shdd.encode(torch.tensor([[0.0, 181.0]]))
    with pytest.raises(ValueError, match="latlon"):
        shdd.encode(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="latlon"):
        shdd.encode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"coeffs must have shape \(\.\.\., 16\)"):
        shdd.decode(torch.zeros(2, 15))
    with pytest.raises(ValueError, match="coeffs must be finite"):
        shdd.decode(torch.full((2, 16), float("nan")))
    with pytest.raises(ValueError, match="rho_km"):
        shdd.decode(torch.zeros(2, 16), rho_km=-5)
    with pytest.raises(ValueError, match="refine"):
        shdd.decode(torch.zeros(2, 16), refine="bfgs")
    with pytest.raises(ValueError, match="anchors"):
        shdd.decode(torch.zeros(2, 16), anchors=torch.zeros(0, 2))
    with pytest.raises(ValueError, match="anchors"):
        shdd.decode(torch.zeros(2, 16), anchors=torch.tensor([[95.0, 0.0]]))
    with pytest.raises(ValueError, match="coeffs_pred"):
        shdd.kl_loss(torch.zeros(2, 9), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="latlon_true"):
        shdd.kl_loss(torch.zeros(2, 16), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="reduction"):
        shdd.l2_loss(torch.zeros(2, 16), torch.zeros(2, 2), reduction="max")


def test_harmonics_are_differentiable():
    x = torch.tensor([[10.0, 20.0], [-30.0, 100.0], [75.0, -179.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: real_spherical_harmonics(t, 6), (x,))


def test_changing_decode_anchors_rebuilds_the_lattice():
    shdd = SHDD(6, decode_anchors=50)
    e = shdd.encode(torch.tensor([[35.0, 139.0]], dtype=torch.float64))
    coarse = shdd.decode(e, refine=False)
    shdd.decode_anchors = 20000
    fine = shdd.decode(e, refine=False)
    assert shdd._lattice.shape == (20000, 2)
    truth = torch.tensor([[35.0, 139.0]], dtype=torch.float64)
    assert haversine_km(fine, truth) < haversine_km(coarse, truth)
    with pytest.raises(ValueError, match="decode_anchors"):
        shdd.decode_anchors = 0
