"""Words for visitors: coordinates with hemispheres, warnings about photos that carry little information."""

from __future__ import annotations

import numpy as np

MIN_SIDE_PX = 32  # below this a photo shows too little to place it
MIN_CONTRAST = 2.0  # grey-level standard deviation (0-255) below which a photo is nearly uniform


def format_latlon(latitude: float, longitude: float, digits: int = 3) -> str:
    """``48.857° N, 2.352° E`` (hemisphere letters instead of signs)."""
    ns = "N" if latitude >= 0 else "S"
    ew = "E" if longitude >= 0 else "W"
    return f"{abs(latitude):.{digits}f}° {ns}, {abs(longitude):.{digits}f}° {ew}"


def low_information_note(image) -> str | None:
    """A warning for a photo too small or too uniform to be placed (the models still answer, confidently), else
    None."""
    width, height = image.size
    if min(width, height) < MIN_SIDE_PX:
        return (f"This photo is only {width} x {height} pixels: too small to show where it was taken, so the answer "
                "below is little more than a guess.")  # fmt: skip
    grey = np.asarray(image.convert("L").resize((64, 64)), dtype=np.float32)
    if grey.std() < MIN_CONTRAST:
        return "This photo is nearly one flat colour: it shows too little to place it, so treat the answer as a guess."
    return None
