import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_models.sphere import (
    EARTH_RADIUS_KM,
    azimuth_around,
    destination,
    equal_earth,
    haversine_km,
    initial_bearing,
    latlon_to_xyz,
    xyz_to_latlon,
)

lat = st.floats(-90, 90, allow_nan=False)
lon = st.floats(-180, 180, allow_nan=False)
point = st.tuples(lat, lon)
CIRCUMFERENCE_HALF = math.pi * EARTH_RADIUS_KM


def t64(p):
    return torch.tensor(p, dtype=torch.float64)


@settings(max_examples=200, deadline=None)
@given(point, point)
def test_haversine_symmetric_bounded(a, b):
    d_ab, d_ba = haversine_km(t64(a), t64(b)), haversine_km(t64(b), t64(a))
    assert torch.allclose(d_ab, d_ba, atol=1e-9)
    assert 0 <= d_ab <= CIRCUMFERENCE_HALF + 1e-6


@settings(max_examples=200, deadline=None)
@given(point, point, point)
def test_haversine_triangle_inequality(a, b, c):
    ab, bc, ac = (haversine_km(t64(x), t64(y)) for x, y in [(a, b), (b, c), (a, c)])
    assert ac <= ab + bc + 1e-6


def test_haversine_known_values():
    # Quarter of a meridian and half the equator.
    assert haversine_km([0.0, 0.0], [90.0, 0.0]).item() == pytest.approx(CIRCUMFERENCE_HALF / 2, rel=1e-6)
    assert haversine_km([0.0, -90.0], [0.0, 90.0]).item() == pytest.approx(CIRCUMFERENCE_HALF, rel=1e-6)
    # Antimeridian: 1 degree of longitude at the equator, not 359.
    one_deg = CIRCUMFERENCE_HALF / 180
    assert haversine_km([0.0, 179.5], [0.0, -179.5]).item() == pytest.approx(one_deg, rel=1e-5)
    # Paris -> London ~ 343.5 km.
    assert haversine_km([48.8566, 2.3522], [51.5074, -0.1278]).item() == pytest.approx(343.5, abs=1.0)


def test_haversine_broadcasts_and_accepts_numpy():
    a = np.zeros((4, 1, 2))
    b = np.random.default_rng(0).uniform([-90, -180], [90, 180], size=(5, 2))
    d = haversine_km(a, b)
    assert d.shape == (4, 5) and d.dtype == torch.float64


@settings(max_examples=200, deadline=None)
@given(point)
def test_xyz_round_trip(p):
    x = latlon_to_xyz(t64(p))
    assert torch.allclose(x.norm(), torch.tensor(1.0, dtype=torch.float64))
    back = xyz_to_latlon(x)
    # Compare on the sphere: longitude is arbitrary at the poles and +-180 are the same meridian.
    assert haversine_km(back, t64(p)) < 1e-6


@settings(max_examples=200, deadline=None)
@given(point, st.floats(0, 360), st.floats(0, 15000))
def test_destination_distance_and_bearing(p, bearing, dist):
    end = destination(t64(p), bearing, dist)
    assert haversine_km(t64(p), end).item() == pytest.approx(min(dist, 2 * CIRCUMFERENCE_HALF - dist), abs=1e-3)
    if 1 < dist < 15000 and abs(p[0]) < 89.9:
        got = initial_bearing(t64(p), end).item()
        assert min(abs(got - bearing % 360), 360 - abs(got - bearing % 360)) < 1e-3


def test_bearing_cardinal_directions():
    centre = torch.tensor([10.0, 20.0], dtype=torch.float64)
    pts = destination(centre, torch.tensor([0.0, 90.0, 180.0, 270.0], dtype=torch.float64).unsqueeze(-1), 5.0)
    az = azimuth_around(pts.squeeze(-2), centre)
    assert torch.allclose(az, torch.tensor([0.0, 90.0, 180.0, 270.0], dtype=torch.float64), atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(point)
def test_equal_earth_matches_pyproj(p):
    pyproj = pytest.importorskip("pyproj")
    transformer = _ee_transformer(pyproj)
    x, y = transformer.transform(p[1], p[0])
    ours = equal_earth(t64(p))
    assert ours[0].item() == pytest.approx(x, abs=1e-9)
    assert ours[1].item() == pytest.approx(y, abs=1e-9)


_TRANSFORMER = {}


def _ee_transformer(pyproj):
    if "t" not in _TRANSFORMER:
        crs = pyproj.CRS.from_proj4("+proj=eqearth +R=1")
        _TRANSFORMER["t"] = pyproj.Transformer.from_crs("+proj=longlat +R=1", crs, always_xy=True)
    return _TRANSFORMER["t"]


def test_equal_earth_geoclip_scaling_range():
    corners = torch.tensor([[90.0, 180.0], [-90.0, -180.0], [0.0, 180.0]], dtype=torch.float64)
    scaled = equal_earth(corners) * 66.50336 / 180
    assert scaled.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize(
    "bad, message",
    [
        ([91.0, 0.0], "latitude must be in \\[-90, 90\\]"),
        ([0.0, -180.5], "longitude must be in \\[-180, 180\\]"),
        ([float("nan"), 0.0], "finite"),
        ([0.0, float("inf")], "finite"),
        ([1.0, 2.0, 3.0], "shape \\(\\.\\.\\., 2\\)"),
        ("paris", "numeric"),
    ],
)
def test_bad_latlon_raises_value_error_naming_argument(bad, message):
    with pytest.raises(ValueError, match=message):
        haversine_km(bad, [0.0, 0.0])
    with pytest.raises(ValueError, match="^a"):
        haversine_km(bad, [0.0, 0.0])
    with pytest.raises(ValueError, match="^latlon"):
        latlon_to_xyz(bad)


def test_destination_rejects_negative_distance():
    with pytest.raises(ValueError, match="distance_km"):
        destination([0.0, 0.0], 0.0, -1.0)
