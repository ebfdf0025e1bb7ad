"""LocDiff (arXiv 2503.18142): Spherical Harmonics Dirac Delta (SHDD) encoding, KL loss and mode-seeking decoder."""

from geo_models.locdiff.shdd import LOWPASS_FILTERS, REFINE_METHODS, SHDD, lowpass_window
from geo_models.sphere.harmonics import legendre_kernel, real_spherical_harmonics, sh_index

__all__ = [
    "LOWPASS_FILTERS",
    "REFINE_METHODS",
    "SHDD",
    "legendre_kernel",
    "lowpass_window",
    "real_spherical_harmonics",
    "sh_index",
]
