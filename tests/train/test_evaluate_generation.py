"""Evaluation of generated images (paper Table 1 and Table 2): metrics and train/evaluate_generation.py."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geo_models.data import GeoImageFolder
from geo_models.data.procedural import generate_city, generate_landmark
from geo_models.encoders.image import OpenCLIPBackbone
from geo_models.generation.evaluation import (
    AngleClassifier,
    angle_accuracy,
    chance_angle_accuracy,
    clip_score,
    colour_features,
    generate_images,
    nearest_neighbour_indices,
    paired_difference,
)
from geo_models.generation.gps_clip import GPSCLIP
from geo_models.testing import tiny_angle_to_image_pipeline, tiny_gps_to_image_pipeline

CLIP = ["--clip_model", "procedural-clip", "--clip_pretrained", "procedural"]


@pytest.fixture(scope="module")
def backbone():
    return OpenCLIPBackbone("procedural-clip", "procedural")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    generate_city(root, 24, image_size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def landmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("landmark")
    generate_landmark(root, 200, image_size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny GPS pipeline, a tiny angle pipeline and a GPS-CLIP with the procedural-clip backbone, saved."""
    root = tmp_path_factory.mktemp("models")
    tiny_gps_to_image_pipeline().save_pretrained(root / "gps")
    tiny_angle_to_image_pipeline().save_pretrained(root / "angle")
    model = GPSCLIP(
        lat_range=(40.70, 40.88), lon_range=(-74.02, -73.91), hidden_dim=16, backbone="procedural-clip",
        backbone_pretrained="procedural",
    )  # fmt: skip
    model.save_pretrained(root / "gps_clip")
    pairs = pd.DataFrame(
        {"latitude": [40.75, 40.80, 40.72], "longitude": [-73.98, -73.95, -74.0], "text": ["a park", "a tower", ""]}
    )
    pairs.to_csv(root / "pairs.csv", index=False)
    return root


def test_nearest_neighbour_picks_the_closest_training_image():
    train = torch.tensor([[40.70, -74.00], [40.80, -73.95], [40.75, -73.99], [-33.9, 151.2]])
    query = torch.tensor([[40.79, -73.951], [40.751, -73.991], [-34.0, 151.0], [40.70, -74.001]])
    assert nearest_neighbour_indices(query, train).tolist() == [1, 2, 3, 0]
    # great-circle, not degrees: across the antimeridian 179.9 is next to -179.9
    assert nearest_neighbour_indices(torch.tensor([[0.0, 179.9]]), torch.tensor([[0.0, -179.9], [0.0, 179.0]])) == 0
    with pytest.raises(ValueError, match="reference_latlon must not be empty"):
        nearest_neighbour_indices(query, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="query_latlon"):
        nearest_neighbour_indices(torch.tensor([[100.0, 0.0]]), train)


def test_angle_accuracy_and_chance():
    assert chance_angle_accuracy() == {"angle_acc": pytest.approx(2.78, abs=0.01), "octant_acc": 12.5}
    acc = angle_accuracy(torch.tensor([0, 35, 9, 18]), torch.tensor([5.0, 359.0, 115.0, 190.0]))
    # bins: 0 ok, 35 ok (355 vs 359), 9 (95) vs 115 -> wrong bin but within 22.5 deg, 18 (185) vs 190 -> wrong bin
    assert acc["angle_acc"] == 50.0 and acc["octant_acc"] == 100.0
    with pytest.raises(ValueError, match="pred_bins and azimuth_deg"):
        angle_accuracy(torch.tensor([1, 2]), torch.tensor([3.0]))


def test_angle_classifier_is_accurate_on_real_procedural_views(landmark, backbone, tmp_path):
    ds = GeoImageFolder(landmark)
    images = [ds[i]["image"] for i in range(len(ds))]
    az = torch.tensor(ds.metadata["azimuth_deg"].to_numpy(), dtype=torch.float32)
    for name, feats in (("backbone", backbone.embed_images(images)), ("colour", colour_features(images))):
        classifier = AngleClassifier(config={"features": name}).fit(feats[:150], az[:150])
        acc = angle_accuracy(classifier.predict(feats[150:]), az[150:])
        assert acc["octant_acc"] > 50, (name, acc)  # chance: 12.5
        assert acc["angle_acc"] > 3 * chance_angle_accuracy()["angle_acc"], (name, acc)
    classifier.save(tmp_path)
    loaded = AngleClassifier.load(tmp_path)
    assert loaded.config == {"features": "colour"} and torch.equal(loaded.predict(feats), classifier.predict(feats))
    with pytest.raises(ValueError, match="not fitted"):
        AngleClassifier().predict(feats)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 192\)"):
        loaded.predict(torch.zeros(2, 5))


def test_paired_difference():
    a = torch.arange(20.0)
    up = paired_difference(a + 1.0 + 0.1 * torch.randn(20, generator=torch.Generator().manual_seed(0)), a)
    assert up["ci95_low"] > 0.8 and up["share_positive"] == 1.0 and up["n"] == 20
    noise = paired_difference(torch.randn(200, generator=torch.Generator().manual_seed(1)), torch.zeros(200))
    assert noise["ci95_low"] < 0 < noise["ci95_high"]
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1.0, 2.0], [1.0])


def test_clip_score_range(backbone):
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    scores = clip_score(backbone, images, ["a red square", "a blue square"])
    assert scores.shape == (2,) and (scores >= 0).all() and (scores <= 100).all()
    assert torch.equal(
        clip_score(backbone, images, "a red square"), clip_score(backbone, images, ["a red square"] * 2)
    )
    with pytest.raises(ValueError, match="texts: got 3 texts for 2 images"):
        clip_score(backbone, images, ["a", "b", "c"])


def test_generation_is_seeded_per_image_whatever_the_batching():
    pipe = tiny_gps_to_image_pipeline()
    cond = {"latitude": [40.75, 40.8], "longitude": [-73.98, -73.95]}
    kw = dict(num_images_per_pair=2, seed=3, num_inference_steps=2)
    a = generate_images(pipe, ["a", "b"], cond, batch_size=1, **kw)
    b = generate_images(pipe, ["a", "b"], cond, batch_size=3, **kw)
    # batches of 1 and 3 run other kernels: equal up to rounding (PIL images, so at most 1 level of 255 apart)
    assert len(a) == 4
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x, dtype=np.int16), np.asarray(y, dtype=np.int16), rtol=0, atol=1)
    assert np.abs(np.asarray(a[0], dtype=np.int16) - np.asarray(a[1], dtype=np.int16)).max() > 1


def test_evaluate_script_gps_table(train_script, saved, city, tmp_path, capsys):
    evaluate = train_script("evaluate_generation")
    out = tmp_path / "table1.json"
    args = ["--pipeline", str(saved / "gps"), "--gps_clip", str(saved / "gps_clip"), *CLIP]
    args += ["--pairs", str(saved / "pairs.csv"), "--train_data", str(city), "--num_images_per_pair", "2"]
    args += ["--num_inference_steps", "2", "--batch_size", "4", "--output_json", str(out)]
    result = evaluate.main([*args, "--sample_grid", str(tmp_path / "grid.png")])
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {
        "GPS NN (training image)",
        "Ours (text + GPS)",
        "Ours, GPS zeroed (text only)",
        "Ours, text zeroed (GPS only)",
    }
    assert rows["Ours (text + GPS)"]["n"] == 6 and rows["GPS NN (training image)"]["n"] == 3
    assert rows["Ours, text zeroed (GPS only)"]["clip_score"] is None  # "-" as in Table 1
    for row in rows.values():
        assert -100 <= row["gps_score"] <= 100
    printed = capsys.readouterr().out
    assert "| Method | CLIP Score | GPS Score | Avg |" in printed and "| Ours, text zeroed (GPS only) | - |" in printed
    assert result["table"] in printed
    assert Image.open(tmp_path / "grid.png").size == (3 * 64, 4 * 64)
    # paired per-point GPS scores: 3 points (2 images each averaged), 4 comparisons, printed with their interval
    ours = rows["Ours (text + GPS)"]["gps_score_per_point"]
    assert len(ours) == 3 and sum(ours) / 3 == pytest.approx(rows["Ours (text + GPS)"]["gps_score"], abs=1e-3)
    assert [(p["a"], p["b"]) for p in result["paired"]] == [tuple(ab) for ab in evaluate.PAIRED]
    for p in result["paired"]:
        assert p["n"] == 3 and p["ci95_low"] <= p["mean_diff"] <= p["ci95_high"]
    assert "GPS score, Ours (text + GPS) - Ours, GPS zeroed (text only): " in printed
    # pairs from a held-out imagefolder: one more row, the real photos
    held_out = evaluate.main([*args[:8], "--test_data", str(city), "--max_pairs", "2", "--no_gps_only"] + args[12:])
    assert [r["method"] for r in held_out["rows"]][-1] == "Real held-out photo"
    assert len(held_out["rows"]) == 3 and held_out["rows"][-1]["n"] == 2


def test_evaluate_script_angle_table(train_script, saved, landmark, tmp_path):
    evaluate = train_script("evaluate_generation")
    args = ["--pipeline", str(saved / "angle"), *CLIP, "--num_inference_steps", "2", "--batch_size", "12"]
    result = evaluate.main(
        [*args, "--landmark_data", str(landmark), "--save_angle_classifier", str(tmp_path / "clf"), "--output_json",
         str(tmp_path / "t2.json"), "--angle_features", "colour"]
    )  # fmt: skip
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["Random chance"]["angle_acc"] == pytest.approx(100 / 36)
    assert rows["Real views (held out, classifier check)"]["octant_acc"] > 50
    assert rows["Ours (generated views)"]["n"] == 36
    assert "| Method | Angle acc (%) | Octant acc (%) | n |" in result["table"]
    reloaded = evaluate.main(
        [*args, "--angle_classifier", str(tmp_path / "clf"), "--azimuths", "0", "90", "--num_images_per_pair", "2",
         "--prompt", "A photo of the tower", "--output_json", str(tmp_path / "t2b.json")]
    )  # fmt: skip
    assert [r["method"] for r in reloaded["rows"]] == ["Random chance", "Ours (generated views)"]
    assert reloaded["rows"][-1]["n"] == 4


def test_evaluate_script_bad_input(train_script, saved, tmp_path):
    evaluate = train_script("evaluate_generation")
    base = ["--pipeline", str(saved / "gps"), "--output_json", str(tmp_path / "x.json"), *CLIP]
    for extra in (["--num_images_per_pair", "0"], ["--pairs", str(tmp_path / "missing.csv")], ["--max_pairs", "0"]):
        with pytest.raises(SystemExit):
            evaluate.parse_args([*base, *extra])
    with pytest.raises(ValueError, match="--gps_clip is required"):
        evaluate.main([*base, "--pairs", str(saved / "pairs.csv")])
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"latitude": [40.7], "lon": [-74.0], "text": ["x"]}).to_csv(bad, index=False)
    gps = ["--gps_clip", str(saved / "gps_clip"), "--num_inference_steps", "1"]
    with pytest.raises(ValueError, match=r"--pairs: missing column\(s\) \['longitude'\]"):
        evaluate.main([*base, *gps, "--pairs", str(bad)])
    pd.DataFrame({"latitude": [140.0], "longitude": [-74.0], "text": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="--pairs: latitude must be in"):
        evaluate.main([*base, *gps, "--pairs", str(bad)])
    with pytest.raises(ValueError, match="exactly one of --pairs"):
        evaluate.main([*base, *gps])
    angle = ["--pipeline", str(saved / "angle"), "--output_json", str(tmp_path / "y.json"), *CLIP]
    with pytest.raises(ValueError, match="--landmark_data"):
        evaluate.main(angle)
