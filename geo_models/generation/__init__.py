"""GPS-to-image and angle-to-image diffusion ("GPS as a Control Signal for Image Generation", sec. 3.1-3.2): the GPS /
angle embedders and the diffusers pipelines with two-condition guidance (eq. 4), average images (eq. 8) and the
angle model's guidance (eq. 7).

Importing this package also makes the two pipeline classes resolvable by name from ``diffusers``, so
``DiffusionPipeline.from_pretrained(dir)`` rebuilds a saved ``GPSToImagePipeline`` / ``AngleToImagePipeline``
(diffusers looks ``model_index.json``'s ``_class_name`` up in its own namespace; the embedder components' library,
``geo_models_conditioning``, is declared as ``diffusers.pipelines.geo_models_conditioning``, and older folders'
``geo_models.generation.conditioning`` as a loadable library, so that Hub repo ids load too).
``GPSToImagePipeline.from_pretrained(dir_or_repo)`` works as well.

Saved folders also carry generated standalone code and name it in ``model_index.json`` the way diffusers documents
for Hub-hosted pipeline code (``"_class_name": ["pipeline", "GPSToImagePipeline"]``), so they load without
geo_models with diffusers' one-liner ``DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)``
(see :mod:`geo_models.generation.standalone`).

Which code runs:

- geo_models imported, no ``trust_remote_code``: ``DiffusionPipeline.from_pretrained(path)`` and
  ``GPSToImagePipeline.from_pretrained(path)`` build the installed classes (importing this package teaches
  diffusers' class lookup that a folder naming one of our pipelines in ``_class_name`` means the installed class).
- ``trust_remote_code=True``: the folder's (or repo's) generated ``pipeline.py``, with or without geo_models.
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
    _prefer_installed_pipelines()


def _prefer_installed_pipelines() -> None:
    """Saved folders name their generated code in ``_class_name`` (``["pipeline", "GPSToImagePipeline"]``), which
    makes diffusers load that file. Without ``trust_remote_code`` we want the installed class instead: wrap
    diffusers' pipeline-class lookup (the name ``pipeline_utils`` calls, in ``from_pretrained`` and ``download``)
    so that, for our pipeline names, it returns the installed class unless remote code was asked for."""
    from diffusers.pipelines import pipeline_utils

    original = getattr(pipeline_utils, "_get_pipeline_class", None)
    if original is None or getattr(original, "_geo_models_wrapped", False):
        return  # another diffusers layout, or done: the folder's code needs trust_remote_code then
    installed = {cls.__name__: cls for cls in (GPSToImagePipeline, AngleToImagePipeline)}

    def _get_pipeline_class(class_obj, config=None, *args, trust_remote_code: bool = False, **kwargs):
        name = (config or {}).get("_class_name")
        if isinstance(name, list | tuple) and len(name) == 2 and name[1] in installed and not trust_remote_code:
            return installed[name[1]] if class_obj.__name__ == "DiffusionPipeline" else class_obj
        return original(class_obj, config, *args, trust_remote_code=trust_remote_code, **kwargs)

    _get_pipeline_class._geo_models_wrapped = True
    pipeline_utils._get_pipeline_class = _get_pipeline_class


_register_with_diffusers()
