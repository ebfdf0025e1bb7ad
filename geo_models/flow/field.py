"""The network at fixed conditions, as the vector field samplers and the likelihood ODE integrate.

:class:`GuidedField` evaluates ``psi(x, gamma, c)`` for ``B`` points at one shared ``gamma`` (every sampler step and
every ODE evaluation moves all points together), with classifier-free guidance

    psi_w = (1 + w) psi(x, gamma, c) - w psi(x, gamma, 0)                  (PLONK's ``cfg_rate`` w; 0 = no guidance)

The condition path does not depend on ``x``: it is computed once per distinct image embedding (and once for the null
condition), then gathered, so many points of one image cost one condition evaluation.
"""

from __future__ import annotations

import torch

from geo_models.flow.modeling import GeoAdaLNMLP, Modulations

__all__ = ["GuidedField"]


class GuidedField:
    """``psi_w(x, gamma)`` for points ``x (B, 3)`` with conditions ``image_embeddings (B, cond_dim)``.

    Args:
        network: the denoiser.
        image_embeddings: ``(B, cond_dim)``, already validated; cast to the network's dtype and device.
        guidance_scale: ``w >= 0`` above (``0`` evaluates the conditional network only).
    """

    def __init__(self, network: GeoAdaLNMLP, image_embeddings: torch.Tensor, guidance_scale: float = 0.0):
        param = network.initial_mapper.weight
        emb = image_embeddings.to(device=param.device, dtype=param.dtype)
        self.network, self.w, self.num_points = network, float(guidance_scale), len(emb)
        unique, index = torch.unique(emb, dim=0, return_inverse=True)
        if len(unique) == len(emb):  # all distinct: keep the rows in order, no gather
            unique, index = emb, None
        cond = network.embed_condition(unique)
        if self.w:
            null = network.embed_condition(torch.zeros_like(emb[:1]))
            rows = index if index is not None else torch.arange(len(emb), device=emb.device)
            index = torch.cat([rows, torch.full_like(rows, len(cond))])
            cond = torch.cat([cond, null])
        self.cond, self.index = cond, index

    def modulations(self, gamma: torch.Tensor | float) -> Modulations:
        mods = self.network.modulations(self.cond, gamma)
        if self.index is None:
            return mods
        return tuple(tuple(m[self.index] for m in group) for group in mods)

    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x]) if self.w else x

    def _combine(self, out: torch.Tensor) -> torch.Tensor:
        if not self.w:
            return out
        cond, uncond = out.chunk(2)
        return (1 + self.w) * cond - self.w * uncond

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
        """``(B, 3)`` -> ``(B, 3)``."""
        return self._combine(self.network.trunk(self._stack(x), self.modulations(gamma)))

    def with_jacobian(
        self, x: torch.Tensor, gamma: torch.Tensor | float, directions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3)`` -> value ``(B, 3)`` and Jacobian ``(B, 3, 3)`` (``J[b, i, j] = d psi_i / d x_j``), or with
        ``directions (B, K, 3)`` only ``J @ directions^T (B, 3, K)``."""
        dirs = None if directions is None else self._stack(directions)
        out, jac = self.network.trunk_with_jacobian(self._stack(x), self.modulations(gamma), dirs)
        return self._combine(out), self._combine(jac)
