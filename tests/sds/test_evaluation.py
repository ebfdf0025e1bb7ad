"""3D evaluation (Table 3 in miniature): mesh silhouettes follow the renderer's camera convention (a ball's silhouette
is the rendered opacity of a solid ball, east is right when looking north), IoU bounds, the ground truth's move into
the scene frame and back from glTF's y-up; train/evaluate_3d.py end to end on a smoke run."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from geo_models.sds import CameraSampler, export_glb, render_view
from geo_models.sds.evaluation import glb_to_scene, mesh_silhouette, reference_to_scene, silhouette_iou

trimesh = pytest.importorskip("trimesh")


class SolidBall(nn.Module):
    """Density 1e4 inside a ball of radius ``r`` at ``centre``, zero outside."""

    def __init__(self, r: float, centre=(0.0, 0.0, 0.0)):
        super().__init__()
        self.r = r
        self.register_buffer("centre", torch.tensor(centre))
        self.config = type("Config", (), {"bound": 1.0})()

    def forward(self, points):
        inside = ((points - self.centre).norm(dim=-1) < self.r).float()
        return 1e4 * inside, torch.ones(points.shape[0], 3)

    def normals(self, points):
        return torch.nn.functional.normalize(points - self.centre, dim=-1)

    def background(self, directions):
        return torch.zeros(directions.shape[0], 3)


def test_ball_silhouette_matches_the_rendered_opacity():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    sphere.apply_translation([0.2, 0.0, 0.1])
    field = SolidBall(0.5, (0.2, 0.0, 0.1))
    for camera in CameraSampler(resolution=32).turntable(4, elevation=20.0):
        mask = mesh_silhouette(sphere, camera)
        rendered = render_view(field, camera, num_samples=256, perturb=False)["opacity"].numpy() > 0.5
        iou = np.logical_and(mask, rendered).sum() / np.logical_or(mask, rendered).sum()
        assert iou > 0.93 and 0.05 < mask.mean() < 0.9


def test_east_is_on_the_right_seen_from_the_south():
    box = trimesh.creation.box(extents=(0.3, 0.3, 0.3))
    box.apply_translation([0.5, 0.0, 0.0])  # east of the centre
    south = CameraSampler(resolution=32).cameras(torch.tensor([180.0]), 0.0, 2.5, 50.0)[0]
    north = CameraSampler(resolution=32).cameras(torch.tensor([0.0]), 0.0, 2.5, 50.0)[0]
    cols = np.nonzero(mesh_silhouette(box, south).any(axis=0))[0]
    assert cols.min() > 16  # right half
    assert np.nonzero(mesh_silhouette(box, north).any(axis=0))[0].max() < 16  # seen from the north: left half


def test_iou_bounds_and_bad_input():
    a = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    b = a.copy()
    b.apply_translation([2.0, 0.0, 0.0])  # outside every view's overlap
    cameras = CameraSampler(resolution=32).turntable(3)
    assert np.allclose(silhouette_iou(a, a, cameras), 1.0)
    assert silhouette_iou(a, b, cameras[:1])[0] < 0.05
    with pytest.raises(ValueError, match="cameras"):
        silhouette_iou(a, a, [])
    with pytest.raises(ValueError, match="mesh"):
        mesh_silhouette(object(), cameras[0])
    with pytest.raises(ValueError, match="camera"):
        mesh_silhouette(a, "front")


def test_reference_and_glb_frames(tmp_path):
    from geo_models.data.procedural.landmark import LOOK_AT_HEIGHT_M

    ground = trimesh.creation.box(extents=(28.0, 28.0, 56.0))
    ground.apply_translation([0.0, 0.0, 28.0])  # standing on the ground, 56 m tall
    scene = reference_to_scene(ground, metres_per_unit=28.0)
    low = -LOOK_AT_HEIGHT_M / 28
    np.testing.assert_allclose(scene.bounds, [[-0.5, -0.5, low], [0.5, 0.5, 2 + low]])
    assert np.allclose(ground.bounds[:, 2], [0, 56])  # a copy: the input is unchanged
    tilted = trimesh.creation.box(extents=(0.2, 0.4, 0.8))  # tall along ENU z
    back = glb_to_scene(trimesh.load(export_glb(tilted, tmp_path / "m.glb"), force="mesh"))
    np.testing.assert_allclose(back.extents, [0.2, 0.4, 0.8], atol=1e-6)


def test_evaluate_3d_script_on_a_smoke_run(train_script, tmp_path):
    from geo_models.data.procedural import generate_landmark
    from geo_models.sds import NeRFField, extract_mesh

    data = tmp_path / "landmark"
    generate_landmark(data, 24, image_size=32, seed=0, progress=False)
    run = tmp_path / "run"
    field = NeRFField(num_levels=2, base_resolution=8, max_resolution=16, hidden_dim=16, seed=0)
    field.save_pretrained(run / "nerf")
    export_glb(extract_mesh(field, bound=field.bound, resolution=32), run / "mesh.glb")
    result = train_script("evaluate_3d").main(["--run", str(run), "--reference", str(data / "mesh.glb"),
                                               "--num_octant_views", "8", "--num_samples", "16"])  # fmt: skip
    assert 0 <= result["iou_mean"] <= 1 and len(result["iou_per_view"]) == 12
    assert 0 <= result["octant_acc"] <= 100 and result["classifier_real_views"]["octant_acc"] >= 0
    assert json.loads((run / "eval_3d.json").read_text())["iou_mean"] == result["iou_mean"]
    with pytest.raises(SystemExit):
        train_script("evaluate_3d").parse_args(["--reference", str(data / "mesh.glb")])
