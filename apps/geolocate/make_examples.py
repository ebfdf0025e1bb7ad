"""Rebuild the example photos (procedural, with EXIF GPS): ``python -m apps.geolocate.make_examples``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PLACES = {"paris": (48.8566, 2.3522), "cairo": (30.0444, 31.2357), "tokyo": (35.6762, 139.6503),
          "rio": (-22.9068, -43.1729), "alps": (46.5, 9.8), "amazon": (-3.4653, -62.2159)}  # fmt: skip
CAPTIONS = {"paris": "Paris, France", "cairo": "Cairo, Egypt", "tokyo": "Tokyo, Japan",
            "rio": "Rio de Janeiro, Brazil", "alps": "The Alps, Switzerland",
            "amazon": "The Amazon rainforest, Brazil"}  # fmt: skip


def main() -> None:
    from geo_models.data.exif import gps_exif
    from geo_models.data.procedural import render_world_image

    EXAMPLES_DIR.mkdir(exist_ok=True)
    for i, (name, (lat, lon)) in enumerate(PLACES.items()):
        img = render_world_image(lat, lon, np.random.default_rng(i), image_size=128)
        img.save(EXAMPLES_DIR / f"{name}.jpg", quality=90, exif=gps_exif(lat, lon))


if __name__ == "__main__":
    main()
