"""GPS and angle conditioning of GPS-to-image diffusion (paper sec. 3.1-3.2, 4.1, A.2.1).

Both embedders turn coordinates into a few tokens of the text encoder's width, appended to the text tokens along the
sequence axis (the UNet's cross-attention takes any number of tokens, so no UNet change is needed).

Note: ``ModelMixin`` must stay importable from this module: ``DiffusionPipeline.from_pretrained`` resolves the
``gps_embedder`` entry of ``model_index.json`` of folders saved before :mod:`geo_models.generation.standalone`
(``["geo_models.generation.conditioning", "GPSEmbedder"]``) by importing this module and looking up its loadable base
classes in it. Newer folders name it ``["geo_models_conditioning", "GPSEmbedder"]``, which resolves to this module
too once ``geo_models.generation`` is imported (and to the generated copy of it without geo_models). Keep this
module's imports from geo_models as ``from geo_models... import name``: the standalone copy is generated from them.
"""

from __future__ import annotations

import warnings

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from geo_models.checks import check_int, check_number, check_parameter_budget, linear_parameters
from geo_models.encoders.networks import MLP
from geo_models.encoders.positional import MAX_FREQUENCIES, NeRFPositionalEncoding
from geo_models.sphere import GeoArea, azimuth_around, check_latlon

__all__ = ["AngleEmbedder", "GPSEmbedder", "ModelMixin"]


def _area_contains(area: GeoArea, latitude, longitude) -> torch.Tensor:
    """``area.contains`` for ``latitude`` and ``longitude`` given apart (numbers, arrays or tensors, broadcast
    together) -> bool tensor of their broadcast shape; tensors keep their precision, anything else is float64.
    Shared by ``GPSEmbedder.contains`` and ``GPSCLIP.contains``."""
    parts = []
    for value, name in ((latitude, "latitude"), (longitude, "longitude")):
        try:
            parts.append(value if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}") from err
    dtype = torch.promote_types(parts[0].dtype, parts[1].dtype)
    dtype = dtype if dtype.is_floating_point else torch.float64
    lat, lon = torch.broadcast_tensors(parts[0].to(dtype), parts[1].to(device=parts[0].device, dtype=dtype))
    latlon = torch.stack([lat, lon], dim=-1).reshape(-1, 2)
    return area.contains(latlon, "(latitude, longitude)").reshape(lat.shape)


def _check_sizes(hidden_size, num_frequencies, mlp_hidden_dim) -> tuple[int, int, int]:
    """Whole-number checks of an embedder's sizes -> ``(hidden_size, num_frequencies, mlp hidden width)``."""
    hidden_size = check_int(hidden_size, "hidden_size")
    num_frequencies = check_int(num_frequencies, "num_frequencies", 1, MAX_FREQUENCIES)
    hidden = hidden_size if mlp_hidden_dim is None else check_int(mlp_hidden_dim, "mlp_hidden_dim")
    return hidden_size, num_frequencies, hidden


def _two_layer_mlp_parameters(in_dim: int, hidden_dim: int, out_dim: int) -> int:
    return linear_parameters(in_dim, hidden_dim) + linear_parameters(hidden_dim, out_dim)


def _two_layer_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> MLP:
    """``Linear -> SiLU -> Linear``: the paper's "two-layer MLP" (sec. 4.1)."""
    return MLP(in_dim, hidden_dim, out_dim, num_layers=1, activation=nn.SiLU)


class GPSEmbedder(ModelMixin, ConfigMixin):
    r"""GPS embedding ``g = [f(x), f(y)] \in R^{2 x D}`` of sec. 3.1 (x = longitude, y = latitude), appended to the
    CLIP text tokens ``p \in R^{L x D}`` to form the condition of eq. 3 and eq. 4.

    Each coordinate is normalised to [-1, 1] over the training area (sec. 4.1: "for each city, we normalize (x, y)
    to the range [-1, 1]"), encoded by a NeRF positional encoding with ``num_frequencies`` (10) frequencies and mapped
    by a two-layer MLP to one token of width ``hidden_size``. Longitude and latitude get separate MLPs: the UNet's
    cross-attention is permutation-invariant over tokens, so a single shared ``f`` would make ``(lat, lon)`` and
    ``(lon, lat)`` the same condition.

    Args:
        hidden_size: token width ``D``, the text encoder's hidden size (768 for SD 1.x, 1024 for SD 2.x).
        lat_range: ``(min, max)`` latitude of the training area, degrees; mapped to [-1, 1].
        lon_range: ``(min, max)`` longitude of the training area, degrees; mapped to [-1, 1].
        num_frequencies: frequencies ``2^k pi``, ``k < num_frequencies``, of the positional encoding.
        include_input: also feed the normalised coordinate itself to the MLP. The lowest frequency (``pi``) has period
            2, so without it the two edges of the area (-1 and 1) would get the same encoding.
        mlp_hidden_dim: hidden width of the MLPs (default: ``hidden_size``).

    Input ``latlon (N, 2)`` degrees, latitude first; output ``(N, 2, hidden_size)`` = ``[f(lon), f(lat)]``.
    NaN / infinite values or coordinates outside [-90, 90] x [-180, 180] raise ``ValueError``; valid coordinates
    outside the training area only warn (the embedding extrapolates beyond [-1, 1]). :attr:`area` is the training
    area as a :class:`~geo_models.sphere.GeoArea`; :meth:`contains` tells whether points lie in it.
    """

    @register_to_config
    def __init__(
        self,
        hidden_size: int = 768,
        lat_range: tuple[float, float] = (-90.0, 90.0),
        lon_range: tuple[float, float] = (-180.0, 180.0),
        num_frequencies: int = 10,
        include_input: bool = True,
        mlp_hidden_dim: int | None = None,
    ):
        super().__init__()
        hidden_size, num_frequencies, hidden = _check_sizes(hidden_size, num_frequencies, mlp_hidden_dim)
        self.register_to_config(hidden_size=hidden_size, num_frequencies=num_frequencies)  # 768.0 -> 768
        pe_dim = 2 * num_frequencies + bool(include_input)
        check_parameter_budget(
            2 * _two_layer_mlp_parameters(pe_dim, hidden, hidden_size), "hidden_size, mlp_hidden_dim", "GPSEmbedder"
        )
        self._area = GeoArea(lat_range, lon_range)  # ValueError naming lat_range / lon_range
        self.lat_range, self.lon_range = self._area.lat_range, self._area.lon_range
        self.positional_encoding = NeRFPositionalEncoding(1, num_frequencies, include_input=include_input)
        self.lon_mlp = _two_layer_mlp(self.positional_encoding.output_dim, hidden, hidden_size)
        self.lat_mlp = _two_layer_mlp(self.positional_encoding.output_dim, hidden, hidden_size)

    @property
    def num_tokens(self) -> int:
        return 2

    @property
    def area(self) -> GeoArea:
        """The training area (``lat_range`` x ``lon_range`` of the config), mapped to [-1, 1] x [-1, 1]."""
        return self._area

    def contains(self, latitude, longitude) -> torch.Tensor:
        """Whether ``(latitude, longitude)`` degrees (numbers, arrays or tensors, broadcast together) lie in the
        training area, edges included -> bool tensor of their broadcast shape (0-d for two numbers). Tensors are
        compared in their precision, anything else in float64. NaN or coordinates beyond [-90, 90] x [-180, 180]
        raise ``ValueError``."""
        return _area_contains(self.area, latitude, longitude)

    def normalize(self, latlon, name: str = "latlon") -> torch.Tensor:
        """``latlon (..., 2)`` degrees -> ``(..., 2)`` normalised ``[lat, lon]``, in [-1, 1] inside the area."""
        t = check_latlon(latlon, name)
        lo = t.new_tensor([self.lat_range[0], self.lon_range[0]])
        hi = t.new_tensor([self.lat_range[1], self.lon_range[1]])
        out = 2 * (t - lo) / (hi - lo) - 1
        if out.numel() and out.abs().max() > 1 + 1e-6:
            warnings.warn(
                f"{name}: some coordinates lie outside the training area (lat {self.lat_range}, lon "
                f"{self.lon_range}); the GPS embedding extrapolates there",
                UserWarning,
                stacklevel=2,
            )
        return out

    def forward(self, latlon) -> torch.Tensor:
        """``latlon (N, 2)`` degrees, latitude first -> tokens ``(N, 2, hidden_size)`` = ``[f(lon), f(lat)]``."""
        v = self.normalize(latlon).to(device=self.device, dtype=self.dtype)
        lat_pe = self.positional_encoding(v[..., 0:1])
        lon_pe = self.positional_encoding(v[..., 1:2])
        return torch.stack([self.lon_mlp(lon_pe), self.lat_mlp(lat_pe)], dim=-2)


class AngleEmbedder(ModelMixin, ConfigMixin):
    r"""Angle embedding ``g' = f'(\alpha) \in R^{1 x D}`` of the angle-to-image diffusion (sec. 3.2, 4.1, A.2.1).

    ``\alpha`` is the azimuth of the camera's GPS position seen from the landmark centre ``(x_c, y_c)`` (sec. 3.2,
    ``\alpha = arctan((y - y_c) / (x - x_c))``; computed here as the great-circle bearing centre -> camera, degrees
    clockwise from north, with :func:`geo_models.sphere.azimuth_around`), mapped to the nearest ``bin_deg`` (10)
    degree bin, normalised to [-1, 1] (``bin / 180 - 1``), encoded by a NeRF positional encoding with 10 frequencies
    and a two-layer MLP. With the input itself left out (the default) the encoding is periodic in the angle: 0 and
    360 degrees get the same code.

    Args:
        hidden_size: token width ``D`` (the text encoder's hidden size).
        centre_latlon: ``(lat, lon)`` of the landmark centre, degrees.
        bin_deg: angle bin width in degrees (360 must be a multiple of it).
        num_tokens: tokens per angle (1 as in the paper, or 2).
        num_frequencies: frequencies of the positional encoding.
        include_input: also feed the normalised angle to the MLP (breaks the periodicity).
        mlp_hidden_dim: hidden width of the MLP (default: ``hidden_size``).

    ``forward(azimuth_deg (N,))`` -> ``(N, num_tokens, hidden_size)``; ``embed_latlon(camera_latlon (N, 2))`` does
    the azimuth first.
    """

    @register_to_config
    def __init__(
        self,
        hidden_size: int = 768,
        centre_latlon: tuple[float, float] = (0.0, 0.0),
        bin_deg: float = 10.0,
        num_tokens: int = 1,
        num_frequencies: int = 10,
        include_input: bool = False,
        mlp_hidden_dim: int | None = None,
    ):
        super().__init__()
        hidden_size, num_frequencies, hidden = _check_sizes(hidden_size, num_frequencies, mlp_hidden_dim)
        self.register_to_config(hidden_size=hidden_size, num_frequencies=num_frequencies)  # 768.0 -> 768
        if isinstance(num_tokens, bool) or num_tokens not in (1, 2):
            raise ValueError(f"num_tokens must be 1 or 2, got {num_tokens}")
        bin_deg = check_number(bin_deg, "bin_deg", 0.0, 360.0, low_open=True)
        if abs(360.0 / bin_deg - round(360.0 / bin_deg)) > 1e-9:
            raise ValueError(f"bin_deg must be > 0 and divide 360, got {bin_deg}")
        pe_dim = 2 * num_frequencies + bool(include_input)
        check_parameter_budget(
            _two_layer_mlp_parameters(pe_dim, hidden, int(num_tokens) * hidden_size),
            "hidden_size, mlp_hidden_dim",
            "AngleEmbedder",
        )
        try:
            centre = torch.tensor(centre_latlon, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"centre_latlon must be (lat, lon) in degrees, got {centre_latlon!r}") from err
        self.centre = check_latlon(centre, "centre_latlon")
        self.positional_encoding = NeRFPositionalEncoding(1, num_frequencies, include_input=include_input)
        self.mlp = _two_layer_mlp(self.positional_encoding.output_dim, hidden, num_tokens * hidden_size)

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    def azimuth(self, camera_latlon, name: str = "camera_latlon") -> torch.Tensor:
        """Camera positions ``(..., 2)`` degrees -> azimuth around the landmark centre ``(...)``, degrees [0, 360)."""
        t = check_latlon(camera_latlon, name)
        return azimuth_around(t.double(), self.centre.to(t.device)).to(t.dtype)

    def normalize(self, azimuth_deg, name: str = "azimuth") -> torch.Tensor:
        """Azimuth ``(...)`` degrees -> nearest bin, normalised to [-1, 1): ``(...)``."""
        a = torch.as_tensor(azimuth_deg, dtype=torch.float32) if not torch.is_tensor(azimuth_deg) else azimuth_deg
        if not a.is_floating_point():
            a = a.float()
        if not torch.isfinite(a).all():
            raise ValueError(f"{name} must be finite (no NaN or inf)")
        bin_deg = self.config.bin_deg
        binned = torch.remainder(torch.round(torch.remainder(a, 360.0) / bin_deg) * bin_deg, 360.0)
        return binned / 180.0 - 1.0

    def forward(self, azimuth_deg) -> torch.Tensor:
        """``azimuth_deg (N,)`` degrees -> tokens ``(N, num_tokens, hidden_size)``."""
        v = self.normalize(azimuth_deg).to(device=self.device, dtype=self.dtype)
        out = self.mlp(self.positional_encoding(v.unsqueeze(-1)))
        return out.unflatten(-1, (self.config.num_tokens, self.config.hidden_size))

    def embed_latlon(self, camera_latlon) -> torch.Tensor:
        """Camera GPS ``(N, 2)`` degrees -> tokens ``(N, num_tokens, hidden_size)``."""
        return self(self.azimuth(camera_latlon))
