"""Shared app plumbing: coastlines, maps, limits, reverse geocoding, settings, model loading."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from apps.common import coastlines, limits
from apps.common.geocode import place_names
from apps.common.models import ModelStore, split_revision
from apps.common.settings import STARTER_DIR, Settings, parse_settings

REPO_ROOT = coastlines.DATA_FILE.parents[3]


def test_coastlines_file_is_small_and_sane():
    assert coastlines.DATA_FILE.stat().st_size < 1_000_000
    lines = coastlines.load_coastlines()
    points = np.concatenate(lines)
    assert 100 <= len(lines) <= 5000 and 2000 <= len(points) <= 200_000
    assert np.isfinite(points).all() and (np.abs(points[:, 0]) <= 90).all() and (np.abs(points[:, 1]) <= 180).all()
    # the English Channel coast is there: a point within ~60 km of Calais
    assert (np.hypot(points[:, 0] - 50.95, (points[:, 1] - 1.85) * np.cos(np.radians(51)))).min() < 0.6


def test_world_map_is_light_with_scalar_markers_and_a_fitted_region():
    from apps.common.worldmap import map_figure, region_bounds

    heat = {"values": np.random.default_rng(0).random((720, 1440)), "title": "t"}  # 0.25-degree cells
    cands = np.array([[48.85, 2.35], [48.9, 2.5], [45.7, 4.8]])
    world = map_figure(candidates=cands, samples=np.zeros((5, 2)), true_latlon=(40.0, -3.0), heat=heat)
    region = map_figure(candidates=cands, samples=np.zeros((5, 2)), true_latlon=(40.0, -3.0), heat=heat,
                        view="region")  # fmt: skip
    assert [t.type for t in world.data][0] == "heatmap" and world.data[0].z.shape == (60, 120)  # 3-degree cells
    assert not {t.type for t in world.data} & {"scatter3d", "surface", "scattergeo"}  # no WebGL, no CDN basemap
    assert {"coastlines", "candidates", "best guess", "samples", "photo GPS"} <= {t.name for t in world.data}
    markers = [t for t in world.data if t.type == "scatter" and t.mode == "markers"]
    assert all(isinstance(t.marker.size, (int, float)) for t in markers)
    assert len(world.to_json()) < 300_000 and len(region.to_json()) < 60_000
    lat0, lat1 = region.layout.yaxis.range
    lon0, lon1 = region.layout.xaxis.range
    assert lat0 < 40.0 and lat1 > 48.9 and lon0 < -3.0 and lon1 > 4.8  # fitted around the answer and the truth
    assert lat1 - lat0 < 30 and world.layout.yaxis.range == (-90.0, 90.0)
    assert region_bounds(np.array([[10.0, 20.0]]))[1] - region_bounds(np.array([[10.0, 20.0]]))[0] >= 1.0
    with pytest.raises(ValueError, match="view"):
        map_figure(view="moon")
    # a region inside one 3-degree cell: the cell is placed by x0/dx, y0/dy (from arrays of one value plotly could not
    # size it and drew nothing), and covers the region
    tiny = map_figure(candidates=np.array([[48.3, 2.2]]), true_latlon=(48.8, 2.3), heat=heat, view="region")
    cell = tiny.data[0]
    assert cell.type == "heatmap" and cell.x0 is not None and cell.dx == 3.0 and cell.dy == 3.0
    z = np.asarray(cell.z)
    ny, nx = z.shape
    assert cell.x0 - 1.5 <= tiny.layout.xaxis.range[0] and tiny.layout.xaxis.range[1] <= cell.x0 + (nx - 0.5) * 3
    assert cell.y0 - 1.5 <= tiny.layout.yaxis.range[0] and tiny.layout.yaxis.range[1] <= cell.y0 + (ny - 0.5) * 3


def test_limits(photo_path, bad_files, tmp_path):
    assert limits.check_image_file(photo_path) == (96, 64)
    with pytest.raises(ValueError, match="not an image"):
        limits.check_image_file(bad_files["not_image"])
    with pytest.raises(ValueError, match="too large"):
        limits.check_image_file(bad_files["huge"])
    big = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(big)
    with pytest.raises(ValueError, match=r"3000x2000 = 6 megapixels \(limit 5\)"):
        limits.check_image_file(big, max_megapixels=5)
    with pytest.raises(ValueError, match="file too large"):
        limits.check_image_file(big, max_file_mb=1e-4)
    image, gps, note = limits.load_photo(big)
    assert image.mode == "RGB" and max(image.size) == limits.MAX_SIDE and gps is None and note == ""
    image, gps, _ = limits.load_photo(photo_path)
    assert image.size == (96, 64) and gps == pytest.approx((48.8566, 2.3522), abs=1e-4)
    assert limits.check_text("  a beach ") == "a beach"
    for bad in ("", "   ", None, "x" * 1000):
        with pytest.raises(ValueError):
            limits.check_text(bad)


def test_place_names_offline():
    paris, ocean = place_names(np.array([[48.8566, 2.3522], [-40.0, -130.0]]))
    assert "Paris" in paris and "France" in paris
    assert " km from " in ocean
    assert place_names(np.zeros((0, 2))) == []


def test_settings_flags_then_env_then_starter(monkeypatch, tmp_path):
    monkeypatch.setenv("GEO_MODELS_LOCDIFF", "user/locdiff@abc123")
    monkeypatch.delenv("GEO_MODELS_GEOCLIP", raising=False)
    monkeypatch.delenv("GEO_MODELS_GPS_TO_IMAGE", raising=False)
    monkeypatch.delenv("GEO_MODELS_ANGLE_TO_IMAGE", raising=False)
    s = parse_settings(["--sphere_flow", str(tmp_path), "--port", "9999", "--gallery", "500"])
    assert s.models == {"geoclip": str(STARTER_DIR / "geoclip"), "locdiff": "user/locdiff@abc123",
                        "sphere_flow": str(tmp_path), "gps_to_image": str(STARTER_DIR / "gps_to_image"),
                        "angle_to_image": str(STARTER_DIR / "angle_to_image")}  # fmt: skip
    assert s.port == 9999 and s.gallery == 500 and s.is_starter("geoclip") and not s.is_starter("sphere_flow")
    assert split_revision("user/locdiff@abc123") == ("user/locdiff", "abc123")
    assert split_revision(str(tmp_path)) == (str(tmp_path), None)


def test_missing_models_are_disabled_not_fatal(tmp_path, tiny_model_dirs):
    from apps.geolocate.app import create_demo, geolocator_choices
    from apps.geolocate.inference import geolocate

    models = {"geoclip": tiny_model_dirs["geoclip"], "locdiff": str(tmp_path / "nope"), "sphere_flow": "./missing"}
    store = ModelStore(Settings(models=models))
    errors = store.load_all()
    assert errors["geoclip"] is None and "no model folder" in errors["locdiff"] and errors["sphere_flow"]
    choices, default, status = geolocator_choices(store)
    assert default == "GeoCLIP" and ("LocDiff-H (unavailable)", "LocDiff-H") in choices
    assert "LocDiff** disabled" in status and "Sphere flow** disabled" in status
    with pytest.raises(ValueError, match="LocDiff is not available"):
        geolocate(store, Image.new("RGB", (32, 32)), "LocDiff")
    create_demo(store)  # the UI builds without them


def test_hub_app_help_from_any_directory(tmp_path):
    """`python apps/hub/app.py --help` works from another directory and loads no model."""
    out = subprocess.run([sys.executable, str(REPO_ROOT / "apps" / "hub" / "app.py"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--geoclip" in out.stdout and "GEO_MODELS_SPHERE_FLOW" in out.stdout and "--port" in out.stdout


def test_gpu_decorator_is_a_no_op_without_spaces():
    from apps.common.models import gpu

    def f(x):
        return x + 1

    if "spaces" not in sys.modules:
        assert gpu(f) is f and gpu(duration=10)(f) is f
