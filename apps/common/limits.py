"""Input limits of the apps: image files are checked from their header before any pixel is decoded."""

from __future__ import annotations

import os
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_MEGAPIXELS = 40.0
MAX_FILE_MB = 50.0
MAX_SIDE = 1024  # images are downscaled to this before the models (their backbones resize to ~224 anyway)
MAX_TEXT_CHARS = 300


def check_image_file(path: str | os.PathLike, *, max_megapixels: float = MAX_MEGAPIXELS,
                     max_file_mb: float = MAX_FILE_MB) -> tuple[int, int]:  # fmt: skip
    """Raise ``ValueError`` with a user-facing message unless ``path`` is an image within the limits -> (w, h)."""
    try:
        size_mb = os.path.getsize(path) / 1e6
    except OSError as err:
        raise ValueError(f"could not read the uploaded file: {err}") from err
    if size_mb > max_file_mb:
        raise ValueError(f"file too large: {size_mb:.1f} MB (limit {max_file_mb:g} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
    except Image.DecompressionBombError as err:
        raise ValueError(f"image too large: far more than {max_megapixels:g} megapixels (the limit)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError("not an image: upload a JPEG, PNG or WebP photo") from err
    if width * height > max_megapixels * 1e6:
        raise ValueError(
            f"image too large: {width}x{height} = {width * height / 1e6:.0f} megapixels (limit {max_megapixels:g})"
        )
    return width, height


def load_photo(path: str | os.PathLike, *, max_megapixels: float = MAX_MEGAPIXELS,
               max_file_mb: float = MAX_FILE_MB) -> tuple[Image.Image, tuple[float, float] | None, str]:  # fmt: skip
    """Check, decode and downscale a photo -> (RGB image, EXIF GPS (lat, lon) or None, note about the GPS)."""
    from geo_models.data.exif import ExifGPSError, gps_from_exif

    check_image_file(path, max_megapixels=max_megapixels, max_file_mb=max_file_mb)
    try:
        with Image.open(path) as img:
            gps, note = None, ""
            try:
                gps = gps_from_exif(img.getexif())
            except ExifGPSError as err:
                note = f"EXIF GPS ignored: {err}"
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"could not decode the image: {err}") from err
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    return img, gps, note


def check_text(text: str | None) -> str:
    """A non-empty query of at most ``MAX_TEXT_CHARS`` characters (ValueError otherwise)."""
    text = (text or "").strip()
    if not text:
        raise ValueError("type a description, e.g. 'a snowy mountain village'")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text too long: {len(text)} characters (limit {MAX_TEXT_CHARS})")
    return text
