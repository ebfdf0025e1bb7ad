import math

import pytest
import torch

from geo_models.encoders import EqualEarthProjection, LocationEncoder, NeRFPositionalEncoding, RandomFourierFeatures


def test_rff_formula_and_output_dim():
    rff = RandomFourierFeatures(2, 8, sigma=4.0, seed=3)
    v = torch.randn(5, 2)
    proj = 2 * math.pi * v @ rff.b.T
    assert rff.output_dim == 16
    assert torch.allclose(rff(v), torch.cat([proj.cos(), proj.sin()], -1))
    # Same seed, same matrix; sigma scales it.
    assert torch.equal(RandomFourierFeatures(2, 8, sigma=4.0, seed=3).b, rff.b)
    assert rff.b.std().item() == pytest.approx(4.0, rel=0.6)


def test_rff_loads_matrix_from_state_dict(tmp_path):
    src = RandomFourierFeatures(2, 16, sigma=16.0, seed=1)
    torch.save(src.state_dict(), tmp_path / "rff.pt")
    dst = RandomFourierFeatures(2, 16, sigma=16.0, seed=99)
    dst.load_state_dict(torch.load(tmp_path / "rff.pt", weights_only=True))
    v = torch.rand(4, 2)
    assert torch.equal(dst(v), src(v))


def test_nerf_encoding_values():
    pe = NeRFPositionalEncoding(2, 3, include_input=True)
    x = torch.tensor([[0.5, -0.25]])
    out = pe(x)
    assert out.shape == (1, pe.output_dim) == (1, 2 + 2 * 2 * 3)
    # Column 0, frequency 2^1 pi: sin(pi) = 0, cos(pi) = -1.
    per_input = out[0, 2:].view(2, 6)
    assert per_input[0, 1].item() == pytest.approx(math.sin(math.pi), abs=1e-6)
    assert per_input[0, 4].item() == pytest.approx(math.cos(math.pi), abs=1e-6)


def test_equal_earth_projection_range():
    corners = torch.tensor([[90.0, 180.0], [-90.0, -180.0], [0.0, 180.0], [45.0, -90.0]])
    assert EqualEarthProjection()(corners).abs().max() <= 1.0 + 1e-6


def test_location_encoder_shapes_and_scales():
    enc = LocationEncoder(sigmas=(1.0, 16.0), num_features=8, hidden_dim=16, num_layers=2, output_dim=4)
    out = enc(torch.tensor([[0.0, 0.0], [10.0, 20.0], [-90.0, 180.0]]))
    assert out.shape == (3, 4) and len(enc.branches) == 2
    # The output is the (unnormalised) sum of the branch outputs.
    proj = enc.projection(torch.tensor([[10.0, 20.0]]))
    assert torch.allclose(out[1], sum(b(proj) for b in enc.branches)[0], atol=1e-6)


def test_location_encoder_bad_input():
    enc = LocationEncoder(num_features=4, hidden_dim=8, num_layers=1, output_dim=2)
    with pytest.raises(ValueError, match="latitude must be in"):
        enc(torch.tensor([[100.0, 0.0]]))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        enc(torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="sigmas"):
        LocationEncoder(sigmas=())
