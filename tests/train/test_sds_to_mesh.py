"""train/sds_to_mesh.py --preset smoke on the tiny angle-to-image pipeline: NeRF, GLB, turntable and previews written;
exact resume on the shared loop; flag errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from geo_models.sds import NeRFField
from geo_models.testing import tiny_angle_to_image_pipeline, tiny_gps_to_image_pipeline

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("sds_pipelines")
    tiny_angle_to_image_pipeline().save_pretrained(root / "angle")
    tiny_gps_to_image_pipeline().save_pretrained(root / "gps")
    return root


def smoke(train_script, pipelines, out, *extra):
    argv = ["--pretrained_model_name_or_path", str(pipelines / "angle"), "--prompt", "A photo of the landmark",
            "--output_dir", str(out), "--preset", "smoke", "--logging_steps", "1", *extra]  # fmt: skip
    return train_script("sds_to_mesh").main(argv)


def test_smoke_run_writes_nerf_glb_and_renders(train_script, pipelines, tmp_path):
    field = smoke(train_script, pipelines, tmp_path)
    loaded = NeRFField.from_pretrained(tmp_path / "nerf")
    assert isinstance(field, NeRFField) and loaded.config.hidden_dim == field.config.hidden_dim == 16
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), field.state_dict().values()))
    mesh = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[1] == 4
    assert (tmp_path / "turntable.png").is_file() and (tmp_path / "validation" / "step-2.png").is_file()
    log = [json.loads(line) for line in (tmp_path / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_resume_matches_uninterrupted_run(train_script, pipelines, tmp_path, interrupted_after_checkpoint):
    smoke(train_script, pipelines, tmp_path / "a", "--checkpointing_steps", "2")
    with interrupted_after_checkpoint():
        smoke(train_script, pipelines, tmp_path / "b", "--checkpointing_steps", "2")
    smoke(train_script, pipelines, tmp_path / "b", "--checkpointing_steps", "2", "--resume_from_checkpoint", "latest")
    a, b = (load_file(str(tmp_path / d / "nerf" / "diffusion_pytorch_model.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pretrained_model_name_or_path", "GPS"], "an AngleToImagePipeline is needed"),
        (["--prompt", " "], "--prompt"),
        (["--max_train_steps", "0"], "--max_train_steps"),
        (["--resolution", "0"], "--resolution"),
        (["--resolution", "5000"], "--resolution"),
        (["--mesh_faces", "2"], "--mesh_faces"),
        (["--textureless_prob", "2"], "--textureless_prob"),
        (["--lambda_orient", "-1"], "--lambda_orient"),
        (["--lambda_opacity", "nan"], "--lambda_opacity"),
        (["--baseline", "text"], "--baseline"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_cli_errors(train_script, pipelines, tmp_path, capsys, extra, message):
    extra = [str(pipelines / "gps") if x == "GPS" else x for x in extra]
    argv = ["--pretrained_model_name_or_path", str(pipelines / "angle"), "--prompt", "a"]
    argv += ["--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        train_script("sds_to_mesh").parse_args([*argv, *extra])
    assert message in capsys.readouterr().err


def test_text_view_baseline_and_regularisers_change_the_run(train_script, pipelines, tmp_path, monkeypatch):
    """--baseline text_view guides with view prompts (angle tokens zeroed); the orientation and opacity terms enter
    the loss (their weights change the trained field); --device cpu runs on the CPU."""
    from geo_models.sds import AngleSDSGuidance

    made = []
    init = AngleSDSGuidance.__init__
    monkeypatch.setattr(AngleSDSGuidance, "__init__", lambda self, *a, **k: made.append(k) or init(self, *a, **k))
    runs = {"angle": [], "baseline": ["--baseline", "text_view"], "no_reg": ["--lambda_orient", "0",
            "--lambda_opacity", "0"], "strong_reg": ["--lambda_orient", "10", "--lambda_opacity", "10"]}  # fmt: skip
    fields = {name: smoke(train_script, pipelines, tmp_path / name, "--device", "cpu", *extra)
              for name, extra in runs.items()}  # fmt: skip
    assert [k["conditioning"] for k in made] == ["angle", "text_view", "angle", "angle"]
    weights = {name: torch.cat([p.detach().flatten() for p in f.parameters()]) for name, f in fields.items()}
    assert not torch.equal(weights["angle"], weights["baseline"])
    assert not torch.equal(weights["no_reg"], weights["strong_reg"])
    assert all(f.device.type == "cpu" for f in fields.values())


def test_card_push_and_load_model(train_script, pipelines, tmp_path, local_hub):
    """The output folder (mesh.glb, nerf/, turntable, card from hub_cards/nerf.md) goes to the Hub without its
    checkpoints and logs; load_model dispatches the NeRF's diffusers config to NeRFField; the card parses."""
    from huggingface_hub import HfApi, ModelCard

    from geo_models.hub import load_model, pull_folder

    repo = "tester/hall-3d"
    field = smoke(train_script, pipelines, tmp_path / "out", "--push_to_hub", "--hub_model_id", repo,
                  "--checkpointing_steps", "2")  # fmt: skip
    files = set(HfApi().list_repo_files(repo))
    assert {"mesh.glb", "turntable.png", "README.md", "nerf/config.json"} <= files
    assert not any(f.startswith(("checkpoint-", "logs/")) for f in files)
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.library_name == "geo_models" and card.data.pipeline_tag == "text-to-3d"
    assert "A photo of the landmark" in card.text and "mesh.glb" in card.text and str(tmp_path) not in card.text
    folder = pull_folder(repo)
    loaded = load_model(folder / "nerf")
    assert isinstance(loaded, NeRFField)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), field.state_dict().values()))
    assert isinstance(load_model(tmp_path / "out" / "nerf"), NeRFField)
