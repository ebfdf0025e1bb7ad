"""GPS-CLIP (paper A.1.4): the model, its GPS score, save/load, and train/train_gps_clip.py."""

import json

import pytest
import torch
from safetensors.torch import load_file

from geo_models.data import GeoImageFolder, write_embedding_parquet
from geo_models.data.procedural import generate_city
from geo_models.generation.gps_clip import GPSCLIP
from geo_models.hub import load_model

AREA = dict(lat_range=(40.70, 40.88), lon_range=(-74.02, -73.91))
BACKBONE = dict(backbone="procedural-clip", backbone_pretrained="procedural")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    generate_city(root, 48, image_size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    latlon = torch.tensor([40.70, -74.02]) + torch.rand(64, 2, generator=g) * torch.tensor([0.18, 0.11])
    emb = torch.cat([latlon - latlon.mean(0), torch.randn(64, 6, generator=g)], 1) * 10
    path = tmp_path_factory.mktemp("emb") / "train.parquet"
    write_embedding_parquet(path, emb, latlon)
    return path


def test_architecture_follows_the_paper():
    model = GPSCLIP(embedding_dim=16, hidden_dim=8, **AREA)
    linears = [m for m in model.gps_mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 and sum(isinstance(m, torch.nn.GELU) for m in model.gps_mlp) == 6
    assert model.gps_projection.in_features == 2 * 8  # [f(lon), f(lat)] from one shared MLP
    assert model.projection_dim == 16 and model.temperature == 0.07
    assert not any("temperature" in n or "logit" in n for n, _ in model.named_parameters())  # fixed, not trained
    corners = torch.tensor([[40.70, -74.02], [40.88, -73.91]])
    assert torch.allclose(model.normalize(corners), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-4)
    # lat and lon are not interchangeable, although the MLP is shared
    swapped = model.encode_gps(torch.tensor([[40.75, -73.95]])), model.encode_gps(torch.tensor([[40.80, -74.00]]))
    assert not torch.allclose(*swapped)


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = GPSCLIP(embedding_dim=8, hidden_dim=32, **AREA)
    latlon = torch.tensor([40.70, -74.02]) + torch.rand(32, 2) * torch.tensor([0.18, 0.11])
    emb = torch.cat([model.normalize(latlon), torch.randn(32, 6)], 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = model.loss(emb, latlon).item()
    for _ in range(60):
        opt.zero_grad()
        model.loss(emb, latlon).backward()
        opt.step()
    after = model.loss(emb, latlon).item()
    assert after < before - 0.5, (before, after)
    scores = model.gps_score(image_embeddings=emb, latlon=latlon)
    shuffled = model.gps_score(image_embeddings=emb, latlon=latlon.roll(7, 0))
    assert scores.mean() > shuffled.mean() + 10


def test_gps_score_shape_range_and_bad_input():
    model = GPSCLIP(embedding_dim=8, hidden_dim=8, **AREA).eval()
    emb = torch.randn(5, 8)
    scores = model.gps_score(image_embeddings=emb, latlon=torch.tensor([[40.75, -73.97]] * 5))
    assert scores.shape == (5,) and scores.dtype == torch.float32 and scores.abs().max() <= 100
    assert torch.equal(scores, model.gps_score(image_embeddings=emb, latlon=torch.tensor([40.75, -73.97])))
    with pytest.raises(ValueError, match="latlon.*latitude must be in"):
        model.gps_score(image_embeddings=emb, latlon=torch.tensor([95.0, 0.0]))
    with pytest.raises(ValueError, match=r"latlon must have shape \(5, 2\)"):
        model.gps_score(image_embeddings=emb, latlon=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="image_embeddings must have shape"):
        model.gps_score(image_embeddings=torch.randn(5, 7), latlon=torch.tensor([40.75, -73.97]))
    with pytest.raises(ValueError, match="images: this GPSCLIP has no backbone"):
        model.gps_score(images=torch.zeros(1, 3, 64, 64), latlon=torch.tensor([40.75, -73.97]))
    with pytest.raises(ValueError, match="lat_range"):
        GPSCLIP(embedding_dim=8, lat_range=(41.0, 40.0))
    with pytest.raises(ValueError, match="temperature"):
        GPSCLIP(embedding_dim=8, temperature=0.0)
    with pytest.raises(ValueError, match="embedding_dim"):
        GPSCLIP()


def test_save_load_round_trip_gives_identical_scores(tmp_path, city):
    model = GPSCLIP(hidden_dim=16, **AREA, **BACKBONE, seed=1).eval()
    torch.nn.init.normal_(model.image_projection.weight)  # not the default init: the weights must be loaded
    ds = GeoImageFolder(city)
    images, latlon = [ds[i]["image"] for i in range(6)], ds.latlon[:6]
    scores = model.gps_score(images, latlon)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gps_clip" and config["backbone"] == "procedural-clip"
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not any(k.startswith("backbone.") for k in saved)  # a shipped tag: rebuilt from the config
    loaded = load_model(tmp_path)
    assert isinstance(loaded, GPSCLIP) and not loaded.training
    # loaded weights may run other MKL kernels: scores (100 x cosine) equal up to float32 rounding, 1e-6 in the cosine
    torch.testing.assert_close(loaded.gps_score(images, latlon), scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(GPSCLIP.from_pretrained(tmp_path).gps_score(images, latlon), scores, rtol=0, atol=1e-4)


def test_train_script_on_images_saves_a_loadable_model(train_script, city, tmp_path):
    train = train_script("train_gps_clip")
    out = tmp_path / "run"
    args = ["--train_data", str(city), "--output_dir", str(out), "--backbone", "procedural-clip"]
    args += ["--backbone_pretrained", "procedural", "--hidden_dim", "16", "--train_batch_size", "16"]
    model = train.main([*args, "--max_train_steps", "3", "--validation_data", str(city), "--lr_warmup_steps", "1"])
    config = json.loads((out / "config.json").read_text())
    lat = GeoImageFolder(city).latlon[:, 0]
    assert config["lat_range"][0] < lat.min().item() and config["lat_range"][1] > lat.max().item()
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"gps_score", "gps_score_shuffled", "loss"} <= set(metrics) and metrics["n"] == 48
    loaded = load_model(out)
    feats = torch.randn(4, 128)
    latlon = torch.tensor([40.75, -73.97])
    torch.testing.assert_close(  # loaded weights: equal up to float32 rounding (1e-6 in the cosine)
        loaded.gps_score(image_embeddings=feats, latlon=latlon),
        model.gps_score(image_embeddings=feats, latlon=latlon),
        rtol=0,
        atol=1e-4,
    )


def test_train_script_bad_arguments(train_script, parquet, tmp_path):
    train = train_script("train_gps_clip")
    base = ["--train_data", str(parquet), "--output_dir", str(tmp_path)]
    for extra in (["--train_batch_size", "1"], ["--temperature", "0"], ["--finetune", "lora"]):
        with pytest.raises(SystemExit):
            train.parse_args([*base, *extra])
    with pytest.raises(SystemExit):
        train.parse_args(["--train_data", str(tmp_path / "missing"), "--output_dir", str(tmp_path)])
