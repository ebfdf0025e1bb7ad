"""Where was this photo taken? Upload a photo, pick a geolocator (GeoCLIP, LocDiff, LocDiff-H, sphere flow) and see
its candidates on a globe; or ask GeoCLIP where a text belongs.

``python apps/geolocate/app.py --port 7860`` (``--help`` for the model flags). API endpoints: ``geolocate`` (image
-> JSON candidates) and ``text_query`` (text -> JSON candidates).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script (`python apps/geolocate/app.py`) from any directory
    sys.path.insert(0, str(_ROOT))

import gradio as gr  # noqa: E402

from apps.common.limits import check_text, load_photo  # noqa: E402
from apps.common.models import ModelStore  # noqa: E402
from apps.common.settings import STARTER_DIR  # noqa: E402
from apps.common.ui import (  # noqa: E402
    STARTER_NOTE,
    RejectedUpload,
    checked_image,
    error_markdown,
    inline_errors,
    user_errors,
)
from apps.common.wording import format_latlon, low_information_note  # noqa: E402
from apps.common.worldmap import map_figure  # noqa: E402
from apps.geolocate.compare import compare  # noqa: E402
from apps.geolocate.inference import (  # noqa: E402
    GEOLOCATORS,
    HEAT_RESOLUTIONS,
    MAX_SAMPLE_STEPS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TOP_K,
    TEXT_RESOLUTION_DEG,
    GeolocateOptions,
    geolocate,
    text_query,
    unavailable,
)

TITLE = "Where was this photo taken?"
GUIDE = """**Which geolocator?**
- **GeoCLIP** (fastest, ~0.2 s): compares the photo with a gallery of places it learned; its scores are
  probabilities over those places. Pick it for a quick answer.
- **LocDiff**: a diffusion model that draws many guesses (the orange samples); a place's score is the share of those
  guesses nearest to it. Pick it to see how spread out the plausible regions are.
- **LocDiff-H**: LocDiff's guesses refined by GeoCLIP within 200 km of them: the regions of LocDiff, the precision of
  GeoCLIP. Pick it for a precise place.
- **Sphere flow** (slowest, a few seconds): a flow model with a full probability map over the globe (the heatmap);
  its score is a log-density: higher is likelier, and +2.3 means ten times as likely per square kilometre. Pick it
  to see the model's uncertainty.

Nearby guesses (within 25 km) are merged into one place, with their combined score."""


def _caption(text: str) -> str:
    """``"a photo of the dome near Chicago, United States"`` -> ``"The dome near Chicago, United States"``."""
    for prefix in ("a photo of ", "a photo taken in "):
        text = text.removeprefix(prefix)
    return text[:1].upper() + text[1:]


def example_sets() -> list[tuple[str, list[str], list[str]]]:
    """``(title, photo paths, captions)`` of each set of example photos: the starter models' held-out photos
    (``apps/starter/examples``, captioned from their ``examples.csv``) and the named places of
    ``geolocate/examples`` (procedural photos of famous places, ``make_examples.py``)."""
    import csv

    from apps.geolocate.make_examples import CAPTIONS, EXAMPLES_DIR

    sets = []
    starter = STARTER_DIR / "examples"
    if (starter / "examples.csv").is_file():
        with open(starter / "examples.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if (starter / r["file_name"]).is_file()]
        if rows:
            paths, captions = [str(starter / r["file_name"]) for r in rows], [_caption(r["text"]) for r in rows]
            sets.append(("Held-out photos of the starter models (procedural, with EXIF GPS)", paths, captions))
    named = [(EXAMPLES_DIR / f"{name}.jpg", caption) for name, caption in CAPTIONS.items()]
    named = [(str(path), caption) for path, caption in named if path.is_file()]
    if named:
        sets.append(("Named places (procedural photos, with EXIF GPS)", *map(list, zip(*named))))
    return sets


def load_upload(store: ModelStore, path):
    """The uploaded photo (or a ``RejectedUpload``'s reason as a ``ValueError``) -> ``(image, EXIF GPS, note)``."""
    if isinstance(path, RejectedUpload):
        path.raise_error()
    if not path:
        raise ValueError("upload a photo (or pick an example) first")
    s = store.settings
    return load_photo(path, max_megapixels=s.max_megapixels, max_file_mb=s.max_file_mb)


def locate_file(store: ModelStore, path, geolocator: str, options: GeolocateOptions, on_stage=None):
    """Check and load an uploaded photo (EXIF GPS = true location) and geolocate it -> (maps, table, result)."""
    image, gps, note = load_upload(store, path)
    maps, table, result = geolocate(store, image, geolocator, options, true_latlon=gps, on_stage=on_stage)
    if note:
        result["exif_note"] = note
    warning = low_information_note(image)
    if warning:
        result["warnings"] = [warning]
    return maps, table, result


def upload_markdown(store: ModelStore, path) -> str:
    """What the page says as soon as a photo is uploaded: its size and EXIF GPS, or why it cannot be used, and a
    warning for a photo with too little in it (before anyone presses Locate)."""
    if path is None:
        return ""
    if isinstance(path, RejectedUpload):
        return error_markdown(f"this upload cannot be used: {path.reason}")
    s = store.settings
    image, gps, note = load_photo(path, max_megapixels=s.max_megapixels, max_file_mb=s.max_file_mb)
    where = f"EXIF GPS {format_latlon(*gps)} (the true location)" if gps is not None else "no GPS in its EXIF"
    lines = [f"Photo ready: {image.width} x {image.height} px, {where}. Pick a geolocator and press **Locate**."]
    if note:
        lines.append(note)
    if warning := low_information_note(image):
        lines.append(f"**Warning**: {warning}")
    return "\n\n".join(lines)


def summary_markdown(result: dict) -> str:
    where = f"{format_latlon(result['latitude'], result['longitude'])} ({result['place']})"
    lines = [f"**Warning**: {w}" for w in result.get("warnings", [])]
    lines.append(f"**Best guess** ({result['geolocator']}): {where}")
    if result.get("true_location"):
        t = result["true_location"]
        true = format_latlon(t["latitude"], t["longitude"])
        lines.append(f"**Photo GPS** (EXIF): {true}; error **{result['error_km']:,.0f} km**")
    else:
        lines.append("No GPS in the photo's EXIF: no distance to the true location.")
    if result.get("exif_note"):
        lines.append(result["exif_note"])
    if result.get("score"):
        lines.append(f"Score: {result['score']}.")
    lines.append("Guesses within 25 km of each other are merged into one place.")
    return "\n\n".join(lines)


def fitted_table(table) -> gr.Dataframe:
    """The candidates table with column widths in percent, so it fits a 400 px phone without sideways scrolling
    (left to itself the table sizes a column to its longest place name)."""
    shares = {"rank": 9, "place": 33, "coordinates": 27, "km from photo GPS": 14}
    widths = [shares.get(str(c), 17) for c in table.columns]
    return gr.Dataframe(table, column_widths=[f"{100 * w / sum(widths):.0f}%" for w in widths])


def geolocator_choices(store: ModelStore) -> tuple[list[tuple[str, str]], str | None, str]:
    """Dropdown choices (unavailable ones labelled), the default value and a status message."""
    choices, messages, default = [], [], None
    for name in GEOLOCATORS:
        reason = unavailable(store, name)
        choices.append((f"{name} (unavailable)" if reason else name, name))
        if reason:
            messages.append(f"- **{name}** disabled: {reason}")
        elif default is None:
            default = name
    return choices, default, "\n".join(messages)


def create_demo(store: ModelStore) -> gr.Blocks:
    """The geolocation tab (also the whole Space); ``store`` provides the models."""
    choices, default, disabled_note = geolocator_choices(store)

    def options(top_k, num_samples, steps, resolution, seed) -> GeolocateOptions:
        return GeolocateOptions(top_k, num_samples, steps, resolution, 0 if seed is None else seed).checked()

    @inline_errors(num_outputs=6)
    def locate_ui(path, geolocator, top_k, num_samples, steps, resolution, seed, progress=gr.Progress()):  # noqa: B008
        progress(0.02, desc="Checking the photo")
        opts = options(top_k, num_samples, steps, resolution, seed)
        stage = lambda fraction, description: progress(fraction, desc=description)  # noqa: E731
        maps, table, result = locate_file(store, path, geolocator, opts, on_stage=stage)
        return "", summary_markdown(result), fitted_table(table), maps["world"], maps["region"], result

    def compare_file(path, top_k, num_samples, steps, resolution, seed, on_stage=None):
        image, gps, _ = load_upload(store, path)
        return compare(store, image, options(top_k, num_samples, steps, resolution, seed), true_latlon=gps,
                       on_stage=on_stage)  # fmt: skip

    @inline_errors(num_outputs=4)
    def compare_ui(path, top_k, num_samples, steps, resolution, seed, progress=gr.Progress()):  # noqa: B008
        stage = lambda fraction, description: progress(fraction, desc=description)  # noqa: E731
        fig, table, result = compare_file(path, top_k, num_samples, steps, resolution, seed, on_stage=stage)
        return "", fig, table, result

    @user_errors
    def compare_api(path, top_k, num_samples, steps, resolution, seed):
        return compare_file(path, top_k, num_samples, steps, resolution, seed)[2]

    @inline_errors(num_outputs=1)
    def upload_ui(path):
        return upload_markdown(store, path)

    @user_errors
    def locate_api(path, geolocator, top_k, num_samples, steps, resolution, seed):
        return locate_file(store, path, geolocator, options(top_k, num_samples, steps, resolution, seed))[2]

    @inline_errors(num_outputs=4)
    def text_ui(text, resolution, top_k):
        fig, table, result = text_query(store, check_text(text), resolution_deg=resolution, top_k=top_k)
        return "", fig, fitted_table(table), result

    @user_errors
    def text_api(text, resolution, top_k):
        return text_query(store, check_text(text), resolution_deg=resolution, top_k=top_k)[2]

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"## {TITLE}\nUpload a photo (its EXIF GPS, if any, is the true location); pick a geolocator.")
        if store.uses_starter():
            gr.Markdown(f"*{STARTER_NOTE}*")
        if disabled_note:
            gr.Markdown(disabled_note)
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column(scale=2):
                    s = store.settings
                    image = checked_image(label="Photo", sources=["upload", "clipboard"], height=280,
                                         max_megapixels=s.max_megapixels, max_file_mb=s.max_file_mb)  # fmt: skip
                    for title, paths, captions in example_sets():
                        gr.Examples(paths, inputs=[image], label=title, example_labels=captions)
                    geolocator = gr.Dropdown(choices, value=default, label="Geolocator")
                    with gr.Accordion("Which geolocator?", open=False):
                        gr.Markdown(GUIDE, elem_id="geolocate-guide")
                    with gr.Accordion("Options", open=False):
                        top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="candidates (top-k)")
                        num_samples = gr.Slider(4, MAX_SAMPLES, value=32, step=1,
                                                label="samples (LocDiff, sphere flow)")  # fmt: skip
                        steps = gr.Slider(4, MAX_STEPS, value=32, step=1,
                                          label=f"denoising / flow steps (samples x steps <= {MAX_SAMPLE_STEPS})")
                        resolution = gr.Dropdown(HEAT_RESOLUTIONS, value=2, label="sphere flow: density map cells "
                                                 "(degrees)")  # fmt: skip
                        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="seed")
                    locate = gr.Button("Locate", variant="primary")
                    compare_all = gr.Button("Compare all geolocators", variant="secondary")
                with gr.Column(scale=3):
                    status = gr.Markdown(elem_id="geolocate-status")  # progress, upload checks and errors
                    summary = gr.Markdown(elem_id="geolocate-summary")
                    table = gr.Dataframe(headers=["rank", "place", "coordinates", "score"], label="Candidates",
                                         wrap=True, elem_id="geolocate-table")  # fmt: skip
                    plot = gr.Plot(map_figure(), label="World", elem_id="geolocate-globe")
                    region = gr.Plot(label="Region (fitted to the answer)", elem_id="geolocate-region")
            with gr.Accordion("Compare all geolocators: their 90% regions and best guesses", open=True):
                compare_plot = gr.Plot(label="All geolocators", elem_id="geolocate-compare")
                compare_table = gr.Dataframe(label="Answers side by side", wrap=True,
                                             elem_id="geolocate-compare-table")  # fmt: skip
            result = gr.JSON(label="Result (JSON)", open=False, max_height=320)
        with gr.Tab("Text query (GeoCLIP)"):
            with gr.Row():
                with gr.Column(scale=2):
                    text = gr.Textbox(label="Describe a place", placeholder="a snowy mountain village")
                    text_resolution = gr.Slider(*TEXT_RESOLUTION_DEG, value=5, step=1,
                                                label="grid resolution (degrees)")  # fmt: skip
                    text_top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="candidates (top-k)")
                    ask = gr.Button("Where?", variant="primary")
                with gr.Column(scale=3):
                    text_status = gr.Markdown(elem_id="text-query-status")
                    text_plot = gr.Plot(label="Similarity over the world", elem_id="text-query-globe")
            text_table = gr.Dataframe(headers=["rank", "place", "coordinates", "probability"], wrap=True,
                                      elem_id="text-query-table",
                                      label="Best grid cells")  # fmt: skip
            text_result = gr.JSON(label="Result (JSON)", open=False, max_height=320)

        inputs = [image, geolocator, top_k, num_samples, steps, resolution, seed]
        image.change(upload_ui, image, status, show_progress="hidden", api_visibility="private")
        locate.click(locate_ui, inputs, [status, summary, table, plot, region, result], api_visibility="undocumented",
                     show_progress_on=[status])  # one progress indicator, not one over each output  # fmt: skip
        text_inputs = [text, text_resolution, text_top_k]
        gr.on([ask.click, text.submit], text_ui, text_inputs, [text_status, text_plot, text_table, text_result],
              api_visibility="undocumented", show_progress_on=[text_status])  # fmt: skip
        compare_inputs = [image, top_k, num_samples, steps, resolution, seed]
        compare_all.click(compare_ui, compare_inputs, [status, compare_plot, compare_table, result],
                          api_visibility="undocumented", show_progress_on=[status])  # fmt: skip
        # API endpoints with stable names: JSON out only (hidden buttons, never clicked in the UI)
        gr.Button(visible=False).click(locate_api, inputs, result, api_name="geolocate")
        gr.Button(visible=False).click(compare_api, compare_inputs, result, api_name="compare")
        gr.Button(visible=False).click(text_api, text_inputs, text_result, api_name="text_query")
    return demo


def main(argv=None) -> int:
    from apps.common.launch import launch

    return launch(lambda store: create_demo(store), argv, description=TITLE)


if __name__ == "__main__":
    raise SystemExit(main())
