"""GPS-CLIP ("GPS as a Control Signal for Image Generation", sec. 4.2 and A.1.4, Algorithm 1): a contrastive
image-GPS model whose cosine similarity is the *GPS score* of Table 1.

- Image side: a frozen image backbone (paper: DINOv2 ViT-B/14; here any open_clip model, or precomputed backbone
  features) + one trainable linear projection ``g``.
- GPS side: latitude and longitude are each normalised to [-1, 1] over the training area, passed through the *same*
  6-layer GELU MLP ``f_gps`` (shared weights), concatenated ``[f(lon), f(lat)]`` (Algorithm 1: x = longitude first)
  and projected by one linear layer ``p`` to the image embedding's width.
- Loss: symmetric cross-entropy over the batch's cosine-similarity logits at a fixed temperature 0.07.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geo_models.checks import check_int, check_number, check_parameter_budget, linear_parameters
from geo_models.encoders.image import OpenCLIPBackbone, backbone_weights_saved
from geo_models.encoders.networks import mlp_parameters
from geo_models.encoders.positional import MAX_FREQUENCIES, NeRFPositionalEncoding
from geo_models.generation.conditioning import _area_contains
from geo_models.hub import GeoModelHubMixin
from geo_models.outputs import check_embeddings
from geo_models.sphere import GeoArea, check_latlon

__all__ = ["GPSCLIP", "contrastive_loss"]


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Algorithm 1: ``(CE(logits, arange) + CE(logits.T, arange)) / 2`` for ``logits (N, N)`` (image i, GPS j)."""
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class GPSCLIP(nn.Module, GeoModelHubMixin):
    """GPS-CLIP: image and GPS embeddings in one space; :meth:`gps_score` is the paper's GPS score.

    Args:
        lat_range: ``(min, max)`` latitude of the training area, degrees; mapped to [-1, 1].
        lon_range: ``(min, max)`` longitude of the training area, degrees; mapped to [-1, 1].
        embedding_dim: width of the backbone's image features; ``None``: the backbone's width (required without one).
        projection_dim: width of the shared space; ``None``: ``embedding_dim`` (paper: the GPS embedding has the
            image encoder's dimensionality).
        hidden_dim: width of the shared GPS MLP.
        num_layers: Linear layers of the shared GPS MLP, each followed by GELU (paper: 6).
        num_frequencies: NeRF positional-encoding frequencies of each normalised coordinate before the MLP; 0 (the
            paper) feeds the raw normalised coordinate.
        temperature: fixed softmax temperature of the loss (paper: 0.07); not trained.
        backbone: open_clip architecture for raw images (``ViT-L-14``, ``procedural-clip``); ``None``: the model
            takes precomputed backbone features only. The backbone is always frozen.
        backbone_pretrained: open_clip tag or weights file of the backbone.
        seed: seed of a randomly initialised backbone.
    """

    model_type = "gps_clip"

    def __init__(
        self,
        *,
        lat_range: tuple[float, float] = (-90.0, 90.0),
        lon_range: tuple[float, float] = (-180.0, 180.0),
        embedding_dim: int | None = None,
        projection_dim: int | None = None,
        hidden_dim: int = 256,
        num_layers: int = 6,
        num_frequencies: int = 0,
        temperature: float = 0.07,
        backbone: str | None = None,
        backbone_pretrained: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self._area = GeoArea(lat_range, lon_range)  # ValueError naming lat_range / lon_range
        self.lat_range, self.lon_range = self._area.lat_range, self._area.lon_range
        temperature = check_number(temperature, "temperature", 0.0, low_open=True)
        num_layers, hidden_dim = check_int(num_layers, "num_layers"), check_int(hidden_dim, "hidden_dim")
        num_frequencies = check_int(num_frequencies, "num_frequencies", 0, MAX_FREQUENCIES)
        embedding_dim = None if embedding_dim is None else check_int(embedding_dim, "embedding_dim")
        projection_dim = None if projection_dim is None else check_int(projection_dim, "projection_dim")
        in_dim = 2 * num_frequencies + 1
        width = embedding_dim or 1024
        check_parameter_budget(
            linear_parameters(width, projection_dim or width)
            + mlp_parameters(in_dim, hidden_dim, num_layers=num_layers)
            + linear_parameters(2 * hidden_dim, projection_dim or width),
            "embedding_dim, projection_dim, hidden_dim, num_layers",
            "GPSCLIP",
        )
        self.backbone: OpenCLIPBackbone | None = None
        if backbone:
            self.backbone = OpenCLIPBackbone(backbone, backbone_pretrained, seed=seed)
            if embedding_dim is not None and embedding_dim != self.backbone.output_dim:
                raise ValueError(
                    f"embedding_dim={embedding_dim}, but backbone {backbone!r} gives {self.backbone.output_dim}"
                )
            embedding_dim = self.backbone.output_dim
        if embedding_dim is None or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1 (or give a backbone), got {embedding_dim}")
        self.embedding_dim = int(embedding_dim)
        self.projection_dim = int(projection_dim or embedding_dim)
        self.temperature = float(temperature)
        self.image_projection = nn.Linear(self.embedding_dim, self.projection_dim)  # g
        self.positional_encoding = (
            NeRFPositionalEncoding(1, num_frequencies, include_input=True) if num_frequencies else nn.Identity()
        )
        in_dim = self.positional_encoding.output_dim if num_frequencies else 1
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.GELU()]
        self.gps_mlp = nn.Sequential(*layers)  # f_gps, shared by latitude and longitude
        self.gps_projection = nn.Linear(2 * hidden_dim, self.projection_dim)  # p

    # ------------------------------------------------------------------------------------------- encoders
    @property
    def device(self) -> torch.device:
        return self.image_projection.weight.device

    @property
    def area(self) -> GeoArea:
        """The training area (``lat_range`` x ``lon_range``), mapped to [-1, 1] x [-1, 1] by :meth:`normalize`."""
        return self._area

    def contains(self, latitude: Any, longitude: Any) -> torch.Tensor:
        """Whether ``(latitude, longitude)`` degrees (numbers, arrays or tensors, broadcast together) lie in the
        training area, edges included -> bool tensor of their broadcast shape (as ``GPSEmbedder.contains``)."""
        return _area_contains(self._area, latitude, longitude)

    def normalize(self, latlon: Any, name: str = "latlon") -> torch.Tensor:
        """``(N, 2)`` degrees (latitude first) -> ``(N, 2)`` in [-1, 1] inside the training area."""
        t = check_latlon(latlon, name)
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape (N, 2), got {tuple(t.shape)}")
        lo = torch.tensor([self.lat_range[0], self.lon_range[0]], dtype=t.dtype, device=t.device)
        hi = torch.tensor([self.lat_range[1], self.lon_range[1]], dtype=t.dtype, device=t.device)
        return 2 * (t - lo) / (hi - lo) - 1

    def encode_gps(self, latlon: Any) -> torch.Tensor:
        """``latlon (N, 2)`` degrees -> unit-norm ``(N, projection_dim)``: ``p([f(lon), f(lat)])``."""
        xy = self.normalize(latlon).to(self.device, self.image_projection.weight.dtype)
        lat, lon = xy[:, :1], xy[:, 1:]
        features = torch.cat([self.gps_mlp(self.positional_encoding(c)) for c in (lon, lat)], dim=-1)
        return F.normalize(self.gps_projection(features), dim=-1)

    def encode_image_embeddings(self, image_embeddings: Any) -> torch.Tensor:
        """Backbone features ``(N, embedding_dim)`` -> unit-norm ``(N, projection_dim)``."""
        feats = check_embeddings(image_embeddings, self.embedding_dim, "image_embeddings")
        return F.normalize(self.image_projection(feats.to(self.device, self.image_projection.weight.dtype)), dim=-1)

    @torch.no_grad()
    def embed_images(self, images: Any, *, batch_size: int = 64) -> torch.Tensor:
        """Images (PIL, paths or a preprocessed ``(N, 3, S, S)`` tensor) -> backbone features ``(N, D)``."""
        if self.backbone is None:
            raise ValueError("images: this GPSCLIP has no backbone; pass image_embeddings (backbone features)")
        return self.backbone.embed_images(images, batch_size=batch_size).to(self.device, torch.float32)

    def forward(self, image_embeddings: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, M)`` = cosine(image i, GPS j) / temperature."""
        return self.encode_image_embeddings(image_embeddings) @ self.encode_gps(latlon).T / self.temperature

    def loss(self, image_embeddings: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        """Symmetric contrastive loss of Algorithm 1 over a batch of ``N`` pairs."""
        return contrastive_loss(self(image_embeddings, latlon))

    # ------------------------------------------------------------------------------------------- GPS score
    @torch.no_grad()
    def gps_score(
        self, images: Any = None, latlon: Any = None, *, image_embeddings: Any = None, batch_size: int = 64
    ) -> torch.Tensor:
        """GPS score (paper sec. 4.2, Table 1) of each image with its own location.

        ``100 * cos(image_i, gps_i)`` per pair, in [-100, 100], not clipped at 0 (the CLIP-score convention of
        Hessel et al. multiplies the cosine by 100 as well; torchmetrics' CLIPScore also clips at 0, which would hide
        that an unrelated image scores below 0 here). Average over pairs for the table (paper: ~13-14 for real
        nearest-neighbour photos and the GPS-only model, ~1 for text-only Stable Diffusion).

        Args:
            images: ``N`` PIL images / paths or a preprocessed tensor (needs a backbone), or
            image_embeddings: ``(N, embedding_dim)`` backbone features instead.
            latlon: ``(N, 2)`` degrees (or ``(2,)``: one location for every image).

        Returns:
            ``(N,)`` float32 scores on the CPU.
        """
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images or image_embeddings")
        if latlon is None:
            raise ValueError("latlon is required: (N, 2) degrees, latitude first")
        feats = self.embed_images(images, batch_size=batch_size) if images is not None else image_embeddings
        img = self.encode_image_embeddings(feats)
        loc = check_latlon(latlon, "latlon")
        loc = loc.expand(len(img), 2) if loc.ndim == 1 else loc
        if loc.shape != (len(img), 2):
            raise ValueError(f"latlon must have shape ({len(img)}, 2) or (2,), got {tuple(loc.shape)}")
        return (100 * (img * self.encode_gps(loc)).sum(-1)).float().cpu()

    # ------------------------------------------------------------------------------------------- Hub
    def backbone_is_rebuilt_from_config(self) -> bool:
        """The frozen backbone's weights are left out of ``model.safetensors`` when its config rebuilds them (an
        open_clip tag, a shipped tag, or seeded random weights); weights from a local file are saved."""
        return self.backbone is not None and not backbone_weights_saved(
            self.backbone.model_name, self.backbone.pretrained
        )

    def hub_state_dict(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        if self.backbone_is_rebuilt_from_config():
            state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        return state

    def load_hub_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        if self.backbone_is_rebuilt_from_config():
            missing = [k for k in missing if not k.startswith("backbone.")]
        if strict and (missing or unexpected):
            raise RuntimeError(f"GPSCLIP weights do not match: missing {missing}, unexpected {unexpected}")

    @classmethod
    def _from_pretrained(cls, **kwargs) -> GPSCLIP:
        # Backbone weights saved in the file (they came from a local file): build a random backbone and load them,
        # as the source file may not exist on this machine; the config keeps naming it.
        name, source = kwargs.get("backbone"), kwargs.get("backbone_pretrained")
        saved = bool(name) and backbone_weights_saved(name, source)
        if saved:
            kwargs["backbone_pretrained"] = None
        model = super()._from_pretrained(**kwargs)
        if saved:
            model.backbone.pretrained = source
            model._hub_mixin_config = {**model._hub_mixin_config, "backbone_pretrained": source}
        return model
