import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from geo_models import GeoPrediction, hub
from geo_models.baselines import KNNGeolocator
from geo_models.data.embeddings import write_embedding_parquet
from geo_models.data.imagefolder import write_imagefolder_metadata
from geo_models.data.webdataset import write_webdataset
from geo_models.hub import GeoModelHubMixin, register_model_type

KEYS = {"n", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore"}
LATLON = torch.tensor(
    [[48.85, 2.35], [40.71, -74.0], [-33.87, 151.21], [35.68, 139.69], [-22.91, -43.17], [64.15, -21.94]]
)


@pytest.fixture(scope="module")
def script(train_script):
    return train_script("evaluate_geolocation")


@pytest.fixture
def knn_data(tmp_path):
    """A KNN model fitted on 6 embeddings, and the same embeddings as a test parquet with file names."""
    emb = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    KNNGeolocator(embedding_dim=8).fit(emb, LATLON).save_pretrained(tmp_path / "knn")
    names = [f"img_{i}.jpg" for i in range(6)]
    write_embedding_parquet(tmp_path / "test" / "part-00000.parquet", emb, LATLON, file_name=names)
    return tmp_path / "knn", tmp_path / "test", emb


def test_embeddings_perfect_when_test_is_train(script, knn_data, tmp_path):
    model, data, _ = knn_data
    out = tmp_path / "res" / "metrics.json"
    metrics = script.main(["--model", str(model), "--test_data", str(data), "--output_json", str(out), "--top_k", "3"])
    saved = json.loads(out.read_text())
    assert set(saved) == KEYS | {"nll"} and saved == metrics  # kNN's kernel density gives an NLL (issue 18)
    assert saved["n"] == 6 and saved["median_km"] == pytest.approx(0.0, abs=1e-3)
    assert all(saved[f"acc_{t}km"] == 100.0 for t in (1, 25, 200, 750, 2500))
    assert saved["geoscore"] == pytest.approx(5000.0, abs=0.01)
    rows = pd.read_csv(out.with_name("metrics.per_image.csv"))  # default: next to the JSON
    assert list(rows.columns) == [
        "file_name",
        "true_latitude",
        "true_longitude",
        "pred_latitude",
        "pred_longitude",
        "error_km",
        "candidates",
        "nll",
    ]
    assert rows["file_name"].tolist() == [f"img_{i}.jpg" for i in range(6)]
    np.testing.assert_allclose(rows[["pred_latitude", "pred_longitude"]].to_numpy(), LATLON.numpy(), atol=1e-4)
    cands = [json.loads(c) for c in rows["candidates"]]
    assert all(len(c) == 3 and set(c[0]) == {"latitude", "longitude", "score"} for c in cands)
    assert cands[2][0]["latitude"] == pytest.approx(-33.87, abs=1e-4)


def test_embeddings_options(script, knn_data, tmp_path):
    model, data, emb = knn_data
    # a single parquet file, max_samples, explicit CSV path, predict kwargs, batches of 2
    csv = tmp_path / "per_image.csv"
    args = ["--model", str(model), "--test_data", str(data / "part-00000.parquet"), "--output_json"]
    metrics = script.main(
        [*args, str(tmp_path / "m.json"), "--max_samples", "4", "--per_image_csv", str(csv), "--batch_size", "2"]
        + ["--predict_kwargs", '{"aggregate": "medoid", "k": 2}']
    )
    assert metrics["n"] == 4 and len(pd.read_csv(csv)) == 4
    # medoid of 2 neighbours with exact ties -> the nearest, still perfect
    assert metrics["acc_1km"] == 100.0
    # shuffled test locations: not perfect; 'none' skips the CSV
    write_embedding_parquet(tmp_path / "shuffled.parquet", emb, LATLON.roll(1, dims=0))
    metrics = script.main(
        ["--model", str(model), "--test_data", str(tmp_path / "shuffled.parquet")]
        + ["--output_json", str(tmp_path / "s.json"), "--per_image_csv", "none"]
    )
    assert metrics["acc_25km"] == 0.0 and metrics["median_km"] > 1000
    assert not (tmp_path / "s.per_image.csv").exists()


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    """A 6-image imagefolder, the same as WebDataset shards, and a tiny GeoCLIP (tiny-vit backbone) with a gallery."""
    from geo_models.geoclip import GeoCLIP

    root = tmp_path_factory.mktemp("evalimg")
    folder = root / "photos"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(6):
        names.append(f"img/{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / names[-1])
    frame = pd.DataFrame({"file_name": names, "latitude": LATLON[:, 0], "longitude": LATLON[:, 1]})
    write_imagefolder_metadata(folder, frame)
    shards = write_webdataset(folder, root / "shards", shard_size=4)
    model = GeoCLIP(
        embedding_dim=32, projection_dim=16, num_features=16, hidden_dim=32, num_layers=2, backbone="tiny-vit"
    )
    model.gallery = torch.cat([LATLON, torch.tensor([[0.0, 0.0], [10.0, 20.0]])])
    model.save_pretrained(root / "geoclip")
    return folder, root / "shards", shards, root / "geoclip", model.gallery


def test_imagefolder_with_geoclip_and_ten_crop(script, image_data, tmp_path):
    folder, _, _, model, gallery = image_data
    base = ["--model", str(model), "--test_data", str(folder), "--top_k", "2", "--batch_size", "4"]
    plain = script.main([*base, "--output_json", str(tmp_path / "a.json")])
    ten = script.main([*base, "--output_json", str(tmp_path / "b.json"), "--ten_crop"])
    for metrics in (plain, ten):
        assert set(metrics) == KEYS | {"nll"} and metrics["n"] == 6
    rows = pd.read_csv(tmp_path / "a.per_image.csv")
    assert rows["file_name"].tolist() == [f"img/{i}.png" for i in range(6)]
    np.testing.assert_allclose(rows[["true_latitude", "true_longitude"]].to_numpy(), LATLON.numpy(), atol=1e-4)
    preds = torch.tensor(rows[["pred_latitude", "pred_longitude"]].to_numpy(), dtype=torch.float32)
    assert all((gallery - p).abs().amax(-1).min() < 1e-4 for p in preds)  # predictions come from the saved gallery
    ten_rows = pd.read_csv(tmp_path / "b.per_image.csv")  # ten crops average other probabilities
    assert ten_rows["candidates"].tolist() != rows["candidates"].tolist()
    # --gallery passes through to GeoCLIP.predict: a one-point CSV gallery gives that point for every image
    csv = tmp_path / "g.csv"
    csv.write_text("latitude,longitude\n10.0,20.0\n")
    script.main([*base[:-4], "--top_k", "1", "--output_json", str(tmp_path / "c.json"), "--gallery", str(csv)])
    rows = pd.read_csv(tmp_path / "c.per_image.csv")
    assert (rows["pred_latitude"] == 10.0).all() and (rows["pred_longitude"] == 20.0).all()


def test_webdataset_matches_imagefolder(script, image_data, tmp_path):
    folder, shard_dir, shards, model, _ = image_data
    assert len(shards) == 2
    base = ["--model", str(model), "--top_k", "2", "--batch_size", "4"]
    a = script.main([*base, "--test_data", str(folder), "--output_json", str(tmp_path / "a.json")])
    b = script.main([*base, "--test_data", str(shard_dir), "--output_json", str(tmp_path / "b.json")])
    assert a == pytest.approx(b)
    c = script.main(
        [*base, "--test_data", str(shards[0]), "--output_json", str(tmp_path / "c.json"), "--max_samples", "3"]
    )
    assert c["n"] == 3


class DummyDensity(nn.Module, GeoModelHubMixin):
    """Predicts the first two embedding values as latlon; log-density of the truth = -(embedding[:, 2])."""

    model_type = "dummy_density"

    def __init__(self, *, embedding_dim: int = 4):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def predict(self, images=None, image_embeddings=None, *, top_k=1, batch_size=16):
        ll = image_embeddings[:, :2] * self.scale
        cands = ll[:, None].expand(-1, top_k, 2)
        return GeoPrediction(latlon=ll, candidates=cands, scores=torch.ones(len(ll), top_k))

    def log_prob(self, latlon, image_embeddings=None):
        assert latlon.shape == (len(image_embeddings), 2)
        return -image_embeddings[:, 2]


@pytest.fixture
def dummy_model_type(monkeypatch):
    module = types.ModuleType("geo_eval_test_dummies")
    module.DummyDensity = DummyDensity
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(hub, "MODEL_TYPES", dict(hub.MODEL_TYPES))
    register_model_type("dummy_density", "geo_eval_test_dummies:DummyDensity")


def test_nll_hook(script, dummy_model_type, tmp_path):
    DummyDensity().save_pretrained(tmp_path / "dummy")
    emb = torch.cat([LATLON, torch.arange(6.0)[:, None], torch.zeros(6, 1)], dim=1)  # nll per image 0..5
    write_embedding_parquet(tmp_path / "t.parquet", emb, LATLON)
    args = ["--model", str(tmp_path / "dummy"), "--test_data", str(tmp_path / "t.parquet"), "--batch_size", "4"]
    metrics = script.main([*args, "--output_json", str(tmp_path / "m.json")])
    assert set(metrics) == KEYS | {"nll"} and metrics["nll"] == pytest.approx(2.5)
    assert json.loads((tmp_path / "m.json").read_text())["nll"] == pytest.approx(2.5)
    assert pd.read_csv(tmp_path / "m.per_image.csv")["nll"].tolist() == pytest.approx([0, 1, 2, 3, 4, 5])
    assert metrics["acc_1km"] == 100.0
    assert set(script.main([*args, "--output_json", str(tmp_path / "n.json"), "--skip_nll"])) == KEYS


def test_cli_errors(script, knn_data, image_data, tmp_path, capsys):
    model, data, _ = knn_data
    folder, _, _, geoclip, _ = image_data
    out = ["--output_json", str(tmp_path / "x.json")]

    def fails(argv, message):
        with pytest.raises(SystemExit):
            script.main(argv + out)
        assert message in capsys.readouterr().err

    fails(["--model", str(model), "--test_data", str(tmp_path / "missing.parquet")], "does not exist")
    (tmp_path / "notes.txt").write_text("hello")
    fails(["--model", str(model), "--test_data", str(tmp_path / "notes.txt")], "is not a dataset")
    (tmp_path / "empty").mkdir()
    fails(["--model", str(model), "--test_data", str(tmp_path / "empty")], "is not a dataset")
    fails(["--model", str(tmp_path / "nope"), "--test_data", str(data)], "no such folder")
    fails(["--model", str(tmp_path), "--test_data", str(data)], "no config.json")
    fails(["--model", str(model), "--test_data", str(data), "--ten_crop"], "--ten_crop needs images")
    fails(["--model", str(model), "--test_data", str(folder), "--ten_crop"], "has no ten_crop option")
    fails(["--model", str(model), "--test_data", str(data), "--gallery", "100"], "takes no gallery")
    fails(["--model", str(model), "--test_data", str(data), "--gallery", "nowhere.csv"], "neither 'official'")
    fails(["--model", str(model), "--test_data", str(data), "--top_k", "0"], "--top_k must be >= 1")
    fails(["--model", str(model), "--test_data", str(data), "--predict_kwargs", "[1]"], "JSON object")
    fails(["--model", str(model), "--test_data", str(data), "--predict_kwargs", '{"x": 1}'], "no argument 'x'")
    fails(["--model", str(model), "--test_data", str(folder)], "embed the images first")  # KNN has no backbone
    fails(["--model", str(model), "--test_data", str(data), "--top_k", "7"], "top_k must be an integer in [1, 6]")
    fails(["--model", str(geoclip), "--test_data", str(data)], "image_embeddings must have shape")  # 8-d vs 32-d
    # a saved model without predict (a location encoder)
    from geo_models.encoders import LocationEncoder

    LocationEncoder(sigmas=(1.0,), num_features=4, hidden_dim=8, num_layers=1, output_dim=4).save_pretrained(
        tmp_path / "enc"
    )
    fails(["--model", str(tmp_path / "enc"), "--test_data", str(data)], "has no predict()")


def test_calibration_flag_writes_coverage_and_a_reliability_plot(script, knn_data, tmp_path):
    model, data, _ = knn_data
    out = tmp_path / "cal.json"
    metrics = script.main(["--model", str(model), "--test_data", str(data), "--output_json", str(out),
                           "--calibration", "--calibration_samples", "64"])  # fmt: skip
    assert metrics["coverage_90"] == 100.0 and metrics["area_90_km2"] > 0  # every truth is a memory point
    assert (tmp_path / "cal.reliability.png").is_file()
    with pytest.raises(SystemExit):
        script.main(["--model", str(model), "--test_data", str(data), "--output_json", str(out), "--calibration",
                     "--calibration_samples", "3"])  # fmt: skip
