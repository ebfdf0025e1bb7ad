"""Each app folder is a Space: front matter, requirements, and a buildable Space folder."""

from __future__ import annotations

import gradio
import pytest
import yaml

from apps.build_space import APPS, build_space


def front_matter(path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("app", ["geolocate", "generate", "hub"])
def test_space_folder(app, tmp_path):
    meta = front_matter(APPS / app / "README.md")
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["models"] and all(len(entry.split()) == 3 for entry in meta["preload_from_hub"])  # pinned commits
    reqs = (APPS / app / "requirements.txt").read_text().split()
    assert "torch==2.14.1" in reqs and not any(r.startswith("gradio") for r in reqs)
    out = build_space(app, tmp_path / "space")
    assert (out / meta["app_file"]).is_file() and (out / "apps" / "common" / "data" / "coastlines.npz").is_file()
    assert (out / "geo_models" / "__init__.py").is_file() and (out / "requirements.txt").is_file()


def test_landmark3d_space_bundles_its_starter_and_the_lift_script(tmp_path):
    meta = front_matter(APPS / "landmark3d" / "README.md")
    assert meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "apps/landmark3d/app.py"
    assert "preload_from_hub" not in meta and "models" not in meta  # the starter is bundled
    reqs = (APPS / "landmark3d" / "requirements.txt").read_text().split()
    assert {"trimesh==5.2.0", "scikit-image==0.26.0"} <= set(reqs)
    out = build_space("landmark3d", tmp_path / "space")
    assert (out / "train" / "sds_to_mesh.py").is_file() and (out / "hub_cards" / "nerf.md").is_file()
    assert (out / "apps" / "starter" / "angle_to_image" / "lora_base.json").is_file()
