"""The starter checkpoints committed in apps/starter (rebuilt by ``python apps/starter/build.py``) load and locate
their held-out example photos far better than chance, so they cannot go stale silently."""

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
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


@torch.no_grad()
def denoising_losses(pipe, latents, text, tokens: dict, generator) -> dict:
    """Noise-prediction MSE of ``pipe``'s UNet on ``latents`` at t = 300, 500, 700 (summed), with the text tokens
    followed by each entry of ``tokens`` (the same noise for all): lower with the right condition means the model
    uses it."""
    loss = dict.fromkeys(tokens, 0.0)
    for t in (300, 500, 700):
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.full((len(latents),), t)
        noisy = pipe.scheduler.add_noise(latents, noise, steps)
        for name, tok in tokens.items():
            pred = pipe.unet(noisy, steps, encoder_hidden_states=torch.cat([text, tok], dim=1)).sample
            loss[name] += F.mse_loss(pred, noise).item()
    return loss


def test_starter_gps_to_image_uses_the_gps(tmp_path):
    """The GPS-to-image starter loads with plain diffusers (and ships its no-install code), draws an image, and on
    fresh procedural photos its denoising error is lower with their true GPS than with shuffled GPS: it uses the
    location."""
    from diffusers import DiffusionPipeline

    import geo_models.generation  # noqa: F401  (makes the pipeline class known to diffusers)
    from geo_models.data.procedural import generate_city
    from geo_models.generation.small_base import load_pixels

    folder = STARTER / "gps_to_image"
    assert (folder / "pipeline.py").is_file()
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("A street in Manhattan", latitude=40.75, longitude=-73.98, num_inference_steps=4).images[0]
    assert image.size == (32, 32)

    meta = generate_city(tmp_path, 128, image_size=32, seed=7, captions="generic", progress=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = pipe.vae.encode(load_pixels([tmp_path], 32)).latent_dist.mode() * pipe.vae.config.scaling_factor
        text = pipe._encode_text(meta["text"].tolist())
        gps = pipe._gps_tokens(torch.tensor(meta[["latitude", "longitude"]].to_numpy(), dtype=torch.float32))
        tokens = {"true": gps, "shuffled": gps[torch.randperm(len(gps), generator=g)]}
    loss = denoising_losses(pipe, latents, text, tokens, g)
    assert loss["true"] < 0.995 * loss["shuffled"], loss


NO_INSTALL = """
import sys
sys.modules["geo_models"] = None  # geo_models cannot be imported in this process
import numpy as np, torch
torch.set_num_threads(1)
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(pipe).__module__.startswith("diffusers_modules."), type(pipe)
pipe.set_progress_bar_config(disable=True)
image = pipe("A street in Manhattan", 40.75, -73.98, num_inference_steps=3, output_type="np",
             generator=torch.Generator().manual_seed(0)).images
np.save(sys.argv[2], image)
"""


def test_starter_gps_to_image_loads_without_geo_models(tmp_path):
    """diffusers' one-liner for a repo with its own code (``trust_remote_code=True`` alone) loads the shipped
    folder where geo_models cannot be imported, and draws the installed route's image (its pipeline.py is current:
    ``_class_name`` names it)."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    from geo_models.generation import GPSToImagePipeline
    from geo_models.testing import IMAGE_ATOL

    folder = STARTER / "gps_to_image"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == ["pipeline", "GPSToImagePipeline"]
    out = tmp_path / "image.npy"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    args = [sys.executable, "-c", NO_INSTALL, str(folder), str(out)]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    pipe = GPSToImagePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("A street in Manhattan", 40.75, -73.98, num_inference_steps=3, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=IMAGE_ATOL)


def test_starter_angle_to_image_uses_the_azimuth(tmp_path):
    """The angle starter (LoRA + angle embedder on the GPS starter's base) loads as the app loads it, draws the 8
    views, and on fresh views of the procedural landmark its denoising error is lower with their true azimuth than
    with shuffled azimuths: it learned the view direction."""
    from apps.landmark3d.inference import load_angle_to_image
    from geo_models.data.procedural import generate_landmark
    from geo_models.generation.small_base import load_pixels

    folder = STARTER / "angle_to_image"
    assert (folder / "lora_base.json").is_file() and not (folder / "unet").exists()  # adapters only
    pipe = load_angle_to_image(str(folder))
    images = pipe(["A photo of Meridian Hall"] * 2, azimuth=[0.0, 180.0], num_inference_steps=4).images
    assert [im.size for im in images] == [(32, 32)] * 2

    meta = generate_landmark(tmp_path, 96, image_size=32, seed=11, progress=False)
    g = torch.Generator().manual_seed(0)
    azimuth = torch.tensor(meta["azimuth_deg"].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        latents = pipe.vae.encode(load_pixels([tmp_path], 32)).latent_dist.mode() * pipe.vae.config.scaling_factor
        text = pipe._encode_text(["A photo of Meridian Hall"] * len(meta))
        tokens = {"true": pipe.angle_embedder(azimuth),
                  "shuffled": pipe.angle_embedder(azimuth[torch.randperm(len(azimuth), generator=g)])}  # fmt: skip
    loss = denoising_losses(pipe, latents, text, tokens, g)
    assert loss["true"] < 0.99 * loss["shuffled"], loss


def test_starter_mesh_is_an_upright_coloured_glb():
    """The starter's lifted mesh (train/sds_to_mesh.py --preset cpu) loads with vertex colours, y up (glTF), and is
    small."""
    trimesh = pytest.importorskip("trimesh")
    path = STARTER / "landmark3d" / "mesh.glb"
    assert path.stat().st_size < 2 * 2**20
    mesh = trimesh.load(path, force="mesh")
    assert 100 < len(mesh.faces) <= 20000 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert (STARTER / "landmark3d" / "turntable.png").is_file() and (STARTER / "landmark3d" / "README.md").is_file()


def test_no_shipped_starter_file_holds_a_local_path():
    """Cards, configs and code under apps/starter are published (Spaces, the Hub): none may name a path of the machine
    that built them (issue 19: the cards said "Trained on /work/main/outputs/...")."""
    import re

    starter = Path(__file__).resolve().parents[2] / "apps" / "starter"
    local = re.compile(r"(?<![\w.:/])/(?:work|home|tmp|root|Users|mnt|private|var/folders)/")
    found = []
    for path in starter.rglob("*"):
        if path.is_file() and path.suffix in {".md", ".json", ".py", ".txt", ".csv", ".yaml", ".cfg"}:
            text = path.read_text(errors="ignore")
            found += [f"{path.relative_to(starter)}: {m.group(0)}" for m in local.finditer(text)]
    assert not found, found
