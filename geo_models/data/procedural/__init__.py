"""Procedural geotagged demo images (imagefolder + ``metadata.csv``), deterministic by seed.

``generate_world``: the whole globe, appearance from real geography (land/sea, biome, country, cities).
``landmark_fraction`` of ``generate_world`` adds photos at fixed landmark sites (exact repeat locations).
``generate_city``: a city bounding box (default Manhattan) with neighbourhoods, parks, water and landmarks.
``generate_landmark``: views of one procedural 3D landmark from a ring of cameras, with exact poses and its mesh.
"""

from geo_models.data.procedural.city import (
    CENTRAL_PARK_POLYGON,
    LANDMARKS,
    MANHATTAN_BBOX,
    MANHATTAN_POLYGON,
    NEIGHBOURHOODS,
    describe_city_locations,
    generate_city,
    render_city_image,
    sample_city_locations,
)
from geo_models.data.procedural.landmark import (
    LANDMARK_CENTRE,
    LANDMARK_NAME,
    LOOK_AT_HEIGHT_M,
    Lighting,
    focal_length_px,
    generate_landmark,
    landmark_camera_pose,
    landmark_mesh,
    look_at_pose,
    project_points,
    render_landmark,
    render_landmark_view,
)
from geo_models.data.procedural.world import (
    describe_locations,
    generate_world,
    render_world_image,
    render_world_images,
    sample_world_locations,
)
from geo_models.data.procedural.world_landmarks import place_landmark_photos, world_landmarks

__all__ = [
    "CENTRAL_PARK_POLYGON",
    "LANDMARKS",
    "MANHATTAN_BBOX",
    "MANHATTAN_POLYGON",
    "NEIGHBOURHOODS",
    "describe_city_locations",
    "generate_city",
    "render_city_image",
    "sample_city_locations",
    "describe_locations",
    "generate_world",
    "render_world_image",
    "render_world_images",
    "sample_world_locations",
    "place_landmark_photos",
    "world_landmarks",
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
