"""Every ``save_pretrained`` writes a model card the Hub reads: ``huggingface_hub.ModelCard`` parses it, the
metadata the Hub uses is there (``library_name``, ``license``, tags; ``pipeline_tag`` for the image pipelines), and
evaluation results written by a training run load back as ``model-index`` eval results (issue 19)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard

from geo_models.hub import render_model_card


def saved_models():
    from geo_models.baselines import KNNGeolocator
    from geo_models.geoclip import GeoCLIP
    from geo_models.locdiff.modeling import CSUNet
    from geo_models.locdiff.pipeline import LocDiffPipeline, make_scheduler
    from geo_models.sds.field import NeRFField
    from geo_models.testing import (
        tiny_angle_to_image_pipeline,
        tiny_gps_to_image_pipeline,
        tiny_sphere_flow_pipeline,
    )

    geoclip = GeoCLIP(embedding_dim=8, projection_dim=8, num_features=8, hidden_dim=16, num_layers=2)
    unet = CSUNet(sample_dim=16, condition_dim=8, block_out_dims=(16, 8), time_embed_dim=8)
    return {
        "geoclip": geoclip,
        "knn": KNNGeolocator(embedding_dim=8).fit(torch.randn(10, 8), torch.rand(10, 2) * 40),
        "locdiff": LocDiffPipeline(unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 100}),
        "sphere_flow": tiny_sphere_flow_pipeline(embedding_dim=8),
        "nerf": NeRFField(num_levels=2, base_resolution=4, max_resolution=16, hidden_dim=8),
        "gps_to_image": tiny_gps_to_image_pipeline(),
        "angle_to_image": tiny_angle_to_image_pipeline(),
    }


MODELS = ["geoclip", "knn", "locdiff", "sphere_flow", "nerf", "gps_to_image", "angle_to_image"]


@pytest.mark.parametrize("name", MODELS)
def test_save_pretrained_writes_a_card_the_hub_parses(name, tmp_path):
    model = saved_models()[name]
    model.save_pretrained(tmp_path / name)
    card = ModelCard.load(tmp_path / name / "README.md")
    data = card.data.to_dict()
    assert data["license"] and data["library_name"] == "geo_models" and "geo_models" in data["tags"], data
    if name in ("gps_to_image", "angle_to_image"):
        assert data["pipeline_tag"] == "text-to-image" and "diffusers" in data["tags"]
    assert "/work/" not in card.text and str(tmp_path) not in card.content  # no path of this machine


def test_evaluation_results_round_trip_as_model_index(tmp_path):
    """What a training run computed (``finish_run`` passes the held-out metrics): ``model-index`` in the metadata,
    read back by huggingface_hub as eval results with the same values; base model and datasets kept."""
    metrics = {"acc_25km": 12.5, "acc_2500km": 85.0, "median_km": 301.2}
    base = "openai/clip-vit-large-patch14"
    card = render_model_card("geoclip", repo_id="me/geoclip", metrics=metrics, base_model=base,
                             datasets=["me/world-photos"], dataset_name="procedural world test")  # fmt: skip
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert results == metrics
    assert loaded.data.base_model == "openai/clip-vit-large-patch14" and loaded.data.datasets == ["me/world-photos"]
    assert "model-index" in (tmp_path / "README.md").read_text()
