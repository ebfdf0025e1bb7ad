"""The SDS pieces together, from an angle-to-image model to a GLB: a few score-distillation steps move a small NeRF,
whose density then exports as an upright mesh with vertex colours."""

import pytest
import torch

from geo_models.sds import AngleSDSGuidance, CameraSampler, NeRFField, export_glb, extract_mesh, render_image
from geo_models.testing import tiny_angle_to_image_pipeline

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")


def test_a_few_sds_steps_move_the_field_and_export_a_glb(tmp_path):
    guidance = AngleSDSGuidance(tiny_angle_to_image_pipeline(), "A photo of the landmark", guidance_scale=10.0)
    field = NeRFField(num_levels=2, base_resolution=8, max_resolution=16, hidden_dim=16, seed=0)
    sampler = CameraSampler(resolution=32)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in field.parameters()]
    for step in range(3):
        camera = sampler.sample(1, generator=generator)[0]
        image = render_image(field, camera, num_samples=16, generator=generator)
        azimuth = torch.tensor([camera.azimuth_deg])
        loss, info = guidance.loss(image[None], azimuth, generator=generator, step=step, max_steps=3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss) and info["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, field.parameters()))
    mesh = extract_mesh(field, bound=field.bound, resolution=32)
    loaded = trimesh.load(export_glb(mesh, tmp_path / "mesh.glb"), force="mesh")
    assert len(loaded.faces) > 0 and loaded.visual.vertex_colors.shape[1] == 4
    assert loaded.extents[1] > 0  # something stands along glTF's up axis
