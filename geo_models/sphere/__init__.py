"""Pure maths on the sphere (no nn.Module): coordinates, areas, manifold operations, sampling, harmonics, metrics.

Coordinates are ``latlon``: ``(..., 2)`` degrees, latitude first. Manifold functions work on unit vectors ``(..., 3)``.
"""

from geo_models.sphere._checks import check_latlon
from geo_models.sphere.area import GeoArea
from geo_models.sphere.coords import (
    EARTH_RADIUS_KM,
    azimuth_around,
    destination,
    equal_earth,
    haversine_km,
    initial_bearing,
    latlon_to_xyz,
    xyz_to_latlon,
)
from geo_models.sphere.harmonics import (
    legendre_kernel,
    num_sh_coefficients,
    real_spherical_harmonics,
    sh_degrees_orders,
    sh_index,
)
from geo_models.sphere.manifold import (
    exp_map,
    fibonacci_lattice,
    geodesic,
    geodesic_distance,
    geodesic_interpolate,
    log_map,
    project_to_tangent,
    spherical_mean,
    tangent_basis,
    uniform_sphere,
    uniform_sphere_xyz,
    von_mises_fisher,
    von_mises_fisher_log_prob,
    von_mises_fisher_xyz,
)
from geo_models.sphere.metrics import (
    DEFAULT_THRESHOLDS_KM,
    accuracy_within_km,
    geolocation_metrics,
    geoscore,
    median_km,
    threshold_key,
)

__all__ = [
    "EARTH_RADIUS_KM",
    "DEFAULT_THRESHOLDS_KM",
    "GeoArea",
    "accuracy_within_km",
    "azimuth_around",
    "check_latlon",
    "destination",
    "equal_earth",
    "exp_map",
    "fibonacci_lattice",
    "geodesic",
    "geodesic_distance",
    "geodesic_interpolate",
    "geolocation_metrics",
    "geoscore",
    "haversine_km",
    "initial_bearing",
    "latlon_to_xyz",
    "legendre_kernel",
    "log_map",
    "median_km",
    "num_sh_coefficients",
    "project_to_tangent",
    "real_spherical_harmonics",
    "sh_degrees_orders",
    "sh_index",
    "spherical_mean",
    "tangent_basis",
    "threshold_key",
    "uniform_sphere",
    "uniform_sphere_xyz",
    "von_mises_fisher",
    "von_mises_fisher_log_prob",
    "von_mises_fisher_xyz",
    "xyz_to_latlon",
]
