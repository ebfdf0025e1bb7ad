"""Spherical Harmonics Dirac Delta (SHDD) encoding, loss and mode-seeking decoder of LocDiff (arXiv 2503.18142).

No public code exists for the paper; equations refer to its sections 4.2-4.4 and appendix A:

- **Encoding** (eq. 7-9): a point ``x0 = (theta0, phi0)`` is the Dirac delta ``δ_x0 = Σ_lm Y_lm(x0) Y_lm``, so its
  coefficients are ``c_lm = Y_lm(x0)``; truncating at degree ``L`` gives ``(L+1)^2`` numbers (index ``l (l+1) + m``,
  real orthonormal harmonics of ``geo_models.sphere.harmonics``). ``f_e(x) = Σ_lm e_lm Y_lm(x)`` is the spherical
  function of any vector ``e``; for an encoding it is the truncated delta ``Σ_l (2l+1)/(4π) P_l(cos γ)`` (peak
  ``(L+1)^2/(4π)``, ~183 at L=47; FWHM ~588 km and first sidelobe -13% at L=47).
- **Distance** (eq. 10-12, 16): ``q_e ∝ exp(f_e)``, ``p_x ∝ exp(f_{PE(x)})``, and the reverse KL ``Σ q log(q/p)``
  approximated on ``N`` anchors drawn uniformly per call (2048 in the paper).
- **Decoder** (eq. 15, 17): ``argmax`` over anchors of the mass ``Σ_{d(a, a_i) < rho} exp(f_e(a_i))``, then (ours)
  a refinement inside the kernel so the resolution is not capped by the anchor spacing (see ``decode``).
- **Low-pass filter** (A.3): the paper keeps "the dimensions with adequately large values" to cut the dimension
  (e.g. to 1024 = ``(31+1)^2``). With the stable recurrence every ``|Y_lm| <= sqrt((2l+1)/4π)`` (no blow-up at high
  ``l``, unlike the factorial formula of eq. 20), so a hard cut is just a smaller ``max_degree``. ``lowpass`` offers
  the smooth variant instead: a per-degree spectral window ``w_l`` (``"hann"``: ``(1 + cos(π l/(L+1)))/2``,
  ``"lanczos"``: ``sinc(l/(L+1))``, ``"gaussian"``: ``exp(-l(l+1) ln(10)/(L(L+1)))``) applied to the encoding,
  ``c_lm = w_l Y_lm(x0)``, which trades a wider main lobe for smaller Gibbs sidelobes; dimension unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geo_models.checks import check_int
from geo_models.locdiff import decoding
from geo_models.sphere import (
    EARTH_RADIUS_KM,
    check_latlon,
    fibonacci_lattice,
    latlon_to_xyz,
    uniform_sphere,
    xyz_to_latlon,
)
from geo_models.sphere.harmonics import real_spherical_harmonics, sh_degrees_orders

# Bounds of the config: a (L+1)^2 = 65,536-dim SHDD at most (the paper uses L <= 47; decoding holds chunk_size x
# (L+1)^2 harmonics, 4 GiB in float64 at L = 255 and the default chunk), anchor sets of at most 1M (KL) / 10M
# (decoding lattice) points, and K <= 4096 candidate anchors per query (a (16384, K, 3) float64 block).
MAX_DEGREE = 255
MAX_ANCHORS = 1_000_000
MAX_DECODE_ANCHORS = 10_000_000
MAX_TOP_K = 4096
LOWPASS_FILTERS = ("hann", "lanczos", "gaussian")
REFINE_METHODS = ("newton", "mean")
_QUERY_BLOCK = 16384  # queries decoded together: Y of each anchor chunk is shared by a block


def lowpass_window(name: str | None, max_degree: int) -> torch.Tensor:
    """Per-degree weights ``w_l`` ``(L+1,)`` float64 of a low-pass filter (``None``: all ones)."""
    l = torch.arange(max_degree + 1, dtype=torch.float64)
    if name is None:
        return torch.ones_like(l)
    if name == "hann":
        return 0.5 * (1 + torch.cos(math.pi * l / (max_degree + 1)))
    if name == "lanczos":
        return torch.sinc(l / (max_degree + 1))
    if name == "gaussian":
        return torch.exp(-l * (l + 1) * math.log(10) / (max_degree * (max_degree + 1)))
    raise ValueError(f"lowpass must be None or one of {LOWPASS_FILTERS}, got {name!r}")


class SHDD(nn.Module):
    """SHDD location encoding/decoding of LocDiff at degree ``L = max_degree`` (``output_dim = (L+1)^2``).

    Args:
        max_degree: truncation degree ``L`` in [1, 255] (47 in the paper: 2304 dimensions, ~425 km resolution
            ``πR/L``).
        num_anchors: random uniform anchors drawn per ``kl_loss`` call (eq. 16; 2048 in the paper), at most 1M.
        rho_km: radius of the decoder's mass window (eq. 15/17); default ``5000 / L`` km ≈ a quarter of the A.3
            resolution ``πR/L`` (~106 km at L=47).
        lowpass: optional spectral window of the encoding (see the module docstring): None, "hann", "lanczos",
            "gaussian".
        decode_anchors: size of the default decoding anchor set, a Fibonacci lattice (100K: ~71 km spacing), at
            most 10M.
        top_k: anchors (largest ``f_e``) per query among which eq. 17's masses are compared, at most 4096.
    """

    def __init__(
        self,
        max_degree: int = 47,
        *,
        num_anchors: int = 2048,
        rho_km: float | None = None,
        lowpass: str | None = None,
        decode_anchors: int = 100_000,
        top_k: int = 256,
    ):
        super().__init__()
        max_degree = check_int(max_degree, "max_degree", 1, MAX_DEGREE)
        num_anchors = check_int(num_anchors, "num_anchors", 1, MAX_ANCHORS)
        top_k = check_int(top_k, "top_k", 1, MAX_TOP_K)
        self.max_degree = int(max_degree)
        self.output_dim = (self.max_degree + 1) ** 2
        self.num_anchors, self.decode_anchors, self.top_k = int(num_anchors), int(decode_anchors), int(top_k)
        self.rho_km = self._check_rho(5000.0 / self.max_degree if rho_km is None else rho_km)
        self.lowpass = lowpass
        window = lowpass_window(lowpass, self.max_degree)
        self.register_buffer("degree_weights", window.float(), persistent=False)
        self.register_buffer("coeff_weights", window[sh_degrees_orders(self.max_degree)[0]].float(), persistent=False)

    @property
    def decode_anchors(self) -> int:
        """Size of the default Fibonacci decoding lattice; setting it rebuilds the lattice at the next decode."""
        return self._decode_anchors

    @decode_anchors.setter
    def decode_anchors(self, value: int) -> None:
        self._decode_anchors, self._lattice = check_int(value, "decode_anchors", 1, MAX_DECODE_ANCHORS), None

    def extra_repr(self) -> str:
        return f"max_degree={self.max_degree}, rho_km={self.rho_km:g}, lowpass={self.lowpass}"

    # ----------------------------------------------------------------------------------------------- encoding
    def encode(self, latlon) -> torch.Tensor:
        """``latlon (..., 2)`` degrees -> SHDD coefficients ``(..., (L+1)^2)`` = ``w_l Y_lm(x0)`` (eq. 8-9)."""
        y = real_spherical_harmonics(latlon, self.max_degree)
        return y if self.lowpass is None else y * self.coeff_weights.to(y)

    def forward(self, latlon) -> torch.Tensor:
        return self.encode(latlon)

    def field(self, coeffs, latlon) -> torch.Tensor:
        """``f_e(x) = Σ e_lm Y_lm(x)``: ``coeffs (N, D)``, points ``latlon (M, 2)`` -> ``(N, M)`` (log of eq. 11)."""
        e = self._check_coeffs(coeffs).reshape(-1, self.output_dim)
        pts = check_latlon(latlon).reshape(-1, 2).to(e.device)
        return e @ decoding.harmonic_rows_latlon(pts, self.max_degree, e.dtype)

    # ----------------------------------------------------------------------------------------------- losses
    def kl_loss(self, coeffs_pred, latlon_true, anchors=None, generator=None, *, reduction: str = "mean"):
        """SHDD KL divergence (eq. 16) between ``q_e`` and ``p_x`` over anchors -> scalar (or ``(B,)``).

        ``q_e(a_i) = softmax_i f_e(a_i)`` and ``p_x(a_i) = softmax_i f_{PE(x)}(a_i)`` over the anchors (the sums over
        anchors approximate the normalisers of eq. 10-11); loss ``Σ_i q log(q / p)`` (reverse KL). ``coeffs_pred
        (B, D)``, ``latlon_true (B, 2)``; ``anchors (A, 2)`` or ``num_anchors`` uniform ones drawn with ``generator``.
        """
        e, target = self._pred_and_target(coeffs_pred, latlon_true)
        if anchors is None:
            pts = uniform_sphere(self.num_anchors, generator=generator, dtype=torch.float64)
        else:
            pts = check_latlon(anchors, "anchors").reshape(-1, 2)
            if pts.shape[0] == 0:
                raise ValueError("anchors must contain at least one point")
        rows = decoding.harmonic_rows_latlon(pts.to(e.device), self.max_degree, e.dtype)  # (D, A)
        log_q = torch.log_softmax(e @ rows, dim=-1)
        log_p = torch.log_softmax(target @ rows, dim=-1)
        return self._reduce((log_q.exp() * (log_q - log_p)).sum(-1), reduction)

    def cosine_loss(self, coeffs_pred, latlon_true, *, reduction: str = "mean") -> torch.Tensor:
        """``1 - cos(e, PE(x))`` (Table 8 ablation) -> scalar (or ``(B,)``)."""
        e, target = self._pred_and_target(coeffs_pred, latlon_true)
        return self._reduce(1 - F.cosine_similarity(e, target, dim=-1), reduction)

    def l2_loss(self, coeffs_pred, latlon_true, *, reduction: str = "mean") -> torch.Tensor:
        """Mean squared error to ``PE(x)`` over the dimensions (Table 8 ablation) -> scalar (or ``(B,)``)."""
        e, target = self._pred_and_target(coeffs_pred, latlon_true)
        return self._reduce((e - target).pow(2).mean(-1), reduction)

    def l1_loss(self, coeffs_pred, latlon_true, *, reduction: str = "mean") -> torch.Tensor:
        """Mean absolute error to ``PE(x)`` over the dimensions (Table 8 ablation) -> scalar (or ``(B,)``)."""
        e, target = self._pred_and_target(coeffs_pred, latlon_true)
        return self._reduce((e - target).abs().mean(-1), reduction)

    # ----------------------------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def decode(
        self,
        coeffs,
        *,
        anchors=None,
        rho_km: float | None = None,
        refine: bool | str = True,
        chunk_size: int = 8192,
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Mode-seeking decoder (eq. 15/17): ``coeffs (..., (L+1)^2)`` -> ``latlon (..., 2)``.

        1. ``f_e`` on every anchor (default: a ``decode_anchors``-point Fibonacci lattice, or a user gallery
           ``(A, 2)``) in chunks of ``chunk_size`` anchors; the ``top_k`` anchors by ``f_e`` are kept per query.
           Queries go in blocks of 16,384, so memory is ``O(chunk_size * (D + block) + block * top_k)`` for any
           number of anchors or queries.
        2. Eq. 17 among them: the anchor whose ``rho_km`` cap holds the largest mass ``Σ exp(f_e)`` wins
           (``refine=False`` returns it: always a point of ``anchors``).
        3. Refinement inside the kernel (``refine=True`` = ``"newton"``): finite-difference Newton ascent of ``f_e`` in
           float64 from the winner, stencil shrinking from ``rho_km / 2`` to 50 m, so resolution is not capped by the
           anchor spacing (clean encodings decode to ~1e-6 km). ``"mean"``: mass-weighted spherical mean of 64 samples
           of ``exp(f_e)`` in a cap shrinking from ``rho_km`` (mean shift; less precise, see bench/README.md).
        """
        e = self._check_coeffs(coeffs)
        batch_shape = e.shape[:-1]
        e = e.reshape(-1, self.output_dim)
        rho = self._check_rho(self.rho_km if rho_km is None else rho_km)
        if refine is True:
            refine = "newton"
        if refine not in (False, None) and refine not in REFINE_METHODS:
            raise ValueError(f"refine must be a bool or one of {REFINE_METHODS}, got {refine!r}")
        chunk_size = check_int(chunk_size, "chunk_size")
        k = self.top_k if top_k is None else check_int(top_k, "top_k", 1, MAX_TOP_K)
        if anchors is None:
            if self._lattice is None:
                self._lattice = fibonacci_lattice(self.decode_anchors, dtype=torch.float64)
            pts = self._lattice
        else:
            pts = check_latlon(anchors, "anchors").reshape(-1, 2)
            if pts.shape[0] == 0:
                raise ValueError("anchors must contain at least one point")
        pts = pts.to(e.device)
        if e.shape[0] == 0:
            return e.new_zeros(*batch_shape, 2)
        blocks = [
            self._decode_block(e[q0 : q0 + _QUERY_BLOCK], pts, min(k, pts.shape[0]), int(chunk_size), rho, refine)
            for q0 in range(0, e.shape[0], _QUERY_BLOCK)
        ]
        return torch.cat(blocks).to(e.dtype).reshape(*batch_shape, 2)

    def _decode_block(self, e, pts, k: int, chunk_size: int, rho: float, refine) -> torch.Tensor:
        """``decode`` of ``e (n, D)`` (n <= _QUERY_BLOCK, bounding the ``(n, K)`` state) -> ``(n, 2)``."""
        values, idx = decoding.top_anchors(e, pts, self.max_degree, k, chunk_size)
        cand_xyz = latlon_to_xyz(pts.double()[idx])  # (n, K, 3)
        win = decoding.mass_argmax(values.double(), cand_xyz, rho / EARTH_RADIUS_KM)
        if not refine:
            return pts[idx.gather(1, win[:, None])[:, 0]]
        start = cand_xyz[torch.arange(len(win)), win]
        out = []
        step = 256 if refine == "newton" else 64
        for q0 in range(0, e.shape[0], step):
            if refine == "newton":
                xyz = decoding.refine_newton(e[q0 : q0 + step], start[q0 : q0 + step], self.max_degree, step_km=rho)
            else:
                xyz = decoding.refine_mean(e[q0 : q0 + step], start[q0 : q0 + step], self.max_degree, radius_km=rho)
            out.append(xyz_to_latlon(xyz))
        return torch.cat(out)

    # ----------------------------------------------------------------------------------------------- checks
    def _check_coeffs(self, coeffs, name: str = "coeffs") -> torch.Tensor:
        if not isinstance(coeffs, torch.Tensor):
            try:
                coeffs = torch.as_tensor(coeffs, dtype=torch.float32)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name} must be a numeric tensor of shape (..., {self.output_dim})") from err
        if coeffs.dtype not in (torch.float32, torch.float64):
            coeffs = coeffs.float()
        if coeffs.ndim == 0 or coeffs.shape[-1] != self.output_dim:
            raise ValueError(
                f"{name} must have shape (..., {self.output_dim}) = (L+1)^2 for max_degree={self.max_degree}, "
                f"got {tuple(coeffs.shape)}"
            )
        if not torch.isfinite(coeffs).all():
            raise ValueError(f"{name} must be finite (no NaN or inf)")
        return coeffs

    def _pred_and_target(self, coeffs_pred, latlon_true) -> tuple[torch.Tensor, torch.Tensor]:
        e = self._check_coeffs(coeffs_pred, "coeffs_pred")
        t = check_latlon(latlon_true, "latlon_true")
        if t.shape[:-1] != e.shape[:-1]:
            raise ValueError(
                f"latlon_true must have shape {tuple(e.shape[:-1]) + (2,)} to match coeffs_pred, got {tuple(t.shape)}"
            )
        return e.reshape(-1, self.output_dim), self.encode(t.to(e.device)).to(e.dtype).reshape(-1, self.output_dim)

    @staticmethod
    def _check_rho(rho_km) -> float:
        try:
            rho = float(rho_km)
        except (TypeError, ValueError):
            rho = math.nan
        if isinstance(rho_km, bool) or not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho_km must be a finite number > 0 (km), got {rho_km!r}")
        return rho

    @staticmethod
    def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        if reduction == "none":
            return loss
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
