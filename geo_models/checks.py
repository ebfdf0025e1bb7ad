"""Input checks shared by the library's public entry points (DESIGN.md: bad input raises ``ValueError`` naming the
argument and its allowed range; never a TypeError from deep inside, never a silent truncation, never gigabytes
allocated before the check).

- :func:`check_int`: whole numbers (``2.0`` is fine, ``2.5`` and ``True`` are not) in a range.
- :func:`check_number`: finite real numbers in a range.
- :func:`check_generator`: ``None``, a ``torch.Generator`` or (where a pipeline takes one per image) a list of them.
- :func:`check_noise`: user-given starting noise (``latents``): a finite tensor of the expected shape.
- :func:`check_parameter_budget`: a model constructor's parameter count, estimated from its config before anything is
  allocated, against :data:`MAX_PARAMETERS`.

The bounds below are generous limits against absurd requests (a typo, a hostile caller), not tuning advice.

Keep this module free of other geo_models imports: the standalone pipeline code
(:mod:`geo_models.generation.standalone`) copies what it uses from here.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "MAX_GALLERY_POINTS",
    "MAX_GUIDANCE_SCALE",
    "MAX_IMAGE_SIDE",
    "MAX_INFERENCE_STEPS",
    "MAX_INT",
    "MAX_PARAMETERS",
    "MAX_SAMPLES",
    "MIN_GRID_RESOLUTION_DEG",
    "check_generator",
    "check_int",
    "check_noise",
    "check_number",
    "check_parameter_budget",
    "linear_parameters",
]

MAX_INT = 2**62  # no size or count beyond this is meaningful; keeps every later int64 conversion from overflowing
MAX_INFERENCE_STEPS = 10_000  # denoising / sampling steps of one call (papers use 16-1000)
MAX_GUIDANCE_SCALE = 1000.0  # |classifier-free guidance scale| (papers use 1-15)
MAX_SAMPLES = 10_000  # samples drawn per image by the generative geolocators (papers use 16-1024)
MAX_GALLERY_POINTS = 1_000_000  # an integer gallery's Fibonacci points (the official gallery has 100K)
MIN_GRID_RESOLUTION_DEG = 0.25  # lat/lon grids of heatmaps: 720 x 1440 ~ 1M cells at most
MAX_IMAGE_SIDE = 2048  # pixels, height or width of a generated image (Stable Diffusion XL: 1024)
MAX_PARAMETERS = 2_000_000_000  # parameters of one model built from a config (ViT-L/14 CLIP: 0.4 B)


def check_int(value, name: str, low: int = 1, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (``high`` None: ``>= low``, and at most :data:`MAX_INT`).

    Accepts Python / numpy integers and whole floats (``4.0``); a bool, a fraction (``2.5``), NaN, a string or
    anything else raises ``ValueError`` naming ``name`` and the range.
    """
    message = f"{name} must be a whole number {f'in [{low}, {high}]' if high is not None else f'>= {low}'}"
    message += f", got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(message)
    if not isinstance(value, numbers.Integral) and not float(value).is_integer():  # NaN and inf are not integers
        raise ValueError(message)
    if value < low or (high is not None and value > high):
        raise ValueError(message)
    if value > MAX_INT:
        raise ValueError(f"{name} must be a whole number <= 2^62, got {value!r}")
    return int(value)


def check_number(
    value, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` when ``low_open``; None: unbounded).

    A bool, a string, NaN, an infinity or a value outside the range raises ``ValueError`` naming ``name``.
    """
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    opening, closing = "(" if low_open or low is None else "[", ")" if high is None else "]"
    message = f"{name} must be a finite number in {opening}{lo}, {hi}{closing}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool):
            raise ValueError(message)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise ValueError(message) from err
    if not math.isfinite(number):
        raise ValueError(message)
    if low is not None and (number <= low if low_open else number < low):
        raise ValueError(message)
    if high is not None and number > high:
        raise ValueError(message)
    return number


def check_generator(generator, name: str = "generator", *, batch_size: int | None = None):
    """``None``, a ``torch.Generator`` or, when ``batch_size`` is given, a list of ``batch_size`` generators (one per
    image, as diffusers pipelines take). Anything else (a seed ``int``, ...) raises ``ValueError`` naming ``name``."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if batch_size is not None and isinstance(generator, list):
        if not all(isinstance(g, torch.Generator) for g in generator):
            raise ValueError(f"{name}: every item of the list must be a torch.Generator")
        if len(generator) != batch_size:
            raise ValueError(f"{name}: got a list of {len(generator)} generators for a batch of {batch_size}")
        return generator
    what = "a torch.Generator, a list of them (one per image)" if batch_size is not None else "a torch.Generator"
    raise ValueError(
        f"{name} must be None or {what}, got {type(generator).__name__} (for a seed s pass "
        "torch.Generator().manual_seed(s))"
    )


def check_noise(latents, shape: tuple[int, ...], name: str = "latents") -> torch.Tensor:
    """User-given starting noise: a floating tensor of exactly ``shape``, finite (NaN noise gives NaN or all-black
    output silently) -> the tensor."""
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(latents).__name__}")
    if tuple(latents.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(latents.shape)}")
    if not latents.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {latents.dtype}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return latents


def linear_parameters(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of ``nn.Linear(in_features, out_features)`` (for :func:`check_parameter_budget` estimates)."""
    return in_features * out_features + (out_features if bias else 0)


def check_parameter_budget(num_parameters: int, names: str, what: str = "model") -> None:
    """Raise ``ValueError`` naming the size arguments ``names`` when a config would build more than
    :data:`MAX_PARAMETERS` parameters (call before allocating anything, with an estimate from the config)."""
    if num_parameters > MAX_PARAMETERS:
        raise ValueError(
            f"{names}: this {what} would have ~{num_parameters:.3g} parameters, more than the limit of "
            f"{MAX_PARAMETERS:.0e} ({MAX_PARAMETERS * 4 / 2**30:.0f} GiB in float32); use smaller sizes"
        )
