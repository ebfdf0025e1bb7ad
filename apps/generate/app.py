"""A photo "taken here": click a map (drawn offline) to set a GPS point, type a prompt and generate with a GPS-to-image
diffusion model; or average over an area around the point (the paper's "average image", eq. 8).

``python apps/generate/app.py --port 7860 --gps_to_image outputs/gps-to-image`` (or ``GEO_MODELS_GPS_TO_IMAGE``; a
folder or a Hub id[@revision]). API endpoint: ``generate`` (prompt, latitude, longitude, text_guidance_scale,
gps_guidance_scale, steps, seed, mode, radius_km, num_samples -> image).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script (`python apps/generate/app.py`) from any directory
    sys.path.insert(0, str(_ROOT))

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from apps.common.models import ModelStore  # noqa: E402
from apps.common.settings import env_var, parse_settings  # noqa: E402
from apps.common.ui import inline_errors, user_errors  # noqa: E402
from apps.generate.inference import (  # noqa: E402
    MAX_GUIDANCE,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_STEPS,
    MODEL_NAME,
    MODES,
    GenerateRequest,
    area_box,
    area_note,
    default_point,
    default_radius_km,
    draw_map,
    generate,
    get_pipeline,
    model_area,
    outside_note,
    pixel_to_latlon,
    uses_starter,
)
from geo_models.data.procedural.city import GENERIC_CAPTIONS  # noqa: E402

TITLE = "Generate a photo taken here"
DISPLAY_MIN_SIDE = 320  # small model outputs are upscaled (nearest) for display; the API returns the raw image


def _point(lat, lon) -> tuple[float | None, float | None]:
    try:
        return float(lat), float(lon)
    except (TypeError, ValueError):
        return None, None


def info_markdown(info: dict) -> str:
    where = f"{info['latitude']:.5f}, {info['longitude']:.5f}"
    if info["gps_area"]:
        a = info["gps_area"]
        what = (f"**Average image** of {info['num_gps_samples']} points in lat {a[0]:.4f} to {a[1]:.4f}, "
                f"lon {a[2]:.4f} to {a[3]:.4f} (around {where})")  # fmt: skip
    else:
        what = f"**Generated at** {where}"
    size = "x".join(map(str, info["size"]))
    lines = [f"{what}: *{info['prompt']}*; {info['steps']} steps, seed {info['seed']}, {size} px."]
    lines += [f"- {note}" for note in info["notes"]]
    return "\n".join(lines)


def create_demo(store: ModelStore) -> gr.Blocks:
    """The generation tab (also the whole Space); ``store`` provides the settings, the model loads here once."""
    pipe, error = get_pipeline(store)
    trained = model_area(pipe)  # the GPS embedder's training area (outside_note asks it)
    area = tuple(trained.as_list())  # (lat_min, lat_max, lon_min, lon_max): the map's blue box
    lat0, lon0 = default_point(area)
    radius0 = default_radius_km(area)
    radius_max = max(round(radius0 * 10, 1), 1.0)
    # the starter model learned the procedural city's generic captions ("A street in Manhattan", ...)
    starter_prompt = GENERIC_CAPTIONS["street"] if error is None and uses_starter(store) else ""

    def point_note(lat, lon, mode, radius) -> str:
        """Why the point (or, averaging, its area) is a poor choice for this model, or ''."""
        if lat is None or error is not None:
            return ""
        if not (abs(lat) <= 90 and abs(lon) <= 180):
            return "latitude must be in [-90, 90] and longitude in [-180, 180] degrees"
        note = outside_note(lat, lon, trained)
        if not note and mode == MODES[1] and radius and radius > 0:
            note = area_note(area_box(lat, lon, float(radius)), trained)
        return f"**Warning**: {note}" if note else ""

    # A new point or area makes the image on show stale: it is cleared (with a line saying so) rather than left
    # looking like the new point's (issue 17).
    STALE = "The point or area changed: press **Generate** for an image of it."

    def redraw(lat, lon, mode, radius):
        lat, lon = _point(lat, lon)
        return draw_map(area, lat, lon, mode, radius), point_note(lat, lon, mode, radius), None, STALE

    def on_click(mode, radius, evt: gr.SelectData):
        lat, lon = pixel_to_latlon(area, *evt.index[:2])
        note = point_note(lat, lon, mode, radius)
        return lat, lon, draw_map(area, lat, lon, mode, radius), note, None, STALE

    def request(prompt, lat, lon, text_scale, gps_scale, steps, seed, mode, radius, samples) -> GenerateRequest:
        return GenerateRequest(prompt, lat, lon, text_scale, gps_scale, steps, seed, mode, radius, samples)

    @inline_errors(num_outputs=3)
    def generate_ui(*args, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        progress(0, desc="Generating")
        image, info = generate(store, request(*args))
        if min(image.size) < DISPLAY_MIN_SIDE:
            scale = -(-DISPLAY_MIN_SIDE // min(image.size))
            image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        return "", image, info_markdown(info)  # the info lists the warnings (outside the area, clamped values)

    @user_errors
    def generate_api(prompt, latitude, longitude, text_guidance_scale, gps_guidance_scale, steps, seed, mode,
                     radius_km, num_samples):  # fmt: skip
        """The API: parameter names are the endpoint's (``client.predict(prompt=..., latitude=..., ...)``)."""
        args = (prompt, latitude, longitude, text_guidance_scale, gps_guidance_scale, steps, seed, mode, radius_km)
        return generate(store, request(*args, num_samples))[0]

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"## {TITLE}\nClick the map (or type coordinates) to set the GPS point, describe the photo and generate. "
            "*Average over area* blends the model's predictions over random points around the GPS point."
        )
        if error:
            gr.Markdown(f"**GPS-to-image model not available**: {error}. Start with `--gps_to_image DIR_OR_REPO` "
                        f"(or set `{env_var(MODEL_NAME)}`); the other tabs still work.",
                        elem_id="generate-unavailable")  # fmt: skip
        else:
            a = area
            gr.Markdown(f"Model trained on lat {a[0]:g} to {a[1]:g}, lon {a[2]:g} to {a[3]:g} (the blue box).")
        with gr.Row():
            with gr.Column(scale=3):
                map_image = gr.Image(draw_map(area, lat0, lon0), type="pil", interactive=False, label="Map",
                                     buttons=[], elem_id="generate-map", height=560,
                                     alt_text="Map of the model's area: click to set the GPS point")  # fmt: skip
                with gr.Row():
                    lat = gr.Number(lat0, label="latitude", elem_id="generate-lat")
                    lon = gr.Number(lon0, label="longitude", elem_id="generate-lon")
                note = gr.Markdown(elem_id="generate-note")
            with gr.Column(scale=2):
                prompt = gr.Textbox(starter_prompt, label="Prompt", placeholder="a street with tall buildings")
                text_scale = gr.Slider(0, MAX_GUIDANCE, value=3.5, step=0.5, label="text guidance")
                gps_scale = gr.Slider(0, MAX_GUIDANCE, value=7.5, step=0.5, label="GPS guidance")
                steps = gr.Slider(1, MAX_STEPS, value=25, step=1, label="steps")
                seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="seed")
                mode = gr.Radio(list(MODES), value=MODES[0], label="mode")
                with gr.Row():
                    radius = gr.Slider(radius_max / 200, radius_max, value=radius0, label="area half-side (km)",
                                       info="average mode: a square this many km from the point to each side")
                    samples = gr.Slider(2, MAX_SAMPLES, value=16, step=1, label="samples (average mode)")
                run = gr.Button("Generate", variant="primary")
                status = gr.Markdown(elem_id="generate-status")  # progress and errors
                output = gr.Image(type="pil", format="png", label="Generated image", interactive=False, height=340,
                                  elem_id="generate-output", alt_text="The generated photo")  # fmt: skip
                info = gr.Markdown(elem_id="generate-info")

        map_events = dict(show_progress="hidden", concurrency_limit=None, api_visibility="private")
        map_image.select(on_click, [mode, radius], [lat, lon, map_image, note, output, info], **map_events)
        gr.on([lat.submit, lon.submit, lat.blur, lon.blur, mode.change, radius.release], redraw,
              [lat, lon, mode, radius], [map_image, note, output, info], **map_events)  # fmt: skip
        inputs = [prompt, lat, lon, text_scale, gps_scale, steps, seed, mode, radius, samples]
        gr.on([run.click, prompt.submit], generate_ui, inputs, [status, output, info],  # the map stays clickable
              api_visibility="undocumented", concurrency_id=MODEL_NAME, show_progress_on=[status])  # fmt: skip
        # the API endpoint with a stable name: the raw image out (a hidden button, never clicked in the UI)
        gr.Button(visible=False).click(generate_api, inputs, output, api_name="generate", concurrency_id=MODEL_NAME)
    return demo


def main(argv=None) -> int:
    from apps.common.launch import configure, launch_kwargs

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_settings(argv)
    demo = configure(create_demo(ModelStore(settings)), settings)  # loads only the GPS-to-image model
    demo.launch(**launch_kwargs(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
