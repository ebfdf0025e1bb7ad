"""Offline test kit: tiny seeded components built from configs, and a local Hugging Face Hub server.

Heavy imports (diffusers, open_clip) happen only when a tiny component is requested.
"""

from geo_models.testing.hub_server import LocalHubServer, local_hub
from geo_models.testing.tiny import (
    clip_tokenizer,
    register_tiny_open_clip_configs,
    save_clip_tokenizer,
    tiny_angle_to_image_pipeline,
    tiny_gps_to_image_pipeline,
    tiny_open_clip,
    tiny_sd_components,
    tiny_sphere_flow_pipeline,
    tiny_stable_diffusion_pipeline,
    tiny_text_encoder_config,
)
from geo_models.testing.tolerances import IMAGE_ATOL, LOG_PROB_ATOL, SAMPLE_KM, assert_latlon_close

__all__ = [
    "IMAGE_ATOL",
    "LOG_PROB_ATOL",
    "SAMPLE_KM",
    "LocalHubServer",
    "assert_latlon_close",
    "clip_tokenizer",
    "local_hub",
    "register_tiny_open_clip_configs",
    "save_clip_tokenizer",
    "tiny_angle_to_image_pipeline",
    "tiny_gps_to_image_pipeline",
    "tiny_open_clip",
    "tiny_sd_components",
    "tiny_sphere_flow_pipeline",
    "tiny_stable_diffusion_pipeline",
    "tiny_text_encoder_config",
]
