"""A procedural 3D landmark, rendered on the CPU from cameras on a ring around it, as geotagged photos.

The landmark is a hall whose four walls have different colours, with a tower on the north-east corner, a domed roof
offset to the south-west, a columned porch on the south side, buttresses on the west side and a low annex on the east
side, so the viewing direction is recognisable even at 64x64. It is a ``trimesh.Trimesh`` with per-face colours,
sized in metres (about 33.5 x 24 m, 34 m tall) and centred on the origin of the ground plane.

Conventions:

- World frame: local ENU in metres with its origin at the landmark centre on the ground, x = east, y = north, z = up.
  The flat frame is tangent to the sphere at the centre; at ~100 m the curvature error is below a millimetre.
- Azimuth: the bearing of the camera seen from the landmark centre, degrees clockwise from north in [0, 360), as in
  :func:`geo_models.sphere.destination` / :func:`geo_models.sphere.azimuth_around`. A camera at azimuth ``a`` and
  horizontal distance ``d`` stands at ``(d sin a, d cos a)`` and its GPS is ``destination(centre, a, d / 1000)``.
  ``azimuth_bin = floor(a / 10)`` (36 bins, paper sec. 3.2).
- Elevation: the angle of the camera above the horizontal through the nominal look-at point ``(0, 0,
  LOOK_AT_HEIGHT_M)``, so the camera height is ``LOOK_AT_HEIGHT_M + d tan(elevation)``.
- Pose: camera-to-world 4x4 in the ENU frame with OpenGL / NeRF axes (camera x = right, y = up, looking along -z),
  saved in ``metadata.csv`` as ``pose_00 .. pose_33`` (row-major, ``pose_ij`` = row i, column j). Intrinsics: a
  pinhole with ``focal_px = (W / 2) / tan(fov_deg / 2)`` and principal point ``(W / 2, H / 2)``, in pixel units where
  pixel ``(i, j)`` covers ``[j, j + 1] x [i, i + 1]``; image row v grows downwards (see :func:`project_points`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import trimesh

from geo_models.data.procedural.common import check_count, check_image_size, check_seed, to_uint8, write_imagefolder
from geo_models.data.procedural.landmark_mesh import LANDMARK_SIZE_M, build_landmark_arrays
from geo_models.sphere import destination

LANDMARK_NAME = "Meridian Hall"
LANDMARK_CENTRE = (47.3713, 8.5393)  # a plausible plaza in Zurich (lat, lon)
LOOK_AT_HEIGHT_M = 12.0  # roughly the visual centre of the landmark
DEFAULT_FOV_DEG = 50.0
POSE_COLUMNS = [f"pose_{i}{j}" for i in range(4) for j in range(4)]
_LOOK_AT_JITTER_M = 2.0
_MIN_CAMERA_HEIGHT_M = 1.0


@dataclass(frozen=True)
class Lighting:
    """Sun direction, ambient / diffuse strengths, exposure and white balance (RGB gains) of one photo."""

    sun_azimuth_deg: float = 135.0
    sun_elevation_deg: float = 45.0
    ambient: float = 0.45
    diffuse: float = 0.7
    exposure: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def random(cls, rng: np.random.Generator) -> Lighting:
        # Nuisance strong enough that brightness alone does not give away the side, mild enough that hues do.
        return cls(
            sun_azimuth_deg=float(rng.uniform(0, 360)),
            sun_elevation_deg=float(rng.uniform(20, 70)),
            ambient=float(rng.uniform(0.35, 0.55)),
            diffuse=float(rng.uniform(0.55, 0.8)),
            exposure=float(rng.uniform(0.85, 1.15)),
            tint=tuple(float(t) for t in rng.uniform(0.92, 1.08, 3)),
        )

    def sun_direction(self) -> np.ndarray:
        az, el = math.radians(self.sun_azimuth_deg), math.radians(self.sun_elevation_deg)
        return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])


def landmark_mesh() -> trimesh.Trimesh:
    """The ground-truth landmark: a ``trimesh.Trimesh`` in the ENU frame (metres) with per-face RGBA colours.

    Faces do not share vertices, so the colours survive a glTF round trip as vertex colours. Hidden bottoms are
    left out, so the surface is not watertight.
    """
    tris, rgb = build_landmark_arrays()
    faces = np.arange(3 * len(tris)).reshape(-1, 3)
    colours = np.concatenate([to_uint8(rgb), np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(tris.reshape(-1, 3), faces, face_colors=colours, process=False)


def focal_length_px(fov_deg: float, image_size: int) -> float:
    """Pinhole focal length in pixels for a square image with horizontal = vertical field of view ``fov_deg``."""
    return image_size / 2 / math.tan(math.radians(fov_deg) / 2)


def look_at_pose(position, target) -> np.ndarray:
    """Camera-to-world ``(4, 4)`` (OpenGL axes, ENU world) of a camera at ``position (3,)`` looking at ``target``."""
    pos, forward = np.asarray(position, float), np.asarray(target, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(right, forward), -forward, pos
    return pose


def landmark_camera_pose(azimuth_deg: float, elevation_deg: float = 5.0, distance_m: float = 70.0, look_at=None):
    """Camera-to-world ``(4, 4)`` for a camera on the ring (see the module docstring for the conventions).

    Args:
        azimuth_deg: bearing of the camera from the landmark centre, degrees clockwise from north.
        elevation_deg: camera elevation above the nominal look-at point, degrees.
        distance_m: horizontal distance from the landmark centre, metres.
        look_at: ``(3,)`` ENU point the camera looks at; default ``(0, 0, LOOK_AT_HEIGHT_M)``.
    """
    _check_camera(azimuth_deg, elevation_deg, distance_m)
    a = math.radians(azimuth_deg)
    height = LOOK_AT_HEIGHT_M + distance_m * math.tan(math.radians(elevation_deg))
    target = (0.0, 0.0, LOOK_AT_HEIGHT_M) if look_at is None else look_at
    return look_at_pose([distance_m * math.sin(a), distance_m * math.cos(a), height], target)


def project_points(points, pose, fov_deg: float, image_size: int) -> np.ndarray:
    """Pixel coordinates ``(N, 2)`` as ``(u, v)`` (u right, v down) of ENU ``points (N, 3)`` seen by ``pose``.

    Points behind the camera get NaN.
    """
    pts = np.asarray(points, float).reshape(-1, 3)
    cam = (pts - pose[:3, 3]) @ pose[:3, :3]  # world -> camera: R^T (p - t)
    f, c = focal_length_px(fov_deg, image_size), image_size / 2
    depth = np.where(cam[:, 2] < 0, -cam[:, 2], np.nan)
    return np.stack([c + f * cam[:, 0] / depth, c - f * cam[:, 1] / depth], axis=1)


def render_landmark(
    pose,
    *,
    image_size: int = 64,
    fov_deg: float = DEFAULT_FOV_DEG,
    lighting: Lighting | None = None,
    supersample: int = 2,
    mesh: trimesh.Trimesh | None = None,
) -> np.ndarray:
    """Render the landmark (or any face-coloured, outward-wound ``mesh`` in the ENU frame) seen by ``pose (4, 4)``.

    Pure numpy: z-buffered flat-shaded triangles (Lambert from the sun + ambient) over an analytic textured ground
    plane and a sky gradient, box-filtered from ``supersample`` x the resolution for anti-aliasing.

    Returns:
        ``(image_size, image_size, 3)`` uint8 RGB.
    """
    image_size = check_image_size(image_size)
    if isinstance(supersample, bool) or not isinstance(supersample, int) or not 1 <= supersample <= 4:
        raise ValueError(f"supersample must be an integer in [1, 4], got {supersample!r}")
    _check_fov(fov_deg)
    from geo_models.data.procedural.landmark_raster import rasterise

    lighting = lighting or Lighting()
    if mesh is None:
        tris, rgb = build_landmark_arrays()
    else:
        tris, rgb = np.asarray(mesh.triangles, float), np.asarray(mesh.visual.face_colors[:, :3], float) / 255
    img = rasterise(tris, rgb, np.asarray(pose, float), fov_deg, image_size * supersample, lighting)
    img = img.reshape(image_size, supersample, image_size, supersample, 3).mean(axis=(1, 3))
    return to_uint8(np.clip(img * lighting.exposure * np.asarray(lighting.tint), 0, 1))


def render_landmark_view(
    azimuth_deg: float,
    elevation_deg: float = 5.0,
    distance_m: float = 70.0,
    *,
    image_size: int = 64,
    fov_deg: float = DEFAULT_FOV_DEG,
    lighting: Lighting | None = None,
    supersample: int = 2,
) -> np.ndarray:
    """One view from the ring looking at the landmark centre -> ``(image_size, image_size, 3)`` uint8 RGB.

    Args:
        azimuth_deg: bearing of the camera from the landmark centre, degrees clockwise from north.
        elevation_deg: camera elevation above the nominal look-at point, degrees.
        distance_m: horizontal distance from the landmark centre, metres.
        image_size: output width = height in pixels.
        fov_deg: field of view, degrees.
        lighting: sun / exposure; default a fixed neutral :class:`Lighting`.
        supersample: anti-aliasing factor (render at ``supersample`` x the size, then box-filter).
    """
    pose = landmark_camera_pose(azimuth_deg, elevation_deg, distance_m)
    return render_landmark(pose, image_size=image_size, fov_deg=fov_deg, lighting=lighting, supersample=supersample)


def generate_landmark(
    output_dir: str | Path,
    num_images: int = 1000,
    *,
    image_size: int = 64,
    seed: int = 0,
    centre=LANDMARK_CENTRE,
    name: str = LANDMARK_NAME,
    distance_m=(50.0, 90.0),
    elevation_deg=(-2.0, 12.0),
    fov_deg: float = DEFAULT_FOV_DEG,
    progress: bool = True,
) -> pd.DataFrame:
    """Write ``num_images`` geotagged views of the landmark as an imagefolder and return its metadata.

    Layout: ``images/%06d.png``, ``metadata.csv`` (``file_name, latitude, longitude, text, azimuth_deg,
    azimuth_bin, distance_m, elevation_deg, fov_deg, focal_px, sun_azimuth_deg, sun_elevation_deg, exposure,
    pose_00 .. pose_33``), ``dataset_info.json``, the ground-truth ``mesh.glb`` and ``landmark.json``.
    Azimuths are uniform on the circle; distance, elevation, look-at jitter and lighting are random nuisances.

    Args:
        output_dir: folder to write (created if missing).
        num_images: number of photos.
        image_size: width = height in pixels.
        seed: same seed -> byte-identical output.
        centre: ``(lat, lon)`` of the landmark centre, degrees.
        name: landmark name; captions are ``"A photo of {name}"``.
        distance_m: ``(min, max)`` horizontal camera distance in metres, within [30, 1000].
        elevation_deg: ``(min, max)`` camera elevation in degrees, within [-10, 60].
        fov_deg: field of view in degrees.
        progress: show a progress bar.
    """
    num_images = check_count(num_images, "num_images")
    image_size, seed = check_image_size(image_size), check_seed(seed)
    centre = _check_centre(centre)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    d_lo, d_hi = _check_range(distance_m, "distance_m", 30.0, 1000.0)
    e_lo, e_hi = _check_range(elevation_deg, "elevation_deg", -10.0, 60.0)
    _check_camera(0.0, e_lo, d_hi)
    _check_fov(fov_deg)

    rng = np.random.default_rng([seed, 7])
    azimuth = rng.uniform(0.0, 360.0, num_images)
    distance = rng.uniform(d_lo, d_hi, num_images)
    elevation = rng.uniform(e_lo, e_hi, num_images)
    jitter = rng.uniform(-_LOOK_AT_JITTER_M, _LOOK_AT_JITTER_M, (num_images, 3)) + [0, 0, LOOK_AT_HEIGHT_M]
    lights = [Lighting.random(rng) for _ in range(num_images)]
    poses = np.stack([landmark_camera_pose(*args) for args in zip(azimuth, elevation, distance, jitter)])
    noise_seeds = rng.integers(0, 2**63, num_images)

    def batches():
        for pose, light, s in zip(poses, lights, noise_seeds):
            img = render_landmark(pose, image_size=image_size, fov_deg=fov_deg, lighting=light).astype(np.float32)
            img += np.random.default_rng(s).normal(0.0, 2.5, img.shape)  # sensor noise, in 8-bit units
            yield np.clip(img + 0.5, 0, 255).astype(np.uint8)[None]

    latlon = destination(np.asarray(centre, np.float64), azimuth, distance / 1000.0).numpy()
    meta = pd.DataFrame(
        {
            "latitude": latlon[:, 0],
            "longitude": latlon[:, 1],
            "text": f"A photo of {name}",
            "azimuth_deg": azimuth,
            "azimuth_bin": (azimuth // 10).astype(int) % 36,
            "distance_m": distance,
            "elevation_deg": elevation,
            "fov_deg": fov_deg,
            "focal_px": focal_length_px(fov_deg, image_size),
            "sun_azimuth_deg": [light.sun_azimuth_deg for light in lights],
            "sun_elevation_deg": [light.sun_elevation_deg for light in lights],
            "exposure": [light.exposure for light in lights],
            **dict(zip(POSE_COLUMNS, poses.reshape(num_images, 16).T)),
        }
    )
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    mesh = landmark_mesh()
    mesh.export(root / "mesh.glb", file_type="glb")
    frame = "ENU metres, origin at the landmark centre on the ground: x = east, y = north, z = up"
    landmark = {
        "name": name,
        "centre": {"latitude": centre[0], "longitude": centre[1]},
        "frame": frame,
        "size_m": list(LANDMARK_SIZE_M),
        "look_at_height_m": LOOK_AT_HEIGHT_M,
        "mesh": "mesh.glb",
        "num_faces": len(mesh.faces),
        "azimuth": "bearing of the camera from the centre, degrees clockwise from north; azimuth_bin = floor(/10)",
        "pose": "pose_ij = camera-to-world row i column j, OpenGL camera axes (x right, y up, looking along -z)",
        "intrinsics": "pinhole, focal_px = (W/2)/tan(fov_deg/2), principal point (W/2, H/2), v down",
    }
    (root / "landmark.json").write_text(json.dumps(landmark, indent=2, sort_keys=True) + "\n")
    info = {
        "generator": "geo_models.data.procedural.generate_landmark",
        "seed": seed,
        "image_size": image_size,
        "landmark": name,
        "centre": list(centre),
        "distance_m": [d_lo, d_hi],
        "elevation_deg": [e_lo, e_hi],
        "counts": {"images": num_images, "azimuth_bins": int(meta["azimuth_bin"].nunique())},
    }
    return write_imagefolder(output_dir, meta, batches(), info, progress=progress, desc="landmark images")


# ----------------------------------------------------------------------------- argument checks
def _finite(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return out


def _check_centre(centre) -> tuple[float, float]:
    if not isinstance(centre, (tuple, list, np.ndarray)) or len(centre) != 2:
        raise ValueError(f"centre must be (lat, lon) in degrees, got {centre!r}")
    lat, lon = _finite(centre[0], "centre"), _finite(centre[1], "centre")
    if not (-89.0 <= lat <= 89.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"centre must have lat in [-89, 89] and lon in [-180, 180], got {centre!r}")
    return lat, lon


def _check_range(value, name: str, low: float, high: float) -> tuple[float, float]:
    if not isinstance(value, (tuple, list, np.ndarray)) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    lo, hi = _finite(value[0], name), _finite(value[1], name)
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return lo, hi


def _check_camera(azimuth_deg, elevation_deg, distance_m) -> None:
    _finite(azimuth_deg, "azimuth_deg")
    d, e = _finite(distance_m, "distance_m"), _finite(elevation_deg, "elevation_deg")
    if d < 25.0:  # the landmark reaches ~20 m from its centre; the camera must stay outside it
        raise ValueError(f"distance_m must be >= 25, got {distance_m!r}")
    if not -80.0 <= e <= 80.0:
        raise ValueError(f"elevation_deg must be in [-80, 80], got {elevation_deg!r}")
    if LOOK_AT_HEIGHT_M + d * math.tan(math.radians(e)) < _MIN_CAMERA_HEIGHT_M:
        raise ValueError(f"elevation_deg={e} at distance_m={d} puts the camera below the ground")


def _check_fov(fov_deg) -> None:
    if not 10.0 <= _finite(fov_deg, "fov_deg") <= 120.0:
        raise ValueError(f"fov_deg must be in [10, 120], got {fov_deg!r}")


__all__ = [
    "LANDMARK_CENTRE",
    "LANDMARK_NAME",
    "LOOK_AT_HEIGHT_M",
    "Lighting",
    "focal_length_px",
    "generate_landmark",
    "landmark_camera_pose",
    "landmark_mesh",
    "look_at_pose",
    "project_points",
    "render_landmark",
    "render_landmark_view",
]
