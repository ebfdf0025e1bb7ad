"""A small pure-numpy rasteriser: pinhole camera, z-buffer, flat Lambert shading, textured ground, sky gradient.

Frames follow :mod:`geo_models.data.procedural.landmark`: ENU world (z up), OpenGL camera axes (looking along -z).
Depth everywhere is the camera-space distance along the viewing axis, so ground and triangles share one z-buffer.
"""

from __future__ import annotations

import math

import numpy as np

_SKY_HORIZON, _SKY_ZENITH = np.array([0.86, 0.89, 0.93]), np.array([0.34, 0.54, 0.84])
_GRASS, _PAVING = np.array([0.34, 0.50, 0.24]), np.array([0.60, 0.58, 0.54])
_PLAZA_RADIUS_M, _TILE_M, _FOG_M = 24.0, 3.0, 450.0
_NEAR = 0.1


def rasterise(tris: np.ndarray, rgb: np.ndarray, pose: np.ndarray, fov_deg: float, size: int, lighting) -> np.ndarray:
    """Render ``tris (F, 3, 3)`` (ENU, outward counter-clockwise) with colours ``rgb (F, 3)`` -> ``(size, size, 3)``.

    Returns linear float RGB in about [0, 1], before exposure and white balance.
    """
    rot, cam = pose[:3, :3], pose[:3, 3]
    f, c = size / 2 / math.tan(math.radians(fov_deg) / 2), size / 2
    sun = lighting.sun_direction()
    pix = np.arange(size) + 0.5

    # Background: a ray per pixel (camera z = -1, so the ray parameter is the depth) hits the ground or the sky.
    ray_cam = np.stack(np.broadcast_arrays((pix[None, :] - c) / f, (c - pix[:, None]) / f, -1.0), axis=-1)
    ray = ray_cam @ rot.T
    up = ray[..., 2] / np.linalg.norm(ray, axis=-1)
    sky = _SKY_HORIZON + (_SKY_ZENITH - _SKY_HORIZON) * np.clip(up, 0, 1)[..., None] ** 0.6
    ground = ray[..., 2] < -1e-6
    depth = np.where(ground, -cam[2] / np.where(ground, ray[..., 2], -1.0), np.inf)
    gx, gy = (cam[:2] + np.where(ground, depth, 0.0)[..., None] * ray[..., :2]).transpose(2, 0, 1)
    img = np.where(ground[..., None], _ground(gx, gy, depth, lighting, sun), sky)

    # Triangles: camera space, drop those behind the near plane or facing away, shade flat, project.
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    pc = (tris - cam) @ rot
    z = -pc[..., 2]
    keep = (z.min(axis=1) > _NEAR) & (np.einsum("fi,fi->f", normals, cam - tris[:, 0]) > 0)
    pc, z, normals, rgb = pc[keep], z[keep], normals[keep], rgb[keep]
    shade = lighting.ambient + lighting.diffuse * np.clip(normals @ sun, 0, None)
    colour = rgb * shade[:, None]
    u, v = c + f * pc[..., 0] / z, c - f * pc[..., 1] / z

    # Edge functions w_k(x, y) = a_k x + b_k y + d_k (barycentric weights once divided by the signed area).
    u1, v1, u2, v2 = np.roll(u, -1, axis=1), np.roll(v, -1, axis=1), np.roll(u, -2, axis=1), np.roll(v, -2, axis=1)
    a, b, d = v1 - v2, u2 - u1, u1 * v2 - u2 * v1
    area = (a * u + b * v + d)[:, 0]
    ok = np.abs(area) > 1e-9
    a, b, d = (x[ok] / area[ok, None] for x in (a, b, d))
    inv_z, colour = 1 / z[ok], colour[ok]
    x0 = np.clip(np.floor(u[ok].min(axis=1) - 0.5), 0, size).astype(int)
    x1 = np.clip(np.ceil(u[ok].max(axis=1) - 0.5) + 1, 0, size).astype(int)
    y0 = np.clip(np.floor(v[ok].min(axis=1) - 0.5), 0, size).astype(int)
    y1 = np.clip(np.ceil(v[ok].max(axis=1) - 0.5) + 1, 0, size).astype(int)
    for k in np.flatnonzero((x1 > x0) & (y1 > y0)):
        xs, ys = pix[x0[k] : x1[k]], pix[y0[k] : y1[k], None]
        w = a[k, :, None, None] * xs + b[k, :, None, None] * ys + d[k, :, None, None]
        zz = 1 / np.einsum("k,kij->ij", inv_z[k], w)
        region = depth[y0[k] : y1[k], x0[k] : x1[k]]
        hit = (w.min(axis=0) >= -1e-7) & (zz < region)
        region[hit] = zz[hit]
        img[y0[k] : y1[k], x0[k] : x1[k]][hit] = colour[k]
    return img


def _ground(gx: np.ndarray, gy: np.ndarray, depth: np.ndarray, lighting, sun: np.ndarray) -> np.ndarray:
    """Ground colour at ENU points ``(gx, gy)``: a tiled plaza around the landmark, mottled grass beyond, hazy far."""
    r = np.hypot(gx, gy)
    mottle = 1 + 0.10 * np.sin(0.31 * gx + 1.3 * np.sin(0.11 * gy)) * np.sin(0.27 * gy + 1.1 * np.sin(0.13 * gx))
    grass = _GRASS * mottle[..., None]
    grout = (np.mod(gx, _TILE_M) < 0.2) | (np.mod(gy, _TILE_M) < 0.2)
    paving = _PAVING * np.where(grout, 0.8, 1.0)[..., None]
    colour = np.where((r < _PLAZA_RADIUS_M)[..., None], paving, grass)
    colour = colour * (lighting.ambient + lighting.diffuse * max(sun[2], 0.0))
    fog = 1 - np.exp(-np.where(np.isfinite(depth), depth, 0.0) / _FOG_M)
    return colour + (_SKY_HORIZON - colour) * fog[..., None]


__all__ = ["rasterise"]
