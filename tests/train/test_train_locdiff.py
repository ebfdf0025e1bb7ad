import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from geo_models.hub import load_model
from geo_models.locdiff.pipeline import LocDiffPipeline
from geo_models.testing import assert_latlon_close

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--degree", "3", "--block_out_dims", "16", "8", "--time_embed_dim", "16", "--num_anchors", "128",
    "--decode_anchors", "500", "--train_batch_size", "16", "--learning_rate", "1e-3",
    "--validation_num_samples", "2", "--validation_inference_steps", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def parquet(embedding_parquet):
    return embedding_parquet


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "unet" / "diffusion_pytorch_model.safetensors"))


def test_resume_matches_uninterrupted_run(train_script, parquet, tmp_path):
    train = train_script("train_locdiff")
    common = ["--train_data", str(parquet), *TINY, "--checkpointing_steps", "3", "--seed", "1"]
    train.main([*common, "--output_dir", str(tmp_path / "a"), "--max_train_steps", "7"])
    train.main([*common, "--output_dir", str(tmp_path / "b"), "--max_train_steps", "3"])
    train.main(
        [*common, "--output_dir", str(tmp_path / "b"), "--max_train_steps", "7", "--resume_from_checkpoint", "latest"]
    )
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    log = [json.loads(line) for line in (tmp_path / "a" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 7 and all(np.isfinite(r["loss"]) for r in log)
    pipe = load_model(tmp_path / "a")
    assert isinstance(pipe, LocDiffPipeline) and pipe.shdd.max_degree == 3
    assert pipe.predict(image_embeddings=torch.randn(2, 8), num_samples=2, num_inference_steps=2).latlon.shape == (
        2,
        2,
    )


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_losses_and_bf16(train_script, parquet, tmp_path, loss):
    pipe = train_script("train_locdiff").main(
        ["--train_data", str(parquet), "--output_dir", str(tmp_path), *TINY, "--max_train_steps", "2",
         "--loss", loss, "--prediction_type", "epsilon", "--mixed_precision", "bf16"]
    )  # fmt: skip
    assert all(torch.isfinite(p).all() for p in pipe.unet.parameters())
    assert pipe.unet.config.prediction_type == "epsilon" and pipe.scheduler.config.prediction_type == "epsilon"


def test_push_to_hub_with_metrics(train_script, parquet, local_hub, tmp_path):
    train_script("train_locdiff").main(
        ["--train_data", str(parquet), "--output_dir", str(tmp_path / "o"), *TINY, "--max_train_steps", "2",
         "--validation_data", str(parquet), "--push_to_hub", "--hub_model_id", "tester/locdiff-train"]
    )  # fmt: skip
    from huggingface_hub import HfApi

    info = HfApi().model_info("tester/locdiff-train")
    assert "acc_25km" in info.card_data["metrics"] and "locdiff" in info.card_data["tags"]
    assert json.loads((tmp_path / "o" / "eval_results.json").read_text())["n"] == 48
    pulled, local = LocDiffPipeline.from_pretrained("tester/locdiff-train"), load_model(tmp_path / "o")
    x = torch.randn(2, 8)
    kw = dict(num_samples=2, num_inference_steps=2)
    a = pulled.predict(image_embeddings=x, generator=torch.Generator().manual_seed(0), **kw)
    b = local.predict(image_embeddings=x, generator=torch.Generator().manual_seed(0), **kw)
    # two loaded copies may run other MKL kernels: samples and their mean equal up to rounding (testing.tolerances)
    assert_latlon_close(a.extras["samples"], b.extras["samples"])
    assert_latlon_close(a.latlon, b.latlon)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train_data", "/nonexistent/x"], "--train_data"),
        (["--train_batch_size", "0"], "--train_batch_size"),
        (["--degree", "0"], "--degree"),
        (["--push_to_hub"], "--hub_model_id"),
        (["--loss", "huber"], "--loss"),
    ],
)
def test_cli_errors(train_script, parquet, tmp_path, capsys, extra, message):
    argv = ["--train_data", str(parquet), "--output_dir", str(tmp_path), *extra]
    with pytest.raises(SystemExit):
        train_script("train_locdiff").parse_args(argv)
    assert message in capsys.readouterr().err


def test_two_processes(parquet, tmp_path):
    """Two CPU processes under accelerate (torchrun + gloo): DDP over the CS-UNet, one checkpoint RNG per rank."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(port), str(REPO / "train" / "train_locdiff.py"),
        "--train_data", str(parquet), "--output_dir", str(out), *TINY,
        "--max_train_steps", "3", "--checkpointing_steps", "3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stderr
    assert sorted(p.name for p in (out / "checkpoint-3").glob("rng_state_*.json")) == [
        "rng_state_0.json",
        "rng_state_1.json",
    ]
    pred = load_model(out).predict(image_embeddings=torch.randn(2, 8), num_samples=2, num_inference_steps=2)
    assert pred.latlon.shape == (2, 2)
