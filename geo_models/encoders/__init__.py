"""Positional encodings of coordinates and the small networks built on them."""

from geo_models.encoders.location import LocationEncoder
from geo_models.encoders.networks import MLP
from geo_models.encoders.positional import EqualEarthProjection, NeRFPositionalEncoding, RandomFourierFeatures

__all__ = ["MLP", "EqualEarthProjection", "LocationEncoder", "NeRFPositionalEncoding", "RandomFourierFeatures"]
