import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from geo_models.encoders import LocationEncoder
from geo_models.hub import (
    DIFFUSERS_CLASS_TYPES,
    MODEL_TYPES,
    load_model,
    model_class,
    read_config,
    register_model_type,
    render_model_card,
)

TINY = dict(sigmas=(1.0, 16.0), num_features=8, hidden_dim=16, num_layers=2, output_dim=4)


def test_registry_classes_declare_their_model_type():
    for model_type in MODEL_TYPES:
        assert model_class(model_type).model_type == model_type
    for class_name, model_type in DIFFUSERS_CLASS_TYPES.items():
        assert model_class(model_type).__name__ == class_name
    with pytest.raises(ValueError, match="not registered"):
        model_class("nope")
    with pytest.raises(ValueError, match="module:Class|package.module:ClassName"):
        register_model_type("x", "no_colon")


def test_save_load_local_round_trip(tmp_path):
    model = LocationEncoder(**TINY, seed=5)
    model.save_pretrained(tmp_path)
    config = read_config(tmp_path)
    assert config["model_type"] == "location_encoder" and config["seed"] == 5
    loaded = load_model(tmp_path)
    x = torch.tensor([[1.0, 2.0], [-45.0, 170.0]])
    assert isinstance(loaded, LocationEncoder) and not loaded.training
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the weights, bit for bit
    # loaded weights may run other MKL kernels: outputs equal up to float32 rounding (geo_models.testing.tolerances)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_loading_is_strict_and_safetensors_only(tmp_path):
    model = LocationEncoder(**TINY)
    model.save_pretrained(tmp_path)
    state = model.state_dict()
    state.pop("branches.0.head.bias")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="branches.0.head.bias"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle is never read
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_model(tmp_path)


def test_model_card_metadata_round_trip(tmp_path):
    card = render_model_card(
        "location_encoder",
        repo_id="someone/tiny-encoder",
        license="mit",
        tags=["procedural"],
        base_model="openai/clip-vit-large-patch14",
        datasets=["someone/geo-photos"],
        pipeline_tag="feature-extraction",
        metrics={"acc_25km": 12.5, "median_km": 830.0},
        training_data="procedural world images",
    )
    card.save(tmp_path / "README.md")
    back = ModelCard.load(tmp_path / "README.md")
    data = back.data.to_dict()
    assert data["license"] == "mit" and data["library_name"] == "geo_models"
    assert {"geo_models", "geolocation", "location_encoder", "procedural"} <= set(data["tags"])
    assert data["base_model"] == "openai/clip-vit-large-patch14" and data["datasets"] == ["someone/geo-photos"]
    assert data["pipeline_tag"] == "feature-extraction" and data["metrics"] == ["acc_25km", "median_km"]
    results = {r.metric_type: r.metric_value for r in back.data.eval_results}
    assert results == {"acc_25km": 12.5, "median_km": 830.0}
    assert 'load_model("someone/tiny-encoder")' in back.text and "| acc_25km | 12.5 |" in back.text
    assert "procedural world images" in back.text


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_dim": 3}))
    with pytest.raises(ValueError, match="no model_type"):
        load_model(tmp_path)
