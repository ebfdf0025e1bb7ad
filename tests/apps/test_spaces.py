"""Each app folder is a Space: front matter a real Space accepts (parsed by huggingface_hub), requirements, a
buildable Space folder that serves its app from nothing else, and pinned Hub checkpoints only when given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gradio
import pytest
from huggingface_hub import SpaceCard

from apps.build_space import APPS, SERVES, build_space, main, preload_files

COMMIT = "3f2b1c0d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c"


@pytest.mark.parametrize("app", ["geolocate", "generate", "hub", "landmark3d"])
def test_space_folder_front_matter_parses_and_preloads_nothing_by_default(app, tmp_path):
    reqs = (APPS / app / "requirements.txt").read_text().split()
    assert "torch==2.14.1" in reqs and not any(r.startswith("gradio") for r in reqs)
    out = build_space(app, tmp_path / "space")
    card = SpaceCard.load(out / "README.md")  # huggingface_hub's own parsing of the front matter
    meta = card.data.to_dict()
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert (out / meta["app_file"]).is_file() and meta["app_file"] == f"apps/{app}/app.py"
    assert "preload_from_hub" not in meta and "models" not in meta  # the bundled starter models are served
    assert "0" * 40 not in (out / "README.md").read_text()
    assert (out / "apps" / "common" / "data" / "coastlines.npz").is_file()
    assert (out / "geo_models" / "__init__.py").is_file() and (out / "requirements.txt").is_file()
    assert (out / "apps" / "starter" / SERVES[app][0]).is_dir() and not (out / "apps" / "space_models.json").exists()
    if app in ("landmark3d", "hub"):
        assert (out / "train" / "sds_to_mesh.py").is_file() and (out / "hub_cards" / "nerf.md").is_file()


def test_pinned_checkpoints_are_listed_preloaded_and_served(tmp_path):
    out = build_space("hub", tmp_path / "space", [f"geoclip=me/geoclip@{COMMIT}", f"gps_to_image=me/g2i@{COMMIT}"])
    meta = SpaceCard.load(out / "README.md").data.to_dict()
    assert meta["models"] == ["me/geoclip", "me/g2i"]
    repo, files, commit = meta["preload_from_hub"][0].split(" ")
    assert repo == "me/geoclip" and commit == COMMIT and set(files.split(",")) == {"config.json", "model.safetensors"}
    g2i_files = meta["preload_from_hub"][1].split(" ")[1].split(",")
    assert {"model_index.json", "pipeline.py", "unet/diffusion_pytorch_model.safetensors"} <= set(g2i_files)
    assert g2i_files == preload_files("gps_to_image") and not any(f.startswith("validation") for f in g2i_files)
    pinned = json.loads((out / "apps" / "space_models.json").read_text())
    assert pinned == {"geoclip": f"me/geoclip@{COMMIT}", "gps_to_image": f"me/g2i@{COMMIT}"}
    # the built app's settings take them (a GEO_MODELS_ variable of the Space still wins)
    code = "from apps.common.settings import default_source as d; print(d('geoclip'), d('locdiff'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEO_MODELS_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=out, env=env, capture_output=True, text=True)
    geoclip_source, locdiff_source = result.stdout.split()
    assert geoclip_source == f"me/geoclip@{COMMIT}" and locdiff_source == str(out / "apps" / "starter" / "locdiff")


@pytest.mark.parametrize(
    "model, message",
    [
        (f"geoclip=geo-models/geoclip-starter@{'0' * 40}", "placeholder"),
        ("geoclip=me/geoclip@main", "40 hex"),
        ("geoclip=me/geoclip", "40 hex"),
        (f"gps_to_image=me/g2i@{COMMIT}", "geoclip"),  # not served by the geolocation app
        (f"geoclip=not a repo@{COMMIT}", "repo id"),
    ],
)
def test_bad_pins_are_refused_naming_the_option(model, message, tmp_path, capsys):
    with pytest.raises(ValueError, match=message):
        build_space("geolocate", tmp_path / "space", [model])
    with pytest.raises(SystemExit):
        main(["geolocate", str(tmp_path / "cli"), "--model", model])
    assert "--model" in capsys.readouterr().err and not (tmp_path / "space").exists()


def test_a_built_space_serves_its_app_from_the_folder_alone(tmp_path, photo_path):
    """``python OUT/apps/geolocate/app.py`` from a fresh folder with nothing beside it (no repository on the path,
    the folder's own geo_models copy): it serves the bundled starter models through its API."""
    from gradio_client import Client, handle_file

    from tests.apps.conftest import free_port

    out = build_space("geolocate", tmp_path / "space")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEO_MODELS_") and k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(out / "apps" / "geolocate" / "app.py"), "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = None
        for _ in range(240):
            if server.poll() is not None:
                break
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # noqa: BLE001  (not up yet)
                time.sleep(0.5)
        assert client is not None, (tmp_path / "server.log").read_text()[-3000:]
        result = client.predict(handle_file(str(photo_path)), "GeoCLIP", 3, api_name="/geolocate")
        assert len(result["candidates"]) == 3, result
    finally:
        server.terminate()
        server.wait(timeout=30)
    log.close()
    text = (tmp_path / "server.log").read_text()
    assert "Traceback" not in text, text[-3000:]
