"""geo_models.sphere.density and geo_models.calibration (issue 18): kernel mixtures are densities (they integrate
to 1), their mode adds up near-duplicates, the fitted kernel recovers a known concentration, and a perfectly
calibrated predictor gets nominal coverage of its highest-density regions (a too-sharp one does not)."""

import math

import pytest
import torch

from geo_models.calibration import CalibrationAccumulator, hdr_thresholds, reliability_plot
from geo_models.sphere import von_mises_fisher
from geo_models.sphere.density import (
    DensityGrid,
    DensityKernel,
    KernelMixture,
    density_grid_points,
    kappa_for_km,
)
from geo_models.sphere.kernel_fit import fit_kernel

PARIS, LYON = [48.8566, 2.3522], [45.76, 4.84]


@pytest.mark.parametrize("km", [3000.0, 500.0, 150.0])
def test_kernel_mixtures_integrate_to_one_on_a_one_degree_grid(km):
    torch.manual_seed(0)
    centres = torch.cat([torch.rand(3, 40, 1) * 160 - 80, torch.rand(3, 40, 1) * 360 - 180], dim=-1)
    weights = torch.rand(3, 40)
    weights = weights / weights.sum(1, keepdim=True) * torch.tensor([[1.0], [0.7], [0.2]])  # 0 / 30 / 80% uniform
    grid = KernelMixture(centres, weights, kappa_for_km(km)).grid(1.0)
    assert torch.allclose(grid.integral(), torch.ones(3), atol=0.01), grid.integral()


def test_log_prob_matches_the_grid_and_the_uniform_part():
    mix = KernelMixture(torch.tensor([[PARIS]]), torch.tensor([[0.0]]), 100.0)  # all mass uniform
    assert torch.allclose(mix.log_prob(torch.tensor([[10.0, 20.0]])), torch.tensor([-math.log(4 * math.pi)]).double())
    mix = KernelMixture(torch.tensor([[PARIS, LYON]]), torch.tensor([[0.6, 0.3]]), kappa_for_km(300))
    grid = mix.grid(2.0)
    lats, lons, pts = density_grid_points(2.0)
    direct = mix.log_prob(pts[None])  # (1, H*W)
    assert torch.allclose(direct.float().view_as(grid.log_density), grid.log_density, atol=1e-4)
    with pytest.raises(ValueError, match="weights"):
        KernelMixture(torch.tensor([[PARIS]]), torch.tensor([[-0.1]]), 100.0)
    with pytest.raises(ValueError, match="kappa"):
        KernelMixture(torch.tensor([[PARIS]]), torch.tensor([[1.0]]), 0.0)


def test_the_mode_adds_up_near_duplicates():
    """Three gallery points 5 km apart with 0.2 each beat one point with 0.3: the argmax picks the single point, the
    aggregated density's mode the cluster (GeoCLIP's split mass, issue 18)."""
    near = [[48.85, 2.35], [48.88, 2.38], [48.83, 2.31]]
    mix = KernelMixture(torch.tensor([[*near, LYON]]), torch.tensor([[0.2, 0.2, 0.2, 0.3]]), kappa_for_km(25))
    mode = mix.mode_among_centres()[0]
    assert min(float((mode - torch.tensor(p)).abs().max()) for p in near) < 1e-4


def test_fit_kernel_recovers_a_known_concentration_and_miss_rate():
    """Truths from vMF(mu, kappa0) for 80% of the images and uniform for 20% (the model's misses): the fitted kernel
    finds kappa0 and a uniform floor near 0.2."""
    torch.manual_seed(1)
    kappa0, n = kappa_for_km(400), 1000
    centres = torch.cat([torch.rand(n, 1, 1) * 120 - 60, torch.rand(n, 1, 1) * 360 - 180], dim=-1)
    truth = torch.stack([von_mises_fisher(c[0], kappa=kappa0, num_samples=1)[0] for c in centres])
    miss = torch.rand(n) < 0.2
    truth[miss] = torch.cat([torch.asin(torch.rand(int(miss.sum())) * 2 - 1).rad2deg()[:, None],
                             torch.rand(int(miss.sum()), 1) * 360 - 180], dim=1)  # fmt: skip
    kernel = fit_kernel(centres, torch.ones(n, 1), truth)
    assert kernel.kappa == pytest.approx(kappa0, rel=0.2) and kernel.floor == pytest.approx(0.2, abs=0.06)
    assert fit_kernel(centres[~miss], torch.ones(int((~miss).sum()), 1), truth[~miss]).floor <= 0.01
    assert DensityKernel.from_dict(kernel.to_dict()) == kernel and DensityKernel.from_dict(None) is None
    with pytest.raises(ValueError, match="density_kernel"):
        DensityKernel.from_dict({"kappa": 10.0, "bandwidth": 3})
    with pytest.raises(ValueError, match="floor"):
        DensityKernel(10.0, floor=1.5)


def test_tempering_spreads_a_too_confident_softmax():
    from geo_models.sphere.density import temper

    w = torch.tensor([[0.8, 0.1, 0.05]])
    flat = temper(w, 0.25)
    assert torch.allclose(flat.sum(1), w.sum(1)) and flat[0, 0] < 0.8 and flat[0, 2] > 0.05


def vmf_grids(centres: torch.Tensor, kappa: float, resolution: float = 2.0) -> DensityGrid:
    return KernelMixture(centres[:, None], torch.ones(len(centres), 1), kappa).grid(resolution)


def test_a_calibrated_predictor_gets_nominal_coverage_and_a_sharp_one_does_not(tmp_path):
    """Truths drawn from vMF(mu_i, kappa): predicting exactly that density covers 50/90/95% of them within sampling
    error (binomial sd <= 1.6 points at N = 1000); a 10x too concentrated kernel covers far fewer."""
    torch.manual_seed(2)
    n, kappa = 1000, kappa_for_km(800)
    centres = torch.cat([torch.rand(n, 1) * 120 - 60, torch.rand(n, 1) * 360 - 180], dim=-1)
    truth = torch.stack([von_mises_fisher(c, kappa=kappa, num_samples=1)[0] for c in centres])
    curves = {}
    for name, k in [("calibrated", kappa), ("too sharp", 10 * kappa)]:
        acc = CalibrationAccumulator()
        for i in range(0, n, 250):
            c = centres[i : i + 250]
            mix = KernelMixture(c[:, None], torch.ones(len(c), 1), k)
            acc.add(mix.grid(2.0), mix.log_prob(truth[i : i + 250]))
        m = acc.metrics()
        curves[name] = acc.reliability()
        if name == "calibrated":
            for level in (50, 90, 95):
                assert abs(m[f"coverage_{level}"] - level) < 5.0, m
            assert m["well_calibrated"] in (0.0, 1.0) and m["area_90_km2"] > m["area_50_km2"] > 0
        else:
            assert m["coverage_90"] < 60 and m["well_calibrated"] == 0.0, m
    path = reliability_plot(curves, tmp_path / "plots" / "reliability.png", title="synthetic")
    assert path.stat().st_size > 1000 and [p.name for p in path.parent.iterdir()] == ["reliability.png"]


def test_hdr_area_of_a_uniform_density_is_the_level_times_the_earth():
    lats, lons, _ = density_grid_points(3.0)
    grid = DensityGrid(lats, lons, torch.full((1, len(lats), len(lons)), -math.log(4 * math.pi)))
    _, areas = hdr_thresholds(grid, (0.5,))
    earth = 4 * math.pi * 6371.0088**2
    assert float(areas[0, 0]) == pytest.approx(0.5 * earth, rel=0.02)


def test_coverage_from_samples_matches_nominal_for_a_calibrated_predictor():
    """The sample-based regions (the flow's route): thresholds from the model's own samples' log-densities."""
    from geo_models.sphere.density import vmf_log_kernel

    torch.manual_seed(3)
    n, s, kappa = 1000, 256, kappa_for_km(800)
    centres = torch.cat([torch.rand(n, 1) * 120 - 60, torch.rand(n, 1) * 360 - 180], dim=-1)
    truth = torch.stack([von_mises_fisher(c, kappa=kappa, num_samples=1)[0] for c in centres])
    mix = KernelMixture(centres[:, None], torch.ones(n, 1), kappa)
    samples = torch.stack([von_mises_fisher(c, kappa=kappa, num_samples=s) for c in centres])
    acc = CalibrationAccumulator()
    acc.add_samples(mix.log_prob(samples), mix.log_prob(truth))
    m = acc.metrics()
    for level in (50, 90, 95):
        assert abs(m[f"coverage_{level}"] - level) < 5.0, m
    # the 90% region of a vMF is a cap of area 2 pi R^2 (1 - cos theta) with P(cap) = 0.9
    cos_theta = 1 + math.log(0.1) / kappa  # vMF: P(cos >= c) = (1 - e^{-kappa (1 - c)}) / (1 - e^{-2 kappa})
    expected = 2 * math.pi * 6371.0088**2 * (1 - cos_theta)
    assert m["area_90_km2"] == pytest.approx(expected, rel=0.25)
    assert vmf_log_kernel(torch.tensor(1.0), kappa) > vmf_log_kernel(torch.tensor(0.0), kappa)


def test_coarse_to_fine_mode_finds_the_region_with_the_most_mass_then_the_place_in_it():
    """One point in Sydney holds 0.3; forty points around Europe share 0.7, with a tight Paris cluster (three points
    5 km apart, 0.05 each) inside: the argmax is Sydney, a single 25 km mode is Paris or Sydney by luck of the
    kernel, the coarse-to-fine mode lands on the Paris cluster."""
    from geo_models.sphere.density import coarse_to_fine_mode

    torch.manual_seed(4)
    europe = torch.stack([torch.rand(37) * 15 + 40, torch.rand(37) * 25 - 5], dim=1)  # 0.55 over 37 points
    paris = torch.tensor([[48.85, 2.35], [48.88, 2.38], [48.83, 2.31]])
    centres = torch.cat([torch.tensor([[-33.87, 151.21]]), europe, paris])[None]
    weights = torch.cat([torch.tensor([0.3]), torch.full((37,), 0.55 / 37), torch.full((3,), 0.05)])[None]
    mode = coarse_to_fine_mode(centres, weights, (2500.0, 750.0, 200.0, 25.0))[0]
    assert min(float((mode - p).abs().max()) for p in paris) < 1e-4, mode
    assert torch.equal(coarse_to_fine_mode(centres, weights, (25.0,))[0], centres[0, 0].float())  # Sydney: 0.3 > 0.15
    with pytest.raises(ValueError, match="scales_km"):
        coarse_to_fine_mode(centres, weights, ())
