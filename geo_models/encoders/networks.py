"""Small networks that follow a positional encoding."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """``Linear -> act`` repeated ``num_layers`` times, then an optional output ``Linear``.

    Args:
        in_dim: input width.
        hidden_dim: width of every hidden layer.
        out_dim: width of the final linear layer; ``None`` ends on the last activation.
        num_layers: number of ``Linear + activation`` blocks (>= 1).
        activation: module class, e.g. ``nn.ReLU`` or ``nn.GELU``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int | None = None,
        *,
        num_layers: int = 2,
        activation: type[nn.Module] = nn.ReLU,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), activation()]
        if out_dim is not None:
            layers.append(nn.Linear(hidden_dim, out_dim))
        super().__init__(*layers)
