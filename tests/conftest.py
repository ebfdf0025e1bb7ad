"""Test configuration: offline, deterministic, single-threaded, `slow` tests opt-in."""

import os
from contextlib import contextmanager

# Offline and quiet before anything imports huggingface_hub / gradio / transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from geo_models.testing.hub_server import local_hub  # noqa: E402, F401  (pytest fixture)

torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


# Tests of the apps and benchmarks compare no model arithmetic; every other test is `numerics`: scripts/test.sh
# runs those a second time under another MKL code path (see there).
NOT_NUMERICS = ("apps", "bench")


def pytest_collection_modifyitems(config, items):
    tests_root = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(tests_root).parts
        if parts[0] not in NOT_NUMERICS and parts[0] != "test_readme.py":
            item.add_marker(pytest.mark.numerics)
    if config.getoption("--runslow") or os.environ.get("RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow or RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def train_script():
    """Import a script of ``train/`` as a module: ``train_script("prepare_photos").main([...])``."""
    cache = {}

    def load(name: str):
        if name not in cache:
            spec = importlib.util.spec_from_file_location(f"train_{name}", REPO_ROOT / "train" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            cache[name] = module
        return cache[name]

    return load


@pytest.fixture(scope="session")
def embedding_parquet(tmp_path_factory):
    """48 training rows of 8-d embeddings whose first two features are the (scaled) location, so a geolocator can
    learn from them: the trainers' tiny runs read it."""
    from geo_models.data.embeddings import write_embedding_parquet

    g = torch.Generator().manual_seed(0)
    latlon = torch.rand(48, 2, generator=g) * torch.tensor([140.0, 340.0]) - torch.tensor([70.0, 170.0])
    emb = torch.cat([latlon / 90, torch.randn(48, 6, generator=g)], 1)
    path = tmp_path_factory.mktemp("emb") / "train.parquet"
    write_embedding_parquet(path, emb, latlon)
    return path


def _imagefolder(root, rows, pixels):
    from PIL import Image

    from geo_models.data.imagefolder import write_imagefolder_metadata

    (root / "images").mkdir()
    for row, image in zip(rows, pixels):
        Image.fromarray(image).save(root / row["file_name"])
    write_imagefolder_metadata(root, pd.DataFrame(rows))
    return root


@pytest.fixture(scope="session")
def geotagged_images(tmp_path_factory):
    """12 random 40x40 images spread over the globe (an imagefolder): the image-data runs of the trainers."""
    rng = np.random.default_rng(0)
    rows = [{"file_name": f"images/{i}.png", "latitude": -60.0 + 10 * i, "longitude": 150.0 - 25 * i}
            for i in range(12)]  # fmt: skip
    pixels = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in rows]
    return _imagefolder(tmp_path_factory.mktemp("images"), rows, pixels)


@pytest.fixture(scope="session")
def captioned_images(tmp_path_factory):
    """12 noisy single-colour images with three captions (an imagefolder with ``text``: what train_clip contrasts)."""
    rng = np.random.default_rng(0)
    captions = ["a photo taken in Krakow, Poland", "a photo taken in Tokyo, Japan", "a photo of the open ocean"]
    rows, pixels = [], []
    for i in range(12):
        pixels.append(np.clip(rng.integers(0, 255, 3) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8))
        rows.append({"file_name": f"images/{i}.png", "latitude": -50.0 + 8 * i, "longitude": 20.0 * i - 100,
                     "text": captions[i % 3]})  # fmt: skip
    return _imagefolder(tmp_path_factory.mktemp("captioned"), rows, pixels)


@pytest.fixture
def interrupted_after_checkpoint(monkeypatch):
    """``with interrupted_after_checkpoint(): main([...])``: the run dies right after saving its first checkpoint
    (``geo_models.training.checkpoints.save_checkpoint``), as if killed."""
    import geo_models.training.checkpoints

    save_checkpoint = geo_models.training.checkpoints.save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise Killed

    @contextmanager
    def interrupted():
        monkeypatch.setattr(geo_models.training.checkpoints, "save_checkpoint", save_then_die)
        try:
            with pytest.raises(Killed):
                yield
        finally:
            monkeypatch.setattr(geo_models.training.checkpoints, "save_checkpoint", save_checkpoint)

    return interrupted


@pytest.fixture(scope="session")
def launch_two_processes():
    """``launch(script name, argv) -> CompletedProcess``: ``train/<script>.py`` under ``accelerate launch
    --multi_gpu --num_processes 2`` (two CPU processes: torchrun + gloo), one thread each."""
    import socket
    import subprocess
    import sys

    def launch(script: str, argv: list[str]) -> subprocess.CompletedProcess:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(port), str(REPO_ROOT / "train" / f"{script}.py"), *argv]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    return launch
