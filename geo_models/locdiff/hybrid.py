"""LocDiff-H (LocDiff paper, sec. 5.2): GeoCLIP retrieval restricted to a radius (200 km) around LocDiff's samples.

LocDiff is good at coarse scales without a gallery; GeoCLIP's gallery gives street/city precision. The hybrid keeps
LocDiff's coarse decision and lets GeoCLIP choose the exact gallery point inside it. Methods compose only here, as the
paper composes them (DESIGN.md: LocDiff-H uses GeoCLIP).
"""

from __future__ import annotations

from typing import Any

import torch

from geo_models.checks import check_int, check_number
from geo_models.outputs import GeoPrediction
from geo_models.sphere import haversine_km


def predict_hybrid(
    pipeline: Any,
    geoclip: Any,
    image_embeddings: torch.Tensor,
    *,
    radius_km: float = 200.0,
    around: str = "samples",
    fallback: str = "locdiff",
    top_k: int = 5,
    gallery: Any = None,
    **locdiff_kwargs: Any,
) -> GeoPrediction:
    """LocDiff-H prediction.

    Args:
        pipeline: a :class:`~geo_models.locdiff.LocDiffPipeline`.
        geoclip: a :class:`~geo_models.geoclip.GeoCLIP` trained on the same backbone's features.
        image_embeddings: ``(N, D)`` backbone features, given to both models.
        radius_km: GeoCLIP searches the gallery points within this distance of LocDiff's candidate locations.
        around: the candidate locations: ``"samples"`` (every one of LocDiff's samples, the paper's sec. 5.2
            wording) or ``"estimate"`` (only LocDiff's point estimate, the spherical mean of its samples; keeps
            LocDiff's coarse decision when the samples spread over several regions).
        fallback: for an image whose region holds no gallery point (e.g. a point estimate at sea): ``"locdiff"``
            keeps LocDiff's point estimate as ``latlon`` (there is nothing to retrieve inside the region),
            ``"geoclip"`` uses GeoCLIP over the whole gallery. Either way ``candidates`` are GeoCLIP's over the whole
            gallery for such images and ``extras["empty_region"] (N,)`` marks them.
        top_k, gallery: GeoCLIP retrieval settings.
        locdiff_kwargs: passed to ``pipeline.predict`` (``num_samples``, ``num_inference_steps``, ``generator``...).

    Returns:
        GeoCLIP's prediction (probabilities over the restricted gallery) with ``extras["locdiff"]`` the LocDiff
        prediction (its ``extras["samples"]`` is the sample cloud).
    """
    if around not in ("samples", "estimate"):
        raise ValueError(f"around must be 'samples' or 'estimate', got {around!r}")
    if fallback not in ("locdiff", "geoclip"):
        raise ValueError(f"fallback must be 'locdiff' or 'geoclip', got {fallback!r}")
    radius_km = check_number(radius_km, "radius_km", 0.0, low_open=True)
    top_k = check_int(top_k, "top_k")  # its upper bound (the gallery size) is GeoCLIP's check
    # 1. LocDiff samples: the coarse regions
    locdiff = pipeline.predict(image_embeddings=image_embeddings, **locdiff_kwargs)
    # 2. GeoCLIP retrieval inside the caps around every sample
    centres = locdiff.extras["samples"] if around == "samples" else locdiff.latlon[:, None]
    pred = geoclip.predict(
        image_embeddings=image_embeddings,
        top_k=top_k,
        gallery=gallery,
        prior_latlon=centres,
        prior_radius_km=radius_km,
        prior_fallback=True,
    )
    # 3. An empty region is one whose best retrieved point lies outside every cap (inside points come first)
    empty = (haversine_km(pred.latlon[:, None], centres.to(pred.latlon)) > radius_km).all(dim=1)
    if fallback == "locdiff":
        pred.latlon = torch.where(empty[:, None], locdiff.latlon.to(pred.latlon), pred.latlon)
    pred.extras.update(locdiff=locdiff, empty_region=empty)
    return pred
