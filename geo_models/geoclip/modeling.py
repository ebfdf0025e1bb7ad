"""GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023): image-to-GPS retrieval with a CLIP image encoder and a
multi-scale location encoder trained contrastively.

- Location encoder L(.) (sec. 3.1, eq. 1-3): Equal Earth -> RFF at sigma 2^0, 2^4, 2^8 -> MLPs -> sum.
- Image encoder V(.) (sec. 3.2): frozen CLIP backbone + trainable head h1 (D -> D, ReLU), h2 (D -> 512).
- Similarity: ``exp(logit_scale) * <V(I)/|V(I)|, L(G)/|L(G)|>``, logit scale initialised at log(1/0.07).
- Retrieval (sec. 3.3): softmax over a gallery of GPS coordinates, top-k.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geo_models.checks import (
    MAX_GALLERY_POINTS,
    MIN_GRID_RESOLUTION_DEG,
    check_int,
    check_number,
    check_parameter_budget,
    linear_parameters,
)
from geo_models.encoders.image import OpenCLIPBackbone, backbone_weights_saved, load_images
from geo_models.encoders.location import LocationEncoder, check_sigmas, location_encoder_parameters
from geo_models.geoclip.gallery import as_gallery, fibonacci_gallery, gallery_from_csv, gallery_hash, official_gallery
from geo_models.hub import GeoModelHubMixin
from geo_models.kernel_density import KernelDensityMixin
from geo_models.outputs import GeoPrediction, check_embeddings
from geo_models.sphere import check_latlon, haversine_km
from geo_models.sphere.density import DensityKernel, coarse_to_fine_mode

GalleryLike = torch.Tensor | str | PathLike | int | None


@dataclass
class TextQueryResult:
    """Output of :meth:`GeoCLIP.text_query`.

    Attributes:
        heatmap: ``(T, H, W)`` cosine similarity of each text with the locations of a lat/lon grid.
        latitudes: ``(H,)`` grid cell centres, north to south. longitudes: ``(W,)`` west to east.
        candidates: ``(T, K, 2)`` best grid cells. scores: ``(T, K)`` their probability over the grid.
    """

    heatmap: torch.Tensor
    latitudes: torch.Tensor
    longitudes: torch.Tensor
    candidates: torch.Tensor
    scores: torch.Tensor


POINT_ESTIMATES = ("argmax", "density_mode", "coarse_to_fine")
DENSITY_COMPONENTS = 256  # gallery points kept in the density; the rest of the softmax mass is spread uniformly
MODE_COMPONENTS = 1024  # gallery points the coarse-to-fine best guess weighs (a continent's scattered mass)
COARSE_TO_FINE_KM = (2500.0, 750.0, 200.0, 25.0)  # the paper's continent / country / region / city scales


class GeoCLIP(nn.Module, GeoModelHubMixin, KernelDensityMixin):
    """GeoCLIP model: ``predict`` returns top-k gallery locations with probabilities over the whole gallery.

    Args:
        embedding_dim: width of the backbone's image features (768 for CLIP ViT-L/14); ``None``: the backbone's
            width, or 768 without a backbone.
        projection_dim: width of the shared image/location space (512).
        sigmas, num_features, hidden_dim, num_layers: location encoder (see :class:`LocationEncoder`).
        logit_scale_init: initial log of the inverse temperature (paper: tau = 0.07).
        backbone: open_clip architecture for raw images (e.g. ``ViT-L-14``); ``None`` works on precomputed
            image embeddings only.
        backbone_pretrained: open_clip tag or weights file for the backbone (``openai``).
        backbone_finetuned: the backbone's weights were trained (LoRA merged or full) and are saved with the model.
        seed: seed of the RFF matrices (and of a randomly initialised backbone).
        density_kernel: how the gallery softmax becomes a density on the sphere (:meth:`log_prob`,
            :meth:`density_grid`): ``{"kappa", "power", "floor", "floor_kappa"}`` of a
            :class:`~geo_models.sphere.density.DensityKernel`, set by :meth:`fit_density` on held-out data
            (``None``: a 250 km vMF kernel).
        point_estimate: the best guess :meth:`predict` returns by default (one of ``POINT_ESTIMATES``; the paper's
            ``"argmax"``; ``train_geoclip.py --point_estimate`` records the one it was evaluated with).
    """

    model_type = "geoclip"
    gallery_cache_size = 2  # galleries whose location embeddings stay cached (100K x 512 floats = 200 MB each)

    def __init__(
        self,
        *,
        embedding_dim: int | None = None,
        projection_dim: int = 512,
        sigmas: tuple[float, ...] = (2**0, 2**4, 2**8),
        num_features: int = 256,
        hidden_dim: int = 1024,
        num_layers: int = 3,
        logit_scale_init: float = math.log(1 / 0.07),
        backbone: str | None = None,
        backbone_pretrained: str | None = None,
        backbone_finetuned: bool = False,
        seed: int = 0,
        density_kernel: dict | None = None,
        point_estimate: str = "argmax",
    ):
        super().__init__()
        self.density_kernel = DensityKernel.from_dict(density_kernel)
        if point_estimate not in POINT_ESTIMATES:
            raise ValueError(f"point_estimate must be one of {POINT_ESTIMATES}, got {point_estimate!r}")
        self.point_estimate = point_estimate
        # 0. Sizes, and the parameter budget before anything is allocated (the backbone is a named architecture)
        embedding_dim = None if embedding_dim is None else check_int(embedding_dim, "embedding_dim")
        projection_dim = check_int(projection_dim, "projection_dim")
        sigmas = check_sigmas(sigmas)
        num_features, hidden_dim = check_int(num_features, "num_features"), check_int(hidden_dim, "hidden_dim")
        num_layers = check_int(num_layers, "num_layers")
        width = embedding_dim or 768  # a backbone's width is checked against embedding_dim below
        check_parameter_budget(
            location_encoder_parameters(sigmas, num_features, hidden_dim, num_layers, projection_dim)
            + linear_parameters(width, width)
            + linear_parameters(width, projection_dim),
            "embedding_dim, projection_dim, sigmas, num_features, hidden_dim, num_layers",
            "GeoCLIP",
        )
        logit_scale_init = check_number(logit_scale_init, "logit_scale_init", -50.0, 50.0)  # exp() finite in float32
        seed = check_int(seed, "seed", -(2**63), 2**64 - 1 - len(sigmas))  # the RFF branches use seed + i
        self.backbone: OpenCLIPBackbone | None = None
        if backbone:
            self.backbone = OpenCLIPBackbone(backbone, backbone_pretrained, seed=seed)
            embedding_dim = embedding_dim or self.backbone.output_dim
            if self.backbone.output_dim != embedding_dim:
                raise ValueError(
                    f"embedding_dim={embedding_dim}, but backbone {backbone!r} gives {self.backbone.output_dim}-d"
                )
        embedding_dim = embedding_dim or 768
        self.embedding_dim = embedding_dim
        self.location_encoder = LocationEncoder(
            sigmas=sigmas,
            num_features=num_features,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            output_dim=projection_dim,
            seed=seed,
        )
        self.image_head = nn.Sequential(
            nn.Linear(embedding_dim, embedding_dim), nn.ReLU(), nn.Linear(embedding_dim, projection_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.register_buffer("gallery", torch.zeros(0, 2))  # default gallery saved with the model (may be empty)
        self._gallery_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    # ------------------------------------------------------------------------------------------- encoders
    def check_embeddings(self, image_embeddings: Any, name: str = "image_embeddings") -> torch.Tensor:
        """Validate backbone features ``(N, embedding_dim)`` -> float tensor on the model's device."""
        t = check_embeddings(image_embeddings, self.embedding_dim, name)
        return t.to(self.logit_scale.device, self.logit_scale.dtype)

    def encode_image_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(N, D)`` -> unit-norm ``(N, projection_dim)`` through h1, h2."""
        return F.normalize(self.image_head(image_embeddings), dim=-1)

    def encode_locations(self, latlon: torch.Tensor) -> torch.Tensor:
        """``(M, 2)`` degrees -> unit-norm ``(M, projection_dim)``."""
        return F.normalize(self.location_encoder(latlon), dim=-1)

    def forward(self, image_embeddings: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, M)`` = exp(logit_scale) * cosine(image i, location j) (GeoCLIP eq. 4)."""
        return (
            self.logit_scale.exp() * self.encode_image_embeddings(image_embeddings) @ self.encode_locations(latlon).T
        )

    def embed_images(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        """Images (PIL, file paths, or a preprocessed ``(N, 3, S, S)`` tensor) -> backbone features ``(N, D)``."""
        if self.backbone is None:
            raise ValueError("images need a backbone: this model has none (pass image_embeddings instead)")
        return self.backbone.embed_images(images, batch_size=batch_size)

    # ------------------------------------------------------------------------------------------- galleries
    def resolve_gallery(self, gallery: GalleryLike = None) -> torch.Tensor:
        """``None``: the gallery saved with the model, else the official 100K if installed, else a 100K Fibonacci
        grid; ``"official"``; an int N (Fibonacci grid of N points, N <= 1,000,000); a CSV path; or a ``(G, 2)``
        latlon tensor."""
        if gallery is None:
            if len(self.gallery):
                return self.gallery
            try:
                return official_gallery()
            except ImportError:
                return fibonacci_gallery(100_000)
        if isinstance(gallery, str) and gallery == "official":
            return official_gallery()
        if isinstance(gallery, (bool, int, float, np.integer, np.floating)):
            num_points = check_int(gallery, "gallery (a number of Fibonacci points)", 1, MAX_GALLERY_POINTS)
            return fibonacci_gallery(num_points)
        if isinstance(gallery, (str, PathLike)):
            if not Path(gallery).is_file():
                raise ValueError(f"gallery: {gallery!r} is neither 'official' nor an existing CSV file")
            return gallery_from_csv(gallery)
        return as_gallery(gallery)

    @torch.no_grad()
    def gallery_embeddings(self, gallery: torch.Tensor, *, batch_size: int = 8192) -> torch.Tensor:
        """Unit-norm location embeddings ``(G, projection_dim)``, computed once per (gallery, weights) and cached."""
        params = list(self.location_encoder.parameters())
        key = (gallery_hash(gallery), tuple((p.data_ptr(), p._version) for p in params), params[0].device)
        if key in self._gallery_cache:
            self._gallery_cache.move_to_end(key)
            return self._gallery_cache[key]
        emb = torch.cat(
            [self.encode_locations(gallery[i : i + batch_size]) for i in range(0, len(gallery), batch_size)]
        )
        self._gallery_cache[key] = emb
        while len(self._gallery_cache) > self.gallery_cache_size:
            self._gallery_cache.popitem(last=False)
        return emb

    # ------------------------------------------------------------------------------------------- retrieval
    @torch.no_grad()
    def predict(
        self,
        images: Any = None,
        image_embeddings: torch.Tensor | None = None,
        *,
        top_k: int = 5,
        gallery: GalleryLike = None,
        batch_size: int = 256,
        prior_latlon: torch.Tensor | None = None,
        prior_radius_km: float | None = None,
        prior_fallback: bool = False,
        ten_crop: bool = False,
        point_estimate: str | None = None,
    ) -> GeoPrediction:
        """Geolocate images by retrieval over a GPS gallery.

        Args:
            images: PIL images, image file paths, or a preprocessed ``(N, 3, S, S)`` tensor (needs a backbone).
            image_embeddings: ``(N, embedding_dim)`` backbone features, instead of ``images``.
            top_k: number of candidates per image, in [1, G] (the gallery size).
            gallery: see :meth:`resolve_gallery`; its location embeddings are cached across calls.
            batch_size: images scored per chunk (bounds the ``(batch, G)`` similarity matrix), >= 1.
            prior_latlon, prior_radius_km: search only gallery points within the radius of a known point, ``(2,)``
                or ``(N, 2)`` (paper Table 5: 2500 km continent, 750 country, 200 region, 25 city), or of any of K
                points per image ``(N, K, 2)`` (LocDiff-H: around LocDiff's samples).
            prior_fallback: an image without any gallery point in its prior region searches the whole gallery
                (default: ValueError).
            ten_crop: average the gallery probabilities over ten crops (4 corners + centre, and flips) per image.
            point_estimate: ``None``: the model's (``self.point_estimate``, saved in its config). ``"argmax"``: the
                paper's, the most probable gallery point. ``"density_mode"``: the gallery point of highest density
                under :meth:`density_mixture` (its top 256 points spread by the fitted kernel), which adds up the
                mass that near-duplicate gallery points split between them. ``"coarse_to_fine"``: the mode of the
                softmax mass of the top 1,024 points at the paper's scales in turn, 2,500 / 750 / 200 / 25 km,
                each searched within the previous scale of the previous mode
                (:func:`~geo_models.sphere.density.coarse_to_fine_mode`): good at every threshold at once.

        Returns:
            GeoPrediction with ``latlon (N, 2)`` (the point estimate), ``candidates (N, K, 2)`` and ``scores (N,
            K)``: the candidates' probabilities under a softmax over the whole gallery (as the official ``predict``).

        Example:
            >>> model = GeoCLIP.from_official()  # doctest: +SKIP
            >>> model.predict(image_embeddings=torch.randn(4, 768), top_k=3).candidates.shape  # doctest: +SKIP
            torch.Size([4, 3, 2])
        """
        # 1. Check inputs
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images or image_embeddings")
        if ten_crop and images is None:
            raise ValueError("ten_crop needs images, not image_embeddings")
        top_k = check_int(top_k, "top_k")
        batch_size = check_int(batch_size, "batch_size")
        if (prior_latlon is None) != (prior_radius_km is None):
            raise ValueError("prior_latlon and prior_radius_km go together")
        if prior_radius_km is not None:
            prior_radius_km = check_number(prior_radius_km, "prior_radius_km", 0.0, low_open=True)
        point_estimate = self.point_estimate if point_estimate is None else point_estimate
        if point_estimate not in POINT_ESTIMATES:
            raise ValueError(f"point_estimate must be one of {POINT_ESTIMATES}, got {point_estimate!r}")
        gallery = self.resolve_gallery(gallery).to(self.logit_scale.device)
        if not 1 <= top_k <= len(gallery):
            raise ValueError(f"top_k must be in [1, {len(gallery)}] (the gallery size), got {top_k}")
        shown = top_k  # the density mode looks at more gallery points than it shows
        if point_estimate != "argmax":
            needed = DENSITY_COMPONENTS if point_estimate == "density_mode" else MODE_COMPONENTS
            top_k = max(top_k, min(needed, len(gallery)))
        # 2. Image features, one row per image (or per crop)
        crops = 10 if ten_crop else 1
        if images is not None:
            pixels = self._ten_crop_pixels(images) if ten_crop else None
            feats = self.embed_images(images if pixels is None else pixels, batch_size=batch_size)
        else:
            feats = self.check_embeddings(image_embeddings)
        n = len(feats) // crops
        prior = self._check_prior(prior_latlon, prior_radius_km, n) if prior_latlon is not None else None
        # 3. Gallery embeddings (cached)
        gallery_emb = self.gallery_embeddings(gallery)
        # 4. Probabilities over the whole gallery, top-k, chunked over images. Every chunk's logits go into one
        # reused (rows, G) buffer and the softmax runs in place, so memory is bounded by the chunk whatever N: with
        # fresh (256, G) temporaries per chunk the heap fragmented (9.7 GB peak RSS at N = 100K, G = 100K).
        scale = self.logit_scale.exp()
        step = max(1, batch_size // crops)
        size = len(gallery)
        buffer = torch.empty(min(n, step) * crops, size, device=gallery_emb.device, dtype=gallery_emb.dtype)
        candidates, scores = torch.empty(n, top_k, 2, dtype=gallery.dtype), torch.empty(n, top_k)
        for start in range(0, n, step):
            stop = min(n, start + step)
            logits = buffer[: (stop - start) * crops]
            torch.matmul(self.encode_image_embeddings(feats[start * crops : stop * crops]), gallery_emb.T, out=logits)
            logits = logits.mul_(scale).view(stop - start, crops, size)
            if prior is not None:
                mask = self._prior_mask(gallery, prior[start:stop], prior_radius_km, start, prior_fallback)
                logits.masked_fill_(~mask[:, None], float("-inf"))
            probs = _softmax_(logits)
            probs = probs[:, 0] if crops == 1 else probs.mean(dim=1)  # (b, G)
            top = probs.topk(top_k, dim=-1)
            candidates[start:stop] = gallery[top.indices].cpu()
            scores[start:stop] = top.values.cpu()
        latlon = candidates[:, 0]
        if point_estimate == "density_mode":
            mixture = self.kernel.mixture(candidates.double(), scores.double())
            latlon = mixture.mode_among_centres().to(candidates.dtype)
        elif point_estimate == "coarse_to_fine":
            latlon = coarse_to_fine_mode(candidates, scores, COARSE_TO_FINE_KM).to(candidates.dtype)
        return GeoPrediction(latlon=latlon, candidates=candidates[:, :shown], scores=scores[:, :shown])

    # ------------------------------------------------------------------------------------------- density
    def _density_features(self, images: Any, image_embeddings: Any) -> torch.Tensor:
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images or image_embeddings")
        return self.embed_images(images) if images is not None else self.check_embeddings(image_embeddings)

    def _kernel_components(self, features: torch.Tensor, *, gallery: GalleryLike = None, **predict_kwargs):
        """The gallery softmax (sec. 3.3) as the mixture's weights: the top ``DENSITY_COMPONENTS`` gallery points
        with their probabilities; the rest of the softmax mass (small, spread over the far gallery) goes to the
        mixture's uniform part. ``predict_kwargs``: e.g. a prior region (LocDiff-H)."""
        size = len(self.resolve_gallery(gallery))
        pred = self.predict(image_embeddings=features, top_k=min(DENSITY_COMPONENTS, size), gallery=gallery,
                            **predict_kwargs)  # fmt: skip
        return pred.candidates, pred.scores

    @staticmethod
    def _check_prior(prior_latlon, radius_km, n) -> torch.Tensor:
        """Prior centres as ``(N, K, 2)``."""
        prior = check_latlon(prior_latlon, "prior_latlon")
        prior = prior.expand(n, 1, 2) if prior.ndim == 1 else prior[:, None] if prior.ndim == 2 else prior
        if prior.ndim != 3 or prior.shape[0] != n:
            raise ValueError(f"prior_latlon must have shape (2,), ({n}, 2) or ({n}, K, 2), got {tuple(prior.shape)}")
        check_number(radius_km, "prior_radius_km", 0.0, low_open=True)
        return prior

    @staticmethod
    def _prior_mask(gallery, prior, radius_km, offset, fallback) -> torch.Tensor:
        """``(n, G)``: gallery points within ``radius_km`` of any of an image's prior centres ``prior (n, K, 2)``."""
        prior = prior.to(gallery.device)
        mask = torch.zeros(len(prior), len(gallery), dtype=torch.bool, device=gallery.device)
        for k in range(prior.shape[1]):  # one (n, G) distance matrix at a time
            mask |= haversine_km(prior[:, k, None], gallery[None]) <= radius_km
        empty = ~mask.any(dim=1)
        if empty.any():
            if not fallback:
                first = offset + int(empty.nonzero()[0])
                raise ValueError(f"prior_radius_km={radius_km}: no gallery point within it for image {first}")
            mask[empty] = True
        return mask

    def _ten_crop_pixels(self, images: Any) -> torch.Tensor:
        """Images -> ``(N * 10, 3, S, S)``: short side resized to S * 256/224, ten S x S crops (paper sec. 4)."""
        from torchvision import transforms as T

        if self.backbone is None:
            raise ValueError("images need a backbone: this model has none (pass image_embeddings instead)")
        size = self.backbone.image_size
        to_pixels = T.Compose([T.ToTensor(), T.Normalize(self.backbone.mean, self.backbone.std)])
        resize = T.Resize(round(size * 256 / 224), interpolation=T.InterpolationMode.BICUBIC)
        ten = T.TenCrop(size)
        return torch.stack([to_pixels(crop) for img in load_images(images) for crop in ten(resize(img))])

    # ------------------------------------------------------------------------------------------- text query
    @torch.no_grad()
    def text_query(self, texts: list[str], *, resolution_deg: float = 2.0, top_k: int = 5) -> TextQueryResult:
        """Where does a text belong? (paper sec. 4.4): CLIP text features -> h1, h2 -> similarity over a grid.

        ``texts``: a non-empty list of strings; ``resolution_deg`` in [0.25, 30] degrees (at most ~1M grid cells);
        ``top_k >= 1`` candidates (at most the number of cells)."""
        if self.backbone is None:
            raise ValueError("text queries need the CLIP backbone (its text tower); this model has none")
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f"texts must be a non-empty list of strings, got {type(texts).__name__}")
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty list of strings")
        resolution_deg = check_number(resolution_deg, "resolution_deg", MIN_GRID_RESOLUTION_DEG, 30.0)
        top_k = check_int(top_k, "top_k")
        lats = torch.arange(90 - resolution_deg / 2, -90, -resolution_deg)
        lons = torch.arange(-180 + resolution_deg / 2, 180, resolution_deg)
        grid = torch.stack(torch.meshgrid(lats, lons, indexing="ij"), dim=-1).reshape(-1, 2)
        text = self.encode_image_embeddings(self.backbone.encode_text(texts).to(self.logit_scale.dtype))
        sim = text @ self.gallery_embeddings(grid).T  # (T, H * W)
        top = (self.logit_scale.exp() * sim).softmax(dim=-1).topk(min(top_k, len(grid)), dim=-1)
        return TextQueryResult(
            heatmap=sim.view(len(texts), len(lats), len(lons)).cpu(),
            latitudes=lats,
            longitudes=lons,
            candidates=grid[top.indices.cpu()],
            scores=top.values.cpu(),
        )

    # ------------------------------------------------------------------------------------------- Hub
    @classmethod
    def _from_pretrained(cls, **kwargs) -> GeoCLIP:
        # A backbone whose weights are in the saved file (fine-tuned, or from a local weights file) is built with
        # random weights instead of being fetched from its source, which may be unreachable here (offline, other
        # machine); the config keeps naming the source.
        name, source = kwargs.get("backbone"), kwargs.get("backbone_pretrained")
        saved = bool(name) and backbone_weights_saved(name, source, finetuned=kwargs.get("backbone_finetuned", False))
        if saved:
            kwargs["backbone_pretrained"] = None
        model = super()._from_pretrained(**kwargs)
        if saved:
            model.backbone.pretrained = source
            model._hub_mixin_config = {**model._hub_mixin_config, "backbone_pretrained": source}
        return model

    @classmethod
    def from_official(
        cls,
        source: str | PathLike | None = None,
        *,
        backbone: str | None = None,
        backbone_pretrained: str | None = "openai",
        embedding_dim: int | None = None,
        seed: int = 0,
        **hub_kwargs,
    ) -> GeoCLIP:
        """Official GeoCLIP weights as a :class:`GeoCLIP` with the official 100K gallery as its default gallery
        (converted by :func:`geo_models.geoclip.official.official_state`).

        Args:
            source: ``None`` for the files of the ``geoclip`` PyPI package; else an official release folder or Hub
                id.
            backbone: open_clip architecture for raw images; the official model uses CLIP ViT-L/14 (``ViT-L-14``
                with ``backbone_pretrained="openai"``, same weights as ``openai/clip-vit-large-patch14``). ``None``
                (default) gives a model for precomputed 768-d ``image_embeddings``.
            embedding_dim: features of another size (not CLIP ViT-L/14's 768): the official location encoder,
                temperature and gallery with a new image head for them (initialised from ``seed``), to be trained
                (``train_geoclip.py --init_from official`` on such embeddings).
        """
        from geo_models.geoclip.official import OFFICIAL_CARD, OFFICIAL_CONFIG, official_state

        config = dict(OFFICIAL_CONFIG)
        new_head = embedding_dim is not None and embedding_dim != config["embedding_dim"]
        if new_head:
            if backbone is not None:
                raise ValueError("embedding_dim: a new image head is for precomputed features (backbone=None)")
            config["embedding_dim"] = int(embedding_dim)
        model = cls(
            **config, backbone=backbone, backbone_pretrained=backbone_pretrained if backbone else None, seed=seed
        )
        state = official_state(source, **hub_kwargs)
        if new_head:
            state = {k: v for k, v in state.items() if not k.startswith("image_head.")}
            with torch.random.fork_rng(devices=[]):  # the new head from ``seed``, the global RNG untouched
                torch.manual_seed(seed)
                for layer in model.image_head:
                    if isinstance(layer, nn.Linear):
                        layer.reset_parameters()
            head = model.image_head.state_dict()
            state.update({f"image_head.{k}": v.detach().clone() for k, v in head.items()})
            model.load_hub_state_dict(state)
        else:
            model.load_hub_state_dict(state)
        model.card_defaults = OFFICIAL_CARD
        return model.eval()

    def backbone_is_rebuilt_from_config(self) -> bool:
        """True when ``from_pretrained`` rebuilds the backbone exactly from config (a named open_clip tag or seeded
        random weights, not fine-tuned); its weights are then left out of ``model.safetensors``."""
        if self.backbone is None:
            return False
        finetuned = self.config_value("backbone_finetuned", False)
        return not backbone_weights_saved(self.backbone.model_name, self.backbone.pretrained, finetuned=finetuned)

    def config_value(self, key: str, default: Any = None) -> Any:
        return (self._hub_mixin_config or {}).get(key, default)

    def set_point_estimate(self, point_estimate: str) -> None:
        """Make ``point_estimate`` the default of :meth:`predict`, saved in the config."""
        if point_estimate not in POINT_ESTIMATES:
            raise ValueError(f"point_estimate must be one of {POINT_ESTIMATES}, got {point_estimate!r}")
        self.point_estimate = point_estimate
        self._hub_mixin_config = {**(self._hub_mixin_config or {}), "point_estimate": point_estimate}

    def mark_backbone_finetuned(self) -> None:
        """Record that the backbone was trained, so its weights are saved with the model."""
        self._hub_mixin_config = {**(self._hub_mixin_config or {}), "backbone_finetuned": True}

    def hub_state_dict(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        if self.backbone_is_rebuilt_from_config():
            state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        return state

    def load_hub_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        state = dict(state)
        if "gallery" in state:
            self.gallery = state.pop("gallery").to(torch.float32)
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [
            k
            for k in missing
            if k != "gallery" and not (k.startswith("backbone.") and self.backbone_is_rebuilt_from_config())
        ]
        if strict and (missing or unexpected):
            raise RuntimeError(f"GeoCLIP weights do not match: missing {missing}, unexpected {unexpected}")


def _softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, in place (no (..., G) temporaries); returns ``logits``."""
    logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=-1, keepdim=True))
