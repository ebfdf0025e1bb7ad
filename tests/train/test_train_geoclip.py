import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from geo_models.data.webdataset import write_webdataset
from geo_models.geoclip import GeoCLIP

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--projection_dim", "16", "--hidden_dim", "32", "--num_features", "16", "--num_layers", "2",
    "--queue_size", "64", "--train_batch_size", "16", "--learning_rate", "1e-3",
]  # fmt: skip


@pytest.fixture(scope="module")
def parquet(embedding_parquet):
    return embedding_parquet


@pytest.fixture(scope="module")
def imagefolder(geotagged_images):
    return geotagged_images


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def test_images_lora_two_views_and_card(train_script, imagefolder, tmp_path):
    out = tmp_path / "lora"
    train_script("train_geoclip").main(
        [
            "--train_data", str(imagefolder), "--output_dir", str(out), *TINY, "--backbone", "tiny-vit",
            "--backbone_pretrained", "none", "--finetune", "lora", "--lora_rank", "2", "--num_views", "2",
            "--max_train_steps", "2", "--validation_data", str(imagefolder),
        ]
    )  # fmt: skip
    state = weights(out)
    assert any(k.startswith("backbone.") for k in state) and not any("lora" in k for k in state)
    model = GeoCLIP.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["backbone_finetuned"] is True
    pred = model.predict(images=[Image.open(imagefolder / "images/0.png")], top_k=2)
    assert pred.candidates.shape == (1, 2, 2)
    card = (out / "README.md").read_text()
    assert "acc_2500km" in card and "library_name: geo_models" in card


def test_webdataset_full_finetune(train_script, imagefolder, tmp_path):
    shards = write_webdataset(imagefolder, tmp_path / "shards", shard_size=5)
    out = tmp_path / "full"
    train_script("train_geoclip").main(
        ["--train_data", str(shards[0].parent), "--output_dir", str(out), *TINY, "--backbone", "tiny-vit",
         "--backbone_pretrained", "none", "--finetune", "full", "--max_train_steps", "2"]
    )  # fmt: skip
    assert any(k.startswith("backbone.") for k in weights(out))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--finetune", "lora"], "--finetune lora/full"),
        (["--train_data", "/nonexistent/x"], "--train_data"),
        (["--train_batch_size", "0"], "--train_batch_size"),
        (["--push_to_hub"], "--hub_model_id"),
    ],
)
def test_cli_errors(train_script, parquet, tmp_path, capsys, extra, message):
    argv = ["--train_data", str(parquet), "--output_dir", str(tmp_path), *extra]
    with pytest.raises(SystemExit):
        train_script("train_geoclip").parse_args(argv)
    assert message in capsys.readouterr().err


def test_haversine_smoothing_and_ema_run_and_the_averaged_weights_are_saved(train_script, parquet, tmp_path):
    """--haversine_smoothing_km trains (finite weights); with --ema_decay the saved weights are the averages, not the
    last step's (a run without averaging from the same seed ends elsewhere)."""
    runs = {}
    for name, extra in [("plain", []), ("ema", ["--ema_decay", "0.9"])]:
        out = tmp_path / name
        train_script("train_geoclip").main(
            ["--train_data", str(parquet), "--output_dir", str(out), *TINY, "--max_train_steps", "4",
             "--haversine_smoothing_km", "300", *extra]
        )  # fmt: skip
        runs[name] = weights(out)
    assert all(torch.isfinite(v).all() for v in runs["ema"].values())
    assert any(not torch.equal(runs["plain"][k], runs["ema"][k]) for k in runs["plain"] if k != "gallery")


@pytest.mark.parametrize("extra, message", [(["--haversine_smoothing_km", "-1"], "--haversine_smoothing_km"),
                                            (["--ema_decay", "1"], "--ema_decay")])  # fmt: skip
def test_cli_errors_of_the_recipe_flags(train_script, parquet, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        train_script("train_geoclip").parse_args(["--train_data", str(parquet), "--output_dir", str(tmp_path), *extra])
    assert message in capsys.readouterr().err


def test_the_cpu_preset_sets_the_recipe_and_explicit_flags_win(train_script, parquet, tmp_path):
    argv = ["--train_data", str(parquet), "--output_dir", str(tmp_path), "--preset", "cpu"]
    args = train_script("train_geoclip").parse_args(argv)
    assert (args.max_train_steps, args.ema_decay, args.point_estimate) == (500, 0.999, "coarse_to_fine")
    args = train_script("train_geoclip").parse_args([*argv, "--max_train_steps", "7", "--hidden_dim", "64"])
    assert (args.max_train_steps, args.hidden_dim, args.queue_size) == (7, 64, 1024)
