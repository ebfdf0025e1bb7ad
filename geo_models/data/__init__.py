"""Datasets: geotagged imagefolders, WebDataset shards, embedding parquet, EXIF GPS, procedural demo data."""

from geo_models.data.embeddings import EmbeddingDataset, read_embedding_parquet, write_embedding_parquet
from geo_models.data.exif import ExifGPSError, gps_exif, read_gps
from geo_models.data.formats import dataset_format
from geo_models.data.imagefolder import GeoImageFolder, read_imagefolder_metadata, write_imagefolder_metadata
from geo_models.data.webdataset import GeoWebDataset, write_webdataset

__all__ = [
    "EmbeddingDataset",
    "read_embedding_parquet",
    "write_embedding_parquet",
    "ExifGPSError",
    "GeoImageFolder",
    "GeoWebDataset",
    "dataset_format",
    "gps_exif",
    "read_gps",
    "read_imagefolder_metadata",
    "write_imagefolder_metadata",
    "write_webdataset",
]
