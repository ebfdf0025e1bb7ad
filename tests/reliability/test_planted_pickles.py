"""No loader unpickles: a code-running pickle planted in a saved model folder, under every name torch, transformers,
diffusers, open_clip or accelerate would read, never runs, whether beside the real weights or instead of them.
(The resume path is covered in test_checkpoint_faults.py.)"""

import pytest
import torch

from geo_models.testing.faults import PICKLE_NAMES, pickle_executed, plant_pickles


def location_encoder(folder):
    from geo_models.encoders import LocationEncoder

    LocationEncoder(hidden_dim=16, num_features=8, output_dim=8).save_pretrained(folder)


def sphere_flow(folder):
    from geo_models.testing import tiny_sphere_flow_pipeline

    tiny_sphere_flow_pipeline().save_pretrained(folder)


def gps_to_image(folder):
    from geo_models.testing import tiny_gps_to_image_pipeline

    tiny_gps_to_image_pipeline().save_pretrained(folder)


def load_any(folder):
    from geo_models.hub import load_model

    return load_model(folder)


def load_diffusers(folder):
    from diffusers import DiffusionPipeline

    import geo_models.generation  # noqa: F401  (registers the pipeline classes)

    return DiffusionPipeline.from_pretrained(folder)


MODELS = {  # name -> (save into a folder, load from it)
    "location_encoder (load_model)": (location_encoder, load_any),
    "sphere_flow (load_model)": (sphere_flow, load_any),
    "gps_to_image (DiffusionPipeline)": (gps_to_image, load_diffusers),
}


def weight_files(folder):
    return [p for p in folder.rglob("*.safetensors")]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("where", ["beside the weights", "instead of the weights"])
def test_planted_pickle_never_runs(tmp_path, name, where):
    save, load = MODELS[name]
    folder, marker = tmp_path / "model", tmp_path / "PWNED"
    save(folder)
    subfolders = {p.parent for p in weight_files(folder)}
    if where == "instead of the weights":
        for p in weight_files(folder):
            p.unlink()
    for sub in subfolders:
        plant_pickles(sub, marker)
    try:
        loaded = load(folder)
    except Exception as err:  # refusing is fine (no weights without safetensors); running the pickle is not
        assert where == "instead of the weights", f"{type(err).__name__}: {err}"
    else:
        assert where == "beside the weights", "a folder without safetensors weights must not load"
        assert loaded is not None
    assert not pickle_executed(marker)


def test_the_planted_pickle_does_run_when_unpickled(tmp_path):
    """The plant is live: torch.load(weights_only=False) of it runs the code (so the tests above prove something)."""
    marker = tmp_path / "PWNED"
    (path,) = plant_pickles(tmp_path, marker, names=PICKLE_NAMES[:1])
    with pytest.raises(Exception):  # noqa: B017 - whatever the payload returns, the code already ran
        torch.load(path, weights_only=False)
    assert pickle_executed(marker)
