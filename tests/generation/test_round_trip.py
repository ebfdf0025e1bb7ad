"""Save (or push to the local Hub) -> plain `DiffusionPipeline.from_pretrained(dir or repo id)` in a fresh Python
process -> bit-identical images for the same seed."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from geo_models.testing import IMAGE_ATOL, tiny_angle_to_image_pipeline, tiny_gps_to_image_pipeline

FRESH_PROCESS = textwrap.dedent(
    """
    import sys

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import geo_models.generation  # noqa: F401  (makes the pipeline classes resolvable by diffusers)
    from diffusers import DiffusionPipeline

    gps_dir, angle_dir, repo_id, out = sys.argv[1:5]
    gps = DiffusionPipeline.from_pretrained(gps_dir)
    pulled = DiffusionPipeline.from_pretrained(repo_id)  # from the local Hub server
    assert type(pulled).__name__ == "GPSToImagePipeline", type(pulled)
    angle = DiffusionPipeline.from_pretrained(angle_dir)
    assert type(gps).__name__ == "GPSToImagePipeline", type(gps)
    assert type(gps.gps_embedder).__name__ == "GPSEmbedder", type(gps.gps_embedder)
    assert type(angle).__name__ == "AngleToImagePipeline", type(angle)
    assert type(angle.angle_embedder).__name__ == "AngleEmbedder", type(angle.angle_embedder)
    a = gps("a building", 40.7484, -73.9857, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
            output_type="np").images
    b = angle("A photo of it", azimuth=45.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
              output_type="np").images
    c = pulled("a building", 40.7484, -73.9857, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="np").images
    np.savez(out, gps=a, angle=b, pulled=c)
    """
)


def test_fresh_process_diffusion_pipeline_from_pretrained_gives_identical_images(tmp_path, local_hub):
    gps, angle = tiny_gps_to_image_pipeline(), tiny_angle_to_image_pipeline()
    gps.save_pretrained(tmp_path / "gps")
    gps.push_to_hub("tester/tiny-gps-to-image")
    angle.save_pretrained(tmp_path / "angle")
    kwargs = {"num_inference_steps": 2, "generator": torch.Generator().manual_seed(0), "output_type": "np"}
    expected_gps = gps("a building", 40.7484, -73.9857, **kwargs).images
    kwargs["generator"] = torch.Generator().manual_seed(0)
    expected_angle = angle("A photo of it", azimuth=45.0, **kwargs).images

    out = tmp_path / "images.npz"
    args = [sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "gps"), str(tmp_path / "angle")]
    args += ["tester/tiny-gps-to-image", str(out)]
    env = {**os.environ, **local_hub.env()}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.load(out)
    # another process: equal up to float32 rounding (alignment-dependent kernels, geo_models.testing.tolerances)
    np.testing.assert_allclose(images["gps"], expected_gps, rtol=0, atol=IMAGE_ATOL)
    np.testing.assert_allclose(images["angle"], expected_angle, rtol=0, atol=IMAGE_ATOL)
    np.testing.assert_allclose(images["pulled"], expected_gps, rtol=0, atol=IMAGE_ATOL)
