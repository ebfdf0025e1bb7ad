"""geo_models: models that connect GPS and images."""

from geo_models.outputs import GeoPrediction

__version__ = "0.1.0"
__all__ = ["GeoPrediction", "__version__"]
