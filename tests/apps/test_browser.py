"""Headless Chromium against the hub: upload a photo, see the globe with coastlines and candidates; bad uploads give
a message and the server keeps serving. Skipped without Debian's chromium or the playwright package.

``UPDATE_SCREENSHOTS=1`` also copies the screenshot to ``apps/screenshots/geolocate.png`` (apps/README.md's image).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
EXAMPLES = Path(__file__).resolve().parents[2] / "apps" / "geolocate" / "examples"
SCREENSHOT = Path(__file__).resolve().parents[2] / "apps" / "screenshots" / "geolocate.png"
GLOBE = "#geolocate-globe .js-plotly-plot"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@pytest.fixture(scope="module")
def page(hub_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1150})
        page.set_default_timeout(120_000)  # a loaded 2-core machine renders WebGL slowly
        page.goto(hub_url, wait_until="networkidle")
        yield page
        browser.close()


def upload_and_locate(page, path: Path) -> None:
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.wait_for_timeout(1000)  # the upload finishes
    page.get_by_role("button", name="Locate", exact=True).click()


PROBE = """() => { window.__gaps = [0]; let last = performance.now();
    setInterval(() => { const now = performance.now(); window.__gaps.push(now - last); last = now; }, 100); }"""


def plotted(page) -> dict:
    """Points per trace of the globe as plotly.js holds them (decoded arrays)."""
    return page.evaluate(
        f"""() => {{ const g = document.querySelector('{GLOBE}');
        return g && g._fullData ? Object.fromEntries(g._fullData.map(t => [t.name || t.type, t.x ? t.x.length : 0]))
                                : {{}}; }}"""
    )


def test_upload_shows_globe_with_coastlines_and_candidates(page, tmp_path):
    page.get_by_label("Geolocator").click()  # the sphere flow: candidates, sample cloud and density heatmap
    page.get_by_role("option", name="Sphere flow", exact=True).click()
    page.evaluate(PROBE)  # the main thread's longest gap from here on (a 100 ms interval timer)
    upload_and_locate(page, EXAMPLES / "paris.jpg")  # a procedural photo with EXIF GPS
    page.wait_for_function(f"() => document.querySelector('{GLOBE}')?.data?.some(t => t.name === 'samples')")
    page.locator("#geolocate-table", has_text="km from photo GPS").wait_for()  # the candidates table
    page.wait_for_timeout(1500)  # drawing done: the probe sees any block that followed the response
    longest_gap_ms = page.evaluate("() => Math.max(...window.__gaps)")
    traces = plotted(page)
    assert traces["coastlines"] > 2000 and 1 <= traces["candidates"] <= 5 and traces["samples"] == 32
    assert traces["best guess"] == 1  # drawn on its own trace with one marker size (issue 17: none drew before)
    assert traces["photo GPS"] == 1 and page.locator("#geolocate-region .js-plotly-plot").count() == 1
    assert page.evaluate(f"() => document.querySelector('{GLOBE}')._fullData[0].showscale")  # density heatmap
    # the 3-D globe blocked the main thread ~21 s after each answer (issue 17); the 2-D maps ~0.8 s here (the goal is
    # < 1 s; 2 s keeps this test steady on a loaded CI machine)
    assert longest_gap_ms < 2000, f"the page's main thread was blocked {longest_gap_ms:.0f} ms"
    assert "Photo GPS" in page.locator("#geolocate-summary").inner_text()
    shot = tmp_path / "geolocate.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)


def test_bad_uploads_show_a_message_and_server_keeps_serving(page, bad_files, tmp_path):
    for kind, message in [("not_image", "not an image"), ("huge", "too large")]:
        upload_and_locate(page, bad_files[kind])
        page.locator(".toast-body", has_text=message).first.wait_for()
        page.screenshot(path=str(tmp_path / f"{kind}.png"))
        for close in page.locator(".toast-close").all():
            close.click()
    upload_and_locate(page, EXAMPLES / "tokyo.jpg")  # a good request afterwards works (a new answer: Tokyo's GPS)
    page.locator("#geolocate-summary", has_text="35.676").wait_for()


def test_time_from_locate_to_the_visible_answer(page, store, capsys):
    """For every geolocator: seconds from clicking Locate until its summary, table and world map show, against the
    model's own time for the same request (``geolocate`` in this process). Issue 17's goal is <= 2 s beyond the model;
    the test allows 4 s on a loaded CI machine and prints the figures."""
    import time

    from PIL import Image

    from apps.geolocate.inference import GEOLOCATORS, SCORE_LABELS, GeolocateOptions, geolocate

    image = Image.open(EXAMPLES / "tokyo.jpg").convert("RGB")  # the photo the page holds after the previous test
    rows = []
    for name in GEOLOCATORS:
        start = time.perf_counter()
        geolocate(store, image, name, GeolocateOptions(), true_latlon=(35.6762, 139.6503))
        model_s = time.perf_counter() - start
        page.get_by_label("Geolocator").click()
        page.get_by_role("option", name=name, exact=True).click()
        start = time.perf_counter()
        page.get_by_role("button", name="Locate", exact=True).click()
        page.locator("#geolocate-summary", has_text=f"({name})").wait_for()
        page.wait_for_function(
            """(label) => { const t = document.querySelector('#geolocate-globe .js-plotly-plot')?.data
                ?.find(t => t.name === 'candidates'); return t && String(t.text?.[0] ?? '').includes(label); }""",
            arg=SCORE_LABELS[name],
        )
        page.locator("#geolocate-table", has_text="km from photo GPS").wait_for()
        shown_s = time.perf_counter() - start
        rows.append((name, model_s, shown_s))
    with capsys.disabled():
        for name, model_s, shown_s in rows:
            print(f"\n[browser timing] {name}: model {model_s:.2f} s, Locate -> visible {shown_s:.2f} s "
                  f"(+{shown_s - model_s:.2f} s)")  # fmt: skip
    assert all(shown_s - model_s <= 4.0 for _, model_s, shown_s in rows), rows
