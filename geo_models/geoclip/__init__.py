"""GeoCLIP: image-to-GPS retrieval (Vivanco Cepeda et al., NeurIPS 2023)."""

from geo_models.geoclip.gallery import deduplicate, fibonacci_gallery, gallery_from_csv, official_gallery
from geo_models.geoclip.modeling import GeoCLIP, TextQueryResult

__all__ = ["GeoCLIP", "TextQueryResult", "deduplicate", "fibonacci_gallery", "gallery_from_csv", "official_gallery"]
