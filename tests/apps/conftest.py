"""Fixtures of the app tests: tiny untrained models saved like the starter checkpoints, and a running hub."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `apps` is imported from the repository root, as `python apps/hub/app.py` does
    sys.path.insert(0, str(REPO_ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny random GeoCLIP / LocDiff / sphere-flow models on the `tiny-vit` backbone, saved with save_pretrained."""
    from geo_models.encoders.image import OpenCLIPBackbone
    from geo_models.flow import SphereFlowPipeline
    from geo_models.geoclip import GeoCLIP
    from geo_models.geoclip.gallery import fibonacci_gallery
    from geo_models.locdiff.modeling import CSUNet
    from geo_models.locdiff.pipeline import LocDiffPipeline, make_scheduler
    from geo_models.testing import tiny_sphere_flow_pipeline

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    geoclip = GeoCLIP(embedding_dim=32, projection_dim=16, num_features=16, hidden_dim=32, num_layers=2,
                      backbone="tiny-vit")  # fmt: skip
    geoclip.gallery = fibonacci_gallery(2000)  # saved with the model: a small default gallery
    geoclip.save_pretrained(root / "geoclip")
    unet = CSUNet(sample_dim=16, condition_dim=32, block_out_dims=(32, 8), time_embed_dim=16)
    locdiff = LocDiffPipeline(unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 500},
                              backbone=OpenCLIPBackbone("tiny-vit"))  # fmt: skip
    locdiff.save_pretrained(root / "locdiff")
    network = tiny_sphere_flow_pipeline(embedding_dim=32).network
    flow = SphereFlowPipeline(network, backbone=OpenCLIPBackbone("tiny-vit"))
    flow.save_pretrained(root / "sphere_flow")
    return {name: str(root / name) for name in ("geoclip", "locdiff", "sphere_flow")}


@pytest.fixture(scope="session")
def photo_path(tmp_path_factory) -> Path:
    """A 96x64 JPEG carrying EXIF GPS (Paris)."""
    from geo_models.data.exif import gps_exif

    path = tmp_path_factory.mktemp("photos") / "paris.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path, exif=gps_exif(48.8566, 2.3522))
    return path


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """A text file named .png, and a 20000x20000 PNG (valid header, truncated data: no 400 MP decode anywhere)."""
    import struct
    import zlib

    d = tmp_path_factory.mktemp("bad")
    (d / "notes.png").write_text("this is not an image\n")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 60000)  # first rows only
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    (d / "huge.png").write_bytes(png)
    return {"not_image": d / "notes.png", "huge": d / "huge.png"}


@pytest.fixture(scope="session")
def settings(tiny_model_dirs):
    from apps.common.settings import Settings

    # generous per-client limits: every test request comes from 127.0.0.1 (test_client_limits.py checks the limits)
    limits = {"requests_per_minute": 10_000, "uploads_per_minute": 10_000}
    models = dict(tiny_model_dirs)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":  # apps/README.md's screenshots show the starter geolocators
        from apps.common.settings import STARTER_DIR

        models = {name: str(STARTER_DIR / name) for name in models if (STARTER_DIR / name).is_dir()} or models
    return Settings(models=models, port=free_port(), **limits)


@pytest.fixture(scope="session")
def store(settings):
    from apps.common.models import ModelStore

    store = ModelStore(settings)
    assert store.load_all() == {"geoclip": None, "locdiff": None, "sphere_flow": None}
    return store


@pytest.fixture(scope="session")
def hub_url(settings, store):
    """The hub with the tiny models, served on a free port for the whole session."""
    from apps.common.launch import launch_kwargs, prepare
    from apps.hub.app import create_demo

    demo, _ = prepare(create_demo, settings, store)
    demo.launch(**launch_kwargs(settings), prevent_thread_lock=True, quiet=True)
    yield f"http://{settings.host}:{settings.port}/"
    demo.close()
