"""GeoCLIP's training objective as the paper describes it (sec. 3.2, eq. 4-5), including the parts the official
code omits: Gaussian GPS noise on positives (sigma_eta = 150 m) and on the dynamic queue (sigma_eta' = 1000 m).

For image i (each of its P augmented views) the positives and negatives are the batch GPS G^B (noised) and the queue
Q of the S most recent training coordinates (noised more): ``loss = CE(exp(t) * <V(I_i), L([G^B; Q])>, i)``.
After each step the queue replaces its oldest rows with the batch GPS ('dynamic queue').

Optional, not in the GeoCLIP paper: **haversine label smoothing** (PIGEON, Haas et al., CVPR 2024, sec. 3.3 "Haversine
smoothing"): the one-hot target of eq. 5 becomes ``softmax_j(-d(g_i, c_j) / tau)`` over the candidate locations c_j
(batch and queue), so a candidate 5 km from the truth is not pushed away as hard as one on another continent. With
``tau -> 0`` it is the paper's loss. On features that already separate regions this keeps the coarse structure the
one-hot loss overfits away (bench/README.md "GeoCLIP learning").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geo_models.sphere import destination, haversine_km


class GPSQueue(nn.Module):
    """FIFO of the ``size`` most recent training coordinates (buffers, so checkpoints carry it).

    Initialised uniform over the latitude/longitude ranges, as the paper's implementation details say.
    """

    def __init__(self, size: int = 4096, *, seed: int = 0):
        super().__init__()
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        g = torch.Generator().manual_seed(seed)
        init = torch.rand(size, 2, generator=g) * torch.tensor([180.0, 360.0]) - torch.tensor([90.0, 180.0])
        self.register_buffer("latlon", init)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, latlon: torch.Tensor) -> None:
        """Replace the oldest rows with ``latlon (B, 2)`` (the newest ``size`` rows if B > size)."""
        size = len(self.latlon)
        if size == 0:
            return
        latlon = latlon.detach().to(self.latlon)[-size:]
        idx = (self.ptr + torch.arange(len(latlon), device=self.latlon.device)) % size
        self.latlon[idx] = latlon
        self.ptr.copy_((self.ptr + len(latlon)) % size)


def gps_noise(latlon: torch.Tensor, sigma_km: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Displace points by isotropic Gaussian noise of ``sigma_km`` per axis (east/north) on the sphere."""
    if sigma_km <= 0:
        return latlon
    en = torch.randn(*latlon.shape[:-1], 2, generator=generator, dtype=torch.float64) * sigma_km
    distance = en.norm(dim=-1)
    bearing = torch.rad2deg(torch.atan2(en[..., 0], en[..., 1]))  # clockwise from north
    return destination(latlon.detach().double().cpu(), bearing, distance).to(latlon)


def geoclip_loss(
    logits: torch.Tensor, num_views: int = 1, *, distances_km: torch.Tensor | None = None, smoothing_km: float = 0.0
) -> torch.Tensor:
    """Contrastive loss of eq. 5: cross-entropy of each view against its own GPS among batch + queue locations.

    Args:
        logits: ``(P * B, B + S)`` scaled similarities of the P views of B images (view-major: all images' first
            view, then the second...) with the B batch locations followed by the S queue locations.
        num_views: P.
        distances_km: ``(B, B + S)`` great-circle distances from each image's true location to the candidates;
            needed when ``smoothing_km > 0``.
        smoothing_km: haversine label smoothing's ``tau`` (PIGEON): soft targets ``softmax(-distances_km / tau)``;
            0 gives the paper's one-hot targets.
    """
    batch = logits.shape[0] // num_views
    if batch * num_views != logits.shape[0] or logits.shape[1] < batch:
        raise ValueError(f"logits must have shape (P * B, B + S), got {tuple(logits.shape)} with P={num_views}")
    if smoothing_km < 0:
        raise ValueError(f"smoothing_km must be >= 0, got {smoothing_km}")
    if smoothing_km == 0:
        targets = torch.arange(batch, device=logits.device).repeat(num_views)
        return F.cross_entropy(logits, targets)
    if distances_km is None or distances_km.shape != (batch, logits.shape[1]):
        raise ValueError(f"smoothing_km > 0 needs distances_km of shape {(batch, logits.shape[1])}")
    targets = torch.softmax(-distances_km.to(logits) / smoothing_km, dim=-1).repeat(num_views, 1)
    return F.cross_entropy(logits, targets)


def contrastive_step_loss(
    model: nn.Module,
    image_embeddings: torch.Tensor,
    latlon: torch.Tensor,
    queue: GPSQueue,
    *,
    num_views: int = 1,
    positive_noise_km: float = 0.15,
    queue_noise_km: float = 1.0,
    smoothing_km: float = 0.0,
) -> torch.Tensor:
    """One step's loss for a :class:`GeoCLIP` (or its DDP wrapper) on features ``(P * B, D)`` and GPS ``(B, 2)``.

    Goes through ``model(...)`` (the forward) so distributed wrappers synchronise gradients. ``smoothing_km > 0``:
    haversine label smoothing (see the module docstring) against the noised candidates.
    """
    gps = torch.cat([gps_noise(latlon, positive_noise_km), gps_noise(queue.latlon, queue_noise_km)])
    distances = haversine_km(latlon[:, None, :], gps[None, :, :]) if smoothing_km > 0 else None
    logits = model(image_embeddings, gps)
    return geoclip_loss(logits, num_views, distances_km=distances, smoothing_km=smoothing_km)
