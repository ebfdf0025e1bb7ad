"""The synthetic vMF-mixture task: exact density (integrates to 1), samples that match it, entropy, MMD test."""

import math

import pytest
import torch

from geo_models.data.procedural.vmf_mixture import VMFMixtureTask, sphere_mmd_test
from geo_models.flow.estimates import DensityGrid, density_grid_points
from geo_models.sphere import fibonacci_lattice, latlon_to_xyz


@pytest.fixture(scope="module")
def task():
    return VMFMixtureTask(num_conditions=3, num_components=3, kappa_range=(10.0, 50.0), seed=0)


def test_parameters_are_seeded_and_valid(task):
    again = VMFMixtureTask(3, 3, kappa_range=(10.0, 50.0), seed=0)
    assert torch.equal(task.means, again.means) and torch.equal(task.kappas, again.kappas)
    assert torch.equal(task.weights, again.weights)
    assert not torch.equal(task.means, VMFMixtureTask(3, 3, seed=1).means)
    assert torch.allclose(task.means.norm(dim=-1), torch.ones(3, 3, dtype=torch.float64))
    assert ((task.kappas >= 10) & (task.kappas <= 50)).all()
    assert torch.allclose(task.weights.sum(1), torch.ones(3, dtype=torch.float64)) and (task.weights > 0).all()
    assert torch.equal(task.embeddings(torch.tensor([2, 0])), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))


def test_true_density_integrates_to_one(task):
    lats, lons, pts = density_grid_points(3.0)
    xyz = latlon_to_xyz(pts.double())
    for c in range(task.num_conditions):
        logp = task.log_prob(xyz, torch.full((len(xyz),), c)).float().view(1, len(lats), len(lons))
        assert abs(float(DensityGrid(lats, lons, logp).integral()) - 1) < 1e-3


def test_samples_match_the_density(task):
    """Histogram of samples in 12 equal-area Fibonacci cells (nearest point) vs the density's cell masses."""
    g = torch.Generator().manual_seed(0)
    centres = latlon_to_xyz(fibonacci_lattice(12, dtype=torch.float64))
    fine = latlon_to_xyz(fibonacci_lattice(100_000, dtype=torch.float64))  # equal-area quadrature nodes
    fine_cell = (fine @ centres.T).argmax(1)
    for c in range(task.num_conditions):
        cond, x = task.sample(20_000, cond=torch.full((20_000,), c), generator=g)
        counts = torch.bincount((x.double() @ centres.T).argmax(1), minlength=12).double() / len(x)
        dens = task.log_prob(fine, torch.full((len(fine),), c)).exp() * (4 * math.pi / len(fine))
        mass = torch.zeros(12, dtype=torch.float64).index_add_(0, fine_cell, dens)
        assert abs(float(mass.sum()) - 1) < 1e-3
        assert (counts - mass).abs().max() < 0.015, (counts, mass)
    cond, _ = task.sample(3000, generator=g)
    assert torch.bincount(cond, minlength=3).min() > 900  # conditions uniform


def test_entropy_matches_a_single_vmf():
    """One component: H = -log(kappa / (2 pi (1 - e^{-2 kappa}))) - kappa (coth(kappa) - 1 / kappa - 1)."""
    task = VMFMixtureTask(1, 1, kappa_range=(20.0, 20.0), seed=3)
    h, se = task.entropy(num_samples=50_000)
    k = 20.0
    exact = -(math.log(k / (2 * math.pi * (1 - math.exp(-2 * k)))) + k * (1 / math.tanh(k) - 1 / k - 1))
    assert abs(float(h[0]) - exact) < 4 * float(se[0]) + 1e-3


def test_mmd_test_size_and_power(task):
    g = torch.Generator().manual_seed(1)
    c = torch.arange(3).repeat_interleave(200)
    _, a = task.sample(600, cond=c, generator=g)
    _, b = task.sample(600, cond=c, generator=g)
    same = sphere_mmd_test(a, b, cond_x=c, cond_y=c, num_permutations=100)[1]
    swapped = sphere_mmd_test(a, b, cond_x=c, cond_y=c.roll(200), num_permutations=100)[1]  # wrong conditions
    assert same > 0.05 and swapped < 0.02


def test_bad_input():
    with pytest.raises(ValueError, match="num_conditions"):
        VMFMixtureTask(0)
    with pytest.raises(ValueError, match="kappa_range"):
        VMFMixtureTask(2, 2, kappa_range=(0.0, 5.0))
    task = VMFMixtureTask(2, 2)
    with pytest.raises(ValueError, match="cond"):
        task.embeddings(torch.tensor([2]))
    with pytest.raises(ValueError, match="xyz"):
        task.log_prob(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="cond_x and cond_y"):
        sphere_mmd_test(torch.eye(3), torch.eye(3), cond_x=torch.zeros(3))
