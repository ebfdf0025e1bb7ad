"""GPS-to-image and angle-to-image diffusion ("GPS as a Control Signal for Image Generation", sec. 3.1-3.2): the GPS /
angle embedders and the diffusers pipelines with two-condition guidance (eq. 4), average images (eq. 8) and the
angle model's guidance (eq. 7).

Importing this package also makes the two pipeline classes resolvable by name from ``diffusers``, so
``DiffusionPipeline.from_pretrained(dir)`` rebuilds a saved ``GPSToImagePipeline`` / ``AngleToImagePipeline``
(diffusers looks ``model_index.json``'s ``_class_name`` up in its own namespace; the embedder components' library,
``geo_models_conditioning``, is declared as ``diffusers.pipelines.geo_models_conditioning``, and older folders'
``geo_models.generation.conditioning`` as a loadable library, so that Hub repo ids load too).
``GPSToImagePipeline.from_pretrained(dir_or_repo)`` works as well.

Saved folders also carry generated standalone code, so they load without geo_models too:
``DiffusionPipeline.from_pretrained(folder_or_repo, custom_pipeline=folder_or_repo, trust_remote_code=True)`` (see
:mod:`geo_models.generation.standalone`).
"""

import diffusers as _diffusers

from geo_models.generation import conditioning as _conditioning
from geo_models.generation.conditioning import AngleEmbedder, GPSEmbedder
from geo_models.generation.pipeline_angle_to_image import AngleToImagePipeline
from geo_models.generation.pipeline_gps_to_image import GPSToImagePipeline, check_coordinates, sample_area
from geo_models.generation.pipeline_utils import GeoConditionedDiffusionPipeline, GeoImagePipelineOutput
from geo_models.generation.standalone import STANDALONE_LIBRARY

__all__ = [
    "AngleEmbedder",
    "AngleToImagePipeline",
    "GPSEmbedder",
    "GPSToImagePipeline",
    "GeoConditionedDiffusionPipeline",
    "GeoImagePipelineOutput",
    "check_coordinates",
    "sample_area",
]


def _register_with_diffusers() -> None:
    """Expose the pipelines as ``diffusers.<Name>`` (only names diffusers does not define itself), and declare the
    embedders' module a library diffusers loads components from: ``DiffusionPipeline.download`` (Hub repo ids)
    rejects a ``model_index.json`` component whose library is not in ``LOADABLE_CLASSES``."""
    from diffusers.pipelines import pipeline_loading_utils

    for cls in (GPSToImagePipeline, AngleToImagePipeline):
        if getattr(_diffusers, cls.__name__, None) is None:
            setattr(_diffusers, cls.__name__, cls)
    pipeline_loading_utils.LOADABLE_CLASSES.setdefault(
        GPSEmbedder.__module__, {"ModelMixin": ["save_pretrained", "from_pretrained"]}
    )
    # Saved folders name the embedders' library STANDALONE_LIBRARY (geo_models.generation.standalone). diffusers
    # looks a library up in `diffusers.pipelines` before using the component folder's code file, so with this the
    # installed classes are used and no remote code is needed.
    if not hasattr(_diffusers.pipelines, STANDALONE_LIBRARY):
        setattr(_diffusers.pipelines, STANDALONE_LIBRARY, _conditioning)


_register_with_diffusers()
