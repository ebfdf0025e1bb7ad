"""The small SD-like base trained from scratch (geo_models.generation.small_base): VAE, base folder, pretraining."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geo_models.generation.small_base import (
    load_pixels,
    make_small_base,
    pretrain_small_base,
    psnr,
    small_unet,
    train_small_vae,
)


@pytest.fixture
def folder(tmp_path):
    """8 captioned 32x32 images: two colours, two captions."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(8):
        colour = (200, 40, 40) if i % 2 else (40, 40, 200)
        Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"file_name": f"images/{i}.png", "text": "red" if i % 2 else "blue"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_pixels_and_psnr(folder):
    px = load_pixels([folder], 32)
    assert px.shape == (8, 3, 32, 32) and px.min() >= -1 and px.max() <= 1
    assert psnr(px, px) > 100 and psnr(-px, px) < 10


def test_vae_base_and_pretraining(folder, tmp_path):
    px = load_pixels([folder], 32)
    stats = train_small_vae(tmp_path / "vae", px, px, steps=3, batch_size=4)
    assert stats["steps"] == 3 and np.isfinite(stats["test_psnr_db"])
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert cfg["scaling_factor"] == pytest.approx(1 / stats["latent_std"])
    assert train_small_vae(tmp_path / "vae", None, None, steps=3)["seconds"] == stats["seconds"]  # cached

    base = make_small_base(tmp_path / "base", tmp_path / "vae", text_length=8)
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    assert pipe.tokenizer.model_max_length == 8 and pipe.unet.config.sample_size == 16
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}

    out = pretrain_small_base(tmp_path / "pre", base, [folder], steps=2, batch_size=4)
    assert out["steps"] == 2 and out["n_images"] == 8 and len(out["log"]) == 2
    trained = StableDiffusionPipeline.from_pretrained(tmp_path / "pre", safety_checker=None,
                                                      requires_safety_checker=False)  # fmt: skip
    changed = [k for k, v in trained.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "pretraining left the UNet unchanged"
    for name in ("vae", "text_encoder"):  # frozen
        a, b = getattr(pipe, name).state_dict(), getattr(trained, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_small_unet_shapes():
    unet = small_unet(sample_size=16, cross_attention_dim=64)
    out = unet(torch.randn(2, 4, 16, 16), torch.tensor([1, 500]), encoder_hidden_states=torch.randn(2, 10, 64))
    assert out.sample.shape == (2, 4, 16, 16)
