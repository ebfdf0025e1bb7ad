"""GPS-to-image generation as plain functions: request checks, the area map, the pipeline call (no Gradio here).

The model is a ``geo_models.generation.GPSToImagePipeline`` (a diffusers pipeline folder or Hub id[@revision]) from
``settings.models["gps_to_image"]``, else ``GEO_MODELS_GPS_TO_IMAGE``, else ``apps/starter/gps_to_image``. It loads
once per :class:`~apps.common.models.ModelStore`; a model that cannot be loaded is reported, never fatal.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from apps.common.areamap import MapView, map_view, render_map
from apps.common.limits import MAX_TEXT_CHARS
from apps.common.models import ModelStore, gpu, load_pipeline_once, looks_local, pipeline_source, split_revision
from apps.common.settings import STARTER_DIR
from geo_models.sphere import EARTH_RADIUS_KM, GeoArea

logger = logging.getLogger(__name__)
MODEL_NAME = "gps_to_image"
MODES = ("single point", "average over area")
MAX_STEPS = 50
MAX_SAMPLES = 64
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 20.0
GPS_CHUNK_SIZE = 8
MAX_RADIUS_KM = 5000.0
KM_PER_DEG = math.pi * EARTH_RADIUS_KM / 180  # great-circle km per degree of latitude (111.195 km)
WORLD = (-90.0, 90.0, -180.0, 180.0)
_RUN_LOCK = threading.Lock()


def uses_starter(store: ModelStore) -> bool:
    """True when the GPS-to-image model is the bundled starter folder."""
    return Path(pipeline_source(store.settings, MODEL_NAME)).resolve() == (STARTER_DIR / MODEL_NAME).resolve()


def load_gps_to_image(source: str, device: str = "cpu"):
    """A ``GPSToImagePipeline`` from a ``save_pretrained`` folder or a Hub id (``user/repo@revision`` pins one)."""
    path, revision = split_revision(source)
    if looks_local(path) and not (Path(path) / "model_index.json").is_file():
        raise FileNotFoundError(f"no GPS-to-image pipeline folder (model_index.json) at {path}")
    from geo_models.generation import GPSToImagePipeline  # heavy (diffusers): only once a model is there

    pipe = GPSToImagePipeline.from_pretrained(path, revision=revision).to(device)
    pipe.set_progress_bar_config(disable=False, leave=False)  # tqdm steps, tracked by gr.Progress
    return pipe


def get_pipeline(store: ModelStore):
    """``(pipeline, None)`` or ``(None, reason)``; loads on the first call for ``store``, then cached."""
    return load_pipeline_once(store, MODEL_NAME, load_gps_to_image, "GPS-to-image model")


def model_area(pipe) -> GeoArea:
    """The GPS embedder's training area (``pipe.gps_embedder.area``); the whole world without a model."""
    if pipe is None:
        return GeoArea(WORLD[:2], WORLD[2:])
    embedder = pipe.gps_embedder
    area = getattr(embedder, "area", None)  # embedder code saved before GPSEmbedder.area: from its config
    return area if area is not None else GeoArea(embedder.config.lat_range, embedder.config.lon_range)


def trained_area(pipe) -> tuple[float, float, float, float]:
    """``(lat_min, lat_max, lon_min, lon_max)`` of the GPS embedder's training area (the world without a model)."""
    return tuple(model_area(pipe).as_list())


def default_point(area: tuple[float, float, float, float]) -> tuple[float, float]:
    """The centre of the area (rounded), the starting GPS point."""
    return round((area[0] + area[1]) / 2, 5), round((area[2] + area[3]) / 2, 5)


def default_radius_km(area: tuple[float, float, float, float]) -> float:
    """A tenth of the area's height, a sensible averaging radius."""
    return round(max((area[1] - area[0]) * KM_PER_DEG / 10, 0.1), 1)


def outside_note(lat: float, lon: float, area: GeoArea | tuple[float, float, float, float]) -> str:
    """A warning when ``(lat, lon)`` lies outside the training area (a ``GeoArea`` or ``(lat_min, lat_max, lon_min,
    lon_max)``), else an empty string. Not a coordinate at all (NaN, beyond a pole) counts as outside."""
    if not hasattr(area, "contains"):
        area = GeoArea(area[:2], area[2:])
    try:
        inside = area.contains((lat, lon))
    except ValueError:
        inside = False
    if inside:
        return ""
    area = area.as_list()
    return (
        f"({lat:.4f}, {lon:.4f}) is outside the model's training area (lat {area[0]:g} to {area[1]:g}, lon "
        f"{area[2]:g} to {area[3]:g}): the GPS embedding extrapolates there, expect unreliable images."
    )


def area_note(box: tuple[float, float, float, float], area: GeoArea | tuple[float, float, float, float]) -> str:
    """A warning when an averaging ``box`` (``area_box``) reaches beyond the training area, else an empty string:
    the average then blends in points where the GPS embedding extrapolates."""
    if hasattr(area, "as_list"):
        area = tuple(area.as_list())
    lat0, lat1, lon0, lon1 = box
    if area[0] <= lat0 and lat1 <= area[1] and area[2] <= lon0 and lon1 <= area[3]:
        return ""
    return (
        f"The averaging area (lat {lat0:.4f} to {lat1:.4f}, lon {lon0:.4f} to {lon1:.4f}) reaches beyond the model's "
        f"training area (lat {area[0]:g} to {area[1]:g}, lon {area[2]:g} to {area[3]:g}): the points outside it "
        "extrapolate; a smaller area half-side keeps the average inside."
    )


def area_box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float]:
    """The lat/lon box ``(lat_min, lat_max, lon_min, lon_max)`` around ``(lat, lon)`` with half-sides ``radius_km``
    (north-south and east-west at the centre's latitude), clipped to the world."""
    dlat = radius_km / KM_PER_DEG
    dlon = radius_km / (KM_PER_DEG * max(math.cos(math.radians(lat)), 1e-3))
    return max(lat - dlat, -90.0), min(lat + dlat, 90.0), max(lon - dlon, -180.0), min(lon + dlon, 180.0)


def area_view(area: tuple[float, float, float, float]) -> MapView:
    """The map's view: the training area plus a margin (the world for a world-sized area)."""
    width = 800 if area[3] - area[2] > 2 * (area[1] - area[0]) else 640
    return map_view(area[:2], area[2:], margin=0.12, width=width)


def draw_map(area, lat=None, lon=None, mode: str = MODES[0], radius_km: float | None = None):
    """The map image: the training area, the GPS point and, in average mode, the averaging box."""
    view = area_view(area)
    point, box = None, None
    if lat is not None and lon is not None and math.isfinite(lat) and math.isfinite(lon):
        if abs(lat) <= 90 and abs(lon) <= 180:
            point = (float(lat), float(lon))
            if mode == MODES[1] and radius_km and radius_km > 0:
                box = area_box(point[0], point[1], float(radius_km))
    trained = None if area == WORLD else area
    return render_map(view, point=point, area=box, trained=trained, title="Click the map to set the GPS point")


def pixel_to_latlon(area, x: float, y: float) -> tuple[float, float]:
    """A click on the map at pixel ``(x, y)`` -> ``(lat, lon)`` rounded to ~1 m."""
    lat, lon = area_view(area).to_latlon(x, y)
    return round(lat, 5), round(lon, 5)


@dataclass
class GenerateRequest:
    """One generation: a prompt at a GPS point, or the average image over a box around it (``mode``)."""

    prompt: str
    latitude: float
    longitude: float
    text_guidance_scale: float = 3.5
    gps_guidance_scale: float = 7.5
    steps: int = 25
    seed: int = 0
    mode: str = MODES[0]
    radius_km: float = 1.0
    num_samples: int = 16


def _number(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def check_request(req: GenerateRequest) -> tuple[GenerateRequest, list[str]]:
    """Validate ``req`` -> (a cleaned copy, notes about clamped values). Bad values raise ``ValueError`` naming the
    input and its allowed range; too many steps / samples are clamped (with a note)."""
    if req.prompt is not None and not isinstance(req.prompt, str):
        raise ValueError(f"prompt must be text, got {type(req.prompt).__name__}")
    prompt = (req.prompt or "").strip()
    if not prompt:
        raise ValueError("type a prompt, e.g. 'a street with tall buildings'")
    if len(prompt) > MAX_TEXT_CHARS:
        raise ValueError(f"prompt too long: {len(prompt)} characters (limit {MAX_TEXT_CHARS})")
    lat, lon = _number(req.latitude, "latitude"), _number(req.longitude, "longitude")
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude must be in [-90, 90] degrees, got {lat:g}")
    if not -180 <= lon <= 180:
        raise ValueError(f"longitude must be in [-180, 180] degrees, got {lon:g}")
    notes = []
    scales = {}
    for name in ("text_guidance_scale", "gps_guidance_scale"):
        scales[name] = _number(getattr(req, name), name)
        if not 0 <= scales[name] <= MAX_GUIDANCE:
            raise ValueError(f"{name} must be in [0, {MAX_GUIDANCE:g}], got {scales[name]:g}")
    steps = _number(req.steps, "steps")
    if steps < 1 or steps != int(steps):
        raise ValueError(f"steps must be a whole number in [1, {MAX_STEPS}], got {steps:g}")
    if steps > MAX_STEPS:
        notes.append(f"steps clamped to {MAX_STEPS} (asked {steps:g})")
    seed = _number(0 if req.seed is None else req.seed, "seed")
    if seed != int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {seed:g}")
    if req.mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {req.mode!r}")
    radius, samples = req.radius_km, req.num_samples
    if req.mode == MODES[1]:
        radius = _number(radius, "radius_km")
        if not 0 < radius <= MAX_RADIUS_KM:
            raise ValueError(f"radius_km must be in (0, {MAX_RADIUS_KM:g}] km, got {radius:g}")
        samples = _number(samples, "num_samples")
        if samples < 1 or samples != int(samples):
            raise ValueError(f"num_samples must be a whole number in [1, {MAX_SAMPLES}], got {samples:g}")
        if samples > MAX_SAMPLES:
            notes.append(f"num_samples clamped to {MAX_SAMPLES} (asked {samples:g})")
        samples = min(int(samples), MAX_SAMPLES)
    clean = GenerateRequest(prompt, lat, lon, scales["text_guidance_scale"], scales["gps_guidance_scale"],
                            min(int(steps), MAX_STEPS), int(seed), req.mode, radius, samples)  # fmt: skip
    return clean, notes


@gpu(duration=120)
def _run(store_key: int, req: GenerateRequest, box: tuple[float, float, float, float] | None):
    """Call the pipeline -> one PIL image."""
    pipe, error = get_pipeline(ModelStore.by_key(store_key))
    if pipe is None:
        raise ValueError(error)
    generator = torch.Generator().manual_seed(int(req.seed))
    kwargs = dict(text_guidance_scale=req.text_guidance_scale, gps_guidance_scale=req.gps_guidance_scale,
                  num_inference_steps=req.steps, generator=generator)  # fmt: skip
    with _RUN_LOCK:  # one call at a time: a diffusers scheduler keeps per-call state
        return _call(pipe, req, box, kwargs)


def _call(pipe, req: GenerateRequest, box, kwargs):
    if box is None:
        out = pipe(req.prompt, latitude=req.latitude, longitude=req.longitude, **kwargs)
    else:
        out = pipe(req.prompt, gps_area=box, num_gps_samples=req.num_samples, gps_chunk_size=GPS_CHUNK_SIZE, **kwargs)
    return out.images[0]


def generate(store: ModelStore, req: GenerateRequest):
    """Generate one image -> ``(PIL image, info dict)``; ``info["notes"]`` holds warnings (outside the training
    area, clamped values). Raises ``ValueError`` with a user-facing message for bad input or a missing model."""
    req, notes = check_request(req)
    pipe, error = get_pipeline(store)
    if pipe is None:
        raise ValueError(error)
    box = area_box(req.latitude, req.longitude, req.radius_km) if req.mode == MODES[1] else None
    trained = model_area(pipe)
    note = outside_note(req.latitude, req.longitude, trained) or (area_note(box, trained) if box else "")
    if note:
        notes.append(note)
    image = _run(store.key, req, box)
    info = {
        "prompt": req.prompt,
        "latitude": req.latitude,
        "longitude": req.longitude,
        "mode": req.mode,
        "gps_area": list(box) if box else None,
        "num_gps_samples": req.num_samples if box else None,
        "steps": req.steps,
        "seed": req.seed,
        "size": list(image.size),
        "notes": notes,
    }
    return image, info
