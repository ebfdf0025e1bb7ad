"""GeoCLIP's contrastive objective (geo_models.geoclip.training): the paper's one-hot targets and the optional
haversine label smoothing (PIGEON)."""

import pytest
import torch

from geo_models.geoclip.training import geoclip_loss

# candidates: the image's own location, one 20 km away, one on another continent
DISTANCES = torch.tensor([[0.0, 20.0, 9000.0]])


def test_tiny_smoothing_is_the_papers_one_hot_loss():
    logits = torch.randn(2, 3)
    distances = torch.tensor([[0.0, 20.0, 9000.0], [20.0, 0.0, 9000.0]])
    one_hot = geoclip_loss(logits)
    assert torch.allclose(geoclip_loss(logits, distances_km=distances, smoothing_km=0.01), one_hot, atol=1e-6)


def test_smoothing_spares_a_near_candidate_not_a_far_one():
    """With tau = 75 km the near candidate keeps a share of the target, so scoring it high costs less than with
    one-hot targets; scoring the far one high costs as much."""
    near_high, far_high = torch.tensor([[5.0, 5.0, 0.0]]), torch.tensor([[5.0, 0.0, 5.0]])
    smooth = {"distances_km": DISTANCES, "smoothing_km": 75.0}
    assert geoclip_loss(near_high, **smooth) < geoclip_loss(far_high, **smooth)
    assert geoclip_loss(near_high) == pytest.approx(float(geoclip_loss(far_high)))


def test_smoothing_needs_distances_of_the_right_shape():
    with pytest.raises(ValueError, match="distances_km"):
        geoclip_loss(torch.randn(1, 3), smoothing_km=75.0)
    with pytest.raises(ValueError, match="smoothing_km"):
        geoclip_loss(torch.randn(1, 3), distances_km=DISTANCES, smoothing_km=-1.0)
