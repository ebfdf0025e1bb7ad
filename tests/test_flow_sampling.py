"""Samplers: samples on the sphere, seeded, guided; Riemannian steps are exact for a known field."""

import math

import pytest
import torch

from geo_models.flow import GeoAdaLNMLP, SphereFlowPipeline, sample_xyz
from geo_models.sphere import latlon_to_xyz
from geo_models.testing import tiny_sphere_flow_pipeline

EMB = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
CASES = [("riemannian", "euler"), ("riemannian", "heun"), ("flow_r3", "euler"), ("flow_r3", "heun"),
         ("diffusion_r3", "euler"), ("diffusion_r3", "heun"), ("diffusion_r3", "ddpm")]  # fmt: skip


def draw(pipe, sampler="euler", seed=0, **kwargs):
    return sample_xyz(
        pipe.network, pipe.objective, pipe.schedule, EMB, num_inference_steps=kwargs.pop("steps", 6),
        sampler=sampler, generator=torch.Generator().manual_seed(seed), **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("objective, sampler", CASES)
def test_samples_on_sphere_seeded_and_guided(objective, sampler):
    pipe = tiny_sphere_flow_pipeline(objective)
    x = draw(pipe, sampler)
    assert x.shape == (3, 3) and torch.allclose(x.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert torch.equal(x, draw(pipe, sampler)) and not torch.equal(x, draw(pipe, sampler, seed=1))
    if objective != "diffusion_r3" or sampler == "ddpm":  # (untrained DDIM: x0 estimates clip to cube corners)
        assert not torch.allclose(x, draw(pipe, sampler, guidance_scale=2.0))


def test_zero_field_keeps_the_noise_and_constant_field_follows_meridians():
    net = GeoAdaLNMLP(dim=16, depth=1, expansion=1, cond_dim=16)
    pipe = SphereFlowPipeline(net, objective="riemannian")
    start = torch.nn.functional.normalize(torch.randn(3, 3), dim=-1)
    assert torch.allclose(draw(pipe, latents=start), start, atol=1e-6)  # zero-initialised output: no motion
    # v = P_x b with b = k e_z: the colatitude follows tan(theta/2) = tan(theta_0/2) e^{-k gamma}; Heun is 2nd order.
    k = 1.2
    with torch.no_grad():
        net.final_linear.bias.copy_(torch.tensor([0.0, 0.0, k]))
    start = latlon_to_xyz(torch.tensor([[-60.0, 10.0], [0.0, -100.0], [30.0, 45.0]]))
    theta0 = torch.acos(start[:, 2])
    expected = 2 * torch.atan(torch.tan(theta0 / 2) * math.exp(-k))
    errors = []
    for steps in (20, 40):
        x = draw(pipe, "heun", latents=start, steps=steps)
        errors.append((torch.acos(x[:, 2].clamp(-1, 1)) - expected).abs().max())
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 3  # converges at second order
    assert torch.allclose(torch.atan2(x[:, 1], x[:, 0]), torch.atan2(start[:, 1], start[:, 0]), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"sampler": "rk4"}, "sampler"),
        ({"sampler": "ddpm"}, "sampler"),
    ],
)
def test_bad_sampling_arguments(kwargs, name):
    pipe = tiny_sphere_flow_pipeline()
    with pytest.raises(ValueError, match=name):
        sample_xyz(pipe.network, pipe.objective, pipe.schedule, EMB, **kwargs)
    with pytest.raises(ValueError, match="latents"):
        sample_xyz(pipe.network, pipe.objective, pipe.schedule, EMB, latents=torch.randn(2, 3))
