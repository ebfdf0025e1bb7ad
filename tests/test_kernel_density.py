"""Every point-based geolocator answers with a density (issue 18): GeoCLIP, kNN and LocDiff on tiny models have
log_prob / density_grid that integrate to 1 and agree with each other, fit_density keeps the kernel through
save/load, and GeoCLIP's density-mode point estimate is one of its gallery points."""

import pytest
import torch

from geo_models.baselines import KNNGeolocator
from geo_models.geoclip import GeoCLIP
from geo_models.geoclip.gallery import fibonacci_gallery
from geo_models.locdiff.modeling import CSUNet
from geo_models.locdiff.pipeline import LocDiffPipeline, make_scheduler
from geo_models.sphere.density import density_grid_points

TRUTH = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [35.7, 139.7]])


def tiny_geoclip():
    torch.manual_seed(0)
    model = GeoCLIP(embedding_dim=16, projection_dim=8, num_features=8, hidden_dim=16, num_layers=2)
    model.gallery = fibonacci_gallery(3000)
    return model.eval()


def tiny_knn():
    torch.manual_seed(0)
    return KNNGeolocator(embedding_dim=16).fit(torch.randn(500, 16), torch.rand(500, 2) * torch.tensor([160, 360])
                                               - torch.tensor([80, 180]))  # fmt: skip


def tiny_locdiff():
    torch.manual_seed(0)
    unet = CSUNet(sample_dim=16, condition_dim=16, block_out_dims=(32, 8), time_embed_dim=16, dropout=0.0)
    return LocDiffPipeline(unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 500})


MODELS = {"GeoCLIP": (tiny_geoclip, {}), "kNN": (tiny_knn, {}), "LocDiff": (tiny_locdiff, {"num_inference_steps": 4})}


@pytest.mark.parametrize("name", list(MODELS))
def test_density_integrates_to_one_and_matches_log_prob(name, tmp_path):
    build, kwargs = MODELS[name]
    model = build()
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    grid = model.density_grid(image_embeddings=x, resolution_deg=1.0, **kwargs)
    assert torch.allclose(grid.integral(), torch.ones(3), atol=0.01), grid.integral()
    _, _, pts = density_grid_points(1.0)
    cells = pts[[0, 20_000, 45_000]]  # a few cell centres: log_prob there is the grid's value
    lp = model.log_prob(cells[None].expand(3, -1, -1), image_embeddings=x, **kwargs)
    flat = grid.log_density.flatten(1)[:, [0, 20_000, 45_000]]
    assert torch.allclose(lp, flat, atol=1e-3)
    # the kernel fitted on held-out truths is kept through save_pretrained / from_pretrained
    kernel = model.fit_density(x, TRUTH, **kwargs)
    assert model.density_kernel == kernel and kernel.kappa > 0
    model.save_pretrained(tmp_path / "m")
    assert type(model).from_pretrained(tmp_path / "m").density_kernel == kernel
    with pytest.raises(ValueError, match="latlon"):
        model.fit_density(x, TRUTH[:2], **kwargs)


def test_geoclip_density_mode_is_a_gallery_point():
    model = tiny_geoclip()
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    argmax = model.predict(image_embeddings=x, top_k=3)
    mode = model.predict(image_embeddings=x, top_k=3, point_estimate="density_mode")
    assert mode.candidates.shape == (4, 3, 2) and torch.equal(mode.candidates, argmax.candidates)
    d = torch.cdist(mode.latlon.double(), model.gallery.double())
    assert bool((d.min(dim=1).values < 1e-3).all())
    with pytest.raises(ValueError, match="point_estimate"):
        model.predict(image_embeddings=x, point_estimate="median")
