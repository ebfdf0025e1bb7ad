from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_losses_and_bf16(train_script, parquet, tmp_path, loss):
    pipe = train_script("train_locdiff").main(
        ["--train_data", str(parquet), "--output_dir", str(tmp_path), *TINY, "--max_train_steps", "2",
         "--loss", loss, "--prediction_type", "epsilon", "--mixed_precision", "bf16"]
    )  # fmt: skip
    assert all(torch.isfinite(p).all() for p in pipe.unet.parameters())
    assert pipe.unet.config.prediction_type == "epsilon" and pipe.scheduler.config.prediction_type == "epsilon"


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
