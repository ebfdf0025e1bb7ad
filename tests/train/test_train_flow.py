"""train_flow.py: the three objectives, EMA, exact resume, validation (with NLL) into the card, Hub, 2 processes,
images through a tiny backbone, CLI errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from geo_models.data.procedural import generate_world
from geo_models.encoders.image import BACKBONE_WEIGHTS_NAME
from geo_models.flow import SphereFlowPipeline
from geo_models.hub import load_model
from geo_models.testing import assert_latlon_close
from geo_models.testing.tolerances import TIGHT_LOG_PROB_ATOL

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--dim", "16", "--depth", "2", "--expansion", "2", "--train_batch_size", "16", "--learning_rate", "1e-3",
    "--lr_warmup_steps", "1", "--validation_num_samples", "2", "--validation_inference_steps", "2",
]  # fmt: skip
PREDICT = {"num_samples": 2, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def parquet(embedding_parquet):
    return embedding_parquet


def assert_same_predictions(a, b):
    """Predictions of equal weights, one copy loaded (other MKL kernels, geo_models.testing.tolerances): the same
    samples and sorted scores up to rounding; the best of N may swap on a near-tie, so latlon is not compared. The
    scores are dopri5 solves at predict's tolerance 1e-5, where float32 rounding steers the step control."""
    assert_latlon_close(a.extras["samples"], b.extras["samples"])
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=TIGHT_LOG_PROB_ATOL)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "network" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("objective", ["riemannian", "flow_r3", "diffusion_r3"])
def test_objectives_save_and_reload(train_script, parquet, tmp_path, objective):
    pipe = train_script("train_flow").main(
        ["--train_data", str(parquet), "--output_dir", str(tmp_path), *TINY, "--max_train_steps", "3",
         "--objective", objective]
    )  # fmt: skip
    assert pipe.objective.name == objective
    loaded = load_model(tmp_path)
    assert isinstance(loaded, SphereFlowPipeline) and loaded.objective.name == objective
    assert json.loads((tmp_path / "config.json").read_text())["objective"] == objective
    assert loaded.network.config.dim == 16 and loaded.network.config.depth == 2 and loaded.embedding_dim == 8
    saved, returned = weights(tmp_path), pipe.network.state_dict()
    assert all(torch.equal(saved[k], returned[k]) for k in saved)
    x = torch.randn(2, 8)
    a = loaded.predict(image_embeddings=x, generator=torch.Generator().manual_seed(0), **PREDICT)
    b = pipe.predict(image_embeddings=x, generator=torch.Generator().manual_seed(0), **PREDICT)
    assert a.latlon.shape == (2, 2)
    assert_same_predictions(a, b)
    logp = loaded.log_prob(torch.tensor([[10.0, 20.0]]), image_embeddings=x[:1], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(logp).all()
    log = [json.loads(line) for line in (tmp_path / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and all(np.isfinite(r["loss"]) for r in log)


def test_saved_weights_are_the_ema(train_script, parquet, tmp_path):
    """--ema_decay 0 saves the last weights; the default EMA saves an average that differs from them."""
    train = train_script("train_flow")
    common = ["--train_data", str(parquet), *TINY, "--max_train_steps", "4", "--seed", "2"]
    raw = train.main([*common, "--output_dir", str(tmp_path / "raw"), "--ema_decay", "0"])
    ema = train.main([*common, "--output_dir", str(tmp_path / "ema"), "--ema_decay", "0.999"])
    a, b = raw.network.state_dict(), ema.network.state_dict()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed and all(torch.isfinite(v).all() for v in b.values())


def test_images_lora_with_validation(train_script, tmp_path):
    """Imagefolder through a tiny open_clip backbone, LoRA on 2 views; validation on images (NLL via the backbone)."""
    world = tmp_path / "world"
    generate_world(world, num_images=12, image_size=32, seed=0, progress=False)
    out = tmp_path / "out"
    pipe = train_script("train_flow").main(
        ["--train_data", str(world), "--output_dir", str(out), *TINY, "--train_batch_size", "4",
         "--backbone", "tiny-vit", "--backbone_pretrained", "none", "--finetune", "lora", "--lora_rank", "2",
         "--num_views", "2", "--max_train_steps", "2", "--validation_data", str(world)]
    )  # fmt: skip
    assert pipe.backbone is not None and (out / "backbone" / BACKBONE_WEIGHTS_NAME).is_file()
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["n"] == 12 and np.isfinite(metrics["nll"])
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted((world / "images").iterdir())[:2]]
    loaded = load_model(out)
    a = loaded.predict(images=images, generator=torch.Generator().manual_seed(0), **PREDICT)
    b = pipe.predict(images=images, generator=torch.Generator().manual_seed(0), **PREDICT)
    assert_latlon_close(a.extras["samples"], b.extras["samples"])  # loaded weights: equal up to rounding


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train_data", "/nonexistent/x"], "--train_data"),
        (["--objective", "sde"], "--objective"),
        (["--dim", "0"], "--dim"),
        (["--depth", "0"], "--depth"),
        (["--expansion", "0"], "--expansion"),
        (["--train_batch_size", "0"], "--train_batch_size"),
        (["--ema_decay", "1"], "--ema_decay"),
        (["--cond_drop_prob", "1.5"], "--cond_drop_prob"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--schedule_tau", "0"], "--schedule_"),
        (["--validation_sampler", "ddpm"], "--objective diffusion_r3"),
        (["--push_to_hub"], "--hub_model_id"),
        (["--finetune", "lora"], "--finetune lora/full"),
    ],
)
def test_cli_errors(train_script, parquet, tmp_path, capsys, extra, message):
    argv = ["--train_data", str(parquet), "--output_dir", str(tmp_path), *extra]
    with pytest.raises(SystemExit):
        train_script("train_flow").parse_args(argv)
    assert message in capsys.readouterr().err
