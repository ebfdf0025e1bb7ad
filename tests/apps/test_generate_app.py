"""The generation app over HTTP with a tiny GPS-to-image pipeline: the ``generate`` endpoint with gradio_client, bad
input as messages (server alive), and headless Chromium clicking the map and getting an image (skipped without Debian's
chromium or the playwright package). ``UPDATE_SCREENSHOTS=1`` copies the screenshot to
``apps/screenshots/generate.png``."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "apps" / "screenshots" / "generate.png"
EMPIRE_STATE = (40.7484, -73.9857)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def generate_url(tmp_path_factory):
    """The generation app alone, with the tiny pipeline (area lat 40.70-40.88, lon -74.02 - -73.91)."""
    from apps.common.launch import launch_kwargs
    from apps.common.models import ModelStore
    from apps.common.settings import Settings
    from apps.generate.app import create_demo
    from geo_models.testing import tiny_gps_to_image_pipeline

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("gps_to_image") / "tiny"
    tiny_gps_to_image_pipeline().save_pretrained(path)
    settings = Settings(models={"gps_to_image": str(path)}, port=free_port())
    demo = create_demo(ModelStore(settings))
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue)
    demo.launch(**launch_kwargs(settings), prevent_thread_lock=True, quiet=True)
    yield f"http://{settings.host}:{settings.port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(generate_url):
    from gradio_client import Client

    return Client(generate_url, verbose=False)


def test_generate_endpoint(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = [p["parameter_name"] for p in endpoints["/generate"]["parameters"]]
    assert params == ["prompt", "latitude", "longitude", "text_guidance_scale", "gps_guidance_scale", "steps", "seed",
                      "mode", "radius_km", "num_samples"]  # fmt: skip
    path = client.predict(prompt="a street", latitude=EMPIRE_STATE[0], longitude=EMPIRE_STATE[1], steps=2, seed=1,
                          api_name="/generate")  # fmt: skip
    image = np.asarray(Image.open(path))
    assert image.shape == (32, 32, 3)
    again = client.predict("a street", *EMPIRE_STATE, 3.5, 7.5, 2, 1, api_name="/generate")
    assert np.array_equal(np.asarray(Image.open(again)), image)  # seeded
    area = dict(mode="average over area", radius_km=1.0, num_samples=10)
    avg = client.predict(prompt="a street", latitude=40.78, longitude=-73.97, steps=2, **area, api_name="/generate")
    assert np.asarray(Image.open(avg)).shape == (32, 32, 3)


def test_bad_input_is_a_message_and_the_server_keeps_serving(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"latitude must be in \[-90, 90\]"):
        client.predict("a street", 1000, -73.98, api_name="/generate")
    with pytest.raises(AppError, match="type a prompt"):
        client.predict("", *EMPIRE_STATE, api_name="/generate")
    with pytest.raises(AppError):  # beyond the slider: gradio's own bound check
        client.predict("a street", *EMPIRE_STATE, 3.5, 7.5, 500, api_name="/generate")
    assert Image.open(client.predict("a street", *EMPIRE_STATE, 3.5, 7.5, 1, api_name="/generate")).size == (32, 32)


@pytest.fixture(scope="module")
def page(generate_url):
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(generate_url, wait_until="networkidle")
        yield page
        browser.close()


def click_map_at(page, lat: float, lon: float) -> None:
    """Click the map image where ``(lat, lon)`` is drawn (natural pixels -> screen, as gradio maps them back)."""
    from apps.generate.inference import area_view

    x, y = area_view((40.70, 40.88, -74.02, -73.91)).to_pixel(lat, lon)
    img = page.locator("#generate-map img").first
    img.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('#generate-map img')?.naturalWidth > 0")
    sx, sy = page.evaluate(
        """([px, py]) => { const img = document.querySelector('#generate-map img');
        const r = img.getBoundingClientRect();
        const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
        const ox = (r.width - img.naturalWidth * s) / 2, oy = (r.height - img.naturalHeight * s) / 2;
        return [r.left + ox + (px + 0.5) * s, r.top + oy + (py + 0.5) * s]; }""",
        [float(x), float(y)],
    )
    page.mouse.click(sx, sy)


def number_value(page, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input").first.input_value())


def test_click_the_map_and_generate(page, tmp_path):
    first_map = page.locator("#generate-map img").first.get_attribute("src")
    click_map_at(page, *EMPIRE_STATE)
    page.wait_for_function(
        "(lat) => Math.abs(parseFloat(document.querySelector('#generate-lat input').value) - lat) < 0.002",
        arg=EMPIRE_STATE[0],
    )
    assert number_value(page, "generate-lon") == pytest.approx(EMPIRE_STATE[1], abs=0.002)
    page.wait_for_function(  # the marker moved: a new map image
        "(src) => document.querySelector('#generate-map img')?.getAttribute('src') !== src", arg=first_map
    )
    page.get_by_label("Prompt").fill("a street with tall buildings")
    page.get_by_label("average over area").check()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#generate-output img").first.wait_for()
    page.locator("#generate-info", has_text="Average image").wait_for()
    size = page.evaluate("() => document.querySelector('#generate-output img').naturalWidth")
    assert size >= 256  # 32 px upscaled for display
    shot = tmp_path / "generate.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_bad_input_in_the_browser_is_a_message(page, tmp_path):
    page.get_by_label("Prompt").fill("a street")
    lat = page.locator("#generate-lat input").first
    lat.fill("1000")
    lat.press("Enter")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#generate-status", has_text="latitude must be in").wait_for()  # inline, no toast over the controls
    assert page.locator(".toast-body").count() == 0
    page.screenshot(path=str(tmp_path / "bad_latitude.png"))
    click_map_at(page, 40.80, -73.95)  # a click fixes it; generation works again
    page.wait_for_function("() => parseFloat(document.querySelector('#generate-lat input').value) < 41")
    page.get_by_label("single point").check()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#generate-info", has_text="Generated at 40.8").wait_for()


def test_a_new_point_clears_the_stale_image_and_warns_about_the_area(page):
    """After a map click the previous image goes (it was left looking like the new point's, issue 17) and an
    averaging area reaching beyond the training area is a warning on the page, not only in the server log."""
    page.get_by_label("single point").check()
    click_map_at(page, *EMPIRE_STATE)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#generate-info", has_text="Generated at").wait_for()
    page.locator("#generate-output img").first.wait_for()
    click_map_at(page, 40.80, -73.95)
    page.locator("#generate-info", has_text="press Generate").wait_for()
    page.wait_for_function("() => !document.querySelector('#generate-output img')")
    page.get_by_label("average over area").check()
    click_map_at(page, 40.86, -73.92)  # near the area's east edge: the default 2 km half-side reaches beyond it
    page.locator("#generate-note", has_text="reaches beyond the model's training area").wait_for()
