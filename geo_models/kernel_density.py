"""One probabilistic answer from point-based geolocators: their weighted points spread by a fitted vMF kernel.

GeoCLIP answers with a softmax over a gallery of points, kNN with weighted neighbours, LocDiff with samples; none of
their papers gives a density over the globe. Each becomes one here (issue 18): a
:class:`~geo_models.sphere.density.KernelMixture` of its points with the model's own weights, the kernel's
concentration ``density_kappa`` fitted on held-out data by :meth:`KernelDensityMixin.fit_density` (maximum
likelihood of the true locations) and saved in the model's config. So every geolocator of the project has
``log_prob`` and ``density_grid`` with the sphere flow's meaning (nats w.r.t. area on the unit sphere), and
:mod:`geo_models.calibration` can score them all alike.
"""

from __future__ import annotations

from typing import Any

import torch

from geo_models.checks import check_int
from geo_models.sphere import check_latlon
from geo_models.sphere.density import DensityGrid, KernelMixture, fit_kappa, kappa_for_km

DEFAULT_KERNEL_KM = 250.0  # the kernel of a model whose density was never fitted (fit_density replaces it)


class KernelDensityMixin:
    """``log_prob`` / ``density_grid`` / ``fit_density`` for a geolocator that implements
    ``_kernel_components(features, **kwargs) -> (centres (N, M, 2), weights (N, M))`` and
    ``_density_features(images, image_embeddings) -> features``, and keeps ``self.density_kappa`` (``None`` until
    fitted)."""

    density_kappa: float | None = None

    def _kernel_components(self, features: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _density_features(self, images: Any, image_embeddings: Any) -> torch.Tensor:
        raise NotImplementedError

    def _record_density_kappa(self, kappa: float) -> None:
        """Keep a fitted concentration where ``save_pretrained`` writes the config (models override as needed)."""
        self.density_kappa = kappa
        if hasattr(self, "_hub_mixin_config"):
            self._hub_mixin_config = {**(self._hub_mixin_config or {}), "density_kappa": kappa}

    @property
    def kernel_kappa(self) -> float:
        """The kernel's concentration: the fitted one, else that of a ``DEFAULT_KERNEL_KM`` kernel."""
        return float(self.density_kappa) if self.density_kappa else kappa_for_km(DEFAULT_KERNEL_KM)

    @torch.no_grad()
    def density_mixture(self, images: Any = None, image_embeddings: Any = None, **kwargs) -> KernelMixture:
        """The density of each image as a :class:`KernelMixture` (``kwargs`` go to the model's components)."""
        features = self._density_features(images, image_embeddings)
        centres, weights = self._kernel_components(features, **kwargs)
        return KernelMixture(centres.double().cpu(), weights.double().cpu(), self.kernel_kappa)

    def log_prob(self, latlon: Any, images: Any = None, image_embeddings: Any = None, **kwargs) -> torch.Tensor:
        """Log-density (nats, w.r.t. area on the unit sphere) of ``latlon (N, 2)`` or ``(N, K, 2)`` given each
        image -> ``(N,)`` or ``(N, K)`` float32."""
        mixture = self.density_mixture(images, image_embeddings, **kwargs)
        return mixture.log_prob(check_latlon(latlon, "latlon").cpu()).float()

    def density_grid(
        self, images: Any = None, image_embeddings: Any = None, *, resolution_deg: float = 1.0, **kwargs
    ) -> DensityGrid:
        """Log-density on a lat/lon grid of cell centres (``resolution_deg`` in [0.25, 90], dividing 180) for each
        image -> :class:`DensityGrid` ``log_density (N, H, W)``; it integrates to 1."""
        return self.density_mixture(images, image_embeddings, **kwargs).grid(resolution_deg)

    @torch.no_grad()
    def fit_density(self, image_embeddings: Any, latlon: Any, *, batch_size: int = 256, **kwargs) -> float:
        """Fit the kernel's concentration on held-out ``image_embeddings (N, D)`` and their true ``latlon (N, 2)``
        (maximum likelihood), keep it (saved with the model) and return it. Use data the model was not trained on:
        on training data the kernel comes out too sharp."""
        batch_size = check_int(batch_size, "batch_size")
        truth = check_latlon(latlon, "latlon")
        feats = self._density_features(None, image_embeddings)
        if truth.ndim != 2 or len(truth) != len(feats):
            raise ValueError(f"latlon must have shape ({len(feats)}, 2) like image_embeddings, got "
                             f"{tuple(truth.shape)}")  # fmt: skip
        chunks = range(0, len(feats), batch_size)
        parts = [self._kernel_components(feats[i : i + batch_size], **kwargs) for i in chunks]
        centres = torch.cat([c.double().cpu() for c, _ in parts])
        weights = torch.cat([w.double().cpu() for _, w in parts])
        kappa = fit_kappa(centres, weights, truth.double().cpu())
        self._record_density_kappa(kappa)
        return kappa
