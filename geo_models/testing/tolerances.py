"""Tolerances for comparing float32 results of two computations that are equal only up to rounding.

The same weights can give results that differ in the last bits between two runs, two processes, or before and after
``save_pretrained``/``from_pretrained``: MKL picks memory-alignment- and ISA-dependent kernels (seen on AMD EPYC
with AVX2 only: ~1e-7 in images). Tests compare such results with these tolerances, as diffusers' tests do, and keep
bit-equality for what is a real property: stored weights, and a resumed run against an uninterrupted one (in place
``load_state_dict`` keeps the parameters' memory, so the kernels do not change).
"""

IMAGE_ATOL = 1e-4  # images in [0, 1]: ~1e-7 rounding differences, grown through a few denoising steps
LOG_PROB_ATOL = 1e-3  # log-densities (nats) from an adaptive ODE solve: steps accepted by the last bits differ
SAMPLE_KM = 0.1  # sampled coordinates: rounding grown through a few ODE steps stays far below 100 m


def assert_latlon_close(a, b, km: float = SAMPLE_KM) -> None:
    """``a, b (..., 2)`` latlon within ``km`` of each other everywhere (great-circle distance: no +-180 wrap issue)."""
    from geo_models.sphere import haversine_km

    assert a.shape == b.shape, (a.shape, b.shape)
    worst = float(haversine_km(a, b).max()) if a.numel() else 0.0
    assert worst <= km, f"coordinates differ by up to {worst:.4g} km (allowed {km} km)"
