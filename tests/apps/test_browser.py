"""Headless Chromium against the hub: upload a photo, see the maps with coastlines, candidates and the best guess
(read back from plotly and checked in the pixels); bad uploads are reported at once, inline, and never wipe the last
answer; one progress indicator with stages; every control has an accessible name; a 400 px phone and dark mode work.
Skipped without Debian's chromium or the playwright package.

``UPDATE_SCREENSHOTS=1`` also copies the screenshots to ``apps/screenshots/geolocate*.png`` (apps/README.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
EXAMPLES = Path(__file__).resolve().parents[2] / "apps" / "geolocate" / "examples"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "apps" / "screenshots"
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
    page.wait_for_timeout(500)  # the upload finishes and is checked
    page.locator("#geolocate-status", has_text="Photo ready").wait_for()
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
    keep_screenshot(page, tmp_path, "geolocate.png")  # the world view
    keep_screenshot(page.locator("#geolocate-region"), tmp_path, "geolocate_region.png")  # the regional view


def keep_screenshot(target, tmp_path, name: str, **kwargs) -> Path:
    """A screenshot of a page or element; with ``UPDATE_SCREENSHOTS=1`` also apps/screenshots/NAME (apps/README.md)."""
    shot = tmp_path / name
    target.screenshot(path=str(shot), **kwargs)
    assert shot.stat().st_size > 5_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / name)
    return shot


def test_best_guess_and_candidates_are_drawn(page):
    """The figure's traces have scalar, visible marker sizes (a per-point size list drew nothing, issue 17), and the
    pixels at the best guess's position on screen are its dark-red star."""
    import io

    import numpy as np
    from PIL import Image

    from apps.common.worldmap import COLORS

    markers = page.evaluate(
        f"""() => Object.fromEntries(document.querySelector('{GLOBE}')._fullData.filter(t => t.mode === 'markers')
            .map(t => [t.name, [t.marker.size, t.visible, t.marker.opacity ?? 1]]))"""
    )
    assert markers["best guess"] == [15, True, 1] and markers["candidates"] == [9, True, 1]
    x, y = page.evaluate(
        f"""() => {{ const g = document.querySelector('{GLOBE}'), L = g._fullLayout;
        const t = g._fullData.find(t => t.name === 'best guess'), r = g.getBoundingClientRect();
        return [r.left + L.xaxis._offset + L.xaxis.l2p(t.x[0]), r.top + L.yaxis._offset + L.yaxis.l2p(t.y[0])]; }}"""
    )
    png = page.screenshot(clip={"x": x - 2, "y": y - 2, "width": 5, "height": 5})
    pixels = [tuple(p) for p in np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).tolist()]
    want = tuple(int(COLORS["best"][i : i + 2], 16) for i in (1, 3, 5))
    assert any(sum(abs(a - b) for a, b in zip(p, want)) < 60 for p in pixels), (pixels, want)


def test_bad_uploads_are_reported_at_once_and_keep_the_last_answer(page, bad_files):
    """A bad upload is reported inline as soon as it arrives (before Locate); Locate then says so in the status line
    and the previous answer stays on screen, with no "Error" label over it and no toast over the controls."""
    before = page.locator("#geolocate-summary").inner_text()
    assert "Best guess" in before
    for kind, message in [("not_image", "not an image"), ("huge", "too large")]:
        page.locator("input[type=file]").first.set_input_files(str(bad_files[kind]))
        page.locator("#geolocate-status", has_text=message).wait_for()  # on upload, no click
        page.get_by_role("button", name="Locate", exact=True).click()
        page.locator("#geolocate-status", has_text="Error").wait_for()
        page.wait_for_timeout(300)
        assert page.locator("#geolocate-summary").inner_text() == before  # the last good answer is kept
        assert page.locator(".toast-body").count() == 0
    upload_and_locate(page, EXAMPLES / "tokyo.jpg")  # a good request afterwards works (a new answer: Tokyo's GPS)
    page.locator("#geolocate-summary", has_text="35.676").wait_for()
    assert "Error" not in page.locator("#geolocate-status").inner_text()


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


PROGRESS_WATCH = """() => { window.__progress = [];
    new MutationObserver(() => document.querySelectorAll('.progress-level, .progress-text, .eta-bar').forEach(e => {
        const where = e.closest('[id]')?.id || '?', text = e.innerText.trim();
        if (!window.__progress.some(p => p[0] === where && p[1] === text)) window.__progress.push([where, text]); }))
    .observe(document.body, {subtree: true, childList: true, characterData: true}); }"""


def test_one_progress_indicator_with_stages(page):
    """Locate shows progress in the status line only (it was drawn over each of four outputs, stuck at 10%), with
    the stages as they happen: the model, merging and naming the places, drawing the maps."""
    page.evaluate(PROGRESS_WATCH)
    page.get_by_label("Geolocator").click()
    page.get_by_role("option", name="LocDiff", exact=True).click()
    page.get_by_role("button", name="Locate", exact=True).click()
    page.locator("#geolocate-summary", has_text="(LocDiff)").wait_for()
    seen = page.evaluate("() => window.__progress")
    assert seen and {where for where, _ in seen} == {"geolocate-status"}, seen
    texts = " ".join(text for _, text in seen)
    assert "Running LocDiff" in texts or "Merging nearby guesses" in texts or "Drawing the maps" in texts, seen


AX_ROLES = {"button", "textbox", "combobox", "slider", "spinbutton", "checkbox", "radio", "link", "listbox", "tab",
            "menuitem", "searchbox", "switch", "option"}  # fmt: skip


def unnamed_controls(page) -> list[str]:
    """Controls in Chromium's accessibility tree (what a screen reader gets) without an accessible name."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
        bad = [n for n in nodes if not n.get("ignored") and n.get("role", {}).get("value") in AX_ROLES
               and not (n.get("name") or {}).get("value", "").strip()]  # fmt: skip
        return [cdp.send("DOM.getOuterHTML", {"backendNodeId": n["backendDOMNodeId"]})["outerHTML"][:160] for n in bad]
    finally:
        cdp.detach()


def test_every_control_has_an_accessible_name(page):
    """Every button, input, slider, tab and example of each tab of the hub has a name (issue 17: the example photos and
    the generation map had none)."""
    accordions = ["Which geolocator?", "Options"]
    for name in accordions:  # open: the options' sliders are in the tree only then
        page.get_by_text(name, exact=True).first.click()
    found = {}
    for hub_tab, inner_tab in [("Geolocate a photo", "Photo"), ("Geolocate a photo", "Text query (GeoCLIP)"),
                               ("Generate from a map", None), ("A landmark in 3D", None)]:  # fmt: skip
        page.get_by_role("tab", name=hub_tab, exact=True).click()
        if inner_tab:
            page.get_by_role("tab", name=inner_tab, exact=True).click()
        page.wait_for_timeout(500)
        found[(hub_tab, inner_tab)] = unnamed_controls(page)
    page.get_by_role("tab", name="Geolocate a photo", exact=True).click()
    page.get_by_role("tab", name="Photo", exact=True).click()
    for name in accordions:
        page.get_by_text(name, exact=True).first.click()
    assert not any(found.values()), found


def locate_on_a_new_page(page, hub_url, path: Path, **context):
    """A fresh page (viewport, colour scheme) in the same browser with an answer for ``path`` on it."""
    other = page.context.browser.new_page(**context)
    other.set_default_timeout(120_000)
    other.goto(hub_url, wait_until="networkidle")
    upload_and_locate(other, path)
    other.locator("#geolocate-table", has_text="km from photo GPS").wait_for()
    other.wait_for_function(f"() => document.querySelector('{GLOBE}')?.data?.some(t => t.name === 'best guess')")
    other.wait_for_timeout(500)
    return other


def test_a_400_px_phone_shows_everything_without_sideways_scrolling(page, hub_url, tmp_path):
    phone = locate_on_a_new_page(page, hub_url, EXAMPLES / "cairo.jpg", viewport={"width": 400, "height": 900})
    try:
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= 400  # no sideways page scrolling
        too_wide = phone.evaluate(
            """() => [...document.querySelectorAll('#geolocate-table *')].filter(e => e.clientWidth > 0
                && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 2)
                .map(e => [e.className, e.scrollWidth, e.clientWidth])"""
        )
        assert not too_wide, f"the candidates table scrolls sideways: {too_wide}"
        for plot in ("#geolocate-globe", "#geolocate-region"):  # the maps fit the screen
            box = phone.locator(f"{plot} .main-svg").first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 400, (plot, box)
        keep_screenshot(phone, tmp_path, "geolocate_mobile.png", full_page=True)
    finally:
        phone.close()


def test_dark_mode_maps_take_the_page_background(page, hub_url, tmp_path):
    """In dark mode the map panels are dark like the page (the globe's panel stayed white, issue 17); the map itself
    keeps its light sea so the markers read."""
    import io

    from PIL import Image

    dark = locate_on_a_new_page(page, hub_url, EXAMPLES / "rio.jpg", viewport={"width": 1280, "height": 1150},
                                color_scheme="dark")  # fmt: skip
    try:
        assert dark.evaluate("() => document.body.classList.contains('dark')")
        box = dark.locator("#geolocate-globe .main-svg").first.bounding_box()  # the paper's top-left corner
        png = dark.screenshot(clip={"x": box["x"] + 2, "y": box["y"] + 2, "width": 4, "height": 4})
        r, g, b = Image.open(io.BytesIO(png)).convert("RGB").getpixel((1, 1))
        assert 0.299 * r + 0.587 * g + 0.114 * b < 80, (r, g, b)
        keep_screenshot(dark, tmp_path, "geolocate_dark.png", full_page=True)
    finally:
        dark.close()


def test_compare_mode_draws_every_geolocators_region_and_best_guess(page):
    """One click runs all geolocators on the photo; the map has each one's 90% region outline and best guess, the
    table one row each (issue 18)."""
    from apps.geolocate.inference import GEOLOCATORS

    page.get_by_role("button", name="Compare all geolocators", exact=True).click()
    page.locator("#geolocate-compare-table", has_text="Sphere flow").wait_for()
    page.wait_for_function("() => document.querySelector('#geolocate-compare .js-plotly-plot')?.data?.length > 8")
    names = page.evaluate("() => document.querySelector('#geolocate-compare .js-plotly-plot').data.map(t => t.name)")
    for name in GEOLOCATORS:
        assert f"{name}: 90% region" in names and f"{name}: best guess" in names, names
    assert "Error" not in page.locator("#geolocate-status").inner_text()
