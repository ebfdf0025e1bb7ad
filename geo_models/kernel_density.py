"""One probabilistic answer from point-based geolocators: their weighted points spread by a fitted vMF kernel.

GeoCLIP answers with a softmax over a gallery of points, kNN with weighted neighbours, LocDiff with samples; none of
their papers gives a density over the globe. Each becomes one here (issue 18): a
:class:`~geo_models.sphere.density.KernelMixture` of its points with the model's own weights, shaped by a
:class:`~geo_models.sphere.density.DensityKernel` (the vMF kernel's concentration, a temperature on the weights and
a floor of mass for the model's misses, uniform or spread broadly around its points) fitted on held-out data by
:meth:`KernelDensityMixin.fit_density` (maximum likelihood of the true locations, or the calibrated choice) and
saved in the model's config as ``density_kernel``. So every geolocator of the project has ``log_prob`` and
``density_grid`` with the sphere flow's meaning (nats w.r.t. area on the unit sphere), and
:mod:`geo_models.calibration` can score them all alike.
"""

from __future__ import annotations

from typing import Any

import torch

from geo_models.checks import check_int
from geo_models.sphere import check_latlon
from geo_models.sphere.density import DensityGrid, DensityKernel, KernelMixture, kappa_for_km
from geo_models.sphere.kernel_fit import fit_kernel

DEFAULT_KERNEL_KM = 250.0  # the kernel of a model whose density was never fitted (fit_density replaces it)


class KernelDensityMixin:
    """``log_prob`` / ``density_grid`` / ``fit_density`` for a geolocator that implements
    ``_kernel_components(features, **kwargs) -> (centres (N, M, 2), weights (N, M))`` and
    ``_density_features(images, image_embeddings) -> features``, and keeps ``self.density_kernel`` (a
    :class:`DensityKernel`, ``None`` until fitted)."""

    density_kernel: DensityKernel | None = None

    def _kernel_components(self, features: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _density_features(self, images: Any, image_embeddings: Any) -> torch.Tensor:
        raise NotImplementedError

    def _record_density_kernel(self, kernel: DensityKernel) -> None:
        """Keep a fitted kernel where ``save_pretrained`` writes the config (models override as needed)."""
        self.density_kernel = kernel
        if hasattr(self, "_hub_mixin_config"):
            self._hub_mixin_config = {**(self._hub_mixin_config or {}), "density_kernel": kernel.to_dict()}

    @property
    def kernel(self) -> DensityKernel:
        """The fitted kernel, else a ``DEFAULT_KERNEL_KM`` vMF with the model's own weights and no floor."""
        return self.density_kernel or DensityKernel(kappa_for_km(DEFAULT_KERNEL_KM))

    @torch.no_grad()
    def density_mixture(self, images: Any = None, image_embeddings: Any = None, **kwargs) -> KernelMixture:
        """The density of each image as a :class:`KernelMixture` (``kwargs`` go to the model's components)."""
        features = self._density_features(images, image_embeddings)
        centres, weights = self._kernel_components(features, **kwargs)
        return self.kernel.mixture(centres.double().cpu(), weights.double().cpu())

    def log_prob(self, latlon: Any, images: Any = None, image_embeddings: Any = None, **kwargs) -> torch.Tensor:
        """Log-density (nats, w.r.t. area on the unit sphere) of ``latlon (N, 2)`` or ``(N, K, 2)`` given each
        image -> ``(N,)`` or ``(N, K)`` float32."""
        mixture = self.density_mixture(images, image_embeddings, **kwargs)
        return mixture.log_prob(check_latlon(latlon, "latlon").cpu()).float()

    def density_grid(
        self,
        images: Any = None,
        image_embeddings: Any = None,
        *,
        resolution_deg: float = 1.0,
        oversample: int | None = None,
        **kwargs,
    ) -> DensityGrid:
        """Log-density on a lat/lon grid (``resolution_deg`` in [0.25, 90], dividing 180) for each image ->
        :class:`DensityGrid` ``log_density (N, H, W)``, each cell the density averaged over ``oversample^2`` points
        in it (``None``: enough for the kernel, :meth:`KernelMixture.grid`); it integrates to 1."""
        return self.density_mixture(images, image_embeddings, **kwargs).grid(resolution_deg, oversample)

    @torch.no_grad()
    def fit_density(
        self, image_embeddings: Any, latlon: Any, *, batch_size: int = 256, calibrate: bool = False, **kwargs
    ) -> DensityKernel:
        """Fit the density's kernel on held-out ``image_embeddings (N, D)`` and their true ``latlon (N, 2)``
        (:func:`~geo_models.sphere.kernel_fit.fit_kernel`: maximum likelihood, or with ``calibrate`` the likely
        kernel whose 50/90/95% regions hold the truths at those rates), keep it (saved with the model) and return
        it. Use data the model was not trained on: on training data the kernel comes out too sharp."""
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
        kernel = fit_kernel(centres, weights, truth.double().cpu(), calibrate=calibrate)
        self._record_density_kernel(kernel)
        return kernel
