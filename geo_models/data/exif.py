"""GPS coordinates from photo EXIF (Pillow only), and writing them (for tests and data tools)."""

from __future__ import annotations

from fractions import Fraction
from os import PathLike

from PIL import ExifTags, Image

_GPS_IFD = ExifTags.IFD.GPSInfo  # 0x8825
_LAT_REF, _LAT, _LON_REF, _LON = 1, 2, 3, 4  # GPSLatitudeRef, GPSLatitude, GPSLongitudeRef, GPSLongitude


class ExifGPSError(ValueError):
    """The photo carries GPS tags that cannot be read as a valid coordinate."""


def _dms_to_degrees(dms) -> float:
    """EXIF GPS (degrees, minutes, seconds) rationals -> decimal degrees."""
    try:
        values = [float(v) for v in dms]
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise ExifGPSError(f"unreadable GPS rational {dms!r}") from err
    if len(values) == 1:  # some writers store plain decimal degrees
        return values[0]
    if len(values) != 3:
        raise ExifGPSError(f"GPS value must be (degrees, minutes, seconds), got {dms!r}")
    d, m, s = values
    return d + m / 60.0 + s / 3600.0


def gps_from_exif(exif: Image.Exif) -> tuple[float, float] | None:
    """(latitude, longitude) in degrees from a Pillow ``Exif``; ``None`` when there is no GPS fix.

    Raises:
        ExifGPSError: GPS tags are present but malformed or out of range.
    """
    gps = exif.get_ifd(_GPS_IFD)
    if not gps or _LAT not in gps or _LON not in gps:
        return None
    lat, lon = _dms_to_degrees(gps[_LAT]), _dms_to_degrees(gps[_LON])
    if str(gps.get(_LAT_REF, "N")).strip().upper().startswith("S"):
        lat = -lat
    if str(gps.get(_LON_REF, "E")).strip().upper().startswith("W"):
        lon = -lon
    if not (-90 <= lat <= 90) or not (-180 <= lon <= 180) or lat != lat or lon != lon:
        raise ExifGPSError(f"GPS coordinate out of range: latitude {lat}, longitude {lon}")
    return lat, lon


def read_gps(path: str | PathLike) -> tuple[float, float] | None:
    """(latitude, longitude) of a photo file, ``None`` without GPS. Raises ``OSError`` for unreadable images."""
    with Image.open(path) as img:
        img.verify()  # detects truncated / corrupt files before we trust their metadata
    with Image.open(path) as img:
        return gps_from_exif(img.getexif())


def _to_dms(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = (value - d - m / 60) * 3600
    return Fraction(d), Fraction(m), Fraction(s).limit_denominator(1_000_000)


def gps_exif(latitude: float, longitude: float, exif: Image.Exif | None = None) -> Image.Exif:
    """A Pillow ``Exif`` carrying the given GPS position (pass to ``Image.save(..., exif=...)``)."""
    if not (-90 <= latitude <= 90):
        raise ValueError(f"latitude must be in [-90, 90], got {latitude}")
    if not (-180 <= longitude <= 180):
        raise ValueError(f"longitude must be in [-180, 180], got {longitude}")
    exif = exif if exif is not None else Image.Exif()
    exif[_GPS_IFD] = {
        0: b"\x02\x02\x00\x00",  # GPSVersionID 2.2
        _LAT_REF: "N" if latitude >= 0 else "S",
        _LAT: _to_dms(latitude),
        _LON_REF: "E" if longitude >= 0 else "W",
        _LON: _to_dms(longitude),
    }
    return exif
