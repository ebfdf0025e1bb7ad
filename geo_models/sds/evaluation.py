"""Measures of a lifted 3D model against the landmark's ground truth ("GPS as a Control Signal for Image Generation",
sec. 4.5 and Table 3, in miniature on the procedural landmark).

- :func:`mesh_silhouette`: the binary mask of a mesh seen from a :class:`~geo_models.sds.cameras.Camera` (every
  front-of-camera triangle projected and filled; a silhouette needs no depth test).
- :func:`silhouette_iou`: intersection over union of two meshes' silhouettes from the same cameras, the shape
  agreement that does not depend on colours.
- :func:`reference_to_scene`: the procedural landmark's ground-truth mesh (ENU metres, origin on the ground,
  :func:`~geo_models.data.procedural.generate_landmark`'s ``mesh.glb``) moved into the NeRF's scene frame (origin at
  the photos' look-at point, :data:`~geo_models.sds.cameras.DEFAULT_METRES_PER_UNIT` metres per unit), and
  :func:`glb_to_scene` for a mesh written by :func:`~geo_models.sds.mesh.export_glb` (y up back to ENU z up).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from geo_models.checks import check_int, check_number
from geo_models.sds.cameras import DEFAULT_METRES_PER_UNIT, Camera
from geo_models.sds.mesh import ENU_TO_GLTF

__all__ = ["glb_to_scene", "mesh_silhouette", "reference_to_scene", "render_views", "silhouette_iou"]

_NEAR = 1e-6  # vertices closer to the camera plane than this (or behind it) drop their triangle


def _vertices_faces(mesh) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(getattr(mesh, "vertices", None), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", None))
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or not len(faces):
        raise ValueError(f"mesh must have (V, 3) vertices and (F, 3) faces, at least one face, got {mesh!r}")
    if not np.isfinite(vertices).all():
        raise ValueError("mesh vertices must be finite")
    return vertices, faces.astype(np.int64)


def mesh_silhouette(mesh, camera: Camera, *, supersample: int = 4) -> np.ndarray:
    """Binary ``(H, W)`` mask of the pixels a mesh covers, seen from ``camera`` (conventions of
    :mod:`geo_models.sds.cameras`: OpenGL camera axes, pixel ``(i, j)`` covering ``[j, j + 1] x [i, i + 1]``).

    Args:
        mesh: anything with ``vertices (V, 3)`` and ``faces (F, 3)`` in the scene frame (e.g. ``trimesh.Trimesh``).
        camera: the :class:`~geo_models.sds.cameras.Camera`.
        supersample: draw at ``supersample`` times the resolution and mark a pixel covered when at least half of its
            sub-pixels are, >= 1 (PIL fills the pixels its edges touch, which grows a silhouette by about half a
            drawn pixel; at 4 that is an eighth of a pixel, within a few percent of the renderer's opacity mask).

    Returns:
        ``bool`` array ``(camera.height, camera.width)``.
    """
    vertices, faces = _vertices_faces(mesh)
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a geo_models.sds.Camera, got {type(camera).__name__}")
    s = check_int(supersample, "supersample", 1, 16)
    c2w = camera.c2w.detach().double().cpu().numpy()
    local = (vertices - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera axes (R is orthonormal: R^-1 = R^T)
    depth = -local[:, 2]  # the camera looks along -z
    with np.errstate(divide="ignore", invalid="ignore"):  # PIL's pixel k is centred on k, ours on k + 0.5: -0.5
        u = (camera.focal * local[:, 0] / depth + camera.width / 2) * s - 0.5
        v = (-camera.focal * local[:, 1] / depth + camera.height / 2) * s - 0.5
    visible = (depth[faces] > _NEAR).all(axis=1)
    canvas = Image.new("1", (camera.width * s, camera.height * s), 0)
    draw = ImageDraw.Draw(canvas)
    for a, b, c in faces[visible]:
        draw.polygon([(u[a], v[a]), (u[b], v[b]), (u[c], v[c])], fill=1)
    mask = np.asarray(canvas, dtype=np.float32).reshape(camera.height, s, camera.width, s).mean(axis=(1, 3))
    return mask >= 0.5


def silhouette_iou(mesh, reference, cameras, *, supersample: int = 4) -> np.ndarray:
    """Per-camera intersection over union of the silhouettes of ``mesh`` and ``reference`` (both in the scene frame).

    Returns:
        ``(len(cameras),)`` float array in [0, 1] (1 where both silhouettes are empty).
    """
    cameras = list(cameras)
    if not cameras:
        raise ValueError("cameras must not be empty")
    out = []
    for camera in cameras:
        a = mesh_silhouette(mesh, camera, supersample=supersample)
        b = mesh_silhouette(reference, camera, supersample=supersample)
        union = np.logical_or(a, b).sum()
        out.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
    return np.asarray(out)


def reference_to_scene(mesh, *, metres_per_unit: float = DEFAULT_METRES_PER_UNIT, centre_height_m=None):
    """The procedural landmark's ground-truth mesh (ENU metres, origin on the ground centre) in the NeRF's scene
    frame: shifted down by the look-at height (``LOOK_AT_HEIGHT_M``, the scene centre) and divided by
    ``metres_per_unit``. Returns a copy."""
    from geo_models.data.procedural.landmark import LOOK_AT_HEIGHT_M

    scale = check_number(metres_per_unit, "metres_per_unit", 0.0, low_open=True)
    height = LOOK_AT_HEIGHT_M if centre_height_m is None else check_number(centre_height_m, "centre_height_m")
    _vertices_faces(mesh)
    moved = mesh.copy()
    transform = np.diag([1 / scale, 1 / scale, 1 / scale, 1.0])
    transform[2, 3] = -height / scale
    moved.apply_transform(transform)
    return moved


def glb_to_scene(mesh):
    """A mesh as :func:`~geo_models.sds.mesh.export_glb` wrote it (glTF, y up) back in the ENU scene frame (z up).
    Returns a copy."""
    _vertices_faces(mesh)
    moved = mesh.copy()
    moved.apply_transform(np.linalg.inv(ENU_TO_GLTF))
    return moved


def render_views(field, cameras, **kwargs) -> list[Image.Image]:
    """Albedo renders of a field from ``cameras`` as PIL images (deterministic bin-centre samples)."""
    from geo_models.sds.render import render_image

    kwargs = {"perturb": False, **kwargs}
    images = []
    with torch.no_grad():
        for camera in cameras:
            rgb = render_image(field, camera.to(field.device), **kwargs).clamp(0, 1)
            images.append(Image.fromarray((rgb * 255).round().byte().cpu().numpy()))
    return images
