import pytest
import torch

from geo_models.locdiff.modeling import CSiren, CSUNet

TINY = dict(sample_dim=16, condition_dim=8, block_out_dims=(32, 16, 8), time_embed_dim=16, dropout=0.0)


def tiny_unet(**kwargs) -> CSUNet:
    torch.manual_seed(0)
    return CSUNet(**{**TINY, **kwargs}).eval()


def test_shapes_and_u_structure():
    unet = tiny_unet()
    out = unet(torch.randn(5, 16), torch.tensor([0, 1, 10, 500, 999]), torch.randn(5, 8))
    assert out.sample.shape == (5, 16)
    assert unet(torch.randn(2, 16), 7, torch.randn(2, 8), return_dict=False)[0].shape == (2, 16)
    # Down path 16 -> 32 -> 16 -> 8 (bottleneck), up path with skips: (8 + 16) -> 16, (16 + 32) -> 32.
    assert [b.proj_x.in_features for b in unet.down_blocks] == [16, 32, 16]
    assert [(b.proj_x.in_features, b.proj_x.out_features) for b in unet.up_blocks] == [(24, 16), (48, 32)]
    assert unet.conv_out.out_features == 16


def test_csiren_modulation_and_condition():
    torch.manual_seed(0)
    block = CSiren(4, 6, cond_dim=3, time_dim=8)
    x, c, t = torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 8)
    # Fresh module: alpha = beta = 0, so h = sin(W_o (W_x x + W_c c)).
    expected = torch.sin(block.proj_out(block.proj_x(x) + block.proj_cond(c)))
    assert torch.allclose(block(x, c, t), expected)
    assert block(x, c, t).abs().max() <= 1


def test_output_depends_on_condition_and_time():
    unet = tiny_unet()
    x, c = torch.randn(3, 16), torch.randn(3, 8)
    base = unet(x, 10, c).sample
    assert not torch.allclose(base, unet(x, 10, c + 1).sample)
    for block in unet.down_blocks:  # make the time MLP non-trivial (it starts at zero)
        torch.nn.init.normal_(block.time_mlp[-1].weight)
    assert not torch.allclose(unet(x, 10, c).sample, unet(x, 900, c).sample)


def test_save_load_round_trip(tmp_path):
    unet = tiny_unet(prediction_type="epsilon")
    unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = CSUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.prediction_type == "epsilon" and tuple(loaded.config.block_out_dims) == (32, 16, 8)
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in unet.state_dict().items())  # the weights, bit for bit
    x, c = torch.randn(4, 16), torch.randn(4, 8)  # loaded weights may run other MKL kernels: float32 rounding
    torch.testing.assert_close(unet(x, 3, c).sample, loaded(x, 3, c).sample, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prediction_type="x0"), "prediction_type"),
        (dict(block_out_dims=()), "block_out_dims"),
        (dict(time_embed_dim=15), "time_embed_dim"),
        (dict(dropout=1.0), "dropout"),
        (dict(sample_dim=0), "sample_dim"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CSUNet(**{**TINY, **kwargs})


def test_bad_inputs():
    unet = tiny_unet()
    with pytest.raises(ValueError, match="sample"):
        unet(torch.randn(2, 15), 1, torch.randn(2, 8))
    with pytest.raises(ValueError, match="image_embeddings"):
        unet(torch.randn(2, 16), 1, torch.randn(2, 7))
    with pytest.raises(ValueError, match="image_embeddings"):
        unet(torch.randn(2, 16), 1, torch.randn(3, 8))
