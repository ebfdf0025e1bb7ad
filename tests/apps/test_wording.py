"""Words for visitors (issue 17): hemispheres on coordinates, warnings for photos too small or too flat to place."""

from PIL import Image

from apps.common.wording import format_latlon, low_information_note


def test_format_latlon_uses_hemispheres():
    assert format_latlon(48.8566, 2.3522) == "48.857° N, 2.352° E"
    assert format_latlon(-33.8688, -70.6483, digits=1) == "33.9° S, 70.6° W"


def test_low_information_photos_get_a_warning():
    assert "1 x 1 pixels" in low_information_note(Image.new("RGB", (1, 1), "red"))
    assert "flat colour" in low_information_note(Image.new("RGB", (200, 150), (40, 90, 160)))
    noise = Image.effect_noise((64, 64), 60).convert("RGB")
    assert low_information_note(noise) is None


def test_summary_shows_the_warning_and_hemispheres():
    from apps.geolocate.app import summary_markdown

    result = {"latitude": -12.5, "longitude": 130.8, "place": "Darwin", "geolocator": "GeoCLIP",
              "true_location": {"latitude": -12.46, "longitude": 130.84}, "error_km": 5.2,
              "warnings": ["This photo is only 1 x 1 pixels"]}  # fmt: skip
    text = summary_markdown(result)
    assert text.startswith("**Warning**: This photo is only 1 x 1 pixels")
    assert "12.500° S, 130.800° E (Darwin)" in text and "12.460° S, 130.840° E" in text
