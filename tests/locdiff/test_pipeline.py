import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from geo_models.hub import load_model
from geo_models.locdiff.modeling import CSUNet
from geo_models.locdiff.pipeline import LocDiffPipeline, locdiff_loss, make_scheduler
from geo_models.locdiff.shdd import SHDD
from geo_models.sphere import haversine_km
from geo_models.testing import assert_latlon_close

SHDD_CFG = {"max_degree": 3, "decode_anchors": 500, "num_anchors": 256}


def tiny_pipeline(prediction_type="sample", scheduler="ddpm") -> LocDiffPipeline:
    torch.manual_seed(0)
    unet = CSUNet(
        sample_dim=16, condition_dim=8, block_out_dims=(32, 8), time_embed_dim=16, prediction_type=prediction_type
    )
    return LocDiffPipeline(unet, make_scheduler(scheduler, prediction_type=prediction_type), SHDD_CFG)


def assert_same_predictions(a, b):
    """Two predictions of the same weights, one loaded (other MKL kernels, geo_models.testing.tolerances): the same
    sample clouds and spherical means up to float32 rounding grown through the denoising and decoding."""
    assert_latlon_close(a.extras["samples"], b.extras["samples"])
    assert_latlon_close(a.latlon, b.latlon)


def run(pipe, x, seed=0, **kwargs):
    kwargs = {"num_samples": 4, "num_inference_steps": 2, **kwargs}
    return pipe.predict(image_embeddings=x, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_shapes_scores_and_determinism(pipe):
    x = torch.randn(3, 8)
    pred = run(pipe, x, top_k=3)
    assert pred.latlon.shape == (3, 2) and pred.candidates.shape == (3, 3, 2) and pred.scores.shape == (3, 3)
    samples = pred.extras["samples"]
    assert samples.shape == (3, 4, 2) and pred.extras["distance_to_mean_km"].shape == (3, 4)
    assert (pred.latlon[:, 0].abs() <= 90).all() and (pred.latlon[:, 1].abs() <= 180).all()
    # Scores: share of samples within the density radius, sorted best first; candidates are samples.
    assert ((pred.scores >= 0.25) & (pred.scores <= 1)).all()
    assert (pred.scores[:, :-1] >= pred.scores[:, 1:]).all()
    assert all(any(torch.equal(c, s) for s in samples[i]) for i in range(3) for c in pred.candidates[i])
    again = run(pipe, x, top_k=3)
    assert torch.equal(pred.latlon, again.latlon) and torch.equal(samples, again.extras["samples"])
    assert not torch.equal(samples, run(pipe, x, seed=1).extras["samples"])
    # Same samples whatever the chunking is not promised, but the same batch_size is.
    assert torch.equal(run(pipe, x, batch_size=5).latlon, run(pipe, x, batch_size=5).latlon)
    densest = run(pipe, x, top_k=3, point_estimate="densest")
    assert torch.equal(densest.latlon, densest.candidates[:, 0])


def test_save_load_and_load_model(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["model_type"] == "locdiff" and config["shdd"]["max_degree"] == 3
    assert (tmp_path / "p" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "locdiff" in (tmp_path / "p" / "README.md").read_text()
    loaded = load_model(tmp_path / "p")
    assert isinstance(loaded, LocDiffPipeline) and isinstance(loaded.shdd, SHDD)
    x = torch.randn(2, 8)
    assert_same_predictions(run(pipe, x), run(loaded, x))


def test_push_pull_hub(pipe, local_hub):
    pipe.push_to_hub("tester/locdiff-tiny", model_card_kwargs={"metrics": {"acc_2500km": 50.0}})
    pulled = LocDiffPipeline.from_pretrained("tester/locdiff-tiny")
    assert isinstance(load_model("tester/locdiff-tiny"), LocDiffPipeline)
    x = torch.randn(2, 8)
    assert_same_predictions(run(pipe, x), run(pulled, x))


def test_ddim_and_prediction_types():
    x = torch.randn(2, 8)
    ddim = tiny_pipeline(scheduler="ddim")
    assert isinstance(ddim.scheduler, DDIMScheduler)
    assert torch.equal(run(ddim, x, num_inference_steps=3).latlon, run(ddim, x, num_inference_steps=3).latlon)
    for prediction_type in ("epsilon", "v_prediction"):
        assert run(tiny_pipeline(prediction_type), x).latlon.isfinite().all()
    # A DDPM pipeline can switch to DDIM from its config.
    pipe = tiny_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert run(pipe, x).latlon.shape == (2, 2)


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="image_embeddings"):
        run(pipe, torch.randn(2, 7))
    with pytest.raises(ValueError, match="image_embeddings"):
        run(pipe, torch.full((2, 8), float("nan")))
    with pytest.raises(ValueError, match="image_embeddings"):
        run(pipe, torch.empty(0, 8))
    with pytest.raises(ValueError, match="images"):
        pipe.predict(images=["x.jpg"])
    with pytest.raises(ValueError, match="top_k"):
        run(pipe, torch.randn(1, 8), top_k=5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        run(pipe, torch.randn(1, 8), num_inference_steps=0)
    with pytest.raises(ValueError, match="max_degree"):
        LocDiffPipeline(pipe.unet, make_scheduler(), {"max_degree": 4})
    with pytest.raises(ValueError, match="prediction_type"):
        LocDiffPipeline(pipe.unet, make_scheduler(prediction_type="epsilon"), SHDD_CFG)
    with pytest.raises(ValueError, match="loss"):
        locdiff_loss(pipe.unet, pipe.scheduler, pipe.shdd, torch.randn(2, 8), torch.zeros(2, 2), loss="huber")


@pytest.mark.parametrize("loss", ["kl", "cosine", "l2", "mse"])
def test_losses_are_finite_and_seeded(pipe, loss):
    x, latlon = torch.randn(4, 8), torch.tensor([[10.0, 20.0], [-30.0, 100.0], [60.0, -120.0], [0.0, 179.0]])
    a = locdiff_loss(pipe.unet, pipe.scheduler, pipe.shdd, x, latlon, loss, torch.Generator().manual_seed(0))
    b = locdiff_loss(pipe.unet, pipe.scheduler, pipe.shdd, x, latlon, loss, torch.Generator().manual_seed(0))
    assert a.ndim == 0 and torch.isfinite(a) and torch.equal(a, b)


def test_learns_toy_conditional_problem():
    """4 clusters keyed by a one-hot condition: the KL loss falls and samples land at the right cluster."""
    torch.manual_seed(0)
    centers = torch.tensor([[45.0, -100.0], [-25.0, 135.0], [10.0, 20.0], [-35.0, -60.0]])
    unet = CSUNet(sample_dim=25, condition_dim=4, block_out_dims=(64, 32), time_embed_dim=32, dropout=0.0)
    scheduler, shdd = make_scheduler(), SHDD(4, num_anchors=512, decode_anchors=2000)
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        k = torch.randint(0, 4, (64,), generator=g)
        latlon = centers[k] + torch.randn(64, 2, generator=g) * 2
        loss = locdiff_loss(unet, scheduler, shdd, F.one_hot(k, 4).float(), latlon, "kl", generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    pipe = LocDiffPipeline(unet, scheduler, shdd)
    pred = pipe.predict(
        image_embeddings=torch.eye(4),
        num_samples=8,
        num_inference_steps=20,
        generator=torch.Generator().manual_seed(1),
    )
    dist = haversine_km(pred.extras["samples"], centers[:, None])  # (4, 8)
    assert (dist < 1000).float().mean() > 0.9, dist
    assert (haversine_km(pred.latlon, centers) < 500).all()
    other = haversine_km(pred.latlon[:, None], centers[None])  # nearest cluster is the conditioned one
    assert torch.equal(other.argmin(1), torch.arange(4))


def test_locdiff_h_restricts_geoclip_to_the_sample_regions(pipe):
    from geo_models.geoclip import GeoCLIP

    geoclip = GeoCLIP(embedding_dim=8, projection_dim=8, num_features=8, hidden_dim=16, num_layers=1)
    gallery = torch.cat([torch.rand(300, 2) * torch.tensor([160.0, 340.0]) - torch.tensor([80.0, 170.0])])
    x = torch.randn(3, 8)
    pred = pipe.predict_hybrid(
        geoclip, x, radius_km=1500, top_k=3, gallery=gallery, num_samples=4, num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    samples = pred.extras["locdiff"].extras["samples"]  # (3, 4, 2)
    near = haversine_km(pred.candidates[:, :, None], samples[:, None]).min(-1).values  # (3, 3)
    inside = (haversine_km(samples[:, :, None], gallery[None, None]) <= 1500).any(1).sum(-1)  # per image
    for i in range(3):
        if inside[i] >= 3:  # images whose sample regions hold >= 3 gallery points: every candidate is inside them
            assert (near[i] <= 1500 + 1e-3).all()
    # Unrestricted GeoCLIP with the same inputs differs in general; restricted scores renormalise over the region.
    assert torch.isfinite(pred.scores).all() and (pred.scores.sum(-1) <= 1 + 1e-5).all()


def test_hybrid_around_the_point_estimate(pipe):
    from geo_models.geoclip import GeoCLIP

    geoclip = GeoCLIP(embedding_dim=8, projection_dim=8, num_features=8, hidden_dim=16, num_layers=1)
    gallery = torch.rand(300, 2, generator=torch.Generator().manual_seed(3)) * torch.tensor([160.0, 340.0])
    gallery = gallery - torch.tensor([80.0, 170.0])
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    pred = pipe.predict_hybrid(
        geoclip, x, radius_km=2500, around="estimate", top_k=2, gallery=gallery, num_samples=4,
        num_inference_steps=2, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    estimate = pred.extras["locdiff"].latlon  # (3, 2): every candidate lies within the radius of it
    assert (haversine_km(pred.candidates, estimate[:, None]) <= 2500 + 1e-3).all()
    with pytest.raises(ValueError, match="around"):
        pipe.predict_hybrid(geoclip, x, around="everywhere", num_inference_steps=2)


def test_hybrid_empty_region_falls_back_to_locdiff_or_geoclip(pipe):
    from geo_models.geoclip import GeoCLIP

    geoclip = GeoCLIP(embedding_dim=8, projection_dim=8, num_features=8, hidden_dim=16, num_layers=1)
    gallery = torch.tensor([[0.0, 0.0], [0.5, 0.5]])  # two points; a 1 m radius around the samples holds neither
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(4))
    kwargs = dict(radius_km=0.001, top_k=1, gallery=gallery, num_samples=4, num_inference_steps=2)
    keep = pipe.predict_hybrid(geoclip, x, generator=torch.Generator().manual_seed(0), **kwargs)
    assert keep.extras["empty_region"].all()
    torch.testing.assert_close(keep.latlon, keep.extras["locdiff"].latlon.to(keep.latlon))
    whole = pipe.predict_hybrid(geoclip, x, fallback="geoclip", generator=torch.Generator().manual_seed(0), **kwargs)
    assert (haversine_km(whole.latlon[:, None], gallery[None]).min(1).values < 1e-3).all()
    with pytest.raises(ValueError, match="fallback"):
        pipe.predict_hybrid(geoclip, x, fallback="nearest", num_inference_steps=2)
