"""The geolocation page as a visitor sees it (issue 17): for each geolocator, seconds from clicking Locate until the
summary, table and world map show, against the model's own time; the page's longest main-thread block after the
answer; the two maps' payload.

    python bench/bench_geolocate_page.py --output_json bench/results/geolocate_page.json

Serves the hub on the starter models (as ``bash scripts/demo.sh`` does), uploads the first starter example photo in
headless Chromium (Debian's ``/usr/bin/chromium``, driven by playwright), default options. Model time: ``geolocate()``
in the server's process after a warm-up. Longest block: a 100 ms interval timer in the page, from before Locate until
1.5 s after the answer drew. Payload: ``fig.to_json()`` of both maps.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """() => { window.__gaps = [0]; let last = performance.now();
    setInterval(() => { const now = performance.now(); window.__gaps.push(now - last); last = now; }, 100); }"""
SHOWN = """(label) => { const t = document.querySelector('#geolocate-globe .js-plotly-plot')?.data
    ?.find(t => t.name === 'candidates'); return t && String(t.text?.[0] ?? '').includes(label); }"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--example", type=int, default=0, help="row of apps/starter/examples/examples.csv")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--output_json", default="bench/results/geolocate_page.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import pandas as pd
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from apps.common.launch import launch_kwargs, prepare
    from apps.common.models import ModelStore
    from apps.common.settings import STARTER_DIR, Settings
    from apps.geolocate.inference import GEOLOCATORS, SCORE_LABELS, GeolocateOptions, geolocate
    from apps.hub.app import create_demo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(port=port)
    store = ModelStore(settings)
    demo, _ = prepare(create_demo, settings, store)
    demo.launch(**launch_kwargs(settings), prevent_thread_lock=True, quiet=True)
    meta = pd.read_csv(STARTER_DIR / "examples" / "examples.csv")
    photo = STARTER_DIR / "examples" / meta.file_name[args.example]
    image = Image.open(photo).convert("RGB")
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.locator("input[type=file]").first.set_input_files(str(photo))
            page.wait_for_timeout(1500)
            for name in GEOLOCATORS:
                geolocate(store, image, name, GeolocateOptions())  # warm-up
                start = time.perf_counter()
                maps, _, _ = geolocate(store, image, name, GeolocateOptions())
                model_s = time.perf_counter() - start
                page.get_by_label("Geolocator").click()
                page.get_by_role("option", name=name, exact=True).click()
                page.evaluate(PROBE)
                start = time.perf_counter()
                page.get_by_role("button", name="Locate", exact=True).click()
                page.locator("#geolocate-summary", has_text=f"({name})").wait_for()
                page.wait_for_function(SHOWN, arg=SCORE_LABELS[name])
                shown_s = time.perf_counter() - start
                page.wait_for_timeout(1500)
                rows.append({
                    "geolocator": name, "model_s": round(model_s, 3), "shown_s": round(shown_s, 3),
                    "beyond_model_s": round(shown_s - model_s, 3),
                    "longest_block_ms": round(page.evaluate("() => Math.max(...window.__gaps)")),
                    "world_kb": round(len(maps["world"].to_json()) / 1e3, 1),
                    "region_kb": round(len(maps["region"].to_json()) / 1e3, 1),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            browser.close()
    finally:
        demo.close()
    result = {"photo": str(photo.relative_to(REPO)), "rows": rows}
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
