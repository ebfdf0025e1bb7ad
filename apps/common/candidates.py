"""Candidates as distinct places: a geolocator's ranked guesses often repeat one place (the sphere flow's densest
samples, GeoCLIP's near-duplicate gallery points), so the table and the globe merge guesses within ``radius_km`` of a
better one into it, with their combined score."""

from __future__ import annotations

import numpy as np
import torch

from geo_models.sphere import haversine_km

DISTINCT_RADIUS_KM = 25.0
COMBINE = ("sum", "max")


def distinct_places(candidates, scores, *, radius_km: float = DISTINCT_RADIUS_KM, combine: str = "sum",
                    top_k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Merge ranked guesses into distinct places.

    Guesses are visited best first; each joins the first kept place within ``radius_km`` (great circle) of it, else
    it starts a new place at its own position. A place's score combines its guesses': ``"sum"`` for probabilities
    (their mass adds up), ``"max"`` for scores that do not add (log-densities, overlapping shares). Places are
    re-ranked by their combined score and the best ``top_k`` kept.

    Args:
        candidates: ``(K, 2)`` latlon in degrees. scores: ``(K,)``, higher is better.

    Returns:
        ``(places (P, 2), scores (P,), merged (P,))``: positions (each its best guess's), combined scores and how many
        guesses each place merged, best first; no two places are within ``radius_km`` of each other.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
    cands = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(cands) != len(scores):
        raise ValueError(f"candidates and scores must be equally long, got {len(cands)} and {len(scores)}")
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    total: list[float] = []
    merged: list[int] = []
    for i in order:
        if kept:
            d = haversine_km(torch.from_numpy(cands[kept]), torch.from_numpy(cands[i])).numpy()
            near = np.nonzero(d <= radius_km)[0]
            if len(near):
                j = int(near[0])
                total[j] = total[j] + scores[i] if combine == "sum" else max(total[j], scores[i])
                merged[j] += 1
                continue
        kept.append(int(i))
        total.append(float(scores[i]))
        merged.append(1)
    rank = np.argsort(-np.asarray(total), kind="stable")[: top_k if top_k is not None else None]
    return cands[kept][rank], np.asarray(total)[rank], np.asarray(merged)[rank]
