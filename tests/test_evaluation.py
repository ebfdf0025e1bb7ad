"""geo_models.evaluation: evaluate_geolocation on a loaded model (metrics, files, input errors, predict kwargs)."""

import json

import pandas as pd
import pytest
import torch

from geo_models.baselines import KNNGeolocator
from geo_models.data.embeddings import read_embedding_parquet, write_embedding_parquet
from geo_models.evaluation import EvaluationInputError, evaluate_geolocation, load_geolocator
from geo_models.testing import tiny_sphere_flow_pipeline

KEYS = {"n", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore"}
CSV_COLUMNS = ["true_latitude", "true_longitude", "pred_latitude", "pred_longitude", "error_km", "candidates"]


@pytest.fixture(scope="module")
def knn(embedding_parquet):
    """A kNN baseline whose memory is the test set itself (so every prediction is exact)."""
    emb, latlon, _ = read_embedding_parquet(embedding_parquet)
    return KNNGeolocator(embedding_dim=emb.shape[1]).fit(emb, latlon)


def test_metrics_and_files(knn, embedding_parquet, tmp_path):
    out, csv = tmp_path / "res" / "metrics.json", tmp_path / "csv" / "per_image.csv"
    metrics = evaluate_geolocation(
        knn, embedding_parquet, top_k=3, batch_size=10, output_json=out, per_image_csv=csv, progress=False
    )
    assert set(metrics) == KEYS | {"nll"} and metrics["n"] == 48  # kNN's kernel density gives an NLL (issue 18)
    assert metrics["acc_1km"] == 100.0 and metrics["median_km"] == pytest.approx(0.0, abs=1e-3)
    assert json.loads(out.read_text()) == metrics
    rows = pd.read_csv(csv)
    assert list(rows.columns) == [*CSV_COLUMNS, "nll"] and len(rows) == 48  # no file_name column in this parquet
    assert all(len(json.loads(c)) == 3 for c in rows["candidates"])
    # written atomically: no temporary file left next to them
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]
    assert [p.name for p in csv.parent.iterdir()] == ["per_image.csv"]
    # nothing is written unless asked; max_samples and extra predict kwargs
    few = evaluate_geolocation(
        knn, embedding_parquet, top_k=2, max_samples=5, predict_kwargs={"aggregate": "top1"}, progress=False
    )
    assert few["n"] == 5 and few["acc_1km"] == 100.0


def test_input_errors(knn, embedding_parquet, tmp_path):
    out = tmp_path / "m.json"

    def fails(argument, match, model=knn, data=embedding_parquet, **kwargs):
        with pytest.raises(ValueError, match=match) as info:
            evaluate_geolocation(model, data, output_json=out, progress=False, **kwargs)
        assert isinstance(info.value, EvaluationInputError) and info.value.argument == argument
        assert str(info.value).startswith(argument)

    fails("predict_kwargs", "predict_kwargs: KNNGeolocator.predict has no argument 'x'", predict_kwargs={"x": 1})
    fails("predict_kwargs", "must be a dict", predict_kwargs=[("k", 2)])
    fails("ten_crop", "ten_crop needs images", ten_crop=True)
    fails("gallery", "takes no gallery", gallery=100)
    fails("gallery", "neither 'official'", gallery=str(tmp_path / "nowhere.csv"))
    fails("top_k", "top_k must be an integer >= 1", top_k=0)
    fails("max_samples", "max_samples", max_samples=0)
    fails("test_data", "does not exist", data=tmp_path / "missing.parquet")
    (tmp_path / "notes.txt").write_text("hello")
    fails("test_data", "is not a dataset", data=tmp_path / "notes.txt")
    fails("model", "has no predict", model=torch.nn.Linear(2, 2))
    fails("model", r"cannot evaluate test_data .*top_k", top_k=49)  # predict's own ValueError: only 48 neighbours
    assert not out.exists()


def test_non_json_predict_kwargs_and_nll(tmp_path):
    """A torch.Generator in predict_kwargs reaches predict (same seed, same samples); the NLL of a flow model."""
    pipe = tiny_sphere_flow_pipeline()
    emb = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    latlon = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [40.7, -74.0]])
    data = tmp_path / "t.parquet"
    write_embedding_parquet(data, emb, latlon)
    fast = {"num_samples": 2, "num_inference_steps": 4, "atol": 1e-4, "rtol": 1e-4}

    def evaluate(seed, **kwargs):
        predict = {**fast, "generator": torch.Generator().manual_seed(seed)}
        return evaluate_geolocation(pipe, data, top_k=1, predict_kwargs=predict, progress=False, **kwargs)

    csv = tmp_path / "p.csv"
    metrics = evaluate(0, skip_nll=True, output_json=tmp_path / "m.json", per_image_csv=csv)
    assert set(metrics) == KEYS and json.loads((tmp_path / "m.json").read_text()) == metrics
    assert evaluate(0, skip_nll=True) == metrics
    direct = pipe.predict(image_embeddings=emb, top_k=1, generator=torch.Generator().manual_seed(0), **fast)
    got = torch.tensor(pd.read_csv(csv)[["pred_latitude", "pred_longitude"]].to_numpy(), dtype=torch.float32)
    torch.testing.assert_close(got, direct.latlon.float(), atol=1e-4, rtol=0)
    with_nll = evaluate(0)
    assert set(with_nll) == KEYS | {"nll"} and torch.isfinite(torch.tensor(with_nll["nll"]))


def test_load_geolocator(knn, tmp_path):
    knn.save_pretrained(tmp_path / "knn")
    model = load_geolocator(tmp_path / "knn", device="cpu")
    assert isinstance(model, KNNGeolocator) and not model.training
    from geo_models.encoders import LocationEncoder

    LocationEncoder(sigmas=(1.0,), num_features=4, hidden_dim=8, num_layers=1, output_dim=4).save_pretrained(
        tmp_path / "enc"
    )
    with pytest.raises(EvaluationInputError, match="has no predict"):
        load_geolocator(tmp_path / "enc")


def test_calibration_metrics_and_reliability_plot(knn, embedding_parquet, tmp_path):
    """--calibration: coverage and median area of the 50/90/95% highest-density regions, and a reliability PNG
    next to the JSON (issue 18). The memory is the test set: every truth sits on a kernel centre, so it is inside
    even the 50% region."""
    out = tmp_path / "eval.json"
    metrics = evaluate_geolocation(knn, embedding_parquet, batch_size=16, output_json=out, progress=False,
                                   calibration=True, calibration_samples=64)  # fmt: skip
    for level in (50, 90, 95):
        assert metrics[f"coverage_{level}"] == 100.0 and metrics[f"area_{level}_km2"] > 0
    assert metrics["area_50_km2"] <= metrics["area_90_km2"] <= metrics["area_95_km2"]
    assert {"nll", "max_coverage_gap", "well_calibrated"} <= set(metrics)
    assert (tmp_path / "eval.reliability.png").stat().st_size > 1000
    with pytest.raises(EvaluationInputError, match="calibration_samples"):
        evaluate_geolocation(knn, embedding_parquet, progress=False, calibration=True, calibration_samples=3)


def test_flow_calibration_from_its_own_samples(tmp_path):
    """The sphere flow's regions come from its unguided samples and their exact log-densities."""
    flow = tiny_sphere_flow_pipeline(embedding_dim=8)
    emb = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    latlon = torch.tensor([[10.0, 20.0], [-30.0, 40.0], [50.0, -60.0], [0.0, 0.0], [70.0, 100.0], [-45.0, -170.0]])
    write_embedding_parquet(tmp_path / "t" / "part-00000.parquet", emb, latlon)
    metrics = evaluate_geolocation(flow, tmp_path / "t", progress=False, calibration=True, calibration_samples=32,
                                   top_k=1, predict_kwargs={"num_samples": 4, "num_inference_steps": 4})  # fmt: skip
    assert 0 <= metrics["coverage_50"] <= metrics["coverage_90"] <= metrics["coverage_95"] <= 100
    assert metrics["area_50_km2"] <= metrics["area_95_km2"] and "nll" in metrics
