"""Virtual cameras of GPS-guided SDS: look-at geometry, sampling ranges, determinism, the azimuth convention of the
angle model and of the landmark generator, and the pixel rays."""

import math

import numpy as np
import pytest
import torch

from geo_models.data.procedural import LANDMARK_CENTRE, LOOK_AT_HEIGHT_M, landmark_camera_pose, project_points
from geo_models.generation.conditioning import AngleEmbedder
from geo_models.sds.cameras import (
    DEFAULT_METRES_PER_UNIT,
    Camera,
    CameraSampler,
    camera_latlon,
    camera_rays,
)
from geo_models.sphere import destination

MPU = DEFAULT_METRES_PER_UNIT


def _check_look_at(cam: Camera):
    c2w = cam.c2w.double()
    rot, pos = c2w[:3, :3], c2w[:3, 3]
    torch.testing.assert_close(rot.T @ rot, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.det(rot).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.dot(-rot[:, 2], -pos / pos.norm()).item() == pytest.approx(1.0, abs=1e-6)  # -z looks at the origin
    assert abs(rot[2, 0].item()) < 1e-6 and rot[2, 1].item() > 0  # no roll: x horizontal, y up-ish
    assert pos.norm().item() == pytest.approx(cam.distance, rel=1e-6)
    assert math.degrees(math.asin(pos[2].item() / pos.norm().item())) == pytest.approx(cam.elevation_deg, abs=1e-4)
    azimuth = math.degrees(math.atan2(pos[0].item(), pos[1].item())) % 360  # clockwise from north (+y) to east (+x)
    assert (azimuth - cam.azimuth_deg + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-4)


def test_sample_geometry_ranges_and_coverage():
    sampler = CameraSampler(resolution=(24, 32))
    cams = sampler.sample(256, torch.Generator().manual_seed(0))
    assert len(cams) == 256 and all(c.c2w.shape == (4, 4) and c.c2w.dtype == torch.float32 for c in cams)
    for cam in cams[:32]:
        _check_look_at(cam)
    az = np.array([c.azimuth_deg for c in cams])
    el = np.array([c.elevation_deg for c in cams])
    dist = np.array([c.distance for c in cams])
    fov = np.array([c.fov_deg for c in cams])
    assert ((az >= 0) & (az < 360)).all() and len(np.unique(az // 45)) == 8  # every octant of the circle
    assert az.min() < 10 and az.max() > 350
    assert ((el >= -2) & (el <= 12)).all() and el.max() - el.min() > 10
    assert ((dist >= 1.8) & (dist <= 3.2)).all()
    assert ((fov >= 45 - 1e-6) & (fov <= 55 + 1e-6)).all() and fov.std() > 1  # focal jitter
    assert all(c.height == 24 and c.width == 32 for c in cams)
    assert cams[0].focal == pytest.approx(12 / math.tan(math.radians(cams[0].fov_deg) / 2))


def test_sample_is_seeded_and_ranges_are_respected():
    sampler = CameraSampler(azimuth_range=(300, 400), elevation_range=(-10, 0), distance_range=(2, 2), resolution=8)
    a = sampler.sample(16, torch.Generator().manual_seed(3))
    b = sampler.sample(16, torch.Generator().manual_seed(3))
    c = sampler.sample(16, torch.Generator().manual_seed(4))
    assert all(torch.equal(x.c2w, y.c2w) and x.azimuth_deg == y.azimuth_deg for x, y in zip(a, b))
    assert not torch.equal(a[0].c2w, c[0].c2w)
    az = np.array([x.azimuth_deg for x in a])
    assert (((az >= 300) & (az < 360)) | (az <= 40)).all()  # the range wraps through north
    assert all(-10 <= x.elevation_deg <= 0 and x.c2w[2, 3] <= 1e-6 for x in a)  # paper 4.1: at or below the centre
    assert all(x.distance == pytest.approx(2.0) for x in a)


def test_turntable_evenly_spaced():
    cams = CameraSampler().turntable(8, elevation=5.0, distance=2.5)
    assert [c.azimuth_deg for c in cams] == pytest.approx([0, 45, 90, 135, 180, 225, 270, 315])
    for cam in cams:
        _check_look_at(cam)
        assert cam.elevation_deg == 5.0 and cam.distance == 2.5 and cam.fov_deg == pytest.approx(50.0)
    north, east = cams[0].position, cams[2].position  # azimuth 0 = due north (+y), 90 = due east (+x)
    assert north[1] > 2 and abs(north[0]) < 1e-6 and east[0] > 2 and abs(east[1]) < 1e-6
    default = CameraSampler().turntable(3)
    assert default[0].elevation_deg == pytest.approx(5.0) and default[0].distance == pytest.approx(2.5)


def test_azimuth_is_the_angle_embedders():
    """A camera placed at azimuth a, geotagged around the landmark centre, gives back a in AngleEmbedder.azimuth."""
    cams = CameraSampler().sample(64, torch.Generator().manual_seed(1)) + CameraSampler().turntable(4)
    latlon = camera_latlon(cams, LANDMARK_CENTRE, MPU)
    assert latlon.shape == (68, 2) and latlon.dtype == torch.float64
    embedder = AngleEmbedder(hidden_size=8, centre_latlon=LANDMARK_CENTRE, mlp_hidden_dim=8)
    got = embedder.azimuth(latlon).numpy()
    want = np.array([c.azimuth_deg for c in cams])
    assert np.abs((got - want + 180) % 360 - 180).max() < 1e-4  # float32 poses
    # the east camera of the turntable is east of the centre, the north one north of it
    north, east = latlon[-4], latlon[-3]
    assert north[0] > LANDMARK_CENTRE[0] and east[1] > LANDMARK_CENTRE[1]
    assert camera_latlon(cams[0], LANDMARK_CENTRE, MPU).shape == (2,)


def test_matches_the_landmark_generator():
    """Same pose as the landmark photos' (scaled, origin at their look-at point) and the same geotag."""
    sampler = CameraSampler()
    for cam in sampler.cameras([0.0, 37.0, 200.0, 333.0], [-2.0, 5.0, 12.0, 0.0], [1.8, 2.4, 3.2, 2.0], 50.0):
        horizontal_m = cam.distance * MPU * math.cos(math.radians(cam.elevation_deg))
        pose = landmark_camera_pose(cam.azimuth_deg, cam.elevation_deg, horizontal_m)
        ours = cam.c2w.double().numpy().copy()
        ours[:3, 3] = ours[:3, 3] * MPU + [0.0, 0.0, LOOK_AT_HEIGHT_M]
        np.testing.assert_allclose(ours, pose, atol=1e-4)
        geotag = destination(torch.tensor(LANDMARK_CENTRE, dtype=torch.float64), cam.azimuth_deg, horizontal_m / 1000)
        torch.testing.assert_close(camera_latlon(cam, LANDMARK_CENTRE, MPU), geotag, atol=1e-9, rtol=0)


def test_rays_centre_pixel_and_pixel_convention():
    cam = CameraSampler(resolution=15).turntable(3, elevation=10.0, distance=2.0)[1]
    origins, directions = camera_rays(cam)
    assert origins.shape == directions.shape == (225, 3) and directions.dtype == torch.float32
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(225), atol=1e-6, rtol=0)
    torch.testing.assert_close(origins, cam.position.expand(225, 3))
    o, d = origins[7 * 15 + 7].double(), directions[7 * 15 + 7].double()  # the centre pixel's ray hits the origin
    assert torch.linalg.cross(-o, d).norm().item() < 1e-5 and torch.dot(-o, d).item() > 0
    local = directions[0].double() @ cam.c2w[:3, :3].double()  # pixel (0, 0): top left (camera -x, +y)
    assert local[0] < 0 and local[1] > 0 and local[2] < 0
    # the landmark rasteriser's projection puts a point on pixel (i, j)'s ray at that pixel's centre
    pose = cam.c2w.double().numpy()
    for i, j in [(0, 0), (3, 11), (14, 2)]:
        point = (origins[i * 15 + j] + 1.7 * directions[i * 15 + j]).double().numpy()
        uv = project_points(point[None], pose, cam.fov_deg, 15)[0]
        np.testing.assert_allclose(uv, [j + 0.5, i + 0.5], atol=1e-4)


def test_rays_match_the_renderer():
    render = pytest.importorskip("geo_models.sds.render")
    pixel_rays = getattr(render, "pixel_rays", None) or getattr(render, "camera_rays", None)
    if pixel_rays is None:
        pytest.skip("geo_models.sds.render has no pixel ray function")
    cam = CameraSampler(resolution=(6, 9)).sample(1, torch.Generator().manual_seed(0))[0]
    origins, directions = camera_rays(cam)
    theirs_o, theirs_d = pixel_rays(cam)
    torch.testing.assert_close(origins, theirs_o.float())
    torch.testing.assert_close(directions, torch.nn.functional.normalize(theirs_d.float(), dim=-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    cams = CameraSampler(resolution=8).sample(2, torch.Generator("cuda").manual_seed(0))
    assert cams[0].c2w.is_cuda
    origins, directions = camera_rays(cams[0])
    assert origins.is_cuda and directions.is_cuda
    assert camera_latlon(cams, LANDMARK_CENTRE, MPU).shape == (2, 2)
    assert not CameraSampler().turntable(2, device="cuda")[0].c2w.is_cpu


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"azimuth_range": (0, 400)}, "azimuth_range"),
        ({"azimuth_range": 5}, "azimuth_range"),
        ({"elevation_range": (-5, 90)}, "elevation_range"),
        ({"elevation_range": (10, 0)}, "elevation_range"),
        ({"distance_range": (0, 2)}, "distance_range"),
        ({"fov_range": (0, 50)}, "fov_range"),
        ({"fov_range": (50, float("nan"))}, "fov_range"),
        ({"resolution": 0}, "resolution"),
        ({"resolution": (8, 2.5)}, "resolution"),
    ],
)
def test_sampler_config_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CameraSampler(**kwargs)


def test_call_errors():
    sampler = CameraSampler(resolution=4)
    cam = sampler.turntable(1)[0]
    with pytest.raises(ValueError, match="n must"):
        sampler.sample(0)
    with pytest.raises(ValueError, match="generator"):
        sampler.sample(2, generator=0)
    with pytest.raises(ValueError, match="elevation"):
        sampler.turntable(2, elevation=90)
    with pytest.raises(ValueError, match="distance"):
        sampler.turntable(2, distance=-1)
    with pytest.raises(ValueError, match="c2w"):
        Camera(torch.eye(3), 10.0, 4, 4, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="focal"):
        Camera(torch.eye(4), 0.0, 4, 4, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="camera"):
        camera_latlon([], LANDMARK_CENTRE, MPU)
    with pytest.raises(ValueError, match="centre_latlon"):
        camera_latlon(cam, (95.0, 0.0), MPU)
    with pytest.raises(ValueError, match="metres_per_unit"):
        camera_latlon(cam, LANDMARK_CENTRE, 0)
    with pytest.raises(ValueError, match="azimuth"):  # straight above the centre
        camera_latlon(Camera(torch.eye(4), 10.0, 4, 4, 0.0, 90.0, 1.0), LANDMARK_CENTRE, MPU)
    with pytest.raises(ValueError, match="camera"):
        camera_rays({"c2w": torch.eye(4)})
