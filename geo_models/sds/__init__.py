"""GPS-guided score distillation ("GPS as a Control Signal for Image Generation", sec. 3.2, 4.1, A.2.2): a NeRF
optimised so that its renders score well under the angle-to-image diffusion model (DreamFusion-style SDS), exported
as a mesh.

- :class:`NeRFField`: density / albedo field in a ball, with DreamFusion's density blob, normals and background.
- :func:`render_rays`, :func:`render_image`, :func:`render_view`, :func:`ray_sphere_bounds`, :class:`PinholeCamera`:
  differentiable volume rendering with albedo / Lambertian / textureless shading.
- :class:`CameraSampler`, :class:`Camera`, :func:`camera_latlon`, :func:`camera_rays`: random / turntable virtual
  cameras around the landmark (ENU frame, azimuth clockwise from north as the angle model's), their GPS for the
  angle embedder and their unit pixel rays. A :class:`Camera` is also a camera for :func:`render_image`.
- :class:`AngleSDSGuidance`, :func:`anneal_timestep_interval`: the SDS loss of renders under the angle-to-image model
  (eq. 7 guidance, eq. 10 gradient ``w(t) (eps_hat - eps)``, the timestep interval annealed as in sec. 4.1).
- :func:`extract_mesh`, :func:`export_glb`: marching-cubes mesh with albedo vertex colours, written as an upright
  (y-up) glTF binary.
"""

from geo_models.sds.cameras import Camera, CameraSampler, camera_latlon, camera_rays
from geo_models.sds.field import NeRFField
from geo_models.sds.guidance import AngleSDSGuidance, anneal_timestep_interval
from geo_models.sds.mesh import export_glb, extract_mesh
from geo_models.sds.render import PinholeCamera, ray_sphere_bounds, render_image, render_rays, render_view

__all__ = [
    "AngleSDSGuidance",
    "Camera",
    "CameraSampler",
    "NeRFField",
    "PinholeCamera",
    "anneal_timestep_interval",
    "camera_latlon",
    "camera_rays",
    "export_glb",
    "extract_mesh",
    "ray_sphere_bounds",
    "render_image",
    "render_rays",
    "render_view",
]
