"""LocDiff pipeline (arXiv 2503.18142, sec. 4.6 and 5.1): image embedding -> DDPM on SHDD vectors -> locations.

Training (:func:`locdiff_loss`): ``x0 = s * SHDD(latlon)`` (``s = sqrt(4 pi)``, unit RMS; ours), ``x_t`` from the
scheduler's forward process, the CS-UNet predicts x0 / epsilon / v, and the loss is the paper's SHDD KL divergence
between the ground-truth SHDD and the model's x0 estimate (or the cosine / L2 ablations, or the usual MSE).
Inference (:meth:`LocDiffPipeline.predict`): 16 samples per image from Gaussian noise, each decoded with the
mode-seeking SHDD decoder, the prediction being their spherical mean (sec. 5.1).

Saved layout (diffusers-like): ``unet/`` (CSUNet, ``ModelMixin``), ``scheduler/`` (``DDPMScheduler`` or
``DDIMScheduler`` config) and a top-level ``config.json`` with ``model_type: "locdiff"``, the SHDD settings and the
optional image backbone (open_clip name and tag; its weights in ``backbone/open_clip_model.safetensors`` only when
fine-tuned or loaded from a local file, as GeoCLIP does), so ``geo_models.hub.load_model`` dispatches to
:meth:`LocDiffPipeline.from_pretrained`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, SchedulerMixin

from geo_models.checks import MAX_SAMPLES, check_generator, check_int, check_noise, check_number
from geo_models.encoders.image import (
    ImageBackboneMixin,
    OpenCLIPBackbone,
    backbone_config,
    load_backbone,
    save_backbone,
)
from geo_models.hub import push_folder, render_model_card
from geo_models.kernel_density import KernelDensityMixin
from geo_models.locdiff.modeling import SHDD_SAMPLE_SCALE, CSUNet
from geo_models.locdiff.shdd import SHDD
from geo_models.outputs import GeoPrediction, check_embeddings
from geo_models.sphere import haversine_km, spherical_mean
from geo_models.sphere.density import DensityKernel

__all__ = ["LOSSES", "LocDiffPipeline", "locdiff_loss", "make_scheduler", "predicted_original_sample"]

LOSSES = ("kl", "cosine", "l2", "mse")
SCHEDULERS = {"DDPMScheduler": DDPMScheduler, "DDIMScheduler": DDIMScheduler}
SHDD_KEYS = ("max_degree", "num_anchors", "rho_km", "lowpass", "decode_anchors", "top_k")


def make_scheduler(kind: str = "ddpm", *, prediction_type: str = "sample", num_train_timesteps: int = 1000):
    """A DDPM (default) or DDIM scheduler for SHDD vectors: linear betas 1e-4..0.02, no sample clipping."""
    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}.get(kind)
    if cls is None:
        raise ValueError(f"kind must be 'ddpm' or 'ddim', got {kind!r}")
    return cls(num_train_timesteps=num_train_timesteps, prediction_type=prediction_type, clip_sample=False)


def _alpha_sigma(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acp = scheduler.alphas_cumprod.to(like.device)[timesteps].to(like.dtype)[:, None]
    return acp.sqrt(), (1 - acp).sqrt()


def predicted_original_sample(prediction_type: str, model_output, sample, timesteps, scheduler) -> torch.Tensor:
    """The model's x0 estimate ``(B, d)`` from its output at ``x_t = sample`` and integer ``timesteps (B,)``."""
    a, s = _alpha_sigma(scheduler, timesteps, sample)
    if prediction_type == "sample":
        return model_output
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a
    if prediction_type == "v_prediction":
        return a * sample - s * model_output
    raise ValueError(f"prediction_type must be 'sample', 'epsilon' or 'v_prediction', got {prediction_type!r}")


def locdiff_loss(
    unet: CSUNet,
    scheduler,
    shdd: SHDD,
    image_embeddings: torch.Tensor,
    latlon: torch.Tensor,
    loss: str = "kl",
    generator: torch.Generator | None = None,
    *,
    sample_scale: float = SHDD_SAMPLE_SCALE,
) -> torch.Tensor:
    """One DDPM training loss on SHDD vectors (sec. 4.6) -> scalar.

    1. ``x0 = sample_scale * shdd.encode(latlon)``; noise ``eps ~ N(0, I)``; ``t ~ U{0, ..., T-1}``;
       ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (``scheduler.add_noise``).
    2. ``out = unet(x_t, t, image_embeddings)``; the x0 estimate follows ``unet.config.prediction_type``.
    3. ``loss``: ``"kl"`` (the paper): SHDD KL divergence (eq. 16, ``shdd.num_anchors`` random anchors per call)
       between the x0 estimate (rescaled by ``1 / sample_scale``) and ``SHDD(latlon)``; ``"cosine"`` / ``"l2"``: the
       Table 8 ablations on the same x0 estimate; ``"mse"``: the standard DDPM MSE between ``out`` and its target
       (``eps``, ``x0`` or ``v``).

    Args:
        image_embeddings: ``(B, condition_dim)`` backbone features.
        latlon: ``(B, 2)`` degrees, latitude first.
        generator: draws noise, timesteps and KL anchors (on the CPU) for reproducible losses.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_generator(generator)
    cond = torch.as_tensor(image_embeddings)
    if latlon.ndim != 2 or cond.ndim != 2 or latlon.shape[0] != cond.shape[0] or cond.shape[0] == 0:
        raise ValueError(
            f"image_embeddings (B, C) and latlon (B, 2) must have the same B >= 1, got {tuple(cond.shape)} and "
            f"{tuple(latlon.shape)}"
        )
    device, b = cond.device, cond.shape[0]
    # 1. Forward process
    x0 = shdd.encode(latlon).to(device=device, dtype=torch.float32) * sample_scale
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    x_t = scheduler.add_noise(x0, noise, t)
    # 2. Prediction
    out = unet(x_t, t, cond.float()).sample.float()
    prediction_type = unet.config.prediction_type
    # 3. Loss
    if loss == "mse":
        a, s = _alpha_sigma(scheduler, t, x0)
        target = {"sample": x0, "epsilon": noise, "v_prediction": a * noise - s * x0}[prediction_type]
        return F.mse_loss(out, target)
    x0_hat = predicted_original_sample(prediction_type, out, x_t, t, scheduler) / sample_scale
    if loss == "kl":
        return shdd.kl_loss(x0_hat, latlon.to(device), generator=generator)
    if loss == "cosine":
        return shdd.cosine_loss(x0_hat, latlon.to(device))
    return shdd.l2_loss(x0_hat, latlon.to(device))


def _sample_density(samples: torch.Tensor, radius_km: float, max_pairs: int = 2**24) -> torch.Tensor:
    """``(N, S)``: the fraction of each image's samples ``(N, S, 2)`` within ``radius_km`` of each sample, computed a
    few images at a time (an ``(n, S, S)`` distance block of at most ``max_pairs`` entries)."""
    n, s = samples.shape[:2]
    step = max(1, max_pairs // (s * s))
    out = []
    for i in range(0, n, step):
        block = samples[i : i + step]
        out.append((haversine_km(block[:, :, None], block[:, None]) <= radius_km).float().mean(-1))
    return torch.cat(out) if out else samples.new_zeros(n, s)


DENSITY_SAMPLES, DENSITY_STEPS = 64, 50  # samples and steps of the kernel density (log_prob, density_grid)


class LocDiffPipeline(ImageBackboneMixin, KernelDensityMixin):
    """LocDiff geolocator: CS-UNet + DDPM/DDIM scheduler + SHDD decoder.

    Args:
        unet: the trained :class:`~geo_models.locdiff.modeling.CSUNet` (``sample_dim = (L+1)^2``).
        scheduler: ``DDPMScheduler`` (1000 training steps) or ``DDIMScheduler`` (fewer inference steps) with the
            unet's ``prediction_type`` and ``clip_sample=False`` (see :func:`make_scheduler`).
        shdd: SHDD settings (``max_degree`` must match the unet; ``rho_km``, ``decode_anchors``, ``top_k`` tune the
            decoder), a dict of :class:`SHDD` keyword arguments or an ``SHDD``.
        backbone: optional :class:`~geo_models.encoders.image.OpenCLIPBackbone` (frozen by default) whose image
            features condition the unet (``output_dim == unet.condition_dim``), so ``predict(images=...)`` works;
            without one the pipeline takes precomputed ``image_embeddings`` only.
        backbone_finetuned: the backbone's weights were trained (LoRA merged or full fine-tuning) and are saved
            with the pipeline (see :meth:`mark_backbone_finetuned`).
        sample_scale: SHDD vectors are diffused as ``sample_scale * SHDD`` (must match training).
        refine: decoder refinement inside the kernel (``SHDD.decode``'s ``refine``).
        density_kernel: the kernel around each sample in the pipeline's density (:meth:`log_prob`,
            :meth:`density_grid`: 64 seeded samples, a kernel density estimate), ``{"kappa", "power", "floor",
            "floor_kappa"}``; set by :meth:`fit_density` on held-out data (``None``: a 250 km vMF kernel).

    Example:
        >>> unet = CSUNet(sample_dim=16, condition_dim=8, block_out_dims=(32, 8), time_embed_dim=16, dropout=0.0)
        >>> pipe = LocDiffPipeline(unet, make_scheduler(), {"max_degree": 3, "decode_anchors": 500})
        >>> pred = pipe.predict(image_embeddings=torch.randn(2, 8), num_inference_steps=2, top_k=4)
        >>> pred.latlon.shape, pred.candidates.shape, pred.extras["samples"].shape
        (torch.Size([2, 2]), torch.Size([2, 4, 2]), torch.Size([2, 16, 2]))
    """

    model_type = "locdiff"

    def __init__(
        self,
        unet: CSUNet,
        scheduler: SchedulerMixin,
        shdd: SHDD | dict[str, Any] | None = None,
        *,
        backbone: OpenCLIPBackbone | None = None,
        backbone_finetuned: bool = False,
        sample_scale: float = SHDD_SAMPLE_SCALE,
        refine: bool | str = True,
        density_kernel: dict | None = None,
    ):
        if isinstance(shdd, SHDD):
            shdd_config = {
                "max_degree": shdd.max_degree,
                "num_anchors": shdd.num_anchors,
                "rho_km": shdd.rho_km,
                "lowpass": shdd.lowpass,
                "decode_anchors": shdd.decode_anchors,
                "top_k": shdd.top_k,
            }
        else:
            shdd_config = dict(shdd or {})
            if "max_degree" not in shdd_config:
                shdd_config["max_degree"] = round(unet.config.sample_dim**0.5) - 1
            unknown = set(shdd_config) - set(SHDD_KEYS)
            if unknown:
                raise ValueError(f"shdd: unknown keys {sorted(unknown)}; allowed {SHDD_KEYS}")
            shdd = SHDD(**shdd_config)
        if shdd.output_dim != unet.config.sample_dim:
            raise ValueError(
                f"shdd: max_degree={shdd.max_degree} gives (L+1)^2={shdd.output_dim} but unet.sample_dim is "
                f"{unet.config.sample_dim}"
            )
        if type(scheduler).__name__ not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {type(scheduler).__name__}")
        if scheduler.config.prediction_type != unet.config.prediction_type:
            raise ValueError(
                f"scheduler.prediction_type={scheduler.config.prediction_type!r} must match "
                f"unet.prediction_type={unet.config.prediction_type!r}"
            )
        if backbone is not None and backbone.output_dim != unet.config.condition_dim:
            raise ValueError(
                f"backbone: {backbone.model_name!r} gives {backbone.output_dim}-d features but unet.condition_dim is "
                f"{unet.config.condition_dim}"
            )
        self.unet, self.scheduler, self.shdd = unet.eval(), scheduler, shdd
        self.backbone = backbone.eval() if backbone is not None else None
        self.backbone_finetuned = bool(backbone_finetuned)
        self.shdd_config = shdd_config
        self.sample_scale = float(sample_scale)
        self.refine = refine
        self.density_kernel = DensityKernel.from_dict(density_kernel)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def embedding_dim(self) -> int:
        return self.unet.config.condition_dim

    def to(self, device) -> LocDiffPipeline:
        self.unet.to(device)
        self.shdd.to(device)
        if self.backbone is not None:
            self.backbone.to(device)
        return self

    def check_embeddings(self, image_embeddings: Any, name: str = "image_embeddings") -> torch.Tensor:
        """Validate backbone features ``(N >= 1, condition_dim)`` -> float32 tensor on the pipeline's device."""
        t = check_embeddings(image_embeddings, self.embedding_dim, name)
        return t.to(self.device, torch.float32)

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_coefficients(
        self,
        image_embeddings: torch.Tensor,
        *,
        num_inference_steps: int = 100,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reverse diffusion: ``image_embeddings (B, C)`` (validated) -> SHDD coefficients ``(B, (L+1)^2)``.

        ``latents (B, d)`` is the starting noise (drawn with ``generator`` on the CPU when None).
        """
        num_inference_steps = self._check_steps(num_inference_steps)
        check_generator(generator)
        shape = (image_embeddings.shape[0], self.unet.config.sample_dim)
        if latents is None:
            latents = torch.randn(shape, generator=generator)
        else:
            check_noise(latents, shape)
        latents = latents.to(self.device, torch.float32)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for t in self.scheduler.timesteps:
            out = self.unet(latents, t, image_embeddings).sample
            if isinstance(self.scheduler, DDIMScheduler):
                step = self.scheduler.step(out, t, latents, eta=0.0, generator=generator)
            else:
                step = self.scheduler.step(out, t, latents, generator=generator)
            latents = step.prev_sample
        return latents / self.sample_scale

    def _check_steps(self, num_inference_steps) -> int:
        """A whole number of scheduler steps in [1, num_train_timesteps]."""
        return check_int(num_inference_steps, "num_inference_steps", 1, self.scheduler.config.num_train_timesteps)

    @torch.no_grad()
    def predict(
        self,
        images: Any = None,
        image_embeddings: torch.Tensor | None = None,
        *,
        num_samples: int = 16,
        num_inference_steps: int = 100,
        generator: torch.Generator | None = None,
        top_k: int | None = None,
        batch_size: int = 1024,
        point_estimate: str = "mean",
        density_radius_km: float = 750.0,
    ) -> GeoPrediction:
        """Geolocate images by sampling locations (sec. 4.6, 5.1).

        Args:
            images: PIL images, image file paths or a preprocessed ``(N, 3, S, S)`` tensor, embedded by the
                pipeline's backbone (needs one).
            image_embeddings: ``(N, condition_dim)`` backbone features, instead of ``images``.
            num_samples: locations sampled per image ``S`` (16 in the paper), in [1, 10000].
            num_inference_steps: scheduler steps, in [1, num_train_timesteps] (DDPM: up to 1000; DDIM: e.g. 20-50).
            generator: CPU generator for the initial noise and DDPM's step noise (same generator + same
                ``batch_size`` -> identical output).
            top_k: candidates kept per image (``<= num_samples``; default all ``S``).
            batch_size: rows (image x sample) denoised together, and images embedded together.
            point_estimate: ``"mean"`` (the paper: spherical mean of the samples) or ``"densest"`` (the best
                candidate, useful when the sample cloud is multimodal).
            density_radius_km: radius of the density score below.

        Returns:
            GeoPrediction: ``latlon (N, 2)`` point estimate; ``candidates (N, K, 2)`` the decoded samples sorted by
            ``scores (N, K)`` = the fraction of the image's samples within ``density_radius_km`` of the candidate (a
            kernel density estimate in [1/S, 1]; ties broken by distance to the mean); ``extras["samples"] (N, S, 2)``
            (unsorted sample cloud) and ``extras["distance_to_mean_km"] (N, S)``.

        Example:
            >>> pipe = LocDiffPipeline.from_pretrained("user/locdiff")  # doctest: +SKIP
            >>> pipe.predict(image_embeddings=torch.randn(4, 768)).latlon.shape  # doctest: +SKIP
            torch.Size([4, 2])
        """
        # 1. Check inputs
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images or image_embeddings (N, condition_dim)")
        s = check_int(num_samples, "num_samples", 1, MAX_SAMPLES)
        num_inference_steps = self._check_steps(num_inference_steps)
        k = s if top_k is None else check_int(top_k, "top_k", 1, s)
        batch_size = check_int(batch_size, "batch_size")
        check_generator(generator)
        if point_estimate not in ("mean", "densest"):
            raise ValueError(f"point_estimate must be 'mean' or 'densest', got {point_estimate!r}")
        density_radius_km = check_number(density_radius_km, "density_radius_km", 0.0, low_open=True)
        # 2. Image features (embedded by the backbone, batch_size images at a time)
        if images is not None:
            image_embeddings = self.embed_images(images, batch_size=batch_size)
        feats = self.check_embeddings(image_embeddings)
        n = feats.shape[0]
        # 3. Rows image-major: row i * S + j is sample j of image i, gathered per chunk (never all N * S rows at once)
        # 4. Denoising loop, chunked over rows; 5. decode every sample with the mode-seeking SHDD decoder
        samples = []
        for start in range(0, n * s, batch_size):
            rows = feats[torch.arange(start, min(start + batch_size, n * s), device=feats.device) // s]
            coeffs = self.sample_coefficients(rows, num_inference_steps=num_inference_steps, generator=generator)
            samples.append(self.shdd.decode(coeffs.float(), refine=self.refine).float())
        samples = torch.cat(samples).reshape(n, s, 2).cpu()
        # 6. Point estimate (spherical mean, sec. 5.1) and candidates sorted by density
        mean = spherical_mean(samples)  # (N, 2)
        dist_mean = haversine_km(samples, mean[:, None])  # (N, S)
        density = _sample_density(samples, density_radius_km)  # (N, S)
        order = torch.sort(dist_mean, dim=1, stable=True).indices
        order = order.gather(1, torch.sort(-density.gather(1, order), dim=1, stable=True).indices)[:, :k]
        candidates = samples.gather(1, order[..., None].expand(-1, -1, 2))
        scores = density.gather(1, order)
        latlon = mean if point_estimate == "mean" else candidates[:, 0]
        return GeoPrediction(
            latlon=latlon,
            candidates=candidates,
            scores=scores,
            extras={"samples": samples, "distance_to_mean_km": dist_mean},
        )

    __call__ = predict

    # ------------------------------------------------------------------------------------------------ density
    def _density_features(self, images: Any, image_embeddings: Any) -> torch.Tensor:
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images or image_embeddings")
        return self.embed_images(images) if images is not None else self.check_embeddings(image_embeddings)

    def _kernel_components(self, features: torch.Tensor, *, num_samples: int = DENSITY_SAMPLES,
                           num_inference_steps: int = DENSITY_STEPS, seed: int = 0):  # fmt: skip
        """LocDiff's samples (sec. 5.1) as equally weighted components: a kernel density estimate of the
        distribution the diffusion model samples from. Seeded, so ``log_prob`` is a function of its inputs."""
        generator = torch.Generator().manual_seed(int(seed))
        pred = self.predict(image_embeddings=features, num_samples=num_samples, top_k=1,
                            num_inference_steps=num_inference_steps, generator=generator)  # fmt: skip
        samples = pred.extras["samples"]
        return samples, torch.full(samples.shape[:2], 1.0 / samples.shape[1], dtype=torch.float64)

    def predict_hybrid(self, geoclip, image_embeddings: torch.Tensor, **kwargs) -> GeoPrediction:
        """LocDiff-H: GeoCLIP retrieval within 200 km of this pipeline's samples (see
        :func:`geo_models.locdiff.hybrid.predict_hybrid` for the arguments)."""
        from geo_models.locdiff.hybrid import predict_hybrid

        return predict_hybrid(self, geoclip, image_embeddings, **kwargs)

    # ------------------------------------------------------------------------------------------------ hub
    def config_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "_class_name": type(self).__name__,
            "shdd": self.shdd_config,
            "sample_scale": self.sample_scale,
            "refine": self.refine,
            "backbone": self._backbone_config(),
            "density_kernel": self.density_kernel.to_dict() if self.density_kernel else None,
        }

    def _backbone_config(self) -> dict[str, Any] | None:
        if self.backbone is None:
            return None
        return backbone_config(self.backbone, finetuned=self.backbone_finetuned)

    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card_kwargs: dict | None = None) -> Path:
        """Write ``unet/`` (safetensors), ``scheduler/``, ``config.json``, the backbone's weights when they cannot be
        rebuilt from its name (``backbone/``) and a ``README.md`` model card."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.backbone is not None:
            save_backbone(self.backbone, path / "backbone", finetuned=self.backbone_finetuned)
        (path / "config.json").write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        card = render_model_card(self.model_type, **self._card_kwargs(model_card_kwargs))
        card.save(path / "README.md")
        return path

    def _card_kwargs(self, model_card_kwargs: dict | None) -> dict[str, Any]:
        kwargs = {"tags": ["diffusers"], "pipeline_tag": None, **(model_card_kwargs or {})}
        unet_config = {k: v for k, v in self.unet.config.items() if not k.startswith("_")}
        backbone = self._backbone_config()
        kwargs.setdefault("config", {"max_degree": self.shdd.max_degree, **unet_config, "backbone": backbone})
        kwargs.setdefault("backbone", backbone)
        return kwargs

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, revision: str | None = None, map_location: str = "cpu", **kwargs
    ) -> LocDiffPipeline:
        """Load from a local folder or a Hub repo id (``revision`` pins a Hub commit)."""
        path = Path(name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(name_or_path), revision=revision, **kwargs))
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"name_or_path: {name_or_path} has no config.json (not a saved LocDiffPipeline)")
        config = json.loads(config_file.read_text())
        if config.get("model_type") != cls.model_type:
            raise ValueError(f"name_or_path: model_type is {config.get('model_type')!r}, expected 'locdiff'")
        unet = CSUNet.from_pretrained(path / "unet").to(map_location)
        sched_cfg = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        sched_cls = SCHEDULERS.get(sched_cfg.get("_class_name"))
        if sched_cls is None:
            raise ValueError(f"scheduler: unsupported class {sched_cfg.get('_class_name')!r}")
        scheduler = sched_cls.from_pretrained(path / "scheduler")
        backbone = config.get("backbone")
        return cls(
            unet,
            scheduler,
            config["shdd"],
            backbone=load_backbone(backbone, path / "backbone", map_location=map_location) if backbone else None,
            backbone_finetuned=bool(backbone and backbone.get("finetuned", False)),
            sample_scale=config["sample_scale"],
            refine=config.get("refine", True),
            density_kernel=config.get("density_kernel"),
        )

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs) -> str:
        """Save to a temporary folder and upload it to ``repo_id`` (created if needed); returns the commit url."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})})
            return push_folder(tmp, repo_id, **kwargs)
