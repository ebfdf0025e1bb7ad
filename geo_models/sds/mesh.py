"""Mesh export of a distilled NeRF: marching cubes on its density, vertex colours from its albedo, glTF binary.

The paper shows its score-distilled landmarks (sec. 3.2, 4.5, A.2.2) as NeRF renderings; following DreamFusion [64]
(and its reimplementation stable-dreamfusion, whose ``export_mesh`` runs marching cubes on a density grid at a fixed
density threshold, 10 by default) we turn the NeRF into a coloured triangle mesh that any glTF viewer shows.

Conventions:

- Input frame: the NeRF's world frame, the landmark's ENU axes (x = east, y = north, z = up, see
  :mod:`geo_models.sds.cameras`), sampled over the cube ``[-bound, bound]^3``.
- Threshold (``threshold=None``): ``min(10, 0.5 * max density on the grid)``: DreamFusion's fixed density threshold
  10 (with a voxel of 1/64 unit, an opacity of ~15 % per voxel), lowered to half the peak density for a weak field
  so that a surface still comes out (for a field that is ``sigma`` inside and 0 outside, the surface lies halfway
  between the grid nodes on either side of the true boundary).
- GLB frame: glTF 2.0 is y-up (+Y up, +Z the asset's front, right-handed). :func:`export_glb` bakes the rotation by
  -90 degrees about the east (x) axis into the vertices: ``(x, y, z)_gltf = (east, up, -north)``, so the landmark
  stands upright, its east side towards +X and its south side (front) towards +Z.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from geo_models.checks import check_int, check_number

if TYPE_CHECKING:
    import trimesh

__all__ = ["DREAMFUSION_DENSITY_THRESHOLD", "ENU_TO_GLTF", "auto_threshold", "export_glb", "extract_mesh"]

DREAMFUSION_DENSITY_THRESHOLD = 10.0  # stable-dreamfusion's ``--density_thresh`` default, used by its mesh export
# (x, y, z)_gltf = (east, up, -north): a rotation by -90 degrees about the east axis (det +1, winding kept).
ENU_TO_GLTF = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
_GREY = (200, 200, 200)
_MIN_RESOLUTION = 8


def _import_trimesh():
    try:
        import trimesh
    except ImportError as err:  # an optional dependency (the ``apps`` extra)
        raise ImportError("mesh export needs trimesh: pip install trimesh scikit-image") from err
    return trimesh


def _infer_device(fn) -> torch.device:
    module = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if isinstance(module, torch.nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return torch.device("cpu")


def _call(fn, points: torch.Tensor, name: str, columns: int | None):
    """``fn(points)`` -> float tensor ``(N,)`` (``columns`` None) or ``(N, columns)``; a tuple output gives its first
    element, and the second one separately (or None) for the albedo of a field that returns both."""
    out = fn(points)
    second = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not torch.is_tensor(out):
        raise ValueError(f"{name} must return a tensor (or a tuple starting with one), got {type(out).__name__}")
    n = len(points)
    if columns is None:
        if out.numel() != n:
            raise ValueError(f"{name} must return one density per point, ({n},), got {tuple(out.shape)}")
        out = out.reshape(n)
    elif out.ndim != 2 or out.shape[0] != n or out.shape[1] < columns:
        raise ValueError(f"{name} must return ({n}, {columns}) colours in [0, 1], got {tuple(out.shape)}")
    out = out.detach().float()
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} returned NaN or infinite values")
    return out, second


@torch.no_grad()
def _density_grid(density_fn, bound: float, resolution: int, chunk: int, device) -> np.ndarray:
    """Density at the ``resolution^3`` nodes ``-bound + step * (i, j, k)`` -> float32 ``[i, j, k]`` = (x, y, z)."""
    grid = np.empty(resolution**3, np.float32)
    step = 2 * bound / (resolution - 1)
    for start in range(0, resolution**3, chunk):
        idx = torch.arange(start, min(start + chunk, resolution**3), device=device)
        ijk = torch.stack([idx // resolution**2, (idx // resolution) % resolution, idx % resolution], dim=-1)
        points = ijk.float() * step - bound
        grid[start : start + len(idx)] = _call(density_fn, points, "density_fn", None)[0].cpu().numpy()
    return grid.reshape(resolution, resolution, resolution)


def auto_threshold(max_density: float) -> float:
    """The automatic density level: ``min(DREAMFUSION_DENSITY_THRESHOLD, 0.5 * max_density)`` (module docstring)."""
    return min(DREAMFUSION_DENSITY_THRESHOLD, 0.5 * float(max_density))


def _marching_cubes(grid: np.ndarray, level: float, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` isosurface of ``grid`` -> vertices ``(V, 3)`` in the world frame and faces ``(F, 3)``."""
    step = 2 * bound / (grid.shape[0] - 1)
    try:
        from skimage.measure import marching_cubes
    except ImportError:
        try:
            import mcubes
        except ImportError as err:
            raise ImportError("mesh extraction needs scikit-image (or PyMCubes): pip install scikit-image") from err
        verts, faces = mcubes.marching_cubes(grid, level)
        verts = verts * step
    else:
        # "ascent": the object holds the higher values, so the triangles wind counter-clockwise seen from outside.
        verts, faces, _, _ = marching_cubes(grid, level, spacing=(step,) * 3, gradient_direction="ascent")
    verts, faces = np.asarray(verts, np.float64) - bound, np.asarray(faces, np.int64)
    # Whatever the backend's winding, make the normals point down the density gradient (outwards).
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    node = np.clip(np.rint((tri.mean(axis=1) + bound) / step).astype(np.int64), 1, grid.shape[0] - 2)
    axes = np.eye(3, dtype=np.int64)
    gradient = np.stack([grid[tuple((node + e).T)] - grid[tuple((node - e).T)] for e in axes], axis=-1)
    if np.einsum("fi,fi->f", normals, gradient).sum() > 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


@torch.no_grad()
def extract_mesh(
    density_fn,
    albedo_fn=None,
    *,
    bound: float,
    resolution: int = 128,
    threshold: float | None = None,
    chunk: int = 65536,
    target_faces: int | None = None,
    keep_largest: bool = False,
    device=None,
) -> trimesh.Trimesh:
    """Mesh the NeRF's density isosurface and colour it with its albedo (DreamFusion-style export, sec. 3.2).

    The density is sampled on a ``resolution^3`` grid over ``[-bound, bound]^3`` (in chunks of ``chunk`` points, no
    gradients), the ``threshold`` isosurface is extracted by marching cubes (``skimage.measure.marching_cubes``),
    oriented outwards, optionally reduced to its largest connected piece and decimated, and every vertex gets the
    albedo there as an RGBA uint8 colour.

    Args:
        density_fn: points ``(N, 3)`` float32 -> density ``(N,)`` (or a tuple whose first element it is, such as a
            ``NeRFField``'s ``(density, albedo)``).
        albedo_fn: points ``(N, 3)`` -> RGB ``(N, 3)`` in [0, 1] (extra columns ignored; a tuple: its first
            element). None: the second output of ``density_fn`` when it returns a tuple, else a flat grey.
        bound: half the side of the sampled cube (the NeRF's bound), > 0.
        resolution: grid nodes per axis, in [8, 512].
        threshold: density level of the surface; None: ``min(10, 0.5 * max density)`` (:func:`auto_threshold`).
        chunk: points per call of ``density_fn`` / ``albedo_fn``.
        target_faces: at most this many faces: trimesh's quadric decimation when ``fast-simplification`` is
            installed, else marching cubes again on coarser grids (the face count grows as ``resolution^2``).
        keep_largest: keep only the connected piece with the most faces (drops floaters).
        device: where the query points go (default: the device of ``density_fn``'s parameters if it is a module or
            a module's method, else CPU).

    Returns:
        ``trimesh.Trimesh`` in the NeRF's world frame with RGBA uint8 vertex colours; ``metadata`` holds
        ``threshold``, ``resolution`` and ``bound``.

    Raises:
        ValueError: on bad arguments, or when ``threshold`` leaves no surface (the density is above or below it
            everywhere on the grid).
    """
    trimesh = _import_trimesh()
    if not callable(density_fn):
        raise ValueError(f"density_fn must be callable, got {density_fn!r}")
    if albedo_fn is not None and not callable(albedo_fn):
        raise ValueError(f"albedo_fn must be callable or None, got {albedo_fn!r}")
    bound = check_number(bound, "bound", 0.0, 1e6, low_open=True)
    resolution = check_int(resolution, "resolution", _MIN_RESOLUTION, 512)
    if threshold is not None:
        threshold = check_number(threshold, "threshold")
    chunk = check_int(chunk, "chunk", 1, 2**26)
    if target_faces is not None:
        target_faces = check_int(target_faces, "target_faces", 4)
    device = _infer_device(density_fn) if device is None else torch.device(device)

    grid = _density_grid(density_fn, bound, resolution, chunk, device)
    low, high = float(grid.min()), float(grid.max())
    if threshold is None:
        if high <= 0:
            raise ValueError(f"the density is empty (max {high:g} on the grid): no surface; is the NeRF trained?")
        threshold = auto_threshold(high)
    if not low < threshold < high:
        raise ValueError(
            f"threshold={threshold:g} leaves no surface: the density on the grid lies in [{low:g}, {high:g}]"
        )
    verts, faces = _marching_cubes(grid, threshold, bound)
    mesh = trimesh.Trimesh(verts, faces, process=False)
    if keep_largest:
        pieces = mesh.split(only_watertight=False)
        if len(pieces) > 1:
            mesh = max(pieces, key=lambda piece: len(piece.faces))
    if target_faces is not None and len(mesh.faces) > target_faces:
        mesh = _decimate(mesh, target_faces, density_fn, bound, resolution, threshold, chunk, device, keep_largest)

    mesh.visual.vertex_colors = _vertex_colours(mesh.vertices, density_fn, albedo_fn, chunk, device)
    mesh.metadata.update({"threshold": float(threshold), "resolution": resolution, "bound": bound})
    return mesh


def _decimate(mesh, target_faces, density_fn, bound, resolution, threshold, chunk, device, keep_largest):
    try:
        import fast_simplification  # noqa: F401  (trimesh's quadric decimation backend)
    except ImportError:
        pass
    else:
        return mesh.simplify_quadric_decimation(face_count=target_faces)
    trimesh = _import_trimesh()
    while len(mesh.faces) > target_faces and resolution > _MIN_RESOLUTION:
        scale = 0.95 * math.sqrt(target_faces / len(mesh.faces))
        resolution = max(_MIN_RESOLUTION, min(resolution - 1, int(resolution * scale)))
        grid = _density_grid(density_fn, bound, resolution, chunk, device)
        if not grid.min() < threshold < grid.max():  # the coarse grid missed the thin parts: keep the last mesh
            break
        coarse = trimesh.Trimesh(*_marching_cubes(grid, threshold, bound), process=False)
        if keep_largest:
            coarse = max(coarse.split(only_watertight=False), key=lambda piece: len(piece.faces))
        mesh = coarse
    if len(mesh.faces) > target_faces:
        warnings.warn(
            f"target_faces={target_faces}: the coarsest grid still gives {len(mesh.faces)} faces "
            "(install fast-simplification for quadric decimation)",
            UserWarning,
            stacklevel=3,
        )
    return mesh


@torch.no_grad()
def _vertex_colours(vertices: np.ndarray, density_fn, albedo_fn, chunk: int, device) -> np.ndarray:
    """RGBA uint8 ``(V, 4)`` from the albedo at ``vertices`` (opaque; grey when there is no albedo)."""
    n = len(vertices)
    rgba = np.full((n, 4), 255, np.uint8)
    rgba[:, :3] = _GREY
    points = torch.as_tensor(np.asarray(vertices, np.float32))
    for start in range(0, n, chunk):
        batch = points[start : start + chunk].to(device)
        if albedo_fn is not None:
            rgb = _call(albedo_fn, batch, "albedo_fn", 3)[0]
        else:
            rgb = _call(density_fn, batch, "density_fn", None)[1]
            if rgb is None:
                return rgba
            if not torch.is_tensor(rgb) or rgb.shape[:1] != (len(batch),) or rgb.ndim != 2 or rgb.shape[1] < 3:
                raise ValueError("density_fn's second output must be (N, 3) albedo in [0, 1] (or pass albedo_fn)")
            rgb = rgb.detach().float()
        rgb = rgb[:, :3].clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        rgba[start : start + len(batch), :3] = rgb
    return rgba


def export_glb(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` (ENU frame, z up) as a glTF 2.0 binary that stands upright in glTF viewers (y up).

    The vertices are rotated by :data:`ENU_TO_GLTF` (-90 degrees about the east axis: ``(x, y, z)_gltf = (east, up,
    -north)``) before writing, so no node transform is needed; vertex colours are written as ``COLOR_0``. The
    file is written to a temporary file in the same folder, then moved over ``path`` (``os.replace``): readers see the
    old file or the whole new one, never a partial one.

    Args:
        mesh: a ``trimesh.Trimesh`` with at least one face, in the ENU frame.
        path: the ``.glb`` file to write (its folder is created if missing).

    Returns:
        The written path.
    """
    trimesh = _import_trimesh()
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"mesh must be a trimesh.Trimesh with at least one face, got {mesh!r}")
    try:
        path = Path(path)
    except TypeError as err:
        raise ValueError(f"path must be a file path, got {path!r}") from err
    if path.suffix.lower() != ".glb":
        raise ValueError(f"path must end in .glb, got {str(path)!r}")
    upright = mesh.copy()
    upright.apply_transform(ENU_TO_GLTF)
    data = upright.export(file_type="glb")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
