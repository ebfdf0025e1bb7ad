"""train/train_clip.py: CLIP contrastive pretraining on a captioned imagefolder (tiny-vit, a few steps)."""

import json
import math

import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from geo_models.data.imagefolder import write_imagefolder_metadata
from geo_models.encoders.image import OpenCLIPBackbone

TINY = ["--model_name", "tiny-vit", "--train_batch_size", "4", "--learning_rate", "1e-3", "--lr_warmup_steps", "1"]
CAPTIONS = ["a photo taken in Krakow, Poland", "a photo taken in Tokyo, Japan", "a photo of the open ocean"]


@pytest.fixture(scope="module")
def imagefolder(captioned_images):
    return captioned_images


def test_train_saves_loadable_open_clip_weights(train_script, imagefolder, tmp_path):
    train = train_script("train_clip")
    out = tmp_path / "clip"
    model = train.main(["--train_data", str(imagefolder), "--output_dir", str(out), "--max_train_steps", "2", *TINY])
    logs = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in logs)
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_name"] == "tiny-vit" and config["model_cfg"]["vision_cfg"]["image_size"] == 32
    weights = out / "open_clip_model.safetensors"
    assert set(load_file(str(weights))) == set(model.state_dict())

    backbone = OpenCLIPBackbone("tiny-vit", pretrained=str(weights))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_image(pixels), model.encode_image(pixels))
        fresh = OpenCLIPBackbone("tiny-vit", pretrained=None).encode_image(pixels)
    assert not torch.allclose(fresh, backbone.encode_image(pixels))  # the weights were trained, not re-initialised

    import open_clip  # the output folder is also an open_clip "local-dir:" model

    local, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    with torch.no_grad():
        torch.testing.assert_close(local.encode_image(pixels), model.encode_image(pixels))


def test_rejects_data_without_captions(train_script, tmp_path):
    root = tmp_path / "nocaption"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images/0.png")
    write_imagefolder_metadata(root, pd.DataFrame([{"file_name": "images/0.png", "latitude": 0.0, "longitude": 0.0}]))
    with pytest.raises(ValueError, match="text"):
        train_script("train_clip").main(["--train_data", str(root), "--output_dir", str(tmp_path / "o"), *TINY])


def test_random_resized_crop_is_identity_at_full_scale(train_script):
    crop = train_script("train_clip").random_resized_crop
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(crop(x, (1.0, 1.0), (1.0, 1.0)), x, atol=1e-5, rtol=0)
    y = crop(x, (0.5, 0.5))
    assert y.shape == x.shape and not torch.allclose(y, x)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--crop_scale", "0.9", "0.5"], "--crop_scale"),
        (["--min_lr_ratio", "2"], "--min_lr_ratio"),
        (["--train_batch_size", "0"], "--train_batch_size"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--max_grad_norm", "-1"], "--max_grad_norm"),
    ],
)
def test_cli_errors(train_script, imagefolder, tmp_path, capsys, extra, message):
    argv = ["--train_data", str(imagefolder), "--output_dir", str(tmp_path), *extra]
    with pytest.raises(SystemExit):
        train_script("train_clip").parse_args(argv)
    assert message in capsys.readouterr().err
