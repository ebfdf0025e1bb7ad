"""Volume rendering for GPS-guided score distillation: ray / sphere bounds, alpha compositing against closed forms,
DreamFusion's shading, gradients to the field, determinism and input checks."""

import math

import pytest
import torch
from torch import nn

from geo_models.sds import NeRFField, PinholeCamera, ray_sphere_bounds, render_image, render_rays
from geo_models.sds.render import pixel_rays

SMALL = {"num_levels": 2, "base_resolution": 8, "max_resolution": 16, "features_per_level": 2, "hidden_dim": 16}
DOWN = torch.tensor([0.0, 0.0, -1.0])


def small_field(**kwargs) -> NeRFField:
    return NeRFField(**{**SMALL, **kwargs})


def radial_field(**kwargs) -> NeRFField:
    """Spherically symmetric density (the MLP's output weights zeroed) and a constant albedo of sigmoid(bias); a
    tall blob on an empty background makes it a nearly solid ball of radius ~0.43."""
    field = small_field(blob_density=50.0, density_shift=-5.0, **kwargs)
    with torch.no_grad():
        field.mlp[-1].weight.zero_()
    return field


class ConstantField(nn.Module):
    """Constant density and albedo everywhere, a constant background, normals +z."""

    def __init__(self, sigma: float, albedo=(0.2, 0.4, 0.6), background=(1.0, 0.0, 0.0)):
        super().__init__()
        self.sigma = nn.Parameter(torch.tensor(sigma))
        self.register_buffer("albedo", torch.tensor(albedo))
        self.register_buffer("bg", torch.tensor(background))

    def forward(self, points):
        return self.sigma.expand(points.shape[0]), self.albedo.expand(points.shape[0], 3)

    def normals(self, points):
        return torch.tensor([0.0, 0.0, 1.0]).expand(points.shape[0], 3)

    def background(self, directions):
        return self.bg.expand(directions.shape[0], 3)


def looking_down(xs, height: float = 3.0):
    """Rays from ``(x, 0, height)`` straight down (-z)."""
    xs = torch.as_tensor(xs, dtype=torch.float32)
    origins = torch.stack([xs, torch.zeros_like(xs), torch.full_like(xs, height)], dim=-1)
    return origins, DOWN.expand_as(origins)


def test_ray_sphere_bounds_closed_form():
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.6, 0.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, 3.0], [0.0, 0.0, -3.0]])
    directions = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], DOWN.tolist()])
    near, far = ray_sphere_bounds(origins, directions, 1.0)
    expected_near = torch.tensor([2.0, 3.0 - 0.8, 0.0, 0.0, 0.0])
    expected_far = torch.tensor([4.0, 3.0 + 0.8, 1.0, 0.0, 0.0])  # a miss and a ray pointing away: empty
    assert torch.allclose(near, expected_near, atol=1e-6) and torch.allclose(far, expected_far, atol=1e-6)


@pytest.mark.parametrize("perturb", [False, True])
def test_alpha_compositing_matches_the_closed_form(perturb):
    sigma, near, far = 0.7, torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.5, 3.0, 2.0])
    field = ConstantField(sigma)
    origins, directions = looking_down([0.0, 0.1, 0.2])
    out = render_rays(field, origins, directions * 3, near=near, far=far, num_samples=16, perturb=perturb,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    opacity = 1 - torch.exp(-sigma * (far - near))
    assert torch.allclose(out["opacity"], opacity, atol=1e-6)
    assert out["opacity"][2] == 0  # empty interval
    assert torch.allclose(out["weights"].sum(-1), out["opacity"])
    expected_rgb = opacity[:, None] * field.albedo + (1 - opacity)[:, None] * field.bg
    assert torch.allclose(out["rgb"], expected_rgb, atol=1e-6)
    assert out["weights"].shape == (3, 16) and out["depth"].shape == (3,) and out["normals"].shape == (3, 3)
    assert torch.allclose(out["normals"], opacity[:, None] * torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    # the expected depth of a constant density, E[t] over [near, far] cut at far (quadrature error only)
    lengths = far - near
    exact = near * opacity + (1 - (1 + sigma * lengths) * torch.exp(-sigma * lengths)) / sigma
    assert torch.allclose(out["depth"][:2], exact[:2], rtol=0.02)


def test_fresh_field_centre_is_opaque_and_misses_show_the_background():
    field = small_field(background="constant", background_color=(0.0, 0.0, 1.0))
    origins, directions = looking_down([0.0, 1.5])
    out = render_rays(field, origins, directions, num_samples=64, perturb=False)
    assert out["opacity"][0] > 0.5
    assert out["opacity"][1] == 0 and torch.equal(out["weights"][1], torch.zeros(64))
    assert torch.equal(out["rgb"][1], torch.tensor([0.0, 0.0, 1.0]))
    assert bool((out["rgb"] >= 0).all()) and bool((out["rgb"] <= 1).all())
    assert 2.0 < out["depth"][0] / out["opacity"][0] < 3.5  # the blob is around z = 0, 3 units away


def test_normals_output_of_a_radial_field_faces_the_camera():
    field = radial_field()
    origins, directions = looking_down([0.0, 0.1, -0.1])
    normals = render_rays(field, origins, directions, num_samples=64, perturb=False)["normals"].detach()
    assert bool((normals[:, 2] > 0.9).all())  # the weights sit on the near (camera-facing) side
    assert normals[1, 0] > 0.1 and normals[2, 0] < -0.1 and abs(float(normals[0, 0])) < 1e-3  # tilted outward


def test_lambertian_is_darker_away_from_the_light():
    field = radial_field(background="constant", background_color=(0.0, 0.0, 0.0))
    origins, directions = looking_down([0.0, 0.1, -0.1])
    kwargs = {"num_samples": 48, "perturb": False}
    albedo = render_rays(field, origins, directions, **kwargs)["rgb"]
    lit = render_rays(field, origins, directions, shading="lambertian", light_dir=[0.0, 0.0, 1.0], **kwargs)["rgb"]
    headlight = render_rays(field, origins, directions, shading="lambertian", **kwargs)["rgb"]
    dark = render_rays(field, origins, directions, shading="lambertian", light_dir=DOWN, **kwargs)["rgb"]
    assert bool((dark < lit).all()) and bool((lit <= albedo + 1e-6).all())
    assert torch.allclose(headlight, lit)  # None: light from the camera
    # facing away from the light leaves only the ambient share (the surface seen is the camera-facing side)
    assert torch.allclose(dark, 0.1 * albedo, rtol=0.02)
    gray = render_rays(field, origins, directions, shading="textureless", light_dir=DOWN, ambient=0.3, **kwargs)
    assert torch.allclose(gray["rgb"], gray["rgb"][:, :1].expand(3, 3))  # gray: white albedo
    assert torch.allclose(gray["rgb"][:, 0], 0.3 * gray["opacity"], rtol=0.02)


@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_gradients_reach_the_field_from_the_rendered_rgb(shading):
    field = small_field()
    camera = PinholeCamera(torch.eye(4) + torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2.5], [0, 0, 0, 0]]),
                           focal=10.0, height=8, width=8)  # fmt: skip
    image = render_image(field, camera, num_samples=16, shading=shading, generator=torch.Generator().manual_seed(0))
    assert image.shape == (8, 8, 3)
    (image * torch.linspace(0, 1, 3)).sum().backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


def test_same_generator_same_output_and_chunking_is_invisible():
    field = small_field()
    origins, directions = looking_down(torch.linspace(-0.5, 0.5, 40))

    def render(seed, chunk=4096, perturb=True):
        generator = torch.Generator().manual_seed(seed)
        return render_rays(field, origins, directions, num_samples=24, generator=generator, chunk=chunk,
                           perturb=perturb, shading="lambertian")  # fmt: skip

    first, second, other, chunked = render(0), render(0), render(1), render(0, chunk=7)
    for key in first:
        assert torch.equal(first[key], second[key]), key
        assert torch.allclose(first[key], chunked[key], atol=1e-6), key
    assert not torch.equal(first["rgb"], other["rgb"])
    assert torch.equal(render(0, perturb=False)["rgb"], render(1, perturb=False)["rgb"])


def test_render_image_camera_convention():
    # camera at (0, 0, 3) looking along -z (identity rotation), y up, x right
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0
    camera = {"c2w": c2w, "focal": 4.0, "height": 4, "width": 6}
    origins, directions = pixel_rays(camera)
    assert origins.shape == directions.shape == (24, 3) and torch.equal(origins[5], torch.tensor([0.0, 0.0, 3.0]))
    grid = directions.view(4, 6, 3)
    assert bool((grid[..., 2] == -1).all())
    assert bool((grid[0, :, 1] > 0).all()) and bool((grid[-1, :, 1] < 0).all())  # row 0 at the top
    assert bool((grid[:, 0, 0] < 0).all()) and bool((grid[:, -1, 0] > 0).all())  # column 0 on the left
    assert torch.allclose(grid[0, 0], torch.tensor([-2.5 / 4, 1.5 / 4, -1.0]))
    # a camera turned by 180 degrees about y (at z = -3, looking along +z) sees the same centred blob
    turned = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    turned[2, 3] = -3.0
    field = small_field(background="constant", background_color=(0.0, 0.0, 0.0))
    for pose in (c2w, turned):
        image = render_image(field, PinholeCamera(pose, 2.0, 3, 3), num_samples=32, perturb=False)
        assert image.shape == (3, 3, 3)
        assert image[1, 1].sum() > image[0, 0].sum()  # the centre pixel looks through the blob
    as_list = render_image(field, {**camera, "c2w": c2w.tolist()}, num_samples=8, perturb=False)
    assert torch.allclose(as_list, render_image(field, camera, num_samples=8, perturb=False))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"origins": torch.zeros(2, 2)}, "origins"),
        ({"origins": [[0.0, 0.0, 3.0]]}, "origins"),
        ({"directions": torch.zeros(2, 3)}, "directions"),
        ({"directions": torch.ones(3, 3)}, "directions"),
        ({"directions": torch.tensor([[0.0, 0.0, float("nan")]] * 2)}, "directions"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 10**6}, "num_samples"),
        ({"shading": "phong"}, "shading"),
        ({"ambient": 1.5}, "ambient"),
        ({"light_dir": torch.zeros(3)}, "light_dir"),
        ({"light_dir": torch.ones(5, 3)}, "light_dir"),
        ({"generator": 0}, "generator"),
        ({"perturb": 1}, "perturb"),
        ({"chunk": 0}, "chunk"),
        ({"near": -1.0, "far": 2.0}, "near"),
        ({"near": 1.0, "far": float("inf")}, "far"),
        ({"near": torch.ones(3), "far": 2.0}, "near"),
        ({"near": 1.0}, "far"),
    ],
)
def test_render_rays_bad_inputs_raise_naming_the_argument(kwargs, name):
    origins, directions = looking_down([0.0, 0.5])
    arguments = {"origins": origins, "directions": directions, "num_samples": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        render_rays(small_field(), arguments.pop("origins"), arguments.pop("directions"), **arguments)


def test_near_far_needed_for_a_field_without_bound():
    origins, directions = looking_down([0.0])
    with pytest.raises(ValueError, match="near and far"):
        render_rays(ConstantField(1.0), origins, directions)
    with pytest.raises(ValueError, match="radius"):
        ray_sphere_bounds(origins, directions, 0.0)


@pytest.mark.parametrize(
    ("camera", "name"),
    [
        ({"c2w": torch.eye(4), "focal": 1.0, "height": 2}, "camera"),
        ("not a camera", "camera"),
        ({"c2w": torch.eye(3), "focal": 1.0, "height": 2, "width": 2}, "c2w"),
        ({"c2w": "eye", "focal": 1.0, "height": 2, "width": 2}, "c2w"),
        ({"c2w": torch.eye(4), "focal": -1.0, "height": 2, "width": 2}, "focal"),
        ({"c2w": torch.eye(4), "focal": math.inf, "height": 2, "width": 2}, "focal"),
        ({"c2w": torch.eye(4), "focal": 1.0, "height": 0, "width": 2}, "height"),
        ({"c2w": torch.eye(4), "focal": 1.0, "height": 2, "width": 10**5}, "width"),
    ],
)
def test_render_image_bad_cameras_raise_naming_the_field(camera, name):
    with pytest.raises(ValueError, match=name):
        render_image(small_field(), camera, num_samples=4)


def test_orientation_penalty_counts_visible_normals_facing_away():
    field = ConstantField(sigma=2.0)  # normals +z everywhere
    origins, down = looking_down([0.0, 0.5])
    kw = {"near": 0.0, "far": 2.0, "num_samples": 32, "perturb": False, "return_normals": True}
    facing = render_rays(field, origins, down, **kw)
    assert torch.equal(facing["orientation"], torch.zeros(2))  # n . d = -1: facing the camera, no penalty
    away = render_rays(field, -origins, -down, **kw)  # looking up: n . d = +1, the penalty is the opacity
    torch.testing.assert_close(away["orientation"], away["opacity"])
    assert float(away["opacity"][0].detach()) == pytest.approx(1 - math.exp(-4.0), rel=1e-5)
    albedo_only = render_rays(field, -origins, -down, **{**kw, "return_normals": False})
    assert torch.equal(albedo_only["orientation"], torch.zeros(2))  # no normals computed, no penalty


def test_render_view_returns_every_output_as_an_image():
    from geo_models.sds import render_view

    field = small_field()
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]])  # 3 units up +z, looking down
    camera = PinholeCamera(c2w=c2w, focal=8.0, height=6, width=5)
    out = render_view(field, camera, num_samples=8, perturb=False, shading="lambertian")
    assert out["rgb"].shape == (6, 5, 3) and out["opacity"].shape == (6, 5) and out["orientation"].shape == (6, 5)
    assert out["weights"].shape == (6, 5, 8) and out["normals"].shape == (6, 5, 3)
    assert torch.equal(out["rgb"], render_image(field, camera, num_samples=8, perturb=False, shading="lambertian"))
