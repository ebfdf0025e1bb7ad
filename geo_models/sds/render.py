"""Differentiable volume rendering of a :class:`~geo_models.sds.field.NeRFField` for score distillation ("GPS as a
Control Signal for Image Generation", sec. 3.2: "We can then render a corresponding image x = h_theta(q) from the
NeRF"; DreamFusion, Poole et al. 2022, sec. 3.2: NeRF-style alpha compositing with Lambertian shading).

Along each ray ``o + t d`` (``d`` normalised, so ``t`` is a distance), ``S`` stratified samples ``t_i`` split
``[near, far]`` into ``S`` equal bins, one sample per bin (at a uniform random position in it when ``perturb``, else at
its centre). Sample ``i`` stands for the interval between the midpoints to its neighbours (``near`` and ``far`` at the
ends), of length ``delta_i``; the lengths add up to ``far - near`` exactly, so a constant density ``sigma`` gives an
opacity of exactly ``1 - exp(-sigma (far - near))``. Then (NeRF's quadrature):

    alpha_i = 1 - exp(-sigma_i delta_i),   T_i = exp(-sum_{j<i} sigma_j delta_j),   w_i = T_i alpha_i
    rgb = sum_i w_i c_i + (1 - sum_i w_i) background(d)

with ``c_i`` the albedo (``shading="albedo"``), DreamFusion's Lambertian shading ``albedo (ambient + (1 - ambient)
max(0, n . l))`` (``"lambertian"``) or the same with a white albedo (``"textureless"``); ``n`` are the field's normals
``-grad sigma / |grad sigma|`` and ``l`` the unit direction towards a distant light.

Camera convention (:func:`pixel_rays`, :func:`render_image`; the same as :mod:`geo_models.sds.cameras`; OpenGL /
NeRF-synthetic style): the camera looks along ``-z`` of its own frame with ``+y`` up and ``+x`` to the right of the
image; ``c2w`` (4, 4) maps camera coordinates to world coordinates (its last column is the camera centre in the
world). Pixel ``(row i, column j)`` (row 0 at the top) is sampled through its centre: camera-frame direction
``((j + 0.5 - W / 2) / f, -(i + 0.5 - H / 2) / f, -1)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from geo_models.checks import MAX_IMAGE_SIDE, MAX_INT, check_generator, check_int, check_number

__all__ = ["SHADINGS", "PinholeCamera", "ray_sphere_bounds", "render_image", "render_rays", "render_view"]

SHADINGS = ("albedo", "lambertian", "textureless")
MAX_SAMPLES_PER_RAY = 4096


@dataclass
class PinholeCamera:
    """A pinhole camera (convention: see the module docstring).

    Attributes:
        c2w: ``(4, 4)`` camera-to-world matrix (a tensor, array or nested list); the camera looks along its ``-z``.
        focal: focal length in pixels (the same for both axes).
        height: image height in pixels.
        width: image width in pixels.
    """

    c2w: Any
    focal: float
    height: int
    width: int


def _check_rays(origins, directions) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(R, 3)`` origins and unit directions (``directions`` normalised here)."""
    for value, name in ((origins, "origins"), (directions, "directions")):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (R, 3), got {type(value).__name__}")
        if value.ndim != 2 or value.shape[1] != 3:
            raise ValueError(f"{name} must have shape (R, 3), got {tuple(value.shape)}")
        if not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite (no NaN or inf)")
    if directions.shape != origins.shape:
        raise ValueError(f"directions must have the shape of origins {tuple(origins.shape)}, got "
                         f"{tuple(directions.shape)}")  # fmt: skip
    if directions.device != origins.device:
        raise ValueError(f"directions is on {directions.device}, origins on {origins.device}")
    norms = directions.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("directions must be non-zero vectors")
    dtype = torch.promote_types(origins.dtype, directions.dtype)
    return origins.to(dtype), (directions / norms).to(dtype)


def ray_sphere_bounds(
    origins: torch.Tensor, directions: torch.Tensor, radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays enter and leave the ball ``|x| <= radius`` centred at the origin.

    Args:
        origins: ``(R, 3)`` ray origins.
        directions: ``(R, 3)`` non-zero ray directions (normalised here: distances are along the unit direction).
        radius: radius of the ball, > 0.

    Returns:
        ``(near (R,), far (R,))`` distances along the rays, ``0 <= near <= far``: ``near = 0`` for an origin inside
        the ball; rays that miss it (or point away from it) get the empty interval ``near = far = 0``.

    Raises:
        ValueError: bad ``origins`` / ``directions`` (shape, dtype, non-finite, zero direction) or ``radius``.
    """
    origins, directions = _check_rays(origins, directions)
    radius = check_number(radius, "radius", 0.0, None, low_open=True)
    b = (origins * directions).sum(dim=-1)
    c = origins.pow(2).sum(dim=-1) - radius**2
    disc = b * b - c
    root = disc.clamp_min(0).sqrt()
    near, far = (-b - root).clamp_min(0), -b + root
    hit = (disc > 0) & (far > 0)
    zero = torch.zeros_like(near)
    return torch.where(hit, near, zero), torch.where(hit, far, zero)


def _check_bound(value, name: str, num_rays: int, like: torch.Tensor) -> torch.Tensor:
    """``near`` / ``far``: a number or a tensor of ``R`` (or 1) values, finite and >= 0 -> ``(R,)`` tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() not in (1, num_rays) or value.ndim > 1:
            raise ValueError(f"{name} must be a number or a tensor of shape ({num_rays},), got {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0")
        return value.to(device=like.device, dtype=like.dtype).reshape(-1).expand(num_rays)
    value = check_number(value, name, 0.0)
    return torch.full((num_rays,), value, device=like.device, dtype=like.dtype)


def _check_light(light_dir, directions: torch.Tensor) -> torch.Tensor:
    """Unit light directions ``(R, 3)``; ``None``: a headlight (towards the camera, ``-d``)."""
    if light_dir is None:
        return -directions
    message = f"light_dir must be None or a non-zero finite tensor of shape (3,) or ({directions.shape[0]}, 3)"
    if not isinstance(light_dir, torch.Tensor):
        try:
            light_dir = torch.as_tensor(light_dir, dtype=directions.dtype)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{message}, got {light_dir!r}") from err
    if light_dir.shape not in ((3,), (directions.shape[0], 3)) or not light_dir.is_floating_point():
        raise ValueError(f"{message}, got shape {tuple(light_dir.shape)} and dtype {light_dir.dtype}")
    light_dir = light_dir.to(device=directions.device, dtype=directions.dtype)
    norms = light_dir.norm(dim=-1, keepdim=True)
    if not bool(torch.isfinite(light_dir).all()) or bool((norms == 0).any()):
        raise ValueError(f"{message} (got a zero or non-finite vector)")
    return (light_dir / norms).expand_as(directions)


def _composite(field, origins, directions, t, near, far, shading, light, ambient, return_normals):
    """Render one chunk of rays at sample distances ``t (r, S)`` -> dict of outputs (see :func:`render_rays`)."""
    r, s = t.shape
    points = (origins[:, None, :] + t[..., None] * directions[:, None, :]).reshape(-1, 3)
    density, albedo = field(points)
    density, albedo = density.view(r, s), albedo.view(r, s, 3)
    edges = torch.cat([near[:, None], (t[:, 1:] + t[:, :-1]) / 2, far[:, None]], dim=1)
    optical = density * (edges[:, 1:] - edges[:, :-1]).clamp_min(0)  # sigma_i delta_i
    alpha = 1 - torch.exp(-optical)
    transmittance = torch.exp(-(torch.cumsum(optical, dim=1) - optical))  # exclusive sum: T_i
    weights = transmittance * alpha
    opacity = weights.sum(dim=1)
    need_normals = return_normals or shading != "albedo"
    normals = field.normals(points).view(r, s, 3) if need_normals else None
    if shading == "albedo":
        color = albedo
    else:
        lambert = (normals * light[:, None, :]).sum(dim=-1, keepdim=True).clamp_min(0)
        light_term = ambient + (1 - ambient) * lambert
        color = light_term.expand(r, s, 3) if shading == "textureless" else albedo * light_term
    rgb = (weights[..., None] * color).sum(dim=1) + (1 - opacity)[:, None] * field.background(directions)
    out = {"rgb": rgb, "opacity": opacity, "depth": (weights * t).sum(dim=1), "weights": weights}
    if need_normals:
        out["normals"] = (weights[..., None] * normals).sum(dim=1)
        # Ref-NeRF / DreamFusion orientation penalty: normals facing away from the camera (n . d > 0) where visible
        facing_away = (normals * directions[:, None, :]).sum(dim=-1).clamp_min(0)
        out["orientation"] = (weights * facing_away.square()).sum(dim=1)
    else:
        out["normals"], out["orientation"] = torch.zeros_like(rgb), torch.zeros_like(opacity)
    return out


def render_rays(
    field,
    origins: torch.Tensor,
    directions: torch.Tensor,
    *,
    near=None,
    far=None,
    num_samples: int = 64,
    generator: torch.Generator | None = None,
    perturb: bool = True,
    shading: str = "albedo",
    light_dir=None,
    ambient: float = 0.1,
    chunk: int = 4096,
    return_normals: bool = True,
) -> dict[str, torch.Tensor]:
    """Volume-render rays through a field (alpha compositing over stratified samples; see the module docstring).

    Args:
        field: a :class:`~geo_models.sds.field.NeRFField`, or any object with ``field(points (N, 3)) -> (density
            (N,), albedo (N, 3))``, ``field.normals(points) -> (N, 3)`` and ``field.background(dirs (N, 3)) -> (N,
            3)``.
        origins: ``(R, 3)`` ray origins (world), on the field's device.
        directions: ``(R, 3)`` non-zero ray directions; normalised here, so ``near``, ``far`` and ``depth`` are
            distances along the ray.
        near: start of the sampled interval: a number or an ``(R,)`` tensor, >= 0. ``None`` (with ``far``
            ``None``): the rays' entry into the field's bounding ball (``field.config.bound``), see
            :func:`ray_sphere_bounds`.
        far: end of the interval, like ``near``; where ``far <= near`` the ray sees only the background.
        num_samples: samples per ray ``S``, in [1, 4096].
        generator: ``torch.Generator`` of the stratified jitter (``None``: the global RNG of the rays' device). The
            jitter of all rays is drawn at once, so the result does not depend on ``chunk``.
        perturb: jitter the samples within their bins (training); ``False`` samples the bin centres (deterministic).
        shading: ``"albedo"``, ``"lambertian"`` or ``"textureless"`` (DreamFusion's three modes).
        light_dir: direction towards a distant light, ``(3,)`` or ``(R, 3)`` (normalised here); ``None``: a
            headlight, ``-directions``. Used by the two shaded modes.
        ambient: ambient share of the Lambertian shading, in [0, 1].
        chunk: rays rendered at a time (bounds the memory: about ``chunk * S`` field evaluations per pass).
        return_normals: compute the ``normals`` output also for ``shading="albedo"`` (costs a second pass through
            the field; ``False`` returns zeros there and saves it).

    Returns:
        dict with ``rgb (R, 3)``, ``opacity (R,)`` (``sum_i w_i``), ``depth (R,)`` (``sum_i w_i t_i``, not
        normalised by the opacity), ``normals (R, 3)`` (``sum_i w_i n_i``: opacity-weighted, not unit), ``weights
        (R, S)``, ``orientation (R,)`` (``sum_i w_i max(0, n_i . d)^2``, the orientation penalty of Ref-NeRF /
        DreamFusion: visible normals facing away from the camera; zeros when normals are not computed). All
        differentiable w.r.t. the field's parameters.

    Raises:
        ValueError: a bad argument; the message names it.
    """
    origins, directions = _check_rays(origins, directions)
    num_rays = origins.shape[0]
    num_samples = check_int(num_samples, "num_samples", 1, MAX_SAMPLES_PER_RAY)
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
    ambient = check_number(ambient, "ambient", 0.0, 1.0)
    generator = check_generator(generator)
    if not isinstance(perturb, bool):
        raise ValueError(f"perturb must be True or False, got {perturb!r}")
    if not isinstance(return_normals, bool):
        raise ValueError(f"return_normals must be True or False, got {return_normals!r}")
    chunk = check_int(chunk, "chunk", 1, MAX_INT)
    light = _check_light(light_dir, directions)
    if near is None and far is None:
        bound = getattr(getattr(field, "config", None), "bound", None)
        if bound is None:
            raise ValueError("near and far must be given for a field without config.bound")
        near, far = ray_sphere_bounds(origins, directions, bound)
    elif near is None or far is None:
        raise ValueError(f"{'near' if near is None else 'far'} must be given with {'far' if near is None else 'near'}")
    near = _check_bound(near, "near", num_rays, origins)
    far = torch.maximum(_check_bound(far, "far", num_rays, origins), near)

    steps = torch.arange(num_samples, device=origins.device, dtype=origins.dtype)
    if perturb:
        device = origins.device if generator is None else generator.device
        jitter = torch.rand((num_rays, num_samples), generator=generator, device=device, dtype=origins.dtype)
        steps = steps + jitter.to(origins.device)
    else:
        steps = (steps + 0.5).expand(num_rays, num_samples)
    t = near[:, None] + (far - near)[:, None] * steps / num_samples

    parts = []
    for start in range(0, num_rays, chunk):
        rays = slice(start, start + chunk)
        parts.append(_composite(field, origins[rays], directions[rays], t[rays], near[rays], far[rays], shading,
                                light[rays], ambient, return_normals))  # fmt: skip
    if len(parts) == 1:
        return parts[0]
    return {key: torch.cat([part[key] for part in parts], dim=0) for key in parts[0]}


def _camera_fields(camera) -> tuple[Any, Any, Any, Any]:
    keys = ("c2w", "focal", "height", "width")
    if isinstance(camera, Mapping):
        missing = [k for k in keys if k not in camera]
        if missing:
            raise ValueError(f"camera is missing {missing} (needs {list(keys)})")
        return tuple(camera[k] for k in keys)
    if all(hasattr(camera, k) for k in keys):
        return tuple(getattr(camera, k) for k in keys)
    raise ValueError(f"camera must be a mapping or an object with {list(keys)}, got {type(camera).__name__}")


def pixel_rays(camera, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel of a pinhole camera (convention: see the module docstring).

    Args:
        camera: a :class:`PinholeCamera`, a :class:`geo_models.sds.cameras.Camera`, a mapping or any object with
            ``c2w (4, 4)``, ``focal`` (pixels, > 0), ``height`` and ``width`` (pixels, in [1, 2048]).
        device: device of the rays (``None``: that of a tensor ``c2w``, else the CPU).

    Returns:
        ``(origins (H * W, 3), directions (H * W, 3))``, row-major (pixel ``(i, j)`` is ray ``i * W + j``),
        directions not normalised (camera-frame z component -1). Float32 unless ``c2w`` is a float64 tensor.

    Raises:
        ValueError: a bad camera; the message names the field (``camera``, ``c2w``, ``focal``, ``height``,
            ``width``).
    """
    c2w, focal, height, width = _camera_fields(camera)
    height = check_int(height, "height", 1, MAX_IMAGE_SIDE)
    width = check_int(width, "width", 1, MAX_IMAGE_SIDE)
    focal = check_number(focal, "focal", 0.0, None, low_open=True)
    try:
        if isinstance(c2w, torch.Tensor):
            c2w = (c2w if c2w.dtype == torch.float64 else c2w.float()).to(c2w.device if device is None else device)
        else:
            c2w = torch.as_tensor(c2w, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"c2w must be a (4, 4) matrix, got {c2w!r}") from err
    if c2w.shape != (4, 4) or not bool(torch.isfinite(c2w).all()):
        raise ValueError(f"c2w must be a finite (4, 4) matrix, got shape {tuple(c2w.shape)}")
    kwargs = {"device": c2w.device, "dtype": c2w.dtype}
    rows = torch.arange(height, **kwargs) + 0.5
    cols = torch.arange(width, **kwargs) + 0.5
    i, j = torch.meshgrid(rows, cols, indexing="ij")
    local = torch.stack([(j - width / 2) / focal, -(i - height / 2) / focal, -torch.ones_like(i)], dim=-1)
    directions = local.reshape(-1, 3) @ c2w[:3, :3].T
    origins = c2w[:3, 3].expand_as(directions)
    return origins, directions


def render_view(field, camera, **kwargs) -> dict[str, torch.Tensor]:
    """Render a pinhole camera's view with :func:`render_rays`, every output as an image.

    Args:
        field: the field to render (see :func:`render_rays`).
        camera: a :class:`PinholeCamera`, a :class:`geo_models.sds.cameras.Camera`, a mapping or any object with
            ``c2w``, ``focal``, ``height``, ``width`` (convention: see the module docstring). The rays are made
            on the device of the field's parameters (that of ``c2w`` for a field without parameters).
        **kwargs: passed to :func:`render_rays` (``near``, ``far``, ``num_samples``, ``generator``, ``perturb``,
            ``shading``, ``light_dir``, ``ambient``, ``chunk``); ``return_normals`` defaults to ``False`` here.

    Returns:
        dict with ``rgb (H, W, 3)``, ``opacity (H, W)``, ``depth (H, W)``, ``normals (H, W, 3)``, ``orientation (H,
        W)`` and ``weights (H, W, S)`` (see :func:`render_rays`), differentiable w.r.t. the field's parameters.

    Raises:
        ValueError: a bad camera or argument; the message names it.
    """
    parameter = next(iter(field.parameters()), None) if hasattr(field, "parameters") else None
    origins, directions = pixel_rays(camera, device=None if parameter is None else parameter.device)
    _, _, height, width = _camera_fields(camera)
    kwargs.setdefault("return_normals", False)
    out = render_rays(field, origins, directions, **kwargs)
    return {key: value.view(int(height), int(width), *value.shape[1:]) for key, value in out.items()}


def render_image(field, camera, **kwargs) -> torch.Tensor:
    """Render a pinhole camera's image: ``render_view(field, camera, **kwargs)["rgb"]``, ``(H, W, 3)`` RGB,
    differentiable w.r.t. the field's parameters (see :func:`render_view`)."""
    return render_view(field, camera, **kwargs)["rgb"]
