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


def nearest_shares(places, samples, *, radius_km: float) -> np.ndarray:
    """The share of ``samples (S, 2)`` whose nearest place of ``places (P, 2)`` is each place and lies within
    ``radius_km`` of it -> ``(P,)``, summing to at most 1.

    A sample-based geolocator's (LocDiff's) score in words: "this share of the model's guesses point here". Its own
    ranking score, the share of samples within 750 km of a candidate, is 1 for every candidate of a concentrated
    cloud (issue 17); assigning each sample to one place splits the cloud between them instead.
    """
    places = torch.as_tensor(np.asarray(places, dtype=np.float64).reshape(-1, 2))
    pts = torch.as_tensor(np.asarray(samples, dtype=np.float64).reshape(-1, 2))
    if len(pts) == 0 or len(places) == 0:
        return np.zeros(len(places))
    d = haversine_km(pts[:, None], places[None])  # (S, P)
    nearest = d.argmin(dim=1)
    close = d.gather(1, nearest[:, None])[:, 0] <= radius_km
    counts = torch.bincount(nearest[close], minlength=len(places))
    return (counts.double() / len(pts)).numpy()
