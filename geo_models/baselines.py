"""Baselines every learned geolocator is compared with.

- :class:`KNNGeolocator`: nearest neighbours in backbone-embedding space (cosine similarity) over a memory of
  training embeddings and their coordinates. The best guess is the location of the nearest training image, or the
  medoid of the k nearest ones (more robust at country/continent scale, where single neighbours are noisy).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geo_models.hub import GeoModelHubMixin
from geo_models.kernel_density import KernelDensityMixin
from geo_models.outputs import GeoPrediction, check_embeddings
from geo_models.sphere import check_latlon, haversine_km
from geo_models.sphere.density import DensityKernel

AGGREGATES = ("top1", "medoid")
DENSITY_NEIGHBOURS = 64  # neighbours in the kNN density


class KNNGeolocator(nn.Module, GeoModelHubMixin, KernelDensityMixin):
    """k-nearest-neighbour geolocation on precomputed backbone embeddings.

    The memory holds L2-normalised training embeddings ``memory_embeddings (M, D)`` and their coordinates
    ``memory_latlon (M, 2)`` (degrees). Both are buffers saved in ``model.safetensors`` with the model, so a fitted
    model round-trips through ``save_pretrained`` / :func:`geo_models.hub.load_model` / ``push_to_hub``.

    Args:
        embedding_dim: width ``D`` of the backbone features (768 for CLIP ViT-L/14).
        k: neighbours the best guess is aggregated over. ``1`` (default): the nearest neighbour's location (classic
            1-NN). ``k > 1``: the medoid of the ``k`` nearest neighbours (see :meth:`predict`).
        temperature: softmax temperature of the candidates' scores (cosine similarities are divided by it).
        density_kernel: the kernel around each neighbour in the density (:meth:`log_prob`, :meth:`density_grid`:
            the 64 nearest neighbours weighted by that softmax, a kernel density estimate), ``{"kappa", "power",
            "floor", "floor_kappa"}``; set by :meth:`fit_density` on held-out data.

    Example:
        >>> knn = KNNGeolocator(embedding_dim=3).fit(torch.eye(3), torch.tensor([[0.0, 0], [10, 10], [20, 20]]))
        >>> knn.predict(image_embeddings=torch.tensor([[0.1, 1.0, 0.0]]), top_k=2).latlon
        tensor([[10., 10.]])
    """

    model_type = "knn"

    def __init__(self, *, embedding_dim: int = 768, k: int = 1, temperature: float = 0.07,
                 density_kernel: dict | None = None):  # fmt: skip
        super().__init__()
        self.density_kernel = DensityKernel.from_dict(density_kernel)
        if not (isinstance(embedding_dim, int) and embedding_dim >= 1):
            raise ValueError(f"embedding_dim must be an integer >= 1, got {embedding_dim!r}")
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.embedding_dim, self.k, self.temperature = embedding_dim, k, float(temperature)
        self.register_buffer("memory_embeddings", torch.zeros(0, embedding_dim))
        self.register_buffer("memory_latlon", torch.zeros(0, 2))

    def __len__(self) -> int:
        """Number of training embeddings in memory."""
        return self.memory_embeddings.shape[0]

    # ------------------------------------------------------------------------------------------- inputs
    def check_embeddings(self, embeddings: Any, name: str = "image_embeddings") -> torch.Tensor:
        """Validate ``(N >= 1, embedding_dim)`` finite, non-zero features -> L2-normalised float32 tensor."""
        t = check_embeddings(embeddings, self.embedding_dim, name)
        t = t.to(self.memory_embeddings.device, torch.float32)
        zero = (t.norm(dim=-1) == 0).nonzero()
        if len(zero):
            raise ValueError(f"{name}: row {int(zero[0])} is all zeros (cosine similarity is undefined)")
        return F.normalize(t, dim=-1)

    # ------------------------------------------------------------------------------------------- memory
    @torch.no_grad()
    def fit(self, embeddings: Any, latlon: Any) -> KNNGeolocator:
        """Replace the memory with training ``embeddings (N, embedding_dim)`` and their ``latlon (N, 2)`` degrees.

        Embeddings are stored L2-normalised (float32). Returns ``self``.
        """
        emb = self.check_embeddings(embeddings, "embeddings")
        ll = check_latlon(latlon, "latlon")
        if ll.ndim != 2 or ll.shape[0] != emb.shape[0]:
            raise ValueError(f"latlon must have shape ({emb.shape[0]}, 2) like embeddings, got {tuple(ll.shape)}")
        self.memory_embeddings = emb
        self.memory_latlon = ll.to(emb.device, torch.float32)
        return self

    def load_hub_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load a saved memory of any size (the buffers are replaced, not copied into the empty ones)."""
        state = dict(state)
        missing = [k for k in ("memory_embeddings", "memory_latlon") if k not in state]
        unexpected = [k for k in state if k not in ("memory_embeddings", "memory_latlon")]
        if strict and (missing or unexpected):
            raise RuntimeError(f"KNNGeolocator weights do not match: missing {missing}, unexpected {unexpected}")
        emb = state.get("memory_embeddings", self.memory_embeddings).to(torch.float32)
        ll = state.get("memory_latlon", self.memory_latlon).to(torch.float32)
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim or ll.shape != (emb.shape[0], 2):
            raise RuntimeError(
                f"KNNGeolocator memory has shapes {tuple(emb.shape)} / {tuple(ll.shape)}, expected "
                f"(M, {self.embedding_dim}) / (M, 2)"
            )
        self.memory_embeddings, self.memory_latlon = emb, ll

    # ------------------------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(
        self,
        images: Any = None,
        image_embeddings: Any = None,
        *,
        top_k: int = 5,
        batch_size: int = 1024,
        aggregate: str | None = None,
        k: int | None = None,
    ) -> GeoPrediction:
        """Geolocate by nearest neighbours in the memory (cosine similarity of backbone features).

        Args:
            images: not supported: this baseline has no backbone. Embed the images first (``train/embed_images.py``
                or a GeoCLIP model's ``embed_images``) and pass ``image_embeddings``.
            image_embeddings: ``(N, embedding_dim)`` backbone features (any norm; they are L2-normalised).
            top_k: candidates per image: the ``top_k`` nearest training locations, most similar first.
            batch_size: queries per chunk (bounds the ``(batch, M)`` similarity matrix).
            aggregate: how ``latlon`` (the best guess) is chosen: ``"top1"`` the nearest neighbour; ``"medoid"`` of
                the ``k`` nearest neighbours, the one with the smallest summed great-circle distance to the other
                ``k - 1`` (ties go to the more similar one). Default: ``"medoid"`` if the config's ``k > 1``, else
                ``"top1"``.
            k: neighbours of the medoid. Default: the config's ``k`` if it is > 1, else ``top_k``.

        Returns:
            GeoPrediction with ``latlon (N, 2)``, ``candidates (N, top_k, 2)`` and ``scores (N, top_k)``:
            ``softmax(similarity / temperature)`` over the ``top_k`` candidates only (they sum to 1 per image; this
            is a confidence among the retrieved neighbours, not a probability over the globe). ``extras``:
            ``"indices" (N, top_k)`` memory rows of the candidates, ``"similarities" (N, top_k)`` their cosines.
        """
        if images is not None:
            raise ValueError(
                "images: KNNGeolocator has no image backbone; embed the images first (train/embed_images.py or "
                "GeoCLIP.embed_images) and pass image_embeddings=(N, embedding_dim)"
            )
        if image_embeddings is None:
            raise ValueError("image_embeddings: pass (N, embedding_dim) backbone features")
        m = len(self)
        if m == 0:
            raise ValueError("this KNNGeolocator has an empty memory: call fit(embeddings, latlon) first")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= m:
            raise ValueError(f"top_k must be an integer in [1, {m}] (the memory size), got {top_k!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if aggregate is None:
            aggregate = "medoid" if self.k > 1 else "top1"
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if k is None:
            k = self.k if self.k > 1 else top_k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= m:
            raise ValueError(f"k must be an integer in [1, {m}] (the memory size), got {k!r}")
        n_neighbours = max(top_k, k) if aggregate == "medoid" else top_k

        queries = self.check_embeddings(image_embeddings)
        sims, idx = [], []
        for start in range(0, len(queries), batch_size):
            top = (queries[start : start + batch_size] @ self.memory_embeddings.T).topk(n_neighbours, dim=-1)
            sims.append(top.values)
            idx.append(top.indices)
        sims, idx = torch.cat(sims), torch.cat(idx)  # (N, n_neighbours), most similar first
        neighbours = self.memory_latlon[idx]  # (N, n_neighbours, 2)
        if aggregate == "medoid":
            best = medoid(neighbours[:, :k])
        else:
            best = neighbours[:, 0]
        sims, idx = sims[:, :top_k], idx[:, :top_k]
        return GeoPrediction(
            latlon=best.cpu(),
            candidates=neighbours[:, :top_k].cpu(),
            scores=(sims / self.temperature).softmax(dim=-1).cpu(),
            extras={"indices": idx.cpu(), "similarities": sims.cpu()},
        )


    # ------------------------------------------------------------------------------------------- density
    def _density_features(self, images: Any, image_embeddings: Any) -> torch.Tensor:
        if images is not None or image_embeddings is None:
            raise ValueError("image_embeddings: pass (N, embedding_dim) backbone features (this baseline has no "
                             "backbone)")  # fmt: skip
        return self.check_embeddings(image_embeddings)

    def _kernel_components(self, features: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest neighbours' locations weighted by the softmax of their similarities (a kernel density
        estimate over the retrieved training locations)."""
        pred = self.predict(image_embeddings=features, top_k=min(DENSITY_NEIGHBOURS, len(self)), aggregate="top1")
        return pred.candidates, pred.scores


def medoid(points: torch.Tensor) -> torch.Tensor:
    """``(N, K, 2)`` latlon -> ``(N, 2)``: per row the point with the smallest summed great-circle distance to the
    other ``K - 1`` (the first one on ties)."""
    d = haversine_km(points[:, :, None], points[:, None, :])  # (N, K, K)
    d = (d + d.transpose(1, 2)) / 2  # exactly symmetric, so exact ties (e.g. K = 2) go to the first point
    d.diagonal(dim1=1, dim2=2).zero_()
    cost = d.sum(dim=-1)  # (N, K)
    return points[torch.arange(len(points), device=points.device), cost.argmin(dim=-1)]
