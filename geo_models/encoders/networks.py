"""Small networks that follow a positional encoding."""

from __future__ import annotations

from torch import nn

from geo_models.checks import check_int, check_parameter_budget, linear_parameters


def mlp_parameters(in_dim: int, hidden_dim: int, out_dim: int | None = None, *, num_layers: int = 2) -> int:
    """Parameter count of :class:`MLP` with these sizes (checked ints), computed without building it."""
    count = linear_parameters(in_dim, hidden_dim) + (num_layers - 1) * linear_parameters(hidden_dim, hidden_dim)
    return count + (linear_parameters(hidden_dim, out_dim) if out_dim is not None else 0)


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
        in_dim, hidden_dim = check_int(in_dim, "in_dim"), check_int(hidden_dim, "hidden_dim")
        out_dim = None if out_dim is None else check_int(out_dim, "out_dim")
        num_layers = check_int(num_layers, "num_layers")
        check_parameter_budget(
            mlp_parameters(in_dim, hidden_dim, out_dim, num_layers=num_layers), "hidden_dim, num_layers", "MLP"
        )
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), activation()]
        if out_dim is not None:
            layers.append(nn.Linear(hidden_dim, out_dim))
        super().__init__(*layers)
