"""Mesh export of a distilled NeRF: marching cubes on analytic densities, albedo vertex colours, thresholds, and the
GLB file (COLOR_0, y-up rotation, atomic write)."""

import json
import math
import os
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")
trimesh = pytest.importorskip("trimesh")

from geo_models.sds import mesh as mesh_module  # noqa: E402
from geo_models.sds.mesh import ENU_TO_GLTF, export_glb, extract_mesh  # noqa: E402

RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.25, 1.0)


def sphere_density(value=10.0, radius=0.5, centre=(0.0, 0.0, 0.0)):
    centre = torch.tensor(centre)
    return lambda p: torch.where((p - centre).norm(dim=-1) < radius, value, 0.0)


def east_west_albedo(p):
    """Red on the east half (x > 0), blue on the west half."""
    return torch.where(p[:, :1] > 0, torch.tensor(RED), torch.tensor(BLUE))


def _glb_json(path):
    data = path.read_bytes()
    assert data[:4] == b"glTF" and struct.unpack("<I", data[4:8])[0] == 2
    length, kind = struct.unpack("<II", data[12:20])
    assert kind == 0x4E4F534A  # "JSON"
    return json.loads(data[20 : 20 + length])


def test_sphere_mesh_radius_closed_and_coloured():
    mesh = extract_mesh(sphere_density(), east_west_albedo, bound=1.0, resolution=32)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    step = 2 / 31
    assert np.abs(radius - 0.5).max() < step
    assert mesh.is_watertight and mesh.volume > 0  # closed, outward winding
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.1)
    assert mesh.metadata["threshold"] == 5.0  # auto: min(10, 0.5 * max density)
    colours = mesh.visual.vertex_colors
    assert colours.dtype == np.uint8 and colours.shape == (len(mesh.vertices), 4) and (colours[:, 3] == 255).all()
    east = mesh.vertices[:, 0] > 1e-6
    assert (colours[east, :3] == [255, 0, 0]).all() and (colours[~east, :3] == [0, 64, 255]).all()


def test_auto_and_explicit_threshold():
    dense = extract_mesh(sphere_density(100.0), None, bound=1.0, resolution=16)
    assert dense.metadata["threshold"] == 10.0  # DreamFusion's fixed level once the field is dense enough
    assert (dense.visual.vertex_colors[:, :3] == 200).all()  # no albedo: grey
    explicit = extract_mesh(sphere_density(100.0), None, bound=1.0, resolution=16, threshold=42.0)
    assert explicit.metadata["threshold"] == 42.0
    with pytest.raises(ValueError, match="threshold"):
        extract_mesh(sphere_density(), None, bound=1.0, resolution=16, threshold=10.0)  # = max: no surface
    with pytest.raises(ValueError, match="threshold"):
        extract_mesh(sphere_density(), None, bound=1.0, resolution=16, threshold=-1.0)  # below everything
    with pytest.raises(ValueError, match="empty"):
        extract_mesh(lambda p: torch.zeros(len(p)), None, bound=1.0, resolution=16)


class _Field(torch.nn.Module):
    """A NeRFField-like module: forward(points) -> (density (N,), albedo (N, 3))."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, points):
        return sphere_density(radius=0.4)(points) * self.scale, east_west_albedo(points)


def test_field_tuple_output_chunks_and_largest_piece():
    field = _Field()
    mesh = extract_mesh(field, bound=0.6, resolution=24, chunk=1000)
    east = mesh.vertices[:, 0] > 1e-6
    assert (mesh.visual.vertex_colors[east, :3] == [255, 0, 0]).all() and mesh.visual.vertex_colors[~east, 2].min() > 0
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.4).max() < 1.2 / 23

    big, small = sphere_density(radius=0.45, centre=(-0.4, 0, 0)), sphere_density(radius=0.2, centre=(0.6, 0, 0))
    both = extract_mesh(lambda p: big(p) + small(p), None, bound=1.0, resolution=32)
    largest = extract_mesh(lambda p: big(p) + small(p), None, bound=1.0, resolution=32, keep_largest=True)
    assert len(largest.faces) < len(both.faces) and largest.vertices[:, 0].max() < 0.1


def test_target_faces():
    full = extract_mesh(sphere_density(), None, bound=1.0, resolution=40)
    small = extract_mesh(
        sphere_density(), east_west_albedo, bound=1.0, resolution=40, target_faces=len(full.faces) // 4
    )
    assert len(small.faces) <= len(full.faces) // 4 and len(small.faces) > 50
    assert small.visual.vertex_colors.shape == (len(small.vertices), 4)
    assert np.abs(np.linalg.norm(small.vertices, axis=1) - 0.5).max() < 0.15


def test_bad_arguments():
    density = sphere_density()
    for kwargs, name in [
        ({"bound": 0.0}, "bound"),
        ({"bound": 1.0, "resolution": 4}, "resolution"),
        ({"bound": 1.0, "threshold": float("nan")}, "threshold"),
        ({"bound": 1.0, "chunk": 0}, "chunk"),
        ({"bound": 1.0, "target_faces": 0}, "target_faces"),
    ]:
        with pytest.raises(ValueError, match=name):
            extract_mesh(density, None, **kwargs)
    with pytest.raises(ValueError, match="density_fn"):
        extract_mesh("not callable", None, bound=1.0)
    with pytest.raises(ValueError, match="density_fn"):
        extract_mesh(lambda p: torch.zeros(len(p), 2), None, bound=1.0, resolution=8)
    with pytest.raises(ValueError, match="albedo_fn"):
        extract_mesh(density, lambda p: torch.zeros(len(p)), bound=1.0, resolution=8)


def test_glb_round_trip_colours_and_no_temp_file(tmp_path):
    mesh = extract_mesh(sphere_density(), east_west_albedo, bound=1.0, resolution=20)
    path = export_glb(mesh, tmp_path / "out" / "mesh.glb")
    assert path == tmp_path / "out" / "mesh.glb" and os.listdir(path.parent) == ["mesh.glb"]
    gltf = _glb_json(path)
    assert gltf["asset"]["version"] == "2.0"
    attributes = gltf["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" in attributes and "POSITION" in attributes
    loaded = trimesh.load(path, force="mesh")
    assert loaded.visual.kind == "vertex"
    colours = {tuple(c) for c in loaded.visual.vertex_colors.tolist()}
    assert colours == {(255, 0, 0, 255), (0, 64, 255, 255)}
    assert len(loaded.faces) == len(mesh.faces)


def test_glb_is_upright_y_up(tmp_path):
    """A tower tall along ENU z, north of the origin, comes out tall along glTF +Y and towards -Z; east stays +X."""
    tower = trimesh.creation.box(extents=(0.2, 0.4, 2.0))
    tower.apply_translation((0.5, 3.0, 1.0))  # 0.5 east, 3 north, standing on the ground (z from 0 to 2)
    tower.visual.vertex_colors = np.tile([10, 20, 30, 255], (len(tower.vertices), 1)).astype(np.uint8)
    path = export_glb(tower, tmp_path / "tower.glb")
    gltf = _glb_json(path)
    assert all("matrix" not in node and "rotation" not in node for node in gltf.get("nodes", []))  # baked in
    position = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    np.testing.assert_allclose(position["min"], [0.4, 0.0, -3.2], atol=1e-6)
    np.testing.assert_allclose(position["max"], [0.6, 2.0, -2.8], atol=1e-6)
    loaded = trimesh.load(path, force="mesh")
    np.testing.assert_allclose(loaded.extents, [0.2, 2.0, 0.4], atol=1e-6)
    assert loaded.volume > 0  # the rotation keeps the winding outward
    np.testing.assert_allclose(ENU_TO_GLTF[:3, :3] @ [0, 0, 1], [0, 1, 0])  # up -> +Y
    assert np.linalg.det(ENU_TO_GLTF) == pytest.approx(1.0)


def test_glb_atomic_write(tmp_path, monkeypatch):
    mesh = extract_mesh(sphere_density(), None, bound=1.0, resolution=12)
    path = tmp_path / "mesh.glb"
    path.write_bytes(b"old")
    path.chmod(0o640)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(mesh_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_glb(mesh, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["mesh.glb"]  # untouched, no temp file left
    monkeypatch.undo()
    export_glb(mesh, path)
    assert path.read_bytes()[:4] == b"glTF" and os.listdir(tmp_path) == ["mesh.glb"]
    assert path.stat().st_mode & 0o777 == 0o640  # keeps the replaced file's mode
    with pytest.raises(ValueError, match="path"):
        export_glb(mesh, tmp_path / "mesh.obj")
    with pytest.raises(ValueError, match="mesh"):
        export_glb(trimesh.Trimesh(), tmp_path / "empty.glb")


def test_nerf_field_blob_mesh():
    """A fresh NeRFField is DreamFusion's density blob: a small closed mesh around the origin with its albedo."""
    from geo_models.sds.field import NeRFField

    field = NeRFField(num_levels=2, base_resolution=4, max_resolution=8, hidden_dim=8, num_layers=1)
    mesh = extract_mesh(field, bound=field.bound, resolution=20)
    assert mesh.is_watertight and mesh.volume > 0 and np.linalg.norm(mesh.vertices, axis=1).max() < 0.5 * field.bound
    with torch.no_grad():
        albedo = field(torch.as_tensor(mesh.vertices, dtype=torch.float32))[1]
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3], (albedo * 255).round().numpy(), atol=1)
    same = extract_mesh(field.density, lambda p: field(p)[1], bound=field.bound, resolution=20)
    np.testing.assert_array_equal(same.visual.vertex_colors, mesh.visual.vertex_colors)


def test_glb_passes_gltf_structure_checks(tmp_path):
    """glTF 2.0 rules an exported GLB must meet (the ones Khronos' validator checks for such a file): one binary
    buffer exactly as long as the BIN chunk, buffer views inside it, accessors inside their views with the right
    component types (POSITION float VEC3 with min/max, COLOR_0 normalised unsigned VEC4 or float, indices unsigned
    scalars, a multiple of 3 for triangles, each < the vertex count), and a scene that reaches the mesh."""
    pygltflib = pytest.importorskip("pygltflib")
    mesh = extract_mesh(sphere_density(), east_west_albedo, bound=1.0, resolution=20)
    path = export_glb(mesh, tmp_path / "mesh.glb")
    gltf = pygltflib.GLTF2().load_binary(str(path))
    blob = gltf.binary_blob()
    assert gltf.asset.version == "2.0" and len(gltf.buffers) == 1 and gltf.buffers[0].byteLength == len(blob)
    sizes = {pygltflib.FLOAT: 4, pygltflib.UNSIGNED_BYTE: 1, pygltflib.UNSIGNED_SHORT: 2, pygltflib.UNSIGNED_INT: 4}
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
    for view in gltf.bufferViews:
        assert view.buffer == 0 and (view.byteOffset or 0) + view.byteLength <= len(blob)
    for accessor in gltf.accessors:
        view = gltf.bufferViews[accessor.bufferView]
        end = (accessor.byteOffset or 0) + accessor.count * sizes[accessor.componentType] * width[accessor.type]
        assert end <= view.byteLength and (view.byteOffset or 0) % sizes[accessor.componentType] == 0
    (primitive,) = gltf.meshes[0].primitives
    position = gltf.accessors[primitive.attributes.POSITION]
    assert position.type == "VEC3" and position.componentType == pygltflib.FLOAT and position.min and position.max
    colour = gltf.accessors[primitive.attributes.COLOR_0]
    assert colour.type in ("VEC3", "VEC4") and position.count == colour.count
    assert colour.componentType == pygltflib.FLOAT or colour.normalized
    indices = gltf.accessors[primitive.indices]
    assert indices.type == "SCALAR" and indices.count % 3 == 0 and indices.count // 3 == len(mesh.faces)
    assert primitive.mode in (None, pygltflib.TRIANGLES)
    view = gltf.bufferViews[indices.bufferView]
    dtype = {pygltflib.UNSIGNED_SHORT: np.uint16, pygltflib.UNSIGNED_INT: np.uint32}[indices.componentType]
    start = (view.byteOffset or 0) + (indices.byteOffset or 0)
    assert np.frombuffer(blob, dtype=dtype, count=indices.count, offset=start).max() < position.count
    scene = gltf.scenes[gltf.scene or 0]
    assert any(gltf.nodes[n].mesh == 0 for n in scene.nodes)
