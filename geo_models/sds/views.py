"""View-dependent prompts: DreamFusion's baseline conditioning, the comparison of "GPS as a Control Signal for Image
Generation" Table 3 (sec. 4.5: "DreamFusion ... with view-dependent prompts").

DreamFusion (Poole et al. 2022, sec. 3.2) appends "front view", "side view" or "back view" to the prompt according to
the camera's azimuth (and "overhead view" above 60 degrees of elevation, which ground-level tourist cameras never
reach). Borders as threestudio's DreamFusion prompt processor: within 45 degrees of the front direction is "front",
within 45 degrees of the opposite direction is "back", the rest is "side".

Azimuths are the camera's bearing seen from the landmark centre, degrees clockwise from north (the convention of
:mod:`geo_models.data.procedural.landmark` and of the angle model). ``front_azimuth_deg`` is the bearing of a camera
looking at the front; the procedural landmark's porch faces south, so its default is 180.
"""

from __future__ import annotations

import numpy as np
import torch

from geo_models.checks import check_number

__all__ = ["DEFAULT_FRONT_AZIMUTH_DEG", "VIEW_HALF_WIDTH_DEG", "VIEW_WORDS", "view_prompt", "view_words"]

VIEW_WORDS = ("front", "side", "back")
VIEW_HALF_WIDTH_DEG = 45.0
DEFAULT_FRONT_AZIMUTH_DEG = 180.0  # the procedural landmark's porch faces south


def view_words(azimuth_deg, front_azimuth_deg: float = DEFAULT_FRONT_AZIMUTH_DEG) -> list[str]:
    """``"front"``, ``"side"`` or ``"back"`` for each camera azimuth (degrees, any real number).

    Raises:
        ValueError: non-finite azimuths or ``front_azimuth_deg``.
    """
    front = check_number(front_azimuth_deg, "front_azimuth_deg")
    if isinstance(azimuth_deg, torch.Tensor):
        azimuth = azimuth_deg.detach().to("cpu", torch.float64).reshape(-1)
    else:
        try:
            azimuth = torch.from_numpy(np.array(azimuth_deg, dtype=np.float64)).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ValueError(f"azimuth_deg must be numbers (degrees), got {azimuth_deg!r}") from err
    if not bool(torch.isfinite(azimuth).all()):
        raise ValueError(f"azimuth_deg must be finite, got {azimuth_deg!r}")
    offset = torch.remainder(azimuth - front + 180.0, 360.0) - 180.0  # in [-180, 180)
    words = []
    for d in offset.abs().tolist():
        words.append("front" if d <= VIEW_HALF_WIDTH_DEG else "back" if d >= 180 - VIEW_HALF_WIDTH_DEG else "side")
    return words


def view_prompt(prompt: str, view: str) -> str:
    """``"{prompt}, {view} view"`` (DreamFusion's suffix)."""
    if view not in VIEW_WORDS:
        raise ValueError(f"view must be one of {VIEW_WORDS}, got {view!r}")
    return f"{prompt}, {view} view"
