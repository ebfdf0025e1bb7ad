"""``--attach_backbone``: models trained on embedding parquet are saved with the backbone that computed the features,
so they predict from images (how the demo's starter checkpoints are built)."""

import pytest
import torch
from PIL import Image

from geo_models.data.procedural import generate_world
from geo_models.hub import load_model

ARGS = {
    "train_geoclip": ["--projection_dim", "16", "--hidden_dim", "32", "--num_features", "16", "--num_layers", "2",
                      "--queue_size", "32", "--train_batch_size", "8"],
    "train_locdiff": ["--degree", "3", "--block_out_dims", "16", "8", "--time_embed_dim", "16", "--num_anchors", "128",
                      "--decode_anchors", "500", "--train_batch_size", "8"],
    "train_flow": ["--dim", "16", "--depth", "2", "--expansion", "2", "--train_batch_size", "8",
                   "--lr_warmup_steps", "1"],
}  # fmt: skip
PREDICT = {"train_geoclip": {"top_k": 2}, "train_locdiff": {"num_samples": 2, "num_inference_steps": 2}}
PREDICT["train_flow"] = PREDICT["train_locdiff"]


@pytest.fixture(scope="module")
def embedded(train_script, tmp_path_factory):
    """A tiny world embedded with the shipped procedural-clip weights, and one embedded with random weights."""
    world = tmp_path_factory.mktemp("world")
    generate_world(world, num_images=8, image_size=32, seed=0, progress=False)
    out = {"world": world}
    for name, weights in [("named", ["--pretrained", "procedural"]), ("random", ["--allow_random_weights"])]:
        out[name] = tmp_path_factory.mktemp(name)
        train_script("embed_images").main(
            ["--train_data", str(world), "--output_dir", str(out[name]), "--model_name", "procedural-clip", *weights]
        )
    return out


@pytest.mark.parametrize("script", list(ARGS))
def test_attached_backbone_predicts_from_images(train_script, embedded, tmp_path, script):
    argv = ["--train_data", str(embedded["named"]), "--output_dir", str(tmp_path), "--max_train_steps", "2"]
    train_script(script).main([*argv, *ARGS[script], "--attach_backbone"])
    model = load_model(tmp_path)
    assert model.backbone is not None and model.backbone.model_name == "procedural-clip"
    assert model.backbone.pretrained == "procedural"
    images = [Image.open(p).convert("RGB") for p in sorted((embedded["world"] / "images").iterdir())[:2]]
    features = model.embed_images(images)
    seed = {} if script == "train_geoclip" else {"generator": torch.Generator().manual_seed(0)}
    a = model.predict(images=images, **PREDICT[script], **seed)
    seed = {} if script == "train_geoclip" else {"generator": torch.Generator().manual_seed(0)}
    b = model.predict(image_embeddings=features, **PREDICT[script], **seed)
    torch.testing.assert_close(a.latlon, b.latlon)
    # The backbone's weights are named, not copied: the checkpoint stays small.
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.safetensors")) < 2_000_000


@pytest.mark.parametrize(
    "data, match",
    [("random", "random backbone weights"), ("world", "is for embedding data")],
)
def test_attach_backbone_errors(train_script, embedded, tmp_path, capsys, data, match):
    argv = ["--train_data", str(embedded[data]), "--output_dir", str(tmp_path), "--max_train_steps", "1"]
    with pytest.raises(SystemExit):
        train_script("train_flow").main([*argv, *ARGS["train_flow"], "--attach_backbone"])
    assert match in capsys.readouterr().err
