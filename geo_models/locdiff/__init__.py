"""LocDiff (arXiv 2503.18142): Spherical Harmonics Dirac Delta (SHDD) encoding, KL loss and mode-seeking decoder,
the CS-UNet denoiser and the sampling pipeline."""

from geo_models.locdiff.modeling import CSUNet
from geo_models.locdiff.pipeline import LocDiffPipeline, locdiff_loss, make_scheduler
from geo_models.locdiff.shdd import LOWPASS_FILTERS, REFINE_METHODS, SHDD, lowpass_window
from geo_models.sphere.harmonics import legendre_kernel, real_spherical_harmonics, sh_index

__all__ = [
    "CSUNet",
    "LOWPASS_FILTERS",
    "LocDiffPipeline",
    "REFINE_METHODS",
    "SHDD",
    "legendre_kernel",
    "locdiff_loss",
    "lowpass_window",
    "make_scheduler",
    "real_spherical_harmonics",
    "sh_index",
]
