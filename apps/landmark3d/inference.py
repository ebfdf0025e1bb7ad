"""A landmark in 3D as plain functions (no Gradio here): the angle-to-image model, views of the landmark at chosen
azimuths, the bundled mesh, and "lift": a short GPS-guided score distillation (``train/sds_to_mesh.py``) to a GLB.

The model is an ``AngleToImagePipeline`` from ``settings.models["angle_to_image"]``, else
``GEO_MODELS_ANGLE_TO_IMAGE``, else ``apps/starter/angle_to_image``: a diffusers pipeline folder or Hub id[@revision],
or a LoRA folder (``pytorch_lora_weights.safetensors`` + ``angle_embedder/`` + ``lora_base.json`` naming the base
pipeline, relative to the folder), as the starter ships it on the GPS-to-image starter's base. It loads once per
:class:`~apps.common.models.ModelStore`; a model that cannot be loaded is reported, never fatal. The mesh shown at
once is ``GEO_MODELS_LANDMARK_MESH`` or ``apps/starter/landmark3d/mesh.glb``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from apps.common.limits import MAX_TEXT_CHARS
from apps.common.models import ModelStore, load_pipeline_once, looks_local, split_revision
from apps.common.settings import STARTER_DIR, env_var
from geo_models.checks import check_int

logger = logging.getLogger(__name__)
MODEL_NAME = "angle_to_image"
STARTER_MESH = STARTER_DIR / "landmark3d" / "mesh.glb"
NUM_VIEWS = 8
MAX_VIEW_STEPS = 50
MAX_LIFT_STEPS = 400  # bounded on CPU: ~0.3 s per step at the app's settings on one core
LIFT_FLAGS = ["--resolution", "32", "--num_samples", "32", "--grid_levels", "4", "--grid_max_resolution", "64",
              "--hidden_dim", "32", "--mesh_resolution", "96", "--textureless_prob", "0.3"]  # fmt: skip
PREVIEW_EVERY = 10  # steps between preview renders
_LIFT_LOCK = threading.Lock()


class LiftCancelled(Exception):
    """Raised inside a lift's step callback to stop it (a cancelled request)."""


def mesh_source() -> Path:
    return Path(os.environ.get(env_var("landmark_mesh")) or STARTER_MESH)


def load_angle_to_image(source: str, device: str = "cpu"):
    """An ``AngleToImagePipeline`` from a pipeline folder / Hub id, or a LoRA folder on a base (module docstring)."""
    from geo_models.generation import AngleEmbedder, AngleToImagePipeline

    path, revision = split_revision(source)
    folder = Path(path)
    if (folder / "lora_base.json").is_file():
        base = (folder / json.loads((folder / "lora_base.json").read_text())["base_model"]).resolve()
        from diffusers import DiffusionPipeline

        import geo_models.generation  # noqa: F401  (registers the pipelines with diffusers)

        parts = DiffusionPipeline.from_pretrained(base).components
        embedder = AngleEmbedder.from_pretrained(folder / "angle_embedder")
        keys = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
        pipe = AngleToImagePipeline(**{k: parts[k] for k in keys}, angle_embedder=embedder)
        pipe.load_lora_weights(folder)
        pipe.fuse_lora()  # merged into the UNet's weights, then the adapter layers go (plain UNet, plain speed)
        pipe.unload_lora_weights()
    else:
        if looks_local(path) and not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"no angle-to-image pipeline (model_index.json or lora_base.json) at {path}")
        pipe = AngleToImagePipeline.from_pretrained(path, revision=revision)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def get_pipeline(store: ModelStore):
    """``(pipeline, None)`` or ``(None, reason)``, loaded once per store."""
    return load_pipeline_once(store, MODEL_NAME, load_angle_to_image, "angle-to-image model")


def default_prompt() -> str:
    """"A photo of Meridian Hall": the procedural landmark of the starter model."""
    from geo_models.data.procedural.landmark import LANDMARK_NAME

    return f"A photo of {LANDMARK_NAME}"


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must not be empty (e.g. 'A photo of Meridian Hall')")
    if len(prompt) > MAX_TEXT_CHARS:
        raise ValueError(f"prompt must be at most {MAX_TEXT_CHARS} characters, got {len(prompt)}")
    return prompt.strip()


def _checked_request(store: ModelStore, prompt, steps, max_steps: int, seed, max_seed: int):
    """The loaded pipeline and the checked ``(prompt, steps, seed)`` of a views or lift request (``ValueError`` naming
    the argument, or the reason the model is unavailable)."""
    pipe, error = get_pipeline(store)
    if pipe is None:
        raise ValueError(error)
    return pipe, check_prompt(prompt), check_int(steps, "steps", 1, max_steps), check_int(seed, "seed", 0, max_seed)


def views(store: ModelStore, prompt: str, *, steps: int = 25, seed: int = 0, guidance_scale: float = 7.5):
    """The model's samples at ``NUM_VIEWS`` azimuths from north, clockwise -> list of ``(PIL image, caption)``."""
    pipe, prompt, steps, seed = _checked_request(store, prompt, steps, MAX_VIEW_STEPS, seed, 2**32 - 1)
    azimuths = [360.0 * k / NUM_VIEWS for k in range(NUM_VIEWS)]
    generator = torch.Generator().manual_seed(seed)
    images = pipe([prompt] * NUM_VIEWS, azimuth=azimuths, num_inference_steps=steps, guidance_scale=guidance_scale,
                  generator=generator).images  # fmt: skip
    return [(image, f"{a:.0f}° ({_compass(a)})") for image, a in zip(images, azimuths)]


def _compass(azimuth: float) -> str:
    return ("N", "NE", "E", "SE", "S", "SW", "W", "NW")[round(azimuth / 45) % 8]


@dataclass
class LiftUpdate:
    """One update of a running lift: ``step`` of ``total``, a preview render (PIL) or None, the GLB path when done."""

    step: int
    total: int
    preview: object | None = None
    glb: str | None = None


def lift(store: ModelStore, prompt: str, steps: int, seed: int = 0, *, cancel: threading.Event | None = None):
    """Lift a 3D model with ``train/sds_to_mesh.py`` (the app's CPU-sized flags, ``LIFT_FLAGS``) in a worker thread;
    yields :class:`LiftUpdate` (previews every ``PREVIEW_EVERY`` steps), the last one with the GLB path (a copy in a
    fresh temporary folder). One lift at a time per process: a second concurrent call raises ``ValueError``.
    Setting ``cancel`` (or closing the generator) stops the run at its next step; the worker's folder is removed."""
    import queue

    pipe, prompt, steps, seed = _checked_request(store, prompt, steps, MAX_LIFT_STEPS, seed, 2**31 - 1)
    if not _LIFT_LOCK.acquire(blocking=False):
        raise ValueError("a lift is already running on this server; try again when it has finished")
    cancel = cancel or threading.Event()
    updates: queue.Queue = queue.Queue()
    work = Path(tempfile.mkdtemp(prefix="lift-"))
    try:
        worker = threading.Thread(target=_run_lift, args=(pipe, prompt, steps, seed, work, cancel, updates),
                                  daemon=True)  # fmt: skip
        worker.start()
        while True:
            item = updates.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.glb is not None:
                break
        worker.join()
    finally:
        cancel.set()  # a closed generator (cancelled request) stops the worker at its next step
        _release_when_done(work, locals().get("worker"))


def _release_when_done(work: Path, worker) -> None:
    """Remove the worker's folder and free the lift lock: now when the worker has ended, else once it stops."""

    def release():
        if worker is not None:
            worker.join()
        shutil.rmtree(work, ignore_errors=True)
        _LIFT_LOCK.release()

    if worker is None or not worker.is_alive():
        release()
    else:
        threading.Thread(target=release, daemon=True).start()


def _run_lift(pipe, prompt, steps, seed, work: Path, cancel: threading.Event, updates) -> None:
    from geo_models.sds import CameraSampler
    from geo_models.sds.evaluation import render_views

    sds_to_mesh = _script("sds_to_mesh")
    camera = CameraSampler(resolution=96).turntable(1, elevation=10.0)[0]

    def on_step(step, field):
        if cancel.is_set():
            raise LiftCancelled(f"cancelled at step {step}")
        preview = None
        if step % PREVIEW_EVERY == 0 or step == steps:
            preview = render_views(field, [camera], num_samples=48)[0]
        updates.put(LiftUpdate(step, steps, preview))

    try:
        never = str(10 * steps)  # no previews or checkpoints on disk: on_step renders the previews
        argv = ["--pretrained_model_name_or_path", "app", "--prompt", prompt, "--output_dir", str(work / "run"),
                "--max_train_steps", str(steps), "--seed", str(seed), "--albedo_steps", str(steps // 2),
                "--validation_steps", never, "--checkpointing_steps", never, *LIFT_FLAGS]  # fmt: skip
        sds_to_mesh.main(argv, pipeline=pipe, on_step=on_step)
        out = Path(tempfile.mkdtemp(prefix="landmark3d-")) / "landmark.glb"
        shutil.copyfile(work / "run" / "mesh.glb", out)
        updates.put(LiftUpdate(steps, steps, None, str(out)))
    except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
        updates.put(err)


def _script(name: str):
    import importlib
    import sys

    train = Path(__file__).resolve().parents[2] / "train"
    if str(train) not in sys.path:
        sys.path.insert(0, str(train))
    return importlib.import_module(name)
