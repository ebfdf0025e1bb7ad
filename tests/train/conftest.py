"""Fixtures shared by the Stable Diffusion fine-tuning script tests (e.g. ``test_train_angle_to_image.py``)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TINY_SD_FINETUNE = [
    "--resolution", "32", "--train_batch_size", "4", "--learning_rate", "1e-3", "--lora_rank", "2",
    "--validation_inference_steps", "2", "--logging_steps", "1",
]  # fmt: skip

_FRESH_PROCESS = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import geo_models.generation  # noqa: F401
    from diffusers import DiffusionPipeline

    images = []
    for source in sys.argv[4:]:
        pipe = DiffusionPipeline.from_pretrained(source)
        assert type(pipe).__name__ == sys.argv[2], type(pipe)
        images.append(pipe(**json.loads(sys.argv[3]), num_inference_steps=2, output_type="np",
                           generator=torch.Generator().manual_seed(0)).images)
    np.save(sys.argv[1], np.stack(images))
    """
)


@pytest.fixture(scope="session")
def tiny_sd_finetune_args():
    """Tiny-run flags of the SD fine-tuning scripts (32 px, batch 4, LoRA rank 2, 2 validation steps)."""
    return list(TINY_SD_FINETUNE)


@pytest.fixture
def generate_in_fresh_process(tmp_path):
    """``generate(class_name, call_kwargs, *sources) -> (len(sources), B, H, W, 3)``: each source (folder or Hub id)
    loaded with ``DiffusionPipeline.from_pretrained`` after ``import geo_models.generation`` in a new interpreter,
    checked to be ``class_name``, and called with ``call_kwargs`` (+ 2 steps, seed 0, numpy output)."""
    import json

    def generate(class_name: str, call: dict, *sources) -> np.ndarray:
        npy = tmp_path / "fresh_process_images.npy"
        cmd = [sys.executable, "-c", _FRESH_PROCESS, str(npy), class_name, json.dumps(call), *map(str, sources)]
        result = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return np.load(npy)

    return generate


@pytest.fixture(scope="session")
def metadata_only_copy():
    """``copy(src, dst, drop=())``: an imagefolder at ``dst`` with ``src``'s metadata.csv only (images by absolute
    path), less the ``drop`` columns: for data errors (no latitude column, no landmark.json next to the images...)."""
    import pandas as pd

    def copy(src, dst, drop: tuple[str, ...] = ()):
        meta = pd.read_csv(src / "metadata.csv").drop(columns=list(drop))
        meta["file_name"] = [str(src / f) for f in meta["file_name"]]
        meta.to_csv(dst / "metadata.csv", index=False)
        return dst

    return copy


@pytest.fixture(scope="session")
def unet_weights():
    """``unet_weights(folder) -> state dict`` of a saved pipeline's UNet."""
    from safetensors.torch import load_file

    return lambda folder: load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="session")
def tiny_sd_base(tmp_path_factory):
    """A saved tiny Stable Diffusion pipeline (``geo_models.testing.tiny``): the base the SD trainers fine-tune."""
    from geo_models.testing.tiny import tiny_stable_diffusion_pipeline

    path = tmp_path_factory.mktemp("tiny_sd") / "sd"
    tiny_stable_diffusion_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def sd_data(tmp_path_factory, tiny_sd_base):
    """``sd_data(name, **writers) -> folder``: ``sd/`` (the tiny base) and ``writer(folder / key)`` for each keyword
    (saved pipelines to continue from, training images)."""

    def make(name: str, **writers):
        root = tmp_path_factory.mktemp(name)
        (root / "sd").symlink_to(tiny_sd_base)
        for sub, write in writers.items():
            write(root / sub)
        return root

    return make


@pytest.fixture(scope="session")
def sd_trainer(train_script, tiny_sd_finetune_args):
    """``sd_trainer(script, data, train_data) -> run(out, *flags, base="sd")``: the script's ``main`` on
    ``data / base`` (a folder of bases) and ``data / train_data`` with the tiny flags."""

    def make(script: str, data, train_data: str):
        def run(out, *extra, base: str = "sd"):
            argv = ["--pretrained_model_name_or_path", str(data / base), "--train_data", str(data / train_data)]
            return train_script(script).main([*argv, "--output_dir", str(out), *tiny_sd_finetune_args, *extra])

        return run

    return make
