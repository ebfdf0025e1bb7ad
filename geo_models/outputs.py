"""Output dataclasses shared by every geolocator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class GeoPrediction:
    """What every geolocator's ``predict`` returns.

    Attributes:
        latlon: ``(N, 2)`` best guess per image, degrees, latitude first.
        candidates: ``(N, K, 2)`` candidate locations, best first.
        scores: ``(N, K)`` score of each candidate (probability for retrieval models, log-density for density
            models; the model's docstring says which).
        extras: method-specific outputs (e.g. ``"samples"`` for generative models), never required by callers.
    """

    latlon: torch.Tensor
    candidates: torch.Tensor
    scores: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.latlon.ndim != 2 or self.latlon.shape[-1] != 2:
            raise ValueError(f"latlon must have shape (N, 2), got {tuple(self.latlon.shape)}")
        if self.candidates.ndim != 3 or self.candidates.shape[-1] != 2:
            raise ValueError(f"candidates must have shape (N, K, 2), got {tuple(self.candidates.shape)}")
        if self.scores.shape != self.candidates.shape[:2]:
            raise ValueError(
                f"scores must have shape {tuple(self.candidates.shape[:2])} (N, K), got {tuple(self.scores.shape)}"
            )

    def __len__(self) -> int:
        return self.latlon.shape[0]

    def to_records(self) -> list[list[dict[str, float]]]:
        """JSON-able candidates: one list per image of ``{"latitude", "longitude", "score"}``."""
        return [
            [
                {"latitude": float(c[0]), "longitude": float(c[1]), "score": float(s)}
                for c, s in zip(cands.tolist(), sc.tolist())
            ]
            for cands, sc in zip(self.candidates, self.scores)
        ]


def check_embeddings(image_embeddings: Any, dim: int, name: str = "image_embeddings") -> torch.Tensor:
    """Validate backbone features ``(N >= 1, dim)``, finite floats, -> tensor (ValueError naming ``name``).

    The input check of every geolocator's ``predict(image_embeddings=...)``.
    """
    try:
        t = torch.as_tensor(image_embeddings)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a numeric (N, {dim}) tensor or array: {err}") from err
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N >= 1, {dim}), got {tuple(t.shape)}")
    # checked in row blocks: a (N, dim) bool temporary would cost N * dim bytes (77 MB for 100K ViT-L features)
    if not t.is_floating_point() or not all(bool(torch.isfinite(b).all()) for b in t.split(4096)):
        raise ValueError(f"{name} must be finite floating-point values (no NaN or inf)")
    return t
