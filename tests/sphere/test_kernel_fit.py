"""geo_models.sphere.kernel_fit (issue 18): a broad floor for misses near the guesses, and the calibrated choice of
kernel whose highest-density regions cover held-out truths at their nominal rates."""

import pytest
import torch

from geo_models.sphere import von_mises_fisher
from geo_models.sphere.density import DensityKernel, KernelMixture, kappa_for_km
from geo_models.sphere.kernel_fit import fit_kernel, hpd_levels

LEVELS = torch.tensor([0.5, 0.9, 0.95], dtype=torch.float64)


def world(n: int, seed: int):
    """Guesses (one point each) whose truths are 400 km off 70% of the time and 2,000 km off 30% of the time."""
    torch.manual_seed(seed)
    centres = torch.cat([torch.rand(n, 1) * 120 - 60, torch.rand(n, 1) * 360 - 180], dim=-1)
    far = torch.rand(n) < 0.3
    truth = torch.stack([
        von_mises_fisher(c, kappa=kappa_for_km(2000 if f else 400), num_samples=1)[0] for c, f in zip(centres, far)
    ])  # fmt: skip
    return centres[:, None], torch.ones(n, 1), truth


def coverage(kernel: DensityKernel, centres, weights, truth) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    u = hpd_levels(kernel.mixture(centres, weights), truth, num_samples=256, generator=generator)
    return (u[:, None] <= LEVELS).double().mean(dim=0) * 100


def test_a_broad_floor_is_a_density_and_survives_the_config():
    kernel = DensityKernel(kappa_for_km(300), power=1.0, floor=0.2, floor_kappa=kappa_for_km(1500))
    centres = torch.tensor([[[48.85, 2.35], [40.7, -74.0]]])
    mix = kernel.mixture(centres, torch.tensor([[0.6, 0.3]]))
    assert float(mix.grid(1.0).integral()[0]) == pytest.approx(1.0, abs=0.01)
    samples = mix.sample(2000, generator=torch.Generator().manual_seed(0))
    assert mix.log_prob(samples).shape == (1, 2000) and torch.isfinite(mix.log_prob(samples)).all()
    assert DensityKernel.from_dict(kernel.to_dict()) == kernel
    assert "floor_kappa" not in DensityKernel(10.0).to_dict()  # old configs stay as they were
    with pytest.raises(ValueError, match="kappa"):
        KernelMixture(centres, torch.tensor([[0.6, 0.3]]), torch.tensor([1.0, 2.0, 3.0]))


def test_the_calibrated_kernel_covers_fresh_truths_at_nominal_rates():
    """Fitted on one draw of the world (N = 1000), scored on another: the calibrated kernel's 50/90/95% regions
    hold the fresh truths within 4 points (binomial sd <= 1.6), and its floor is the broad one."""
    fit_data, fresh = world(1000, 0), world(1000, 1)
    kernel = fit_kernel(*fit_data, calibrate=True, candidates=8)
    assert kernel.floor > 0.1 and kernel.floor_kappa > 0, kernel
    gaps = (coverage(kernel, *fresh) - LEVELS * 100).abs()
    assert gaps.max() < 4.0, (kernel, gaps)
    uniform_floor = fit_kernel(*fit_data, floor_kms=(0.0,))
    assert (coverage(uniform_floor, *fresh) - LEVELS * 100).abs().max() > gaps.max()
    with pytest.raises(ValueError, match="true_latlon"):
        fit_kernel(fit_data[0], fit_data[1], fit_data[2][:10])
