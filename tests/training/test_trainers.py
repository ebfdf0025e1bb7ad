"""Every trainer on the shared harness (geo_models.training), tested once as a table: a resumed run equals an
uninterrupted one (the script's loss draws all its randomness from the step's generator or the checkpointed RNG),
bf16 runs, two CPU processes. Script-specific behaviour and flag errors stay in tests/train/test_<script>.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
# script -> (data fixture, tiny flags, the saved weights file compared after a resume)
TRAINERS = {
    "train_flow": ("embedding_parquet", [
        "--dim", "16", "--depth", "2", "--expansion", "2", "--train_batch_size", "16", "--learning_rate", "1e-3",
        "--lr_warmup_steps", "2", "--validation_num_samples", "2", "--validation_inference_steps", "2",
    ], "network/diffusion_pytorch_model.safetensors"),
    "train_locdiff": ("embedding_parquet", [
        "--degree", "3", "--block_out_dims", "16", "8", "--time_embed_dim", "16", "--num_anchors", "128",
        "--decode_anchors", "500", "--train_batch_size", "16", "--learning_rate", "1e-3",
        "--validation_num_samples", "2", "--validation_inference_steps", "2",
    ], "unet/diffusion_pytorch_model.safetensors"),
    "train_geoclip": ("embedding_parquet", [
        "--projection_dim", "16", "--hidden_dim", "32", "--num_features", "16", "--num_layers", "2",
        "--queue_size", "64", "--train_batch_size", "16", "--learning_rate", "1e-3",
    ], "model.safetensors"),
    "train_gps_clip": ("embedding_parquet", [
        "--hidden_dim", "16", "--train_batch_size", "16", "--lr_warmup_steps", "2", "--learning_rate", "1e-3",
    ], "model.safetensors"),
    "train_clip": ("captioned_images", [
        "--model_name", "tiny-vit", "--train_batch_size", "4", "--learning_rate", "1e-3", "--lr_warmup_steps", "1",
    ], "open_clip_model.safetensors"),
}  # fmt: skip


def flags(request, name: str, output_dir, *extra) -> list[str]:
    fixture, tiny, _ = TRAINERS[name]
    return ["--train_data", str(request.getfixturevalue(fixture)), "--output_dir", str(output_dir), *tiny, *extra]


def read_log(folder) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "logs" / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_resume_matches_uninterrupted_run(name, request, train_script, tmp_path, interrupted_after_checkpoint):
    """Gradient accumulation 2, killed right after the checkpoint of step 2 and resumed: the same saved weights,
    losses and learning rates as 5 steps in one go."""
    train = train_script(name)
    common = ["--max_train_steps", "5", "--checkpointing_steps", "2", "--gradient_accumulation_steps", "2"]
    common += ["--seed", "1", "--logging_steps", "1"]
    train.main(flags(request, name, tmp_path / "a", *common))
    with interrupted_after_checkpoint():
        train.main(flags(request, name, tmp_path / "b", *common))
    assert [p.name for p in (tmp_path / "b").glob("checkpoint-*")] == ["checkpoint-2"]
    train.main(flags(request, name, tmp_path / "b", *common, "--resume_from_checkpoint", "latest"))
    weights = TRAINERS[name][2]
    a, b = (load_file(str(tmp_path / run / weights)) for run in "ab")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in log_a] == [1, 2, 3, 4, 5]  # optimizer steps, each of 2 micro-batches
    assert [(r["loss"], r["lr"]) for r in log_a] == [(r["loss"], r["lr"]) for r in log_b]
    assert all(np.isfinite(r["loss"]) for r in log_a)


@pytest.mark.parametrize("name", ["train_flow", "train_locdiff", "train_geoclip", "train_gps_clip"])
def test_bf16(name, request, train_script, tmp_path):
    train_script(name).main(flags(request, name, tmp_path, "--max_train_steps", "2", "--mixed_precision", "bf16"))
    saved = load_file(str(tmp_path / TRAINERS[name][2]))
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "name", ["train_flow", pytest.param("train_geoclip", marks=pytest.mark.slow),
             pytest.param("train_locdiff", marks=pytest.mark.slow)],
)  # fmt: skip
def test_two_processes(name, request, tmp_path, launch_two_processes):
    """Two CPU processes under accelerate (torchrun + gloo): DDP through the harness, each rank's RNG state and the
    custom states (EMA, GPS queue) checkpointed, the model saved once."""
    out = tmp_path / "ddp"
    argv = flags(request, name, out, "--max_train_steps", "3", "--checkpointing_steps", "3")
    result = launch_two_processes(name, argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes" in result.stderr
    assert sorted(p.name for p in (out / "checkpoint-3").glob("rng_state_*.json")) == [
        "rng_state_0.json",
        "rng_state_1.json",
    ]
    assert (out / TRAINERS[name][2]).is_file()


@pytest.mark.parametrize(
    "name, metric", [("train_flow", "nll"), ("train_locdiff", "acc_25km"), ("train_geoclip", "acc_25km"),
                     ("train_gps_clip", "gps_score")],
)  # fmt: skip
def test_validation_card_and_push(name, metric, request, train_script, local_hub, tmp_path):
    """--validation_data -> eval_results.json and the card's metrics; --push_to_hub uploads the saved folder (not its
    checkpoints or logs), which loads from the Hub and predicts like the local copy."""
    from huggingface_hub import HfApi

    from geo_models.hub import load_model
    from geo_models.testing import assert_latlon_close

    data, repo = request.getfixturevalue(TRAINERS[name][0]), f"tester/{name.replace('_', '-')}"
    argv = ["--max_train_steps", "2", "--checkpointing_steps", "1", "--validation_data", str(data)]
    train_script(name).main(flags(request, name, tmp_path, *argv, "--push_to_hub", "--hub_model_id", repo))
    metrics = json.loads((tmp_path / "eval_results.json").read_text())
    assert metrics["n"] == 48 and np.isfinite(metrics[metric])
    info = HfApi().model_info(repo)
    assert metric in info.card_data["metrics"]
    files = HfApi().list_repo_files(repo)
    assert TRAINERS[name][2] in files and not any(f.startswith(("checkpoint-", "logs/")) for f in files)
    pulled, local = load_model(repo), load_model(tmp_path)
    x = torch.randn(3, 8)
    if name == "train_gps_clip":
        latlon = torch.tensor([[10.0, 20.0], [-30.0, 40.0], [50.0, -60.0]])
        torch.testing.assert_close(pulled.gps_score(image_embeddings=x, latlon=latlon),
                                   local.gps_score(image_embeddings=x, latlon=latlon))  # fmt: skip
    else:
        predict = {"num_samples": 2, "num_inference_steps": 2} if name != "train_geoclip" else {}
        kwargs = {"generator": torch.Generator().manual_seed(0)} if predict else {}
        a = pulled.predict(image_embeddings=x, **predict, **kwargs)
        kwargs = {"generator": torch.Generator().manual_seed(0)} if predict else {}
        assert_latlon_close(a.latlon, local.predict(image_embeddings=x, **predict, **kwargs).latlon)
