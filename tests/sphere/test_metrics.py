import pytest
import torch

from geo_models.sphere import (
    EARTH_RADIUS_KM,
    accuracy_within_km,
    destination,
    geolocation_metrics,
    geoscore,
    median_km,
)


def test_accuracy_table_on_hand_made_pairs():
    true = torch.tensor([[48.8566, 2.3522]] * 5, dtype=torch.float64)
    # Errors of 0.5, 10, 100, 500 and 2000 km due east.
    dists = torch.tensor([0.5, 10.0, 100.0, 500.0, 2000.0], dtype=torch.float64)
    pred = destination(true, 90.0, dists)
    acc = accuracy_within_km(pred, true)
    assert acc == pytest.approx(
        {"acc_1km": 20.0, "acc_25km": 40.0, "acc_200km": 60.0, "acc_750km": 80.0, "acc_2500km": 100.0}
    )
    assert median_km(pred, true) == pytest.approx(100.0, rel=1e-6)
    scores = geoscore(pred, true)
    assert scores[0].item() == pytest.approx(5000 * torch.exp(torch.tensor(-0.5 / 1492.7)).item(), rel=1e-6)
    assert (scores.diff() < 0).all()
    m = geolocation_metrics(pred, true)
    assert m["n"] == 5 and m["median_km"] == pytest.approx(100.0, rel=1e-6)
    assert m["geoscore"] == pytest.approx(scores.mean().item(), rel=1e-6)


def test_accuracy_perfect_and_antipodal():
    p = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    assert all(v == 100.0 for v in accuracy_within_km(p, p).values())
    anti = torch.tensor([[0.0, 180.0], [-10.0, -170.0]])
    assert all(v == 0.0 for v in accuracy_within_km(p, anti).values())
    assert median_km(p, anti) == pytest.approx(torch.pi * EARTH_RADIUS_KM, rel=1e-4)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="thresholds"):
        accuracy_within_km([[0.0, 0.0]], [[0.0, 0.0]], thresholds=(0,))
    with pytest.raises(ValueError, match="at least one"):
        median_km(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="latitude"):
        accuracy_within_km([[100.0, 0.0]], [[0.0, 0.0]])
