"""The "no-install" route: a saved (or pushed) pipeline folder loads without geo_models with diffusers' one-liner
``DiffusionPipeline.from_pretrained(path_or_repo, trust_remote_code=True)`` (``model_index.json``'s ``_class_name``
names the generated ``pipeline.py``; the older ``custom_pipeline=`` form too), from the standalone code written by
``save_pretrained``, and gives the same images; the same folder still loads the installed way."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from diffusers import DiffusionPipeline

from geo_models.generation import AngleEmbedder, AngleToImagePipeline, GPSEmbedder, GPSToImagePipeline
from geo_models.generation.standalone import STANDALONE_LIBRARY, embedder_source, pipeline_source
from geo_models.testing import IMAGE_ATOL, tiny_angle_to_image_pipeline, tiny_gps_to_image_pipeline

ALLOWED = {"torch", "numpy", "PIL", "diffusers", "transformers"} | set(sys.stdlib_module_names)

NO_GEO_MODELS = textwrap.dedent(
    """
    import sys

    sys.modules["geo_models"] = None  # geo_models cannot be imported in this process
    try:
        import geo_models.generation  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("geo_models was importable")

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from diffusers import DiffusionPipeline

    gps_dir, angle_dir, repo_id, angle_repo, out = sys.argv[1:6]
    pipes = {  # diffusers' documented one-liner for a repo with its own pipeline code
        name: DiffusionPipeline.from_pretrained(path, trust_remote_code=True)
        for name, path in [("gps", gps_dir), ("angle", angle_dir), ("pulled", repo_id), ("angle_pulled", angle_repo)]
    }
    custom = {"custom_pipeline": repo_id, "trust_remote_code": True}  # the older, longer form
    pipes["pulled_custom"] = DiffusionPipeline.from_pretrained(repo_id, **custom)
    for name, pipe in pipes.items():
        embedder = pipe.angle_embedder if name.startswith("angle") else pipe.gps_embedder
        assert type(pipe).__module__.startswith("diffusers_modules."), type(pipe)
        assert type(embedder).__module__.startswith("diffusers_modules."), type(embedder)
        pipe.set_progress_bar_config(disable=True)
    embedder = pipes["gps"].gps_embedder  # its training area too, from the generated copy of geo_models.sphere
    assert embedder.area.as_list() == [40.70, 40.88, -74.02, -73.91], embedder.area
    assert embedder.contains(40.7484, -73.9857).item() and not embedder.contains(48.85, 2.35).item()
    kwargs = dict(num_inference_steps=2, output_type="np")
    images = {
        name: pipes[name]("a building", 40.7484, -73.9857, generator=torch.Generator().manual_seed(0), **kwargs).images
        for name in ("gps", "pulled", "pulled_custom")
    }
    images["area"] = pipes["gps"](
        "a building", gps_area=(40.74, 40.76, -74.0, -73.97), num_gps_samples=3,
        generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    for name in ("angle", "angle_pulled"):
        images[name] = pipes[name](
            "A photo of it", azimuth=45.0, generator=torch.Generator().manual_seed(0), **kwargs
        ).images
    images["angle_gps"] = pipes["angle"](
        "A photo of it", latitude=48.8600, longitude=2.2900, generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    assert "geo_models" not in {m.split(".")[0] for m, v in sys.modules.items() if v is not None}
    np.savez(out, **images)
    """
)


def _images(gps, angle) -> dict:
    def seed():
        return {"num_inference_steps": 2, "output_type": "np", "generator": torch.Generator().manual_seed(0)}

    area = {"gps_area": (40.74, 40.76, -74.0, -73.97), "num_gps_samples": 3}
    return {
        "gps": gps("a building", 40.7484, -73.9857, **seed()).images,
        "area": gps("a building", **area, **seed()).images,
        "angle": angle("A photo of it", azimuth=45.0, **seed()).images,
        "angle_gps": angle("A photo of it", latitude=48.8600, longitude=2.2900, **seed()).images,
    }


def test_standalone_sources_import_only_torch_numpy_diffusers_transformers_and_stdlib():
    for source in (pipeline_source(GPSToImagePipeline), pipeline_source(AngleToImagePipeline), embedder_source()):
        tree = ast.parse(source)
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert roots <= ALLOWED, roots - ALLOWED
        assert "geo_models" not in roots


def test_save_pretrained_writes_standalone_files_and_model_index(tmp_path):
    tiny_gps_to_image_pipeline().save_pretrained(tmp_path / "gps")
    tiny_angle_to_image_pipeline().save_pretrained(tmp_path / "angle")
    for name, cls in (("gps", GPSEmbedder), ("angle", AngleEmbedder)):
        folder = tmp_path / name
        assert (folder / "pipeline.py").is_file()
        assert (folder / f"{name}_embedder" / f"{STANDALONE_LIBRARY}.py").is_file()
        index = json.loads((folder / "model_index.json").read_text())
        assert index[f"{name}_embedder"] == [STANDALONE_LIBRARY, cls.__name__]
        pipeline_name = "GPSToImagePipeline" if name == "gps" else "AngleToImagePipeline"
        assert index["_class_name"] == ["pipeline", pipeline_name]  # diffusers' trust_remote_code form


def test_no_install_route_gives_identical_images_and_installed_route_still_works(tmp_path, local_hub):
    gps, angle = tiny_gps_to_image_pipeline(), tiny_angle_to_image_pipeline()
    gps.save_pretrained(tmp_path / "gps")
    angle.save_pretrained(tmp_path / "angle")
    gps.push_to_hub("tester/tiny-gps-to-image-standalone")
    angle.push_to_hub("tester/tiny-angle-to-image-standalone")
    expected = _images(gps, angle)

    # installed route, same folders, no remote code
    gps2, angle2 = (DiffusionPipeline.from_pretrained(tmp_path / n) for n in ("gps", "angle"))
    assert type(gps2) is GPSToImagePipeline and type(gps2.gps_embedder) is GPSEmbedder
    assert type(angle2) is AngleToImagePipeline and type(angle2.angle_embedder) is AngleEmbedder
    assert type(GPSToImagePipeline.from_pretrained(tmp_path / "gps")) is GPSToImagePipeline
    pulled = DiffusionPipeline.from_pretrained("tester/tiny-gps-to-image-standalone")  # a Hub id, no remote code
    assert type(pulled) is GPSToImagePipeline and type(pulled.gps_embedder) is GPSEmbedder
    for pipe in (gps2, angle2):
        pipe.set_progress_bar_config(disable=True)
    for key, value in _images(gps2, angle2).items():  # equal up to float32 rounding (testing.tolerances)
        np.testing.assert_allclose(value, expected[key], rtol=0, atol=IMAGE_ATOL, err_msg=key)

    # no-install route, in a process where geo_models cannot be imported, outside the repo
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = tmp_path / "images.npz"
    args = [sys.executable, "-c", NO_GEO_MODELS, str(tmp_path / "gps"), str(tmp_path / "angle")]
    args += ["tester/tiny-gps-to-image-standalone", "tester/tiny-angle-to-image-standalone", str(out)]
    env = {**os.environ, **local_hub.env(), "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.load(out)
    for key, same_as in (("pulled", "gps"), ("pulled_custom", "gps"), ("angle_pulled", "angle")):
        np.testing.assert_allclose(images[key], expected[same_as], rtol=0, atol=IMAGE_ATOL, err_msg=key)
    for key, value in expected.items():
        np.testing.assert_allclose(images[key], value, rtol=0, atol=IMAGE_ATOL, err_msg=key)
