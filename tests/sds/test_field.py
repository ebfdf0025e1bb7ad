"""NeRFField of GPS-guided score distillation: ranges, bound, DreamFusion's blob, normals, background, seeding and
save / load."""

import json

import pytest
import torch

from geo_models.sds import NeRFField

SMALL = {"num_levels": 2, "base_resolution": 8, "max_resolution": 16, "features_per_level": 2, "hidden_dim": 16}


def small_field(**kwargs) -> NeRFField:
    return NeRFField(**{**SMALL, **kwargs})


def radial_field(**kwargs) -> NeRFField:
    """A field whose density is spherically symmetric: the MLP's output weights are zeroed, so only its bias, the shift
    and the (radial) blob remain."""
    field = small_field(**kwargs)
    with torch.no_grad():
        field.mlp[-1].weight.zero_()
    return field


def test_shapes_and_ranges():
    field = small_field()
    points = (torch.rand(300, 3, generator=torch.Generator().manual_seed(0)) * 3 - 1.5).requires_grad_()
    density, albedo = field(points)
    assert density.shape == (300,) and albedo.shape == (300, 3)
    assert density.dtype == albedo.dtype == torch.float32
    assert bool((density >= 0).all()) and bool(torch.isfinite(density).all())
    assert bool((albedo >= 0).all()) and bool((albedo <= 1).all())
    assert torch.allclose(field.density(points), density)
    density.sum().backward()  # differentiable w.r.t. the points too
    assert points.grad is not None
    assert field.resolutions == [8, 16]


def test_zero_density_outside_the_bound_only():
    field = small_field(bound=2.0, density_activation="exp")
    directions = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    outside = torch.cat([directions * 2.01, directions * 5.0])
    inside = directions * 1.99
    assert torch.equal(field(outside)[0], torch.zeros(128))
    assert bool((field(inside)[0] > 0).all())


def test_blob_makes_the_centre_dense():
    field = small_field()
    centre = field.density(torch.zeros(1, 3)).item()
    edge = field.density(torch.tensor([[0.9, 0.0, 0.0], [0.0, -0.9, 0.0]]))
    assert centre > 3.0  # softplus(5 - 1 + raw ~ 0)
    assert bool((edge < 1.0).all())
    no_blob = small_field(blob_density=0.0).density(torch.zeros(1, 3)).item()
    assert no_blob < 1.0


def test_normals_of_a_radial_density_point_outward():
    field = radial_field()
    points = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(2)), dim=-1)
    points = points * torch.linspace(0.05, 0.9, 50)[:, None]
    normals = field.normals(points)
    assert normals.shape == (50, 3)
    outward = torch.nn.functional.normalize(points, dim=-1)
    assert torch.allclose((normals * outward).sum(-1), torch.ones(50), atol=1e-4)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(50), atol=1e-5)
    assert torch.equal(field.normals(torch.tensor([[3.0, 0.0, 0.0]])), torch.zeros(1, 3))  # outside: no gradient


def test_normals_under_no_grad_and_with_gradients_to_the_parameters():
    field = small_field()
    points = torch.rand(20, 3, generator=torch.Generator().manual_seed(3)) - 0.5
    with torch.no_grad():
        detached = field.normals(points)
    assert not detached.requires_grad
    normals = field.normals(points)
    assert normals.requires_grad and torch.allclose(normals, detached)
    normals[:, 0].sum().backward()  # double backward (DreamFusion's shading / orientation losses need it)
    assert field.grids[0].grad is not None and float(field.grids[0].grad.abs().sum()) > 0
    assert float(field.mlp[0].weight.grad.abs().sum()) > 0


def test_background_constant_and_mlp():
    directions = torch.randn(10, 3, generator=torch.Generator().manual_seed(4))
    constant = small_field(background="constant", background_color=(0.2, 0.4, 0.6))
    assert torch.allclose(constant.background(directions), torch.tensor([0.2, 0.4, 0.6]).expand(10, 3))
    assert not any("background" in name for name, _ in constant.named_parameters())
    mlp = small_field()
    colors = mlp.background(directions)
    assert colors.shape == (10, 3) and bool((colors >= 0).all()) and bool((colors <= 1).all())
    assert torch.allclose(mlp.background(directions * 7.0), colors, atol=1e-6)  # only the direction matters
    colors.sum().backward()
    assert float(mlp.background_mlp[0].weight.grad.abs().sum()) > 0


def test_seeded_construction():
    state = torch.get_rng_state()
    a, b, c = small_field(seed=3), small_field(seed=3), small_field(seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # a seed leaves the global RNG alone
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    torch.manual_seed(11)
    d = small_field(seed=None)
    torch.manual_seed(11)
    e = small_field(seed=None)
    assert all(torch.equal(x, y) for x, y in zip(d.state_dict().values(), e.state_dict().values()))


def test_save_load_round_trip(tmp_path):
    field = small_field(seed=7, background="mlp", density_activation="exp", bound=1.5, blob_radius=0.3)
    with torch.no_grad():
        for grid in field.grids:
            grid.normal_(0, 0.1)  # trained-looking values, not the init the loader would also produce
    field.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "NeRFField"
    loaded = NeRFField.from_pretrained(tmp_path)
    assert loaded.config.bound == 1.5 and loaded.config.density_activation == "exp"
    assert loaded.config.background_color == [1.0, 1.0, 1.0]
    for (name, expected), actual in zip(field.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(expected, actual), name
    points = torch.rand(30, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    for expected, actual in zip(field(points), loaded(points)):
        assert torch.equal(expected, actual)
    assert torch.equal(field.background(points), loaded.background(points))


def test_save_load_constant_background(tmp_path):
    field = small_field(background="constant", background_color=(0.0, 0.5, 1.0))
    field.save_pretrained(tmp_path)
    loaded = NeRFField.from_pretrained(tmp_path)
    assert torch.equal(loaded.background(torch.ones(2, 3)), torch.tensor([[0.0, 0.5, 1.0]] * 2))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bound": 0.0}, "bound"),
        ({"bound": float("nan")}, "bound"),
        ({"num_levels": 0}, "num_levels"),
        ({"base_resolution": 1}, "base_resolution"),
        ({"max_resolution": 4}, "max_resolution"),  # below base_resolution (8)
        ({"max_resolution": 4096}, "max_resolution"),
        ({"features_per_level": 2.5}, "features_per_level"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"density_activation": "relu"}, "density_activation"),
        ({"blob_density": -1.0}, "blob_density"),
        ({"blob_radius": 0.0}, "blob_radius"),
        ({"background": "sky"}, "background"),
        ({"background_color": (2.0, 0.0, 0.0)}, "background_color"),
        ({"background_color": (1.0, 1.0)}, "background_color"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        small_field(**kwargs)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[0.0, 0.0, 0.0]], "points must be a torch.Tensor"),
        (torch.zeros(4, 2), "points must have shape"),
        (torch.zeros(4, 3, dtype=torch.long), "points must be a floating"),
        (torch.tensor([[0.0, float("nan"), 0.0]]), "points must be finite"),
    ],
)
def test_bad_points_raise(points, message):
    field = small_field()
    for method in (field.forward, field.normals, field.density):
        with pytest.raises(ValueError, match=message):
            method(points)
    with pytest.raises(ValueError, match="directions"):
        field.background(torch.zeros(3, 3))
