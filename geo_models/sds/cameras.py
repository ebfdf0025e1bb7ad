"""Virtual cameras for GPS-guided score distillation (paper sec. 3.2, 4.1, A.2.2).

"During each iteration of the optimization process, we sample random virtual camera poses. For each one, we transform
the pose q to azimuth alpha, and create a conditioning embedding g'" (sec. 3.2); "we restrict the elevation angle of
sampled virtual camera views [...] to match the characteristics of tourism photo distribution, while the azimuth angle
is sampled across the full range" (sec. 4.1). :class:`CameraSampler` draws those poses, :func:`camera_latlon` turns a
pose into the GPS the angle model is conditioned on, and :func:`camera_rays` gives the rays the NeRF renders.

Conventions (those of :mod:`geo_models.data.procedural.landmark`, so the NeRF sees the landmark as its photos did):

- World frame: the landmark's local ENU frame, x = east, y = north, z = up, in NeRF units (``metres_per_unit``
  metres each), with its origin at the scene centre, which every camera looks at. For the procedural landmark the
  scene centre is its photos' look-at point, ``LOOK_AT_HEIGHT_M`` above the ground centre: a camera here at
  ``(azimuth, elevation, distance)`` is the landmark's ``landmark_camera_pose(azimuth, elevation, distance *
  metres_per_unit * cos(elevation))`` scaled by ``1 / metres_per_unit`` and shifted down by that height.
- Azimuth: the bearing of the camera seen from the scene centre, degrees clockwise from north in [0, 360) (0 = camera
  due north of the landmark, 90 = due east), exactly what :meth:`AngleEmbedder.azimuth
  <geo_models.generation.conditioning.AngleEmbedder.azimuth>` computes from the camera's GPS. A camera at azimuth
  ``a`` stands at ``distance * (cos(e) sin(a), cos(e) cos(a), sin(e))``.
- Elevation ``e``: the angle of the camera above the horizontal plane through the scene centre, degrees.
- Distance: from the camera to the scene centre (the look-at point), NeRF units.
- Pose: camera-to-world ``c2w (4, 4)`` with OpenGL axes (camera x = right, y = up, looking along -z), no roll
  (camera x horizontal). Intrinsics: a pinhole with square pixels, focal length ``focal`` in pixels, principal point
  ``(W / 2, H / 2)``; pixel ``(i, j)`` (row i from the top, column j from the left) covers ``[j, j + 1] x [i, i + 1]``
  and its ray passes through its centre ``(j + 0.5, i + 0.5)``. The field of view ``fov_deg`` is the vertical one,
  ``focal = (H / 2) / tan(fov_deg / 2)`` (the landmark photos are square, so it is also their horizontal one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from geo_models.checks import check_int, check_number
from geo_models.sphere import check_latlon, destination

__all__ = [
    "DEFAULT_DISTANCE_RANGE",
    "DEFAULT_ELEVATION_RANGE",
    "DEFAULT_FOV_RANGE",
    "DEFAULT_METRES_PER_UNIT",
    "Camera",
    "CameraSampler",
    "camera_latlon",
    "camera_rays",
]

# The procedural landmark reaches ~25 m from its look-at point (spire tip), so at 28 m per unit it fits a bound-1
# sphere; its photos stand 50-90 m away (horizontally), 1.8-3.2 units, at -2..12 degrees, with a 50 degree view.
DEFAULT_METRES_PER_UNIT = 28.0
DEFAULT_ELEVATION_RANGE = (-2.0, 12.0)
DEFAULT_DISTANCE_RANGE = (1.8, 3.2)
DEFAULT_FOV_RANGE = (45.0, 55.0)
_MAX_ELEVATION_DEG = 89.0  # straight above or below the centre the azimuth (and the camera's "right") is undefined
_MAX_RESOLUTION = 4096


@dataclass(frozen=True)
class Camera:
    """One pinhole camera looking at the scene centre (conventions in the module docstring).

    Args:
        c2w: camera-to-world ``(4, 4)`` float tensor (OpenGL camera axes, ENU world), on any device.
        focal: focal length in pixels.
        height: image height in pixels.
        width: image width in pixels.
        azimuth_deg: bearing of the camera from the scene centre, degrees clockwise from north, in [0, 360).
        elevation_deg: angle of the camera above the horizontal through the scene centre, degrees.
        distance: distance from the camera to the scene centre, NeRF units.
    """

    c2w: torch.Tensor
    focal: float
    height: int
    width: int
    azimuth_deg: float
    elevation_deg: float
    distance: float

    def __post_init__(self):
        c2w = self.c2w if torch.is_tensor(self.c2w) else torch.as_tensor(np.asarray(self.c2w, np.float32))
        if c2w.shape != (4, 4) or not c2w.is_floating_point() or not torch.isfinite(c2w).all():
            raise ValueError(f"c2w must be a finite (4, 4) float camera-to-world matrix, got shape {tuple(c2w.shape)}")
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "focal", check_number(self.focal, "focal", 0.0, low_open=True))
        object.__setattr__(self, "height", check_int(self.height, "height", 1, _MAX_RESOLUTION))
        object.__setattr__(self, "width", check_int(self.width, "width", 1, _MAX_RESOLUTION))
        for name in ("azimuth_deg", "elevation_deg", "distance"):
            object.__setattr__(self, name, check_number(getattr(self, name), name))

    @property
    def position(self) -> torch.Tensor:
        """Camera centre in the world frame, ``(3,)``."""
        return self.c2w[:3, 3]

    @property
    def fov_deg(self) -> float:
        """Vertical field of view, degrees."""
        return math.degrees(2 * math.atan(self.height / 2 / self.focal))

    def to(self, device) -> Camera:
        """The same camera with ``c2w`` on ``device``."""
        return replace(self, c2w=self.c2w.to(device))


def _pair(value, name: str, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    lo, hi = (check_number(v, name, low, high) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must have min <= max, got {value!r}")
    return lo, hi


def _look_at_origin(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Camera-to-world ``(n, 4, 4)`` (float64) of cameras at the given spherical positions looking at the origin."""
    a, e = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    position = distance[:, None] * torch.stack([e.cos() * a.sin(), e.cos() * a.cos(), e.sin()], dim=-1)
    forward = -position / position.norm(dim=-1, keepdim=True)
    up_world = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype, device=position.device).expand_as(forward)
    right = torch.linalg.cross(forward, up_world)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4, dtype=position.dtype, device=position.device).repeat(len(position), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, -forward, position
    return c2w


@dataclass(frozen=True)
class CameraSampler:
    """Random virtual cameras around the scene centre for score distillation (paper sec. 3.2, 4.1).

    Azimuth, elevation, distance and field of view are drawn independently and uniformly from their ranges; every
    camera looks at the origin with no roll. The defaults match the procedural landmark's photos
    (:func:`geo_models.data.procedural.generate_landmark`: azimuth uniform on the circle, elevation -2..12 degrees,
    50-90 m away, 50 degree view) at :data:`DEFAULT_METRES_PER_UNIT` metres per unit, so the angle model is asked
    about views like those it was trained on. The paper keeps its virtual cameras at ground level too ("we restrict
    the elevation angle [...] below 0", sec. 4.1); pass ``elevation_range=(-10, 0)`` for that.

    Args:
        azimuth_range: ``(min, max)`` azimuth, degrees clockwise from north (``max - min <= 360``; wrapped to
            [0, 360)), default the full circle.
        elevation_range: ``(min, max)`` elevation above the horizontal through the centre, degrees, within [-89, 89].
        distance_range: ``(min, max)`` distance to the centre, NeRF units (> 0); keep it outside the NeRF's bound.
        fov_range: ``(min, max)`` vertical field of view, degrees, within (0, 179] (the focal-length jitter).
        resolution: image size in pixels, ``side`` or ``(height, width)``.
    """

    azimuth_range: tuple[float, float] = (0.0, 360.0)
    elevation_range: tuple[float, float] = DEFAULT_ELEVATION_RANGE
    distance_range: tuple[float, float] = DEFAULT_DISTANCE_RANGE
    fov_range: tuple[float, float] = DEFAULT_FOV_RANGE
    resolution: int | tuple[int, int] = 64

    def __post_init__(self):
        az = _pair(self.azimuth_range, "azimuth_range")
        if az[1] - az[0] > 360.0:
            raise ValueError(f"azimuth_range must span at most 360 degrees, got {self.azimuth_range!r}")
        object.__setattr__(self, "azimuth_range", az)
        elevation = _pair(self.elevation_range, "elevation_range", -_MAX_ELEVATION_DEG, _MAX_ELEVATION_DEG)
        object.__setattr__(self, "elevation_range", elevation)
        distance = _pair(self.distance_range, "distance_range", 0.0)
        if distance[0] <= 0:
            raise ValueError(f"distance_range must be > 0, got {self.distance_range!r}")
        object.__setattr__(self, "distance_range", distance)
        fov = _pair(self.fov_range, "fov_range", 0.0, 179.0)
        if fov[0] <= 0:
            raise ValueError(f"fov_range must be in (0, 179] degrees, got {self.fov_range!r}")
        object.__setattr__(self, "fov_range", fov)
        res = self.resolution
        if isinstance(res, Sequence) and not isinstance(res, str) and len(res) == 2:
            res = (
                check_int(res[0], "resolution", 1, _MAX_RESOLUTION),
                check_int(res[1], "resolution", 1, _MAX_RESOLUTION),
            )
        else:
            res = (check_int(res, "resolution", 1, _MAX_RESOLUTION),) * 2
        object.__setattr__(self, "resolution", res)

    @property
    def height(self) -> int:
        return self.resolution[0]

    @property
    def width(self) -> int:
        return self.resolution[1]

    def focal(self, fov_deg: float) -> float:
        """Focal length in pixels of a vertical field of view ``fov_deg``: ``(H / 2) / tan(fov_deg / 2)``."""
        return self.height / 2 / math.tan(math.radians(fov_deg) / 2)

    def cameras(self, azimuth_deg, elevation_deg, distance, fov_deg, device=None) -> list[Camera]:
        """Cameras at the given (broadcast) azimuths, elevations (degrees), distances and fields of view (degrees).

        Args:
            azimuth_deg: bearings from the centre, degrees clockwise from north (any value; wrapped to [0, 360)).
            elevation_deg: elevations, degrees within [-89, 89].
            distance: distances to the centre, NeRF units (> 0).
            fov_deg: vertical fields of view, degrees within (0, 179].
            device: where the poses go (default: CPU, or the device of the given tensors).

        Returns:
            One :class:`Camera` per broadcast entry, with float32 ``c2w``.
        """
        named = (
            (azimuth_deg, "azimuth_deg"),
            (elevation_deg, "elevation_deg"),
            (distance, "distance"),
            (fov_deg, "fov_deg"),
        )
        values = [_as_float64(value, name) for value, name in named]
        values = [v.to(values[0].device) for v in values]
        try:
            az, el, dist, fov = (v.reshape(-1) for v in torch.broadcast_tensors(*values))
        except RuntimeError as err:
            raise ValueError(
                f"azimuth_deg, elevation_deg, distance and fov_deg must broadcast together: {err}"
            ) from None
        if az.numel() == 0:
            raise ValueError("azimuth_deg, elevation_deg, distance and fov_deg must hold at least one camera")
        if el.abs().max() > _MAX_ELEVATION_DEG:
            raise ValueError(f"elevation_deg must be within [-89, 89] degrees, got {el.abs().max().item()}")
        if dist.min() <= 0:
            raise ValueError(f"distance must be > 0, got {dist.min().item()}")
        if fov.min() <= 0 or fov.max() > 179:
            raise ValueError("fov_deg must be in (0, 179] degrees")
        az = torch.remainder(az, 360.0)
        c2w = _look_at_origin(az, el, dist).to(device=device or az.device, dtype=torch.float32)
        return [
            Camera(pose, self.focal(f), self.height, self.width, a, e, d)
            for pose, a, e, d, f in zip(c2w, az.tolist(), el.tolist(), dist.tolist(), fov.tolist())
        ]

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> list[Camera]:
        """Draw ``n`` random cameras (paper sec. 3.2: "we sample random virtual camera poses").

        Args:
            n: number of cameras (>= 1).
            generator: torch generator for the draws (same seed -> same cameras); they are drawn on its device.
            device: where the poses go (default: the generator's device, or CPU).

        Returns:
            ``n`` :class:`Camera` with float32 ``c2w``.
        """
        n = check_int(n, "n", 1, 1_000_000)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64, device=draw_device)
        ranges = torch.tensor(
            [self.azimuth_range, self.elevation_range, self.distance_range, self.fov_range],
            dtype=torch.float64,
            device=draw_device,
        )
        values = ranges[:, 0] + u * (ranges[:, 1] - ranges[:, 0])
        return self.cameras(*values.unbind(-1), device=device or draw_device)

    def turntable(self, n: int, elevation: float | None = None, distance: float | None = None, device=None):
        """``n`` cameras at evenly spaced azimuths ``0, 360 / n, ...`` degrees, for previews.

        Args:
            n: number of views (>= 1).
            elevation: elevation of every view, degrees (default: the middle of ``elevation_range``).
            distance: distance of every view, NeRF units (default: the middle of ``distance_range``).
            device: where the poses go (default CPU).

        Returns:
            ``n`` :class:`Camera` with the middle of ``fov_range`` as field of view.
        """
        n = check_int(n, "n", 1, 1_000_000)
        elevation = sum(self.elevation_range) / 2 if elevation is None else elevation
        elevation = check_number(elevation, "elevation", -_MAX_ELEVATION_DEG, _MAX_ELEVATION_DEG)
        distance = sum(self.distance_range) / 2 if distance is None else distance
        distance = check_number(distance, "distance", 0.0, low_open=True)
        azimuth = torch.arange(n, dtype=torch.float64) * (360.0 / n)
        return self.cameras(azimuth, elevation, distance, sum(self.fov_range) / 2, device=device)


def _as_float64(value, name: str) -> torch.Tensor:
    try:
        t = value.double() if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from err
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return t


def camera_latlon(camera: Camera | Sequence[Camera], centre_latlon, metres_per_unit: float) -> torch.Tensor:
    """GPS of camera(s) standing around a landmark centre: what the angle model is conditioned on (sec. 3.2).

    The camera's horizontal offset from the scene centre (ENU east, north) times ``metres_per_unit`` is walked along
    the great circle from ``centre_latlon`` (:func:`geo_models.sphere.destination`), as the landmark generator
    geotags its photos; :meth:`AngleEmbedder.azimuth <geo_models.generation.conditioning.AngleEmbedder.azimuth>` of
    the result gives back the camera's azimuth. The camera's height does not enter its GPS.

    Args:
        camera: one :class:`Camera` or a sequence of them.
        centre_latlon: ``(lat, lon)`` of the landmark centre, degrees.
        metres_per_unit: metres per NeRF unit (> 0).

    Returns:
        float64 ``(2,)`` ``[lat, lon]`` degrees for one camera, ``(N, 2)`` for a sequence.
    """
    single = isinstance(camera, Camera)
    cameras = [camera] if single else list(camera) if isinstance(camera, Sequence) else None
    if not cameras or not all(isinstance(c, Camera) for c in cameras):
        raise ValueError(f"camera must be a Camera or a non-empty sequence of Camera, got {camera!r}")
    try:
        centre = check_latlon(torch.as_tensor(centre_latlon, dtype=torch.float64), "centre_latlon")
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"centre_latlon must be (lat, lon) in degrees, got {centre_latlon!r}") from err
    if centre.shape != (2,):
        raise ValueError(f"centre_latlon must be one (lat, lon) pair, got shape {tuple(centre.shape)}")
    metres_per_unit = check_number(metres_per_unit, "metres_per_unit", 0.0, low_open=True)
    east_north = torch.stack([c.c2w[:2, 3].detach().double().cpu() for c in cameras]) * metres_per_unit
    horizontal_m = east_north.norm(dim=-1)
    if horizontal_m.min() < 1e-6:
        raise ValueError(
            "camera stands straight above or below the centre: its azimuth (and GPS bearing) is undefined"
        )
    bearing = torch.rad2deg(torch.atan2(east_north[:, 0], east_north[:, 1]))
    latlon = destination(centre, bearing, horizontal_m / 1000.0)
    return latlon[0] if single else latlon


def camera_rays(camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """The ray through every pixel centre, in the renderer's convention (module docstring).

    Pixel ``(i, j)`` (row i from the top, column j from the left, flattened row-major as ``i * W + j``) has the
    camera-frame direction ``((j + 0.5 - W / 2) / f, -(i + 0.5 - H / 2) / f, -1)``, rotated to the world by ``c2w``
    and normalised.

    Args:
        camera: a :class:`Camera`.

    Returns:
        ``(origins (H * W, 3), directions (H * W, 3))`` on ``camera.c2w``'s device and dtype; directions unit length.
    """
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a Camera, got {camera!r}")
    c2w = camera.c2w
    h, w, f = camera.height, camera.width, camera.focal
    i = torch.arange(h, device=c2w.device, dtype=c2w.dtype) + 0.5
    j = torch.arange(w, device=c2w.device, dtype=c2w.dtype) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    dirs = torch.stack([(jj - w / 2) / f, -(ii - h / 2) / f, -torch.ones_like(ii)], dim=-1).reshape(-1, 3)
    directions = dirs @ c2w[:3, :3].T
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[:3, 3].expand(h * w, 3).contiguous()
    return origins, directions
