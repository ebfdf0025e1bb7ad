"""The shipped procedural CLIP backbone: loads offline by tag, and its embeddings locate procedural world images."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geo_models.data.procedural import generate_world
from geo_models.encoders.image import LOCAL_PRETRAINED, OpenCLIPBackbone, resolve_pretrained
from geo_models.sphere import accuracy_within_km

WORLD_BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_procedural_world.py"


@pytest.fixture(scope="module")
def backbone():
    return OpenCLIPBackbone("procedural-clip", "procedural")


def test_shipped_weights_registered_and_small():
    path = LOCAL_PRETRAINED[("procedural-clip", "procedural")]
    assert path.is_file() and path.stat().st_size <= 10 * 1000**2
    assert (path.parent / "README.md").is_file()
    assert resolve_pretrained("procedural-clip", "procedural") == str(path)
    for other in (None, "openai", "/some/file.safetensors"):  # anything else goes to open_clip unchanged
        assert resolve_pretrained("procedural-clip", other) == other
    assert resolve_pretrained("tiny-vit", "procedural") == "procedural"


def test_shipped_weights_give_finite_features(backbone):
    assert backbone.output_dim == 128 and backbone.image_size == 64 and backbone.pretrained == "procedural"
    assert not any(p.requires_grad for p in backbone.parameters())
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    with torch.no_grad():
        img = backbone.encode_image(backbone.preprocess_images(images))
        txt = backbone.encode_text(["a photo taken in Japan", "a photo of the open ocean"])
    assert img.shape == (3, 128) and txt.shape == (2, 128)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    random = OpenCLIPBackbone("procedural-clip", None)
    with torch.no_grad():
        assert not torch.allclose(random.encode_image(backbone.preprocess_images(images)), img)


def _leave_one_out(dist: np.ndarray, latlon: np.ndarray) -> dict[str, float]:
    np.fill_diagonal(dist, np.inf)
    return accuracy_within_km(latlon[dist.argmin(1)], latlon)


def test_knn_on_shipped_embeddings_beats_colour_statistics(backbone, tmp_path):
    # leave-one-out on 400 fresh images; measured 70.8% vs 48.5% within 2500 km
    meta = generate_world(tmp_path, 400, seed=11, progress=False)  # seeds 0 / 1 made the training / test sets
    latlon = meta[["latitude", "longitude"]].to_numpy(np.float64)
    arrays = np.stack([np.asarray(Image.open(tmp_path / f).convert("RGB")) for f in meta["file_name"]])
    with torch.no_grad():
        pixels = backbone.preprocess_images([Image.fromarray(a) for a in arrays])
        emb = torch.nn.functional.normalize(backbone.encode_image(pixels), dim=-1).numpy()
    spec = importlib.util.spec_from_file_location("bench_procedural_world", WORLD_BENCH)
    world = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(world)
    colour = world.colour_features(arrays)
    colour = (colour - colour.mean(0)) / (colour.std(0) + 1e-6)
    clip_acc = _leave_one_out(-emb @ emb.T, latlon)
    colour_acc = _leave_one_out(((colour[:, None] - colour[None]) ** 2).sum(-1), latlon)
    assert clip_acc["acc_2500km"] > colour_acc["acc_2500km"] + 10, (clip_acc, colour_acc)
