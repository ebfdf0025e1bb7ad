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


def assert_same_ranking(a, b, score_atol: float) -> None:
    """Two ranked predictions (``candidates (N, K, 2)`` sorted by ``scores (N, K)``, best first) of the same weights
    computed by other kernels (loaded weights, another process): the scores within ``score_atol`` rank by rank, and the
    same candidates except where rounding may order a near-tie either way. A candidate that is not at the same rank in
    the other prediction must score there within ``2 * score_atol`` of its own score, or, if the other prediction does
    not list it, of the other's last score (a tie at the top-k boundary)."""
    import torch

    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=score_atol)
    for x, y in ((a, b), (b, a)):
        for i, k in (x.candidates != y.candidates).any(-1).nonzero().tolist():
            listed = (y.candidates[i] == x.candidates[i, k]).all(-1)  # where y ranks x's candidate (duplicates too)
            other = y.scores[i][listed].max() if listed.any() else y.scores[i, -1]
            gap = abs(float(other - x.scores[i, k]))
            assert gap <= 2 * score_atol, f"image {i}, rank {k}: candidates differ without a near-tie (gap {gap:.3g})"


# Log-densities from float32 dopri5 solves at tight tolerances (1e-5: predict's scores; 1e-6: likelihood/log_prob's
# default): float32 rounding then steers the step-size control, so equal weights at another memory alignment give
# results up to ~2e-3 apart (1.7e-3 measured on an AVX2 CPU; LOG_PROB_ATOL suits solves at 1e-4, ~7e-5 measured).
TIGHT_LOG_PROB_ATOL = 5e-3
