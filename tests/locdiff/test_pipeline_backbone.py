"""LocDiffPipeline with an image backbone: predict from images, save/load the backbone as GeoCLIP does."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from geo_models.encoders.image import BACKBONE_WEIGHTS_NAME, OpenCLIPBackbone
from geo_models.hub import load_model
from geo_models.locdiff.modeling import CSUNet
from geo_models.locdiff.pipeline import LocDiffPipeline, make_scheduler
from geo_models.testing import assert_latlon_close


def tiny_pipeline(backbone=None, condition_dim=32) -> LocDiffPipeline:
    torch.manual_seed(0)
    unet = CSUNet(sample_dim=16, condition_dim=condition_dim, block_out_dims=(32, 8), time_embed_dim=16)
    backbone = OpenCLIPBackbone("tiny-vit") if backbone is None else backbone
    return LocDiffPipeline(unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 500}, backbone=backbone)


def pil_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def run(pipe, batch_size=1024, **inputs):
    generator = torch.Generator().manual_seed(0)
    return pipe.predict(**inputs, num_samples=3, num_inference_steps=2, generator=generator, batch_size=batch_size)


def assert_same(a, b):
    """The same pipeline object on the same pixels and batches: bit for bit."""
    assert torch.equal(a.extras["samples"], b.extras["samples"]) and torch.equal(a.latlon, b.latlon)


def assert_same_loaded(a, b):
    """A loaded pipeline against the original: equal up to float32 rounding (loaded weights may run other MKL
    kernels, geo_models.testing.tolerances), grown through the denoising and decoding."""
    assert_latlon_close(a.extras["samples"], b.extras["samples"])
    assert_latlon_close(a.latlon, b.latlon)


def perturb(backbone: OpenCLIPBackbone) -> None:
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_predict_from_images_pil_paths_and_tensor(pipe, tmp_path):
    images = pil_images(3)
    pred = run(pipe, images=images)
    assert pred.latlon.shape == (3, 2) and pred.extras["samples"].shape == (3, 3, 2)
    assert_same(pred, run(pipe, image_embeddings=pipe.embed_images(images)))
    paths = []
    for i, img in enumerate(images):
        img.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    assert_same(run(pipe, images=paths), pred)
    pixels = pipe.backbone.preprocess_images(images)
    assert_same(run(pipe, images=pixels), pred)
    # images are embedded batch_size at a time (and rows denoised batch_size at a time)
    small = run(pipe, images=images, batch_size=2)
    assert_same(small, run(pipe, image_embeddings=pipe.embed_images(images, batch_size=2), batch_size=2))


def test_frozen_backbone_is_rebuilt_from_config(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["backbone"] == {"model_name": "tiny-vit", "pretrained": None, "seed": 0, "finetuned": False}
    assert not (tmp_path / "p" / "backbone" / BACKBONE_WEIGHTS_NAME).exists()
    assert "tiny-vit" in (tmp_path / "p" / "README.md").read_text()
    loaded = load_model(tmp_path / "p")
    assert isinstance(loaded.backbone, OpenCLIPBackbone) and not loaded.backbone_finetuned
    images = pil_images(2)
    assert_same_loaded(run(loaded, images=images), run(pipe, images=images))


def test_finetuned_backbone_is_saved_and_pulled_from_the_hub(local_hub, tmp_path):
    pipe = tiny_pipeline()
    perturb(pipe.backbone)
    pipe.mark_backbone_finetuned()
    assert not pipe.backbone_is_rebuilt_from_config()
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "backbone" / BACKBONE_WEIGHTS_NAME).is_file()
    assert json.loads((tmp_path / "p" / "config.json").read_text())["backbone"]["finetuned"] is True
    images = pil_images(2)
    expected = run(pipe, images=images)
    loaded = LocDiffPipeline.from_pretrained(tmp_path / "p")
    assert loaded.backbone_finetuned
    assert_same_loaded(run(loaded, images=images), expected)
    pipe.push_to_hub("tester/locdiff-backbone")
    assert_same_loaded(run(LocDiffPipeline.from_pretrained("tester/locdiff-backbone"), images=images), expected)
    # saved again without fine-tuning: the stale weights go
    unmarked = tiny_pipeline()
    unmarked.save_pretrained(tmp_path / "p")
    assert not (tmp_path / "p" / "backbone" / BACKBONE_WEIGHTS_NAME).exists()


def test_backbone_from_local_file_loads_without_the_file(tmp_path):
    source = OpenCLIPBackbone("tiny-vit")
    perturb(source)
    weights = tmp_path / "tiny_vit.pt"
    torch.save(source.model.state_dict(), weights)
    pipe = tiny_pipeline(OpenCLIPBackbone("tiny-vit", str(weights)))
    images = pil_images(2)
    expected = run(pipe, images=images)
    pipe.save_pretrained(tmp_path / "p")
    weights.unlink()  # e.g. loaded on another machine
    loaded = LocDiffPipeline.from_pretrained(tmp_path / "p")
    assert loaded.backbone.pretrained == str(weights)
    assert_same_loaded(run(loaded, images=images), expected)
    (tmp_path / "p" / "backbone" / BACKBONE_WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match="backbone"):
        LocDiffPipeline.from_pretrained(tmp_path / "p")


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="backbone"):
        tiny_pipeline(condition_dim=8)  # tiny-vit gives 32-d features
    with pytest.raises(ValueError, match="exactly one"):
        pipe.predict(images=pil_images(1), image_embeddings=torch.randn(1, 32))
    with pytest.raises(ValueError, match="exactly one"):
        pipe.predict()
    with pytest.raises(ValueError, match="cannot read image"):
        pipe.predict(images=["/nonexistent.png"])
    with pytest.raises(ValueError, match="images tensor"):
        pipe.predict(images=torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="batch_size"):
        pipe.predict(images=pil_images(1), batch_size=0)
    no_backbone = LocDiffPipeline(pipe.unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 500})
    with pytest.raises(ValueError, match="no backbone"):
        no_backbone.predict(images=pil_images(1))
