"""The starter checkpoints committed in apps/starter (rebuilt by ``python apps/starter/build.py``) load and locate
their held-out example photos far better than chance, so they cannot go stale silently."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from geo_models.data.exif import read_gps
from geo_models.hub import load_model
from geo_models.sphere import haversine_km

STARTER = Path(__file__).resolve().parents[2] / "apps" / "starter"
PREDICT = {
    "geoclip": {"top_k": 3},
    "locdiff": {"num_samples": 16, "num_inference_steps": 20},
    "sphere_flow": {"num_samples": 16, "num_inference_steps": 32, "atol": 1e-4, "rtol": 1e-4},
}


@pytest.fixture(scope="module")
def examples():
    meta = pd.read_csv(STARTER / "examples" / "examples.csv")
    images = [Image.open(STARTER / "examples" / f).convert("RGB") for f in meta["file_name"]]
    return images, torch.tensor(meta[["latitude", "longitude"]].to_numpy(), dtype=torch.float32), meta


def test_starter_fits_the_budget_and_examples_carry_gps(examples):
    total = sum(f.stat().st_size for f in STARTER.rglob("*") if f.is_file())
    assert total < 60 * 2**20
    _, truth, meta = examples
    assert len(meta) >= 4 and meta["text"].str.contains("a photo of the").any()  # landmark photos among them
    gps = torch.tensor([read_gps(STARTER / "examples" / f) for f in meta["file_name"]], dtype=torch.float32)
    assert torch.allclose(gps, truth, atol=1e-4)


@pytest.mark.parametrize("name", list(PREDICT))
def test_starter_model_locates_examples(examples, name):
    images, truth, _ = examples
    model = load_model(STARTER / name)
    assert model.backbone is not None and model.backbone.model_name == "procedural-clip"
    kwargs = dict(PREDICT[name])
    if name != "geoclip":
        kwargs["generator"] = torch.Generator().manual_seed(0)
    pred = model.predict(images=images, **kwargs)
    km = haversine_km(pred.latlon, truth)
    # A random guess is ~10,000 km off on average; the trained models are typically within a few hundred km.
    assert km.median() < 2500, km
