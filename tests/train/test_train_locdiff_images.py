"""train_locdiff.py from images (imagefolder, WebDataset) through a tiny open_clip backbone: frozen, LoRA, full."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from geo_models.data.embeddings import write_embedding_parquet
from geo_models.data.procedural import generate_world
from geo_models.data.webdataset import write_webdataset
from geo_models.encoders.image import BACKBONE_WEIGHTS_NAME, OpenCLIPBackbone
from geo_models.hub import load_model
from geo_models.locdiff.pipeline import LocDiffPipeline
from geo_models.testing import assert_latlon_close

TINY = [
    "--degree", "3", "--block_out_dims", "16", "8", "--time_embed_dim", "16", "--num_anchors", "128",
    "--decode_anchors", "500", "--train_batch_size", "8", "--learning_rate", "1e-3",
    "--validation_num_samples", "2", "--validation_inference_steps", "2",
    "--backbone", "tiny-vit", "--backbone_pretrained", "none",
]  # fmt: skip
PREDICT = {"num_samples": 2, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_world(root, num_images=16, image_size=32, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(train_script, world, tmp_path_factory):
    """``trained(finetune) -> (pipeline returned by main, output folder)``, trained once per module."""
    cache = {}

    def train(finetune: str):
        if finetune not in cache:
            out = tmp_path_factory.mktemp(finetune)
            extra = ["--lora_rank", "2", "--num_views", "2", "--validation_data", str(world)] * (finetune == "lora")
            argv = ["--train_data", str(world), "--output_dir", str(out), *TINY, "--max_train_steps", "2"]
            cache[finetune] = train_script("train_locdiff").main([*argv, "--finetune", finetune, *extra]), out
        return cache[finetune]

    return train


def images(world, n=3) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((world / "images").iterdir())[:n]]


def predict(pipe, world):
    return pipe.predict(images=images(world), generator=torch.Generator().manual_seed(0), **PREDICT)


@pytest.mark.parametrize("finetune", ["frozen", "lora", "full"])
def test_finetune_modes_save_reload_predict(trained, world, finetune):
    pipe, out = trained(finetune)
    untrained = OpenCLIPBackbone("tiny-vit", None, seed=0).model.state_dict()
    state = pipe.backbone.model.state_dict()
    assert state.keys() == untrained.keys()  # LoRA merged: plain open_clip weights
    changed = [k for k in state if not torch.equal(state[k], untrained[k])]
    assert bool(changed) == (finetune != "frozen"), changed
    if finetune == "lora":  # only the adapted Linear layers of the vision tower move
        assert all(k.startswith("visual.") and k.endswith("weight") for k in changed)
    saved = out / "backbone" / BACKBONE_WEIGHTS_NAME
    assert saved.is_file() == (finetune != "frozen")  # frozen seeded-random weights are rebuilt from config
    assert json.loads((out / "config.json").read_text())["backbone"]["finetuned"] == (finetune != "frozen")
    loaded = LocDiffPipeline.from_pretrained(out)
    a, b = predict(pipe, world), predict(loaded, world)
    assert a.latlon.shape == (3, 2)  # loaded weights may run other MKL kernels: samples equal up to rounding
    assert_latlon_close(a.extras["samples"], b.extras["samples"])


def test_lora_validation_card_and_hub(trained, world, local_hub):
    pipe, out = trained("lora")
    assert json.loads((out / "eval_results.json").read_text())["n"] == 16
    assert "acc_2500km" in (out / "README.md").read_text()
    pipe.push_to_hub("tester/locdiff-lora")
    pulled = load_model("tester/locdiff-lora")
    # pulled weights may run other MKL kernels: samples equal up to rounding (geo_models.testing.tolerances)
    assert_latlon_close(predict(pulled, world).extras["samples"], predict(pipe, world).extras["samples"])


def test_evaluate_geolocation_on_imagefolder(train_script, trained, world, tmp_path):
    _, out = trained("full")
    metrics = train_script("evaluate_geolocation").main(
        ["--model", str(out), "--test_data", str(world), "--output_json", str(tmp_path / "eval.json"),
         "--top_k", "2", "--batch_size", "5", "--predict_kwargs", json.dumps(PREDICT)]
    )  # fmt: skip
    assert metrics["n"] == 16 and 0 <= metrics["acc_2500km"] <= 100
    assert len((tmp_path / "eval.per_image.csv").read_text().splitlines()) == 17


def test_resume_from_images_matches_uninterrupted_run(train_script, world, tmp_path):
    train = train_script("train_locdiff")
    common = ["--train_data", str(world), *TINY, "--finetune", "full", "--num_views", "2", "--dropout", "0.3"]
    # augmentations seeded per (seed, step, rank, item): the same views even from a fresh data-loading worker
    common += ["--checkpointing_steps", "2", "--seed", "1", "--dataloader_num_workers", "1"]
    train.main([*common, "--output_dir", str(tmp_path / "a"), "--max_train_steps", "4"])
    train.main([*common, "--output_dir", str(tmp_path / "b"), "--max_train_steps", "2"])
    train.main(
        [*common, "--output_dir", str(tmp_path / "b"), "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]
    )
    for part in ("unet/diffusion_pytorch_model.safetensors", f"backbone/{BACKBONE_WEIGHTS_NAME}"):
        a, b = load_file(str(tmp_path / "a" / part)), load_file(str(tmp_path / "b" / part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_webdataset_with_a_worker(train_script, world, tmp_path):
    shards = write_webdataset(world, tmp_path / "shards", shard_size=6)
    out = tmp_path / "wds"
    pipe = train_script("train_locdiff").main(
        ["--train_data", str(shards[0].parent), "--output_dir", str(out), *TINY, "--num_views", "2",
         "--dataloader_num_workers", "1", "--max_train_steps", "3"]
    )  # fmt: skip
    log = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert pipe.backbone is not None and predict(load_model(out), world).latlon.shape == (3, 2)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("emb") / "train.parquet"
    write_embedding_parquet(path, torch.randn(8, 4), torch.zeros(8, 2))
    return path


@pytest.mark.parametrize(
    "data, extra, message",
    [
        ("parquet", ["--finetune", "lora"], "--finetune lora/full"),
        ("parquet", ["--num_views", "2"], "--num_views > 1 need images"),
        ("parquet", ["--validation_data", "WORLD"], "--validation_data: images need a backbone"),
        ("world", ["--validation_data", "SHARDS"], "--validation_data"),
        ("world", ["--num_views", "0"], "--num_views must be >= 1"),
        ("world", ["--lora_rank", "0"], "--lora_rank must be >= 1"),
        ("world", ["--dataloader_num_workers", "-1"], "--dataloader_num_workers"),
        ("world", ["--augment_strength", "-1"], "--augment_strength"),
        ("world", ["--finetune", "half"], "--finetune"),
        ("world", ["--backbone", "no-such-net"], "--backbone 'no-such-net'"),
    ],
)
def test_cli_errors(train_script, world, parquet, tmp_path, capsys, data, extra, message):
    shards = tmp_path / "shards.tar"
    shards.write_bytes(b"")
    paths = {"WORLD": str(world), "SHARDS": str(shards)}
    argv = ["--train_data", str(parquet if data == "parquet" else world), "--output_dir", str(tmp_path)]
    argv += [paths.get(x, x) for x in extra]
    with pytest.raises(SystemExit):
        train_script("train_locdiff").parse_args(argv)
    assert message in capsys.readouterr().err
