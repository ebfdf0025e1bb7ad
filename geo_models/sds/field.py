"""The NeRF optimised by GPS-guided score distillation ("GPS as a Control Signal for Image Generation", sec. 3.2 and
A.2.2: "We parameterize this 3D model as a NeRF h_theta(.) with parameters theta", following DreamFusion, Poole et
al. 2022, sec. 3.2 and appendix A).

The scene lives in a ball of radius ``bound`` centred at the origin; density is zero outside it. A point ``x`` is
encoded by a multi-resolution stack of dense 3-D feature grids (``num_levels`` levels, resolutions growing
geometrically from ``base_resolution`` to ``max_resolution``, ``features_per_level`` channels each, trilinear
interpolation with :func:`torch.nn.functional.grid_sample`, levels concatenated; a dense pure-PyTorch stand-in for
Instant-NGP's hash grid, which DreamFusion's open reimplementations use), then a small MLP gives a raw density and a
raw albedo:

    sigma(x) = act(raw(x) + density_shift + blob_density * exp(-|x|^2 / (2 blob_radius^2)))   for |x| <= bound
    albedo(x) = sigmoid(raw_albedo(x)) in [0, 1]^3

``act`` is softplus or exp. The Gaussian "density blob" at the centre is DreamFusion's initialisation (appendix A.2:
``tau_init(mu) = lambda_tau exp(-|mu|^2 / (2 sigma_tau^2))`` with ``lambda_tau = 5``, ``sigma_tau = 0.2``, the
defaults here): it makes a fresh field an opaque ball at the centre, so the first renders show an object rather than
fog. DreamFusion shades the albedo with normals ``n = -grad sigma / |grad sigma|`` (:meth:`NeRFField.normals`) and
models the background with a small MLP on the ray direction (:meth:`NeRFField.background`; a fixed colour is the
other option here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from geo_models.checks import MAX_INT, check_int, check_number, check_parameter_budget
from geo_models.encoders.networks import MLP, mlp_parameters
from geo_models.encoders.positional import NeRFPositionalEncoding

__all__ = ["DENSITY_ACTIVATIONS", "FIELD_BACKGROUNDS", "NeRFField", "check_points"]

DENSITY_ACTIVATIONS = ("softplus", "exp")
FIELD_BACKGROUNDS = ("mlp", "constant")
MAX_GRID_LEVELS = 16
MAX_GRID_RESOLUTION = 512  # per axis; 512^3 cells x 2 features = 1 GiB in float32
MAX_EXP_INPUT = 15.0  # exp activation: raw density clamped here (exp(15) ~ 3.3e6), so it never overflows
GRID_INIT_SCALE = 1e-4  # grid features start uniform in [-1e-4, 1e-4] (Instant-NGP's initialisation)


def check_points(points, name: str = "points") -> torch.Tensor:
    """A finite floating tensor of shape ``(N, 3)`` -> itself; anything else raises ``ValueError`` naming ``name``."""
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, 3), got {type(points).__name__}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return points


def grid_resolutions(num_levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Per-level grid resolutions growing geometrically from ``base_resolution`` to ``max_resolution`` (both
    included; one level: ``base_resolution``)."""
    if num_levels == 1:
        return [base_resolution]
    growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (num_levels - 1))
    sizes = [int(round(base_resolution * growth**level)) for level in range(num_levels)]
    sizes[-1] = max_resolution
    return sizes


class NeRFField(ModelMixin, ConfigMixin):
    r"""Density and albedo field of DreamFusion-style score distillation (paper sec. 3.2; DreamFusion sec. 3.2).

    Args:
        bound: radius of the ball holding the scene (world units); density is zero outside it.
        num_levels: number of feature-grid levels.
        base_resolution: grid resolution (cells per axis) of the coarsest level, >= 2.
        max_resolution: grid resolution of the finest level, in [base_resolution, 512].
        features_per_level: feature channels per level; the MLP sees ``num_levels * features_per_level`` inputs.
        hidden_dim: width of the MLP's hidden layers.
        num_layers: number of hidden ``Linear + SiLU`` layers of the MLP (SiLU keeps the density smooth, so its
            gradient, the normal, is continuous inside a grid cell's neighbourhood).
        density_activation: ``"softplus"`` or ``"exp"`` (raw density clamped at 15 first).
        density_shift: constant added to the raw density before the activation. A fresh field's raw density is
            about 0 away from the blob, i.e. a fog of density softplus(0) = 0.69 filling the ball; the default -1
            thins it to 0.31 (a ray 0.5 off-centre through a bound-1 ball sees ~40% opacity instead of ~70%, the
            centre ray ~90%), so that the first renders look like an object; 0 is DreamFusion's plain blob.
        blob_density: height ``lambda_tau`` of DreamFusion's Gaussian density blob (0 disables it).
        blob_radius: width ``sigma_tau`` of the blob, world units.
        background: ``"mlp"`` (a small MLP on the positional encoding of the unit ray direction -> sigmoid RGB, as
            DreamFusion) or ``"constant"`` (``background_color`` for every ray, not trained).
        background_color: RGB in [0, 1] of the constant background.
        background_hidden_dim: width of the background MLP's hidden layer.
        background_frequencies: frequencies of the background MLP's positional encoding of the direction.
        seed: seed of the parameter initialisation. An int initialises the parameters from
            ``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng`, so construction is reproducible and the
            caller's global RNG is left untouched; ``None`` draws them from the caller's global CPU RNG instead (seed
            it with ``torch.manual_seed`` for reproducibility).

    ``forward(points (N, 3))`` -> ``(density (N,), albedo (N, 3))`` in world coordinates; :meth:`normals` and
    :meth:`background` complete what :func:`geo_models.sds.render.render_rays` needs. Points are cast to the field's
    dtype and must be on its device. Saved and loaded with ``save_pretrained`` / ``from_pretrained`` (safetensors).
    """

    model_type = "nerf"  # geo_models.hub.load_model dispatches its config (by "_class_name") here

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' ``save_pretrained`` plus a ``README.md`` model card (``hub_cards/nerf.md``) when the folder has
        none (``train/sds_to_mesh.py`` writes the run's fuller card next to it)."""
        from pathlib import Path

        from geo_models.hub import render_model_card  # here: geo_models.hub imports the model registry

        card = Path(save_directory) / "README.md"
        if not card.exists():
            Path(save_directory).mkdir(parents=True, exist_ok=True)
            render_model_card(self.model_type, tags=["3d", "nerf"], bound=self.config.bound).save(card)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @register_to_config
    def __init__(
        self,
        bound: float = 1.0,
        num_levels: int = 6,
        base_resolution: int = 16,
        max_resolution: int = 128,
        features_per_level: int = 2,
        hidden_dim: int = 64,
        num_layers: int = 2,
        density_activation: str = "softplus",
        density_shift: float = -1.0,
        blob_density: float = 5.0,
        blob_radius: float = 0.2,
        background: str = "mlp",
        background_color: Sequence[float] = (1.0, 1.0, 1.0),
        background_hidden_dim: int = 32,
        background_frequencies: int = 4,
        seed: int | None = 0,
    ):
        super().__init__()
        bound = check_number(bound, "bound", 0.0, 1e6, low_open=True)
        num_levels = check_int(num_levels, "num_levels", 1, MAX_GRID_LEVELS)
        base_resolution = check_int(base_resolution, "base_resolution", 2, MAX_GRID_RESOLUTION)
        max_resolution = check_int(max_resolution, "max_resolution", base_resolution, MAX_GRID_RESOLUTION)
        features_per_level = check_int(features_per_level, "features_per_level", 1, 64)
        hidden_dim = check_int(hidden_dim, "hidden_dim", 1, 4096)
        num_layers = check_int(num_layers, "num_layers", 1, 16)
        if density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"density_activation must be one of {DENSITY_ACTIVATIONS}, got {density_activation!r}")
        density_shift = check_number(density_shift, "density_shift", -100.0, 100.0)
        blob_density = check_number(blob_density, "blob_density", 0.0, 100.0)
        blob_radius = check_number(blob_radius, "blob_radius", 0.0, 1e6, low_open=True)
        if background not in FIELD_BACKGROUNDS:
            raise ValueError(f"background must be one of {FIELD_BACKGROUNDS}, got {background!r}")
        background_color = self._check_color(background_color)
        background_hidden_dim = check_int(background_hidden_dim, "background_hidden_dim", 1, 4096)
        background_frequencies = check_int(background_frequencies, "background_frequencies", 1, 16)
        seed = None if seed is None else check_int(seed, "seed", 0, MAX_INT)
        self.register_to_config(  # normalised values (2.0 -> 2, tuples -> lists) so the saved config reloads as is
            bound=bound, num_levels=num_levels, base_resolution=base_resolution, max_resolution=max_resolution,
            features_per_level=features_per_level, hidden_dim=hidden_dim, num_layers=num_layers,
            density_shift=density_shift, blob_density=blob_density, blob_radius=blob_radius,
            background_color=background_color, background_hidden_dim=background_hidden_dim,
            background_frequencies=background_frequencies, seed=seed,
        )  # fmt: skip

        self.resolutions = grid_resolutions(num_levels, base_resolution, max_resolution)
        encoding_dim = num_levels * features_per_level
        direction_encoding = NeRFPositionalEncoding(3, background_frequencies, include_input=True)
        num_parameters = sum(features_per_level * r**3 for r in self.resolutions)
        num_parameters += mlp_parameters(encoding_dim, hidden_dim, 4, num_layers=num_layers)
        if background == "mlp":
            num_parameters += mlp_parameters(direction_encoding.output_dim, background_hidden_dim, 3, num_layers=1)
        check_parameter_budget(num_parameters, "num_levels, max_resolution, features_per_level", "NeRFField")

        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.grids = nn.ParameterList(
                nn.Parameter(torch.empty(1, features_per_level, r, r, r).uniform_(-GRID_INIT_SCALE, GRID_INIT_SCALE))
                for r in self.resolutions
            )
            self.mlp = MLP(encoding_dim, hidden_dim, 4, num_layers=num_layers, activation=nn.SiLU)
            if background == "mlp":
                self.direction_encoding = direction_encoding
                self.background_mlp = MLP(
                    direction_encoding.output_dim, background_hidden_dim, 3, num_layers=1, activation=nn.SiLU
                )
        self.register_buffer("background_rgb", torch.tensor(background_color), persistent=False)

    @staticmethod
    def _check_color(color) -> list[float]:
        message = f"background_color must be 3 numbers in [0, 1] (RGB), got {color!r}"
        if isinstance(color, torch.Tensor):
            color = color.tolist()
        if isinstance(color, str) or not isinstance(color, Sequence) or len(color) != 3:
            raise ValueError(message)
        try:
            return [check_number(c, "background_color", 0.0, 1.0) for c in color]
        except ValueError as err:
            raise ValueError(message) from err

    @property
    def bound(self) -> float:
        """Radius of the ball holding the scene."""
        return self.config.bound

    def _prepare(self, points, name: str = "points") -> torch.Tensor:
        points = check_points(points, name)
        device = self.grids[0].device
        if points.device != device:
            raise ValueError(f"{name} is on {points.device}, the field on {device}; move one of them (.to(device))")
        return points.to(self.grids[0].dtype)

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """Grid features of world points ``(N, 3)`` -> ``(N, num_levels * features_per_level)``.

        Coordinates are divided by ``bound`` and clamped to the cube [-1, 1]^3 (points outside the ball get the
        features of the cube's surface; their density is zeroed by :meth:`forward` anyway). ``grid_sample`` reads its
        last coordinate axis as (x -> width, y -> height, z -> depth), so grid ``[.., k, j, i]`` holds ``(x_i, y_j,
        z_k)``; corners are aligned with the cube's corners.
        """
        coords = (points / self.config.bound).clamp(-1.0, 1.0).view(1, 1, 1, -1, 3)
        features = [
            F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=True).view(
                grid.shape[1], -1
            )
            for grid in self.grids
        ]
        return torch.cat(features, dim=0).t()

    def blob(self, points: torch.Tensor) -> torch.Tensor:
        """DreamFusion's density blob ``blob_density * exp(-|x|^2 / (2 blob_radius^2))`` at world points -> (N,)."""
        squared = points.pow(2).sum(dim=-1)
        return self.config.blob_density * torch.exp(-squared / (2 * self.config.blob_radius**2))

    def _activate(self, raw: torch.Tensor) -> torch.Tensor:
        if self.config.density_activation == "exp":
            return torch.exp(raw.clamp(max=MAX_EXP_INPUT))
        return F.softplus(raw)

    def _evaluate(self, points: torch.Tensor, *, with_albedo: bool = True):
        """Unchecked forward on prepared points -> ``(density, albedo or None)``."""
        out = self.mlp(self.encode(points))
        raw = out[:, 0] + self.config.density_shift + self.blob(points)
        inside = points.pow(2).sum(dim=-1) <= self.config.bound**2
        density = torch.where(inside, self._activate(raw), torch.zeros_like(raw))
        return density, (torch.sigmoid(out[:, 1:]) if with_albedo else None)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and albedo at world points.

        Args:
            points: ``(N, 3)`` finite world coordinates, on the field's device.

        Returns:
            ``(density (N,), albedo (N, 3))``: density >= 0 (exactly 0 where ``|x| > bound``), albedo in [0, 1].

        Raises:
            ValueError: ``points`` is not a finite ``(N, 3)`` floating tensor on the field's device.
        """
        return self._evaluate(self._prepare(points))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density only (skips the albedo head's activation): ``points (N, 3)`` -> ``(N,)``, see :meth:`forward`."""
        return self._evaluate(self._prepare(points), with_albedo=False)[0]

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """DreamFusion's normals ``n = -grad sigma / |grad sigma|`` at world points, by autograd.

        Gradients are enabled locally, so this works for callers under ``torch.no_grad()`` (the result is then
        detached). With gradients enabled, the result keeps its graph (``create_graph=True``): losses on shaded
        renders or on the normals reach the field's parameters, as DreamFusion's Lambertian shading needs.

        Args:
            points: ``(N, 3)`` finite world coordinates, on the field's device.

        Returns:
            ``(N, 3)`` unit normals pointing away from denser space; zero vectors where the density gradient vanishes
            (e.g. outside the bound).

        Raises:
            ValueError: ``points`` is not a finite ``(N, 3)`` floating tensor on the field's device.
        """
        points = self._prepare(points)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x = points if points.requires_grad else points.detach().requires_grad_(True)
            density = self._evaluate(x, with_albedo=False)[0]
            (grad,) = torch.autograd.grad(density.sum(), x, create_graph=create_graph, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        normals = F.normalize(-grad, dim=-1, eps=1e-20)
        return normals if create_graph else normals.detach()

    def background(self, directions: torch.Tensor) -> torch.Tensor:
        """Background colour seen along ray directions (DreamFusion: an MLP on the direction; or a fixed colour).

        Args:
            directions: ``(N, 3)`` finite, non-zero ray directions (normalised here), on the field's device.

        Returns:
            ``(N, 3)`` RGB in [0, 1].

        Raises:
            ValueError: ``directions`` is not a finite ``(N, 3)`` floating tensor of non-zero rows on the field's
                device.
        """
        directions = self._prepare(directions, "directions")
        if self.config.background == "constant":
            return self.background_rgb.to(directions.dtype).expand(directions.shape[0], 3)
        norms = directions.norm(dim=-1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("directions must be non-zero vectors")
        return torch.sigmoid(self.background_mlp(self.direction_encoding(directions / norms)))
