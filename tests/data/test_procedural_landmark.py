"""Procedural landmark: imagefolder format, determinism, GPS / pose geometry, side appearance, learnability, checks."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import trimesh
from PIL import Image

from geo_models.data.procedural import (
    LANDMARK_CENTRE,
    LOOK_AT_HEIGHT_M,
    generate_landmark,
    landmark_camera_pose,
    landmark_mesh,
    project_points,
    render_landmark_view,
)
from geo_models.sphere import azimuth_around, haversine_km

POSE = [f"pose_{i}{j}" for i in range(4) for j in range(4)]


def _folder_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root):
    meta = pd.read_csv(root / "metadata.csv")
    imgs = np.stack([np.asarray(Image.open(root / f).convert("RGB"), np.float32) / 255 for f in meta["file_name"]])
    return meta, imgs


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("landmark")
    return root, generate_landmark(root, 12, image_size=32, seed=0, progress=False)


def test_format_mesh_and_determinism(small, tmp_path):
    root, meta = small
    csv = pd.read_csv(root / "metadata.csv")
    expected = ["file_name", "latitude", "longitude", "text", "azimuth_deg", "azimuth_bin", "distance_m"]
    assert list(csv.columns[:7]) == expected
    assert {"elevation_deg", "fov_deg", "focal_px", *POSE} <= set(csv.columns)
    assert (csv["text"] == "A photo of Meridian Hall").all()
    assert csv["azimuth_bin"].between(0, 35).all() and (csv["azimuth_bin"] == csv["azimuth_deg"] // 10).all()
    assert csv["distance_m"].between(50, 90).all()
    with Image.open(root / csv["file_name"][0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    info = json.loads((root / "landmark.json").read_text())
    assert info["name"] == "Meridian Hall" and info["centre"]["latitude"] == LANDMARK_CENTRE[0]

    mesh = landmark_mesh()
    loaded = trimesh.load(io.BytesIO((root / "mesh.glb").read_bytes()), file_type="glb", force="mesh", process=False)
    assert len(loaded.faces) == len(mesh.faces) == info["num_faces"]
    assert np.allclose(loaded.bounds, mesh.bounds, atol=1e-4)
    assert len(np.unique(loaded.visual.vertex_colors, axis=0)) >= 8  # the side colours survive the export

    generate_landmark(tmp_path / "again", 12, image_size=32, seed=0, progress=False)
    assert _folder_bytes(tmp_path / "again") == _folder_bytes(root)
    other = generate_landmark(tmp_path / "other", 12, image_size=32, seed=1, progress=False)
    assert not np.allclose(other["azimuth_deg"], meta["azimuth_deg"])


def test_gps_and_pose_match_azimuth_and_distance(small):
    _, meta = small
    latlon = meta[["latitude", "longitude"]].to_numpy(np.float64)
    dist_m = haversine_km(LANDMARK_CENTRE, latlon).numpy() * 1000
    np.testing.assert_allclose(dist_m, meta["distance_m"], atol=0.3)  # metadata.csv keeps 1e-6 degrees ~ 0.1 m
    bearing = azimuth_around(latlon, LANDMARK_CENTRE).numpy()
    assert np.all(np.abs((bearing - meta["azimuth_deg"] + 180) % 360 - 180) < 0.5)
    pose = meta[POSE].to_numpy().reshape(-1, 4, 4)
    a = np.radians(meta["azimuth_deg"].to_numpy())
    np.testing.assert_allclose(pose[:, 0, 3], meta["distance_m"] * np.sin(a), atol=1e-4)  # x = east
    np.testing.assert_allclose(pose[:, 1, 3], meta["distance_m"] * np.cos(a), atol=1e-4)  # y = north
    height = LOOK_AT_HEIGHT_M + meta["distance_m"] * np.tan(np.radians(meta["elevation_deg"]))
    np.testing.assert_allclose(pose[:, 2, 3], height, atol=1e-4)
    np.testing.assert_allclose(
        pose[:, :3, :3] @ pose[:, :3, :3].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (12, 3, 3)), atol=1e-5
    )


def test_pose_projection_agrees_with_the_render(small):
    _, meta = small
    for row in meta.itertuples():  # the landmark centre lands near the image centre (look-at jitter <= 2 m)
        pose = np.array([getattr(row, c) for c in POSE]).reshape(4, 4)
        uv = project_points([[0, 0, LOOK_AT_HEIGHT_M]], pose, row.fov_deg, 32)[0]
        assert np.abs(uv - 16).max() < 4
        assert np.isclose(row.focal_px, 16 / np.tan(np.radians(row.fov_deg) / 2), atol=1e-5)
    for az in (0, 90, 180, 270):  # the projected tower cap is where the renderer drew the dark-red cap
        pose = landmark_camera_pose(az, 5.0, 60.0)
        assert np.allclose(project_points([[0, 0, LOOK_AT_HEIGHT_M]], pose, 50.0, 64), 32, atol=1e-6)
        u, v = project_points([[10.0, 7.0, 29.0]], pose, 50.0, 64)[0]
        r, g, b = render_landmark_view(az, 5.0, 60.0, image_size=64)[int(v), int(u)].astype(int)
        assert r > g + 10 and r > b + 10 and r < 120


def test_sides_look_different():
    crops = [render_landmark_view(az, 5.0, 60.0)[16:48, 16:48].reshape(-1, 3).mean(0) for az in (0, 90, 180, 270)]
    for i in range(4):
        for j in range(i):
            assert np.linalg.norm(crops[i] - crops[j]) > 10


def test_azimuth_is_learnable_from_colour_statistics(tmp_path):
    # 1-NN on the chromaticity of an 8x8 centre crop: brightness, exposure and tint are nuisances, hue layout is not.
    meta = generate_landmark(tmp_path, 240, image_size=32, seed=3, progress=False)
    _, imgs = _load(tmp_path)
    chroma = imgs[:, 8:24, 8:24] / (imgs[:, 8:24, 8:24].sum(-1, keepdims=True) + 1e-3)
    x = chroma.reshape(len(imgs), 8, 2, 8, 2, 3).mean((2, 4)).reshape(len(imgs), -1)
    octant = ((meta["azimuth_deg"].to_numpy() + 22.5) // 45 % 8).astype(int)
    nearest = ((x[160:, None] - x[None, :160]) ** 2).sum(-1).argmin(1)
    accuracy = (octant[:160][nearest] == octant[160:]).mean()
    assert accuracy > 0.5, accuracy  # chance: 0.125


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_images": 0}, "num_images"),
        ({"image_size": 8}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"centre": (float("nan"), 8.5)}, "centre"),
        ({"centre": (95.0, 8.5)}, "centre"),
        ({"centre": (47.0,)}, "centre"),
        ({"distance_m": (90.0, 50.0)}, "distance_m"),
        ({"distance_m": (10.0, 50.0)}, "distance_m"),
        ({"distance_m": (50.0, float("inf"))}, "distance_m"),
        ({"elevation_deg": (-10.0, 5.0), "distance_m": (50.0, 900.0)}, "elevation_deg"),
        ({"fov_deg": 179.0}, "fov_deg"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_raises(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_landmark(tmp_path, **{"num_images": 2, **kwargs}, progress=False)


def test_bad_view_arguments_raise():
    with pytest.raises(ValueError, match="distance_m"):
        render_landmark_view(0.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="azimuth_deg"):
        render_landmark_view(float("nan"))
    with pytest.raises(ValueError, match="supersample"):
        render_landmark_view(0.0, supersample=0)
