"""The generation app without a server: the offline map, click -> coordinates, request checks, the tiny pipeline in
single-point and average mode, and a missing model (a message, the rest keeps working)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def gps_to_image_dir(tmp_path_factory) -> str:
    from geo_models.testing import tiny_gps_to_image_pipeline

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("gps_to_image") / "tiny"
    tiny_gps_to_image_pipeline().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def gen_store(gps_to_image_dir):
    from apps.common.models import ModelStore
    from apps.common.settings import Settings

    return ModelStore(Settings(models={"gps_to_image": gps_to_image_dir}))


def test_map_click_roundtrip_and_drawing():
    from apps.common.areamap import MARKER, PARK, map_view, render_map, shows_city
    from apps.generate.inference import area_view, pixel_to_latlon

    area = (40.70, 40.88, -74.02, -73.91)  # the tiny model's (Manhattan-like) area
    view = area_view(area)
    assert view.lat_min < 40.70 and view.lat_max > 40.88 and shows_city(view)
    for lat, lon in [(40.7484, -73.9857), (40.85, -73.93), (40.71, -74.01)]:
        x, y = view.to_pixel(lat, lon)
        got = pixel_to_latlon(area, round(float(x)), round(float(y)))
        assert got == pytest.approx((lat, lon), abs=3e-4)  # about a pixel
    img = np.asarray(render_map(view, point=(40.7484, -73.9857), trained=area))
    assert img.shape == (view.height, view.width, 3)
    x, y = (round(float(v)) for v in view.to_pixel(40.7484, -73.9857))
    assert tuple(img[y, x]) == MARKER  # the marker sits on the point
    x, y = (round(float(v)) for v in view.to_pixel(40.7826, -73.9656))  # inside Central Park
    assert tuple(img[y, x]) == PARK
    world = map_view((-90, 90), (-180, 180))
    assert (world.width, world.height) == (800, 400) and not shows_city(world)
    assert (np.asarray(render_map(world)) != np.asarray(render_map(world))[0, 0]).any()  # coastlines and grid


def test_area_box_and_outside_note():
    from apps.generate.inference import KM_PER_DEG, area_box, outside_note
    from geo_models.sphere import GeoArea

    assert KM_PER_DEG == pytest.approx(111.195, abs=1e-3)  # pi R / 180 with the sphere's Earth radius
    lat0, lat1, lon0, lon1 = area_box(40.75, -73.98, 5.0)
    assert (lat1 - lat0) * KM_PER_DEG == pytest.approx(10.0)
    assert (lon1 - lon0) * KM_PER_DEG * np.cos(np.radians(40.75)) == pytest.approx(10.0)
    assert area_box(89.9, 0, 100)[1] == 90.0  # clipped to the world
    area = (40.70, 40.88, -74.02, -73.91)
    assert outside_note(40.75, -73.98, area) == ""
    assert "outside the model's training area" in outside_note(48.85, 2.35, area)
    box = GeoArea(area[:2], area[2:])  # the embedder's GeoArea works the same; edges are inside
    assert outside_note(40.88, -74.02, box) == ""
    assert "(lat 40.7 to 40.88, lon -74.02 to -73.91)" in outside_note(40.881, -74.0, box)
    assert "outside" in outside_note(float("nan"), 0.0, box) and "outside" in outside_note(95.0, 0.0, area)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"latitude": 1000}, r"latitude must be in \[-90, 90\]"),
        ({"longitude": float("nan")}, "longitude must be finite"),
        ({"prompt": "   "}, "type a prompt"),
        ({"prompt": "x" * 1000}, "prompt too long"),
        ({"steps": 0}, "steps must be"),
        ({"seed": -1}, "seed must be"),
        ({"seed": 1.5}, "seed must be"),
        ({"gps_guidance_scale": 100}, "gps_guidance_scale must be"),
        ({"mode": "both"}, "mode must be one of"),
        ({"mode": "average over area", "radius_km": 0}, "radius_km must be"),
    ],
)
def test_bad_requests_raise_value_errors(changes, message):
    from apps.generate.inference import GenerateRequest, check_request

    req = GenerateRequest("a street", 40.75, -73.98)
    for key, value in changes.items():
        setattr(req, key, value)
    with pytest.raises(ValueError, match=message):
        check_request(req)


def test_limits_clamp_with_notes():
    from apps.generate.inference import MAX_SAMPLES, MAX_STEPS, GenerateRequest, check_request

    req, notes = check_request(GenerateRequest(" a street ", 40.75, -73.98, steps=500, mode="average over area",
                                               num_samples=1000, seed=7.0))  # fmt: skip
    assert (req.prompt, req.steps, req.num_samples, req.seed) == ("a street", MAX_STEPS, MAX_SAMPLES, 7)
    assert len(notes) == 2


def test_generate_single_point_and_average(gen_store):
    from apps.generate.inference import GenerateRequest, generate, get_pipeline, model_area, trained_area

    pipe, error = get_pipeline(gen_store)
    assert error is None and trained_area(pipe) == pytest.approx((40.70, 40.88, -74.02, -73.91))
    assert model_area(pipe) == pipe.gps_embedder.area
    req = GenerateRequest("a street", 40.75, -73.98, steps=2, seed=3)
    image, info = generate(gen_store, req)
    again, _ = generate(gen_store, req)
    assert image.size == (32, 32) and info["gps_area"] is None and info["notes"] == []
    assert np.array_equal(np.asarray(image), np.asarray(again))  # the seed fixes the image
    avg, info = generate(gen_store, GenerateRequest("a street", 40.75, -73.98, steps=2, mode="average over area",
                                                    radius_km=1.0, num_samples=10))  # fmt: skip
    assert avg.size == (32, 32) and info["num_gps_samples"] == 10
    assert info["gps_area"][0] < 40.75 < info["gps_area"][1]
    with pytest.warns(UserWarning, match="outside the training area"):  # Paris: the embedder warns too
        _, info = generate(gen_store, GenerateRequest("a street", 48.85, 2.35, steps=1))
    assert any("outside" in note for note in info["notes"])


def test_missing_model_is_a_message_and_the_tab_still_builds(tmp_path, monkeypatch):
    from apps.common.models import ModelStore
    from apps.common.settings import Settings
    from apps.generate.app import create_demo
    from apps.generate.inference import WORLD, GenerateRequest, generate, get_pipeline, trained_area

    monkeypatch.delenv("GEO_MODELS_GPS_TO_IMAGE", raising=False)
    store = ModelStore(Settings(models={"gps_to_image": str(tmp_path / "missing")}))
    pipe, error = get_pipeline(store)
    assert pipe is None and "GPS-to-image model unavailable" in error and trained_area(pipe) == WORLD
    demo = create_demo(store)  # the world map, a message, the endpoint answers with the reason
    assert "generate" in {dep.get("api_name") for dep in demo.config["dependencies"]}
    with pytest.raises(ValueError, match="unavailable"):
        generate(store, GenerateRequest("a street", 10.0, 20.0))


def test_hub_builds_with_the_generation_tab_and_no_models(tmp_path, monkeypatch):
    from apps.common.models import ModelStore
    from apps.common.settings import MODEL_NAMES, Settings
    from apps.hub.app import create_demo

    monkeypatch.delenv("GEO_MODELS_GPS_TO_IMAGE", raising=False)
    models = {name: str(tmp_path / name) for name in (*MODEL_NAMES, "gps_to_image")}  # all missing
    demo = create_demo(ModelStore(Settings(models=models)))
    assert {"generate", "geolocate", "text_query"} <= {dep.get("api_name") for dep in demo.config["dependencies"]}


def test_settings_flag_env_and_hub_tab(monkeypatch, gps_to_image_dir):
    from apps.common.models import pipeline_source
    from apps.common.settings import Settings, parse_settings
    from apps.hub.app import TABS

    assert ("Generate from a map", "apps.generate.app") in TABS
    assert parse_settings(["--gps_to_image", "user/repo@abc"]).models["gps_to_image"] == "user/repo@abc"
    monkeypatch.setenv("GEO_MODELS_GPS_TO_IMAGE", gps_to_image_dir)
    assert parse_settings([]).models["gps_to_image"] == gps_to_image_dir
    assert pipeline_source(Settings(models={}), "gps_to_image") == gps_to_image_dir  # none in settings: the env var


def test_space_front_matter_and_requirements():
    import gradio
    import yaml

    from apps.build_space import APPS

    text = (APPS / "generate" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["app_file"] == "apps/generate/app.py" and (APPS.parent / meta["app_file"]).is_file()
    assert "preload_from_hub" not in meta  # only build_space --model pins add preloads (tests/apps/test_spaces.py)
    reqs = (APPS / "generate" / "requirements.txt").read_text().split()
    assert "torch==2.14.1" in reqs and "diffusers==0.42.1" in reqs and not any(r.startswith("gradio") for r in reqs)


def test_area_note_when_the_average_leaves_the_training_area():
    from apps.generate.inference import area_box, area_note

    area = (40.70, 40.88, -74.02, -73.91)
    assert area_note(area_box(40.78, -73.965, 1.0), area) == ""
    assert "reaches beyond the model's training area" in area_note(area_box(40.78, -73.965, 24.0), area)


def test_city_labels_never_overlap_and_stay_inside():
    """The city map's labels (landmarks, neighbourhoods) are placed clear of each other: "Murray Hill" sat on
    "Empire State Building" (issue 17)."""
    from PIL import Image, ImageDraw

    from apps.common.areamap import city_labels
    from apps.generate.inference import area_view

    for area in [(40.70, 40.88, -74.02, -73.91), (40.74, 40.76, -74.0, -73.97)]:
        view = area_view(area)
        placed = city_labels(ImageDraw.Draw(Image.new("RGB", (view.width, view.height))), view)
        boxes = [box for *_, box in placed]
        assert len(placed) >= 3
        for i, a in enumerate(boxes):
            assert a[0] >= 0 and a[1] >= 0 and a[2] <= view.width and a[3] <= view.height
            for b in boxes[i + 1 :]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (placed, a, b)
