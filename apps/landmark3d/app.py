"""A landmark in 3D: its mesh lifted from an angle-to-image model by GPS-guided score distillation (paper sec. 3.2,
4.1), the model's views at 8 azimuths, and "Lift" to run a short distillation here and download the GLB.

``python apps/landmark3d/app.py --port 7860 --angle_to_image DIR_OR_REPO`` (or ``GEO_MODELS_ANGLE_TO_IMAGE``; default
the starter model). API endpoints: ``views`` (prompt, steps, seed -> gallery), ``lift`` (prompt, steps, seed -> GLB).
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(_ROOT))

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from apps.common.models import ModelStore  # noqa: E402
from apps.common.settings import env_var, parse_settings  # noqa: E402
from apps.common.ui import user_errors  # noqa: E402
from apps.landmark3d.inference import (  # noqa: E402
    MAX_LIFT_STEPS,
    MAX_VIEW_STEPS,
    MODEL_NAME,
    default_prompt,
    get_pipeline,
    lift,
    mesh_source,
    views,
)

TITLE = "A landmark in 3D"
DISPLAY_SIDE = 160  # small model outputs are upscaled (nearest) for display


def _big(image: Image.Image) -> Image.Image:
    scale = max(1, -(-DISPLAY_SIDE // min(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def create_demo(store: ModelStore) -> gr.Blocks:
    """The 3D tab (also the whole Space)."""
    pipe, error = get_pipeline(store)
    mesh = mesh_source()
    prompt0 = default_prompt()
    first_views = []  # the model's 8 views, drawn once here so every visitor sees them beside the mesh at once
    if pipe is not None:
        try:
            first_views = [(_big(image), caption) for image, caption in views(store, prompt0, steps=20, seed=0)]
        except Exception as err:  # noqa: BLE001 - the page still serves; the button draws them again
            logging.getLogger(__name__).warning("could not draw the first views: %s", err)

    @user_errors
    def views_ui(prompt, steps, seed, progress=gr.Progress()):  # noqa: B008
        progress(0, desc="Sampling 8 views")
        return [(_big(image), caption) for image, caption in views(store, prompt, steps=steps, seed=seed)]

    @user_errors
    def views_api(prompt, steps, seed):
        return views(store, prompt, steps=steps, seed=seed)

    def lift_ui(prompt, steps, seed, progress=gr.Progress()):  # noqa: B008
        cancel = threading.Event()
        try:
            for update in lift(store, prompt, steps, seed, cancel=cancel):
                progress(update.step / update.total, desc=f"Score distillation, step {update.step}/{update.total}")
                status = f"Step {update.step} of {update.total}"
                if update.glb is not None:
                    yield gr.update(value=update.glb), gr.update(), gr.update(value=update.glb, visible=True), \
                        f"Done: {update.total} steps. The mesh is shown on the left; download it below."
                elif update.preview is not None:
                    yield gr.update(), _big(update.preview), gr.update(), status
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        finally:
            cancel.set()

    def lift_api(prompt, steps, seed):
        """The API: the GLB file of a finished lift."""
        try:
            glb = None
            for update in lift(store, prompt, steps, seed):
                glb = update.glb or glb
            return glb
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"## {TITLE}\nA 3D model of a landmark lifted from its **angle-to-image** model (a diffusion model that "
            "draws the landmark seen from a chosen direction) by GPS-guided score distillation: a NeRF is rendered "
            "from cameras around the landmark and each render is nudged towards what the model draws for that "
            "camera's direction. Drag the model to turn it."
        )
        if error:
            gr.Markdown(f"**Angle-to-image model not available**: {error}. Start with `--angle_to_image DIR_OR_REPO` "
                        f"(or set `{env_var(MODEL_NAME)}`); the mesh below still shows.",
                        elem_id="landmark3d-unavailable")  # fmt: skip
        with gr.Row():
            with gr.Column(scale=3):
                model3d = gr.Model3D(str(mesh) if mesh.is_file() else None, label="3D model (GLB)", height=420,
                                     clear_color=(0.92, 0.94, 0.97, 1.0), elem_id="landmark3d-model")  # fmt: skip
                download = gr.File(label="Download the lifted GLB", visible=False, elem_id="landmark3d-download")
            with gr.Column(scale=2):
                prompt = gr.Textbox(prompt0, label="Prompt", elem_id="landmark3d-prompt")
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, maximum=2**31 - 1, label="seed")
                    view_steps = gr.Slider(1, MAX_VIEW_STEPS, value=25, step=1, label="sampling steps")
                show = gr.Button("Sample 8 views", elem_id="landmark3d-views-button")
                lift_steps = gr.Slider(10, MAX_LIFT_STEPS, value=100, step=10, label="lift steps (~0.3 s each)")
                run = gr.Button("Lift", variant="primary", elem_id="landmark3d-lift-button")
                preview = gr.Image(label="Lift preview (seen from the north)", type="pil",
                                   interactive=False, height=200, elem_id="landmark3d-preview")  # fmt: skip
                status = gr.Markdown(elem_id="landmark3d-status")
        gallery = gr.Gallery(first_views, label="The model's views at 8 azimuths (from north, clockwise)", columns=8,
                             height=220, elem_id="landmark3d-views")  # fmt: skip

        show.click(views_ui, [prompt, view_steps, seed], gallery, api_visibility="undocumented",
                   concurrency_id=MODEL_NAME)  # fmt: skip
        gr.Button(visible=False).click(views_api, [prompt, view_steps, seed], gallery, api_name="views",
                                       concurrency_id=MODEL_NAME)  # fmt: skip
        run.click(lift_ui, [prompt, lift_steps, seed], [model3d, preview, download, status],
                  api_visibility="undocumented", concurrency_id="lift", concurrency_limit=1)  # fmt: skip
        gr.Button(visible=False).click(lift_api, [prompt, lift_steps, seed], download, api_name="lift",
                                       concurrency_id="lift", concurrency_limit=1)  # fmt: skip
    return demo


def main(argv=None) -> int:
    from apps.common.launch import configure, launch_kwargs

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_settings(argv)
    demo = configure(create_demo(ModelStore(settings)), settings)
    demo.launch(**launch_kwargs(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
