"""Candidates as distinct places (issue 17): near-duplicate guesses merge into the better one with their combined
score, no two places stay within the radius, ranks follow the combined scores."""

import numpy as np
import pytest
import torch

from apps.common.candidates import distinct_places
from geo_models.sphere import haversine_km

PARIS, NEAR_PARIS, LYON, DJENNE = (48.8566, 2.3522), (48.90, 2.40), (45.76, 4.84), (13.906, -4.553)


def test_duplicates_merge_with_summed_probabilities_and_rerank():
    cands = np.array([LYON, PARIS, NEAR_PARIS, PARIS, DJENNE])
    places, scores, merged = distinct_places(cands, [0.3, 0.25, 0.2, 0.1, 0.15], combine="sum")
    np.testing.assert_allclose(places, [PARIS, LYON, DJENNE])  # Paris' 3 guesses (0.55) now beat Lyon (0.3)
    np.testing.assert_allclose(scores, [0.55, 0.3, 0.15])
    assert merged.tolist() == [3, 1, 1]


def test_max_for_scores_that_do_not_add_and_top_k():
    cands = np.array([DJENNE] * 5 + [PARIS, LYON])
    places, scores, merged = distinct_places(cands, [-1.0, -1.1, -1.2, -1.3, -1.4, -5.0, -6.0], combine="max",
                                             top_k=2)  # fmt: skip
    np.testing.assert_allclose(places, [DJENNE, PARIS])
    np.testing.assert_allclose(scores, [-1.0, -5.0])
    assert merged.tolist() == [5, 1]


def test_no_two_places_within_the_radius():
    rng = np.random.default_rng(0)
    cands = np.array(PARIS) + rng.normal(scale=0.5, size=(200, 2))  # a cloud ~50 km wide
    places, _, merged = distinct_places(cands, rng.random(200), radius_km=25.0)
    d = haversine_km(torch.from_numpy(places)[:, None], torch.from_numpy(places)[None]).numpy()
    assert (d[~np.eye(len(places), dtype=bool)] > 25.0).all() and merged.sum() == 200


def test_bad_input():
    with pytest.raises(ValueError, match="combine"):
        distinct_places(np.zeros((1, 2)), [1.0], combine="mean")
    with pytest.raises(ValueError, match="equally long"):
        distinct_places(np.zeros((2, 2)), [1.0])


def test_nearest_shares_split_a_tight_cloud_between_places():
    """LocDiff's own score (share within 750 km) was 1.0 on every row of a tight cloud (issue 17); the share of
    samples nearest to each place tells the rows apart and sums to at most 1."""
    from apps.common.candidates import nearest_shares

    samples = np.array([PARIS] * 5 + [NEAR_PARIS] * 2 + [LYON] * 2 + [DJENNE])
    shares = nearest_shares(np.array([PARIS, LYON]), samples, radius_km=750)
    np.testing.assert_allclose(shares, [0.7, 0.2])  # Djenne is nearest Lyon but 4,000 km away: no place's
    assert nearest_shares(np.zeros((0, 2)), samples, radius_km=750).shape == (0,)
