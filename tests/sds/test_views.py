"""DreamFusion's view-dependent prompts (the baseline of the paper's Table 3): the view word from the camera azimuth
with 45-degree borders around the front and the back, wrapping around north."""

import pytest

from geo_models.sds.views import view_prompt, view_words


def test_view_words_borders_around_a_southern_front():
    azimuths = [180, 135, 225, 134.9, 225.1, 0, 45, 315, 360, -10, 90, 270, 540]
    expected = ["front", "front", "front", "side", "side", "back", "back", "back", "back", "back", "side", "side",
                "front"]  # fmt: skip
    assert view_words(azimuths) == expected


def test_view_words_follow_the_front_azimuth():
    assert view_words([0, 90, 180, 270], front_azimuth_deg=90) == ["side", "front", "side", "back"]


def test_view_prompt_and_bad_input():
    assert view_prompt("A photo of Meridian Hall", "side") == "A photo of Meridian Hall, side view"
    with pytest.raises(ValueError, match="view"):
        view_prompt("a", "overhead")
    with pytest.raises(ValueError, match="azimuth_deg"):
        view_words([float("nan")])
    with pytest.raises(ValueError, match="front_azimuth_deg"):
        view_words([0.0], front_azimuth_deg=float("inf"))
