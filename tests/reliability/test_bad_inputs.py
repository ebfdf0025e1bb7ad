"""Bad input to the library's public entry points: every case raises a ``ValueError`` whose message names the
argument (DESIGN.md), never a TypeError / RuntimeError / OverflowError / DecompressionBombError, a silent truncation,
or gigabytes allocated before the check.

:data:`BAD_INPUTS` lists the cases; :func:`build_models` builds the tiny models they call and :func:`try_bad_input`
runs one, so a benchmark can count "bad inputs tried / clear errors" without pytest::

    models = build_models()
    outcomes = [try_bad_input(case, models, tmp_dir) for case in BAD_INPUTS]
    clear = sum(o == "clear" for o in outcomes)
"""

from __future__ import annotations

import math
import re
import resource
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from geo_models.encoders.location import LocationEncoder
from geo_models.flow import GeoAdaLNMLP
from geo_models.generation import AngleEmbedder, GPSEmbedder
from geo_models.geoclip import GeoCLIP
from geo_models.locdiff.modeling import CSUNet
from geo_models.locdiff.pipeline import LocDiffPipeline, make_scheduler
from geo_models.locdiff.shdd import SHDD
from geo_models.testing import tiny_angle_to_image_pipeline, tiny_gps_to_image_pipeline, tiny_sphere_flow_pipeline

NAN, INF = float("nan"), float("inf")
GALLERY = 200  # Fibonacci points of the GeoCLIP cases' gallery
EMPIRE_STATE = {"latitude": 40.7484, "longitude": -73.9857}


@dataclass(frozen=True)
class BadInput:
    """One bad call: ``call(models, tmp_dir)`` must raise ValueError with ``name`` in its message."""

    id: str
    name: str
    call: Callable[[dict[str, Any], Path], Any]


def build_models() -> dict[str, Any]:
    """The tiny seeded models the cases call (a few seconds on one CPU thread)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        geoclip = GeoCLIP(
            embedding_dim=32, projection_dim=16, num_features=16, hidden_dim=32, num_layers=2, backbone="tiny-vit"
        ).eval()
        unet = CSUNet(sample_dim=16, condition_dim=8, block_out_dims=(32, 8), time_embed_dim=16)
        geoclip8 = GeoCLIP(embedding_dim=8, projection_dim=8, num_features=8, hidden_dim=16, num_layers=1).eval()
    locdiff = LocDiffPipeline(unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 500, "num_anchors": 256})
    return {
        "geoclip": geoclip,
        "geoclip8": geoclip8,  # on LocDiff's 8-d features (LocDiff-H)
        "locdiff": locdiff,
        "flow": tiny_sphere_flow_pipeline(),
        "flow_r3": tiny_sphere_flow_pipeline("flow_r3"),
        "gps": tiny_gps_to_image_pipeline(),
        "angle": tiny_angle_to_image_pipeline(),
    }


# ---------------------------------------------------------------------------------------------- helpers of the cases
def bomb_png(path: Path, width: int = 20_000, height: int = 10_000) -> Path:
    """A ~100-byte PNG whose header claims ``width x height`` pixels (200 M: over Pillow's 2 x 89 M error limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def with_lazy_bomb(tmp: Path, use: Callable[[Image.Image], Any]) -> Any:
    """Call ``use`` with the bomb opened as a PIL image (Pillow's check off while opening: a caller who did so, or
    an image object made elsewhere); nothing is decoded unless ``use`` decodes it."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(bomb_png(tmp / "lazy_bomb.png"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    with img:
        return use(img)


def geoclip(m, **kwargs):
    args = {"image_embeddings": torch.randn(2, 32), "gallery": GALLERY, **kwargs}
    if "images" in kwargs:
        args.pop("image_embeddings")
    return m["geoclip"].predict(**args)


def locdiff(m, **kwargs):
    return m["locdiff"].predict(**{"image_embeddings": torch.randn(2, 8), "num_samples": 2, "num_inference_steps": 2,
                                   **kwargs})  # fmt: skip


def flow(m, method="predict", **kwargs):
    args = {"image_embeddings": torch.randn(2, 16), "num_samples": 2, "num_inference_steps": 2, **kwargs}
    return getattr(m["flow"], method)(**args)


def log_prob(m, latlon=((0.0, 0.0),), key="flow", **kwargs):
    return m[key].log_prob(latlon, image_embeddings=torch.randn(1, 16), **kwargs)


def gps(m, **kwargs):
    args = {"prompt": "a street", **EMPIRE_STATE, "num_inference_steps": 1, "output_type": "latent", **kwargs}
    return m["gps"](**args)


def angle(m, **kwargs):
    return m["angle"](**{"prompt": "a tower", "azimuth": 90.0, "num_inference_steps": 1, "output_type": "latent",
                         **kwargs})  # fmt: skip


def area(**kwargs):
    return {"latitude": None, "longitude": None, "gps_area": (40.74, 40.76, -74.0, -73.97), **kwargs}


# ---------------------------------------------------------------------------------------------- the cases
BAD_INPUTS: tuple[BadInput, ...] = (
    # Sphere flow (SphereFlowPipeline): sampling
    BadInput("flow.predict num_inference_steps=1e9", "num_inference_steps",
             lambda m, d: flow(m, num_inference_steps=10**9)),
    BadInput("flow.predict num_inference_steps=2.5", "num_inference_steps",
             lambda m, d: flow(m, num_inference_steps=2.5)),
    BadInput("flow.sample num_inference_steps=True", "num_inference_steps",
             lambda m, d: flow(m, "sample", num_inference_steps=True)),
    BadInput("flow.sample generator=1234", "generator", lambda m, d: flow(m, "sample", generator=1234)),
    BadInput("flow.predict generator=1234", "generator", lambda m, d: flow(m, generator=1234)),
    BadInput("flow.localizability generator=1234", "generator",
             lambda m, d: flow(m, "localizability", generator=1234)),
    BadInput("flow.predict num_samples=1e9", "num_samples", lambda m, d: flow(m, num_samples=10**9)),
    BadInput("flow.predict num_samples=2.5", "num_samples", lambda m, d: flow(m, num_samples=2.5)),
    BadInput("flow.localizability num_samples=1e9", "num_samples",
             lambda m, d: flow(m, "localizability", num_samples=10**9)),
    BadInput("flow.predict top_k=2.5", "top_k", lambda m, d: flow(m, top_k=2.5)),
    BadInput("flow.predict batch_size=0", "batch_size", lambda m, d: flow(m, batch_size=0)),
    BadInput("flow.sample batch_size=2.5", "batch_size", lambda m, d: flow(m, "sample", batch_size=2.5)),
    BadInput("flow.predict guidance_scale=1e30", "guidance_scale", lambda m, d: flow(m, guidance_scale=1e30)),
    BadInput("flow.predict guidance_scale='high'", "guidance_scale", lambda m, d: flow(m, guidance_scale="high")),
    BadInput("flow.predict atol=nan", "atol", lambda m, d: flow(m, atol=NAN)),
    BadInput("flow.predict images=5", "images", lambda m, d: m["flow"].predict(images=5)),
    # Sphere flow: densities
    BadInput("flow.density_grid resolution_deg=0.001", "resolution_deg",
             lambda m, d: m["flow"].density_grid(image_embeddings=torch.randn(1, 16), resolution_deg=0.001)),
    BadInput("flow.density_grid resolution_deg='fine'", "resolution_deg",
             lambda m, d: m["flow"].density_grid(image_embeddings=torch.randn(1, 16), resolution_deg="fine")),
    BadInput("flow.log_prob radial_nodes=1e9", "radial_nodes",
             lambda m, d: log_prob(m, key="flow_r3", radial_nodes=10**9)),
    BadInput("flow.log_prob num_steps=1e9", "num_steps",
             lambda m, d: log_prob(m, method="gamma_trapezoid", num_steps=10**9)),
    BadInput("flow.log_prob latlon='here'", "latlon", lambda m, d: log_prob(m, latlon="here")),
    BadInput("flow.log_prob latlon=nan", "latlon", lambda m, d: log_prob(m, latlon=[[NAN, 0.0]])),
    BadInput("flow.log_prob guidance_scale='x'", "guidance_scale", lambda m, d: log_prob(m, guidance_scale="x")),
    BadInput("flow.log_prob batch_size=2.5", "batch_size", lambda m, d: log_prob(m, batch_size=2.5)),
    BadInput("flow.log_prob dtype=int64", "dtype", lambda m, d: log_prob(m, dtype=torch.int64)),
    # Sphere flow: network config
    BadInput("GeoAdaLNMLP dim=1e9", "dim", lambda m, d: GeoAdaLNMLP(dim=10**9)),
    BadInput("GeoAdaLNMLP depth=1e6", "depth", lambda m, d: GeoAdaLNMLP(depth=10**6)),
    BadInput("GeoAdaLNMLP expansion=1e6", "expansion", lambda m, d: GeoAdaLNMLP(expansion=10**6)),
    BadInput("GeoAdaLNMLP cond_dim=2.5", "cond_dim", lambda m, d: GeoAdaLNMLP(cond_dim=2.5)),
    BadInput("GeoAdaLNMLP depth='12'", "depth", lambda m, d: GeoAdaLNMLP(depth="12")),
    # GeoCLIP: predict
    BadInput("geoclip.predict gallery=1e7", "gallery", lambda m, d: geoclip(m, gallery=10_000_000)),
    BadInput("geoclip.predict gallery=True", "gallery", lambda m, d: geoclip(m, gallery=True)),
    BadInput("geoclip.predict gallery=-5", "gallery", lambda m, d: geoclip(m, gallery=-5)),
    BadInput("geoclip.predict batch_size=0", "batch_size", lambda m, d: geoclip(m, batch_size=0)),
    BadInput("geoclip.predict batch_size=2.5", "batch_size", lambda m, d: geoclip(m, batch_size=2.5)),
    BadInput("geoclip.predict top_k=2.5", "top_k", lambda m, d: geoclip(m, top_k=2.5)),
    BadInput("geoclip.predict top_k=0", "top_k", lambda m, d: geoclip(m, top_k=0)),
    BadInput("geoclip.predict top_k=1e9", "top_k", lambda m, d: geoclip(m, top_k=10**9)),
    BadInput("geoclip.predict prior_radius_km='far'", "prior_radius_km",
             lambda m, d: geoclip(m, prior_latlon=[0.0, 0.0], prior_radius_km="far")),
    BadInput("geoclip.predict prior_radius_km=nan", "prior_radius_km",
             lambda m, d: geoclip(m, prior_latlon=[0.0, 0.0], prior_radius_km=NAN)),
    # GeoCLIP: images
    BadInput("geoclip.predict images=5", "images", lambda m, d: geoclip(m, images=5)),
    BadInput("geoclip.predict images=[5]", "images", lambda m, d: geoclip(m, images=[5])),
    BadInput("geoclip.predict images (2, 3, 7, 7)", "images", lambda m, d: geoclip(m, images=torch.randn(2, 3, 7, 7))),
    BadInput("geoclip.predict images (3, 224)", "images", lambda m, d: geoclip(m, images=torch.randn(3, 224))),
    BadInput("geoclip.predict images nan", "images",
             lambda m, d: geoclip(m, images=torch.full((1, 3, 32, 32), NAN))),
    BadInput("geoclip.predict images=bomb path", "images", lambda m, d: geoclip(m, images=[bomb_png(d / "bomb.png")])),
    BadInput("geoclip.predict images=bomb PIL", "images",
             lambda m, d: with_lazy_bomb(d, lambda img: geoclip(m, images=img))),
    BadInput("geoclip.predict ten_crop images=bomb PIL", "images",
             lambda m, d: with_lazy_bomb(d, lambda img: geoclip(m, images=[img], ten_crop=True))),
    BadInput("geoclip.predict images=missing file", "images", lambda m, d: geoclip(m, images=[d / "missing.png"])),
    BadInput("geoclip.embed_images bomb path", "images",
             lambda m, d: m["geoclip"].embed_images(bomb_png(d / "bomb2.png"))),
    BadInput("geoclip.embed_images batch_size=0", "batch_size",
             lambda m, d: m["geoclip"].embed_images(torch.zeros(1, 3, 32, 32), batch_size=0)),
    # GeoCLIP: text queries
    BadInput("geoclip.text_query resolution_deg=0.05", "resolution_deg",
             lambda m, d: m["geoclip"].text_query(["a beach"], resolution_deg=0.05)),
    BadInput("geoclip.text_query resolution_deg='x'", "resolution_deg",
             lambda m, d: m["geoclip"].text_query(["a beach"], resolution_deg="x")),
    BadInput("geoclip.text_query top_k=2.5", "top_k", lambda m, d: m["geoclip"].text_query(["a beach"], top_k=2.5)),
    BadInput("geoclip.text_query texts=5", "texts", lambda m, d: m["geoclip"].text_query(5)),
    # GeoCLIP / location encoder: config
    BadInput("GeoCLIP hidden_dim=1e9", "hidden_dim", lambda m, d: GeoCLIP(hidden_dim=10**9)),
    BadInput("GeoCLIP num_layers=1e6", "num_layers", lambda m, d: GeoCLIP(num_layers=10**6)),
    BadInput("GeoCLIP embedding_dim=1e9", "embedding_dim", lambda m, d: GeoCLIP(embedding_dim=10**9)),
    BadInput("GeoCLIP projection_dim=0", "projection_dim", lambda m, d: GeoCLIP(projection_dim=0)),
    BadInput("GeoCLIP sigmas=(1, 'x')", "sigmas", lambda m, d: GeoCLIP(sigmas=(1.0, "x"))),
    BadInput("GeoCLIP sigmas=5", "sigmas", lambda m, d: GeoCLIP(sigmas=5)),
    BadInput("LocationEncoder num_features=1e9", "num_features", lambda m, d: LocationEncoder(num_features=10**9)),
    BadInput("LocationEncoder hidden_dim=2.5", "hidden_dim", lambda m, d: LocationEncoder(hidden_dim=2.5)),
    # LocDiff
    BadInput("locdiff.predict num_inference_steps=2.5", "num_inference_steps",
             lambda m, d: locdiff(m, num_inference_steps=2.5)),
    BadInput("locdiff.predict num_inference_steps=True", "num_inference_steps",
             lambda m, d: locdiff(m, num_inference_steps=True)),
    BadInput("locdiff.predict num_inference_steps=1e9", "num_inference_steps",
             lambda m, d: locdiff(m, num_inference_steps=10**9)),
    BadInput("locdiff.predict num_samples=2.5", "num_samples", lambda m, d: locdiff(m, num_samples=2.5)),
    BadInput("locdiff.predict num_samples=1e9", "num_samples", lambda m, d: locdiff(m, num_samples=10**9)),
    BadInput("locdiff.predict top_k=1.5", "top_k", lambda m, d: locdiff(m, top_k=1.5)),
    BadInput("locdiff.predict generator=1234", "generator", lambda m, d: locdiff(m, generator=1234)),
    BadInput("locdiff.predict batch_size='a'", "batch_size", lambda m, d: locdiff(m, batch_size="a")),
    BadInput("locdiff.predict density_radius_km=nan", "density_radius_km",
             lambda m, d: locdiff(m, density_radius_km=NAN)),
    BadInput("locdiff.predict images=5", "images", lambda m, d: m["locdiff"].predict(images=5)),
    BadInput("locdiff.sample_coefficients latents=nan", "latents",
             lambda m, d: m["locdiff"].sample_coefficients(torch.randn(1, 8), num_inference_steps=2,
                                                           latents=torch.full((1, 16), NAN))),  # fmt: skip
    BadInput("locdiff.predict_hybrid radius_km=-1", "radius_km",
             lambda m, d: m["locdiff"].predict_hybrid(m["geoclip8"], torch.randn(2, 8), radius_km=-1.0)),
    BadInput("locdiff.predict_hybrid top_k=2.5", "top_k",
             lambda m, d: m["locdiff"].predict_hybrid(m["geoclip8"], torch.randn(2, 8), top_k=2.5)),
    BadInput("CSUNet block_out_dims=(1e6, 1e6)", "block_out_dims",
             lambda m, d: CSUNet(block_out_dims=(10**6, 10**6))),
    BadInput("CSUNet time_embed_dim=1e9", "time_embed_dim", lambda m, d: CSUNet(time_embed_dim=10**9)),
    BadInput("CSUNet sample_dim=2.5", "sample_dim", lambda m, d: CSUNet(sample_dim=2.5)),
    BadInput("CSUNet block_out_dims=5", "block_out_dims", lambda m, d: CSUNet(block_out_dims=5)),
    BadInput("SHDD max_degree=1e6", "max_degree", lambda m, d: SHDD(max_degree=10**6)),
    BadInput("SHDD decode_anchors=1e12", "decode_anchors", lambda m, d: SHDD(decode_anchors=10**12)),
    # GPS-to-image
    BadInput("gps generator=1234", "generator", lambda m, d: gps(m, generator=1234)),
    BadInput("gps generator=[1234]", "generator", lambda m, d: gps(m, generator=[1234])),
    BadInput("gps latents=nan", "latents", lambda m, d: gps(m, latents=torch.full((1, 4, 8, 8), NAN))),
    BadInput("gps latents wrong shape", "latents", lambda m, d: gps(m, latents=torch.zeros(1, 4, 4, 4))),
    BadInput("gps latents=list", "latents", lambda m, d: gps(m, latents=[0.0] * 4)),
    BadInput("gps gps_guidance_scale=1e30", "gps_guidance_scale", lambda m, d: gps(m, gps_guidance_scale=1e30)),
    BadInput("gps text_guidance_scale='x'", "text_guidance_scale", lambda m, d: gps(m, text_guidance_scale="x")),
    BadInput("gps height=4096", "height", lambda m, d: gps(m, height=4096)),
    BadInput("gps width=1030", "width", lambda m, d: gps(m, width=1030)),
    BadInput("gps height=2.5", "height", lambda m, d: gps(m, height=2.5)),
    BadInput("gps num_inference_steps=1e9", "num_inference_steps", lambda m, d: gps(m, num_inference_steps=10**9)),
    BadInput("gps num_gps_samples=1e9", "num_gps_samples", lambda m, d: gps(m, **area(num_gps_samples=10**9))),
    BadInput("gps gps_chunk_size=2.5", "gps_chunk_size", lambda m, d: gps(m, **area(gps_chunk_size=2.5))),
    BadInput("gps latitude='north'", "latitude", lambda m, d: gps(m, latitude="north")),
    # Angle-to-image
    BadInput("angle generator=1234", "generator", lambda m, d: angle(m, generator=1234)),
    BadInput("angle latents=inf", "latents", lambda m, d: angle(m, latents=torch.full((1, 4, 8, 8), INF))),
    BadInput("angle guidance_scale=1e30", "guidance_scale", lambda m, d: angle(m, guidance_scale=1e30)),
    BadInput("angle width=100000", "width", lambda m, d: angle(m, width=100_000)),
    BadInput("angle azimuth='north'", "azimuth", lambda m, d: angle(m, azimuth="north")),
    # Embedders (config)
    BadInput("GPSEmbedder hidden_size=1e9", "hidden_size", lambda m, d: GPSEmbedder(hidden_size=10**9)),
    BadInput("GPSEmbedder num_frequencies=1e6", "num_frequencies", lambda m, d: GPSEmbedder(num_frequencies=10**6)),
    BadInput("GPSEmbedder hidden_size=2.5", "hidden_size", lambda m, d: GPSEmbedder(hidden_size=2.5)),
    BadInput("AngleEmbedder mlp_hidden_dim=1e9", "mlp_hidden_dim", lambda m, d: AngleEmbedder(mlp_hidden_dim=10**9)),
    BadInput("AngleEmbedder hidden_size='768'", "hidden_size", lambda m, d: AngleEmbedder(hidden_size="768")),
)  # fmt: skip

# Cases that used to allocate gigabytes (or run unbounded) before any check: they must now fail at once.
FAST_FAIL_IDS = (
    "flow.predict num_inference_steps=1e9",
    "flow.predict num_samples=1e9",
    "flow.density_grid resolution_deg=0.001",
    "flow.log_prob radial_nodes=1e9",
    "flow.log_prob num_steps=1e9",
    "GeoAdaLNMLP dim=1e9",
    "GeoAdaLNMLP depth=1e6",
    "geoclip.predict gallery=1e7",
    "geoclip.text_query resolution_deg=0.05",
    "GeoCLIP hidden_dim=1e9",
    "locdiff.predict num_samples=1e9",
    "CSUNet block_out_dims=(1e6, 1e6)",
    "SHDD max_degree=1e6",
    "gps num_gps_samples=1e9",
    "gps height=4096",
    "GPSEmbedder hidden_size=1e9",
)


def try_bad_input(case: BadInput, models: dict[str, Any], tmp_dir: Path) -> str:
    """``"clear"`` when the case raises a ValueError naming its argument; else what happened instead."""
    try:
        case.call(models, tmp_dir)
    except ValueError as err:
        if re.search(re.escape(case.name), str(err)):
            return "clear"
        return f"ValueError not naming {case.name!r}: {err}"
    except Exception as err:  # noqa: BLE001 - the outcome to report
        return f"{type(err).__name__}: {err}"
    return "no error"


# ---------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def models():
    return build_models()


def test_cases_are_unique_and_cover_the_fast_fail_list():
    ids = [c.id for c in BAD_INPUTS]
    assert len(ids) == len(set(ids))
    assert set(FAST_FAIL_IDS) <= set(ids)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.id)
def test_bad_input_raises_value_error_naming_the_argument(case, models, tmp_path):
    with pytest.raises(ValueError) as info:
        case.call(models, tmp_path)
    assert not isinstance(info.value, (TypeError, RuntimeError, OverflowError)), case.id
    assert re.search(re.escape(case.name), str(info.value)), f"{case.id}: message does not name {case.name!r}"


@pytest.mark.parametrize("case_id", FAST_FAIL_IDS)
def test_bounded_calls_fail_fast_without_allocating(case_id, models, tmp_path):
    case = next(c for c in BAD_INPUTS if c.id == case_id)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the process's peak so far
    start = time.perf_counter()
    with pytest.raises(ValueError):
        case.call(models, tmp_path)
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert elapsed < 1.0, f"{case_id}: {elapsed:.2f} s before the error"
    assert grown_mib < 256, f"{case_id}: peak memory grew by {grown_mib:.0f} MiB before the error"


def test_good_neighbours_of_the_bad_inputs_still_work(models, tmp_path):
    """Whole floats are whole numbers; the bounds are not off by one."""
    m = models
    assert flow(m, num_inference_steps=2.0, num_samples=2.0).candidates.shape == (2, 2, 2)
    assert locdiff(m, num_inference_steps=2.0, top_k=2.0).candidates.shape == (2, 2, 2)
    assert geoclip(m, top_k=GALLERY, batch_size=1.0).candidates.shape == (2, GALLERY, 2)
    assert gps(m, gps_guidance_scale=1000.0, generator=[torch.Generator().manual_seed(0)]).images.shape == (1, 4, 8, 8)
    hybrid = m["locdiff"].predict_hybrid(m["geoclip8"], torch.randn(2, 8), top_k=3.0, gallery=GALLERY,
                                         num_samples=2, num_inference_steps=2)  # fmt: skip
    assert hybrid.candidates.shape == (2, 3, 2)
    img = Image.new("RGB", (40, 30))
    assert m["geoclip"].embed_images([img, img], batch_size=1).shape == (2, 32)
    grid = m["flow"].density_grid(image_embeddings=torch.randn(1, 16), resolution_deg=90, atol=1e-3, rtol=1e-3)
    assert grid.log_density.shape == (1, 2, 4) and math.isfinite(float(grid.log_density.sum()))
