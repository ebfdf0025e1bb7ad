"""The landmark3d app (a landmark in 3D) with a tiny angle-to-image pipeline: views at 8 azimuths, "lift" from model
to GLB with progress and previews, one lift at a time, a cancelled lift that frees the server, bad input as
messages; the app over HTTP (``views`` and ``lift`` endpoints) with gradio_client."""

from __future__ import annotations

import socket
import threading

import pytest
import torch

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from apps.common.models import ModelStore
    from apps.common.settings import Settings
    from geo_models.testing import tiny_angle_to_image_pipeline

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("angle") / "tiny"
    tiny_angle_to_image_pipeline().save_pretrained(path)
    return ModelStore(Settings(models={"angle_to_image": str(path)}, port=free_port()))


def test_views_at_eight_azimuths(store):
    from apps.landmark3d.inference import views

    out = views(store, "A photo of the landmark", steps=2, seed=1)
    assert [caption for _, caption in out][:3] == ["0° (N)", "45° (NE)", "90° (E)"] and len(out) == 8
    assert all(image.size == (32, 32) for image, _ in out)
    with pytest.raises(ValueError, match="prompt"):
        views(store, "  ")
    with pytest.raises(ValueError, match="steps"):
        views(store, "a", steps=0)


def test_lift_to_glb_with_previews_then_one_at_a_time_and_cancel(store):
    from apps.landmark3d.inference import LiftCancelled, lift

    updates = list(lift(store, "A photo of the landmark", 10, seed=0))
    assert [u.step for u in updates] == [*range(1, 11), 10]
    assert updates[9].preview is not None and updates[9].preview.size == (96, 96)  # step 10: a preview
    mesh = trimesh.load(updates[-1].glb, force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[1] == 4

    running = lift(store, "A photo of the landmark", 50)
    next(running)  # holds the lock until it is closed and its worker stops
    with pytest.raises(ValueError, match="already running"):
        next(lift(store, "A photo of the landmark", 10))
    running.close()  # a cancelled request
    cancel = threading.Event()
    for _ in range(200):  # the lock is released once the cancelled worker has stopped
        try:
            second = lift(store, "A photo of the landmark", 30, cancel=cancel)
            next(second)
            break
        except ValueError:
            threading.Event().wait(0.1)
    cancel.set()
    with pytest.raises(LiftCancelled):
        list(second)
    with pytest.raises(ValueError, match="steps"):
        next(lift(store, "a", 0))
    with pytest.raises(ValueError, match="prompt"):
        next(lift(store, "", 10))


def test_app_endpoints(store):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from apps.common.launch import launch_kwargs
    from apps.landmark3d.app import create_demo

    demo = create_demo(store)
    demo.queue(default_concurrency_limit=1, max_size=8)
    demo.launch(**launch_kwargs(store.settings), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://{store.settings.host}:{store.settings.port}/", verbose=False)
        endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert [p["parameter_name"] for p in endpoints["/lift"]["parameters"]] == ["prompt", "steps", "seed"]
        glb = client.predict("A photo of the landmark", 10, 0, api_name="/lift")
        assert len(trimesh.load(glb, force="mesh").faces) > 0
        gallery = client.predict("A photo of the landmark", 2, 0, api_name="/views")
        assert len(gallery) == 8
        with pytest.raises(AppError, match="prompt"):
            client.predict("", 10, 0, api_name="/lift")
        assert client.predict("A photo of the landmark", 1, 0, api_name="/views")  # still serving
    finally:
        demo.close()


def test_model3d_shows_the_starter_mesh_in_chromium(store, tmp_path):
    """Headless Chromium: the bundled starter GLB draws in gr.Model3D (its canvas is not one flat colour); a short
    lift replaces it and offers the GLB for download. ``UPDATE_SCREENSHOTS=1`` copies the screenshot to
    ``apps/screenshots/landmark3d.png``."""
    import os
    import shutil
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from apps.common.launch import launch_kwargs
    from apps.common.settings import Settings
    from apps.landmark3d.app import create_demo
    from apps.landmark3d.inference import STARTER_MESH

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists() or not STARTER_MESH.is_file():
        pytest.skip("needs Debian's chromium and the starter mesh (apps/starter/build.py)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from apps.common.models import ModelStore

    settings = Settings(models=dict(store.settings.models), port=free_port())
    demo = create_demo(ModelStore(settings))
    demo.queue(default_concurrency_limit=1, max_size=8)
    demo.launch(**launch_kwargs(settings), prevent_thread_lock=True, quiet=True)
    args = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader"]  # fmt: skip
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=args)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://{settings.host}:{settings.port}/", wait_until="networkidle")
            canvas = page.locator("#landmark3d-model canvas").first
            canvas.wait_for()
            page.wait_for_timeout(5000)  # babylon.js loads the GLB and draws (software WebGL is slow)
            shot = tmp_path / "model3d.png"
            canvas.screenshot(path=str(shot))
            pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
            assert pixels.std(axis=(0, 1)).max() > 5  # something drawn on the clear colour
            page.screenshot(path=str(tmp_path / "landmark3d.png"))
            if os.environ.get("UPDATE_SCREENSHOTS") == "1":
                target = Path(__file__).resolve().parents[2] / "apps" / "screenshots" / "landmark3d.png"
                shutil.copy(tmp_path / "landmark3d.png", target)
            page.get_by_role("slider", name="lift steps (~0.3 s each)").fill("10")
            page.get_by_role("button", name="Lift", exact=True).click()
            page.locator("#landmark3d-status", has_text="Done").wait_for()
            page.locator("#landmark3d-download a").first.wait_for()  # the file link renders a moment after "Done"
            assert page.locator("#landmark3d-download a").count() >= 1
            browser.close()
    finally:
        demo.close()
