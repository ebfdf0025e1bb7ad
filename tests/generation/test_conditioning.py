import math

import numpy as np
import pytest
import torch

from geo_models.generation import AngleEmbedder, GPSEmbedder
from geo_models.generation.gps_clip import GPSCLIP
from geo_models.sphere import GeoArea

AREA = {"lat_range": (40.70, 40.88), "lon_range": (-74.02, -73.91)}


@pytest.fixture(scope="module")
def gps():
    torch.manual_seed(0)
    return GPSEmbedder(hidden_size=16, **AREA).eval()


def test_gps_embedder_shapes_and_normalisation(gps):
    latlon = torch.tensor([[40.70, -74.02], [40.88, -73.91], [40.79, -73.965]])
    assert gps(latlon).shape == (3, 2, 16)
    norm = gps.normalize(latlon)
    assert torch.allclose(norm, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]), atol=1e-4)
    # positional encoding: 10 frequencies (sin + cos) + the coordinate itself, one coordinate per token
    assert gps.positional_encoding.output_dim == 2 * 10 + 1
    assert gps.lon_mlp[0].in_features == 21 and gps.lon_mlp[-1].out_features == 16


def test_gps_embedder_tokens_are_lon_then_lat(gps):
    """g = [f(lon), f(lat)]: moving along the latitude changes the second token only."""
    a = gps(torch.tensor([[40.75, -73.98]]))
    b = gps(torch.tensor([[40.80, -73.98]]))
    assert torch.equal(a[:, 0], b[:, 0]) and not torch.allclose(a[:, 1], b[:, 1])


def test_gps_embedder_distinguishes_swapped_coordinates(gps):
    """Cross-attention ignores token order, so normalised (u, v) and (v, u) must not give the same set of tokens."""

    def at(u, v):  # normalised (lat, lon) -> degrees
        (lat0, lat1), (lon0, lon1) = AREA["lat_range"], AREA["lon_range"]
        return [lat0 + (u + 1) / 2 * (lat1 - lat0), lon0 + (v + 1) / 2 * (lon1 - lon0)]

    a, b = gps(torch.tensor([at(0.5, -0.5), at(-0.5, 0.5)]))
    assert not torch.allclose(a, b) and not torch.allclose(a, b.flip(0))


@pytest.mark.parametrize(
    ("latlon", "match"),
    [
        ([[float("nan"), -73.98]], "finite"),
        ([[40.75, float("inf")]], "finite"),
        ([[1000.0, -73.98]], "latitude must be in"),
        ([[40.75, -200.0]], "longitude must be in"),
        ([40.75, -73.98, 1.0], r"shape \(\.\.\., 2\)"),
    ],
)
def test_gps_embedder_rejects_bad_coordinates(gps, latlon, match):
    with pytest.raises(ValueError, match=match):
        gps(torch.tensor(latlon))


def test_gps_embedder_warns_outside_area(gps):
    with pytest.warns(UserWarning, match="outside the training area"):
        gps(torch.tensor([[48.85, 2.35]]))


def test_gps_embedder_config_checks_and_round_trip(tmp_path, gps):
    with pytest.raises(ValueError, match="lat_range"):
        GPSEmbedder(hidden_size=8, lat_range=(10.0, 5.0))
    with pytest.raises(ValueError, match="lon_range"):
        GPSEmbedder(hidden_size=8, lon_range=(-190.0, 0.0))
    gps.save_pretrained(tmp_path)
    same = GPSEmbedder.from_pretrained(tmp_path)
    assert same.lat_range == AREA["lat_range"] and same.lon_range == AREA["lon_range"]
    loaded = same.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in gps.state_dict().items())  # the weights, bit for bit
    x = torch.tensor([[40.75, -73.98]])  # loaded weights may run other MKL kernels: equal up to float32 rounding
    torch.testing.assert_close(same(x), gps(x), rtol=0, atol=1e-5)


def test_gps_embedder_area_and_contains(tmp_path, gps):
    assert gps.area == GeoArea(AREA["lat_range"], AREA["lon_range"])
    assert gps.area.as_list() == [40.70, 40.88, -74.02, -73.91]
    assert gps.contains(40.75, -73.98).dtype == torch.bool and gps.contains(40.75, -73.98).shape == ()
    assert bool(gps.contains(40.88, -74.02)) and not gps.contains(48.85, 2.35)  # edges are inside
    lat, lon = torch.tensor([[40.75], [40.95]]), np.array([-73.98, -73.90])  # broadcast (2, 1) with (2,)
    assert torch.equal(gps.contains(lat, lon), torch.tensor([[True, False], [False, False]]))
    assert torch.equal(gps.contains([40.70, 40.69], -74.0), torch.tensor([True, False]))  # lists: float64
    with pytest.raises(ValueError, match="latitude must be in"):
        gps.contains(95.0, 0.0)
    with pytest.raises(ValueError, match="longitude must be a number"):
        gps.contains(40.75, "east")
    # the area comes from the config: the same after a round trip
    gps.save_pretrained(tmp_path)
    assert GPSEmbedder.from_pretrained(tmp_path).area == gps.area
    assert GPSEmbedder(hidden_size=8).area == GeoArea((-90, 90), (-180, 180))  # default: the world


def test_gps_clip_area_and_contains():
    model = GPSCLIP(embedding_dim=8, hidden_dim=8, num_layers=1, **AREA)
    assert model.area == GeoArea(AREA["lat_range"], AREA["lon_range"])
    assert torch.equal(model.contains([40.75, 48.85], [-73.98, 2.35]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="lon_range must satisfy"):
        GPSCLIP(embedding_dim=8, lon_range=(0.0, -1.0))


def test_angle_embedder_bins_and_normalisation():
    torch.manual_seed(0)
    emb = AngleEmbedder(hidden_size=16, centre_latlon=(48.8584, 2.2945)).eval()
    # nearest 10-degree bin, normalised bin / 180 - 1; 356 degrees is the 0 bin again
    norm = emb.normalize(torch.tensor([0.0, 4.9, 5.1, 90.0, 356.0, -90.0, 720.0]))
    assert torch.allclose(norm, torch.tensor([-1.0, -1.0, 10 / 180 - 1, -0.5, -1.0, 0.5, -1.0]), atol=1e-6)
    assert torch.equal(emb(torch.tensor([3.0])), emb(torch.tensor([0.0])))  # same bin -> same tokens
    assert torch.allclose(emb(torch.tensor([0.0])), emb(torch.tensor([359.0])))  # periodic
    assert emb(torch.tensor([0.0, 90.0, 180.0])).shape == (3, 1, 16)
    assert emb.positional_encoding.output_dim == 20  # 10 frequencies


def test_angle_embedder_azimuth_from_gps():
    torch.manual_seed(0)
    centre = (48.8584, 2.2945)
    emb = AngleEmbedder(hidden_size=8, centre_latlon=centre, num_tokens=2).eval()
    d = 0.001
    cams = torch.tensor([[centre[0] + d, centre[1]], [centre[0], centre[1] + d], [centre[0] - d, centre[1]]])
    az = emb.azimuth(cams)
    assert torch.allclose(az, torch.tensor([0.0, 90.0, 180.0]), atol=0.2)  # north, east, south of the centre
    tokens = emb.embed_latlon(cams)
    assert tokens.shape == (3, 2, 8) and torch.equal(tokens, emb(az))
    with pytest.raises(ValueError, match="finite"):
        emb(torch.tensor([math.nan]))
    with pytest.raises(ValueError, match="latitude must be in"):
        emb.azimuth(torch.tensor([[100.0, 0.0]]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_tokens": 3}, "num_tokens"), ({"bin_deg": 7.0}, "bin_deg"), ({"centre_latlon": (91.0, 0.0)}, "latitude")],
)
def test_angle_embedder_config_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AngleEmbedder(hidden_size=8, **kwargs)
