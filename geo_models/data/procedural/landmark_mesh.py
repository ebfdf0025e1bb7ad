"""Geometry of the procedural landmark as flat triangle arrays (ENU metres: x = east, y = north, z = up).

Every side gets its own colour and shape so the view azimuth is recognisable at 64x64: a hall with a red north wall,
blue east wall, sand south wall and green west wall; a white tower with a dark pyramid cap on the north-east corner;
a copper dome offset to the south-west of the roof; a white columned porch with a terracotta pediment on the south;
brown buttresses on the west; a low purple annex on the east.
"""

from __future__ import annotations

import functools

import numpy as np
import trimesh

LANDMARK_SIZE_M = (33.5, 24.0, 34.0)  # east-west, north-south, height (bounding box, metres)

# Box faces by outward normal (no bottom: all stands on the ground or a roof); winding is fixed by _outward.
_BOX_CORNERS = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
_BOX_FACES = {
    "-x": [[0, 1, 3], [0, 3, 2]],
    "+x": [[4, 6, 7], [4, 7, 5]],
    "-y": [[0, 4, 5], [0, 5, 1]],
    "+y": [[2, 3, 7], [2, 7, 6]],
    "+z": [[1, 5, 7], [1, 7, 3]],
}


def _box(lo, hi, colours) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box ``lo..hi``; ``colours`` is one RGB or a dict side ("+x", ...) -> RGB (bottom left out)."""
    corners = np.asarray(lo, float) + _BOX_CORNERS * (np.asarray(hi, float) - np.asarray(lo, float))
    tris, rgb = [], []
    for side, faces in _BOX_FACES.items():
        colour = colours[side] if isinstance(colours, dict) else colours
        tris += [corners[f] for f in faces]
        rgb += [colour, colour]
    return np.array(tris), np.array(rgb, float)


def _pyramid(lo, hi, apex_z, colour) -> tuple[np.ndarray, np.ndarray]:
    """Four-sided pyramid over the rectangle ``lo..hi`` (x, y) at height ``lo[2]`` with its apex at ``apex_z``."""
    (x0, y0, z0), (x1, y1) = lo, hi[:2]
    base = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]])
    apex = np.array([(x0 + x1) / 2, (y0 + y1) / 2, apex_z])
    tris = np.array([[base[i], base[(i + 1) % 4], apex] for i in range(4)])
    return tris, np.tile(np.asarray(colour, float), (4, 1))


def _prism(section, axis: int, a0: float, a1: float, colour) -> tuple[np.ndarray, np.ndarray]:
    """Triangular prism: the triangle ``section`` (3 points in the two other axes, in order) from ``a0`` to ``a1``."""
    other = [i for i in range(3) if i != axis]
    ends = []
    for a in (a0, a1):
        pts = np.zeros((3, 3))
        pts[:, axis], pts[:, other] = a, np.asarray(section, float)
        ends.append(pts)
    (p, q, r), (p2, q2, r2) = ends
    tris = np.array(
        [[p, q, r], [p2, q2, r2], [p, p2, q2], [p, q2, q], [q, q2, r2], [q, r2, r], [r, r2, p2], [r, p2, p]]
    )
    return tris, np.tile(np.asarray(colour, float), (len(tris), 1))


def _dome(centre, radius, colour) -> tuple[np.ndarray, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    tris = sphere.triangles[sphere.triangles_center[:, 2] > -0.05 * radius] + np.asarray(centre, float)
    return tris, np.tile(np.asarray(colour, float), (len(tris), 1))


def _outward(tris: np.ndarray) -> np.ndarray:
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    inward = np.einsum("fi,fi->f", normals, tris.mean(axis=1) - tris.reshape(-1, 3).mean(axis=0)) < 0
    tris = tris.copy()
    tris[inward] = tris[inward][:, [0, 2, 1]]
    return tris


@functools.lru_cache(maxsize=1)
def build_landmark_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(F, 3, 3)`` triangle vertices (counter-clockwise seen from outside) and ``(F, 3)`` RGB in [0, 1]."""
    walls = {
        "+y": (0.72, 0.22, 0.18),  # north: brick red
        "+x": (0.22, 0.38, 0.75),  # east: slate blue
        "-y": (0.90, 0.80, 0.52),  # south: sand
        "-x": (0.28, 0.60, 0.30),  # west: green
        "+z": (0.50, 0.50, 0.52),  # flat roof
    }
    white, marble = (0.93, 0.92, 0.88), (0.97, 0.97, 0.95)
    parts = [
        _box((-12, -9, 0), (12, 9, 10), walls),
        _box((7, 4, 0), (13, 10, 26), white),  # north-east tower
        _pyramid((7, 4, 26), (13, 10), 34, (0.30, 0.12, 0.12)),
        _dome((-5, -2, 10), 6.0, (0.30, 0.68, 0.60)),  # copper dome, south-west of the roof
        _box((-8, -14, 7), (8, -9, 8.5), marble),  # south porch: lintel, pediment and columns
        _prism([(-14, 8.5), (-9, 8.5), (-11.5, 11.5)], 0, -8, 8, (0.82, 0.42, 0.22)),
        *[_box((x - 0.6, -13.6, 0), (x + 0.6, -12.4, 7), marble) for x in (-6.5, -2.2, 2.2, 6.5)],
        _box((12, -7, 0), (17, 1, 4), (0.55, 0.30, 0.62)),  # low purple annex on the east side
    ]
    for y in (-6.0, 0.0, 6.0):  # west buttresses: wedges leaning on the wall, sloping down to the west
        parts.append(_prism([(-16.5, 0), (-12, 0), (-12, 8)], 1, y - 0.8, y + 0.8, (0.42, 0.30, 0.20)))
    # Every part is convex, so orienting each triangle away from its part's centroid makes the winding outward.
    tris = np.concatenate([_outward(p[0]) for p in parts])
    rgb = np.concatenate([p[1] for p in parts])
    tris, rgb = tris.astype(np.float64), rgb.astype(np.float64)
    tris.flags.writeable = rgb.flags.writeable = False  # cached and shared: callers must not mutate
    return tris, rgb


__all__ = ["LANDMARK_SIZE_M", "build_landmark_arrays"]
