"""Acceptance: a tiny model pushed to the local Hub and pulled back by repo id in a fresh process is identical."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download

from geo_models.encoders import LocationEncoder

POINTS = [[0.0, 0.0], [48.8566, 2.3522], [-33.87, 151.21], [90.0, -180.0], [-90.0, 180.0]]


def test_push_then_pull_in_fresh_process(local_hub, tmp_path):
    torch.manual_seed(0)
    model = LocationEncoder(sigmas=(1.0, 16.0), num_features=8, hidden_dim=16, num_layers=2, output_dim=4, seed=7)
    with torch.no_grad():  # non-default weights, so a silent re-initialisation could not pass
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    commit_url = model.push_to_hub(
        "tester/tiny-location-encoder",
        model_card_kwargs={"metrics": {"acc_2500km": 42.0}, "datasets": ["procedural-world"], "license": "mit"},
    )
    assert "tester/tiny-location-encoder" in commit_url
    expected = model(torch.tensor(POINTS)).tolist()

    # Card metadata as the Hub parses it, and as the README parses back.
    info = HfApi().model_info("tester/tiny-location-encoder")
    assert {s.rfilename for s in info.siblings} >= {"config.json", "model.safetensors", "README.md"}
    assert info.card_data["library_name"] == "geo_models" and info.card_data["license"] == "mit"
    card = ModelCard.load(hf_hub_download("tester/tiny-location-encoder", "README.md"))
    assert card.data.datasets == ["procedural-world"] and card.data.metrics == ["acc_2500km"]
    assert card.data.eval_results[0].metric_value == 42.0

    code = textwrap.dedent(
        f"""
        import json, torch
        from geo_models.hub import load_model
        model = load_model("tester/tiny-location-encoder")
        print(json.dumps({{"type": type(model).__name__, "out": model(torch.tensor({POINTS})).tolist()}}))
        """
    )
    env = {**os.environ, **local_hub.env()}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    pulled = json.loads(result.stdout.strip().splitlines()[-1])
    assert pulled["type"] == "LocationEncoder"
    # another process, loaded weights: other MKL kernels, equal up to float32 rounding (geo_models.testing.tolerances);
    # relative too, the perturbed weights give outputs up to ~70
    torch.testing.assert_close(torch.tensor(pulled["out"]), torch.tensor(expected), rtol=1e-5, atol=1e-5)
