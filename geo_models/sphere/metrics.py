"""Geolocation metrics: accuracy within distance thresholds, median error, GeoScore."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from geo_models.sphere._checks import TensorLike
from geo_models.sphere.coords import haversine_km

DEFAULT_THRESHOLDS_KM = (1, 25, 200, 750, 2500)  # street, city, region, country, continent
GEOSCORE_SCALE_KM = 1492.7  # GeoGuessr-style score: 5000 * exp(-d / 1492.7)


def _pair_distances(pred: TensorLike, true: TensorLike) -> torch.Tensor:
    d = haversine_km(pred, true).reshape(-1)
    if d.numel() == 0:
        raise ValueError("pred and true must hold at least one pair of coordinates")
    return d


def threshold_key(km: float) -> str:
    """Metric name of a threshold, e.g. ``acc_25km`` (the keys of evaluation JSON files)."""
    return f"acc_{km:g}km"


def accuracy_within_km(
    pred: TensorLike, true: TensorLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM
) -> dict[str, float]:
    """Percentage of pairs within each threshold: ``{"acc_1km": 12.5, ..., "acc_2500km": 97.0}``.

    ``pred`` and ``true`` are ``(N, 2)`` latlon degrees (or broadcastable).
    """
    d = _pair_distances(pred, true)
    if not len(thresholds) or any(not (t > 0) for t in thresholds):
        raise ValueError(f"thresholds must be positive distances in km, got {tuple(thresholds)}")
    return {threshold_key(t): float((d <= t).double().mean() * 100) for t in thresholds}


def median_km(pred: TensorLike, true: TensorLike) -> float:
    """Median great-circle error in km."""
    return float(_pair_distances(pred, true).double().median())


def geoscore(pred: TensorLike, true: TensorLike) -> torch.Tensor:
    """Per-pair GeoScore ``5000 * exp(-d / 1492.7)`` (d in km), shape ``(...)``; 5000 is a perfect guess."""
    return 5000 * torch.exp(-haversine_km(pred, true) / GEOSCORE_SCALE_KM)


def geolocation_metrics(
    pred: TensorLike, true: TensorLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS_KM
) -> dict[str, float]:
    """All metrics of ``train/evaluate_geolocation.py``: n, acc_*km, median_km and mean geoscore."""
    d = _pair_distances(pred, true)
    return {
        "n": int(d.numel()),
        **accuracy_within_km(pred, true, thresholds),
        "median_km": float(d.double().median()),
        "geoscore": float((5000 * torch.exp(-d.double() / GEOSCORE_SCALE_KM)).mean()),
    }
