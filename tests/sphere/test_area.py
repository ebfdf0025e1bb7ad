import dataclasses

import numpy as np
import pytest
import torch

from geo_models.sphere import GeoArea

MANHATTAN = GeoArea((40.70, 40.88), (-74.02, -73.91))


def test_fields_are_float_tuples_and_compare_by_value():
    area = GeoArea([40, 41], np.array([-74.5, -73.5]))
    assert area.lat_range == (40.0, 41.0) and area.lon_range == (-74.5, -73.5)
    assert all(isinstance(v, float) for v in area.as_list())
    assert area == GeoArea((40.0, 41.0), (-74.5, -73.5)) and len({area, GeoArea((40, 41), (-74.5, -73.5))}) == 1
    assert area.as_list() == [40.0, 41.0, -74.5, -73.5]
    assert area.center == (40.5, -74.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        area.lat_range = (0.0, 1.0)


@pytest.mark.parametrize(
    ("lat_range", "lon_range", "match"),
    [
        ((10.0, 5.0), (0.0, 1.0), r"lat_range must satisfy -90.0 <= min < max <= 90.0"),
        ((5.0, 5.0), (0.0, 1.0), r"lat_range must satisfy"),
        ((-91.0, 0.0), (0.0, 1.0), r"lat_range must satisfy"),
        ((0.0, 90.5), (0.0, 1.0), r"lat_range must satisfy"),
        ((0.0, 1.0), (-190.0, 0.0), r"lon_range must satisfy -180.0 <= min < max <= 180.0"),
        ((0.0, 1.0), (10.0, -10.0), r"lon_range must satisfy"),  # no box across the antimeridian
        ((0.0, 1.0), (0.0, 181.0), r"lon_range must satisfy"),
        ((float("nan"), 1.0), (0.0, 1.0), r"lat_range must be two finite numbers"),
        ((0.0, 1.0), (0.0, float("inf")), r"lon_range must be two finite numbers"),
        ((0.0, 1.0, 2.0), (0.0, 1.0), r"lat_range must be two finite numbers"),
        ((0.0, 1.0), 5.0, r"lon_range must be two finite numbers"),
        ("ab", (0.0, 1.0), r"lat_range must be two finite numbers"),
        ((0.0, 1.0), ("a", "b"), r"lon_range must be two finite numbers"),
    ],
)
def test_validation_names_the_field(lat_range, lon_range, match):
    with pytest.raises(ValueError, match=match):
        GeoArea(lat_range, lon_range)


def test_whole_globe_is_valid():
    world = GeoArea((-90, 90), (-180, 180))
    assert world.contains((90.0, 180.0)) and world.contains((-90.0, -180.0)) and world.center == (0.0, 0.0)


def test_from_points_widens_by_the_margin_of_the_extent():
    pts = torch.tensor([[40.0, -74.0], [41.0, -72.0], [40.5, -73.0]])
    area = GeoArea.from_points(pts)  # 5% of (1, 2) degrees on each side
    assert area.lat_range == pytest.approx((39.95, 41.05)) and area.lon_range == pytest.approx((-74.1, -71.9))
    area = GeoArea.from_points(pts.numpy().astype(np.float64), margin=0.02)
    assert area.lat_range == pytest.approx((39.98, 41.02)) and area.lon_range == pytest.approx((-74.04, -71.96))
    assert GeoArea.from_points(pts, margin=0.0, min_pad_deg=0.0) == GeoArea((40.0, 41.0), (-74.0, -72.0))
    assert GeoArea.from_points(pts).contains(pts).all()


def test_from_points_pads_a_single_point_and_clips_to_the_globe():
    area = GeoArea.from_points([[10.0, 20.0]])  # no extent: the minimum pad on each side
    assert area.lat_range == pytest.approx((9.999, 10.001)) and area.lon_range == pytest.approx((19.999, 20.001))
    area = GeoArea.from_points([[10.0, 20.0]], min_pad_deg=0.5)
    assert area.lat_range == pytest.approx((9.5, 10.5))
    area = GeoArea.from_points([[-89.0, -179.0], [89.0, 179.0]], margin=0.1)  # 17.8 and 35.8 degrees of margin
    assert area == GeoArea((-90.0, 90.0), (-180.0, 180.0))
    area = GeoArea.from_points([[90.0, 180.0]])
    assert area.lat_range == pytest.approx((89.999, 90.0)) and area.lon_range == pytest.approx((179.999, 180.0))


def test_from_points_matches_the_training_scripts_box():
    """The box the GPS-to-image training script computed before GeoArea: ``(lo - pad, hi + pad)`` in float64 with
    ``pad = max(margin * extent, 1e-3)``, clipped to the globe."""
    latlon = torch.rand(500, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.2, 0.1])
    latlon += torch.tensor([40.7, -74.02])
    lo, hi = latlon.min(0).values.double(), latlon.max(0).values.double()
    pad = torch.clamp((hi - lo) * 0.05, min=1e-3)
    lo, hi = lo - pad, hi + pad
    expected = [max(lo[0].item(), -90.0), min(hi[0].item(), 90.0), max(lo[1].item(), -180.0), min(hi[1].item(), 180.0)]
    assert GeoArea.from_points(latlon).as_list() == expected  # bit for bit


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latlon": np.zeros((0, 2))}, "at least one point"),
        ({"latlon": [[95.0, 0.0]]}, "latitude must be in"),
        ({"latlon": [[0.0, float("nan")]]}, "finite"),
        ({"latlon": [[0.0, 1.0, 2.0]]}, r"shape \(\.\.\., 2\)"),
        ({"latlon": [[0.0, 1.0]], "margin": -0.1}, "margin must be a finite number >= 0"),
        ({"latlon": [[0.0, 1.0]], "margin": float("nan")}, "margin"),
        ({"latlon": [[0.0, 1.0]], "min_pad_deg": True}, "min_pad_deg"),
        ({"latlon": [[0.0, 1.0]], "margin": 0.0, "min_pad_deg": 0.0}, "lat_range must satisfy"),  # a point, no box
    ],
)
def test_from_points_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GeoArea.from_points(**kwargs)


def test_contains_inside_outside_and_edges():
    pts = torch.tensor(
        [
            [40.79, -73.965],  # centre
            [40.70, -74.02],  # corner (edges are inside)
            [40.88, -73.91],  # opposite corner
            [40.70, -73.95],  # southern edge
            [40.69, -73.95],  # just south
            [40.89, -73.95],  # just north
            [40.75, -74.03],  # just west
            [40.75, -73.90],  # just east
            [48.85, 2.35],  # Paris
        ]
    )
    expected = torch.tensor([True, True, True, True, False, False, False, False, False])
    assert torch.equal(MANHATTAN.contains(pts), expected)  # float32: the float32 copies of the edges are inside
    assert torch.equal(MANHATTAN.contains(pts.double()[:1]), expected[:1])
    assert MANHATTAN.contains(pts.reshape(3, 3, 2)).shape == (3, 3)
    assert MANHATTAN.contains(np.zeros((0, 2))).shape == (0,)


def test_contains_single_pair_is_a_bool_compared_exactly():
    assert MANHATTAN.contains((40.75, -73.98)) is True
    assert MANHATTAN.contains([48.85, 2.35]) is False
    assert MANHATTAN.contains((40.88, -73.91)) is True  # edges included
    assert MANHATTAN.contains((40.880001, -73.91)) is False  # Python floats: float64, not float32 rounding
    assert MANHATTAN.contains(torch.tensor([40.75, -73.98])) is True


@pytest.mark.parametrize(
    ("latlon", "match"),
    [
        ((float("nan"), 0.0), "finite"),
        ((95.0, 0.0), "latitude must be in"),
        ((0.0, -181.0), "longitude must be in"),
        ((1.0, 2.0, 3.0), r"shape \(\.\.\., 2\)"),
        (("a", "b"), r"latlon must be \(\.\.\., 2\) numbers"),
    ],
)
def test_contains_rejects_bad_coordinates(latlon, match):
    with pytest.raises(ValueError, match=match):
        MANHATTAN.contains(latlon)
