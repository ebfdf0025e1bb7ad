"""Procedural demo data: determinism, imagefolder format, geography signal, captions, argument checks."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geo_models.data.procedural import (
    LANDMARKS,
    MANHATTAN_BBOX,
    describe_city_locations,
    describe_locations,
    generate_city,
    generate_world,
    render_world_images,
    sample_city_locations,
    sample_world_locations,
)
from geo_models.data.procedural.city import GENERIC_CAPTIONS
from geo_models.sphere import destination, haversine_km

REQUIRED = ["file_name", "latitude", "longitude", "text"]


def _folder_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_imagefolder(root, meta, size):
    csv = pd.read_csv(root / "metadata.csv")
    assert list(csv.columns[:4]) == REQUIRED
    assert len(csv) == len(meta)
    assert csv["latitude"].between(-90, 90).all() and csv["longitude"].between(-180, 180).all()
    assert csv["text"].str.len().gt(0).all()
    for f in csv["file_name"]:
        with Image.open(root / f) as im:
            assert im.size == (size, size) and im.mode == "RGB"
    return csv, json.loads((root / "dataset_info.json").read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return root, generate_world(root, 30, image_size=32, seed=3, progress=False)


def test_world_imagefolder(world):
    root, meta = world
    csv, info = _check_imagefolder(root, meta, 32)
    assert csv["text"].str.startswith("a photo").all()
    assert info["seed"] == 3 and info["counts"]["images"] == 30
    assert info["counts"]["land"] + info["counts"]["sea"] == 30


def test_world_deterministic_by_seed(world, tmp_path):
    root, _ = world
    generate_world(tmp_path / "same", 30, image_size=32, seed=3, progress=False)
    assert _folder_bytes(tmp_path / "same") == _folder_bytes(root)
    other = generate_world(tmp_path / "other", 30, image_size=32, seed=4, progress=False)
    assert not np.allclose(other["latitude"], pd.read_csv(root / "metadata.csv")["latitude"])


def test_world_locations_are_photo_like():
    ll = sample_world_locations(400, seed=0)
    assert ll.shape == (400, 2)
    geo = describe_locations(ll)
    assert geo["is_land"].mean() > 0.7  # mostly cities, a few coasts / open sea
    assert geo["country_code"].nunique() > 40


def test_land_and_sea_look_different():
    land = [[23.0, 10.0], [-2.0, -63.0], [48.5, 10.5], [-25.0, 134.0]]  # Sahara, Amazon, Bavaria, outback
    sea = [[0.0, -140.0], [-30.0, -20.0], [-10.0, 75.0], [35.0, -40.0]]  # Pacific, Atlantic, Indian Ocean
    ll = np.array(land + sea, dtype=np.float64)
    geo = describe_locations(ll)
    assert geo["is_land"].tolist() == [True] * 4 + [False] * 4
    assert (geo["text"].iloc[4:] == "a photo of the open ocean").all()
    rng = np.random.default_rng(0)
    reps = 8
    imgs = render_world_images(np.repeat(ll, reps, 0), geo.loc[geo.index.repeat(reps)], rng, 32)
    ground = imgs[:, -8:].astype(np.float32) / 255  # bottom quarter: always ground / water
    blue = (ground[..., 2] - ground[..., 0]).mean(axis=(1, 2)).reshape(8, reps).mean(1)
    assert blue[4:].min() > blue[:4].max() + 0.1, blue


def test_world_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        generate_world(tmp_path, 0)
    with pytest.raises(ValueError, match="num_images"):
        sample_world_locations(-3)
    with pytest.raises(ValueError, match="image_size"):
        generate_world(tmp_path, 2, image_size=8)
    with pytest.raises(ValueError, match="seed"):
        generate_world(tmp_path, 2, seed=-1)
    with pytest.raises(ValueError, match="off_city_fraction"):
        sample_world_locations(5, off_city_fraction=1.5)
    with pytest.raises(ValueError, match="latlon"):
        describe_locations([[95.0, 0.0]])


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    return root, generate_city(root, 60, image_size=32, seed=1, progress=False)


def test_city_imagefolder_and_determinism(city, tmp_path):
    root, meta = city
    csv, info = _check_imagefolder(root, meta, 32)
    lat0, lon0, lat1, lon1 = MANHATTAN_BBOX
    assert csv["latitude"].between(lat0, lat1).all() and csv["longitude"].between(lon0, lon1).all()
    assert set(csv["kind"]) <= {"landmark", "park", "street", "water"} and info["counts"]["images"] == 60
    generate_city(tmp_path / "same", 60, image_size=32, seed=1, progress=False)
    assert _folder_bytes(tmp_path / "same") == _folder_bytes(root)


def test_city_captions_near_landmarks(city):
    _, meta = city
    ll = meta[["latitude", "longitude"]].to_numpy()
    for m in LANDMARKS:
        near = haversine_km(ll, [m.lat, m.lon]).numpy() * 1000 < 0.9 * m.radius_m
        assert (meta["text"][near] == m.text).all(), m.name
    assert (meta["kind"] == "landmark").sum() >= 5  # the sampler sends tourists to landmarks
    # 150 m from each landmark, in 4 directions: still the landmark's caption.
    for m in LANDMARKS:  # every radius is >= 200 m
        pts = destination(np.array([[m.lat, m.lon]] * 4), np.array([0.0, 90, 180, 270]), 0.15).numpy()
        assert (describe_city_locations(pts)["text"] == m.text).all(), m.name


def test_city_generic_captions(city, tmp_path):
    _, meta = city
    generic = generate_city(tmp_path / "generic", 60, image_size=32, seed=1, captions="generic", progress=False)
    assert (generic["location_text"] == meta["text"]).all() and (generic["kind"] == meta["kind"]).all()
    assert (generic["text"] == generic["kind"].map(GENERIC_CAPTIONS)).all()
    assert not generic["text"].str.contains("SoHo|Midtown|Harlem").any()
    assert (tmp_path / "generic" / "images").exists()
    with pytest.raises(ValueError, match="captions"):
        generate_city(tmp_path / "bad", 5, captions="neighbourhood")


def test_city_places():
    pts = np.array(
        [[40.7233, -74.0020], [40.7712, -73.9742], [40.7600, -74.0200], [40.7400, -73.9600], [40.7600, -73.9800]]
    )
    texts = describe_city_locations(pts)["text"].tolist()
    assert texts == [
        "A street in SoHo, Manhattan",
        "A photo of Central Park",
        "The Hudson River",
        "The East River",
        "A street in Midtown, Manhattan",
    ]


def test_city_bbox_and_bad_arguments(tmp_path):
    small = (40.74, -74.00, 40.76, -73.97)
    ll = sample_city_locations(50, seed=0, bbox=small)
    assert (ll[:, 0] >= 40.74).all() and (ll[:, 0] <= 40.76).all() and (ll[:, 1] >= -74.0).all()
    for bad in [(40.88, -74.05, 40.68, -73.90), (40.7, -74.0, 40.8), (95, 0, 96, 1), ("a", 0, 1, 2), None]:
        with pytest.raises(ValueError, match="bbox"):
            generate_city(tmp_path, 5, bbox=bad)
    with pytest.raises(ValueError, match="num_images"):
        generate_city(tmp_path, 0)
    with pytest.raises(ValueError, match="image_size"):
        generate_city(tmp_path, 5, image_size=4)


@pytest.mark.slow
def test_world_1000_images_under_60s(tmp_path):
    t0 = time.perf_counter()
    meta = generate_world(tmp_path, 1000, progress=False)
    assert time.perf_counter() - t0 < 60
    assert len(list((tmp_path / "images").glob("*.png"))) == len(meta) == 1000
