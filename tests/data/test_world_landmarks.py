"""Landmark photos in the procedural world: fixed sites, exact repeat locations, recognisable monuments."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geo_models.data.procedural import generate_world, world_landmarks
from geo_models.sphere import haversine_km


@pytest.fixture(scope="module")
def landmark_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("landmark_world")
    meta = generate_world(root, 240, image_size=32, seed=2, landmark_fraction=0.75, num_landmarks=8, progress=False)
    return root, meta


def test_sites_are_fixed_and_prefix_consistent():
    small, large = world_landmarks(8), world_landmarks(30)
    pd.testing.assert_frame_equal(small, large.iloc[:8])
    assert small["name"].str.startswith("the ").all() and small["shape"].nunique() > 1
    # Near (20-40 km from) the most populous cities, not on top of them.
    assert large["city"].nunique() == 30


def test_landmark_photos_repeat_their_site(landmark_world):
    root, meta = landmark_world
    csv = pd.read_csv(root / "metadata.csv")
    assert "landmark" in csv.columns and csv["landmark"].between(-1, 7).all()
    on = csv[csv["landmark"] >= 0]
    assert 0.6 < len(on) / len(csv) < 0.9
    sites = world_landmarks(8)[["latitude", "longitude"]].to_numpy()[on["landmark"].to_numpy()]
    km = haversine_km(on[["latitude", "longitude"]].to_numpy(), sites)
    assert km.max() <= 0.31 and km.median() < 0.1
    names = world_landmarks(8)["name"].to_numpy()
    assert (on["text"] == [f"a photo of {names[i]}" for i in on["landmark"]]).all()
    assert csv.loc[csv["landmark"] < 0, "text"].str.startswith("a photo").all()


def test_monuments_identify_their_landmark(landmark_world):
    """1-NN on 8x8 thumbnails names a photo's landmark far above chance (1/8): the monument is the signal."""
    root, meta = landmark_world
    on = meta[meta["landmark"] >= 0].reset_index(drop=True)
    x = np.stack(
        [np.asarray(Image.open(root / f).resize((8, 8), Image.BILINEAR), np.float32).ravel() for f in on["file_name"]]
    )
    y = on["landmark"].to_numpy()
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.5


def test_default_world_has_no_landmarks(tmp_path):
    meta = generate_world(tmp_path, 10, image_size=16, seed=0, progress=False)
    assert "landmark" not in meta.columns


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"landmark_fraction": 1.5}, "landmark_fraction"),
        ({"landmark_fraction": float("nan")}, "landmark_fraction"),
        ({"landmark_fraction": 0.5, "num_landmarks": 0}, "num_landmarks"),
        ({"landmark_fraction": 0.5, "num_landmarks": 10**7}, "num_landmarks"),
    ],
)
def test_bad_landmark_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_world(tmp_path, 4, image_size=16, progress=False, **kwargs)
