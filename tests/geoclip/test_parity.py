"""Acceptance: our GeoCLIP reproduces the official `geoclip` 1.3.0 package (location embeddings, 100K retrieval).

The official model is built from its own classes and weight files, except the CLIP backbone (ViT-L/14, not
available offline): the tests start from backbone features, the input of the official image head
``image_encoder.mlp``. Encoding the 100K gallery takes ~75 s per implementation with one thread here, so the
full-gallery test is marked slow; the same check on a 10K slice of the gallery runs by default.
"""

import pytest
import torch
from torch import nn

pytest.importorskip("geoclip")
from geoclip.model.GeoCLIP import GeoCLIP as OfficialGeoCLIP  # noqa: E402
from geoclip.model.image_encoder import ImageEncoder as OfficialImageEncoder  # noqa: E402
from geoclip.model.location_encoder import LocationEncoder as OfficialLocationEncoder  # noqa: E402
from geoclip.model.misc import file_dir, load_gps_data  # noqa: E402

from geo_models.geoclip import GeoCLIP  # noqa: E402

TOP_K = 5


class FeaturesAsCLIP(nn.Module):
    """Stands in for the official ``CLIPModel``: its "pixels" are already CLIP image features ``(N, 768)``."""

    def get_image_features(self, pixel_values):
        return pixel_values


def official_geoclip() -> OfficialGeoCLIP:
    """The official ``GeoCLIP`` with its own ``_load_weights`` (mlp, location encoder, logit scale) and gallery,
    built without the ViT-L/14 its constructor would create."""
    image_encoder = OfficialImageEncoder.__new__(OfficialImageEncoder)
    nn.Module.__init__(image_encoder)
    image_encoder.CLIP = FeaturesAsCLIP()
    image_encoder.mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))
    model = OfficialGeoCLIP.__new__(OfficialGeoCLIP)
    nn.Module.__init__(model)
    model.image_encoder = image_encoder
    model.location_encoder = OfficialLocationEncoder(from_pretrained=False)
    model.register_buffer("gps_gallery", load_gps_data(f"{file_dir}/gps_gallery/coordinates_100K.csv"))
    model.weights_folder = f"{file_dir}/weights"
    model._load_weights()
    return model.eval()


@pytest.fixture(scope="module")
def ours():
    return GeoCLIP.from_official()


@pytest.fixture(scope="module")
def official():
    return official_geoclip()


@pytest.fixture(scope="module")
def features():
    return torch.randn(8, 768, generator=torch.Generator().manual_seed(0))


def official_retrieval(official, features, gallery):
    """The official predict path, batched over the images: ``forward`` (mlp, location encoder over the whole gallery,
    normalise, ``logit_scale.exp()``) -> softmax over the gallery. ``(N, G)`` probabilities."""
    with torch.no_grad():
        return official.forward(features, gallery).softmax(dim=-1)


def assert_same_top_k(pred, official_probs, gallery):
    """Same top-k coordinates (rows may differ: the gallery has duplicates) and probabilities within 1e-5; the order
    may differ only between candidates whose official probabilities are equal within 1e-6."""
    top = official_probs.topk(TOP_K, dim=-1)
    official_cands = gallery[top.indices]
    assert pred.candidates.shape == official_cands.shape and pred.scores.shape == top.values.shape
    torch.testing.assert_close(pred.scores, top.values, rtol=0, atol=1e-5)
    for i in range(len(pred.candidates)):
        for k in range(TOP_K):
            if torch.equal(pred.candidates[i, k], official_cands[i, k]):
                continue
            rows = (gallery == pred.candidates[i, k]).all(dim=1)  # our candidate's rows in the gallery
            assert rows.any(), (i, k, pred.candidates[i, k])
            gap = (official_probs[i, rows] - top.values[i, k]).abs().min()
            assert gap <= 1e-6, (i, k, pred.candidates[i, k], official_cands[i, k], gap)
    assert torch.equal(pred.latlon, pred.candidates[:, 0])


def test_location_embeddings_match_official(ours, official):
    g = torch.Generator().manual_seed(1)
    points = torch.cat(
        [
            torch.stack([torch.rand(1000, generator=g) * 180 - 90, torch.rand(1000, generator=g) * 360 - 180], 1),
            torch.tensor([[90.0, 0.0], [-90.0, 0.0], [90.0, 180.0], [-90.0, -180.0], [0.0, 0.0]]),
            torch.tensor([[0.0, 180.0], [0.0, -180.0], [45.0, 180.0], [-45.0, -180.0], [89.999, 179.999]]),
        ]
    )
    with torch.no_grad():
        expected = official.location_encoder(points)
        got = ours.location_encoder(points)
    assert got.shape == expected.shape == (len(points), 512)
    assert (got - expected).abs().max() <= 1e-4


def test_default_gallery_is_official(ours, official):
    assert torch.equal(ours.gallery, official.gps_gallery)


def test_retrieval_matches_official_on_10k_gallery_slice(ours, official, features):
    # Every 10th row of the official gallery (10K rows, 106 duplicates): the same path as below, in ~1/10 the time.
    gallery = official.gps_gallery[::10]
    pred = ours.predict(image_embeddings=features, top_k=TOP_K, gallery=gallery)
    assert_same_top_k(pred, official_retrieval(official, features, gallery), gallery)


@pytest.mark.slow  # encodes the 100K gallery with both implementations: ~75 s each with one thread here
def test_retrieval_matches_official_over_100k_gallery(ours, official, features):
    official_probs = official_retrieval(official, features, official.gps_gallery)
    pred = ours.predict(image_embeddings=features, top_k=TOP_K, gallery="official")
    assert_same_top_k(pred, official_probs, official.gps_gallery)
    # One image through the default gallery (the official one, saved with the model; its embeddings are cached).
    single = ours.predict(image_embeddings=features[:1], top_k=TOP_K)
    assert_same_top_k(single, official_probs[:1], official.gps_gallery)
