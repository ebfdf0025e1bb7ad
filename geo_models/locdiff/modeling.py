"""Conditional SirenNet-based UNet (CS-UNet) of LocDiff (arXiv 2503.18142, sec. 4.5, Fig. 2).

A C-Siren module (Fig. 2a) fuses the latent ``x``, the image condition ``e_I`` and the diffusion step ``t``:

    h_x = W_x x,   h_c = W_c e_I,   (alpha, beta) = MLP(sinusoidal(t))
    h = sin(w0 * W_o ((1 + alpha) * h_x + beta + h_c))          (then dropout)

CS-UNet (Fig. 2b) stacks C-Siren modules in a U: widths shrink from the first width to the bottleneck ``w`` and grow
back, each up module taking the matching down output as a skip connection (concatenated), and a final linear layer
maps back to the latent dimension ``d = (L+1)^2``. Defaults follow Table 3 (time embedding ``d_T = 200``, CLIP
condition ``d_I = 768``, dropout 0.3) and Table 9 (bottleneck ``w = 32``, the best width); the paper does not list the
intermediate widths, so ``block_out_dims`` halves from 512 down to 32 (ours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from geo_models.checks import check_int, check_number, check_parameter_budget, linear_parameters

__all__ = ["PREDICTION_TYPES", "SHDD_SAMPLE_SCALE", "CSUNet", "CSUNetOutput", "CSiren", "ModelMixin"]

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
# SHDD vectors have mean square sum_lm Y_lm^2 / (L+1)^2 = 1 / (4 pi) per coordinate for every L: multiplying by
# sqrt(4 pi) gives unit RMS, the scale of the diffusion noise (ours; the paper does not state a data scale).
SHDD_SAMPLE_SCALE = math.sqrt(4 * math.pi)


@dataclass
class CSUNetOutput(BaseOutput):
    """``sample (B, d)``: the network's prediction (x0, epsilon or v, per ``prediction_type``)."""

    sample: torch.Tensor


class CSiren(nn.Module):
    """One C-Siren module (Fig. 2a): ``x (B, in_dim)``, ``cond (B, cond_dim)``, ``temb (B, time_dim)`` -> ``(B, d_o)``.

    Args:
        in_dim: input width ``d_i``.
        out_dim: output width ``d_o``.
        cond_dim: condition (image embedding) width ``d_I``.
        time_dim: sinusoidal time-embedding width ``d_T``.
        w0: sine frequency of the activation ``sin(w0 * .)`` (SIREN; the output layer is SIREN-initialised for it).
        dropout: dropout after the sine activation.
    """

    def __init__(self, in_dim: int, out_dim: int, cond_dim: int, time_dim: int, w0: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.w0 = float(w0)
        self.proj_x = nn.Linear(in_dim, out_dim)
        self.proj_cond = nn.Linear(cond_dim, out_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, 2 * out_dim))
        self.proj_out = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        bound = math.sqrt(6 / out_dim) / self.w0  # SIREN init (Sitzmann et al. 2020, sec. 3.2)
        nn.init.uniform_(self.proj_out.weight, -bound, bound)
        nn.init.zeros_(self.time_mlp[-1].weight)  # starts as the identity modulation: alpha = beta = 0
        nn.init.zeros_(self.time_mlp[-1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        alpha, beta = self.time_mlp(temb).chunk(2, dim=-1)
        h = (1 + alpha) * self.proj_x(x) + beta  # the unconditional denoising step
        h = self.proj_out(h + self.proj_cond(cond))  # adjusted under the guidance of the condition
        return self.dropout(torch.sin(self.w0 * h))


def cs_unet_parameters(sample_dim: int, condition_dim: int, dims: tuple[int, ...], time_embed_dim: int) -> int:
    """Parameters of a :class:`CSUNet` config, without building it."""

    def c_siren(i: int, o: int) -> int:
        t = time_embed_dim
        return (
            linear_parameters(i, o)
            + linear_parameters(condition_dim, o)
            + linear_parameters(t, t)
            + linear_parameters(t, 2 * o)
            + linear_parameters(o, o)
        )

    down = sum(c_siren(i, o) for i, o in zip((sample_dim, *dims[:-1]), dims))
    up = sum(c_siren(prev + skip, skip) for prev, skip in zip(dims[:0:-1], dims[-2::-1]))
    return down + up + linear_parameters(dims[0], sample_dim)


class CSUNet(ModelMixin, ConfigMixin):
    """CS-UNet denoiser of LocDiff on SHDD vectors (sec. 4.5, Fig. 2b).

    Args:
        sample_dim: latent dimension ``d = (L+1)^2`` (256, 576, 1024 for L = 15, 23, 31 in Table 3).
        condition_dim: image-embedding width ``d_I`` (768: CLIP ViT-L/14 in Table 3).
        block_out_dims: widths of the down path, the last one being the bottleneck ``w`` (Table 9: 32 is best);
            the up path mirrors them with skip connections.
        time_embed_dim: sinusoidal time-embedding width ``d_T`` (200 in Table 3).
        dropout: dropout after every C-Siren module (0.3 in Table 3).
        w0: sine frequency of the C-Siren activations.
        num_train_timesteps: timesteps of the schedule the model is trained with (documentation; the scheduler holds
            the schedule).
        prediction_type: what the network outputs: ``"sample"`` (x0, the default: the paper trains with the SHDD KL
            divergence between the ground-truth SHDD and "the diffusion output", i.e. a clean SHDD vector),
            ``"epsilon"`` (the noise, DDPM's usual target) or ``"v_prediction"``. The scheduler of a pipeline must use
            the same value.

    Example:
        >>> unet = CSUNet(sample_dim=16, condition_dim=8, block_out_dims=(32, 8), time_embed_dim=16)
        >>> unet(torch.randn(4, 16), torch.tensor([0, 10, 500, 999]), torch.randn(4, 8)).sample.shape
        torch.Size([4, 16])
    """

    @register_to_config
    def __init__(
        self,
        sample_dim: int = 576,
        condition_dim: int = 768,
        block_out_dims: tuple[int, ...] = (512, 256, 128, 64, 32),
        time_embed_dim: int = 200,
        dropout: float = 0.3,
        w0: float = 1.0,
        num_train_timesteps: int = 1000,
        prediction_type: str = "sample",
    ):
        super().__init__()
        sample_dim, condition_dim = check_int(sample_dim, "sample_dim"), check_int(condition_dim, "condition_dim")
        if isinstance(block_out_dims, (str, bytes)) or not hasattr(block_out_dims, "__len__") or not block_out_dims:
            raise ValueError(f"block_out_dims must be a non-empty tuple of widths >= 1, got {block_out_dims!r}")
        dims = tuple(check_int(d, f"block_out_dims[{i}]") for i, d in enumerate(block_out_dims))
        time_embed_dim = check_int(time_embed_dim, "time_embed_dim", 2)
        if time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be an even integer >= 2, got {time_embed_dim}")
        dropout = check_number(dropout, "dropout", 0.0, 1.0)
        if dropout == 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        w0 = check_number(w0, "w0", 0.0, low_open=True)
        num_train_timesteps = check_int(num_train_timesteps, "num_train_timesteps", 1, 100_000)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        check_parameter_budget(
            cs_unet_parameters(sample_dim, condition_dim, dims, time_embed_dim),
            "sample_dim, condition_dim, block_out_dims, time_embed_dim",
            "CSUNet",
        )
        self.register_to_config(sample_dim=sample_dim, condition_dim=condition_dim, time_embed_dim=time_embed_dim)
        args = dict(cond_dim=condition_dim, time_dim=time_embed_dim, w0=w0, dropout=dropout)
        ins = (sample_dim, *dims[:-1])
        self.down_blocks = nn.ModuleList([CSiren(i, o, **args) for i, o in zip(ins, dims)])
        self.up_blocks = nn.ModuleList(
            [CSiren(prev + skip, skip, **args) for prev, skip in zip(dims[:0:-1], dims[-2::-1])]
        )
        self.conv_out = nn.Linear(dims[0], sample_dim)

    def check_inputs(self, sample: torch.Tensor, image_embeddings: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``sample (B, sample_dim)`` and ``image_embeddings (B, condition_dim)``."""
        d, c = self.config.sample_dim, self.config.condition_dim
        if sample.ndim != 2 or sample.shape[1] != d:
            raise ValueError(f"sample must have shape (B, {d}), got {tuple(sample.shape)}")
        if image_embeddings.ndim != 2 or image_embeddings.shape != (sample.shape[0], c):
            raise ValueError(
                f"image_embeddings must have shape ({sample.shape[0]}, {c}), got {tuple(image_embeddings.shape)}"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        image_embeddings: torch.Tensor,
        return_dict: bool = True,
    ) -> CSUNetOutput | tuple[torch.Tensor]:
        """Denoise ``sample (B, d)`` at ``timestep`` (scalar or ``(B,)``) given ``image_embeddings (B, d_I)``.

        Returns:
            :class:`CSUNetOutput` with ``sample (B, d)`` (or a 1-tuple when ``return_dict=False``).
        """
        self.check_inputs(sample, image_embeddings)
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(sample.shape[0])
        temb = get_timestep_embedding(t, self.config.time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        temb = temb.to(sample.dtype)
        cond = image_embeddings.to(sample.dtype)
        h, skips = sample, []
        for block in self.down_blocks:
            h = block(h, cond, temb)
            skips.append(h)
        skips.pop()  # the bottleneck output is h itself
        for block in self.up_blocks:
            h = block(torch.cat([h, skips.pop()], dim=-1), cond, temb)
        out = self.conv_out(h)
        return CSUNetOutput(sample=out) if return_dict else (out,)
