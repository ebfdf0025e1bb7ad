"""SphereFlowPipeline: probabilistic image geolocation by flow matching on the sphere (arXiv 2412.06781).

A :class:`~geo_models.flow.modeling.GeoAdaLNMLP` denoiser, one of the three objectives
(:mod:`geo_models.flow.objectives`), the sigmoid schedule, and optionally a frozen open_clip backbone. It samples
locations (:meth:`~SphereFlowPipeline.sample`), scores them with the exact density
(:meth:`~SphereFlowPipeline.log_prob`), maps densities (:meth:`~SphereFlowPipeline.density_grid`), measures
localizability and geolocates (:meth:`~SphereFlowPipeline.predict`).

Saved layout (diffusers-like): ``network/`` (``GeoAdaLNMLP``, ``ModelMixin``), ``config.json`` with
``model_type: "sphere_flow"``, the objective, the schedule and the optional image backbone (open_clip name and tag;
its weights in ``backbone/open_clip_model.safetensors`` only when fine-tuned or loaded from a local file, as LocDiff
and GeoCLIP do), and a ``README.md`` card. PLONK's published checkpoints (``config.json`` + ``model.safetensors``)
load with :meth:`SphereFlowPipeline.from_pretrained` too (or :meth:`~SphereFlowPipeline.from_plonk`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from geo_models.checks import MAX_SAMPLES, check_generator, check_int, check_number
from geo_models.encoders.image import (
    ImageBackboneMixin,
    OpenCLIPBackbone,
    backbone_config,
    load_backbone,
    save_backbone,
)
from geo_models.flow.estimates import DensityGrid, density_grid_points, density_mode, localizability_from_log_probs
from geo_models.flow.likelihood import LikelihoodOutput, exact_log_prob
from geo_models.flow.modeling import PLONK_CONFIG_KEYS, GeoAdaLNMLP
from geo_models.flow.objectives import as_xyz, flow_loss, get_objective
from geo_models.flow.sampling import check_sampling_args, sample_xyz
from geo_models.flow.schedules import SigmoidSchedule
from geo_models.hub import push_folder, render_model_card
from geo_models.outputs import GeoPrediction, check_embeddings
from geo_models.sphere import xyz_to_latlon

__all__ = ["POINT_ESTIMATES", "SphereFlowPipeline"]

POINT_ESTIMATES = ("sample", "best_of_n", "mode")


class SphereFlowPipeline(ImageBackboneMixin):
    """Probabilistic geolocator: samples, exact densities, density maps and point estimates.

    Args:
        network: the denoiser; ``network.config.cond_dim`` is the image-embedding width.
        objective: ``"riemannian"`` (flow matching on S², the paper's best), ``"flow_r3"`` or ``"diffusion_r3"``.
        schedule: a :class:`SigmoidSchedule` or its keyword arguments (default PLONK's ``start=-7, end=3``).
        backbone: optional :class:`~geo_models.encoders.image.OpenCLIPBackbone` (frozen by default) whose
            ``encode_image`` features are the condition (``output_dim == cond_dim``), so ``images=`` work; without
            one, pass ``image_embeddings``.
        backbone_finetuned: the backbone's weights were trained and are saved with the pipeline (see
            :meth:`mark_backbone_finetuned`).
        cond_drop_prob: probability of the null condition in :meth:`loss` (classifier-free guidance; paper: 0.1).

    Example:
        >>> from geo_models.testing import tiny_sphere_flow_pipeline
        >>> pipe = tiny_sphere_flow_pipeline()
        >>> pred = pipe.predict(image_embeddings=torch.randn(2, 16), num_samples=4, num_inference_steps=4)
        >>> pred.latlon.shape, pred.candidates.shape, pred.scores.shape
        (torch.Size([2, 2]), torch.Size([2, 4, 2]), torch.Size([2, 4]))
    """

    model_type = "sphere_flow"

    def __init__(
        self,
        network: GeoAdaLNMLP,
        *,
        objective: str = "riemannian",
        schedule: SigmoidSchedule | dict[str, float] | None = None,
        backbone: OpenCLIPBackbone | None = None,
        backbone_finetuned: bool = False,
        cond_drop_prob: float = 0.1,
    ):
        self.objective = get_objective(objective)
        if network.config.input_dim != 3:
            raise ValueError(f"network: input_dim must be 3 (points in R^3), got {network.config.input_dim}")
        self.schedule = schedule if isinstance(schedule, SigmoidSchedule) else SigmoidSchedule(**(schedule or {}))
        if backbone is not None and backbone.output_dim != network.config.cond_dim:
            raise ValueError(
                f"backbone: {backbone.model_name!r} gives {backbone.output_dim}-d features but network.cond_dim is "
                f"{network.config.cond_dim}"
            )
        if not 0 <= float(cond_drop_prob) <= 1:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {cond_drop_prob}")
        self.network, self.cond_drop_prob = network.eval(), float(cond_drop_prob)
        self.backbone = backbone.eval() if backbone is not None else None
        self.backbone_finetuned = bool(backbone_finetuned)

    # ------------------------------------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def embedding_dim(self) -> int:
        return self.network.config.cond_dim

    def to(self, device) -> SphereFlowPipeline:
        self.network.to(device)
        if self.backbone is not None:
            self.backbone.to(device)
        return self

    def check_embeddings(self, image_embeddings: Any, name: str = "image_embeddings") -> torch.Tensor:
        """Validate backbone features ``(N >= 1, cond_dim)`` -> float32 tensor on the pipeline's device."""
        return check_embeddings(image_embeddings, self.embedding_dim, name).to(self.device, torch.float32)

    def _features(self, images: Any, image_embeddings: Any, batch_size: int = 64) -> torch.Tensor:
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images or image_embeddings (N, cond_dim)")
        if images is not None:
            return self.check_embeddings(self.embed_images(images, batch_size=batch_size))
        return self.check_embeddings(image_embeddings)

    def loss(self, x0: Any, image_embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss of the objective on ``x0`` (``(B, 2)`` latlon degrees or ``(B, 3)`` unit vectors) and
        ``image_embeddings (B, cond_dim)``; see :func:`~geo_models.flow.objectives.flow_loss`."""
        feats = check_embeddings(image_embeddings, self.embedding_dim, "image_embeddings").to(self.device)
        check_generator(generator)
        return flow_loss(
            self.network, self.objective, self.schedule, x0, feats, generator, cond_drop_prob=self.cond_drop_prob
        )

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        images: Any = None,
        image_embeddings: Any = None,
        *,
        num_samples: int = 16,
        num_inference_steps: int = 32,
        guidance_scale: float = 2.0,
        sampler: str = "euler",
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
    ) -> torch.Tensor:
        """``num_samples`` locations per image -> ``(N, S, 2)`` latlon degrees (see
        :func:`~geo_models.flow.sampling.sample_xyz`; ``guidance_scale`` is PLONK's ``cfg``, 0 = none)."""
        feats = self._features(images, image_embeddings)
        return xyz_to_latlon(self._sample_xyz(feats, num_samples, num_inference_steps, guidance_scale, sampler,
                                              generator, batch_size))  # fmt: skip

    def _sample_xyz(self, feats, num_samples, steps, guidance_scale, sampler, generator, batch_size) -> torch.Tensor:
        num_samples = check_int(num_samples, "num_samples", 1, MAX_SAMPLES)
        batch_size = check_int(batch_size, "batch_size")
        check_sampling_args(self.objective, steps, guidance_scale, sampler)
        check_generator(generator)
        # rows image-major (image i, sample j) -> row i * S + j, gathered per chunk: never all N * S rows at once
        total = len(feats) * num_samples
        out = [
            sample_xyz(self.network, self.objective, self.schedule,
                       feats[torch.arange(s, min(s + batch_size, total), device=feats.device) // num_samples],
                       num_inference_steps=steps, guidance_scale=guidance_scale, sampler=sampler, generator=generator)
            for s in range(0, total, batch_size)
        ]  # fmt: skip
        return torch.cat(out).float().cpu().view(len(feats), num_samples, 3)

    # ------------------------------------------------------------------------------------------------ densities
    def likelihood(
        self,
        latlon: Any,
        image_embeddings: Any = None,
        *,
        images: Any = None,
        guidance_scale: float = 0.0,
        convention: str = "sphere",
        atol: float = 1e-6,
        rtol: float = 1e-6,
        method: str = "dopri5",
        radial_nodes: int = 4,
        batch_size: int = 4096,
        dtype: torch.dtype | None = None,
        num_steps: int = 256,
    ) -> LikelihoodOutput:
        """Exact log-likelihood (:func:`~geo_models.flow.likelihood.exact_log_prob`) of ``latlon`` (``(N, 2)`` or
        ``(N, K, 2)`` degrees, or unit vectors ``(N, [K,] 3)``) for N images; a single image's features ``(1, C)``
        broadcast to all rows. ``log_prob`` (nats w.r.t. area on the unit sphere for ``convention="sphere"``) and
        ``bits_per_dim`` have the leading shape of ``latlon``. ``batch_size`` bounds the ODE rows solved together
        (the solver's error norm is per solve, so results depend on it at the level of the tolerance).
        ``method="gamma_trapezoid"`` replaces the adaptive solver by ``num_steps`` fixed steps uniform in ``gamma``:
        ~4x fewer network evaluations than dopri5 at 1e-6 on PLONK's YFCC-size network with random weights, but poor
        on trained models (see :func:`~geo_models.flow.likelihood.exact_log_prob`)."""
        feats = self._features(images, image_embeddings)
        try:
            pts = torch.as_tensor(latlon) if not isinstance(latlon, torch.Tensor) else latlon
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"latlon must be a numeric (N, 2) tensor or array, got {type(latlon).__name__}") from err
        if pts.ndim not in (2, 3) or pts.shape[-1] not in (2, 3):
            raise ValueError(
                f"latlon must have shape (N, 2), (N, K, 2) or unit vectors (N, [K,] 3), got {tuple(pts.shape)}"
            )
        lead = pts.shape[:-1]
        xyz = as_xyz(pts.reshape(-1, pts.shape[-1]), "latlon")
        if len(feats) == 1:
            feats = feats.expand(lead[0], -1)
        if len(feats) != lead[0]:
            raise ValueError(f"image_embeddings: {len(feats)} images for {lead[0]} rows of latlon")
        if pts.ndim == 3:
            feats = feats.repeat_interleave(lead[1], dim=0)
        out = exact_log_prob(
            self.network, self.objective, self.schedule, xyz, feats, guidance_scale=guidance_scale,
            convention=convention, method=method, atol=atol, rtol=rtol, radial_nodes=radial_nodes,
            batch_size=batch_size, dtype=dtype, num_steps=num_steps,
        )  # fmt: skip
        real = torch.float64 if dtype == torch.float64 else torch.float32
        return LikelihoodOutput(
            log_prob=out.log_prob.to("cpu", real).view(lead),
            bits_per_dim=out.bits_per_dim.to("cpu", real).view(lead),
            nfe=out.nfe,
            base=out.base.to("cpu", real).view(*lead, 3),
        )

    def log_prob(self, latlon: Any, image_embeddings: Any = None, **kwargs) -> torch.Tensor:
        """Log-density in nats of ``latlon`` given the images: :meth:`likelihood` ``.log_prob`` (same arguments)."""
        return self.likelihood(latlon, image_embeddings, **kwargs).log_prob

    def density_grid(
        self, images: Any = None, image_embeddings: Any = None, *, resolution_deg: float = 2.0, **kwargs
    ) -> DensityGrid:
        """Log-density on a lat/lon grid of cell centres (``resolution_deg`` in [0.25, 90], dividing 180) for each
        image -> :class:`DensityGrid` with ``log_density (N, H, W)`` (``kwargs`` go to :meth:`likelihood`, e.g.
        ``atol``)."""
        lats, lons, pts = density_grid_points(resolution_deg)
        feats = self._features(images, image_embeddings)
        logp = self.log_prob(pts.expand(len(feats), -1, -1), image_embeddings=feats, **kwargs)
        return DensityGrid(latitudes=lats, longitudes=lons, log_density=logp.view(len(feats), len(lats), len(lons)))

    @torch.no_grad()
    def localizability(
        self,
        images: Any = None,
        image_embeddings: Any = None,
        *,
        num_samples: int = 1024,
        num_inference_steps: int = 250,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """PLONK's localizability per image ``(N,)``: ``mean_i log p(x_i) / (4 pi ln 2)`` over ``num_samples``
        unguided samples ``x_i`` of the model (importance sampling of ``E_p[log p]``, the negative entropy in nats;
        defaults as PLONK's ``compute_localizability``: 1024 samples, 250 Euler steps, tolerances 1e-6)."""
        feats = self._features(images, image_embeddings)
        samples = self._sample_xyz(feats, num_samples, num_inference_steps, 0.0, "euler", generator, 4096)
        return localizability_from_log_probs(self.log_prob(samples, image_embeddings=feats, **kwargs))

    # ------------------------------------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(
        self,
        images: Any = None,
        image_embeddings: Any = None,
        *,
        num_samples: int = 16,
        num_inference_steps: int = 32,
        guidance_scale: float = 2.0,
        sampler: str = "euler",
        point_estimate: str = "best_of_n",
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
        atol: float = 1e-5,
        rtol: float = 1e-5,
    ) -> GeoPrediction:
        """Geolocate images: sample locations, score them by exact log-density, pick a point estimate.

        Args:
            images: PIL images, image paths or a preprocessed tensor (needs a backbone), or
            image_embeddings: ``(N, cond_dim)`` backbone features.
            num_samples: locations drawn per image ``S``, in [1, 10000].
            num_inference_steps, guidance_scale, sampler: see :meth:`sample` (PLONK's demo: 32 steps, cfg 2 for
                its point estimate).
            point_estimate: ``"sample"`` (the first guided sample), ``"best_of_n"`` (the sample of highest density,
                the paper's best-of-N by likelihood) or ``"mode"`` (the density mode, refined from the best sample
                by three rounds of 64-point caps; :func:`~geo_models.flow.estimates.density_mode`).
            top_k: candidates kept per image (``<= num_samples``; default all).
            generator: CPU generator of the starting noise (same generator and ``batch_size`` -> same output).
            batch_size: rows (image x sample) sampled together, ODE rows per likelihood solve, and images embedded
                together.
            atol, rtol: tolerances of the likelihood ODE for the scores.

        Returns:
            GeoPrediction: ``latlon (N, 2)``; ``candidates (N, K, 2)`` the samples sorted by ``scores (N, K)``, their
            log-density in nats (w.r.t. area on the unit sphere, under the unguided model: the calibrated density);
            ``extras["samples"] (N, S, 2)`` unsorted and ``extras["log_prob"] (N, S)``.
        """
        # 1. Check inputs (all before any sampling: a bad late argument must not cost a sampling run)
        if point_estimate not in POINT_ESTIMATES:
            raise ValueError(f"point_estimate must be one of {POINT_ESTIMATES}, got {point_estimate!r}")
        num_samples = check_int(num_samples, "num_samples", 1, MAX_SAMPLES)
        k = num_samples if top_k is None else top_k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_samples:
            raise ValueError(f"top_k must be an integer in [1, num_samples={num_samples}], got {top_k!r}")
        batch_size = check_int(batch_size, "batch_size")
        check_sampling_args(self.objective, num_inference_steps, guidance_scale, sampler)
        check_generator(generator)
        atol = check_number(atol, "atol", 0.0, low_open=True)
        rtol = check_number(rtol, "rtol", 0.0, low_open=True)
        feats = self._features(images, image_embeddings, batch_size)
        # 2. Samples, (N, S, 3)
        xyz = self._sample_xyz(feats, num_samples, num_inference_steps, guidance_scale, sampler, generator, batch_size)
        # 3. Scores: exact log-density of every sample
        tol = dict(atol=atol, rtol=rtol, batch_size=batch_size)
        logp = self.log_prob(xyz, image_embeddings=feats, **tol)
        # 4. Point estimate
        samples = xyz_to_latlon(xyz)
        best = logp.argmax(dim=1)
        if point_estimate == "sample":
            latlon = samples[:, 0]
        elif point_estimate == "best_of_n":
            latlon = samples[torch.arange(len(samples)), best]
        else:
            start = xyz[torch.arange(len(xyz)), best]
            latlon = density_mode(lambda p: self.log_prob(p, image_embeddings=feats, **tol), start, xyz,
                                  logp.gather(1, best[:, None])[:, 0])  # fmt: skip
        # 5. Candidates sorted by log-density
        order = torch.sort(logp, dim=1, descending=True, stable=True).indices[:, :k]
        return GeoPrediction(
            latlon=latlon,
            candidates=samples.gather(1, order[..., None].expand(-1, -1, 2)),
            scores=logp.gather(1, order),
            extras={"samples": samples, "log_prob": logp},
        )

    __call__ = predict

    # ------------------------------------------------------------------------------------------------ hub
    def config_dict(self) -> dict[str, Any]:
        backbone = None
        if self.backbone is not None:
            backbone = backbone_config(self.backbone, finetuned=self.backbone_finetuned)
        return {
            "model_type": self.model_type,
            "_class_name": type(self).__name__,
            "objective": self.objective.name,
            "schedule": self.schedule.config(),
            "cond_drop_prob": self.cond_drop_prob,
            "backbone": backbone,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card_kwargs: dict | None = None) -> Path:
        """Write ``network/`` (safetensors), ``config.json``, a ``README.md`` card (and the backbone's weights when
        its open_clip tag cannot rebuild them)."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.network.save_pretrained(path / "network")
        if self.backbone is not None:
            save_backbone(self.backbone, path / "backbone", finetuned=self.backbone_finetuned)
        (path / "config.json").write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        kwargs = {"tags": ["diffusers"], "pipeline_tag": None, **(model_card_kwargs or {})}
        network_config = {k: v for k, v in self.network.config.items() if not k.startswith("_")}
        backbone = self.config_dict()["backbone"]
        kwargs.setdefault("config", {"objective": self.objective.name, **network_config, "backbone": backbone})
        render_model_card(self.model_type, **kwargs).save(path / "README.md")
        return path

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, revision: str | None = None, map_location: str = "cpu", **kwargs
    ) -> SphereFlowPipeline:
        """Load from a local folder or a Hub repo id (``revision`` pins a commit): a saved ``SphereFlowPipeline``, or
        a PLONK checkpoint (then ``objective`` may be passed; see :meth:`from_plonk`)."""
        objective = kwargs.pop("objective", None)
        path = Path(name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(name_or_path), revision=revision, **kwargs))
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"name_or_path: {name_or_path} has no config.json (not a saved SphereFlowPipeline)")
        config = json.loads(config_file.read_text())
        if "model_type" not in config and all(k in config for k in PLONK_CONFIG_KEYS):
            return cls.from_plonk(path, objective=objective or _plonk_objective(str(name_or_path)),
                                  map_location=map_location)  # fmt: skip
        if config.get("model_type") != cls.model_type:
            raise ValueError(f"name_or_path: model_type is {config.get('model_type')!r}, expected 'sphere_flow'")
        network = GeoAdaLNMLP.from_pretrained(path / "network").to(map_location)
        backbone = config.get("backbone")
        return cls(
            network,
            objective=config["objective"],
            schedule=config["schedule"],
            backbone=load_backbone(backbone, path / "backbone", map_location=map_location) if backbone else None,
            backbone_finetuned=bool(backbone and backbone.get("finetuned", False)),
            cond_drop_prob=config.get("cond_drop_prob", 0.1),
        )

    @classmethod
    def from_plonk(
        cls,
        name_or_path: str | os.PathLike,
        *,
        objective: str | None = None,
        revision: str | None = None,
        map_location: str = "cpu",
        **hub_kwargs,
    ) -> SphereFlowPipeline:
        """A PLONK checkpoint (``nicolas-dufour/PLONK_YFCC``, ``..._flow``, ``..._diffusion`` or a local copy) with
        PLONK's schedule (sigmoid, -7, 3). ``objective`` defaults from the name like PLONK's model table: ``*_flow``
        -> ``"flow_r3"``, ``*_diffusion`` -> ``"diffusion_r3"``, else ``"riemannian"``. No backbone: PLONK conditions
        on DINOv2 ViT-L/14-reg (YFCC, iNat) or StreetCLIP (OSV-5M) features, passed as ``image_embeddings``."""
        network = GeoAdaLNMLP.from_plonk(name_or_path, revision=revision, map_location=map_location, **hub_kwargs)
        return cls(network, objective=objective or _plonk_objective(str(name_or_path)))

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs) -> str:
        """Save to a temporary folder and upload it to ``repo_id`` (created if needed); returns the commit url."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})})
            return push_folder(tmp, repo_id, **kwargs)


def _plonk_objective(name: str) -> str:
    name = str(name).rstrip("/").lower()
    return "flow_r3" if name.endswith("_flow") else "diffusion_r3" if name.endswith("_diffusion") else "riemannian"
